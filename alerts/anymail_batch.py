"""A narrow extension of django-anymail for large batch sends.

Anymail re-parses every recipient address with `email.utils.getaddresses` when it
builds a payload: about 85% of its per-recipient cost in a 1,000-recipient Mailgun
batch. Our recipients were validated and normalised at signup, so for messages marked
`prevalidated_recipients = True` the `to` list is turned into anymail `EmailAddress`
objects directly, skipping the parse. Everything else (payload format, auth, error
handling, retries, webhooks) is anymail's own code, unchanged.

`fast_backend_path()` maps a configured anymail backend to its extended twin, so the
operator keeps setting EMAIL_BACKEND to the ordinary anymail path.
"""

from __future__ import annotations

from email.headerregistry import Address
from functools import cache

from anymail.backends.base import BasePayload
from anymail.message import AnymailMessage
from anymail.utils import EmailAddress, concat_lists, parse_address_list
from django.utils.module_loading import import_string


class BatchMessage(AnymailMessage):
    """An AnymailMessage whose `to` addresses are already validated bare addresses."""

    prevalidated_recipients = True


def _trusted_address(addr_spec: str) -> EmailAddress:
    # Bypass EmailAddress.__init__ (which parses) but produce an object with the same
    # attributes anymail's payloads read: addr_spec, address, display_name, username,
    # domain. Non-ASCII addresses take the normal, careful path.
    if not addr_spec.isascii():
        return EmailAddress(addr_spec=addr_spec)
    address = EmailAddress.__new__(EmailAddress)
    username, _, domain = addr_spec.rpartition("@")
    Address.__init__(address, username=username, domain=domain)
    return address


class PrevalidatedRecipientsMixin:
    """Mixed into an anymail Payload class: skip re-parsing prevalidated `to` lists."""

    base_message_attrs = tuple(
        ("to", concat_lists, "convert_to") if attr == "to" else (attr, combiner, converter)
        for attr, combiner, converter in BasePayload.base_message_attrs
    )

    def convert_to(self, value):
        if getattr(self.message, "prevalidated_recipients", False):
            return [_trusted_address(addr) for addr in value]
        return parse_address_list(value, field="to")


# Backends whose payload class we extend; any other backend is used exactly as is.
PAYLOAD_CLASSES = {
    "anymail.backends.mailgun.EmailBackend": "anymail.backends.mailgun.MailgunPayload",
    "anymail.backends.mailjet.EmailBackend": "anymail.backends.mailjet.MailjetPayload",
    "anymail.backends.mandrill.EmailBackend": "anymail.backends.mandrill.MandrillPayload",
    "anymail.backends.sendgrid.EmailBackend": "anymail.backends.sendgrid.SendGridPayload",
    "anymail.backends.postmark.EmailBackend": "anymail.backends.postmark.PostmarkPayload",
}


@cache
def backend_class(path: str) -> type:
    """The backend at `path`, extended with PrevalidatedRecipientsMixin when known."""
    backend_cls = import_string(path)
    if path not in PAYLOAD_CLASSES:
        return backend_cls
    payload_cls = import_string(PAYLOAD_CLASSES[path])
    fast_payload = type(f"Prevalidated{payload_cls.__name__}",
                        (PrevalidatedRecipientsMixin, payload_cls), {})

    def build_message_payload(self, message, defaults):
        return fast_payload(message, defaults, self)

    return type(f"Prevalidated{backend_cls.__name__}", (backend_cls,),
                {"build_message_payload": build_message_payload, "__module__": __name__})
