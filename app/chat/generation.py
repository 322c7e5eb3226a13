"""The generation loop: one reply, from the model's first byte to the stored final message.

`run_reply` is the one function both paths call: the Celery task, on its worker process's
long-lived event loop (`parley.worker_loop`), and for benchmarks the consumer in-process.
Many replies run at once on one loop; what they share (the model client, Redis, the cancel
subscription, the lock renewal) is made once per loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from django.conf import settings
from django.db import InterfaceError, OperationalError
from redis.exceptions import RedisError

from chat import limits, replystream
from chat.cancelwatch import cancel_watch
from chat.markdown import render_markdown
from chat.models import Message
from chat.providers.base import Provider, ProviderError, TextDelta, Usage, estimate_tokens
from chat.providers.registry import provider_for
from chat.replylocks import HeldLock, node, reply_locks
from chat.replystore import ReplyJob, ReplyOutcome, claim_reply, fail_unstarted, finish_reply
from parley import metrics, timeline
from parley.background import cancel_and_wait

logger = logging.getLogger(__name__)

# Margin between our own deadline and Celery's soft time limit, so we end the reply cleanly.
# Both count from the task's start: Celery's limit includes the wait for the reply lock.
DEADLINE_MARGIN_SECONDS = 5
TOO_LONG_MESSAGE = "The reply took longer than the time limit and was cut."
UNSTARTED_MESSAGE = "The reply could not be started; please try again."
# How long a reply's end keeps trying to reach PostgreSQL (a restart takes seconds); past
# that, the reaper ends the reply.
STORE_RETRY_SECONDS = 30


class Coalescer:
    """Batch deltas: flush after `interval` seconds or `max_tokens` tokens, whichever first.

    The reply's first text is the exception: it goes at once, since the time to the first
    token is what a reader waits through; waiting the window for company would add it to
    every reply (the benchmark measured ~30 ms of its 40 ms after the model's first token).
    Coalescing only the rest costs at most one more channel-layer message per reply.
    """

    def __init__(self, interval: float, max_tokens: int) -> None:
        self.interval = interval
        self.max_tokens = max(1, max_tokens)
        self.parts: list[str] = []
        self.first_at: float | None = None
        self.started = False

    def add(self, text: str) -> bool:
        """Buffer text; True when the buffer should be flushed now."""
        if self.first_at is None:
            self.first_at = time.monotonic()
        self.parts.append(text)
        if not self.started and text:
            self.started = True
            return True
        return len(self.parts) >= self.max_tokens or self.time_left() <= 0

    def time_left(self) -> float | None:
        """Seconds until the buffer is due, None when it is empty."""
        if self.first_at is None:
            return None
        return self.interval - (time.monotonic() - self.first_at)

    def take(self) -> str:
        text = "".join(self.parts)
        self.parts.clear()
        self.first_at = None
        return text


@dataclass
class Progress:
    text: list[str] = field(default_factory=list)
    tokens: int = 0
    usage: Usage | None = None
    started: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None
    last_token_at: float | None = None


async def _pump(source: AsyncIterator[TextDelta | Usage], queue: asyncio.Queue[object]) -> None:
    """Move the provider's stream into a queue, ending with None or the error raised."""
    try:
        async for item in source:
            await queue.put(item)
        await queue.put(None)
    except asyncio.CancelledError:
        raise
    except Exception as error:
        await queue.put(error)


async def _stream_reply(
    provider: Provider,
    job: ReplyJob,
    publisher: replystream.ReplyPublisher,
    progress: Progress,
) -> None:
    """Relay the model's deltas, coalesced, until the stream ends; raises ProviderError."""
    coalescer = Coalescer(settings.STREAM_FLUSH_MS / 1000, settings.STREAM_FLUSH_TOKENS)
    queue: asyncio.Queue[object] = asyncio.Queue(maxsize=1000)
    timeline.mark(job.reply_id, "model_asked")
    source = provider.stream(job.messages, job.model)
    pump = asyncio.create_task(_pump(source, queue))

    async def flush() -> None:
        text = coalescer.take()
        if text:
            await publisher.publish("delta", text=text)

    try:
        while True:
            wait = coalescer.time_left()
            try:
                if wait is None:  # nothing buffered: wait as long as the model takes
                    item = await queue.get()
                else:
                    item = await asyncio.wait_for(queue.get(), timeout=max(0.0, wait))
            except TimeoutError:
                await flush()
                continue
            if item is None:
                break
            if isinstance(item, Exception):
                await flush()
                if isinstance(item, ProviderError):
                    raise item
                raise ProviderError("internal", "The model call failed unexpectedly.") from item
            if isinstance(item, Usage):
                progress.usage = item
                continue
            assert isinstance(item, TextDelta)  # noqa: S101  (the queue carries nothing else)
            now = time.monotonic()
            if progress.first_token_at is None:
                progress.first_token_at = now
                timeline.mark(job.reply_id, "first_chunk")
            progress.last_token_at = now
            progress.tokens += 1
            progress.text.append(item.text)
            if coalescer.add(item.text):
                await flush()
        await flush()
    finally:
        # Cancelling the pump closes the provider's HTTP stream: the model stops generating.
        await cancel_and_wait(pump)
        await source.aclose()  # type: ignore[attr-defined]


@dataclass
class ReplyRun:
    """Everything one attempt at a reply carries from start to finish."""

    job: ReplyJob
    publisher: replystream.ReplyPublisher
    provider: Provider | None
    progress: Progress = field(default_factory=Progress)
    # Set once the final state is stored: a failure after that must not end the reply again.
    ended: bool = False

    def outcome(self, status: str) -> ReplyOutcome:
        progress, job = self.progress, self.job
        content = "".join(progress.text)
        if progress.usage is not None:
            prompt_tokens = progress.usage.prompt_tokens
            completion_tokens = progress.usage.completion_tokens
            estimated = False
        else:
            # The stream broke (or was stopped) before the endpoint reported usage.
            prompt_tokens = sum(estimate_tokens(m["content"]) for m in job.messages)
            completion_tokens = max(progress.tokens, estimate_tokens(content))
            estimated = True
        ttft = None
        if progress.first_token_at is not None:
            ttft = round((progress.first_token_at - progress.started) * 1000)
        return ReplyOutcome(
            status=status,
            content=content,
            final_seq=self.publisher.seq + 1,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            usage_estimated=estimated,
            time_to_first_token_ms=ttft,
            duration_ms=round((time.monotonic() - progress.started) * 1000),
            provider=self.provider.name if self.provider else "",
        )

    def observe(self, outcome: ReplyOutcome) -> None:
        model, progress = self.job.model, self.progress
        metrics.REPLIES.labels(outcome.status, model).inc()
        metrics.TOKENS.labels("prompt", model).inc(outcome.prompt_tokens)
        metrics.TOKENS.labels("completion", model).inc(outcome.completion_tokens)
        if progress.first_token_at is not None:
            metrics.TIME_TO_FIRST_TOKEN.observe(progress.first_token_at - progress.started)
            if progress.last_token_at and progress.last_token_at > progress.first_token_at:
                span = progress.last_token_at - progress.first_token_at
                metrics.TOKENS_PER_SECOND.observe(outcome.completion_tokens / span)

    async def finish(self, status: str) -> None:
        """End the reply as complete or cancelled."""
        outcome = self.outcome(status)
        await self._store_and_announce(outcome, "done", status=status, usage={
            "prompt_tokens": outcome.prompt_tokens,
            "completion_tokens": outcome.completion_tokens,
            "estimated": outcome.usage_estimated,
        })  # fmt: skip

    async def fail(self, code: str, message: str) -> None:
        """End the reply as an error, keeping whatever text had arrived (a partial reply)."""
        outcome = self.outcome(Message.Status.ERROR)
        outcome.error_code, outcome.error_message = code, message
        await self._store_and_announce(outcome, "error", code=code, message=message)

    async def _store_and_announce(
        self, outcome: ReplyOutcome, frame_type: str, **fields: object
    ) -> None:
        # The database and the quota first: a client told "done" must find the reply stored,
        # and its next message must be checked against a quota that counts this reply.
        if self.ended:
            return
        stored = await _store_final_state(self.job, outcome)
        self.ended = True
        if not stored:
            return  # the reaper or a later attempt ended it; they told the clients
        try:
            await limits.add_tokens_used(
                self.job.user_id, outcome.prompt_tokens + outcome.completion_tokens
            )
            await self.publisher.publish(
                frame_type,
                content=outcome.content,
                html=render_markdown(outcome.content),
                **fields,
            )
        except (RedisError, OSError) as error:
            # Stored is what counts: a client that missed the frame resumes when Redis is
            # back and gets the reply's end from the database.
            logger.warning("Reply %s ended, but Redis could not take its last frame: %s",
                           self.job.reply_id, error)  # fmt: skip
        self.observe(outcome)


async def _store_final_state(job: ReplyJob, outcome: ReplyOutcome) -> bool:
    """finish_reply, trying again while PostgreSQL is away (a restart), for a while."""
    deadline = time.monotonic() + STORE_RETRY_SECONDS
    while True:
        try:
            return await finish_reply(job.reply_id, job.attempt, outcome)
        except (OperationalError, InterfaceError) as error:
            if time.monotonic() > deadline:
                raise
            logger.warning("Reply %s: storing its end failed (%s); trying again",
                           job.reply_id, error)  # fmt: skip
            await asyncio.sleep(1)


async def run_reply(reply_id: int) -> None:
    """Generate one reply end to end. Safe to call again for the same reply (redelivery)."""
    timeline.mark(reply_id, "task_started")
    # Counted from here, not from the first token: a redelivery may wait up to REPLY_LOCK_TTL
    # for the lock, and the reply's time limit counts that wait too.
    deadline = time.monotonic() + max(1, settings.REPLY_SOFT_TIME_LIMIT - DEADLINE_MARGIN_SECONDS)
    locks = reply_locks()
    try:
        lock = await locks.acquire(reply_id, wait=settings.REPLY_LOCK_TTL + 1)
    except (RedisError, OSError):
        # Redis stayed away: the reply cannot be written, and must not wait "pending" for
        # the reaper. Ended in the database, where its clients' recovery finds it.
        logger.exception("Reply %s: its lock stayed out of reach", reply_id)
        await fail_unstarted(reply_id, "internal", UNSTARTED_MESSAGE)
        return
    if lock is None:
        logger.info("Reply %s is being generated elsewhere; this delivery does nothing", reply_id)
        return
    metrics.REPLIES_IN_FLIGHT.inc()
    try:
        job = await claim_reply(reply_id, node())
        if job is None:
            return
        await _generate(job, lock, deadline)
    finally:
        metrics.REPLIES_IN_FLIGHT.dec()
        # With Redis away the lock cannot be released; it expires after REPLY_LOCK_TTL.
        with contextlib.suppress(RedisError, OSError):
            await locks.release(reply_id)


async def _generate(job: ReplyJob, lock: HeldLock, deadline: float) -> None:
    provider = provider_for(job.model)
    run = ReplyRun(job, replystream.ReplyPublisher(job.reply_id, job.conversation_id, 0), provider)
    try:
        # A first attempt starts at frame 1, whose write clears the stream of anything an
        # older reply of the same id left (a database restored under a live Redis).
        if job.attempt > 1:
            run.publisher.seq = await replystream.last_seq(job.reply_id)
            if run.publisher.seq > 0:
                # Its writer died mid-reply and this is the redelivery: clients drop what
                # they had.
                await run.publisher.publish("delta", text="", reset=True)
        if provider is None:
            await run.fail("provider_unavailable", "No provider serves this model any more.")
            return
        await _write_reply(run, provider, lock, deadline)
    except Exception:
        # Redis or PostgreSQL failing under the reply: it must end, not stay "generating"
        # until the reaper (the user's conversation would be busy all that time).
        logger.exception("Reply %s failed", job.reply_id)
        await run.fail("internal", "Something went wrong while writing the reply.")


async def _write_reply(run: ReplyRun, provider: Provider, lock: HeldLock, deadline: float) -> None:
    """Stream the model's reply until it ends, is stopped, runs out of time or is taken over."""
    job, publisher = run.job, run.publisher
    time_left = deadline - time.monotonic()
    if time_left <= 0:
        # The wait for the lock used up the reply's time: no model call can finish in it.
        await run.fail("too_long", TOO_LONG_MESSAGE)
        return
    watch = cancel_watch()
    stop_asked = watch.watch(job.reply_id)
    streaming = asyncio.create_task(_stream_reply(provider, job, publisher, run.progress))
    stopped = asyncio.create_task(stop_asked.wait())
    taken_over = asyncio.create_task(lock.lost.wait())
    waits = (streaming, stopped, taken_over)
    try:
        done, _ = await asyncio.wait(waits, timeout=time_left, return_when=asyncio.FIRST_COMPLETED)
        if streaming in done:
            error = streaming.exception()
            if error is None:
                await run.finish(Message.Status.COMPLETE)
            elif isinstance(error, ProviderError):
                await run.fail(error.code, error.message)
            else:
                logger.error("Reply %s failed", job.reply_id, exc_info=error)
                await run.fail("internal", "Something went wrong while writing the reply.")
            return
        # Stopped by the user, out of time, or another writer has it: cancelling the stream
        # closes the model's HTTP response, which is what makes the model stop generating.
        streaming.cancel()
        with contextlib.suppress(asyncio.CancelledError, ProviderError):
            await streaming
        if taken_over in done:
            run.ended = True  # the writer that has it now ends it
        elif stopped in done:
            await run.finish(Message.Status.CANCELLED)
        else:
            await run.fail("too_long", TOO_LONG_MESSAGE)
    finally:
        for task in waits:
            task.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
        watch.forget(job.reply_id)
