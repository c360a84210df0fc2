"""What every fake JSON email API shares: a local HTTP server on 127.0.0.1, the faults
the tests and benchmarks inject, and the record of who was sent what.

Each provider's module (tests/fakes/sendgrid.py, postmark.py, ...) subclasses FakeESP
with the one thing that differs: how its API's request is read. `parse` turns one
request into the messages the provider would deliver, each with the provider's own
substitution already applied (so a test sees what each reader's copy says), and the
answer the provider gives. The real anymail backend is pointed at `fake.api_url`::

    with FakeSendGrid() as fake:
        settings.ANYMAIL = {"SENDGRID_API_KEY": fake.api_key, "SENDGRID_API_URL": fake.api_url}
        ...
        assert fake.recipient_counts()["reader@example.com"] == 1

Out of process (a benchmark): ``python -m tests.fakes.sendgrid --port 0 --record FILE``
prints ``listening on <api url>`` and appends ``<call id>\\t<recipient>`` per accepted
recipient. ``POST /_control`` takes JSON ``{"fail_next": n, "status": 503,
"retry_after": 1, "outage_seconds": s, "rate_limit": calls_per_second,
"fail_after_recipients": n, "delay": s, "reset": true}``; ``GET /_stats`` answers the
counts. Stdlib only.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import itertools
import json
import re
import signal
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import urlsplit

HOST = "127.0.0.1"
DEFAULT_API_KEY = "test-api-key"
Response = tuple[int, dict[str, str], bytes]


class BadRequest(Exception):
    """The provider's 4xx answer to a request it cannot take (`status`, default 400)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclasses.dataclass(frozen=True)
class Delivered:
    """One message as the provider would deliver it: its merge fields filled in."""

    recipient: str
    subject: str
    text: str
    html: str
    headers: dict[str, str]
    metadata: dict[str, Any]
    message_id: str
    call_id: str

    def header(self, name: str) -> str | None:
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return None


@dataclasses.dataclass
class Parsed:
    """What `parse` makes of one request: the messages, and the answer to give."""

    messages: list[Delivered]
    status: int
    body: Any
    headers: dict[str, str] = dataclasses.field(default_factory=dict)


def substitute(text: str, pattern: re.Pattern[str], values: dict[str, Any]) -> str:
    """Fill the merge fields `pattern` finds (group 1 names the field), as the provider
    does; a field without a value is left empty, as most providers leave it."""
    return pattern.sub(lambda m: str(values.get(m[1].strip(), "")), text) if text else text


class Template:
    """A subject or body whose merge fields are found once per call: filling it for each
    reader is then one join of the pieces between the fields, instead of a pass of the
    pattern (or of str.replace) over the whole body per reader and part, which was most
    of the fakes' CPU for a 1,000-reader call. `fill(values)` gives what `substitute`
    gives. `pattern` has one group, the field's name; with `keep_unknown` (literal keys,
    the group being the whole field) a field without a value stays as it was."""

    __slots__ = ("_pieces", "_fields", "_keep")

    def __init__(self, text: str, pattern: re.Pattern[str] | None, *, keep_unknown: bool = False) -> None:
        self._pieces = pattern.split(text) if text and pattern else [text]
        # split() puts each field's name at the odd positions, the text around it at the even ones.
        self._fields = [(i, self._pieces[i].strip()) for i in range(1, len(self._pieces), 2)]
        self._keep = keep_unknown

    def fill(self, values: dict[str, Any]) -> str:
        if not self._fields:
            return self._pieces[0]
        pieces = self._pieces.copy()
        for i, name in self._fields:
            value = values.get(name, _UNSET)
            pieces[i] = (pieces[i] if self._keep else "") if value is _UNSET else str(value)
        return "".join(pieces)


_UNSET = object()


def literal_pattern(keys: set[str]) -> re.Pattern[str] | None:
    """A pattern matching any of `keys` literally (the longest first), for providers
    whose substitutions are plain strings (SendGrid's); None for no keys."""
    if not keys:
        return None
    return re.compile("(" + "|".join(re.escape(k) for k in sorted(keys, key=len, reverse=True)) + ")")


def lower_keys(headers: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


class FakeESP:
    """A fake provider API. Subclasses set `name`, `base_path` and `max_recipients`, and
    implement `authorized`, `accepts` and `parse`."""

    name = "esp"
    base_path = ""
    max_recipients = 1000

    def __init__(self, port: int = 0, api_key: str = DEFAULT_API_KEY, *, record_path: str | None = None,
                 keep_calls: bool = True) -> None:
        self._requested_port = port
        self.api_key = api_key
        self._record_path = record_path
        self._keep = keep_calls
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._record = None
        self.reset()

    # -- what a subclass provides ----------------------------------------------------

    def authorized(self, headers: dict[str, str]) -> bool:
        raise NotImplementedError

    def accepts(self, method: str, path: str) -> bool:
        raise NotImplementedError

    def parse(self, method: str, path: str, headers: dict[str, str], body: bytes, call_id: str) -> Parsed:
        raise NotImplementedError

    def error(self, status: int, message: str) -> Response:
        """The provider's error body; JSON {"message"} unless overridden."""
        return _json(status, {"message": message})

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> Self:
        if self._record_path:
            self._record = open(self._record_path, "a", encoding="utf-8")  # noqa: SIM115
        self._server = _Server((HOST, self._requested_port), self)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"Fake{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self._server = self._thread = None
        if self._record is not None:
            self._record.close()
            self._record = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def api_url(self) -> str:
        return f"http://{HOST}:{self.port}{self.base_path}"

    # -- what tests read -------------------------------------------------------------

    @property
    def messages(self) -> list[Delivered]:
        with self._lock:
            return list(self._messages)

    @property
    def calls(self) -> list[Any]:
        """The request bodies accepted, as parsed JSON (or raw bytes)."""
        with self._lock:
            return list(self._calls)

    def recipient_counts(self) -> collections.Counter[str]:
        with self._lock:
            return collections.Counter(self._recipients)

    @property
    def total_recipients(self) -> int:
        with self._lock:
            return sum(self._recipients.values())

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"calls": self._call_count, "recipients": sum(self._recipients.values()),
                    "unique_recipients": len(self._recipients),
                    "duplicates": sum(c - 1 for c in self._recipients.values() if c > 1),
                    "rejected": self._rejected, "requests": self._requests,
                    "first_accepted_at": self._first_at, "last_accepted_at": self._last_at}

    # -- faults ----------------------------------------------------------------------

    def reset(self) -> None:
        with self._lock:
            self._messages: list[Delivered] = []
            self._calls: list[Any] = []
            self._recipients: collections.Counter[str] = collections.Counter()
            self._call_count = self._rejected = self._requests = 0
            self._first_at = self._last_at = None
            self._pending: collections.deque[tuple[int, int | None]] = collections.deque()
            self._outage_until = 0.0
            self._outage_status = 503
            self._rate_limit = 0
            self._rate_window: collections.deque[float] = collections.deque()
            self._retry_after: int | None = None
            self._fail_after: int | None = None
            self._delay = 0.0

    def fail_next(self, n: int = 1, *, status: int = 500, retry_after: int | None = None) -> None:
        with self._lock:
            self._pending.extend([(status, retry_after)] * n)

    def set_outage(self, seconds: float, *, status: int = 503) -> None:
        with self._lock:
            self._outage_until = time.time() + seconds if seconds else 0.0
            self._outage_status = status

    def set_rate_limit(self, calls_per_second: int, retry_after: int | None = 1) -> None:
        with self._lock:
            self._rate_limit, self._retry_after = calls_per_second, retry_after

    def fail_after_recipients(self, n: int | None, *, status: int = 503) -> None:
        """Accept `n` recipients in all, then answer every call with `status` (a
        provider that falls over part-way through an alert)."""
        with self._lock:
            self._fail_after, self._outage_status = n, status

    def set_delay(self, seconds: float) -> None:
        self._delay = seconds

    def apply_control(self, command: dict[str, Any]) -> None:
        if command.get("reset"):
            self.reset()
        status = int(command.get("status", 500))
        if "fail_next" in command:
            self.fail_next(int(command["fail_next"]), status=status, retry_after=command.get("retry_after"))
        if "outage_seconds" in command:
            self.set_outage(float(command["outage_seconds"]), status=int(command.get("status", 503)))
        if "rate_limit" in command:
            self.set_rate_limit(int(command["rate_limit"]), command.get("retry_after", 1))
        if "fail_after_recipients" in command:
            value = command["fail_after_recipients"]
            self.fail_after_recipients(None if value is None else int(value), status=int(command.get("status", 503)))
        if "delay" in command:
            self.set_delay(float(command["delay"]))

    def _refusal(self, now: float) -> tuple[int, int | None] | None:
        with self._lock:
            if now < self._outage_until:
                return self._outage_status, self._retry_after
            if self._fail_after is not None and sum(self._recipients.values()) >= self._fail_after:
                return self._outage_status, None
            if self._rate_limit:
                while self._rate_window and self._rate_window[0] <= now - 1.0:
                    self._rate_window.popleft()
                if len(self._rate_window) >= self._rate_limit:
                    return 429, self._retry_after
                self._rate_window.append(now)
            if self._pending:
                return self._pending.popleft()
        return None

    # -- one request -----------------------------------------------------------------

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Response:
        with self._lock:
            self._requests += 1
        if self._delay:
            time.sleep(self._delay)
        if not self.authorized(headers):
            return self.error(401, "Unauthorized")
        refusal = self._refusal(time.time())
        if refusal is not None:
            with self._lock:
                self._rejected += 1
            status, retry_after = refusal
            answer = self.error(status, HTTPStatus(status).phrase)
            if retry_after is not None:
                answer[1]["Retry-After"] = str(retry_after)
            return answer
        call_id = f"{self.name}-{next(self._ids)}"
        try:
            parsed = self.parse(method, path, headers, body, call_id)
        except BadRequest as error:
            return self.error(error.status, str(error))
        except (ValueError, KeyError, TypeError) as error:
            return self.error(400, f"malformed request: {error!r}")
        if len(parsed.messages) > self.max_recipients:
            return self.error(400, f"too many recipients: {len(parsed.messages)} > {self.max_recipients}")
        self._accept(parsed, body)
        if isinstance(parsed.body, bytes):
            return parsed.status, parsed.headers, parsed.body
        if parsed.body is None:
            return parsed.status, parsed.headers, b""
        status, headers, content = _json(parsed.status, parsed.body)
        return status, {**headers, **parsed.headers}, content

    def _accept(self, parsed: Parsed, body: bytes) -> None:
        with self._lock:
            self._call_count += 1
            self._last_at = time.time()
            self._first_at = self._first_at or self._last_at
            if self._keep:
                self._messages.extend(parsed.messages)
                try:
                    self._calls.append(json.loads(body))
                except ValueError:
                    self._calls.append(body)
            self._recipients.update(m.recipient.lower() for m in parsed.messages)
            if self._record is not None:
                self._record.write("".join(f"{m.call_id}\t{m.recipient.lower()}\n" for m in parsed.messages))
                self._record.flush()


def _json(status: int, payload: Any) -> Response:
    return status, {"Content-Type": "application/json"}, json.dumps(payload).encode()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], fake: FakeESP) -> None:
        self.fake = fake
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_GET(self) -> None:
        if urlsplit(self.path).path == "/_stats":
            self._send(*_json(200, self.server.fake.stats()))
        else:
            self._dispatch("GET")

    def _dispatch(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path = urlsplit(self.path).path
        fake = self.server.fake
        if method == "POST" and path == "/_control":
            try:
                fake.apply_control(json.loads(body or b"{}"))
            except (ValueError, TypeError) as error:
                self._send(*_json(400, {"message": str(error)}))
                return
            self._send(*_json(200, fake.stats()))
        elif fake.accepts(method, path):
            self._send(*fake.handle(method, path, {k.lower(): v for k, v in self.headers.items()}, body))
        else:
            self._send(*fake.error(404, f"no such endpoint {method} {path}"))

    def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def main(fake_class: type[FakeESP], argv: list[str] | None = None) -> int:
    """`python -m tests.fakes.<provider>`: serve until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(prog=f"python -m tests.fakes.{fake_class.name}")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--api-key", default=DEFAULT_API_KEY)
    parser.add_argument("--record", metavar="FILE", help="append '<call id>\\t<recipient>' per accepted recipient")
    args = parser.parse_args(argv)
    fake = fake_class(args.port, args.api_key, record_path=args.record, keep_calls=False).start()
    print(f"listening on {fake.api_url}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass
    fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit("run a provider's module, e.g. python -m tests.fakes.sendgrid")
