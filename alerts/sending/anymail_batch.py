"""A narrow extension of django-anymail for large batch sends.

Anymail re-parses every recipient address with `email.utils.getaddresses` when it
builds a payload: about 85% of its per-recipient cost in a 1,000-recipient Mailgun
batch. Our recipients were validated and normalised at signup, so for messages marked
`prevalidated_recipients = True` the `to` list is turned into anymail `EmailAddress`
objects directly, skipping the parse, and Mailgun bodies are posted as multipart
rather than percent-encoded. Everything else (payload format, auth, error handling,
retries, webhooks) is anymail's own code, unchanged; tests/test_anymail_batch.py checks
that the request carries the same fields as anymail's own.

`backend_class()` maps a configured anymail backend to its extended twin, so the
operator keeps setting EMAIL_BACKEND to the ordinary anymail path.
"""

from __future__ import annotations

from functools import cache

from anymail.backends.base import BasePayload
from anymail.message import AnymailMessage
from anymail.utils import (
    UNSET,
    EmailAddress,
    concat_lists,
    force_non_lazy_dict,
    merge_dicts_one_level,
    parse_address_list,
)
from django.utils.module_loading import import_string


class BatchMessage(AnymailMessage):
    """An AnymailMessage whose `to` addresses are already validated bare addresses."""

    prevalidated_recipients = True


class TrustedAddress(EmailAddress):
    """A bare ASCII address validated at signup. Every attribute anymail reads is a
    plain string, computed once, instead of being re-parsed and re-quoted per access."""

    def __init__(self, addr_spec: str) -> None:  # noqa: D107  (deliberately skips parsing)
        self._spec = addr_spec
        self._username, _, self._domain = addr_spec.rpartition("@")
        self._display_name = ""

    @property
    def addr_spec(self) -> str:
        return self._spec

    @property
    def address(self) -> str:
        return self._spec

    def format(self, *, use_rfc2047=False, idna_encode=None) -> str:
        return self._spec

    @property
    def uses_eai(self) -> bool:
        return False


def _trusted_address(addr_spec: str) -> EmailAddress:
    # Non-ASCII addresses take anymail's normal, careful path.
    return TrustedAddress(addr_spec) if addr_spec.isascii() else EmailAddress(addr_spec=addr_spec)


def _merge_data_combiner(default, value):
    # Without an ANYMAIL MERGE_DATA default there is nothing to merge: take the
    # message's dict as it is, rather than copying a thousand per-recipient dicts.
    return value if default is UNSET else merge_dicts_one_level(default, value)


class PrevalidatedRecipientsMixin:
    """Mixed into an anymail Payload class: skip re-parsing prevalidated `to` lists and
    re-copying merge data that is already plain strings."""

    base_message_attrs = tuple(
        ("to", concat_lists, "convert_to") if attr == "to" else (attr, combiner, converter)
        for attr, combiner, converter in BasePayload.base_message_attrs
    )
    anymail_message_attrs = tuple(
        (attr, _merge_data_combiner, "convert_merge_data") if attr == "merge_data" else (attr, combiner, converter)
        for attr, combiner, converter in BasePayload.anymail_message_attrs
    )

    def convert_to(self, value):
        if getattr(self.message, "prevalidated_recipients", False):
            return [_trusted_address(addr) for addr in value]
        return parse_address_list(value, field="to")

    def convert_merge_data(self, value):
        if getattr(self.message, "prevalidated_recipients", False):
            return value  # built by us from str values; nothing lazy to force
        return force_non_lazy_dict(value)


class MultipartFormMixin:
    """Mixed into a form-posting payload (Mailgun): send the fields as
    multipart/form-data, as anymail already does whenever a message has attachments.

    Without attachments requests urlencodes the body, percent-escaping the ~200 KB of
    recipient-variables JSON of a 1,000-recipient batch one byte at a time in Python:
    about a quarter of a batch's CPU. Multipart carries the same fields unescaped.
    """

    def get_request_params(self, api_url):
        params = super().get_request_params(api_url)
        data = params.get("data")
        if params.get("files") or not isinstance(data, dict):
            return params
        fields = []
        for name, value in data.items():
            values = value if isinstance(value, list | tuple) else [value]
            if name in ("to", "cc", "bcc") and len(values) > 1:
                # Mailgun takes a comma-separated recipient list in one field.
                values = [", ".join(values)]
            for item in values:
                fields.append((name, (None, item)))
        params["files"], params["data"] = fields, None
        return params


# Backends whose payload class we extend; any other backend is used exactly as is.
PAYLOAD_CLASSES = {
    "anymail.backends.mailgun.EmailBackend": ("anymail.backends.mailgun.MailgunPayload", MultipartFormMixin),
    "anymail.backends.mailjet.EmailBackend": ("anymail.backends.mailjet.MailjetPayload",),
    "anymail.backends.mandrill.EmailBackend": ("anymail.backends.mandrill.MandrillPayload",),
    "anymail.backends.sendgrid.EmailBackend": ("anymail.backends.sendgrid.SendGridPayload",),
    "anymail.backends.postmark.EmailBackend": ("anymail.backends.postmark.PostmarkPayload",),
}


@cache
def backend_class(path: str) -> type:
    """The backend at `path`, extended with PrevalidatedRecipientsMixin when known."""
    backend_cls = import_string(path)
    if path not in PAYLOAD_CLASSES:
        return backend_cls
    payload_path, *extra_mixins = PAYLOAD_CLASSES[path]
    payload_cls = import_string(payload_path)
    fast_payload = type(f"Prevalidated{payload_cls.__name__}",
                        (PrevalidatedRecipientsMixin, *extra_mixins, payload_cls), {})

    def build_message_payload(self, message, defaults):
        return fast_payload(message, defaults, self)

    return type(f"Prevalidated{backend_cls.__name__}", (backend_cls,),
                {"build_message_payload": build_message_payload, "__module__": __name__})
