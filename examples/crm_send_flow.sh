#!/usr/bin/env bash
# What a CRM does to send a Flow through a running `flowctl serve` (the HTTP twin of
# `flowctl send`), then to read the answers back with their phone numbers.
#
#   FLOWCTL_URL      e.g. https://flows.example.com
#   FLOWCTL_API_KEY  the bearer key configured on the server
set -euo pipefail
: "${FLOWCTL_URL:?}" "${FLOWCTL_API_KEY:?}"

curl -sS -X POST "$FLOWCTL_URL/api/send-flow" \
  -H "Authorization: Bearer $FLOWCTL_API_KEY" \
  -H "Content-Type: application/json" \
  -d '{"phoneNumber": "+212610059159", "customerName": "Ahmed", "data": {"city": "Rabat"}}'
echo

# The newest completed responses, 50 at a time; follow next_cursor for the next page.
curl -sS "$FLOWCTL_URL/api/responses?limit=50" -H "Authorization: Bearer $FLOWCTL_API_KEY"
echo
