"""Send a notification to every conversation of a user, from any Python service.

Run it with the project's Python (it has azure-storage-queue), while `scripts/run` is running:

    .venv/bin/python examples/notify.py 29:1a2b3c "Your report is ready"

Against Azure, set BotStorage to the storage account's connection string first. Locally it
defaults to Azurite on its standard ports (set BotStorage if `scripts/run` chose others).
"""

import json, os, sys, uuid
from datetime import datetime, timezone

from azure.storage.queue import QueueClient

if len(sys.argv) != 3:
    sys.exit(f"usage: {sys.argv[0]} <user id> <text>\n"
             "  the user id is the one the bot saw, e.g. 29:1a2b3c (scripts/run prints the chat's)\n"
             "  BotStorage: the storage connection string (default: UseDevelopmentStorage=true)")
user_id, text = sys.argv[1], sys.argv[2]
connection = os.environ.get("BotStorage", "UseDevelopmentStorage=true")
queue = QueueClient.from_connection_string(connection, "bot-jobs")
queue.send_message(json.dumps({
    "kind": "notify",
    "id": str(uuid.uuid4()),
    "created": datetime.now(timezone.utc).isoformat(),
    "target": {"userId": user_id},
    "text": text,
}))
print(f"queued a notification to {user_id}")
