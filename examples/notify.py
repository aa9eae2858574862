"""Send a notification to every conversation of a user, from any Python service.

    pip install azure-storage-queue
    BotStorage="<connection string>" python examples/notify.py 29:1a2b3c "Your report is ready"
"""

import json, os, sys, uuid
from datetime import datetime, timezone

from azure.storage.queue import QueueClient

user_id, text = sys.argv[1], sys.argv[2]
queue = QueueClient.from_connection_string(os.environ["BotStorage"], "bot-jobs")
queue.send_message(json.dumps({
    "kind": "notify",
    "id": str(uuid.uuid4()),
    "created": datetime.now(timezone.utc).isoformat(),
    "target": {"userId": user_id},
    "text": text,
}))
