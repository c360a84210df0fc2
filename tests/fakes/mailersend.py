"""A fake of MailerSend's email API (POST /v1/email, Bearer API token).

One message a call, to its `to` (each ``{"email"}``), with `text`, `html` and `headers`
(``[{"name", "value"}]``) as given. Answers 202 with an empty body and the message's id
in ``X-Message-Id``, as MailerSend does; errors as ``{"message", "errors"}`` (422 for a
request it cannot take). See tests/fakes/esp.py for faults and the command line.
"""

from __future__ import annotations

import json
import sys
import uuid

from tests.fakes.esp import Delivered, FakeESP, Parsed, _json, main


class FakeMailerSend(FakeESP):
    name = "mailersend"
    base_path = "/v1/"
    max_recipients = 50

    def authorized(self, headers):
        return headers.get("authorization") == f"Bearer {self.api_key}"

    def accepts(self, method, path):
        return method == "POST" and path == "/v1/email"

    def error(self, status, message):
        status = 422 if status == 400 else status
        return _json(status, {"message": message, "errors": {"request": [message]} if status == 422 else {}})

    def parse(self, method, path, headers, body, call_id):
        data = json.loads(body)
        message_id = uuid.uuid4().hex[:24]
        hdrs = {item["name"]: item["value"] for item in data.get("headers") or ()}
        messages = [Delivered(to["email"], data.get("subject", ""), data.get("text", ""), data.get("html", ""),
                              hdrs, {}, message_id, call_id) for to in data["to"]]
        return Parsed(messages, 202, None, {"X-Message-Id": message_id, "Content-Type": "text/html; charset=UTF-8"})


if __name__ == "__main__":
    sys.exit(main(FakeMailerSend))
