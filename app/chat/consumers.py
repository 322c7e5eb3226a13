"""The chat WebSocket: validates frames, saves messages, relays reply frames in order.

The socket belongs to one conversation and joins its channel-layer group. Every reply frame
carries a sequence number; this consumer remembers the last one it sent per reply, drops
repeats and fills any gap from the reply's Redis stream before relaying, so a client sees each
frame once and in order even when the channel layer dropped some. A reply that goes silent
before its end (its last frames dropped: no later frame shows the gap) is looked up again in
its stream, or in the database, after PARLEY_STREAM_RECOVER_AFTER seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from redis.exceptions import RedisError

from chat import limits, replystream, services
from chat.generation import run_reply
from chat.markdown import render_markdown
from chat.models import Message, conversation_group
from chat.protocol import (
    CancelFrame,
    ClientFrame,
    PingFrame,
    ProtocolError,
    RegenerateFrame,
    ResumeFrame,
    SendFrame,
    encode,
    error_frame,
    parse_client_frame,
    server_frame,
)
from parley import metrics, timeline
from parley.background import cancel_and_wait
from parley.db import database_call

logger = logging.getLogger(__name__)

# Close codes for refused sockets: before accept() the browser sees an HTTP 403 either way.
CLOSE_UNAUTHENTICATED = 4401
CLOSE_NOT_FOUND = 4404
# Seconds a refused handshake asks the client to wait (Retry-After) while Redis is away.
UNAVAILABLE_RETRY_AFTER = 5
TURN_EVENT = "turn.frame"
# A silent reply is looked up again after STREAM_RECOVER_AFTER seconds, then after twice as
# long each time nothing new turns up (a model thinking, a reply queued), up to this.
RECOVER_MAX_WAIT = 30.0

owned_conversation = database_call(services.owned_conversation)
post_message = database_call(services.post_message)
sent_turn = database_call(services.sent_turn)
regenerate_last = database_call(services.regenerate_last)
cancellable_reply = database_call(services.cancellable_reply)
reply_in_conversation = database_call(services.reply_in_conversation)


def _parse_resume(query_string: bytes) -> dict[int, int]:
    """`?resume=<reply_id>:<seq>[,...]`: what a reconnecting client already has."""
    resume: dict[int, int] = {}
    values = parse_qs(query_string.decode(errors="replace")).get("resume", [])
    for value in ",".join(values).split(",")[:20]:
        reply, _, seq = value.partition(":")
        if reply.isdigit() and seq.isdigit():
            resume[int(reply)] = int(seq)
    return resume


class ChatConsumer(AsyncWebsocketConsumer):
    conversation_id: str
    group: str
    accepted = False
    client_gone = False
    watchdog: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        user = self.scope["user"]
        if not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        self.conversation_id = str(self.scope["url_route"]["kwargs"]["conversation_id"])
        try:
            await owned_conversation(user, self.conversation_id)
        except services.ChatError:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        self.user = user
        self.sent_seq: dict[int, int] = {}
        # Replies this socket's client was told of (an ack, a turn, its resume). Frames of any
        # other reply in the conversation are relayed too, but a client that does not know
        # the reply yet may have passed them over.
        self.announced: set[int] = set()
        self.bucket = limits.FrameBucket(settings.WS_FRAMES_PER_SECOND, settings.WS_FRAME_BURST)
        self.background: set[asyncio.Task[None]] = set()
        # Relaying is one sequence at a time (handlers and the silence watch share it).
        self.relay_lock = asyncio.Lock()
        # Unfinished replies this socket relays: when to look them up, and the wait so far.
        self.silent: dict[int, tuple[float, float]] = {}
        self.group = conversation_group(self.conversation_id)
        # Join the group before reading any stream, so no live frame can fall in between.
        try:
            await self.channel_layer.group_add(self.group, self.channel_name)
        except (RedisError, OSError) as error:
            logger.warning("socket refused: the channel layer is unavailable (%s)", error)
            await self.refuse_unavailable()
            return
        await self.accept()
        self.accepted = True
        metrics.OPEN_SOCKETS.inc()
        for reply_id, after_seq in _parse_resume(self.scope.get("query_string", b"")).items():
            self.announced.add(reply_id)
            await self.catch_up(reply_id, after_seq)

    async def refuse_unavailable(self) -> None:
        """Answer the handshake 503 with Retry-After where the server lets the app write its own
        response to a handshake (the ASGI denial response; Uvicorn does), not the 500 an
        exception gives: the outage is ours and short, and the page simply reconnects."""
        if "websocket.http.response" not in self.scope.get("extensions", {}):
            await self.close()
            return
        body = b"The chat service is unavailable for a moment; the page reconnects by itself.\n"
        await self.base_send(
            {
                "type": "websocket.http.response.start",
                "status": 503,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                    (b"retry-after", str(UNAVAILABLE_RETRY_AFTER).encode()),
                ],
            }
        )
        await self.base_send({"type": "websocket.http.response.body", "body": body})

    async def disconnect(self, code: int) -> None:
        if self.watchdog is not None:
            await cancel_and_wait(self.watchdog)
        if self.accepted:
            metrics.OPEN_SOCKETS.dec()
            await self.channel_layer.group_discard(self.group, self.channel_name)

    # --- client frames ----------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if not self.bucket.take():
            metrics.WS_FRAMES.labels("dropped").inc()
            if self.bucket.should_report():
                await self.send_error(
                    "too_many_frames",
                    f"Slow down: at most {settings.WS_FRAMES_PER_SECOND:g} frames a second.",
                )
            return
        if text_data is None:
            await self.send_error("bad_frame", "Frames must be JSON text, not binary.")
            return
        # A JSON-escaped message can be up to six bytes per character, plus the envelope.
        if len(text_data) > settings.MAX_MESSAGE_CHARS * 6 + 1024:
            await self.send_error("frame_too_large", "The frame is too large.")
            return
        try:
            frame = parse_client_frame(text_data, max_message_chars=settings.MAX_MESSAGE_CHARS)
        except ProtocolError as error:
            metrics.WS_FRAMES.labels("invalid").inc()
            await self.send_error(error.code, error.message, client_id=error.client_id)
            return
        metrics.WS_FRAMES.labels(type(frame).__name__.removesuffix("Frame").lower()).inc()
        try:
            await self.dispatch_frame(frame)
        except services.ChatError as error:
            await self.send_error(error.code, error.message, client_id=frame.client_id)
        except Exception:
            # A dependency failing (database, Redis) is not the client's fault: say so and keep
            # the socket, so the client can retry when it recovers.
            logger.exception("Frame %s failed", type(frame).__name__)
            await self.send_error(
                "unavailable", "The service is having trouble; try again shortly.",
                client_id=frame.client_id,
            )  # fmt: skip

    async def dispatch_frame(self, frame: ClientFrame) -> None:
        if isinstance(frame, SendFrame):
            await self.on_send(frame)
        elif isinstance(frame, CancelFrame):
            await self.on_cancel(frame)
        elif isinstance(frame, RegenerateFrame):
            await self.on_regenerate(frame)
        elif isinstance(frame, ResumeFrame):
            self.announced.add(frame.reply_id)
            await self.catch_up(frame.reply_id, frame.after_seq, force=True)
        elif isinstance(frame, PingFrame):
            await self.send_frame(server_frame("pong", id=frame.client_id))

    async def on_send(self, frame: SendFrame) -> None:
        received_at = time.time()
        try:
            turn = await self.start_turn(
                lambda: post_message(
                    self.user, self.conversation_id, frame.text, frame.model,
                    frame.client_message_id,
                )
            )  # fmt: skip
        except services.ChatError as error:
            # A re-send of a message already stored (its ack was lost with a socket) gets its
            # ack again even when the limits refuse new messages now: it creates nothing.
            if error.code not in {"quota_exceeded", "rate_limited"}:
                raise
            if frame.client_message_id is None:
                raise
            turn = await sent_turn(
                self.user, self.conversation_id, frame.client_message_id, frame.text
            )
            if turn is None:
                raise
        if not turn.duplicate:
            timeline.mark(turn.reply_id, "frame_received", received_at)
        await self.started(turn, frame.client_id)

    async def on_regenerate(self, frame: RegenerateFrame) -> None:
        turn = await self.start_turn(
            lambda: regenerate_last(self.user, self.conversation_id, frame.model)
        )
        await self.started(turn, frame.client_id)

    async def start_turn(self, start: Callable[[], Awaitable[services.Turn]]) -> services.Turn:
        """Count a model call against the quota and rate limit, then start the turn.

        A regeneration is a model call like a message, so it counts the same: otherwise
        cancel and regenerate in turns would start model calls without limit. A turn refused
        (busy, unknown_model, nothing_to_regenerate, unavailable) or found already stored
        starts no model call, so its slot is given back.
        """
        try:
            slot = await limits.admit_model_call(self.user.pk)
        except limits.QuotaExhausted:
            raise services.ChatError(
                "quota_exceeded", "You have used today's token quota; it resets at midnight UTC."
            ) from None
        except limits.RateLimited as limited:
            raise services.ChatError(
                "rate_limited", f"Too many messages; try again in {limited.wait} seconds."
            ) from None
        try:
            turn = await start()
        except Exception:
            await self.give_back(slot)
            raise
        if turn.duplicate:
            await self.give_back(slot)
        return turn

    @staticmethod
    async def give_back(slot: limits.MessageSlot) -> None:
        # Redis failing now must not hide how the turn went; the slot then merely counts
        # until the window has passed.
        with contextlib.suppress(RedisError, OSError):
            await slot.give_back()

    async def started(self, turn: services.Turn, client_id: str | None) -> None:
        fields: dict[str, Any] = {
            "message_id": turn.message_id,
            "reply_id": turn.reply_id,
            "model": turn.model,
            "replaces": turn.replaces,
        }
        if turn.client_message_id is not None:
            fields["client_id"] = str(turn.client_message_id)
        if turn.duplicate:
            # The same ack again, and the reply so far: the client lost both with its old
            # socket. The turn was announced to the other tabs the first time, and the reply
            # was queued then; live frames follow, as this socket is in the group already.
            # Frames of the reply this socket relayed before this ack (a live one while the
            # resend was on its way) reached a client that did not know the reply: from 1.
            known = turn.reply_id in self.announced
            self.announced.add(turn.reply_id)
            await self.send_frame(server_frame("ack", id=client_id, **fields, duplicate=True))
            await self.catch_up(turn.reply_id, 0, force=not known)
            return
        self.announced.add(turn.reply_id)
        await self.send_frame(server_frame("ack", id=client_id, **fields))
        self.watch(turn.reply_id)
        # Other tabs on this conversation learn about the new turn too.
        await self.channel_layer.group_send(
            self.group,
            {"type": TURN_EVENT, "frame": server_frame("turn", text=turn.text, **fields)},
        )
        if settings.GENERATION_MODE == "inprocess":
            task = asyncio.create_task(run_reply(turn.reply_id))
            self.background.add(task)
            task.add_done_callback(self.background.discard)

    async def on_cancel(self, frame: CancelFrame) -> None:
        if await cancellable_reply(self.user, self.conversation_id, frame.reply_id):
            await replystream.request_cancel(frame.reply_id)
        await self.send_frame(server_frame("ack", id=frame.client_id, reply_id=frame.reply_id))

    # --- reply frames -----------------------------------------------------------------------

    async def catch_up(self, reply_id: int, after_seq: int, *, force: bool = False) -> None:
        """replay(), then watch the reply until its end."""
        async with self.relay_lock:
            self.watch(reply_id)  # before: relaying the reply's end stops the watch
            await self.replay(reply_id, after_seq, force=force)

    async def replay(self, reply_id: int, after_seq: int, *, force: bool = False) -> None:
        """Send the reply's frames after `after_seq` from its stream, or its end from the DB."""
        reply = await reply_in_conversation(self.conversation_id, reply_id)
        if reply is None:
            await self.send_error("not_found", "No such reply.")
            return
        if not force:
            after_seq = max(after_seq, self.sent_seq.get(reply_id, 0))
        self.sent_seq[reply_id] = after_seq
        frames = await replystream.read_frames(reply_id, after_seq)
        for frame in frames:
            await self.relay(frame)
        if reply.is_finished:
            # The stream has expired, or lacks the end (Redis was away when the worker stored
            # it): the database has the whole reply. relay() drops it if the stream had it.
            await self.relay(self.final_frame(reply))

    @staticmethod
    def final_frame(reply: Message) -> dict[str, Any]:
        fields = {
            "reply_id": reply.pk,
            "seq": reply.final_seq,
            "content": reply.content,
            "html": render_markdown(reply.content),
        }
        if reply.status == "error":
            return error_frame(reply.error_code, reply.error_message, **fields)
        usage = {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "estimated": reply.usage_estimated,
        }
        return server_frame("done", status=reply.status, usage=usage, **fields)

    async def relay(self, frame: dict[str, Any]) -> None:
        reply_id, seq = frame["reply_id"], frame["seq"]
        if seq <= self.sent_seq.get(reply_id, 0):
            return
        self.sent_seq[reply_id] = seq
        if frame["type"] == "delta":
            self.watch(reply_id)
        else:  # done or error: the reply is over
            self.silent.pop(reply_id, None)
        await self.send_frame(frame)
        if seq == 1:
            timeline.mark(reply_id, "first_frame_relayed")

    async def reply_frame(self, event: dict[str, Any]) -> None:
        """A live frame from a worker, via the channel layer."""
        frame = event["frame"]
        reply_id, seq = frame["reply_id"], frame["seq"]
        async with self.relay_lock:
            last = self.sent_seq.get(reply_id, 0)
            if seq > last + 1:
                # Frames were dropped on the way (channel over capacity) or this socket joined
                # mid-reply: take the missing ones from the stream first.
                for missing in await replystream.read_frames(reply_id, last):
                    if missing["seq"] < seq:
                        await self.relay(missing)
            await self.relay(frame)

    async def turn_frame(self, event: dict[str, Any]) -> None:
        self.announced.add(event["frame"]["reply_id"])
        self.watch(event["frame"]["reply_id"])
        await self.send_frame(event["frame"])

    # --- silent replies ---------------------------------------------------------------------

    def watch(self, reply_id: int) -> None:
        """Expect a frame of this reply within STREAM_RECOVER_AFTER seconds, else look it up."""
        wait = settings.STREAM_RECOVER_AFTER
        self.silent[reply_id] = (time.monotonic() + wait, wait)
        if self.watchdog is None or self.watchdog.done():
            self.watchdog = asyncio.create_task(self.watch_silences())

    async def watch_silences(self) -> None:
        """Look up each reply that went silent before its end, until none is left.

        channels-redis drops group messages over capacity (a web worker's loop starved of
        CPU), and gaps are filled when a later frame arrives; a lost tail, `done` included,
        has no later frame. Its frames are in the reply's stream, its end in the database.
        """
        while self.silent:
            now = time.monotonic()
            due = min(when for when, _ in self.silent.values())
            if due > now:
                await asyncio.sleep(due - now)
                continue
            for reply_id, (when, wait) in list(self.silent.items()):
                if when > now:
                    continue
                before = self.sent_seq.get(reply_id, 0)
                try:
                    async with self.relay_lock:
                        await self.recover(reply_id)
                except Exception:
                    # Redis or the database away: the next look is after a longer wait.
                    logger.warning("Could not look up silent reply %s", reply_id, exc_info=True)
                if reply_id in self.silent and self.sent_seq.get(reply_id, 0) == before:
                    longer = min(wait * 2, RECOVER_MAX_WAIT)
                    self.silent[reply_id] = (time.monotonic() + longer, longer)

    async def recover(self, reply_id: int) -> None:
        """Relay what the reply's stream holds past what this socket sent, else its stored end."""
        before = self.sent_seq.get(reply_id, 0)
        for frame in await replystream.read_frames(reply_id, before):
            await self.relay(frame)
        if reply_id not in self.silent or self.sent_seq.get(reply_id, 0) > before:
            return  # it ended, or it is moving again
        reply = await reply_in_conversation(self.conversation_id, reply_id)
        if reply is not None and reply.is_finished:
            await self.relay(self.final_frame(reply))  # dropped if this socket had the end
        if reply is None or reply.is_finished:
            self.silent.pop(reply_id, None)

    # --- helpers ----------------------------------------------------------------------------

    async def send_frame(self, frame: dict[str, Any]) -> None:
        if self.client_gone:
            return
        try:
            await self.send(text_data=encode(frame))
        except OSError:
            # The client closed the socket while a frame of its was being answered (a `send`
            # crossing a close, which every deploy causes): finish handling the frame, as
            # a message already stored must still be announced; its websocket.disconnect is
            # queued behind and cleans up. Letting this escape would end the consumer without
            # disconnect(): the socket would stay counted open and in its group.
            self.client_gone = True

    async def send_error(self, code: str, message: str, client_id: str | None = None) -> None:
        metrics.WS_ERRORS.labels(code).inc()
        await self.send_frame(error_frame(code, message, id=client_id))
