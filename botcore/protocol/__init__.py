"""The Bot Framework protocol: activities and references, inbound authentication, the bot's own token,
the Connector API, and where the bot's token may go. No state of the bot's own lives here."""
