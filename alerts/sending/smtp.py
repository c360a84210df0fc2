"""SMTP at thousands a second: a newsroom's own mail servers (Postfix, Postal, Haraka).

A batch's message is built once (`MessageTemplate`): its headers folded and encoded
once, its parts kept as text with the link markers in them. Each reader's copy is
then the template with their links substituted, base64-encoded and joined: a few
string operations in C, instead of building and flattening a MIME tree per reader.

Copies go out by `send_each`: with a server that advertises PIPELINING (RFC 2920),
MAIL FROM, RCPT TO and DATA go in one write together with the previous message's
content, so each message costs one round trip instead of smtplib's four.

Connections (`SmtpPool`) stay open across batches, one per sending thread, and a batch
goes over EMAIL_CONNECTIONS of them at once, which hides each message's round trip.
A connection the server has closed while idle is reopened once, before anything was
sent over it, so a message is never sent twice for it.
"""

from __future__ import annotations

import binascii
import email.policy
import re
import smtplib
import ssl
import threading
import uuid
from collections.abc import Iterable, Iterator
from email.utils import formatdate, parseaddr
from typing import NamedTuple
from urllib.parse import urlsplit

from django.conf import settings

from ..emails import PREFERENCES_MARK, UNSUBSCRIBE_MARK, RenderedAlert

_POLICY = email.policy.SMTP


def _fold(name: str, value: str) -> bytes:
    return _POLICY.fold_binary(name, value)


_LINES_OF_76 = re.compile(rb".{1,76}", re.DOTALL)


def _b64(text: str) -> bytes:
    """Base64 in lines of 76 characters, each ending in CRLF (RFC 2045), as
    base64.encodebytes gives but for the line ends: it makes one call per 57 bytes,
    this one for the whole text and one regex pass to cut the lines (2-3 times faster)."""
    encoded = binascii.b2a_base64(text.encode("utf-8"), newline=False)
    return b"\r\n".join(_LINES_OF_76.findall(encoded)) + b"\r\n" if encoded else b""


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
        """(Message-ID, the whole message) of one reader's copy, ready for DATA: every
        line ends in CRLF, and none starts with "." (each is a header, a MIME boundary
        or base64), so it needs no dot-stuffing."""
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


class Reply(NamedTuple):
    """The server's last word on one message: 250 accepted, anything else refused."""

    code: int
    text: str

    @property
    def accepted(self) -> bool:
        return 200 <= self.code < 300

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


class ClosedBeforeSending(smtplib.SMTPServerDisconnected):
    """The server had closed the connection before any message's content went over it
    (a kept connection, closed while idle): nothing was delivered, so the messages
    can be sent again over a new connection."""


_RSET, _DATA, _END = b"RSET\r\n", b"DATA\r\n", b".\r\n"


def send_each(connection: smtplib.SMTP, envelope_from: str,
              messages: Iterable[tuple[object, str, bytes]]) -> Iterator[tuple[object, Reply]]:
    """Send each (key, recipient, message from `MessageTemplate.render`) in one
    transaction of its own; yield (key, Reply) for each, in order, once the server has
    answered for it.

    A refused recipient, or a permanent (5xx) refusal of the sender or the message, is
    yielded as that message's Reply, and the next message is sent after an RSET. A
    temporary (4xx) one raises smtplib.SMTPResponseException after everything before it
    was yielded; the connection is then in an unknown state and must be closed (closing
    it in the middle of DATA abandons that message: the server never accepts a message
    without its final ".").

    If the server advertises PIPELINING, a message's MAIL FROM, RCPT TO and DATA are
    written at once, after the previous message's content, and their replies read
    together: one write and one round trip a message. RFC 2920 lets DATA end a group,
    and the content waits for its 354. Otherwise each command waits for its reply, as
    smtplib's own sendmail does. smtplib has no pipelining; this uses only its
    `send` and `getreply`, so it works on SMTP and SMTP_SSL connections alike.
    """
    try:
        connection.ehlo_or_helo_if_needed()
    except smtplib.SMTPServerDisconnected as error:
        raise ClosedBeforeSending(*error.args) from error
    pipelining = connection.does_esmtp and connection.has_extn("pipelining")
    mail = f"MAIL FROM:<{envelope_from}>\r\n".encode()
    content_sent = False

    def exchange(commands: list[bytes], content: bool) -> list[tuple[int, bytes]]:
        nonlocal content_sent
        try:
            if pipelining:
                connection.send(b"".join(commands))
                replies = [connection.getreply() for _ in commands]
            else:
                replies = []
                for command in commands:
                    connection.send(command)
                    replies.append(connection.getreply())
        except smtplib.SMTPServerDisconnected as error:
            if content or content_sent:
                raise
            raise ClosedBeforeSending(*error.args) from error
        if replies[0][0] == 421 and not (content or content_sent):
            # What Postfix says as it closes a connection left idle too long.
            raise ClosedBeforeSending(replies[0][1].decode(errors="replace"))
        content_sent = content_sent or content
        return replies

    in_data = None  # (key, content) of the message whose DATA got its 354
    reset = False
    for key, recipient, content in messages:
        # Recipients are validated ASCII addresses (alerts.common.addresses), so they
        # need no quoting beyond the angle brackets.
        commands = [mail, f"RCPT TO:<{recipient}>\r\n".encode(), _DATA]
        if reset:
            commands.insert(0, _RSET)
        if in_data is not None:
            commands.insert(0, in_data[1] + _END)
        replies = exchange(commands, content=in_data is not None)
        if in_data is not None:
            yield in_data[0], _final(replies.pop(0))
            in_data = None
        if reset:
            code, text = replies.pop(0)
            if not 200 <= code < 300:
                raise smtplib.SMTPResponseException(code, text)
            reset = False
        (mail_code, mail_text), (rcpt_code, rcpt_text), (data_code, data_text) = replies
        if 200 <= mail_code < 300 and 200 <= rcpt_code < 300 and data_code == 354:
            in_data = key, content
            continue
        if data_code == 354:
            # RFC 2920 has a server refuse DATA when it took no recipient; one that
            # did not now waits for content: give up on the connection.
            raise smtplib.SMTPResponseException(data_code, b"DATA accepted after a refusal")
        # As smtplib's sendmail: a refused recipient fails that reader whatever the
        # code; a refused sender or DATA only if the refusal is permanent.
        if not 200 <= mail_code < 300:
            code, text, permanent = mail_code, mail_text, mail_code >= 500
        elif not 200 <= rcpt_code < 300:
            code, text, permanent = rcpt_code, rcpt_text, True
        else:
            code, text, permanent = data_code, data_text, data_code >= 500
        if not permanent:
            raise smtplib.SMTPResponseException(code, text)
        reset = True
        yield key, Reply(code, text.decode(errors="replace"))
    if in_data is not None:
        yield in_data[0], _final(exchange([in_data[1] + _END], content=True)[0])
    elif reset:
        # A refusal may leave the transaction open (MAIL taken, RCPT refused): close it,
        # so that the kept connection's next MAIL is not a nested one. If that fails
        # the connection is closed, and its next user opens a new one.
        try:
            connection.send(_RSET)
            code, _ = connection.getreply()
        except smtplib.SMTPServerDisconnected:
            code = 0
        if not 200 <= code < 300:
            connection.close()


def _final(reply: tuple[int, bytes]) -> Reply:
    code, text = reply
    if code < 200 or 400 <= code < 500:
        raise smtplib.SMTPResponseException(code, text)
    return Reply(code, text.decode(errors="replace"))


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
