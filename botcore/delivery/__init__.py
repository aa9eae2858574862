"""Proactive delivery: jobs, the delivery ledger (what was sent where, claims, outcomes), fan-out and the
send loop with its pacing, reminders, team rosters, and changes to what was sent."""
