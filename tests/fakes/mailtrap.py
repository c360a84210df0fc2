"""A fake of Mailtrap's Email Sending API ("Api-Token" header): POST /api/send, one
message, and POST /api/batch, ``{"base": {...}, "requests": [{...}, ...]}``, up to 500
messages, each request's fields over the base's (a request's `headers` replace the
base's, as its other fields do). Mailtrap has no merge fields outside its stored
templates: each request must already be that reader's own copy.

Answers 200 ``{"success": true, "message_ids": [...]}`` (one id per recipient) for a
send, and ``{"success": true, "responses": [{"success": true, "message_ids": [...]},
...]}``, in the requests' order, for a batch; errors as ``{"success": false, "errors":
[...]}``. See tests/fakes/esp.py for faults and the command line.
"""

from __future__ import annotations

import json
import sys
import uuid

from tests.fakes.esp import BadRequest, Delivered, FakeESP, Parsed, _json, main

MAX_BATCH = 500


class FakeMailtrap(FakeESP):
    name = "mailtrap"
    base_path = "/api/"
    max_recipients = MAX_BATCH

    def authorized(self, headers):
        return headers.get("api-token") == self.api_key

    def accepts(self, method, path):
        return method == "POST" and path in ("/api/send", "/api/batch")

    def error(self, status, message):
        return _json(status, {"success": False, "errors": [message]})

    def parse(self, method, path, headers, body, call_id):
        data = json.loads(body)
        if path == "/api/send":
            messages, ids = self._one(data, call_id)
            return Parsed(messages, 200, {"success": True, "message_ids": ids})
        base, requests = data.get("base") or {}, data["requests"]
        if len(requests) > MAX_BATCH:
            raise BadRequest(f"requests: at most {MAX_BATCH} messages a batch")
        messages, responses = [], []
        for request in requests:
            delivered, ids = self._one({**base, **request}, call_id)
            messages.extend(delivered)
            responses.append({"success": True, "message_ids": ids})
        return Parsed(messages, 200, {"success": True, "responses": responses})

    @staticmethod
    def _one(data: dict, call_id: str) -> tuple[list[Delivered], list[str]]:
        if not data.get("from") or not data.get("to"):
            raise BadRequest("'from' and 'to' are required")
        if not (data.get("text") or data.get("html") or data.get("template_uuid")):
            raise BadRequest("'text' or 'html' is required")
        hdrs = dict(data.get("headers") or {})
        metadata = dict(data.get("custom_variables") or {})
        messages, ids = [], []
        for kind in ("to", "cc", "bcc"):
            for recipient in data.get(kind) or ():
                message_id = str(uuid.uuid4())
                ids.append(message_id)
                messages.append(Delivered(recipient["email"], data.get("subject", ""), data.get("text", ""),
                                          data.get("html", ""), hdrs, metadata, message_id, call_id))
        return messages, ids


if __name__ == "__main__":
    sys.exit(main(FakeMailtrap))
