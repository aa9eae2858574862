"""Benchmarks of the bot: `python -m bench [--quick]` (see bench/__main__.py).

Kept empty on purpose: the cold-start child script must not pay for anything here.
"""
