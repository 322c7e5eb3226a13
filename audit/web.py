"""A client of the site from this machine, as any Internet client reaches the lb: HTTPS to the
lb's address with the site's name for SNI and Host, trusting Pebble's root only, a cookie jar,
and a WebSocket that can write any frame, valid or not (RFC 6455 by hand: the fuzz campaign
needs invalid UTF-8, reserved bits, unmasked and fragmented frames that no library sends).
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import os
import re
import socket
import ssl
import struct
import urllib.parse
from dataclasses import dataclass, field

# Opcodes (RFC 6455, section 5.2).
CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


@dataclass
class Response:
    status: int
    headers: dict[str, list[str]]
    body: str

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None


class _Connection(http.client.HTTPSConnection):
    """HTTPS to a fixed address, with the site's name for SNI and certificate checks."""

    def __init__(self, site: str, address: str, context: ssl.SSLContext, timeout: float) -> None:
        super().__init__(site, 443, context=context, timeout=timeout)
        self.address = address

    def connect(self) -> None:
        raw = socket.create_connection((self.address, 443), self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host)  # type: ignore[attr-defined]


class Closed(Exception):
    """The server closed the socket; `code` is None when it did so without a close frame."""

    def __init__(self, code: int | None, reason: str = "") -> None:
        super().__init__(f"closed ({code}) {reason}")
        self.code = code
        self.reason = reason


@dataclass
class Frame:
    opcode: int
    payload: bytes

    @property
    def text(self) -> str:
        return self.payload.decode("utf-8", "replace")


@dataclass
class RawFrame:
    """A frame as the client writes it: anything RFC 6455 allows a client to get wrong."""

    opcode: int
    payload: bytes
    fin: bool = True
    rsv: int = 0
    masked: bool = True


class WebSocket:
    """One open WebSocket over TLS. Not thread-safe: one thread per socket."""

    def __init__(self, sock: ssl.SSLSocket, buffered: bytes) -> None:
        self.sock = sock
        self.buffer = buffered
        self.close_code: int | None = None
        self.closed = False

    def write(self, frame: RawFrame) -> None:
        first = (0x80 if frame.fin else 0) | (frame.rsv & 0x7) << 4 | frame.opcode & 0xF
        length = len(frame.payload)
        mask_bit = 0x80 if frame.masked else 0
        if length < 126:
            header = struct.pack("!BB", first, mask_bit | length)
        elif length < 1 << 16:
            header = struct.pack("!BBH", first, mask_bit | 126, length)
        else:
            header = struct.pack("!BBQ", first, mask_bit | 127, length)
        payload = frame.payload
        if frame.masked:
            key = os.urandom(4)
            header += key
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + payload)

    def send_text(self, text: str) -> None:
        self.write(RawFrame(TEXT, text.encode()))

    def _read(self, count: int) -> bytes:
        while len(self.buffer) < count:
            chunk = self.sock.recv(65536)
            if not chunk:
                self.closed = True
                raise Closed(None, "connection ended without a close frame")
            self.buffer += chunk
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def _read_frame(self) -> tuple[bool, int, bytes]:
        first, second = self._read(2)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", self._read(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", self._read(8))
        key = self._read(4) if second & 0x80 else b""
        payload = self._read(length)
        if key:
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        return bool(first & 0x80), first & 0xF, payload

    def recv(self, timeout: float) -> Frame:
        """The next data message; answers pings, raises Closed when the server closes and
        TimeoutError when nothing comes within `timeout` seconds."""
        self.sock.settimeout(timeout)
        parts: list[bytes] = []
        opcode = None
        try:
            while True:
                fin, code, payload = self._read_frame()
                if code == PING:
                    self.write(RawFrame(PONG, payload))
                    continue
                if code == PONG:
                    continue
                if code == CLOSE:
                    self.closed = True
                    self.close_code = struct.unpack("!H", payload[:2])[0] if payload else 1005
                    reason = payload[2:].decode("utf-8", "replace")
                    self._answer_close()
                    raise Closed(self.close_code, reason)
                opcode = code if code != CONTINUATION else opcode
                parts.append(payload)
                if fin:
                    return Frame(opcode or TEXT, b"".join(parts))
        except TimeoutError as error:
            raise TimeoutError(f"no frame within {timeout} s") from error
        except (ConnectionError, ssl.SSLError) as error:
            self.closed = True
            raise Closed(None, repr(error)) from error

    def _answer_close(self) -> None:
        with contextlib.suppress(OSError):
            self.write(RawFrame(CLOSE, struct.pack("!H", self.close_code or 1000)))
        self.shutdown()

    def close(self, code: int = 1000) -> None:
        if not self.closed:
            try:
                self.write(RawFrame(CLOSE, struct.pack("!H", code)))
                self.sock.settimeout(2)
                while True:
                    if self._read_frame()[1] == CLOSE:
                        break
            except (OSError, Closed):
                pass
        self.shutdown()

    def shutdown(self) -> None:
        self.closed = True
        with contextlib.suppress(OSError):
            self.sock.close()


@dataclass
class Client:
    """The site as a browser on this machine sees it."""

    site: str
    address: str
    cafile: str
    timeout: float = 30
    cookies: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.context = ssl.create_default_context(cafile=self.cafile)
        # WebSockets need HTTP/1.1; nginx would otherwise pick HTTP/2 for plain requests too.
        self.context.set_alpn_protocols(["http/1.1"])
        self.origin = f"https://{self.site}"

    def cookie_header(self) -> str:
        return "; ".join(f"{k}={v}" for k, v in self.cookies.items())

    def _keep_cookies(self, headers: list[tuple[str, str]]) -> None:
        for name, value in headers:
            if name.lower() == "set-cookie":
                key, _, rest = value.partition("=")
                self.cookies[key.strip()] = rest.split(";", 1)[0]

    def request(  # noqa: PLR0913  (an HTTP request has this many parts)
        self,
        method: str,
        path: str,
        *,
        form: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        csrf: bool = True,
        body: bytes | None = None,
    ) -> Response:
        connection = _Connection(self.site, self.address, self.context, self.timeout)
        sent = {"Origin": self.origin, "Referer": self.origin + path}
        if self.cookies:
            sent["Cookie"] = self.cookie_header()
        if form is not None:
            if csrf:
                form = {**form, "csrfmiddlewaretoken": self.cookies.get("csrftoken", "")}
            body = urllib.parse.urlencode(form).encode()
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        sent.update(headers or {})
        try:
            connection.request(method, path, body=body, headers=sent)
            answer = connection.getresponse()
            raw_headers = answer.getheaders()
            text = answer.read().decode("utf-8", "replace")
        finally:
            connection.close()
        self._keep_cookies(raw_headers)
        found: dict[str, list[str]] = {}
        for name, value in raw_headers:
            found.setdefault(name.lower(), []).append(value)
        return Response(answer.status, found, text)

    def sign_in(self, user: str, password: str) -> None:
        self.request("GET", "/login/")
        answer = self.request("POST", "/login/", form={"username": user, "password": password})
        if answer.status != 302 or "sessionid" not in self.cookies:
            raise RuntimeError(f"sign-in as {user} failed: HTTP {answer.status}")

    def new_conversation(self) -> str:
        answer = self.request("POST", "/c/new/", form={})
        match = re.search(r"/c/([0-9a-f-]{36})/", answer.header("location") or "")
        if answer.status != 302 or not match:
            raise RuntimeError(f"could not start a conversation: HTTP {answer.status}")
        return match.group(1)

    def websocket(
        self, path: str, *, origin: str | None = "", cookies: bool = True
    ) -> tuple[int, dict[str, str], WebSocket | None]:
        """Open a WebSocket: (HTTP status, headers, socket when the status is 101).
        `origin=""` sends the site's own Origin, None sends none."""
        raw = socket.create_connection((self.address, 443), self.timeout)
        sock = self.context.wrap_socket(raw, server_hostname=self.site)
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {self.site}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
        ]
        if origin is not None:
            lines.append(f"Origin: {origin or self.origin}")
        if cookies and self.cookies:
            lines.append(f"Cookie: {self.cookie_header()}")
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        sock.settimeout(self.timeout)
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        head, _, rest = received.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split()[1]) if len(status_line.split()) > 1 else 0
        headers: dict[str, str] = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if status != 101:
            sock.close()
            return status, headers, None
        return status, headers, WebSocket(sock, rest)
