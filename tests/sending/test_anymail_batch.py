"""The narrow extension of anymail's Mailgun payload: the same fields as anymail's own request."""

from __future__ import annotations

import json

import pytest
from anymail.backends.mailgun import EmailBackend as StockMailgun

from alerts.sending.anymail_batch import BatchMessage, backend_class

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
