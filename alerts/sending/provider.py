"""Talking to the email provider: what the configured backend can do in one call (its
profile), the transport (one personalised API call per batch where the provider merges
per-recipient fields, else one message each over one connection), and the sorting of
every failure into its kind, in one place:

- TransientSendError: worth retrying (429, 5xx, timeouts, network errors);
- PermanentSendError: the provider refused the request itself (bad key, bad data);
- a refused recipient is an Outcome of FAILED for that reader alone, never retried.
"""

from __future__ import annotations

import functools
import logging
import smtplib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import requests
from anymail.exceptions import AnymailAPIError, AnymailRecipientsRefused, AnymailUnsupportedFeature
from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection

from ..common.cache import ProcessCache
from ..common.tokens import link_tokens
from ..emails import RenderedAlert, personalise, personalised_copy, subscriber_links, subscriber_links_maker
from ..models import Delivery
from . import throttle
from .anymail_batch import BatchMessage, backend_class
from .ledger import Outcome, outcomes
from .profiles import MERGED, PROVIDER, ProviderProfile, profile_for
from .smtp import ClosedBeforeSending, MessageTemplate, open_smtp, send_each
from .smtp import pool as smtp_pool

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SendingProfile:
    """The configured backend and what its provider does in one call."""

    backend_path: str
    esp_name: str | None
    batch_size: int
    merge_field: str | None
    provider: ProviderProfile


def sending_profile(backend_path: str | None = None) -> SendingProfile:
    """What the configured EMAIL_BACKEND (or `backend_path`) can do in one call."""
    path = backend_path or settings.EMAIL_BACKEND
    esp_name = getattr(backend_class(path), "esp_name", None)
    if not isinstance(esp_name, str):
        esp_name = None
    provider = profile_for(esp_name)
    size = min(settings.FANOUT_BATCH_SIZE or provider.batch_size, max(provider.recipient_limit, provider.batch_size))
    return SendingProfile(path, esp_name, size, provider.merge_field, provider)


class TransientSendError(Exception):
    """Worth retrying: rate limits, provider 5xx, timeouts, network errors.

    `maybe_sent` marks a call that timed out after the whole request had gone out:
    the provider may have accepted it, so it is sent again at most once.
    `rate_limited` marks a 429: the provider is up, we are too fast for it."""

    def __init__(self, message: str, *, retry_after: float | None = None,
                 partial_results: list | None = None, maybe_sent: bool = False,
                 rate_limited: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.partial_results = partial_results or []
        self.maybe_sent = maybe_sent
        self.rate_limited = rate_limited


class PermanentSendError(Exception):
    """Not worth retrying: the provider refused the request itself (bad key, bad data)."""


def deliver_rendered(rendered: RenderedAlert, recipients: list[tuple[int, str]], *, tag: str,
                     metadata: dict[str, str], on_progress: Callable[[list[Outcome]], None] | None = None,
                     backend_path: str | None = None, template_key: str = "") -> list[Outcome]:
    """Send one rendered email to every recipient, each with their own links: one API
    call where the provider personalises batches, else one message each, in rounds
    whose outcomes go to `on_progress` as each ends (the caller writes them to the
    ledger, so a retry resends nobody already accepted). `backend_path` overrides
    EMAIL_BACKEND (the fallback provider). `template_key` names the send (one alert)
    for a provider whose batches need a template stored with it (Amazon SES): without
    one, such a provider sends one message per reader."""
    profile = sending_profile(backend_path)
    if profile.merge_field and (template_key or not profile.provider.stored_template):
        return _send_calls(rendered, recipients, profile, tag=tag, metadata=metadata, on_progress=on_progress,
                           template_key=template_key)
    return _send_each(rendered, recipients, profile, on_progress)


def preload_backends() -> None:
    """Import the configured backends (and the modules they use: anymail, requests,
    boto3) before a worker forks its pool, so that every pool process shares them and
    they are in place before the worker freezes its startup heap (config/celery.py)."""
    for path in filter(None, (settings.EMAIL_BACKEND, settings.EMAIL_BACKEND_FALLBACK)):
        backend_class(path)


def provider_label(backend_path: str | None = None) -> str:
    """The provider's name as the ledger keeps it on a Batch: its anymail name, or
    "SMTP"; the fallback, if it is the same kind of backend as the primary, is told
    apart by " (fallback)"."""
    return _label(backend_path or settings.EMAIL_BACKEND, settings.EMAIL_BACKEND)


@functools.lru_cache(maxsize=16)
def _label(path: str, primary: str) -> str:
    name = sending_profile(path).provider.esp_name
    if path != primary and name == sending_profile(primary).provider.esp_name:
        name += " (fallback)"
    return name


def _send_calls(rendered: RenderedAlert, recipients, profile: SendingProfile, *, tag: str,
                metadata: dict[str, str], on_progress, template_key: str = "") -> list[Outcome]:
    """One merged call, or several: a batch of a provider that takes few readers a
    call (Mailjet, Resend, Amazon SES) is ten calls, so that claiming and closing a
    batch is paid once for ten; and a batch cut for a provider that takes more per
    call than this one (the fallback's limit may be lower than the primary's) is
    split too. Each call's outcomes go to `on_progress` as the next begins."""
    size = max(min(profile.batch_size, profile.provider.recipient_limit), 1)
    results: list[Outcome] = []
    reported = 0
    for start in range(0, len(recipients), size):
        chunk = recipients[start:start + size]
        _throttle(profile, len(chunk))
        if start and on_progress is not None:
            on_progress(results[reported:])
            reported = len(results)
        try:
            results.extend(_send_merged(rendered, chunk, profile, tag=tag, metadata=metadata,
                                        template_key=template_key))
        except TransientSendError as error:
            error.partial_results = results[reported:]
            raise
    return results


def _throttle(profile: SendingProfile, recipients: int) -> None:
    rate = throttle.rate_for(profile.esp_name)
    if rate > 0:
        throttle.wait_for(throttle.account_key(profile.backend_path, profile.esp_name), rate, recipients)


def _rate_limited(profile: SendingProfile, error: Exception) -> Exception:
    """A 429 despite our own limit: the account's real limit is lower, slow down."""
    if isinstance(error, TransientSendError) and error.rate_limited and throttle.rate_for(profile.esp_name) > 0:
        throttle.slow_down(throttle.account_key(profile.backend_path, profile.esp_name))
    return error


# One backend (one HTTP session, kept alive) per worker process and provider.
_connections: ProcessCache = ProcessCache("provider connections", size=8)


def _connection_key(path: str) -> tuple[str, str]:
    # Keyed by the provider settings too, so a changed API URL or key takes effect.
    return path, repr(sorted(settings.ANYMAIL.items()))


def _esp_connection(path: str, options: dict | None = None):
    return _connections.get(_connection_key(path), lambda: _open_connection(path, options or {}))


def _open_connection(path: str, options: dict):
    # The profile's options (Postmark's bulk API) are backend keyword settings, which
    # anymail reads before ANYMAIL's: an operator need not set them.
    connection = _without_own_retries(backend_class(path)(fail_silently=False, **options))
    connection.open()
    _read_environment_once(connection)
    return connection


def _without_own_retries(connection):
    """The backend, before it is opened, with boto3's retries off: boto3 (Amazon SES)
    retries a 5xx or 429 itself, for seconds, inside one call; the batch engine retries
    instead, with the send rate and failover in view."""
    client_params = getattr(connection, "client_params", None)
    if isinstance(client_params, dict) and "config" in client_params:
        from botocore.config import Config

        client_params["config"] = client_params["config"].merge(Config(retries={"total_max_attempts": 1,
                                                                              "mode": "standard"}))
    return connection


def _read_environment_once(connection) -> None:
    """requests reads the proxy variables, the CA bundle variables and ~/.netrc from the
    environment on every request of a session (about 0.25 ms a call here: 0.5 s of
    CPU for an alert's 2,000 Mailjet calls). A kept connection reads the proxies and the
    CA bundle once, as it opens, for its provider's URL; .netrc is not consulted, as
    every anymail backend sends its own credentials."""
    session, url = getattr(connection, "session", None), getattr(connection, "api_url", None)
    if not isinstance(session, requests.Session) or not session.trust_env or not isinstance(url, str):
        return
    environment = session.merge_environment_settings(url, {}, None, None, None)
    session.proxies.update(environment["proxies"])
    session.verify = environment["verify"]
    session.trust_env = False


def _drop_connection(path: str) -> None:
    connection = _connections.pop(_connection_key(path))
    if connection is not None:
        connection.close()


def _send_merged(rendered: RenderedAlert, recipients, profile: SendingProfile, *, tag: str,
                 metadata: dict[str, str], template_key: str = "", retried: bool = False):
    """One API call for the whole batch; each copy gets its own links via merge data,
    and its own List-Unsubscribe as the provider's profile says."""
    provider = profile.provider
    field, key = provider.merge_field.format("t"), provider.merge_key.format("t")
    # Reversed with a plain placeholder: reverse() would percent-encode the merge field.
    links = {name: url.replace("TOKEN", field) for name, url in subscriber_links("TOKEN").items()}
    headers = {k: personalise(v, links) for k, v in rendered.headers.items()}
    make_token = link_tokens.bulk_maker()
    to = [email for _, email in recipients]
    merge_data = {email: {key: make_token(sid)} for sid, email in recipients}
    merge_headers = None
    if provider.unsubscribe == PROVIDER:
        # The provider cannot carry a header per reader in a batch: its own
        # unsubscribe handling sets one, and a shared one-click header would be wrong.
        headers.pop("List-Unsubscribe")
        headers.pop("List-Unsubscribe-Post")
    elif provider.unsubscribe != MERGED:
        unsubscribe = headers.pop("List-Unsubscribe")
        merge_headers = {email: {"List-Unsubscribe": unsubscribe.replace(field, data[key])}
                         for email, data in merge_data.items()}
    connection = _esp_connection(profile.backend_path, provider.backend_options)
    if provider.stored_template:
        # The body lives in the provider's stored template; each entry carries its
        # reader's data and headers (one Message-ID for all would be wrong: SES sets its own).
        headers.pop("Message-ID", None)
        name = _stored_template(connection, profile, template_key, rendered.subject,
                                personalise(rendered.text, links), personalise(rendered.html, links))
        message = BatchMessage(subject="", body="", from_email=settings.DEFAULT_FROM_EMAIL, to=to,
                               headers=headers, connection=connection, merge_data=merge_data,
                               tags=[tag], metadata=metadata)
        message.template_id = name
    else:
        message = BatchMessage(
            subject=rendered.subject, body=personalise(rendered.text, links),
            from_email=settings.DEFAULT_FROM_EMAIL, to=to, headers=headers,
            connection=connection, merge_data=merge_data, tags=[tag], metadata=metadata,
        )
        message.attach_alternative(personalise(rendered.html, links), "text/html")
    if merge_headers:
        message.merge_headers = merge_headers
    if provider.per_recipient_metadata:
        message.merge_metadata = {email: dict(metadata) for email in to}
    if provider.esp_extra:
        message.esp_extra = provider.esp_extra
    if provider.entries_personalised_by_us:
        message.merge_field_format = provider.merge_field
    try:
        message.send()
    except AnymailRecipientsRefused as error:
        return outcomes((sid for sid, _ in recipients), Delivery.Status.FAILED, "", str(error)[:400])
    except AnymailAPIError as error:
        _drop_connection(profile.backend_path)
        if provider.stored_template and _template_missing(error) and not retried:
            # Deleted as the alert finished, by another process ("Retry failed now"
            # sends again later): store it anew, and send once more.
            _templates.discard((profile.backend_path, template_name(template_key)))
            return _send_merged(rendered, recipients, profile, tag=tag, metadata=metadata,
                                template_key=template_key, retried=True)
        raise _rate_limited(profile, _classify(error)) from error
    except AnymailUnsupportedFeature as error:
        # A message this provider cannot take: every retry would meet the same refusal.
        raise PermanentSendError(f"{profile.esp_name} cannot send this message: {error}"[:1000]) from error
    return _statuses(message, recipients)


def _template_missing(error: AnymailAPIError) -> bool:
    response = getattr(error, "response", None)
    if not isinstance(response, dict):
        return False
    details = response.get("Error", {})
    return details.get("Code") == "NotFoundException" or "does not exist" in details.get("Message", "")


# Stored templates this process has created: (backend, template name).
_templates: set[tuple[str, str]] = set()


def template_name(template_key: str) -> str:
    """The provider-side name of a send's stored template."""
    return f"stoppress-{template_key}"


def _stored_template(connection, profile: SendingProfile, template_key: str, subject: str, text: str,
                     html: str) -> str:
    """Create the send's template at the provider once (every worker tries; the
    first wins, the others are told it exists). Its name."""
    name = template_name(template_key)
    if (profile.backend_path, name) in _templates:
        return name
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        connection.client.create_email_template(
            TemplateName=name, TemplateContent={"Subject": subject, "Text": text, "Html": html})
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") != "AlreadyExistsException":
            raise _classify(AnymailAPIError(str(error), response=error.response)) from error
    except BotoCoreError as error:
        raise TransientSendError(f"{profile.esp_name}: could not store the template: {error}"[:1000]) from error
    _templates.add((profile.backend_path, name))
    return name


def delete_stored_template(template_key: str, backend_path: str | None = None) -> bool:
    """Delete a finished send's template at a provider that stores them (True if one
    was deleted). Failures are logged: a template left over costs nothing but a name."""
    profile = sending_profile(backend_path)
    if not profile.provider.stored_template:
        return False
    from botocore.exceptions import BotoCoreError, ClientError

    name = template_name(template_key)
    _templates.discard((profile.backend_path, name))
    try:
        _esp_connection(profile.backend_path, profile.provider.backend_options).client.delete_email_template(
            TemplateName=name)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") != "NotFoundException":
            logger.warning("Could not delete template %s at %s: %s", name, profile.esp_name, error)
        return False
    except BotoCoreError as error:
        logger.warning("Could not delete template %s at %s: %s", name, profile.esp_name, error)
        return False
    return True


def _classify(error: AnymailAPIError) -> Exception:
    """Sort an API error: 429, 5xx and network errors are transient; any other 4xx is
    the provider refusing the request itself, which a retry would not change."""
    status = getattr(error, "status_code", None)
    text = str(error)
    response = getattr(error, "response", None)
    if status is None and isinstance(response, dict):
        # boto3 (Amazon SES): the parsed error, its HTTP status in the metadata.
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        text = f"HTTP {status}: {text}"
    if status is None or status == 429 or status >= 500:
        # Anymail's error is also the requests exception it wraps: a read timeout
        # means the request went out whole and only the answer is missing.
        return TransientSendError(text[:1000], retry_after=_retry_after(error),
                                  maybe_sent=_read_timeout(error), rate_limited=status == 429)
    return PermanentSendError(text[:1000])


def _read_timeout(error: Exception) -> bool:
    if isinstance(error, requests.exceptions.ReadTimeout):
        return True
    cause = error.__cause__
    return cause is not None and type(cause).__name__ == "ReadTimeoutError"  # botocore's


def _retry_after(error: AnymailAPIError) -> float | None:
    response = getattr(error, "response", None)
    if isinstance(response, dict):  # boto3's parsed error (Amazon SES)
        headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        value = headers.get("retry-after")
        return float(value) if value and value.replace(".", "", 1).isdigit() else None
    headers = getattr(response, "headers", None)
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return float(value) if value else None
    except ValueError:
        return None


REFUSED = frozenset({"rejected", "invalid", "failed"})


def _statuses(message: BatchMessage, recipients) -> list[Outcome]:
    status = message.anymail_status
    if isinstance(status.message_id, str) and not status.status & REFUSED:
        # One id and no refusals (Mailgun queues a whole call under one id): the same
        # row for everyone, without a lookup per recipient.
        sent, message_id = Delivery.Status.SENT, status.message_id
        return outcomes((subscriber_id for subscriber_id, _ in recipients), sent, message_id)
    per_recipient = status.recipients
    results = []
    for subscriber_id, email in recipients:
        recipient = per_recipient.get(email)
        refused = recipient is not None and recipient.status in REFUSED
        results.append(Outcome(
            subscriber_id,
            Delivery.Status.FAILED if refused else Delivery.Status.SENT,
            (recipient.message_id or "") if recipient else "",
            recipient.status if refused else "",
        ))
    return results


SMTP_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
# Readers each connection takes per round: after every round the round's readers go
# into the ledger (`on_progress`), so a batch retried after its worker died resends
# nobody already accepted but the round in flight.
ROUND_PER_CONNECTION = 50
_threads: ThreadPoolExecutor | None = None
_local = threading.local()


def _executor() -> ThreadPoolExecutor:
    global _threads
    if _threads is None:
        _threads = ThreadPoolExecutor(max_workers=max(settings.EMAIL_CONNECTIONS, 1),
                                      thread_name_prefix="email-connection")
    return _threads


def _send_each(rendered: RenderedAlert, recipients, profile: SendingProfile, on_progress=None):
    """One message per recipient (SMTP, and providers without a tested batch call),
    over EMAIL_CONNECTIONS kept connections at once, in rounds: each round's readers
    are reported to `on_progress` as it ends. A failure part-way keeps what was
    already accepted (TransientSendError.partial_results: the readers not yet
    reported)."""
    make_token = link_tokens.bulk_maker()
    if profile.backend_path == SMTP_BACKEND:
        send_share = _smtp_sender(MessageTemplate(rendered, settings.DEFAULT_FROM_EMAIL), make_token)
        parallel = settings.EMAIL_CONNECTIONS
    else:
        send_share = _backend_sender(rendered, profile, make_token)
        # Only anymail's HTTP backends are known to be safe in several threads.
        parallel = settings.EMAIL_CONNECTIONS if profile.esp_name else 1
    results: list[Outcome] = []
    reported = 0
    connections = max(1, min(parallel, -(-len(recipients) // ROUND_PER_CONNECTION)))
    round_size = connections * ROUND_PER_CONNECTION
    for start in range(0, len(recipients), round_size):
        chunk = recipients[start:start + round_size]
        _throttle(profile, len(chunk))
        shares = [chunk[i::connections] for i in range(connections)]
        if connections == 1:
            done = [send_share(shares[0])]
        else:
            done = list(_executor().map(send_share, shares))
        errors = []
        for rows, error in done:
            results.extend(rows)
            if error is not None:
                errors.append(error)
        if errors:
            permanent = [e for e in errors if isinstance(e, PermanentSendError)]
            error = permanent[0] if permanent else errors[0]
            if isinstance(error, TransientSendError):
                error.partial_results = results[reported:]
            raise _rate_limited(profile, error)
        if on_progress is not None:
            on_progress(results[reported:])
            reported = len(results)
    return results


def _smtp_sender(template: MessageTemplate, make_token):
    make_links = subscriber_links_maker()

    def copies(share):
        for subscriber_id, email in share:
            message_id, data = template.render(subscriber_id, email, make_links(make_token(subscriber_id)))
            yield (subscriber_id, message_id), email, data

    def send_share(share):
        results: list[Outcome] = []
        try:
            connection, reused = smtp_pool.take()
        except (smtplib.SMTPException, OSError) as error:
            return results, TransientSendError(f"SMTP connection failed: {error}"[:1000])

        def send_over(connection):
            for (subscriber_id, message_id), reply in send_each(connection, template.envelope_from, copies(share)):
                results.append(Outcome(subscriber_id, Delivery.Status.SENT, message_id) if reply.accepted
                               else Outcome(subscriber_id, Delivery.Status.FAILED, "", str(reply)[:400]))

        try:
            try:
                send_over(connection)
            except ClosedBeforeSending:
                if not reused:
                    raise
                # Closed by the server while idle, before any message went over it:
                # open a fresh one and send the share there.
                smtp_pool.discard(connection)
                connection = open_smtp()
                send_over(connection)
        except (smtplib.SMTPException, OSError) as error:
            smtp_pool.discard(connection)
            return results, TransientSendError(str(error)[:1000])
        smtp_pool.give_back(connection)
        return results, None

    return send_share


def _thread_connection(profile: SendingProfile):
    """This thread's backend for a per-message provider, kept across batches (one
    HTTP session per thread: requests sessions are not shared between threads)."""
    cache = getattr(_local, "backends", None)
    if cache is None:
        cache = _local.backends = {}
    key = _connection_key(profile.backend_path)
    if key not in cache:
        cache[key] = _without_own_retries(backend_class(profile.backend_path)(fail_silently=False))
        cache[key].open()
        _read_environment_once(cache[key])
    return cache[key]


def _backend_sender(rendered: RenderedAlert, profile: SendingProfile, make_token):
    make_links = subscriber_links_maker()
    # An anymail provider's copies skip its re-parse of the reader's address
    # (anymail_batch.PrevalidatedRecipientsMixin): validated at signup.
    message_class = BatchMessage if profile.esp_name else EmailMultiAlternatives

    def send_share(share):
        results: list[Outcome] = []
        keep = bool(profile.esp_name)
        connection = _thread_connection(profile) if keep else get_connection(profile.backend_path,
                                                                              fail_silently=False)
        try:
            if not keep:
                connection.open()
            for subscriber_id, email in share:
                copy = personalised_copy(rendered, to=email, links=make_links(make_token(subscriber_id)),
                                         connection=connection, message_class=message_class)
                try:
                    copy.send()
                except (smtplib.SMTPRecipientsRefused, AnymailRecipientsRefused) as error:
                    results.append(Outcome(subscriber_id, Delivery.Status.FAILED, "", str(error)[:400]))
                    continue
                except AnymailAPIError as error:
                    if keep:
                        getattr(_local, "backends", {}).pop(_connection_key(profile.backend_path), None)
                    return results, _classify(error)
                except AnymailUnsupportedFeature as error:
                    return results, PermanentSendError(f"{profile.esp_name} cannot send this message: {error}"[:1000])
                except (smtplib.SMTPException, OSError) as error:
                    return results, TransientSendError(str(error)[:1000])
                message_id = _message_id(copy) or copy.extra_headers.get("Message-ID", "")
                results.append(Outcome(subscriber_id, Delivery.Status.SENT, message_id))
        except (smtplib.SMTPException, OSError) as error:
            return results, TransientSendError(str(error)[:1000])
        finally:
            if not keep:
                connection.close()
        return results, None

    return send_share


def _message_id(message) -> str:
    status = getattr(message, "anymail_status", None)
    message_id = status.message_id if status is not None else None
    # Postal's ids are numbers (its webhooks carry the same number back).
    if isinstance(message_id, int) and not isinstance(message_id, bool):
        return str(message_id)
    return message_id if isinstance(message_id, str) else ""
