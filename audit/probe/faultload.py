#!/usr/bin/env python3
"""The fault campaign's load, run on the probe: open chats that keep talking while the audit
breaks the fleet, and a record of what became of every message.

    faultload.py CONFIG.json OUT.json

CONFIG names the site, the CA file, a stop file, time limits and the chats: each is one user
with one conversation, sending its prompt (tagged with a nonce, so PostgreSQL can be asked
about each message) every `pace` seconds, at most `count` times. A chat whose socket goes
reconnects with `?resume=<reply>:<seq>` and carries on, as the page does; a message whose
socket went before any answer is sent again on the next socket with the same `client_id`
(app/PROTOCOL.md, "Sending again after a lost socket"). OUT holds, per message, when it was
sent and how it was answered (ack, or the error frame that refused it), how often it was sent
again, and how its reply ended, with the frames' order checked; per chat, its reconnects and
close codes.

Standard library, Debian's python3-websockets and the scenario's chat client only (sign-in
and conversations come from /usr/local/bin/chatprobe), so it runs on the probe as is.
"""

from __future__ import annotations

import asyncio
import importlib.machinery
import importlib.util
import json
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import websockets


def _chatprobe() -> Any:  # noqa: ANN401  (a module loaded from a script file)
    loader = importlib.machinery.SourceFileLoader("chatprobe", "/usr/local/bin/chatprobe")
    spec = importlib.util.spec_from_loader("chatprobe", loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules["chatprobe"] = module  # its dataclasses look themselves up there
    loader.exec_module(module)
    return module


@dataclass
class Sent:
    nonce: str
    chat: int
    sent_at: float
    answered_at: float | None = None
    message_id: int | None = None
    reply_id: int | None = None
    refused: str | None = None
    client_id: str = ""
    # Sockets lost before any answer; the message went out again on each next one.
    socket_lost: int = 0
    duplicate_ack: bool = False
    ended_at: float | None = None
    status: str | None = None
    code: str | None = None
    last_seq: int = 0
    gaps: int = 0
    duplicates: int = 0
    resets: int = 0
    text: str = ""
    text_matches: bool | None = None


@dataclass
class ChatRecord:
    user: str
    conversation: str
    prompt: str
    reconnects: int = 0
    close_codes: dict[str, int] = field(default_factory=dict)
    gave_up: str | None = None


class Chat:
    def __init__(
        self,
        number: int,
        session: Any,  # noqa: ANN401  (a chatprobe.Session)
        record: ChatRecord,
        spec: dict,
        out: list[Sent],
    ) -> None:
        self.number = number
        self.session = session
        self.record = record
        self.pace = float(spec.get("pace", 4))
        self.count = spec.get("count")
        self.messages: list[Sent] = out
        self.pending: Sent | None = None
        self.sent = 0
        self.next_send = time.monotonic()

    def uri(self) -> str:
        base = self.session.base
        uri = f"wss://{base.hostname}/ws/chat/{self.record.conversation}/"
        if self.pending is not None and self.pending.reply_id is not None:
            uri += f"?resume={self.pending.reply_id}:{self.pending.last_seq}"
        return uri

    def new_message(self) -> None:
        nonce = f"audit-{uuid.uuid4().hex[:12]}"
        self.pending = Sent(nonce, self.number, time.time(), client_id=str(uuid.uuid4()))
        self.messages.append(self.pending)
        self.sent += 1
        self.next_send = time.monotonic() + self.pace

    def frame(self, pending: Sent) -> str:
        return json.dumps(
            {"v": 1, "type": "send", "id": pending.nonce, "model": "fake-model",
             "text": f"{self.record.prompt} ({pending.nonce})", "client_id": pending.client_id}
        )  # fmt: skip

    def on_frame(self, message: dict[str, Any]) -> None:
        pending = self.pending
        if pending is None:
            return
        kind = message.get("type")
        if kind == "ack" and message.get("id") == pending.nonce:
            pending.answered_at = time.time()
            pending.message_id = message.get("message_id")
            pending.reply_id = message.get("reply_id")
            pending.duplicate_ack = bool(message.get("duplicate"))
            return
        if kind == "error" and "reply_id" not in message and message.get("id") == pending.nonce:
            pending.answered_at = time.time()
            pending.refused = message.get("code")
            self.pending = None
            return
        if kind not in {"delta", "done", "error"} or message.get("reply_id") != pending.reply_id:
            return
        seq = message.get("seq") or 0
        if seq <= pending.last_seq:
            pending.duplicates += 1
            return
        if seq != pending.last_seq + 1:
            pending.gaps += 1
        pending.last_seq = seq
        if kind == "delta":
            if message.get("reset"):
                pending.resets += 1
                pending.text = ""
            pending.text += message.get("text", "")
            return
        pending.ended_at = time.time()
        pending.status = message.get("status", "error")
        pending.code = message.get("code")
        pending.text_matches = pending.text == message.get("content", "")
        pending.text = ""
        self.pending = None

    def wants_to_send(self, stop: Path, deadline: float) -> bool:
        if stop.exists() or time.monotonic() > deadline:
            return False
        return self.count is None or self.sent < self.count

    async def run(self, stop: Path, deadline: float, drain_deadline: list[float]) -> None:
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.session.cookies.items())}
        attempt = 0
        while self.pending is not None or self.wants_to_send(stop, deadline):
            if time.monotonic() > drain_deadline[0]:
                return
            try:
                async with websockets.connect(
                    self.uri(), extra_headers=headers, origin=self.session.origin,
                    ssl=self.session.context, open_timeout=15, close_timeout=5,
                ) as socket:  # fmt: skip
                    attempt = 0
                    if self.pending is not None and self.pending.answered_at is None:
                        # Its socket went before an answer: the same message, same client_id.
                        await socket.send(self.frame(self.pending))
                    while True:
                        if self.pending is None:
                            if not self.wants_to_send(stop, deadline):
                                return
                            wait = self.next_send - time.monotonic()
                            if wait > 0:
                                await asyncio.sleep(min(wait, 0.5))
                                continue
                            self.new_message()
                            await socket.send(self.frame(self.pending))
                        if time.monotonic() > drain_deadline[0]:
                            return
                        # A reply may take minutes (a hanging model): wait in short steps, so
                        # the drain deadline is noticed; the client's pings find a dead socket.
                        try:
                            raw = await asyncio.wait_for(socket.recv(), 2)
                        except TimeoutError:
                            continue
                        self.on_frame(json.loads(raw))
            except (websockets.exceptions.WebSocketException, OSError, TimeoutError) as error:
                code = getattr(getattr(error, "rcvd", None), "code", None)
                status = getattr(error, "status_code", None)
                key = str(code or status or type(error).__name__)
                self.record.close_codes[key] = self.record.close_codes.get(key, 0) + 1
                self.record.reconnects += 1
                if self.pending is not None and self.pending.answered_at is None:
                    # Gone before any answer: sent again on the next socket, as the page does.
                    self.pending.socket_lost += 1
                attempt += 1
                await asyncio.sleep(min(0.25 * attempt, 2))


async def main_async(config: dict) -> dict:
    chatprobe = _chatprobe()
    stop = Path(config["stop"])
    started = time.time()
    deadline = time.monotonic() + float(config["max_seconds"])
    messages: list[Sent] = []
    chats: list[Chat] = []
    for number, spec in enumerate(config["chats"]):
        session = chatprobe.Session(config["base"], config["cafile"], None)
        session.sign_in(spec["user"], spec["password"])
        record = ChatRecord(spec["user"], session.new_conversation(), spec["prompt"])
        chats.append(Chat(number, session, record, spec, messages))
    # After the stop, replies in progress get `drain_seconds` to end.
    drain_deadline = [
        time.monotonic() + float(config["max_seconds"]) + float(config["drain_seconds"])
    ]

    async def watch_stop() -> None:
        # A file another process creates: polled, as nothing can signal it.
        while not stop.exists() and time.monotonic() < deadline:  # noqa: ASYNC110, ASYNC240
            await asyncio.sleep(0.2)
        drain_deadline[0] = min(
            drain_deadline[0], time.monotonic() + float(config["drain_seconds"])
        )

    watcher = asyncio.create_task(watch_stop())
    await asyncio.gather(*(chat.run(stop, deadline, drain_deadline) for chat in chats))
    watcher.cancel()
    return {
        "started": started,
        "ended": time.time(),
        "chats": [asdict(chat.record) for chat in chats],
        "messages": [asdict(m) for m in messages],
    }


def main() -> int:
    config = json.loads(Path(sys.argv[1]).read_text())
    report = asyncio.run(main_async(config))
    Path(sys.argv[2]).write_text(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
