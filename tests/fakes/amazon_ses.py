"""A fake of Amazon SES's v2 API as boto3's `sesv2` client calls it (REST with JSON,
signed with AWS Signature Version 4), for the endpoints bulk sending uses:

- ``POST /v2/email/templates``: CreateEmailTemplate {TemplateName, TemplateContent:
  {Subject, Text, Html}}; 400 AlreadyExistsException if the name is taken;
- ``DELETE /v2/email/templates/<name>``: DeleteEmailTemplate; 404 NotFoundException;
- ``POST /v2/email/outbound-bulk-emails``: SendBulkEmail {FromEmailAddress,
  DefaultContent: {Template: {TemplateName, TemplateData}}, BulkEmailEntries: [{Destination:
  {ToAddresses}, ReplacementEmailContent: {ReplacementTemplate: {ReplacementTemplateData}},
  ReplacementHeaders: [{Name, Value}]}]}, at most 50 entries; each entry's copy is the
  stored template with its data filled in ({{name}}, as SES's templates do) and its
  replacement headers; answers {BulkEmailEntryResults: [{Status, MessageId}]};
- ``POST /v2/email/outbound-emails``: SendEmail {FromEmailAddress, Destination:
  {ToAddresses}, Content: {Raw: {Data}}}, one message as raw MIME (base64, as boto3
  sends a blob), which is what anymail sends without a template; answers {MessageId}.

Errors as SES gives them: the type in ``x-amzn-ErrorType`` and {"message"}. Only the
signature's access key is checked (``Credential=<key>/...``). Faults and the command
line as every fake's (tests/fakes/esp.py).
"""

from __future__ import annotations

import base64
import email
import email.policy
import json
import re
import sys
import uuid
from urllib.parse import unquote

from tests.fakes.esp import BadRequest, Delivered, FakeESP, Parsed, _json, main

MAX_ENTRIES = 50
FIELD = re.compile(r"\{\{\s*([\w.]+)\s*\}\}")
ERROR_TYPES = {400: "BadRequestException", 404: "NotFoundException", 401: "UnrecognizedClientException",
               403: "AccessDeniedException", 429: "TooManyRequestsException", 500: "InternalFailure",
               503: "ServiceUnavailable"}
TEMPLATES_PATH = "/v2/email/templates"
BULK_PATH = "/v2/email/outbound-bulk-emails"
SEND_PATH = "/v2/email/outbound-emails"


class FakeAmazonSES(FakeESP):
    name = "amazon_ses"
    base_path = ""
    max_recipients = MAX_ENTRIES

    def reset(self) -> None:
        super().reset()
        self.templates: dict[str, dict] = {}
        self.deleted_templates: list[str] = []

    def authorized(self, headers):
        return f"Credential={self.api_key}/" in headers.get("authorization", "")

    def accepts(self, method, path):
        return (method == "POST" and path in (TEMPLATES_PATH, BULK_PATH, SEND_PATH)
                or method == "DELETE" and path.startswith(TEMPLATES_PATH + "/"))

    def error(self, status, message, kind=None):
        code, headers, body = _json(status, {"message": message})
        return code, {**headers, "x-amzn-ErrorType": kind or ERROR_TYPES.get(status, "BadRequestException")}, body

    def handle(self, method, path, headers, body):
        # Template calls are not sends: answered here, without the send faults.
        if path.startswith(TEMPLATES_PATH):
            if not self.authorized(headers):
                return self.error(403, "The security token included in the request is invalid.")
            if method == "DELETE":
                name = unquote(path[len(TEMPLATES_PATH) + 1:])
                if self.templates.pop(name, None) is None:
                    return self.error(404, f"Template {name} does not exist", "NotFoundException")
                self.deleted_templates.append(name)
                return _json(200, {})
            data = json.loads(body)
            name, content = data["TemplateName"], data["TemplateContent"]
            if name in self.templates:
                return self.error(400, f"Template {name} already exists", "AlreadyExistsException")
            self.templates[name] = content
            return _json(200, {})
        return super().handle(method, path, headers, body)

    def parse(self, method, path, headers, body, call_id):
        data = json.loads(body)
        if path == SEND_PATH:
            return _parse_raw(data, call_id)
        template = data["DefaultContent"]["Template"]
        content = self.templates.get(template["TemplateName"])
        if content is None:
            raise BadRequest(f"Template {template['TemplateName']} does not exist", 404)
        entries = data["BulkEmailEntries"]
        if len(entries) > MAX_ENTRIES:
            raise BadRequest(f"too many BulkEmailEntries: {len(entries)} > {MAX_ENTRIES}")
        shared = json.loads(template.get("TemplateData") or "{}")
        messages, results = [], []
        for entry in entries:
            values = {**shared, **json.loads(entry.get("ReplacementEmailContent", {})
                                             .get("ReplacementTemplate", {}).get("ReplacementTemplateData") or "{}")}
            entry_headers = {h["Name"]: h["Value"] for h in entry.get("ReplacementHeaders", [])}
            message_id = f"0100{uuid.uuid4().hex}-000000"
            for to in entry["Destination"]["ToAddresses"]:
                address = re.sub(r"^.*<([^>]+)>$", r"\1", to)
                messages.append(Delivered(
                    recipient=address, subject=_fill(content["Subject"], values),
                    text=_fill(content.get("Text", ""), values), html=_fill(content.get("Html", ""), values),
                    headers=entry_headers, metadata=json.loads(entry_headers.get("X-Metadata", "{}")),
                    message_id=message_id, call_id=call_id))
            results.append({"Status": "SUCCESS", "MessageId": message_id})
        return Parsed(messages, 200, {"BulkEmailEntryResults": results})


def _parse_raw(data: dict, call_id: str) -> Parsed:
    """One SendEmail of a raw MIME message: delivered to each destination address."""
    mime = email.message_from_bytes(base64.b64decode(data["Content"]["Raw"]["Data"]), policy=email.policy.default)
    text, html = (mime.get_body(preferencelist=(kind,)) for kind in ("plain", "html"))
    message_id = f"0100{uuid.uuid4().hex}-000000"
    mime_headers = {name: str(value) for name, value in mime.items()}
    messages = [Delivered(
        recipient=re.sub(r"^.*<([^>]+)>$", r"\1", to), subject=str(mime["Subject"] or ""),
        text=text.get_content() if text else "", html=html.get_content() if html else "",
        headers=mime_headers, metadata=json.loads(mime_headers.get("X-Metadata", "{}")),
        message_id=message_id, call_id=call_id) for to in data["Destination"]["ToAddresses"]]
    return Parsed(messages, 200, {"MessageId": message_id})


def _fill(text: str, values: dict) -> str:
    return FIELD.sub(lambda m: str(values.get(m[1], "")), text)


if __name__ == "__main__":
    sys.exit(main(FakeAmazonSES))
