#!/usr/bin/env bash
# Send the Flow to one customer from a shell script and keep the token it was sent with.
#
#   WHATSAPP_ACCESS_TOKEN, PHONE_NUMBER_ID and FLOW_ID come from the environment or .env.
#   Usage: examples/send.sh +212610059159 "Ahmed"
set -euo pipefail
phone="${1:?usage: $0 PHONE [NAME]}"
name="${2:-}"

if out=$(flowctl send "$phone" --name "$name" --data '{"source":"shell"}'); then
  token=$(printf '%s' "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["flowToken"])')
  echo "sent to $phone with token $token"
else
  code=$?
  # stdout still carries the JSON outcome: {"success":false,"error":{"code":…,"retryable":…}}
  echo "not sent (exit $code): $out" >&2
  exit "$code"
fi
