"""A fake of Postmark's bulk email API (POST /email/bulk, X-Postmark-Server-Token).

The message's Subject, HtmlBody and TextBody are templates: each entry of `Messages`
fills ``{{name}}`` from its own TemplateModel, and carries its own Metadata and Headers
over the message's. Answers as Postmark does, ``{"ID", "Status": "Accepted",
"SubmittedAt", "PercentageCompleted"}``, with no per-message ids (anymail sends its own
in each entry's Metadata as ``anymail_id``, which is what webhooks carry back); errors
as ``{"ErrorCode", "Message"}``. The plain /email endpoint takes one message. See
tests/fakes/esp.py for faults and the command line.
"""

from __future__ import annotations

import json
import re
import sys
import uuid
from datetime import UTC, datetime

from tests.fakes.esp import BadRequest, Delivered, FakeESP, Parsed, Template, _json, main

FIELD = re.compile(r"\{\{\s*([^}]+?)\s*\}\}")


def _headers(items):
    return {item["Name"]: item["Value"] for item in items or []}


class FakePostmark(FakeESP):
    name = "postmark"
    base_path = "/"
    max_recipients = 10_000

    def authorized(self, headers):
        return headers.get("x-postmark-server-token") == self.api_key

    def accepts(self, method, path):
        return method == "POST" and path in ("/email/bulk", "/email")

    def error(self, status, message):
        code = 10 if status == 401 else 300
        return _json(status if status != 400 else 422, {"ErrorCode": code, "Message": message})

    def parse(self, method, path, headers, body, call_id):
        data = json.loads(body)
        if path == "/email":
            message_id = str(uuid.uuid4())
            to = data["To"]
            return Parsed([Delivered(to, data.get("Subject", ""), data.get("TextBody", ""), data.get("HtmlBody", ""),
                                     _headers(data.get("Headers")), data.get("Metadata", {}), message_id, call_id)],
                          200, {"To": to, "SubmittedAt": datetime.now(UTC).isoformat(), "MessageID": message_id,
                                "ErrorCode": 0, "Message": "OK"})
        if not data.get("Messages"):
            raise BadRequest("Messages is required")
        messages = []
        subject, text, html = (Template(data.get(part, ""), FIELD) for part in ("Subject", "TextBody", "HtmlBody"))
        base_headers, base_metadata = _headers(data.get("Headers")), data.get("Metadata", {})
        for entry in data["Messages"]:
            model = entry.get("TemplateModel", {})
            metadata = {**base_metadata, **entry.get("Metadata", {})}
            messages.append(Delivered(
                recipient=entry["To"], subject=subject.fill(model), text=text.fill(model), html=html.fill(model),
                headers={**base_headers, **_headers(entry.get("Headers"))},
                metadata=metadata, message_id=metadata.get("anymail_id", ""), call_id=call_id))
        return Parsed(messages, 200, {"ID": str(uuid.uuid4()), "Status": "Accepted",
                                      "SubmittedAt": datetime.now(UTC).isoformat(), "PercentageCompleted": 0})


if __name__ == "__main__":
    sys.exit(main(FakePostmark))
