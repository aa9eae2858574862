"""Send a notification to every conversation of a user, from any Python service.

Run it with the project's Python (it has azure-storage-queue), while `scripts/run` is running:

    .venv/bin/python examples/notify.py 29:1a2b3c "Your report is ready"

It prints the job's id and the command that shows how far its delivery got. Against Azure, set
BotStorage to the storage account's connection string first. Locally it defaults to Azurite on its
standard ports (set BotStorage if `scripts/run` chose others).
"""

import json
import os
import shlex
import sys
import uuid
from datetime import UTC, datetime

from azure.core.exceptions import AzureError
from azure.storage.queue import LinearRetry, QueueClient

if len(sys.argv) != 3:
    sys.exit(
        f"usage: {sys.argv[0]} <user id> <text>\n"
        "  the user id is the one the bot saw, e.g. 29:1a2b3c (the chat, python -m devhost chat, prints yours)\n"
        "  BotStorage: the storage connection string (default: UseDevelopmentStorage=true)"
    )
user_id, text = sys.argv[1], sys.argv[2]
connection = os.environ.get("BotStorage", "UseDevelopmentStorage=true")
job_id = str(uuid.uuid4())
try:
    # Two retries a second apart and 3 s to connect: storage that is not there fails in seconds, where the
    # SDK's default retries wait about a minute.
    queue = QueueClient.from_connection_string(
        connection,
        "bot-jobs",
        connection_timeout=3,
        retry_policy=LinearRetry(backoff=1, random_jitter_range=0.5, retry_total=2),
    )
except ValueError as exc:
    sys.exit(f"error: BotStorage is not a storage connection string ({exc})")
try:
    queue.send_message(
        json.dumps(
            {
                "kind": "notify",
                "id": job_id,
                "created": datetime.now(UTC).isoformat(),
                "target": {"userId": user_id},
                "text": text,
            }
        )
    )
except AzureError as exc:
    sys.exit(
        f"error: storage is unavailable ({str(exc).splitlines()[0]}); the jobs queue is {queue.url}: is "
        "scripts/run running? (on other ports, export the BotStorage it prints)"
    )
python = os.path.relpath(sys.executable)  # as typed from the repository, where python -m botcore runs
if python.startswith(".."):
    python = sys.executable
storage = "" if "BotStorage" in os.environ else f"BotStorage={shlex.quote(connection)} "
print(f"queued notification {job_id} to {user_id}")
print(f"its status, once the bot has taken it: {storage}{python} -m botcore status {job_id}")
