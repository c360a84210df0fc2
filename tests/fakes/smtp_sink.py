"""A fast SMTP sink for benchmarks: accepts everything, records each recipient.

The aiosmtpd sink (tests/fakes/smtp.py) takes about 450 messages a second on the
benchmark machine (one asyncio loop parsing every line in Python), below what the
sender reaches; this one reads each message with one buffer search for the final
"\\r\\n.\\r\\n", one thread per connection. It speaks just enough SMTP for smtplib and
Django's backend: EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT (no TLS, no AUTH), and
PIPELINING: the replies to whatever one read brought are sent in one write, and the
recipients they accept recorded in one.

    python -m tests.fakes.smtp_sink --port 0 --record FILE    # "<recipient>" per line
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import socket
import socketserver
import sys
import threading
from collections.abc import Iterator

HOST = "127.0.0.1"


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        sock = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server._lock:
            self.server.open_sockets.add(sock)
        sock.sendall(b"220 sink ESMTP\r\n")
        buffer = b""
        replies: list[bytes] = []
        accepted: list[str] = []  # recipients of messages accepted since the last flush
        recipients: list[str] = []

        def read(size: int) -> bytes:
            # Pipelining (RFC 2920): answer everything read so far before waiting for more.
            if replies:
                if accepted:
                    self.server.accept(accepted)
                    accepted.clear()
                sock.sendall(b"".join(replies))
                self.server.writes += 1
                replies.clear()
            return sock.recv(size)

        while True:
            end = buffer.find(b"\r\n")
            while end < 0:
                chunk = read(262144)
                if not chunk:
                    return
                buffer += chunk
                end = buffer.find(b"\r\n")
            line, buffer = buffer[:end], buffer[end + 2:]
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                replies.append(b"250 sink\r\n" if verb == b"HELO" else self.server.ehlo_reply)
            elif verb == b"MAIL":
                recipients = []
                replies.append(b"250 OK\r\n")
            elif verb == b"RCPT":
                address = line.split(b":", 1)[1].strip().split(b" ")[0].strip(b"<>")
                recipients.append(address.decode().lower())
                replies.append(b"250 OK\r\n")
            elif verb == b"DATA":
                replies.append(b"354 go ahead\r\n")
                buffer = b"\r\n" + buffer
                end = buffer.find(b"\r\n.\r\n")
                while end < 0:
                    chunk = read(262144)
                    if not chunk:
                        return
                    buffer += chunk
                    end = buffer.find(b"\r\n.\r\n", max(len(buffer) - len(chunk) - 5, 0))
                buffer = buffer[end + 5:]
                accepted.extend(recipients)
                replies.append(b"250 OK queued\r\n")
            elif verb == b"QUIT":
                if accepted:
                    self.server.accept(accepted)
                sock.sendall(b"".join(replies) + b"221 bye\r\n")
                return
            else:  # RSET, NOOP and anything else
                replies.append(b"250 OK\r\n")


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address, record_path: str | None, pipelining: bool = True) -> None:
        super().__init__(address, _Handler)
        self._lock = threading.Lock()
        self._record = open(record_path, "a", encoding="utf-8") if record_path else None  # noqa: SIM115
        self.ehlo_reply = (b"250-sink\r\n" + (b"250-PIPELINING\r\n" if pipelining else b"")
                           + b"250-8BITMIME\r\n250 SIZE 52428800\r\n")
        self.messages = 0
        self.writes = 0  # replies sent, one write each: the client's round trips
        self.open_sockets: set[socket.socket] = set()

    def close_connections(self, farewell: bytes = b"") -> None:
        """Close every connection from the server's side, as a server does with ones
        left idle too long (Postfix first says "421 4.4.2 ... timeout exceeded")."""
        with self._lock:
            sockets, self.open_sockets = self.open_sockets, set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                if farewell:
                    sock.sendall(farewell)
                sock.shutdown(socket.SHUT_RDWR)

    def accept(self, recipients: list[str]) -> None:
        """Record the recipients of messages accepted (one message each), before the
        client is told they were."""
        with self._lock:
            self.messages += len(recipients)
            if self._record is not None:
                self._record.write("".join(r + "\n" for r in recipients))
                self._record.flush()


@contextlib.contextmanager
def running(pipelining: bool = True) -> Iterator[_Server]:
    """The sink in this process, on a free port (`server_address`)."""
    server = _Server((HOST, 0), None, pipelining)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.smtp_sink")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--record", metavar="FILE")
    args = parser.parse_args(argv)
    server = _Server((HOST, args.port), args.record)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"listening on smtp://{HOST}:{server.server_address[1]}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
