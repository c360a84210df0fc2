"""A fake of Postal's HTTP API (POST /api/v1/send/message, "X-Server-API-Key" header).

One message a call, to the addresses in its `to`, with `plain_body`, `html_body` and
`headers` as given (Postal has no merge fields). Answers 200 ``{"status": "success",
"data": {"message_id", "messages": {address: {"id", "token"}}}}``: one numeric id per
recipient, which Postal's webhooks carry back. Postal reports a refused request with
HTTP 200 too, ``{"status": "error", "data": {"code", "message"}}``; a 429 or 5xx comes
from whatever stands in front of it, so those carry a plain body. See
tests/fakes/esp.py for faults and the command line.
"""

from __future__ import annotations

import itertools
import json
import sys
import uuid

from tests.fakes.esp import Delivered, FakeESP, Parsed, _json, main


class FakePostal(FakeESP):
    name = "postal"
    base_path = "/"
    max_recipients = 50

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._message_numbers = itertools.count(1000)

    def authorized(self, headers):
        return headers.get("x-server-api-key") == self.api_key

    def accepts(self, method, path):
        return method == "POST" and path == "/api/v1/send/message"

    def error(self, status, message):
        if status < 500 and status != 429:
            code = "InvalidServerAPIKey" if status == 401 else "ValidationError"
            return _json(200, {"status": "error", "time": 0.001, "flags": {},
                               "data": {"code": code, "message": message}})
        return status, {"Content-Type": "text/plain"}, message.encode()

    def parse(self, method, path, headers, body, call_id):
        data = json.loads(body)
        message_id = f"{uuid.uuid4()}@rp.postal.example.com"
        hdrs = dict(data.get("headers") or {})
        messages, per_recipient = [], {}
        for to in data["to"]:
            number = next(self._message_numbers)
            per_recipient[to] = {"id": number, "token": uuid.uuid4().hex[:12]}
            messages.append(Delivered(to, data.get("subject", ""), data.get("plain_body", ""),
                                      data.get("html_body", ""), hdrs, {}, str(number), call_id))
        return Parsed(messages, 200, {"status": "success", "time": 0.01, "flags": {},
                                      "data": {"message_id": message_id, "messages": per_recipient}})


if __name__ == "__main__":
    sys.exit(main(FakePostal))
