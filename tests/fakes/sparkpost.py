"""A fake of SparkPost's transmissions API (POST /api/v1/transmissions/, the API key
as the Authorization header).

Every entry of `recipients` is one message: ``{{name}}`` in the subject, contents and
headers filled from its own substitution_data over the transmission's, and its
metadata over the transmission's. Answers ``{"results": {"total_rejected_recipients",
"total_accepted_recipients", "id"}}``: one transmission id for all its recipients;
errors as ``{"errors": [{"message"}]}``. See tests/fakes/esp.py for faults and the
command line.
"""

from __future__ import annotations

import json
import re
import sys

from tests.fakes.esp import Delivered, FakeESP, Parsed, Template, _json, main

FIELD = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}")


class FakeSparkPost(FakeESP):
    name = "sparkpost"
    base_path = "/api/v1/"
    max_recipients = 10_000
    _next_transmission = 7_000_000_000_000_000

    def authorized(self, headers):
        return headers.get("authorization") == self.api_key

    def accepts(self, method, path):
        return method == "POST" and path in ("/api/v1/transmissions/", "/api/v1/transmissions")

    def error(self, status, message):
        return _json(status, {"errors": [{"message": message}]})

    def parse(self, method, path, headers, body, call_id):
        data = json.loads(body)
        content = data["content"]
        self._next_transmission += 1
        transmission = str(self._next_transmission)
        messages = []
        subject, text, html = (Template(content.get(part, ""), FIELD) for part in ("subject", "text", "html"))
        headers = {k: Template(v, FIELD) for k, v in content.get("headers", {}).items()}
        base_values, base_metadata = data.get("substitution_data", {}), data.get("metadata", {})
        for recipient in data["recipients"]:
            values = {**base_values, **recipient.get("substitution_data", {})}
            messages.append(Delivered(
                recipient["address"]["email"], subject.fill(values), text.fill(values), html.fill(values),
                {k: v.fill(values) for k, v in headers.items()},
                {**base_metadata, **recipient.get("metadata", {})}, transmission, call_id))
        return Parsed(messages, 200, {"results": {"total_rejected_recipients": 0,
                                                  "total_accepted_recipients": len(messages), "id": transmission}})


if __name__ == "__main__":
    sys.exit(main(FakeSparkPost))
