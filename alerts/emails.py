"""One builder per kind of email. Each kind has a subject/text/html template triple
under templates/emails/."""

from __future__ import annotations

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.template.loader import render_to_string
from django.urls import reverse

from .models import Subscriber
from .tokens import confirm_tokens


def absolute_url(path: str) -> str:
    return f"{settings.SITE_URL}{path}"


def render_triple(kind: str, context: dict) -> tuple[str, str, str]:
    """Render subject (collapsed to one line), text and HTML bodies of one kind."""
    subject = render_to_string(f"emails/{kind}-subject.txt", context)
    subject = " ".join(subject.split())
    text = render_to_string(f"emails/{kind}-body.txt", context)
    html = render_to_string(f"emails/{kind}-body.html", context)
    return subject, text, html


def confirmation_message(subscriber: Subscriber) -> EmailMultiAlternatives:
    """The double opt-in email: deliberately neutral (no branding beyond the name, no
    marketing), and nothing the reader typed except their own address."""
    token = confirm_tokens.make_token(subscriber)
    context = {
        "confirm_url": absolute_url(reverse("alerts:confirm", args=[token])),
        "publication_name": settings.PUBLICATION_NAME,
        "valid_hours": settings.CONFIRM_TOKEN_MAX_AGE // 3600,
    }
    subject, text, html = render_triple("confirmation", context)
    message = EmailMultiAlternatives(subject, text, settings.DEFAULT_FROM_EMAIL, [subscriber.email])
    message.attach_alternative(html, "text/html")
    return message
