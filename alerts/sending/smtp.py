"""SMTP at thousands a second: a newsroom's own mail servers (Postfix, Postal, Haraka).

A batch's message is built once (`MessageTemplate`): its headers folded and encoded
once, its parts kept as text with the link markers in them. Each reader's copy is
then the template with their links substituted, base64-encoded and joined: a few
string operations in C, instead of building and flattening a MIME tree per reader.

Connections (`SmtpPool`) stay open across batches, one per sending thread, and a batch
goes over EMAIL_CONNECTIONS of them at once, which hides each message's round trips.
A connection the server has closed while idle is reopened once, before anything was
sent over it, so a message is never sent twice for it.
"""

from __future__ import annotations

import base64
import email.policy
import smtplib
import ssl
import threading
import uuid
from email.utils import formatdate, parseaddr
from urllib.parse import urlsplit

from django.conf import settings

from ..emails import PREFERENCES_MARK, UNSUBSCRIBE_MARK, RenderedAlert

_POLICY = email.policy.SMTP


def _fold(name: str, value: str) -> bytes:
    return _POLICY.fold_binary(name, value)


def _b64(text: str) -> bytes:
    return base64.encodebytes(text.encode("utf-8")).replace(b"\n", b"\r\n")


class MessageTemplate:
    """One batch's email, built once; `render` makes each reader's copy."""

    def __init__(self, rendered: RenderedAlert, from_email: str) -> None:
        self.envelope_from = parseaddr(from_email)[1]
        self._domain = urlsplit(settings.SITE_URL).hostname or "localhost"
        self._id_prefix = uuid.uuid4().hex
        boundary = f"=_{uuid.uuid4().hex}"
        static = [_fold("From", from_email), _fold("Subject", rendered.subject), _fold("Date", formatdate()),
                  b"MIME-Version: 1.0\r\n"]
        self._personal_headers = []
        for name, value in rendered.headers.items():
            if UNSUBSCRIBE_MARK in value or PREFERENCES_MARK in value:
                self._personal_headers.append((name, value))
            else:
                static.append(_fold(name, value))
        self._head = b"".join(static)
        self._text, self._html = rendered.text, rendered.html
        self._parts_start = (f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'
                             f"--{boundary}\r\nContent-Type: text/plain; charset=\"utf-8\"\r\n"
                             "Content-Transfer-Encoding: base64\r\n\r\n").encode()
        self._between = (f"--{boundary}\r\nContent-Type: text/html; charset=\"utf-8\"\r\n"
                         "Content-Transfer-Encoding: base64\r\n\r\n").encode()
        self._end = f"--{boundary}--\r\n".encode()

    def render(self, number: int, to: str, links: dict[str, str]) -> tuple[str, bytes]:
        """(Message-ID, the whole message) of one reader's copy."""
        unsubscribe, preferences = links["unsubscribe_url"], links["preferences_url"]
        message_id = f"<{self._id_prefix}.{number}@{self._domain}>"
        personal = [f"To: {to}\r\nMessage-ID: {message_id}\r\n".encode()]
        for name, value in self._personal_headers:
            value = value.replace(UNSUBSCRIBE_MARK, unsubscribe).replace(PREFERENCES_MARK, preferences)
            personal.append(f"{name}: {value}\r\n".encode())
        text = self._text.replace(UNSUBSCRIBE_MARK, unsubscribe).replace(PREFERENCES_MARK, preferences)
        html = self._html.replace(UNSUBSCRIBE_MARK, unsubscribe).replace(PREFERENCES_MARK, preferences)
        return message_id, b"".join((self._head, *personal, self._parts_start, _b64(text), self._between,
                                     _b64(html), self._end))


def open_smtp() -> smtplib.SMTP:
    """A connection to EMAIL_HOST with Django's SMTP settings."""
    timeout = settings.EMAIL_TIMEOUT
    if getattr(settings, "EMAIL_USE_SSL", False):
        connection = smtplib.SMTP_SSL(settings.EMAIL_HOST, settings.EMAIL_PORT, timeout=timeout,
                                      context=ssl.create_default_context())
    else:
        connection = smtplib.SMTP(settings.EMAIL_HOST, settings.EMAIL_PORT, timeout=timeout)
        if settings.EMAIL_USE_TLS:
            connection.starttls(context=ssl.create_default_context())
    if settings.EMAIL_HOST_USER:
        connection.login(settings.EMAIL_HOST_USER, settings.EMAIL_HOST_PASSWORD)
    return connection


class SmtpPool:
    """Open SMTP connections of this process, kept across batches; a thread takes one
    for the length of its share of a batch and gives it back."""

    def __init__(self) -> None:
        self._idle: list[tuple[tuple, smtplib.SMTP]] = []
        self._lock = threading.Lock()

    @staticmethod
    def _key() -> tuple:
        return (settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_HOST_USER, settings.EMAIL_USE_TLS)

    def take(self) -> tuple[smtplib.SMTP, bool]:
        """(a connection, whether it was reused: a reused one may have been closed by
        the server while idle)."""
        key = self._key()
        with self._lock:
            for index, (idle_key, connection) in enumerate(self._idle):
                if idle_key == key:
                    del self._idle[index]
                    return connection, True
        return open_smtp(), False

    def give_back(self, connection: smtplib.SMTP) -> None:
        with self._lock:
            self._idle.append((self._key(), connection))

    def discard(self, connection: smtplib.SMTP) -> None:
        try:
            connection.close()
        except (OSError, smtplib.SMTPException):
            pass


pool = SmtpPool()
