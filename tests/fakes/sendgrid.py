"""A fake of SendGrid's v3 mail send API (POST /v3/mail/send, Bearer API key).

One message per personalization: its `to`, its `substitutions` filled into the subject
and content (SendGrid's legacy substitutions: each key replaced literally), its own
`headers` over the message's, and `custom_args` over the message's (anymail puts its
per-message id there, as `anymail_id`). Answers 202 with an empty body and an
X-Message-Id, as SendGrid does; errors as ``{"errors": [{"message"}]}``. See
tests/fakes/esp.py for faults and the command line.
"""

from __future__ import annotations

import json
import sys
import uuid

from tests.fakes.esp import BadRequest, Delivered, FakeESP, Parsed, Template, _json, literal_pattern, main

MAX_PERSONALIZATIONS = 1000


class FakeSendGrid(FakeESP):
    name = "sendgrid"
    base_path = "/v3/"
    max_recipients = MAX_PERSONALIZATIONS

    def authorized(self, headers):
        return headers.get("authorization") == f"Bearer {self.api_key}"

    def accepts(self, method, path):
        return method == "POST" and path == "/v3/mail/send"

    def error(self, status, message):
        return _json(status, {"errors": [{"message": message, "field": None}]})

    def parse(self, method, path, headers, body, call_id):
        data = json.loads(body)
        content = {part["type"]: part["value"] for part in data.get("content", [])}
        if "subject" not in data or not content:
            raise BadRequest("subject and content are required")
        messages = []
        x_message_id = uuid.uuid4().hex[:22]
        personalizations = data["personalizations"]
        keys = literal_pattern({key for p in personalizations for key in p.get("substitutions", {})})
        subject, text, html = (Template(part, keys, keep_unknown=True) for part in
                               (data["subject"], content.get("text/plain", ""), content.get("text/html", "")))
        base_headers, base_args = data.get("headers", {}), data.get("custom_args", {})
        for personalization in personalizations:
            subs = personalization.get("substitutions", {})
            args = {**base_args, **personalization.get("custom_args", {})}
            headers = {**base_headers, **personalization.get("headers", {})}
            for to in personalization["to"]:
                messages.append(Delivered(
                    recipient=to["email"], subject=subject.fill(subs), text=text.fill(subs), html=html.fill(subs),
                    headers=headers, metadata=args, message_id=args.get("anymail_id", x_message_id),
                    call_id=call_id))
        return Parsed(messages, 202, None, {"X-Message-Id": x_message_id})


if __name__ == "__main__":
    sys.exit(main(FakeSendGrid))
