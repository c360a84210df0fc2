"""What each email provider can do in one call, in one table.

A profile says, for one anymail backend (by its `esp_name`):

- `batch_size`: recipients per batch, and `recipient_limit` per call: anymail never
  splits a list, so a batch within the limit is one call; where the limit is small
  (Mailjet, Resend, Amazon SES) a batch is ten calls, each recorded in the ledger as
  the next begins, so that a batch's claim and close are paid once per ten calls;
- `merge_field`: how the provider spells a per-recipient field in a body ("{}" is the
  field's name), or None: no body personalisation in a batch, one message per call;
  `merge_key` is the key anymail's merge_data needs for it (SendGrid's substitutions
  are literal strings, so there it is the whole field);
- `unsubscribe`: how each reader gets their own List-Unsubscribe: MERGED (one header
  whose merge field the provider fills: Mailgun's recipient-variables, and the
  substitutions of SparkPost and Unisender Go, which is how anymail itself sends their
  merge_headers; a reader's copy is the same, without a second copy of every link in
  the request), PER_RECIPIENT (anymail merge_headers, one
  header per reader), or PROVIDER (the provider cannot carry ours in a batch: the
  header is left off and the provider's own unsubscribe handling adds one; the
  body's link is still the reader's own);
- `backend_options`: keyword settings for the anymail backend (anymail reads them as
  it reads ANYMAIL settings), and `esp_extra`: fields added to every call;
- `message_ids`: PER_CALL (one id for the whole call, kept once on the Batch) or
  PER_RECIPIENT (each ledger row keeps its own);
- `per_recipient_metadata`: send the metadata as merge_metadata, one dict per reader
  (Postmark's bulk payload otherwise shares one dict and every message ends up with
  the last reader's anymail_id);
- `entries_personalised_by_us`: the provider takes a list of finished messages
  (Resend's and Mailtrap's batches): our payload fills each entry's fields itself.

Providers with a fake in tests/fakes/ and a test in tests/sending/test_providers.py
are `batched`; any other backend (Postal, Scaleway, MailerSend, SMTP) sends one
personalised message per reader, over kept connections: their fakes are driven by
tests/sending/test_per_message_providers.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MERGED, PER_RECIPIENT, PROVIDER = "merged", "per-recipient", "provider"
PER_CALL = "per-call"


@dataclass(frozen=True)
class ProviderProfile:
    esp_name: str
    batch_size: int
    recipient_limit: int
    merge_field: str | None = None
    merge_key: str = "{}"
    unsubscribe: str = PER_RECIPIENT
    message_ids: str = PER_RECIPIENT
    backend_options: dict = field(default_factory=dict)
    esp_extra: dict = field(default_factory=dict)
    per_recipient_metadata: bool = False
    entries_personalised_by_us: bool = False
    # The body is a template stored at the provider, created per alert and deleted
    # once the alert is finished (Amazon SES's SendBulkEmail); sends without a
    # template key (digests) go one message per reader.
    stored_template: bool = False
    tracking_webhooks: bool = True
    note: str = ""

    @property
    def batched(self) -> bool:
        return self.merge_field is not None


PROFILES: dict[str, ProviderProfile] = {p.esp_name: p for p in (
    ProviderProfile("Mailgun", 1000, 1000, "%recipient.{}%", unsubscribe=MERGED, message_ids=PER_CALL,
                    note="recipient-variables also fill headers: one List-Unsubscribe for the call"),
    ProviderProfile("SendGrid", 1000, 1000, "-{}-", merge_key="-{}-",
                    note="one personalization per reader: substitutions, headers and anymail_id"),
    # The bulk API has no recipient limit, only 50 MB a call (a 1,000-reader call is
    # about 0.5 MB); 500 is the limit of the older batch endpoint.
    ProviderProfile("Postmark", 1000, 10000, "{{{{{}}}}}", backend_options={"use_bulk_api": True},
                    per_recipient_metadata=True,
                    note="bulk API (POSTMARK_USE_BULK_API): one TemplateModel, Headers and Metadata per reader"),
    ProviderProfile("Mandrill", 1000, 1000, "*|{}|*", unsubscribe=PROVIDER,
                    note="no per-recipient headers: Mandrill's own List-Unsubscribe, the body link is the reader's"),
    ProviderProfile("Mailjet", 500, 50, "[[var:{}]]", esp_extra={"Globals": {"TemplateLanguage": True}},
                    note="Send API v3.1: one Messages entry per reader, TemplateLanguage on"),
    ProviderProfile("SparkPost", 1000, 10000, "{{{{{}}}}}", unsubscribe=MERGED, message_ids=PER_CALL,
                    note="substitution_data per recipient, also filling List-Unsubscribe (as anymail's"
                         " merge_headers do); SparkPost may replace it with its own (account setting)"),
    ProviderProfile("Brevo", 1000, 1000, "{{{{ params.{} }}}}",
                    note="messageVersions, one per reader, with params and headers"),
    ProviderProfile("Unisender Go", 500, 500, "{{{{{}}}}}", unsubscribe=MERGED,
                    note="substitutions per recipient, also filling List-Unsubscribe (as anymail's"
                         " merge_headers do)"),
    ProviderProfile("Resend", 1000, 100, "@@{}@@", entries_personalised_by_us=True,
                    note="emails/batch: each entry is the reader's own copy, filled by our payload"),
    # The batch API: up to 500 messages a call, each request over a shared base.
    ProviderProfile("Mailtrap", 500, 500, "@@{}@@", entries_personalised_by_us=True,
                    note="api/batch: each request is the reader's own copy, filled by our payload, with its"
                         " own headers"),
    ProviderProfile("Amazon SES", 500, 50, "{{{{{}}}}}", stored_template=True,
                    note="SESv2 SendBulkEmail: a stored template per alert, each entry's"
                         " ReplacementTemplateData and ReplacementHeaders (List-Unsubscribe)"),
)}

# One message per API call: each call takes ~10-50 ms, so a batch of 100 is a few
# seconds of work even in series; sent over several connections at once and recorded
# in the ledger as it goes, it never needs to outlast its (heartbeat-renewed) lease.
PER_MESSAGE_BATCH_SIZE = 100
# SMTP: one message per reader too, but at thousands a second over kept connections.
SMTP_BATCH_SIZE = 500


def profile_for(esp_name: str | None) -> ProviderProfile:
    """The profile of an anymail ESP, or the one-message-per-call profile of any other
    backend (SMTP, or an anymail provider without a tested batch path)."""
    if esp_name in PROFILES:
        return PROFILES[esp_name]
    if esp_name is None:
        return ProviderProfile("SMTP", SMTP_BATCH_SIZE, 1, tracking_webhooks=False)
    return ProviderProfile(esp_name, PER_MESSAGE_BATCH_SIZE, 1, note="one message per call")
