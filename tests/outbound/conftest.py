"""A webhook receiver on 127.0.0.1 that records what it is sent and can be down, and
the endpoints that point at it."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from standardwebhooks.webhooks import Webhook

from alerts.models import WebhookEndpoint
from alerts.outbound.delivery import new_secret


class Receiver:
    """Listens on a fixed port once started; before that (or after stop) the port is
    closed, as a receiver that is down. Answers `status` to every POST."""

    def __init__(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.status = 204
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/stoppress"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def verified(self, secret: str) -> list[dict]:
        """Every payload received, each checked by the standardwebhooks verifier
        (which raises on a bad or missing signature)."""
        return [Webhook(secret).verify(body, headers) for headers, body in self.received]


@pytest.fixture
def receiver():
    receiver = Receiver()
    yield receiver
    receiver.stop()


@pytest.fixture
def endpoint_for(db, receiver):
    def make(*events: str, url: str | None = None) -> WebhookEndpoint:
        return WebhookEndpoint.objects.create(name="Newsroom CRM", url=url or receiver.url,
                                              secret=new_secret(), events=list(events))
    return make
