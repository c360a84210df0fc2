"""The "here is your preferences link" email, sent when a reader asks for one."""

from __future__ import annotations

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.urls import reverse

from .emails import absolute_url, render_triple
from .models import Subscriber
from .tokens import link_tokens


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
