#!/usr/bin/env bash
# Send a notification to everyone with the Azure CLI (signed in with a role that may add
# queue messages: Storage Queue Data Contributor or Message Sender on the account).
#   examples/notify.sh <storage-account> "We're down for maintenance at 18:00 UTC"
set -euo pipefail
account=$1 text=$2
job=$(python3 -c 'import json,sys,uuid,datetime; print(json.dumps({"kind": "notify", "id": str(uuid.uuid4()),
  "created": datetime.datetime.now(datetime.timezone.utc).isoformat(), "target": {"everyone": True},
  "text": sys.argv[1]}))' "$text")
az storage message put --auth-mode login --account-name "$account" --queue-name bot-jobs --content "$job"
