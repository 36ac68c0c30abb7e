#!/usr/bin/env python3
"""A forward-mode handler for `flowctl serve --forward URL` (Python 3 standard library only).

flowctl decrypts Meta's request, checks the token, and POSTs plain JSON here with what only it
knows (phone_number, customer_name, campaign, initial_data, token_state, answers_so_far), signed
with HMAC-SHA256 under FLOW_FORWARD_SECRET in X-Flowctl-Signature-256. This handler answers:

  {"screen": ID, "data": {...}}           show a screen (the same one: a refresh or an error)
  {"complete": true, "data": {...}}       finish; flowctl stores the answers, joined to the phone
  {"error": "token_invalid", "message": "..."}   refuse the token (427)

The Flow it drives has two screens:
  ORDER    a region dropdown and a city dropdown whose options depend on the region (the
           region's on-select-action sends {"region": ...} without a city: answer the same
           screen with that region's cities)
  DETAILS  a quantity from 1 to 10 (anything else re-shows the screen with an error_message)

Run:  FLOW_FORWARD_SECRET=... python3 handler.py [--port 9000]
Then: FLOW_FORWARD_SECRET=... flowctl serve --forward http://127.0.0.1:9000/
"""

import hashlib
import hmac
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRET = os.environ.get("FLOW_FORWARD_SECRET", "").encode()

REGIONS = {
    "north": ["Tanger", "Tetouan", "Al Hoceima"],
    "centre": ["Rabat", "Casablanca", "Fes"],
    "south": ["Agadir", "Marrakech", "Laayoune"],
}


def options(names):
    return [{"id": n.lower().replace(" ", "_"), "title": n} for n in names]


def order_screen(request, region=None, error=None):
    data = {
        "greeting": "Hello %s" % (request.get("customer_name") or ""),
        "phone": request["phone_number"],
        "regions": options(REGIONS),
        "cities": options(REGIONS.get(region, [])),
    }
    if error:
        data["error_message"] = error
    return {"screen": "ORDER", "data": data}


def details_screen(city, error=None):
    data = {"city": city}
    if error:
        data["error_message"] = error
    return {"screen": "DETAILS", "data": data}


def decide(request):
    """The next answer for one forwarded request."""
    action, screen = request.get("action"), request.get("screen")
    data = request.get("data") or {}
    if action in ("INIT", "BACK") or screen is None:
        return order_screen(request)
    if screen == "ORDER":
        region = data.get("region")
        if region not in REGIONS:
            return order_screen(request, error="Please choose a region.")
        if not data.get("city"):
            # The region's on-select-action: the same screen, with that region's cities.
            return order_screen(request, region=region)
        if data["city"] not in [o["id"] for o in options(REGIONS[region])]:
            return order_screen(request, region=region, error="Please choose a city of that region.")
        return details_screen(data["city"])
    if screen == "DETAILS":
        quantity = str(data.get("quantity", "")).strip()
        if not quantity.isdigit() or not 1 <= int(quantity) <= 10:
            city = request.get("answers_so_far", {}).get("city", "")
            return details_screen(city, error="The quantity must be a number from 1 to 10.")
        answers = dict(request.get("answers_so_far") or {})
        answers["quantity"] = int(quantity)
        return {"complete": True, "data": answers}
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
        sys.stderr.write("handler: " + (fmt % args) + "\n")


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
