"""A fake of Resend's batch email API (POST /emails/batch, Bearer API key).

The body is a list of up to 100 emails, each sent as it is (Resend has no merge
fields: each entry must already be that reader's own copy). Answers ``{"data":
[{"id"}, ...]}``, one id per entry in order; POST /emails takes one email and answers
``{"id"}``; errors as ``{"statusCode", "name", "message"}``. See tests/fakes/esp.py for
faults and the command line.
"""

from __future__ import annotations

import json
import sys
import uuid

from tests.fakes.esp import BadRequest, Delivered, FakeESP, Parsed, _json, main


class FakeResend(FakeESP):
    name = "resend"
    base_path = "/"
    max_recipients = 100

    def authorized(self, headers):
        return headers.get("authorization") == f"Bearer {self.api_key}"

    def accepts(self, method, path):
        return method == "POST" and path in ("/emails", "/emails/batch")

    def error(self, status, message):
        name = "rate_limit_exceeded" if status == 429 else "validation_error"
        return _json(status, {"statusCode": status, "name": name, "message": message})

    def parse(self, method, path, headers, body, call_id):
        data = json.loads(body)
        entries = data if path == "/emails/batch" else [data]
        if len(entries) > self.max_recipients:
            raise BadRequest("batch of at most 100 emails", status=422)
        messages, ids = [], []
        for entry in entries:
            message_id = str(uuid.uuid4())
            ids.append(message_id)
            hdrs = dict(entry.get("headers", {}))
            for to in entry["to"]:
                messages.append(Delivered(to, entry.get("subject", ""), entry.get("text", ""), entry.get("html", ""),
                                          hdrs, json.loads(hdrs.get("X-Metadata", "{}")), message_id, call_id))
        if path == "/emails":
            return Parsed(messages, 200, {"id": ids[0]})
        return Parsed(messages, 200, {"data": [{"id": i} for i in ids]})


if __name__ == "__main__":
    sys.exit(main(FakeResend))
