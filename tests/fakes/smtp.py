"""A local SMTP sink (aiosmtpd) that records what Django's SMTP backend sends.

::

    with FakeSMTP() as smtp:
        settings.EMAIL_HOST, settings.EMAIL_PORT = smtp.host, smtp.port
        ...
        assert smtp.recipient_counts()["reader@example.com"] == 1
        assert smtp.connections == 1

Out of process (e.g. for a benchmark)::

    python -m tests.fakes.smtp --port 8026 --record /tmp/smtp-rcpts.txt

No TLS and no AUTH: point it at a backend with EMAIL_HOST_USER unset.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import email.message
import email.parser
import email.policy
import logging
import os
import signal
import socket
import sys
import threading
import weakref
from types import TracebackType
from typing import IO, Any, Self

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
# aiosmtpd otherwise uses socket.getfqdn() for its banner, which can stall on
# hosts with slow reverse DNS.
SERVER_HOSTNAME = "fake-smtp.local"
_BIND_ATTEMPTS = 5


@dataclasses.dataclass(frozen=True)
class ReceivedMessage:
    """One message accepted at DATA."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    peer: Any = None

    def parsed(self) -> email.message.EmailMessage:
        parser = email.parser.BytesParser(policy=email.policy.default)
        message = parser.parsebytes(self.data)
        assert isinstance(message, email.message.EmailMessage)
        return message


class _Handler:
    """aiosmtpd handler hooks; they run on the controller's event-loop thread."""

    def __init__(self, sink: FakeSMTP) -> None:
        self._sink = sink

    async def handle_HELO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str
    ) -> str:
        # Defining the hook makes setting host_name our job.
        session.host_name = hostname
        self._sink._saw_session(session)
        return f"250 {server.hostname}"

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        self._sink._saw_session(session)
        if self._sink.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if address.lower() in self._sink.refuse_recipients:
            return self._sink.refuse_recipient_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        if self._sink.refuse_after is not None and self._sink.message_count >= self._sink.refuse_after:
            return "421 Service not available, closing transmission channel"
        self._sink._accept(envelope, session)
        return "250 Message accepted for delivery"


class FakeSMTP:
    """SMTP sink on 127.0.0.1, served by an aiosmtpd Controller thread.

    All accessors are thread-safe and return copies.
    """

    def __init__(
        self,
        port: int = 0,
        *,
        record_path: str | os.PathLike[str] | None = None,
        keep_messages: bool = True,
        pipelining: bool = False,
    ) -> None:
        """
        port: 0 picks a free port.
        pipelining: advertise PIPELINING (RFC 2920) in the EHLO reply; aiosmtpd reads
          commands from a stream, so it takes pipelined ones as they come.
        record_path: append "<rcpt>\\n" per recipient of each accepted message.
        keep_messages: keep message bytes in memory; turn off for big benchmarks.
        """
        self._requested_port = port
        self._record_path = record_path
        self._keep_messages = keep_messages
        self._lock = threading.Lock()
        self._messages: list[ReceivedMessage] = []
        self._message_count = 0
        self._recipients: collections.Counter[str] = collections.Counter()
        # Sessions already counted; weak so finished connections can be freed.
        self._sessions: weakref.WeakSet[Session] = weakref.WeakSet()
        self._connections = 0
        self._record: IO[str] | None = None
        self._controller: Controller | None = None
        # Accept this many messages in all, then answer every DATA with 421 (a
        # server that falls over part-way through a batch); None: accept all.
        self.refuse_after: int | None = None
        self.pipelining = pipelining
        # RCPT TO for these (lowercased) is answered with refuse_recipient_reply.
        self.refuse_recipients: set[str] = set()
        self.refuse_recipient_reply = "550 5.1.1 No such user here"

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> Self:
        if self._controller is not None:
            raise RuntimeError("FakeSMTP already started")
        if self._record_path is not None:
            # Held open for the sink's lifetime; stop() closes it.
            self._record = open(self._record_path, "a", encoding="utf-8")  # noqa: SIM115
        try:
            self._controller = self._start_controller()
        except BaseException:
            self._close_record()
            raise
        logger.debug("fake SMTP listening on %s:%d", self.host, self.port)
        return self

    def _start_controller(self) -> Controller:
        # Controller needs a concrete port; a port picked by binding to 0 can
        # be taken by someone else before aiosmtpd binds it, so retry. (A bind
        # failure only surfaces after aiosmtpd's ready_timeout.)
        attempts = 1 if self._requested_port else _BIND_ATTEMPTS
        for attempt in range(1, attempts + 1):
            port = self._requested_port or _free_port()
            controller = Controller(
                _Handler(self),
                hostname=HOST,
                port=port,
                server_hostname=SERVER_HOSTNAME,
                ready_timeout=5.0,
            )
            try:
                controller.start()
                return controller
            except OSError:
                controller.loop.close()
                if attempt == attempts:
                    raise
                logger.debug("port %d was taken, retrying", port)
        raise AssertionError("unreachable")

    def stop(self) -> None:
        controller, self._controller = self._controller, None
        if controller is None:
            return
        controller.stop()
        self._close_record()

    def _close_record(self) -> None:
        with self._lock:
            if self._record is not None:
                self._record.close()
                self._record = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def host(self) -> str:
        return HOST

    @property
    def port(self) -> int:
        if self._controller is None:
            raise RuntimeError("FakeSMTP is not running")
        return int(self._controller.port)

    # -- recorded state ----------------------------------------------------

    @property
    def messages(self) -> list[ReceivedMessage]:
        with self._lock:
            return list(self._messages)

    @property
    def message_count(self) -> int:
        with self._lock:
            return self._message_count

    def recipient_counts(self) -> collections.Counter[str]:
        """Accepted RCPT TO addresses (lowercased), one count per message."""
        with self._lock:
            return collections.Counter(self._recipients)

    @property
    def total_recipients(self) -> int:
        with self._lock:
            return sum(self._recipients.values())

    @property
    def connections(self) -> int:
        """SMTP sessions seen (counted at HELO/EHLO, so aiosmtpd's own
        readiness probe, which only reads the banner, is not counted)."""
        with self._lock:
            return self._connections

    def reset(self) -> None:
        """Forget messages and connections; truncate the record file."""
        with self._lock:
            self._messages.clear()
            self._message_count = self._connections = 0
            self._recipients.clear()
            self._sessions = weakref.WeakSet()
            if self._record is not None:
                self._record.truncate(0)

    # -- called from the handler (event-loop thread) -----------------------

    def _saw_session(self, session: Session) -> None:
        with self._lock:
            # A client may EHLO more than once per connection (e.g. after RSET).
            if session not in self._sessions:
                self._sessions.add(session)
                self._connections += 1

    def _accept(self, envelope: Envelope, session: Session) -> None:
        rcpts = list(envelope.rcpt_tos)
        data = envelope.original_content or envelope.content or b""
        if isinstance(data, str):
            data = data.encode("utf-8", errors="surrogateescape")
        message = ReceivedMessage(envelope.mail_from or "", rcpts, data, session.peer)
        with self._lock:
            self._message_count += 1
            if self._keep_messages:
                self._messages.append(message)
            self._recipients.update(r.lower() for r in rcpts)
            if self._record is not None:
                # One write + flush per message: cheap, yet visible to
                # another process straight away.
                self._record.write("".join(r + "\n" for r in rcpts))
                self._record.flush()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    # aiosmtpd logs every session at INFO on "mail.log"; keep the CLI quiet.
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    sink = FakeSMTP(
        args.port, record_path=args.record, keep_messages=args.keep_messages
    )
    sink.start()
    print(f"listening on smtp://{sink.host}:{sink.port}", flush=True)
    try:
        _wait_for_signal()
    finally:
        sink.stop()
    return 0


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fakes.smtp",
        description="SMTP sink on 127.0.0.1.",
    )
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument(
        "--record", metavar="FILE", help="append '<rcpt>' per recipient per message"
    )
    parser.add_argument(
        "--keep-messages",
        action="store_true",
        help="keep message bytes in memory (off by default to bound memory)",
    )
    return parser.parse_args(argv)


def _wait_for_signal() -> None:
    stop = threading.Event()

    def request_stop(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    # A timed wait keeps the main thread responsive to signal handlers.
    while not stop.wait(0.5):
        pass


if __name__ == "__main__":
    sys.exit(main())
