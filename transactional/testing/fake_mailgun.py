"""Loopback fake of Mailgun's send API: ``POST /v3/<domain>/messages[.mime]``.

``with running_fake_mailgun(api_key="key-test") as server:`` then point MAILGUN_API_URL at
``server.base_url``; ``python -m transactional.testing.fake_mailgun --port 0`` runs it standalone.
"""

from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import json
import re
import secrets
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from email.parser import BytesHeaderParser
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, unquote

PATH_RE = re.compile(r"^/v3/([^/?#]+)/(messages|messages\.mime)/?(?:\?.*)?$")
BOUNDARY_RE = re.compile(r'boundary="?([^";]+)"?', re.I)
PARAM_RE = re.compile(r';\s*(name|filename)="([^"]*)"', re.I)


@dataclass(frozen=True)
class FakeResponse:
    """A planned answer; ``status=200`` with ``body=None`` means "accept and record"."""

    status: int = 200
    body: Any = None  # dict/list -> JSON; str as is; None -> {"message": <reason>}
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False  # close the connection without answering; nothing is recorded
    delay: float = 0.0  # seconds to wait before answering (after recording, if accepted)

    @classmethod
    def error(cls, status: int, message: str, retry_after: int | None = None) -> FakeResponse:
        """Mailgun's error shape ``{"message": ...}``, optionally with Retry-After."""
        headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
        return cls(status, {"message": message}, headers)


class Attachment(NamedTuple):
    """A file part: field ``attachment``, ``inline`` or ``message`` (for messages.mime)."""

    field: str
    filename: str
    size: int


@dataclass
class Message:
    """One parsed send request; ``id`` and ``received_at`` are set once accepted."""

    domain: str
    endpoint: str  # "messages" or "messages.mime"
    fields: dict[str, list[str]]  # every form field, multi-valued: to, h:X-Y, v:key, o:tag...
    attachments: list[Attachment] = field(default_factory=list)
    mime: bytes | None = field(default=None, repr=False)
    id: str = ""
    received_at: float = 0.0

    @property
    def to(self) -> list[str]:
        """The ``to`` values as posted."""
        return self.fields.get("to", [])

    @property
    def subject(self) -> str | None:
        """The subject field, or the MIME Subject header."""
        return next(iter(self.fields.get("subject", [])), None) or self.header("Subject")

    @property
    def message_id(self) -> str | None:
        """The sender's Message-ID (``h:Message-Id`` field or MIME header), if any."""
        return self.header("Message-Id")

    def header(self, name: str) -> str | None:
        """A custom header (``h:<Name>`` field, any case), else from the posted MIME."""
        found = [v[0] for k, v in self.fields.items() if k.lower() == f"h:{name}".lower()]
        if found or self.mime is None:
            return next(iter(found), None)
        return BytesHeaderParser().parsebytes(self.mime).get(name)


def parse_message(domain: str, endpoint: str, content_type: str, body: bytes) -> Message:
    """Parse a urlencoded or multipart send request (fields, file parts, posted MIME)."""
    fields: dict[str, list[str]] = {}
    if not content_type.lower().startswith("multipart/form-data"):
        for name, value in parse_qsl(body.decode("utf-8"), keep_blank_values=True):
            fields.setdefault(name, []).append(value)
        return Message(domain, endpoint, fields)
    boundary = BOUNDARY_RE.search(content_type)  # None -> TypeError -> 400
    files: list[Attachment] = []
    mime = None
    for part in (b"\r\n" + body).split(b"\r\n--" + boundary[1].encode())[1:]:
        if part.startswith(b"--"):
            break
        head, _, content = part[2:].partition(b"\r\n\r\n")
        params = {k.lower(): v.replace("%22", '"').replace("%0D", "\r").replace("%0A", "\n")
                  for k, v in PARAM_RE.findall(head.decode())}  # undo WHATWG escaping
        name = params.get("name", "")
        if "filename" not in params:
            fields.setdefault(name, []).append(content.decode("utf-8"))
            continue
        files.append(Attachment(name, params["filename"], len(content)))
        mime = content if name == "message" else mime
    return Message(domain, endpoint, fields, files, mime)


class _Handler(BaseHTTPRequestHandler):
    """Keep-alive HTTP/1.1 handler for the send endpoints."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: FakeMailgun

    def setup(self) -> None:
        """Track the connection so stop() can close idle keep-alive sockets."""
        super().setup()
        self.server.connections.add(self.connection)

    def finish(self) -> None:
        """Untrack the connection."""
        self.server.connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Stay silent: per-request logging would cost throughput."""

    def do_POST(self) -> None:
        """Route, authenticate, follow the fault plan, then accept and record."""
        # Stamped before the body is read and parsed, so the time says when
        # the request came, not how busy this process was meanwhile.
        arrived = time.time()
        srv = self.server
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if srv.latency:
            time.sleep(srv.latency)
        match = PATH_RE.match(self.path)
        if match is None:
            return self._reply(FakeResponse.error(404, "Not Found"))
        if srv.expected_auth and self.headers.get("Authorization") != srv.expected_auth:
            return self._reply(FakeResponse.error(401, "Invalid private key"))
        try:
            ctype = self.headers.get("Content-Type", "")
            message = parse_message(unquote(match[1]), match[2], ctype, body)
        except (ValueError, TypeError) as err:
            return self._reply(FakeResponse.error(400, f"malformed form data: {err}"))
        planned = srv.next_response()
        if planned.status == 200 and planned.body is None and not planned.drop:
            message = srv.accept(message, at=arrived)
            planned = replace(planned, body={"id": message.id, "message": "Queued. Thank you."})
        time.sleep(planned.delay)
        if not planned.drop:
            return self._reply(planned)
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
        return None

    def _reply(self, response: FakeResponse) -> None:
        """Send a complete response, always with Content-Length."""
        body = response.body
        if body is None:
            body = {"message": HTTPStatus(response.status).phrase}
        text = isinstance(body, str)
        data = body.encode() if text else json.dumps(body).encode()
        self.send_response(response.status)
        self.send_header("Content-Type", "text/plain" if text else "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


class FakeMailgun(ThreadingHTTPServer):
    """Threaded fake Mailgun: records accepted messages, follows a planned fault script."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int] = ("127.0.0.1", 0), *, latency: float = 0.0,
                 api_key: str | None = None, record_file: str | None = None) -> None:
        super().__init__(address, _Handler)
        self.latency = latency
        token = base64.b64encode(f"api:{api_key}".encode()).decode()
        self.expected_auth = f"Basic {token}" if api_key else None
        self.connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._plan: collections.deque[FakeResponse] = collections.deque()
        self._messages: list[Message] = []
        self._keys: collections.Counter[str] = collections.Counter()
        self._record = open(record_file, "a", encoding="utf-8") if record_file else None

    @property
    def base_url(self) -> str:
        """The MAILGUN_API_URL to configure, e.g. ``http://127.0.0.1:54321/v3``."""
        return "http://%s:%d/v3" % self.server_address[:2]

    @property
    def messages(self) -> list[Message]:
        """A copy of the accepted messages, in arrival order."""
        with self._lock:
            return list(self._messages)

    @property
    def count(self) -> int:
        """How many messages were accepted."""
        return len(self._messages)

    def duplicates(self) -> dict[str, int]:
        """Message-IDs (else subjects) accepted more than once, with their counts."""
        with self._lock:
            return {key: n for key, n in self._keys.items() if n > 1}

    def plan(self, *responses: FakeResponse) -> None:
        """Queue answers for the next requests, used in order; then normal success."""
        with self._lock:
            self._plan.extend(responses)

    def next_response(self) -> FakeResponse:
        """The next planned answer, else normal success."""
        with self._lock:
            return self._plan.popleft() if self._plan else FakeResponse()

    def accept(self, message: Message, *, at: float | None = None) -> Message:
        """Give the message a Mailgun-style id, record it (as received ``at``), and return it."""
        now = time.time() if at is None else at
        stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(now))
        token = secrets.token_hex(3).upper()
        with self._lock:
            message_id = f"<{stamp}.{len(self._messages) + 1}.{token}@{message.domain}>"
            message = replace(message, id=message_id, received_at=now)
            self._messages.append(message)
            self._keys[message.message_id or message.subject or message_id] += 1
            if self._record is not None:
                line = {"domain": message.domain, "to": message.to, "subject": message.subject,
                        "message_id": message.message_id, "id": message_id, "time": now}
                self._record.write(json.dumps(line) + "\n")
                self._record.flush()
        return message

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Ignore clients that went away; report anything else."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)

    def stop(self) -> None:
        """Stop serving, close keep-alive connections and the record file."""
        self.shutdown()  # returns at once if serve_forever already ended
        for conn in list(self.connections):
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self.server_close()
        with self._lock:
            if self._record is not None:
                self._record.close()
                self._record = None


@contextlib.contextmanager
def running_fake_mailgun(latency: float = 0.0, api_key: str | None = None,
                         record_file: str | None = None) -> Iterator[FakeMailgun]:
    """Run a FakeMailgun on 127.0.0.1 (a free port) for the duration of the block."""
    server = FakeMailgun(latency=latency, api_key=api_key, record_file=record_file)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield server
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> None:
    """Serve until interrupted or terminated; print the base URL first."""
    parser = argparse.ArgumentParser(description="Fake Mailgun send API on loopback.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per request")
    parser.add_argument("--api-key", help="require basic auth api:<key>")
    parser.add_argument("--record-file", help="append one JSON line per accepted message")
    args = parser.parse_args(argv)
    server = FakeMailgun(("127.0.0.1", args.port), latency=args.latency, api_key=args.api_key,
                         record_file=args.record_file)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"listening on {server.base_url}", flush=True)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever(0.05)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
