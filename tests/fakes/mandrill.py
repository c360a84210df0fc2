"""A fake of Mandrill's messages/send API (POST /api/1.0/messages/send.json, the API
key in the JSON body as "key").

With preserve_recipients false every `to` gets its own copy, ``*|NAME|*`` merge tags
filled from its merge_vars (names case-insensitive, as Mandrill's). Mandrill does not
merge tags in custom headers: they arrive as sent. Answers a list of ``{"email",
"status": "sent", "_id"}``; errors as ``{"status": "error", "code", "name",
"message"}``. See tests/fakes/esp.py for faults and the command line.
"""

from __future__ import annotations

import json
import re
import sys
import uuid

from tests.fakes.esp import BadRequest, Delivered, FakeESP, Parsed, _json, main

FIELD = re.compile(r"\*\|([A-Za-z0-9_:]+)\|\*")


class FakeMandrill(FakeESP):
    name = "mandrill"
    base_path = "/api/1.0"
    max_recipients = 1000
    _key = None

    def authorized(self, headers):
        return True  # the key is in the body: checked in parse

    def accepts(self, method, path):
        return method == "POST" and path == "/api/1.0/messages/send.json"

    def error(self, status, message):
        return _json(status, {"status": "error", "code": -1, "name": "ValidationError", "message": message})

    def parse(self, method, path, headers, body, call_id):
        data = json.loads(body)
        if data.get("key") != self.api_key:
            raise BadRequest("Invalid API key", status=401)
        message = data["message"]
        per = {item["rcpt"].lower(): {v["name"].upper(): v["content"] for v in item["vars"]}
               for item in message.get("merge_vars", [])}
        glob = {v["name"].upper(): v["content"] for v in message.get("global_merge_vars", [])}
        if message.get("preserve_recipients", True) and len(message["to"]) > 1 and per:
            raise BadRequest("merge_vars without preserve_recipients false would show every address")
        messages, answers = [], []
        for to in message["to"]:
            values = {**glob, **per.get(to["email"].lower(), {})}

            def fill(text, values=values):
                return FIELD.sub(lambda m: str(values.get(m[1].upper(), "")), text or "")

            message_id = uuid.uuid4().hex
            messages.append(Delivered(to["email"], fill(message.get("subject")), fill(message.get("text")),
                                      fill(message.get("html")), dict(message.get("headers", {})),
                                      message.get("metadata", {}), message_id, call_id))
            answers.append({"email": to["email"], "status": "sent", "_id": message_id, "reject_reason": None})
        return Parsed(messages, 200, answers)


if __name__ == "__main__":
    sys.exit(main(FakeMandrill))
