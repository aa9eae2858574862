"""Bot Framework protocol, proactive messaging and dialogs for a bot on Azure Functions."""
