"""A fake of Unisender Go's web API (POST <api url>/email/send.json, X-API-KEY).

Every entry of message.recipients is one message: ``{{name}}`` in the subject and body
filled from its substitutions over global_substitutions, and in the List-Unsubscribe
header only (Unisender Go substitutes in no other header). Answers ``{"status":
"success", "job_id", "emails": [...], "failed_emails": {}}``; errors as ``{"status":
"error", "message", "code"}``. At most 500 recipients a call. See tests/fakes/esp.py
for faults and the command line.
"""

from __future__ import annotations

import json
import re
import sys
import uuid

from tests.fakes.esp import BadRequest, Delivered, FakeESP, Parsed, Template, _json, main, substitute

FIELD = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}")


class FakeUnisenderGo(FakeESP):
    name = "unisender_go"
    base_path = "/ru/transactional/api/v1/"
    max_recipients = 500

    def authorized(self, headers):
        return headers.get("x-api-key") == self.api_key

    def accepts(self, method, path):
        return method == "POST" and path == self.base_path + "email/send.json"

    def error(self, status, message):
        return _json(status, {"status": "error", "message": message, "code": 204})

    def parse(self, method, path, headers, body, call_id):
        message = json.loads(body)["message"]
        if len(message["recipients"]) > self.max_recipients:
            raise BadRequest("too many recipients")
        job_id = uuid.uuid4().hex[:16]
        messages = []
        body_ = message.get("body", {})
        subject = Template(message.get("subject", ""), FIELD)
        text, html = (Template(body_.get(part, ""), FIELD) for part in ("plaintext", "html"))
        base_values, base_metadata = message.get("global_substitutions", {}), message.get("global_metadata", {})
        for recipient in message["recipients"]:
            values = {**base_values, **recipient.get("substitutions", {})}
            hdrs = {k: substitute(v, FIELD, values) if k.lower() == "list-unsubscribe" else v
                    for k, v in message.get("headers", {}).items()}
            metadata = {**base_metadata, **recipient.get("metadata", {})}
            messages.append(Delivered(
                recipient["email"], subject.fill(values), text.fill(values), html.fill(values),
                hdrs, metadata, metadata.get("anymail_id", job_id), call_id))
        return Parsed(messages, 200, {"status": "success", "job_id": job_id,
                                      "emails": [m.recipient for m in messages], "failed_emails": {}})


if __name__ == "__main__":
    sys.exit(main(FakeUnisenderGo))
