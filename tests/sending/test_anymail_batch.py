"""The narrow extension of anymail's payloads: the same fields as anymail's own request."""

from __future__ import annotations

import json
import re
import uuid

import pytest
from anymail.backends.mailgun import EmailBackend as StockMailgun
from django.utils.module_loading import import_string

from alerts.sending.anymail_batch import BatchMessage, backend_class, uuid4_strings

MAILGUN = "anymail.backends.mailgun.EmailBackend"


def payload_data(backend_cls, **message_fields):
    backend = backend_cls(fail_silently=False)
    message = BatchMessage(subject="Breaking", body="Read %recipient.t%", from_email="news@example.com",
                           connection=backend, **message_fields)
    params = backend.build_message_payload(message, backend.send_defaults).get_request_params(backend.api_url)
    return params["files"] or params["data"]  # ours posts multipart, anymail's a form


def fields(params) -> dict:
    """Field name -> values, whether anymail sent them as form data or multipart."""
    if isinstance(params, dict):
        return {name: value if isinstance(value, list) else [value] for name, value in params.items()}
    out: dict[str, list] = {}
    for name, (_, value) in params:
        out.setdefault(name, []).append(value)
    return out


@pytest.mark.parametrize("merge_data", [
    {f"r{i}@example.com": {"t": f"{i}:abc:def"} for i in range(5)},
    # A recipient without data, another with an extra key, and characters JSON escapes.
    {"r0@example.com": {"t": 'quote " and \\ back'}, "r2@example.com": {"t": "é", "x": "\n"}},
])
def test_a_batch_request_carries_the_same_fields_as_anymails(mailgun_settings, merge_data):
    to = [f"r{i}@example.com" for i in range(5)]
    ours = fields(payload_data(backend_class(MAILGUN), to=to, merge_data=merge_data,
                               metadata={"alert_id": "7"}, tags=["breaking-alert"]))
    stock = fields(payload_data(StockMailgun, to=to, merge_data=merge_data,
                                metadata={"alert_id": "7"}, tags=["breaking-alert"]))
    assert json.loads(ours.pop("recipient-variables")[0]) == json.loads(stock.pop("recipient-variables")[0])
    assert ours.pop("to") == [", ".join(stock.pop("to"))]  # one comma-separated field
    assert ours == stock


def test_other_merge_features_give_the_same_recipient_variables(mailgun_settings):
    to = ["a@example.com", "b@example.com"]
    options = {"merge_data": {"a@example.com": {"t": "1"}}, "merge_global_data": {"t": "default"},
               "merge_metadata": {"b@example.com": {"order": "9"}}}
    ours = fields(payload_data(backend_class(MAILGUN), to=to, **options))
    stock = fields(payload_data(StockMailgun, to=to, **options))
    assert json.loads(ours["recipient-variables"][0]) == json.loads(stock["recipient-variables"][0])


# --- The JSON providers: the same request as anymail's own payload ---------------------

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
JSON_BACKENDS = {
    "sendgrid": ({"SENDGRID_API_KEY": "key"}, {}),
    "postmark": ({"POSTMARK_SERVER_TOKEN": "key"}, {"use_bulk_api": True}),
    "brevo": ({"BREVO_API_KEY": "key"}, {}),
    "unisender_go": ({"UNISENDER_GO_API_KEY": "key", "UNISENDER_GO_API_URL": "https://go1.unisender.ru/ru/transactional/api/v1/"}, {}),
}
READERS = [f"r{i}@example.com" for i in range(4)]


def json_request(backend_cls, options, **message_fields):
    """The request body a backend would post, its generated ids (uuid4) replaced by their
    order of first appearance, so that two builds can be compared."""
    backend = backend_cls(fail_silently=False, **options)
    message = BatchMessage(subject="Breaking -t- {{t}}", body="Read {{ params.t }}", from_email="news@example.com",
                           connection=backend, **message_fields)
    message.attach_alternative("<p>Read *|t|*</p>", "text/html")
    body = backend.build_message_payload(message, backend.send_defaults).get_request_params(backend.api_url)["data"]
    ids: dict[str, str] = {}
    return json.loads(UUID.sub(lambda m: ids.setdefault(m[0], f"id-{len(ids)}"), body)), len(ids)


@pytest.mark.parametrize("name", sorted(JSON_BACKENDS))
@pytest.mark.parametrize("own_header", ["List-Unsubscribe", "list-id"])  # the second overrides a shared one
def test_a_json_batch_request_is_the_same_as_anymails(settings, name, own_header):
    anymail_settings, options = JSON_BACKENDS[name]
    settings.ANYMAIL = {**settings.ANYMAIL, **anymail_settings}
    path = f"anymail.backends.{name}.EmailBackend"
    supported = name != "unisender_go" or own_header == "List-Unsubscribe"  # its only merge header
    fields = {
        "to": READERS, "tags": ["breaking-alert"], "metadata": {"alert_id": "7"},
        "headers": {"List-Id": "News <news.example.com>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"},
        "merge_data": {email: {"t": f"token-{i}"} for i, email in enumerate(READERS)},
        "merge_headers": {email: {own_header if supported else "List-Unsubscribe": f"<https://x/u/{i}/>"}
                          for i, email in enumerate(READERS[:3])},  # the last reader has none
        "merge_metadata": {READERS[0]: {"alert_id": "7", "reader": "0"}},
    }
    ours, our_ids = json_request(backend_class(path), options, **fields)
    stock, stock_ids = json_request(import_string(path), options, **fields)
    assert ours == stock
    # The same number of distinct ids, in the same places (Brevo's come from Brevo).
    assert our_ids == stock_ids == (0 if name == "brevo" else len(READERS) if name != "postmark" else 2)


def test_generated_ids_are_distinct_random_uuid4s():
    ids = uuid4_strings(2000)
    assert len(set(ids)) == 2000
    for value in ids[:200]:
        parsed = uuid.UUID(value)
        assert str(parsed) == value and parsed.version == 4 and parsed.variant == uuid.RFC_4122


@pytest.mark.parametrize("sender", ["news@example.com", "The Daily Courier <alerts@news.example.com>",
                                    '"Courier, The" <alerts@news.example.com>'])
@pytest.mark.parametrize("path", ["anymail.backends.postal.EmailBackend", "anymail.backends.scaleway.EmailBackend",
                                  "anymail.backends.mailersend.EmailBackend"])
def test_a_one_message_request_is_anymails_own_with_the_sender_parsed_once(settings, path, sender):
    settings.ANYMAIL = {**settings.ANYMAIL, "POSTAL_API_KEY": "k", "POSTAL_API_URL": "https://postal.example.com",
                        "SCALEWAY_SECRET_KEY": "k", "SCALEWAY_PROJECT_ID": "p", "MAILERSEND_API_TOKEN": "k"}

    def body(backend_cls):
        backend = backend_cls(fail_silently=False)
        message = BatchMessage(subject="Breaking", body="Read", from_email=sender, to=["reader@example.com"],
                               headers={"List-Unsubscribe": "<https://news.example.com/u/t/>"}, connection=backend)
        message.attach_alternative("<p>Read</p>", "text/html")
        return json.loads(backend.build_message_payload(message, backend.send_defaults).serialize_data())

    ours = backend_class(path)
    assert ours is not import_string(path)
    assert body(ours) == body(import_string(path))
    assert body(ours) == body(ours)  # the cached sender gives the same on the next message
