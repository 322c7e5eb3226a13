"""A small synchronous WebSocket client speaking Parley's protocol, for tests."""

from __future__ import annotations

import json
import time
from contextlib import ExitStack
from typing import Any

from django.test import Client
from websockets.sync.client import ClientConnection, connect

from tests.processes import WEB_PORT

ORIGIN = f"http://127.0.0.1:{WEB_PORT}"


def session_cookie(user: Any) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


class ChatSocket:
    def __init__(
        self,
        conversation_id: object,
        cookie: str | None,
        *,
        origin: str = ORIGIN,
        query: str = "",
        port: int = WEB_PORT,
    ) -> None:
        headers = {"Origin": origin}
        if cookie:
            headers["Cookie"] = f"sessionid={cookie}"
        self._stack = ExitStack()
        self.ws: ClientConnection = self._stack.enter_context(
            connect(
                f"ws://127.0.0.1:{port}/ws/chat/{conversation_id}/{query}",
                additional_headers=headers,
                open_timeout=10,
                max_size=2**24,
            )
        )
        self.next_id = 1
        self.received: list[dict[str, Any]] = []

    def send(self, frame: dict[str, Any]) -> str:
        client_id = f"t{self.next_id}"
        self.next_id += 1
        self.ws.send(json.dumps({"v": 1, "id": client_id, **frame}))
        return client_id

    def send_raw(self, data: str | bytes) -> None:
        self.ws.send(data)

    def recv(self, timeout: float = 20) -> dict[str, Any]:
        frame = json.loads(self.ws.recv(timeout=timeout))
        self.received.append(frame)
        return frame

    def recv_until(self, predicate: Any, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no matching frame")
            frame = self.recv(timeout=remaining)
            if predicate(frame):
                return frame

    def ack_for(self, client_id: str, timeout: float = 20) -> dict[str, Any]:
        frame = self.recv_until(lambda f: f.get("id") == client_id, timeout)
        assert frame["type"] == "ack", frame
        return frame

    def error_for(self, client_id: str | None, timeout: float = 20) -> dict[str, Any]:
        frame = self.recv_until(
            lambda f: f["type"] == "error" and f.get("id") == client_id, timeout
        )
        return frame

    def reply_frames(self, reply_id: int, timeout: float = 60) -> list[dict[str, Any]]:
        """Frames of one reply, from what was already received up to its done/error."""
        frames = [f for f in self.received if f.get("reply_id") == reply_id and "seq" in f]
        while not frames or frames[-1]["type"] not in {"done", "error"}:
            frame = self.recv_until(lambda f: f.get("reply_id") == reply_id and "seq" in f, timeout)
            frames.append(frame)
        return frames

    def send_message(
        self, text: str, model: str = "fake-model", client_id: str | None = None
    ) -> dict[str, Any]:
        frame = {"type": "send", "text": text, "model": model}
        if client_id is not None:
            frame["client_id"] = client_id
        return self.ack_for(self.send(frame))

    def ping(self) -> None:
        client_id = self.send({"type": "ping"})
        frame = self.recv_until(lambda f: f.get("id") == client_id, 10)
        assert frame["type"] == "pong", frame

    def close(self) -> None:
        self._stack.close()


def delta_text(frames: list[dict[str, Any]]) -> str:
    text = ""
    for frame in frames:
        if frame["type"] == "delta":
            text = ("" if frame.get("reset") else text) + frame["text"]
    return text


def assert_contiguous(frames: list[dict[str, Any]], start: int = 1) -> None:
    seqs = [frame["seq"] for frame in frames]
    assert seqs == list(range(start, start + len(seqs))), seqs
