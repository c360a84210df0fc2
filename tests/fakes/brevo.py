"""A fake of Brevo's transactional email API (POST /v3/smtp/email, "api-key" header).

With `messageVersions`, each version is one message to its `to`, ``{{ params.name }}``
in the subject and contents filled from its own params over the message's, and its
own headers over the message's. Answers 201 ``{"messageIds": [...]}`` (one per
version, in order), or ``{"messageId"}`` for a single message; errors as ``{"code",
"message"}``. At most 1,000 versions a call. See tests/fakes/esp.py for faults and
the command line.
"""

from __future__ import annotations

import functools
import json
import re
import sys
import uuid

from tests.fakes.esp import BadRequest, Delivered, FakeESP, Parsed, Template, _json, main

FIELD = re.compile(r"\{\{\s*params\.([A-Za-z0-9_]+)\s*\}\}")


class FakeBrevo(FakeESP):
    name = "brevo"
    base_path = "/v3/"
    max_recipients = 1000

    def authorized(self, headers):
        return headers.get("api-key") == self.api_key

    def accepts(self, method, path):
        return method == "POST" and path == "/v3/smtp/email"

    def error(self, status, message):
        return _json(status, {"code": "bad_request" if status == 400 else "error", "message": message})

    def parse(self, method, path, headers, body, call_id):
        data = json.loads(body)
        versions = data.get("messageVersions") or [{"to": data["to"]}]
        if len(versions) > self.max_recipients:
            raise BadRequest("messageVersions: at most 1000")
        messages, ids = [], []
        subject, text, html = (Template(data.get(part, ""), FIELD) for part in ("subject", "textContent", "htmlContent"))
        base_params, base_headers = data.get("params", {}), data.get("headers", {})
        # One id per version, unique as Brevo's are: the call's own prefix and a number.
        call_prefix = uuid.uuid4().hex[:24]
        metadata = functools.cache(json.loads)  # every version's X-Mailin-custom is often the same
        for number, version in enumerate(versions):
            params = {**base_params, **version.get("params", {})}
            message_id = f"<{call_prefix}{number:08d}@smtp-relay.mailin.fr>"
            ids.append(message_id)
            hdrs = {**base_headers, **version.get("headers", {})}
            for to in version["to"]:
                messages.append(Delivered(
                    to["email"], subject.fill(params), text.fill(params), html.fill(params), hdrs,
                    metadata(hdrs.get("X-Mailin-custom", "{}")), message_id, call_id))
        if "messageVersions" in data:
            return Parsed(messages, 201, {"messageIds": ids})
        return Parsed(messages, 201, {"messageId": ids[0]})


if __name__ == "__main__":
    sys.exit(main(FakeBrevo))
