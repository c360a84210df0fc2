"""A fake of Mailjet's Send API v3.1 (POST /v3.1/send, Basic auth key:secret).

Each entry of `Messages` is one message, over `Globals`. With TemplateLanguage on,
``[[var:name]]`` is filled from the entry's Variables (else left as typed, as Mailjet
does); each entry's Headers go over the global ones. At most 50 messages a call.
Answers ``{"Messages": [{"Status": "success", "To": [{"Email", "MessageID", ...}]}]}``.
See tests/fakes/esp.py for faults and the command line.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import sys

from tests.fakes.esp import BadRequest, Delivered, FakeESP, Parsed, _json, main, substitute

FIELD = re.compile(r"\[\[\s*var:([^\]]+?)\s*\]\]")
_message_ids = itertools.count(576460752303423487)


class FakeMailjet(FakeESP):
    name = "mailjet"
    base_path = "/v3.1/"
    max_recipients = 50
    secret_key = "test-secret-key"

    def authorized(self, headers):
        expected = base64.b64encode(f"{self.api_key}:{self.secret_key}".encode()).decode()
        return headers.get("authorization") == f"Basic {expected}"

    def accepts(self, method, path):
        return method == "POST" and path == "/v3.1/send"

    def error(self, status, message):
        return _json(status, {"ErrorIdentifier": "fake", "StatusCode": status, "ErrorMessage": message})

    def parse(self, method, path, headers, body, call_id):
        data = json.loads(body)
        glob = data.get("Globals", {})
        if len(data["Messages"]) > self.max_recipients:
            raise BadRequest("Too many messages in one call (max 50)")
        messages, answers = [], []
        for entry in data["Messages"]:
            merged = {**glob, **entry}
            values = {**glob.get("Variables", {}), **entry.get("Variables", {})}

            templated = merged.get("TemplateLanguage", False)

            def fill(text, values=values, on=templated):
                return substitute(text, FIELD, values) if on else text

            tos = []
            for to in entry["To"]:
                message_id = next(_message_ids)
                messages.append(Delivered(
                    to["Email"], fill(merged.get("Subject", "")), fill(merged.get("TextPart", "")),
                    fill(merged.get("HTMLPart", "")), {**glob.get("Headers", {}), **entry.get("Headers", {})},
                    json.loads(merged.get("EventPayload") or "{}"), str(message_id), call_id))
                tos.append({"Email": to["Email"], "MessageUUID": f"uuid-{message_id}", "MessageID": message_id,
                            "MessageHref": f"https://api.mailjet.com/v3/message/{message_id}"})
            answers.append({"Status": "success", "CustomID": "", "To": tos, "Cc": [], "Bcc": []})
        return Parsed(messages, 200, {"Messages": answers})


if __name__ == "__main__":
    sys.exit(main(FakeMailjet))
