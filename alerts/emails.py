"""Every email we send, one builder per kind: confirmation, preferences link, alert,
digest. Each kind has a subject/text/html template triple under templates/emails/.

Alerts and digests are rendered once and personalised per recipient (their own
unsubscribe and preference links) by `alerts.sending.provider`; the transactional
kinds are built whole for one reader."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import make_msgid
from urllib.parse import urlsplit

import css_inline
from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.template.loader import get_template, render_to_string
from django.urls import reverse

from .common.tokens import confirm_tokens, data_tokens, link_tokens, reengage_tokens
from .models import Alert, ConsentRequest, Subscriber


def absolute_url(path: str) -> str:
    return f"{settings.SITE_URL}{path}"


def render_triple(kind: str, context: dict) -> tuple[str, str, str]:
    """Render subject (collapsed to one line), text and HTML bodies of one kind."""
    subject = render_to_string(f"emails/{kind}-subject.txt", context)
    subject = " ".join(subject.split())
    text = render_to_string(f"emails/{kind}-body.txt", context)
    html = render_to_string(f"emails/{kind}-body.html", context)
    return subject, text, html


def confirmation_message(request: ConsentRequest, subscriber: Subscriber) -> EmailMultiAlternatives:
    """The double opt-in email for one consent request: deliberately neutral (no
    branding beyond the name, no marketing), naming exactly what the request asked
    for, and nothing the reader typed except their own address."""
    token = confirm_tokens.make_token(request.pk)
    subject, text, html = confirmation_rendering(request, confirm_url=confirm_url(token))
    return _transactional(subject, text, html, subscriber.email)


def confirm_url(token: str) -> str:
    """The confirmation link of a token; confirm_url("TOKEN") is the template that
    batch sends fill in per recipient."""
    return absolute_url(reverse("alerts:confirm", args=[token]))


def confirmation_rendering(request: ConsentRequest, *, confirm_url: str) -> tuple[str, str, str]:
    """Subject, text and HTML of a request's confirmation with `confirm_url` in place:
    one rendering for every request that asked for the same purposes."""
    context = {
        "confirm_url": confirm_url,
        "publication_name": settings.PUBLICATION_NAME,
        "valid_hours": settings.CONFIRM_TOKEN_MAX_AGE // 3600,
        "alerts": request.alerts,
        "asked": purposes_text(request.purposes),
    }
    return render_triple("confirmation", context)


def purposes_text(purposes: list[str] | tuple[str, ...]) -> str:
    """What a request asks for, in the reader's words."""
    names = {"alerts": "breaking news emails", "marketing": "emails about offers, events and updates"}
    return " and ".join(names[purpose] for purpose in purposes)


def data_link_message(subscriber: Subscriber, purpose: str) -> EmailMultiAlternatives:
    """A single-use link, valid for DATA_LINK_MAX_AGE, to download ("export") or
    erase ("erase") the reader's data, sent because they asked from the preference
    centre."""
    token = data_tokens[purpose].make_token(subscriber.pk)
    view = "alerts:erase" if purpose == "erase" else "alerts:data_export"
    context = {
        "link_url": absolute_url(reverse(view, args=[token])),
        "publication_name": settings.PUBLICATION_NAME,
        "purpose": purpose,
        "valid_minutes": settings.DATA_LINK_MAX_AGE // 60,
    }
    subject, text, html = render_triple("data-link", context)
    return _transactional(subject, text, html, subscriber.email)


def _transactional(subject: str, text: str, html: str, to: str) -> EmailMultiAlternatives:
    message = EmailMultiAlternatives(subject, text, settings.DEFAULT_FROM_EMAIL, [to])
    message.attach_alternative(html, "text/html")
    return message


def preferences_message(subscriber: Subscriber) -> EmailMultiAlternatives:
    """Plain and transactional: a link to the preference centre, nothing else. No
    List-Unsubscribe header, because this mail is not part of any list."""
    token = link_tokens.make_token(subscriber.pk)
    context = {
        "preferences_url": absolute_url(reverse("alerts:preferences", args=[token])),
        "publication_name": settings.PUBLICATION_NAME,
    }
    subject, text, html = render_triple("preferences", context)
    message = EmailMultiAlternatives(subject, text, settings.DEFAULT_FROM_EMAIL, [subscriber.email])
    message.attach_alternative(html, "text/html")
    return message


def reengage_message(subscriber: Subscriber) -> EmailMultiAlternatives:
    """"Still want these?": a reader who has opened nothing for REENGAGE_AFTER_MONTHS
    months is asked whether to keep sending. One button keeps them (a page with a
    POST, so mail scanners fetching links change nothing); the unsubscribe link is
    there too, and the email says what happens without an answer."""
    links = subscriber_links(link_tokens.make_token(subscriber.pk))
    context = {
        "keep_url": absolute_url(reverse("alerts:reengage_keep", args=[reengage_tokens.make_token(subscriber.pk)])),
        "unsubscribe_url": links["unsubscribe_url"],
        "publication_name": settings.PUBLICATION_NAME,
        "months": settings.REENGAGE_AFTER_MONTHS,
        "grace_days": settings.REENGAGE_GRACE_DAYS,
    }
    subject, text, html = render_triple("reengage", context)
    return _transactional(subject, text, html, subscriber.email)


# --- Alerts ---------------------------------------------------------------------------
# An alert is rendered once per alert, not once per recipient: the per-recipient parts
# (unsubscribe and preference links) are left as markers that are later turned into the
# provider's merge fields (one API call for a whole batch) or substituted per copy.
UNSUBSCRIBE_MARK = "@@unsubscribe_url@@"
PREFERENCES_MARK = "@@preferences_url@@"


@dataclass(frozen=True)
class RenderedAlert:
    subject: str
    text: str
    html: str
    headers: dict[str, str]


def list_id() -> str:
    domain = urlsplit(settings.SITE_URL).hostname or "localhost"
    return f"{settings.PUBLICATION_NAME} breaking news <breaking-news.{domain}>"


def list_headers() -> dict[str, str]:
    """RFC 8058 one-click unsubscribe and List-Id, with the per-recipient link marker."""
    return {
        "List-Unsubscribe": f"<{UNSUBSCRIBE_MARK}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        "List-Id": list_id(),
    }


def archive_url(alert: Alert) -> str:
    """The alert's public page ("View in your browser"), or "" with the archive off.
    The same for every reader: it carries no token."""
    if not settings.PUBLIC_ARCHIVE or alert.pk is None:
        return ""
    return absolute_url(reverse("alerts:archive_alert", args=[alert.pk]))


def alert_rendering(alert: Alert) -> RenderedAlert:
    """Subject, text and inlined-CSS HTML of an alert, with link markers in place of
    each recipient's own links. Everything the editor typed is escaped by the template
    (the text part has no markup to escape)."""
    context = {
        "alert": alert,
        "publication_name": settings.PUBLICATION_NAME,
        "publication_url": settings.PUBLICATION_URL,
        "unsubscribe_url": UNSUBSCRIBE_MARK,
        "preferences_url": PREFERENCES_MARK,
        "paragraphs": [p.strip() for p in alert.body.split("\n\n") if p.strip()],
        # A correction or update names the alert it follows up.
        "original": alert.follow_up_of if alert.follow_up_of_id else None,
        "publication_time_zone": settings.PUBLICATION_TIME_ZONE,
        "archive_url": archive_url(alert),
    }
    subject, text, html = render_triple("alert", context)
    headers = list_headers()
    return RenderedAlert(subject=subject, text=text, html=css_inline.inline(html), headers=headers)


def preload() -> None:
    """Build, once per process, what rendering and personalising an email first needs:
    the URL resolver (every copy's links are reversed) and the email templates. A
    worker calls this before it forks its pool, so no pool process pays for it on the
    first alert it sends (tens of milliseconds before the first hand-off)."""
    subscriber_links("preload")
    for name in EMAIL_TEMPLATES:
        get_template(name)
    css_inline.inline("<p>preload</p>")


EMAIL_TEMPLATES = tuple(f"emails/{kind}-{part}" for kind in ("alert", "digest", "confirmation", "preferences",
                                                             "data-link", "reengage")
                        for part in ("subject.txt", "body.txt", "body.html"))


def subscriber_links(token: str) -> dict[str, str]:
    """A recipient's own links, from their subscriber-link token."""
    return {
        "unsubscribe_url": absolute_url(reverse("alerts:unsubscribe", args=[token])),
        "preferences_url": absolute_url(reverse("alerts:preferences", args=[token])),
    }


_URL_SAFE = re.compile(r"[A-Za-z0-9_.~-]+").fullmatch


def subscriber_links_maker() -> Callable[[str], dict[str, str]]:
    """`subscriber_links` for many tokens: the URLs are reversed once and each token put
    in by concatenation (a token is URL-safe, so reverse would not have quoted it)."""
    mark = "0TOKEN0"
    parts = {name: url.split(mark) for name, url in subscriber_links(mark).items()}
    if any(len(pieces) != 2 for pieces in parts.values()):
        return subscriber_links
    (name_a, (a1, a2)), (name_b, (b1, b2)) = parts.items()

    def make(token: str) -> dict[str, str]:
        if not _URL_SAFE(token):
            return subscriber_links(token)
        return {name_a: a1 + token + a2, name_b: b1 + token + b2}

    return make


def personalise(text: str, links: dict[str, str]) -> str:
    return text.replace(UNSUBSCRIBE_MARK, links["unsubscribe_url"]).replace(
        PREFERENCES_MARK, links["preferences_url"]
    )


def alert_message(alert: Alert, *, to: str, token: str, connection=None) -> EmailMultiAlternatives:
    """One personalised copy of an alert (used for tests to editors and SMTP sends)."""
    rendered = alert_rendering(alert)
    return personalised_copy(rendered, to=to, links=subscriber_links(token), connection=connection)


def personalised_copy(rendered: RenderedAlert, *, to: str, links: dict[str, str],
                      connection=None, message_class=EmailMultiAlternatives) -> EmailMultiAlternatives:
    headers = {name: personalise(value, links) for name, value in rendered.headers.items()}
    # Our own Message-ID, so the ledger can record it for SMTP sends too.
    headers["Message-ID"] = make_msgid(domain=urlsplit(settings.SITE_URL).hostname or "localhost")
    message = message_class(
        rendered.subject, personalise(rendered.text, links), settings.DEFAULT_FROM_EMAIL, [to],
        headers=headers, connection=connection,
    )
    message.attach_alternative(personalise(rendered.html, links), "text/html")
    return message


def digest_rendering(alerts: list[Alert], frequency: str) -> RenderedAlert:
    """A digest of `alerts` (newest first), with the same link markers and headers as an
    alert, so it goes through the same batch sending."""
    alerts = beside_their_originals(alerts)
    for alert in alerts:
        alert.archive_url = archive_url(alert)
    context = {
        "alerts": alerts,
        "count": len(alerts),
        "frequency": "weekly" if frequency == "weekly" else "daily",
        "publication_name": settings.PUBLICATION_NAME,
        "publication_url": settings.PUBLICATION_URL,
        "unsubscribe_url": UNSUBSCRIBE_MARK,
        "preferences_url": PREFERENCES_MARK,
    }
    subject, text, html = render_triple("digest", context)
    headers = list_headers()
    return RenderedAlert(subject=subject, text=text, html=css_inline.inline(html), headers=headers)


def beside_their_originals(alerts: list[Alert]) -> list[Alert]:
    """A digest's alerts newest first, each correction or update right after the alert
    it follows up when that is in the digest too (else in its own place)."""
    present = {alert.pk for alert in alerts}
    follow_ups: dict[int, list[Alert]] = {}
    for alert in sorted(alerts, key=lambda a: a.published_at or a.created_at):
        if alert.follow_up_of_id in present:
            follow_ups.setdefault(alert.follow_up_of_id, []).append(alert)
    arranged = []
    for alert in alerts:
        if alert.follow_up_of_id in present:
            continue
        arranged.append(alert)
        arranged += follow_ups.get(alert.pk, [])
    return arranged
