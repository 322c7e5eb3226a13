"""Many chats at once, for the tests of replies at scale: one person, one socket each.

Users, conversations and session cookies are made synchronously first (`people`); then a
`Crowd` opens every socket on one event loop, sends, and keeps each socket's frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from chat.models import Conversation
from tests.chatclient import ORIGIN, session_cookie
from tests.processes import WEB_PORT
from tests.timing import patience


@dataclass
class Person:
    conversation_id: str
    cookie: str


def people(count: int, django_user_model: Any) -> list[Person]:
    """`count` users, each signed in with a conversation of their own (limits are per user)."""
    crowd = []
    for _ in range(count):
        user = django_user_model.objects.create_user(
            username=f"crowd-{uuid.uuid4().hex[:10]}", password="a-test-password-1"
        )
        conversation = Conversation.objects.create(user=user)
        crowd.append(Person(str(conversation.id), session_cookie(user)))
    return crowd


@dataclass
class Chat:
    person: Person
    socket: ClientConnection
    frames: list[dict[str, Any]] = field(default_factory=list)
    reply_id: int | None = None
    message_id: int | None = None
    sent_at: float = 0.0
    first_delta_at: float | None = None
    ended_at: float | None = None
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def reply_frames(self) -> list[dict[str, Any]]:
        return [f for f in self.frames if f.get("reply_id") == self.reply_id and "seq" in f]

    @property
    def end(self) -> dict[str, Any] | None:
        frames = self.reply_frames()
        return frames[-1] if frames and frames[-1]["type"] in {"done", "error"} else None


class Crowd:
    """Open sockets for every person; `send_all` asks each one question at the same moment."""

    def __init__(self, persons: list[Person]) -> None:
        self.persons = persons
        self.chats: list[Chat] = []
        self.readers: list[asyncio.Task[None]] = []
        self.ids = iter(range(1, 1_000_000))

    async def __aenter__(self) -> Crowd:
        sockets = await asyncio.gather(*(self._open(p) for p in self.persons))
        self.chats = [Chat(p, s) for p, s in zip(self.persons, sockets, strict=True)]
        self.readers = [asyncio.create_task(self._read(chat)) for chat in self.chats]
        return self

    async def __aexit__(self, *_: object) -> None:
        for reader in self.readers:
            reader.cancel()
        await asyncio.gather(*self.readers, return_exceptions=True)
        await asyncio.gather(*(c.socket.close() for c in self.chats), return_exceptions=True)

    @staticmethod
    async def _open(person: Person) -> ClientConnection:
        return await connect(
            f"ws://127.0.0.1:{WEB_PORT}/ws/chat/{person.conversation_id}/",
            additional_headers={"Origin": ORIGIN, "Cookie": f"sessionid={person.cookie}"},
            open_timeout=30,
            max_size=2**24,
        )

    async def _read(self, chat: Chat) -> None:
        with contextlib.suppress(Exception):
            async for data in chat.socket:
                frame = json.loads(data)
                frame["_at"], frame["_wall"] = time.monotonic(), time.time()
                chat.frames.append(frame)
                if frame["type"] == "ack" and "reply_id" in frame and chat.reply_id is None:
                    chat.reply_id, chat.message_id = frame["reply_id"], frame["message_id"]
                if chat.reply_id is not None and frame.get("reply_id") == chat.reply_id:
                    if frame["type"] == "delta" and frame.get("text") and not chat.first_delta_at:
                        chat.first_delta_at = frame["_at"]
                    if frame["type"] in {"done", "error"} and "seq" in frame:
                        chat.ended_at = frame["_at"]
                chat.arrived.set()

    async def send(self, chat: Chat, frame: dict[str, Any]) -> str:
        client_id = f"c{next(self.ids)}"
        await chat.socket.send(json.dumps({"v": 1, "id": client_id, **frame}))
        return client_id

    async def send_all(self, text: str, model: str = "fake-model") -> None:
        """Every person sends `text` at once; returns when each has its ack."""
        now = time.monotonic()
        for chat in self.chats:
            chat.sent_at = now
        await asyncio.gather(
            *(self.send(c, {"type": "send", "text": text, "model": model}) for c in self.chats)
        )
        await self.wait_for(lambda c: c.reply_id is not None, 60, "every ack")

    async def wait_for(self, ready: Any, seconds: float, what: str) -> None:
        """Wait until `ready(chat)` holds for every chat, or fail saying how many did not.
        `seconds` is a wait, not a bound: it grows with PARLEY_TEST_SLOW."""
        seconds = patience(seconds)
        deadline = time.monotonic() + seconds
        while not all(ready(chat) for chat in self.chats):
            if time.monotonic() > deadline:
                missing = sum(1 for chat in self.chats if not ready(chat))
                raise TimeoutError(f"{missing} of {len(self.chats)} chats lack {what} "
                                   f"after {seconds:.0f} s")  # fmt: skip
            await asyncio.sleep(0.05)
