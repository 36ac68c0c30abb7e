#!/usr/bin/env python3
"""A forward-mode handler for the appointment Flow (examples/appointment_flow.json), for
`flowctl serve --forward URL` (Python 3 standard library only).

The same Flow also runs with built-in routing (`serve --flow-json appointment_flow.json
--flow-data appointment_flow.data.json`); this handler shows the same logic written by hand,
where a business would add its own (opening hours, a booking system, ...):

  BOOKING   a city dropdown whose on-select-action sends {"trigger": "city_selected",
            "city": ...}: answer the same screen with that city's branches. The submit
            names the next screen in "next_screen" (SYMPTOMS or CONFIRM): a branch.
  SYMPTOMS  "symptoms" is required (an empty one re-shows the screen with an error_message);
            the photo is optional.
  CONFIRM   a time slot and the consent; then the Flow completes with every answer.

The lists come from examples/appointment_flow.data.json, the file built-in routing reads.
The request and answer formats are those of examples/forward/handler.py.

Run:  FLOW_FORWARD_SECRET=... python3 appointment_handler.py [--port 9000]
"""

import hashlib
import hmac
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRET = os.environ.get("FLOW_FORWARD_SECRET", "").encode()
HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "..", "appointment_flow.data.json"), encoding="utf-8") as f:
    LISTS = json.load(f)

CITIES = LISTS["cities"]
BRANCHES = LISTS["branches"]["options"]


def ids(items):
    return [i["id"] for i in items]


def booking(request, city=None, error=None):
    data = {
        "customer_name": request.get("customer_name") or "",
        "cities": CITIES,
        "branches": BRANCHES.get(city, []),
    }
    if error:
        data["error_message"] = error
    return {"screen": "BOOKING", "data": data}


def screen(name, error=None):
    return {"screen": name, "data": {"error_message": error} if error else {}}


def answers(request, data):
    out = dict(request.get("answers_so_far") or {})
    out.update(data)
    out.pop("trigger", None)
    return out


def decide(request):
    """The next answer for one forwarded request."""
    action, current = request.get("action"), request.get("screen")
    data = request.get("data") or {}
    if action in ("INIT", "BACK") or current is None:
        return booking(request)
    if current == "BOOKING":
        city = data.get("city")
        if "trigger" in data:
            # The city's on-select-action: the same screen with that city's branches.
            return booking(request, city=city)
        if city not in ids(CITIES):
            return booking(request, error="Please choose a city.")
        if data.get("branch") not in ids(BRANCHES.get(city, [])):
            return booking(request, city=city, error="Please choose a branch of that city.")
        if data.get("next_screen") not in ("SYMPTOMS", "CONFIRM"):
            return booking(request, city=city, error="Please say what the visit is for.")
        return screen(data["next_screen"])
    if current == "SYMPTOMS":
        if not str(data.get("symptoms") or "").strip():
            return screen("SYMPTOMS", error="Please describe what you feel.")
        return screen("CONFIRM")
    if current == "CONFIRM":
        if data.get("slot") not in ("morning", "afternoon", "evening") or data.get("consent") is not True:
            return screen("CONFIRM", error="Please choose a time and agree to the reminder.")
        return {"complete": True, "data": answers(request, data)}
    return {"error": "token_invalid", "message": "This form has changed; please ask for a new one."}


def signed(body, header):
    expected = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    return bool(SECRET) and hmac.compare_digest(expected, header or "")


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if not signed(body, self.headers.get("X-Flowctl-Signature-256")):
            return self.reply(401, {"error": "invalid signature"})
        try:
            answer = decide(json.loads(body))
        except (ValueError, KeyError, TypeError) as e:
            return self.reply(400, {"error": "bad request: %s" % e})
        self.reply(200, answer)

    def reply(self, status, value):
        out = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, fmt, *args):
        sys.stderr.write("appointment handler: " + (fmt % args) + "\n")


def main():
    port = int(sys.argv[sys.argv.index("--port") + 1]) if "--port" in sys.argv else 9000
    if not SECRET:
        sys.exit("set FLOW_FORWARD_SECRET (the same value as flowctl serve's)")
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    # One line on stdout so scripts and tests can find the port when --port is 0.
    print("handler listening on http://127.0.0.1:%d/" % server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
