"""A fake of Scaleway's Transactional Email API (POST
/transactional-email/v1alpha1/regions/<region>/emails, "X-Auth-Token" header).

One message a call, to its `to` (each ``{"email", "name"}``), with `text`, `html` and
`additional_headers` (``[{"key", "value"}]``) as given; `project_id` is required. Answers
200 ``{"emails": [{"id", "message_id", "mail_rcpt", "rcpt_type", "status": "new", ...}]}``,
one entry per recipient; errors as ``{"message", "type"}``. See tests/fakes/esp.py for
faults and the command line.
"""

from __future__ import annotations

import json
import re
import sys
import uuid

from tests.fakes.esp import BadRequest, Delivered, FakeESP, Parsed, _json, main

PATH = re.compile(r"/transactional-email/v1alpha1/regions/[a-z0-9-]+/emails")


class FakeScaleway(FakeESP):
    name = "scaleway"
    base_path = "/transactional-email/v1alpha1/regions/fr-par/"
    max_recipients = 50

    def authorized(self, headers):
        return headers.get("x-auth-token") == self.api_key

    def accepts(self, method, path):
        return method == "POST" and PATH.fullmatch(path) is not None

    def error(self, status, message):
        kind = {401: "denied_authentication", 429: "too_many_requests"}.get(
            status, "invalid_arguments" if status < 500 else "internal")
        return _json(status, {"message": message, "type": kind})

    def parse(self, method, path, headers, body, call_id):
        data = json.loads(body)
        if not data.get("project_id"):
            raise BadRequest("project_id is required")
        hdrs = {item["key"]: item["value"] for item in data.get("additional_headers") or ()}
        metadata = json.loads(hdrs.get("X-Metadata", "{}"))
        messages, entries = [], []
        for kind in ("to", "cc", "bcc"):
            for recipient in data.get(kind) or ():
                email_id = str(uuid.uuid4())
                entries.append({"id": email_id, "message_id": str(uuid.uuid4()), "project_id": data["project_id"],
                                "mail_from": data["from"]["email"], "mail_rcpt": recipient["email"],
                                "rcpt_type": kind, "subject": data.get("subject", ""), "status": "new"})
                messages.append(Delivered(recipient["email"], data.get("subject", ""), data.get("text", ""),
                                          data.get("html", ""), hdrs, metadata, email_id, call_id))
        return Parsed(messages, 200, {"emails": entries})


if __name__ == "__main__":
    sys.exit(main(FakeScaleway))
