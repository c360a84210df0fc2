"""A local fake of Mailgun's HTTP messages API, for tests and benchmarks.

It speaks the same wire format as https://api.mailgun.net/v3, so the real
anymail Mailgun backend can be pointed at it via ``ANYMAIL["MAILGUN_API_URL"]``::

    with FakeMailgun() as fake:
        settings.ANYMAIL["MAILGUN_API_URL"] = fake.api_url
        ...
        assert fake.recipient_counts()["reader@example.com"] == 1

Out of process (e.g. for a benchmark)::

    python -m tests.fakes.mailgun --port 8025 --record /tmp/accepted.tsv

Endpoints:

* ``POST /v3/<domain>/messages`` -- multipart/form-data or
  application/x-www-form-urlencoded, HTTP Basic auth ``api:<api key>``.
* ``POST /_control`` -- JSON ``{"fail_next": n, "status": 500, "retry_after": 1,
  "delay": 0.0, "failure_rate": 0.0, "seed": 1, "reset": true}``, and the outage
  controls of the chaos benchmark (bench/chaos.py), each on its own or combined:

  - ``{"outage_seconds": 150}`` or ``{"outage_until": <epoch>}``: answer every
    message call with 503 (``outage_status``, optional ``retry_after``) until then;
    0 ends an outage now.
  - ``{"rate_limit": 50, "retry_after": 1}``: answer 429 with that Retry-After to
    calls beyond 50 in any one second (calls let through count); 0 lifts it.
  - ``{"accept_then_hang": n, "hang_seconds": 4}``: accept and record the next n
    calls, then hold each answer that long (past a client's timeout).
  - ``{"fail_after_recipients": n}``: accept n recipients in all, then answer every
    message call with 503 (``outage_status``) until lifted with null: a provider
    falling over part-way through an alert.

* ``GET /_stats`` -- JSON ``{"calls", "recipients", "unique_recipients",
  "duplicates", "rejected"}``, plus ``requests`` (every message call, answered or
  not), ``refused_outage``, ``refused_rate_limit``, ``delayed``, ``held``,
  ``held_released``, ``hang_pending``, ``outage_until``, ``first_accepted_at`` and
  ``last_accepted_at`` (epoch seconds).

``--log-requests FILE`` appends one tab-separated line per message call: arrived,
accepted (or -), answered (epoch seconds), HTTP status, the fault that shaped the
answer (outage, rate_limit, fail, held, or -), recipient count, first recipient, and
the message id of an accepted call (or -). ``--log-arrivals FILE`` appends
``<epoch>\t<client port>`` as each message call arrives, before it is answered.

Stdlib only, so it runs anywhere the test suite does.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import collections
import dataclasses
import functools
import itertools
import json
import logging
import os
import random
import re
import secrets
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterable
from email.utils import getaddresses
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import IO, Any, Self
from urllib.parse import unquote, unquote_plus, urlsplit

logger = logging.getLogger(__name__)

DEFAULT_API_KEY = "test-api-key"
HOST = "127.0.0.1"
# Mailgun rejects a single API call addressed to more than this many recipients.
MAILGUN_MAX_RECIPIENTS = 1000
RECIPIENT_FIELDS = ("to", "cc", "bcc")

_MESSAGES_PATH = re.compile(r"/v3/([^/]+)/messages")
# WHATWG-style multipart params (what urllib3 2.x and browsers send): always
# quoted, with '"', CR and LF percent-encoded rather than backslash-escaped.
_PARAM = re.compile(r';\s*([A-Za-z0-9_*-]+)\s*=\s*(?:"([^"]*)"|([^;\s]*))')
_WHATWG_UNESCAPE = {"%22": '"', "%0D": "\r", "%0A": "\n", "%0d": "\r", "%0a": "\n"}
_WHATWG_ESCAPE = re.compile(r"%22|%0[DAda]")
# Deliberately loose (Mailgun's real check is RFC 5321/5322): one @, no
# whitespace, angle brackets or commas left over from a bad "Name <addr>".
_BARE_ADDRESS = re.compile(r"[^\s<>,]+@[^\s<>,@]+")
_SIMPLE_ADDRESS_LINE = re.compile(
    r'^[ \t]*(?:([^\s<>,"]+@[^\s<>,@"]+)|[^<>",\n]*<([^\s<>,"]+@[^\s<>,@"]+)>)[ \t]*$',
    re.MULTILINE,
)

Form = dict[str, list[str]]
Response = tuple[int, dict[str, str], bytes]


@dataclasses.dataclass(frozen=True)
class UploadedFile:
    """An ``attachment`` or ``inline`` part of a multipart request."""

    field: str
    filename: str
    content_type: str
    content: bytes


@dataclasses.dataclass(frozen=True)
class Call:
    """One accepted ``POST /v3/<domain>/messages`` call.

    form: every non-file field, in order, as sent (e.g. ``to`` once per
    recipient, ``h:X-Header``, ``v:key``, ``o:tag``, ``recipient-variables``).
    recipients: bare lowercased addresses from to/cc/bcc.
    headers: the HTTP request headers, names lowercased.
    """

    domain: str
    form: Form
    recipients: list[str]
    message_id: str
    headers: dict[str, str]
    files: list[UploadedFile] = dataclasses.field(default_factory=list)

    def first(self, name: str, default: str | None = None) -> str | None:
        values = self.form.get(name)
        return values[0] if values else default

    @property
    def custom_headers(self) -> dict[str, str]:
        """The ``h:Header-Name`` fields, keyed by header name."""
        return {k[2:]: v[-1] for k, v in self.form.items() if k.startswith("h:")}

    @property
    def variables(self) -> dict[str, str]:
        """The ``v:name`` custom-data fields, keyed by name."""
        return {k[2:]: v[-1] for k, v in self.form.items() if k.startswith("v:")}

    @property
    def is_batch(self) -> bool:
        """Mailgun sends one message per recipient only with recipient-variables;
        without them every address is visible in one shared To header."""
        return "recipient-variables" in self.form

    @property
    def recipient_variables(self) -> dict[str, Any]:
        return json.loads(self.first("recipient-variables") or "{}")


class BadRequest(Exception):
    """Maps to a Mailgun-style ``400 {"message": ...}`` response."""


@dataclasses.dataclass
class _Faults:
    pending: collections.deque[tuple[int, int | None]] = dataclasses.field(
        default_factory=collections.deque
    )
    delay: float = 0.0
    failure_rate: float = 0.0
    failure_status: int = 500
    failure_retry_after: int | None = None
    rng: random.Random = dataclasses.field(default_factory=random.Random)
    outage_until: float = 0.0  # epoch seconds; every call before it gets outage_status
    outage_status: int = 503
    outage_retry_after: int | None = None
    rate_limit: int = 0  # calls let through per second; 0 is no limit
    rate_retry_after: int | None = None
    # Arrival times of the calls let through in the last second.
    rate_window: collections.deque[float] = dataclasses.field(default_factory=collections.deque)
    hang_next: int = 0  # accept, then hold the answer of this many calls
    hang_seconds: float = 0.0
    # Accept this many recipients in all, then answer every call with outage_status
    # (a provider falling over part-way through an alert); None: no such fault.
    fail_after: int | None = None


@dataclasses.dataclass(frozen=True)
class _Refusal:
    """An injected error answer, and which fault gave it (for the counts and the log)."""

    status: int
    retry_after: int | None
    kind: str


# --------------------------------------------------------------------------
# Request body parsing
# --------------------------------------------------------------------------


def parse_form(content_type: str, body: bytes) -> tuple[Form, list[UploadedFile]]:
    """Parse a form body as Mailgun would; anymail sends either encoding."""
    mime, params = _split_header_value(content_type)
    if mime == "multipart/form-data":
        boundary = params.get("boundary")
        if not boundary:
            raise BadRequest("multipart/form-data without a boundary")
        return parse_multipart(body, boundary.encode("latin-1"))
    if mime in ("application/x-www-form-urlencoded", ""):
        return parse_urlencoded(body), []
    raise BadRequest(f"Unsupported Content-Type {mime!r}")


def parse_urlencoded(body: bytes) -> Form:
    raw_form: dict[bytes, list[bytes]] = {}
    for pair in body.split(b"&"):
        if pair:
            name, _, value = pair.partition(b"=")
            raw_form.setdefault(name, []).append(value)
    form: Form = {}
    for raw_name, raw_values in raw_form.items():
        name = _unquote_many([raw_name])[0]
        form.setdefault(name, []).extend(_unquote_many(raw_values))
    return form


def _unquote_many(raws: list[bytes]) -> list[str]:
    """[urllib.parse.unquote_plus(v) for v in raws], but fast for big batches.

    anymail sends urlencoded bodies whenever there are no attachments, and
    unquote_plus spends ~10 ms per 1,000-recipient batch. Percent-encoding is
    quoted-printable with '%' for '=', so one call to the C a2b_qp decoder
    can do all of a field's values; odd input falls back to the stdlib.
    """
    # '&' never occurs raw inside a value, and as a non-hex byte it stops an
    # escape from straddling two values.
    joined = b"&".join(raws)
    if b"%" not in joined and b"+" not in joined:
        return [raw.decode("utf-8", errors="replace") for raw in raws]
    # A literal '=' or a "%" line break means something else to a2b_qp.
    if b"=" not in joined and b"%\r" not in joined and b"%\n" not in joined:
        decoded = binascii.a2b_qp(joined.replace(b"+", b" ").replace(b"%", b"="))
        # Every well-formed %XX shrinks the input by exactly 2 bytes; less
        # means a stray '%', which a2b_qp and unquote treat differently.
        if len(decoded) == len(joined) - 2 * joined.count(b"%"):
            return _split_decoded(decoded, raws)
    return [unquote_plus(raw.decode("utf-8", errors="replace")) for raw in raws]


def _split_decoded(decoded: bytes, raws: list[bytes]) -> list[str]:
    values: list[str] = []
    start = 0
    for raw in raws:
        end = start + len(raw) - 2 * raw.count(b"%")
        values.append(decoded[start:end].decode("utf-8", errors="replace"))
        start = end + 1  # skip the '&' joiner
    return values


def parse_multipart(body: bytes, boundary: bytes) -> tuple[Form, list[UploadedFile]]:
    """A small multipart/form-data parser (RFC 7578).

    Hand-rolled for speed: on a 1,000-recipient batch the stdlib email parser
    takes ~120 ms (policy.HTTP) or ~13 ms (compat32); this takes ~1 ms.
    """
    # Every delimiter is CRLF--boundary except the first, which may start the
    # body; prefixing CRLF lets a single split() find them all.
    chunks = (b"\r\n" + body).split(b"\r\n--" + boundary)
    if len(chunks) < 2 or not chunks[-1].startswith(b"--"):
        raise BadRequest("multipart body has no closing boundary")
    form: Form = {}
    files: list[UploadedFile] = []
    for chunk in chunks[1:-1]:
        _add_part(chunk, form, files)
    return form, files


def _add_part(chunk: bytes, form: Form, files: list[UploadedFile]) -> None:
    # After the delimiter: optional transport padding, CRLF, headers, CRLFCRLF.
    line_end = chunk.find(b"\r\n")
    header_end = chunk.find(b"\r\n\r\n", line_end) if line_end >= 0 else -1
    if header_end < 0:
        raise BadRequest("malformed multipart part")
    name, filename, content_type, charset = _part_meta(chunk[line_end + 2 : header_end])
    content = chunk[header_end + 4 :]
    if filename is not None:
        files.append(UploadedFile(name, filename, content_type, content))
    else:
        form.setdefault(name, []).append(content.decode(charset, errors="replace"))


@functools.lru_cache(maxsize=4096)
def _part_meta(raw_headers: bytes) -> tuple[str, str | None, str, str]:
    """(name, filename, content type, charset) of a part, from its raw headers.

    Cached because a batch repeats identical header bytes for each of its
    1,000 ``to`` parts.
    """
    headers = _parse_part_headers(raw_headers)
    disposition, params = _split_header_value(headers.get("content-disposition", ""))
    name = params.get("name")
    if disposition != "form-data" or name is None:
        raise BadRequest("multipart part without a form-data name")
    content_type, type_params = _split_header_value(headers.get("content-type", ""))
    charset = type_params.get("charset", "utf-8")
    return name, params.get("filename"), content_type, charset


def _parse_part_headers(raw: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    # UTF-8 because urllib3 2.x puts raw UTF-8 filenames in the header.
    for line in raw.decode("utf-8", errors="replace").split("\r\n"):
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    return headers


def _split_header_value(value: str) -> tuple[str, dict[str, str]]:
    """Split ``type/sub; a="b"; c=d`` into (lowercased value, params)."""
    main, _, rest = value.partition(";")
    params: dict[str, str] = {}
    for match in _PARAM.finditer(";" + rest):
        key, quoted, bare = match.groups()
        raw = quoted if quoted is not None else bare
        params[key.lower()] = _WHATWG_ESCAPE.sub(
            lambda m: _WHATWG_UNESCAPE[m.group()], raw
        )
    return main.strip().lower(), params


def extract_recipients(form: Form) -> list[str]:
    """Bare, lowercased addresses from to/cc/bcc, in order, duplicates kept."""
    recipients: list[str] = []
    for field in RECIPIENT_FIELDS:
        values = form.get(field)
        if values:
            recipients.extend(_field_addresses(field, values))
    return recipients


def _field_addresses(field: str, values: list[str]) -> list[str]:
    # Fast path: one regex pass over all of a field's values when each is a
    # plain "addr" or "Name <addr>" (what anymail sends for simple names).
    joined = "\n".join(values).lower()
    if joined.count("\n") == len(values) - 1:
        found = _SIMPLE_ADDRESS_LINE.findall(joined)
        if len(found) == len(values):
            return [bare + named for bare, named in found]
    # Comma-separated bare addresses (one field for a whole batch): split, check each.
    if '"' not in joined and "<" not in joined:
        parts = [part.strip() for part in joined.replace("\n", ",").split(",")]
        if parts and all(_BARE_ADDRESS.fullmatch(part) for part in parts):
            return parts
    # Quoted names, or an invalid address somewhere.
    return [addr for value in values for addr in _addresses(field, value)]


def _addresses(field: str, value: str) -> list[str]:
    addrs = [addr for _, addr in getaddresses([value]) if addr]
    if not addrs or not all(_BARE_ADDRESS.fullmatch(addr) for addr in addrs):
        raise BadRequest(
            f"'{field}' parameter is not a valid address. please check documentation"
        )
    return [addr.lower() for addr in addrs]


# --------------------------------------------------------------------------
# The fake
# --------------------------------------------------------------------------


class FakeMailgun:
    """Fake Mailgun messages API on 127.0.0.1, served from a background thread.

    All accessors are thread-safe and return copies.
    """

    def __init__(
        self,
        port: int = 0,
        api_key: str = DEFAULT_API_KEY,
        *,
        record_path: str | os.PathLike[str] | None = None,
        keep_calls: bool = True,
        domains: Iterable[str] | None = None,
        max_recipients: int | None = MAILGUN_MAX_RECIPIENTS,
        request_log_path: str | os.PathLike[str] | None = None,
        arrival_log_path: str | os.PathLike[str] | None = None,
    ) -> None:
        """
        record_path: append "<message-id>\\t<recipient>\\n" per accepted recipient.
        keep_calls: keep every Call in memory; turn off for million-recipient runs.
        domains: sender domains that exist (others get Mailgun's 404);
            None accepts any domain.
        max_recipients: Mailgun's per-call limit; None disables the check.
        request_log_path: append one line per message call, answered or refused
            (see the module docstring), for timing faults from outside.
        arrival_log_path: append "<epoch>\\t<client port>" as each message call
            arrives, before it is answered.
        """
        self._requested_port = port
        self._api_key = api_key
        self._record_path = record_path
        self._keep_calls = keep_calls
        self._domains = None if domains is None else {d.lower() for d in domains}
        self._max_recipients = max_recipients
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._calls: list[Call] = []
        self._call_count = 0
        self._rejected = 0
        self._recipients: collections.Counter[str] = collections.Counter()
        self._total_recipients = 0
        self._faults = _Faults()
        self._counts: collections.Counter[str] = collections.Counter()
        self._first_accepted_at: float | None = None
        self._last_accepted_at: float | None = None
        self._record: IO[str] | None = None
        self._request_log_path = request_log_path
        self._request_log: IO[str] | None = None
        self._arrival_log_path = arrival_log_path
        self._arrival_log: IO[str] | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError("FakeMailgun already started")
        if self._record_path is not None:
            # Held open for the server's lifetime; stop() closes it.
            self._record = open(self._record_path, "a", encoding="utf-8")  # noqa: SIM115
        if self._request_log_path is not None:
            self._request_log = open(self._request_log_path, "a", encoding="utf-8")  # noqa: SIM115
        if self._arrival_log_path is not None:
            self._arrival_log = open(self._arrival_log_path, "a", encoding="utf-8")  # noqa: SIM115
        self._server = _Server((HOST, self._requested_port), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"FakeMailgun:{self.port}",
            daemon=True,
        )
        self._thread.start()
        logger.debug("fake Mailgun listening on %s", self.api_url)
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.shutdown()
        server.server_close()
        # Pooled keep-alive connections would otherwise keep being served by
        # their handler threads after "stop".
        server.close_open_connections()
        thread.join(timeout=5)
        self._server = self._thread = None
        with self._lock:
            if self._record is not None:
                self._record.close()
                self._record = None
            for log in (self._request_log, self._arrival_log):
                if log is not None:
                    log.close()
            self._request_log = self._arrival_log = None

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
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeMailgun is not running")
        return int(self._server.server_address[1])

    @property
    def api_url(self) -> str:
        """Value for anymail's MAILGUN_API_URL setting."""
        return f"http://{HOST}:{self.port}/v3"

    @property
    def api_key(self) -> str:
        return self._api_key

    # -- recorded state ----------------------------------------------------

    @property
    def calls(self) -> list[Call]:
        with self._lock:
            return list(self._calls)

    def recipient_counts(self) -> collections.Counter[str]:
        with self._lock:
            return collections.Counter(self._recipients)

    @property
    def total_recipients(self) -> int:
        with self._lock:
            return self._total_recipients

    @property
    def rejected(self) -> int:
        """Calls answered with an injected failure."""
        with self._lock:
            return self._rejected

    def stats(self) -> dict[str, Any]:
        with self._lock:
            unique = len(self._recipients)
            faults = self._faults
            return {
                "calls": self._call_count,
                "recipients": self._total_recipients,
                "unique_recipients": unique,
                "duplicates": self._total_recipients - unique,
                "rejected": self._rejected,
                **{key: self._counts[key] for key in _FAULT_COUNTS},
                "hang_pending": faults.hang_next,
                "outage_until": faults.outage_until or None,
                "rate_limit": faults.rate_limit,
                "first_accepted_at": self._first_accepted_at,
                "last_accepted_at": self._last_accepted_at,
            }

    def reset(self) -> None:
        """Forget all calls, clear injected faults, truncate the record file."""
        with self._lock:
            self._calls.clear()
            self._call_count = self._rejected = self._total_recipients = 0
            self._recipients.clear()
            self._faults = _Faults()
            self._counts.clear()
            self._first_accepted_at = self._last_accepted_at = None
            if self._record is not None:
                self._record.truncate(0)
            for log in (self._request_log, self._arrival_log):
                if log is not None:
                    log.truncate(0)

    # -- fault injection ---------------------------------------------------

    def fail_next(
        self, n: int, status: int = 500, retry_after: int | None = None
    ) -> None:
        """Answer the next n message calls with `status` (queued after earlier ones)."""
        with self._lock:
            self._faults.pending.extend([(status, retry_after)] * n)

    def set_delay(self, seconds: float) -> None:
        with self._lock:
            self._faults.delay = seconds

    def set_failure_rate(
        self,
        rate: float,
        status: int = 500,
        seed: int | None = None,
        retry_after: int | None = None,
    ) -> None:
        """Fail each message call with probability `rate` (reproducible with seed)."""
        with self._lock:
            self._faults.failure_rate = rate
            self._faults.failure_status = status
            self._faults.failure_retry_after = retry_after
            self._faults.rng = random.Random(seed)

    def set_outage(
        self, until: float, status: int = 503, retry_after: int | None = None
    ) -> None:
        """Answer every message call with `status` until the epoch time `until`
        (a time in the past ends the outage)."""
        with self._lock:
            self._faults.outage_until = until
            self._faults.outage_status = status
            self._faults.outage_retry_after = retry_after

    def set_rate_limit(self, per_second: int, retry_after: int | None = 1) -> None:
        """Answer 429 to calls beyond `per_second` in any one second; 0 lifts it."""
        with self._lock:
            self._faults.rate_limit = per_second
            self._faults.rate_retry_after = retry_after
            self._faults.rate_window.clear()

    def accept_then_hang(self, n: int, seconds: float) -> None:
        """Accept and record the next n calls, then hold each answer `seconds`: the
        client times out although the provider has the batch."""
        with self._lock:
            self._faults.hang_next = n
            self._faults.hang_seconds = seconds

    def fail_after_recipients(self, n: int | None, status: int = 503) -> None:
        """Accept `n` recipients in all, then answer every call with `status`; None
        lifts it."""
        with self._lock:
            self._faults.fail_after = n
            self._faults.outage_status = status

    def apply_control(self, command: dict[str, Any]) -> None:
        """Apply a /_control JSON command; 'reset' first so it can be combined."""
        status = int(command.get("status", 500))
        retry_after = command.get("retry_after")
        retry_after = None if retry_after is None else int(retry_after)
        if command.get("reset"):
            self.reset()
        if "delay" in command:
            self.set_delay(float(command["delay"]))
        if "failure_rate" in command:
            seed = command.get("seed")
            self.set_failure_rate(
                float(command["failure_rate"]), status, seed, retry_after
            )
        if command.get("fail_next"):
            self.fail_next(int(command["fail_next"]), status, retry_after)
        self._apply_outage_control(command, retry_after)

    def _apply_outage_control(
        self, command: dict[str, Any], retry_after: int | None
    ) -> None:
        outage_status = int(command.get("outage_status", 503))
        if "outage_until" in command:
            self.set_outage(float(command["outage_until"]), outage_status, retry_after)
        elif "outage_seconds" in command:
            seconds = float(command["outage_seconds"])
            self.set_outage(time.time() + seconds if seconds > 0 else 0.0,
                            outage_status, retry_after)
        if "rate_limit" in command:
            self.set_rate_limit(int(command["rate_limit"]),
                                1 if retry_after is None else retry_after)
        if "fail_after_recipients" in command:
            value = command["fail_after_recipients"]
            self.fail_after_recipients(None if value is None else int(value), outage_status)
        if "accept_then_hang" in command:
            self.accept_then_hang(int(command["accept_then_hang"]),
                                  float(command.get("hang_seconds", 4.0)))

    # -- request handling (called from handler threads) --------------------

    def handle_send(
        self,
        domain: str,
        headers: dict[str, str],
        body: bytes,
        client_port: int | None = None,
    ) -> Response:
        """Answer one POST /v3/<domain>/messages as Mailgun would. Its arrival is
        logged first (with the client's port, when given), so that the chaos benchmark
        can find the worker process waiting for it while it is being answered."""
        arrived = time.time()
        self._log_arrival(arrived, client_port)
        with self._lock:
            self._counts["requests"] += 1
        delay = self._faults.delay  # a float read needs no lock
        if delay > 0:
            with self._lock:
                self._counts["delayed"] += 1
            time.sleep(delay)
        if not self._authorized(headers.get("authorization", "")):
            return 401, {"Content-Type": "text/plain"}, b"Forbidden"
        refusal = self._take_refusal(arrived)
        if refusal is not None:
            self._log_request(arrived, None, refusal.status, refusal.kind, headers, body)
            return _error_response(refusal.status, refusal.retry_after)
        if self._domains is not None and domain.lower() not in self._domains:
            return _json_response(404, {"message": f"Domain not found: {domain}"})
        try:
            call = self._build_call(domain, headers, body)
        except BadRequest as exc:
            return _json_response(400, {"message": str(exc)})
        self._accept(call)
        accepted = time.time()
        hang = self._take_hang()
        if hang:
            time.sleep(hang)
            with self._lock:
                self._counts["held_released"] += 1
        self._log_request(arrived, accepted, 200, "held" if hang else "-", headers, body, call)
        return _json_response(
            200, {"id": call.message_id, "message": "Queued. Thank you."}
        )

    def _take_refusal(self, now: float) -> _Refusal | None:
        """An outage or the rate limit first, then the faults of fail_next and
        failure_rate; counted by kind."""
        with self._lock:
            faults = self._faults
            if now < faults.outage_until or (faults.fail_after is not None
                                             and self._total_recipients >= faults.fail_after):
                refusal = _Refusal(faults.outage_status, faults.outage_retry_after, "outage")
            elif faults.rate_limit and self._over_rate_limit(now):
                refusal = _Refusal(429, faults.rate_retry_after, "rate_limit")
            else:
                refusal = None
            if refusal is not None:
                self._rejected += 1
                self._counts[f"refused_{refusal.kind}"] += 1
                return refusal
        fault = self._take_fault()
        return None if fault is None else _Refusal(*fault, "fail")

    def _over_rate_limit(self, now: float) -> bool:
        """Whether a call arriving now is one too many this second; a call let
        through is counted. Called with the lock held."""
        window = self._faults.rate_window
        while window and window[0] <= now - 1.0:
            window.popleft()
        if len(window) >= self._faults.rate_limit:
            return True
        window.append(now)
        return False

    def _take_hang(self) -> float:
        with self._lock:
            faults = self._faults
            if faults.hang_next <= 0:
                return 0.0
            faults.hang_next -= 1
            self._counts["held"] += 1
            return faults.hang_seconds

    def _log_arrival(self, arrived: float, client_port: int | None) -> None:
        if self._arrival_log is None:
            return
        with self._lock:
            if self._arrival_log is not None:
                self._arrival_log.write(f"{arrived:.6f}\t{client_port or 0}\n")
                self._arrival_log.flush()

    def _log_request(
        self,
        arrived: float,
        accepted: float | None,
        status: int,
        fault: str,
        headers: dict[str, str],
        body: bytes,
        call: Call | None = None,
    ) -> None:
        if self._request_log is None:
            return
        if call is not None:
            recipients = call.recipients
        else:
            try:  # a refused call is parsed only to say whose batch it was
                recipients = extract_recipients(
                    parse_form(headers.get("content-type", ""), body)[0]
                )
            except BadRequest:
                recipients = []
        line = "\t".join((
            f"{arrived:.6f}", "-" if accepted is None else f"{accepted:.6f}",
            f"{time.time():.6f}", str(status), fault, str(len(recipients)),
            recipients[0] if recipients else "-",
            "-" if call is None else call.message_id,
        ))
        with self._lock:
            if self._request_log is not None:
                self._request_log.write(line + "\n")
                self._request_log.flush()

    def _authorized(self, authorization: str) -> bool:
        scheme, _, encoded = authorization.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        user, _, password = decoded.partition(":")
        return user == "api" and password == self._api_key

    def _take_fault(self) -> tuple[int, int | None] | None:
        with self._lock:
            faults = self._faults
            if faults.pending:
                fault: tuple[int, int | None] | None = faults.pending.popleft()
            elif faults.failure_rate > 0 and faults.rng.random() < faults.failure_rate:
                fault = (faults.failure_status, faults.failure_retry_after)
            else:
                fault = None
            if fault is not None:
                self._rejected += 1
            return fault

    def _build_call(self, domain: str, headers: dict[str, str], body: bytes) -> Call:
        form, files = parse_form(headers.get("content-type", ""), body)
        for required in ("from", "to"):
            if not any(v.strip() for v in form.get(required, ())):
                raise BadRequest(f"'{required}' parameter is missing")
        recipients = extract_recipients(form)
        limit = self._max_recipients
        if limit is not None and len(recipients) > limit:
            raise BadRequest(f"Too many recipients; max is {limit}")
        _check_recipient_variables(form)
        return Call(
            domain, form, recipients, self._new_message_id(domain), headers, files
        )

    def _new_message_id(self, domain: str) -> str:
        stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime())
        token = secrets.token_hex(4).upper()
        return f"<{stamp}.{next(self._ids)}.{token}@{domain}>"

    def _accept(self, call: Call) -> None:
        with self._lock:
            self._call_count += 1
            self._last_accepted_at = time.time()
            if self._first_accepted_at is None:
                self._first_accepted_at = self._last_accepted_at
            if self._keep_calls:
                self._calls.append(call)
            self._recipients.update(call.recipients)
            self._total_recipients += len(call.recipients)
            if self._record is not None:
                # One write + flush per call keeps recording cheap but visible
                # to another process immediately.
                prefix = call.message_id + "\t"
                self._record.write("".join(prefix + r + "\n" for r in call.recipients))
                self._record.flush()


# Counters of the chaos controls, reported by stats().
_FAULT_COUNTS = ("requests", "refused_outage", "refused_rate_limit", "delayed", "held",
                 "held_released")


def _check_recipient_variables(form: Form) -> None:
    raw = form.get("recipient-variables")
    if not raw:
        return
    try:
        parsed = json.loads(raw[-1])
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        raise BadRequest("recipient-variables parameter is not a valid JSON")


def _json_response(status: int, payload: dict[str, Any]) -> Response:
    body = json.dumps(payload).encode("utf-8")
    return status, {"Content-Type": "application/json"}, body


def _error_response(status: int, retry_after: int | None) -> Response:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    status_code, headers, body = _json_response(status, {"message": phrase})
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return status_code, headers, body


# --------------------------------------------------------------------------
# HTTP plumbing
# --------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Benchmarks open several keep-alive connections at once.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], fake: FakeMailgun) -> None:
        self.fake = fake
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver prints a traceback to stderr; clients hanging up
        # mid-request are routine in tests, anything else deserves a warning.
        exc = sys.exc_info()[1]
        level = logging.DEBUG if isinstance(exc, ConnectionError) else logging.WARNING
        logger.log(level, "error serving %s", client_address, exc_info=True)

    def close_open_connections(self) -> None:
        with self._open_lock:
            sockets = list(self._open)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeMailgun/1.0"
    # Headers and body go out in separate writes; without TCP_NODELAY the
    # second one can wait ~40ms for the client's delayed ACK.
    disable_nagle_algorithm = True
    server: _Server

    def do_POST(self) -> None:
        body = self._read_body()
        if body is None:
            return
        path = urlsplit(self.path).path
        match = _MESSAGES_PATH.fullmatch(path)
        if match:
            headers = {k.lower(): v for k, v in self.headers.items()}
            fake = self.server.fake
            port = self.client_address[1]
            self._send(*fake.handle_send(unquote(match[1]), headers, body, port))
        elif path == "/_control":
            self._send(*self._control(body))
        else:
            self._send(*_json_response(404, {"message": "Not Found"}))

    def do_GET(self) -> None:
        if urlsplit(self.path).path == "/_stats":
            self._send(*_json_response(200, self.server.fake.stats()))
        else:
            self._send(*_json_response(404, {"message": "Not Found"}))

    def _control(self, body: bytes) -> Response:
        try:
            command = json.loads(body or b"{}")
            if not isinstance(command, dict):
                raise TypeError("control body must be a JSON object")
            self.server.fake.apply_control(command)
        except (ValueError, TypeError) as exc:
            return _json_response(400, {"message": f"bad control command: {exc}"})
        return _json_response(200, self.server.fake.stats())

    def _read_body(self) -> bytes | None:
        try:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                return self._read_chunked()
            length = int(self.headers.get("Content-Length", "0"))
            if length < 0:
                raise ValueError(length)
        except ValueError:
            # The stream position is unknown now, so the connection must go.
            self.close_connection = True
            self._send(*_json_response(400, {"message": "malformed request framing"}))
            return None
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                # Skip trailers up to the terminating blank line.
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(parts)
            parts.append(self.rfile.read(size))
            self.rfile.readline()

    def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        # Quiet by default; per-request lines are available at DEBUG.
        logger.debug("%s " + format, self.address_string(), *args)


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    fake = FakeMailgun(
        args.port,
        args.api_key,
        record_path=args.record,
        keep_calls=args.keep_calls,
        max_recipients=args.max_recipients or None,
        request_log_path=args.log_requests,
        arrival_log_path=args.log_arrivals,
    )
    fake.start()
    print(f"listening on {fake.api_url}", flush=True)
    try:
        _wait_for_signal()
    finally:
        fake.stop()
    return 0


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fakes.mailgun",
        description="Fake Mailgun messages API on 127.0.0.1.",
    )
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--api-key", default=DEFAULT_API_KEY)
    parser.add_argument(
        "--record",
        metavar="FILE",
        help="append '<message-id>\\t<recipient>' per accepted recipient",
    )
    parser.add_argument(
        "--log-requests",
        metavar="FILE",
        help="append one line per message call, answered or refused (arrived,"
        " accepted, answered, status, fault, recipients, first recipient, message id)",
    )
    parser.add_argument(
        "--log-arrivals",
        metavar="FILE",
        help="append '<epoch>\\t<client port>' as each message call arrives",
    )
    parser.add_argument(
        "--keep-calls",
        action="store_true",
        help="keep every call in memory (off by default to bound memory)",
    )
    parser.add_argument(
        "--max-recipients",
        type=int,
        default=MAILGUN_MAX_RECIPIENTS,
        help="per-call recipient limit; 0 disables it",
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
