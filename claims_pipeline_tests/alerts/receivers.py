"""Local receivers for alerts: an HTTP server that records every POST (the generic webhook,
Slack's incoming webhook and Web API, Teams' webhook) and an SMTP server (aiosmtpd) that
records every message. Both listen on loopback, on a free port, for the duration of a test."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from aiosmtpd.controller import Controller

from claims_pipeline_tests.dagster_dev import free_port


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON; a form-encoded body (slack_sdk's default) as a dict of its fields,
        with JSON-looking values decoded."""
        content_type = self.headers.get("content-type", "")
        if "application/x-www-form-urlencoded" in content_type:
            fields = {k: v[0] for k, v in parse_qs(self.body.decode()).items()}
            return {k: json.loads(v) if v[:1] in "[{" else v for k, v in fields.items()}
        return json.loads(self.body)


@dataclass
class HttpReceiver:
    """Records requests; answers ``status`` with ``body`` (Slack's Web API answers JSON)."""

    status: int = 200
    requests: list[Received] = field(default_factory=list)
    url: str = ""
    _arrived: threading.Condition = field(default_factory=threading.Condition)

    def answer(self, path: str) -> bytes:
        if path.endswith("chat.postMessage"):
            ok = 200 <= self.status < 300
            return json.dumps({"ok": ok, **({} if ok else {"error": "channel_not_found"})}).encode()
        return b"ok" if self.status < 400 else b"refused by the test receiver"

    def record(self, received: Received) -> None:
        with self._arrived:
            self.requests.append(received)
            self._arrived.notify_all()

    def wait_for(self, count: int, timeout: float) -> list[Received]:
        """At least ``count`` requests, waiting up to ``timeout`` seconds for them."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while len(self.requests) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"{len(self.requests)} request(s) arrived, expected {count}"
                    )
                self._arrived.wait(left)
            return list(self.requests)


@contextmanager
def http_receiver(status: int = 200) -> Iterator[HttpReceiver]:
    receiver = HttpReceiver(status=status)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            length = int(self.headers.get("content-length", 0))
            body = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            receiver.record(Received(self.path, headers, body))
            answer = receiver.answer(self.path)
            self.send_response(receiver.status)
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class SmtpReceiver:
    host: str
    port: int
    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        self.messages.append(message_from_bytes(envelope.content, policy=policy.default))
        return "250 Message accepted for delivery"


@contextmanager
def smtp_receiver() -> Iterator[SmtpReceiver]:
    receiver = SmtpReceiver("127.0.0.1", free_port())
    controller = Controller(receiver, hostname=receiver.host, port=receiver.port)
    controller.start()
    try:
        yield receiver
    finally:
        controller.stop()
