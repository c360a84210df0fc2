"""Assertion helpers shared by the tests."""

from __future__ import annotations

import re

from django.core.mail import EmailMessage


def html_body(message: EmailMessage) -> str:
    for content, mimetype in getattr(message, "alternatives", []):
        if mimetype == "text/html":
            return content
    raise AssertionError("message has no HTML part")


def assert_email_contains(message: EmailMessage, fragment: str) -> None:
    """The fragment is in both the plain-text and the HTML body."""
    assert fragment in message.body, f"{fragment!r} not in text body"
    assert fragment in html_body(message), f"{fragment!r} not in HTML body"


def link_in(text: str, path_prefix: str) -> str:
    match = re.search(r"https?://[^\s\"'<>]+" + re.escape(path_prefix) + r"[^\s\"'<>]+", text)
    assert match, f"no link to {path_prefix} in:\n{text}"
    return match.group(0)
