#!/usr/bin/env python3
"""A chat client for the probe container: signs in, opens a conversation's socket, sends
messages and reports what came back, as one JSON object on stdout.

Only the standard library and Debian's python3-websockets, so it runs on the probe as is.

    chatprobe.py --base https://chat.parley.test --user alice --password ... \
        --message "Hello" [--model fake-model] [--cafile pebble.pem] [--forwarded-proto https]

With `--load-chats N --stop FILE --out FILE` it is a bounded load instead: N conversations,
each sending a message as soon as its last reply is done, until the stop file appears (or
`--max-seconds`). A conversation whose socket is closed (a web host restarting says 1012)
reconnects with `?resume=<reply>:<seq>` and carries on; a message whose ack was lost with
the socket is sent again, the same frame with the same `client_id`, and the server answers
with the first one's ack instead of storing it twice (PROTOCOL.md). Every reply is checked
for gaps and duplicate frames and for text equal to its `done.content`. The report is JSON in
FILE; with `--progress FILE` the counts of replies so far are kept in that file, so a test can
wait until the load has run before and after what it does instead of sleeping.

With `--crowd` as well, the N conversations are made first and every chat sends its first
message at the same moment (the first `--message`; later ones send the second, if given).

`--forwarded-proto https` is for talking to the web tier directly (no nginx in front): the
probe then plays the lb and says the client connection was HTTPS, which the production
settings require for sign-in.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import re
import ssl
import sys
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websockets


class Session:
    """HTTP to the site with a cookie jar that ignores the Secure flag (behind the lb)."""

    def __init__(self, base: str, cafile: str | None, forwarded_proto: str | None) -> None:
        self.base = urllib.parse.urlsplit(base)
        self.origin = f"https://{self.base.hostname}"
        self.cookies: dict[str, str] = {}
        self.forwarded_proto = forwarded_proto
        self.context = ssl.create_default_context(cafile=cafile) if cafile else None

    def request(
        self, method: str, path: str, form: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], str]:
        if self.base.scheme == "https":
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                self.base.hostname, self.base.port or 443, context=self.context, timeout=30
            )
        else:
            conn = http.client.HTTPConnection(self.base.hostname, self.base.port or 80, timeout=30)
        headers = {
            "Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items()),
            "Origin": self.origin,
            "Referer": self.origin + path,
        }
        if self.forwarded_proto:
            headers["X-Forwarded-Proto"] = self.forwarded_proto
        body = None
        if form is not None:
            form = {**form, "csrfmiddlewaretoken": self.cookies.get("csrftoken", "")}
            body = urllib.parse.urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        for name, value in response.getheaders():
            if name.lower() == "set-cookie":
                key, _, rest = value.partition("=")
                self.cookies[key.strip()] = rest.split(";", 1)[0]
        text = response.read().decode("utf-8", "replace")
        conn.close()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, text

    def sign_in(self, user: str, password: str) -> None:
        self.request("GET", "/login/")
        status, _, _ = self.request("POST", "/login/", {"username": user, "password": password})
        if status != 302 or "sessionid" not in self.cookies:
            raise SystemExit(f"sign-in failed: HTTP {status}")

    def new_conversation(self) -> str:
        status, headers, _ = self.request("POST", "/c/new/", {})
        match = re.search(r"/c/([0-9a-f-]{36})/", headers.get("location", ""))
        if status != 302 or not match:
            raise SystemExit(f"could not start a conversation: HTTP {status}")
        return match.group(1)


async def converse(
    session: Session, conversation: str, messages: list[str], model: str | None, timeout: float
) -> list[dict[str, Any]]:
    scheme = "wss" if session.base.scheme == "https" else "ws"
    port = f":{session.base.port}" if session.base.port else ""
    uri = f"{scheme}://{session.base.hostname}{port}/ws/chat/{conversation}/"
    headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in session.cookies.items())}
    if session.forwarded_proto:
        headers["X-Forwarded-Proto"] = session.forwarded_proto
    replies = []
    async with websockets.connect(
        uri, extra_headers=headers, origin=session.origin, ssl=session.context, open_timeout=30
    ) as socket:
        for number, text in enumerate(messages):
            frame = {"v": 1, "type": "send", "id": f"m{number}", "text": text}
            if model:
                frame["model"] = model
            started = time.monotonic()
            await socket.send(json.dumps(frame))
            reply: dict[str, Any] = {"deltas": 0, "seqs": [], "text": "", "first_delta_s": None}
            while True:
                frame = json.loads(await asyncio.wait_for(socket.recv(), timeout))
                kind = frame.get("type")
                if kind == "ack":
                    reply["reply_id"] = frame["reply_id"]
                elif kind == "delta" and frame.get("reply_id") == reply.get("reply_id"):
                    if reply["first_delta_s"] is None:
                        reply["first_delta_s"] = round(time.monotonic() - started, 3)
                    reply["text"] = "" if frame.get("reset") else reply["text"]
                    reply["text"] += frame["text"]
                    reply["deltas"] += 1
                    reply["seqs"].append(frame["seq"])
                elif kind in {"done", "error"} and frame.get(
                    "reply_id", reply.get("reply_id")
                ) == reply.get("reply_id"):
                    reply["status"] = frame.get("status", "error")
                    reply["code"] = frame.get("code")
                    reply["seqs"].append(frame.get("seq"))
                    reply["content"] = frame.get("content", "")
                    reply["text_matches"] = reply["text"] == reply["content"]
                    reply["total_s"] = round(time.monotonic() - started, 3)
                    break
            replies.append(reply)
    return replies


# A message sent this often without an ack (each time on a new socket) is given up.
MAX_SENDS = 10


@dataclass
class Reply:
    """One message and its reply as a resuming client holds it."""

    sent: float
    frame: dict[str, Any]
    sends: int = 1
    reply_id: int | None = None
    last_seq: int = 0
    text: str = ""


@dataclass
class LoadReport:
    replies: int = 0
    complete: int = 0
    reconnects: int = 0
    close_codes: dict[str, int] = field(default_factory=dict)
    gaps: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    # Sends repeated on a new socket because the last one closed before their ack.
    resent: int = 0
    # Of those, the ones the server had stored the first time (its ack says `duplicate`).
    resent_already_stored: int = 0
    # Messages given up without an ack: whether they were stored, the client cannot know.
    unacknowledged: int = 0
    # With --crowd: chats whose socket was open when they all sent at once.
    connected: int = 0


class ResumingChat:
    """One conversation under load: send, read to the end, repeat; when the socket goes,
    reconnect and resume the reply in progress."""

    def __init__(
        self, session: Session, conversation: str, model: str | None, text: str,
        report: LoadReport, *, first_text: str | None = None, go: asyncio.Event | None = None,
    ) -> None:  # fmt: skip
        self.session = session
        self.text = text
        # The first message, sent once `go` is set (every chat of a crowd at once).
        self.first_text = first_text
        self.go = go
        self.sent_any = False
        self.conversation = conversation
        self.model = model
        self.report = report
        self.pending: Reply | None = None
        self.acknowledged = False

    def started(self) -> bool:
        """Its first message is stored (the server acknowledged it)."""
        return self.acknowledged

    def uri(self) -> str:
        base = self.session.base
        scheme = "wss" if base.scheme == "https" else "ws"
        port = f":{base.port}" if base.port else ""
        uri = f"{scheme}://{base.hostname}{port}/ws/chat/{self.conversation}/"
        if self.pending is not None and self.pending.reply_id is not None:
            uri += f"?resume={self.pending.reply_id}:{self.pending.last_seq}"
        return uri

    def send_frame(self) -> str:
        text = self.text if self.sent_any or self.first_text is None else self.first_text
        self.sent_any = True
        frame = {
            "v": 1, "type": "send", "id": f"r{self.report.replies}", "text": text,
            "client_id": str(uuid.uuid4()),
        }  # fmt: skip
        if self.model:
            frame["model"] = self.model
        self.pending = Reply(sent=time.monotonic(), frame=frame)
        return json.dumps(frame)

    def resend_frame(self) -> str:
        """The unacknowledged message again, under its client_id: stored at most once."""
        assert self.pending is not None
        self.pending.sends += 1
        self.report.resent += 1
        return json.dumps(
            {**self.pending.frame, "id": f"{self.pending.frame['id']}.{self.pending.sends}"}
        )

    def on_frame(self, message: dict[str, Any]) -> None:
        """Account for one server frame of the reply in progress."""
        pending, report = self.pending, self.report
        assert pending is not None
        kind = message.get("type")
        if kind == "ack" and pending.reply_id is None:
            pending.reply_id = message["reply_id"]
            self.acknowledged = True
            if message.get("duplicate"):
                report.resent_already_stored += 1
            return
        if kind == "error" and "reply_id" not in message:
            report.errors.append(f"{self.conversation}: {message}")
            self.pending = None
            return
        if message.get("reply_id") != pending.reply_id or kind not in {"delta", "done", "error"}:
            return
        seq = message["seq"]
        where = f"{self.conversation} reply {pending.reply_id} seq {seq}"
        if seq <= pending.last_seq:
            report.duplicates.append(f"{where} after {pending.last_seq}")
            return
        if seq != pending.last_seq + 1:
            report.gaps.append(f"{where} after {pending.last_seq}")
        pending.last_seq = seq
        if kind == "delta":
            pending.text = ("" if message.get("reset") else pending.text) + message["text"]
            return
        report.replies += 1
        if kind == "done" and message.get("status") == "complete":
            report.complete += 1
        else:
            report.errors.append(f"{where}: {message.get('code')} {message.get('message')}")
        if pending.text != message.get("content", ""):
            report.mismatches.append(where)
        self.pending = None

    def on_lost(self, error: Exception) -> None:
        code = getattr(getattr(error, "rcvd", None), "code", None)
        status = getattr(error, "status_code", None)  # a refused handshake
        if code is not None:
            key = str(code)
        elif status is not None:
            key = f"HTTP {status}"
        else:
            key = type(error).__name__
        self.report.close_codes[key] = self.report.close_codes.get(key, 0) + 1
        self.report.reconnects += 1
        pending = self.pending
        if pending is not None and pending.reply_id is None and pending.sends >= MAX_SENDS:
            # Lost before the ack every time: whether it was stored, this client cannot know.
            self.give_up()

    def give_up(self) -> None:
        if self.pending is not None and self.pending.reply_id is None:
            self.report.unacknowledged += 1
        self.pending = None

    async def run(self, stop: Path, deadline: float) -> None:
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.session.cookies.items())}

        def finished() -> bool:
            return stop.exists() or time.monotonic() > deadline

        attempt = 0
        while self.pending is not None or not finished():
            try:
                async with websockets.connect(
                    self.uri(), extra_headers=headers, origin=self.session.origin,
                    ssl=self.session.context, open_timeout=30,
                ) as socket:  # fmt: skip
                    attempt = 0
                    if self.pending is not None and self.pending.reply_id is None:
                        # The last socket closed between send and ack: send it again.
                        await socket.send(self.resend_frame())
                    if self.go is not None:
                        self.report.connected += 1
                        await self.go.wait()
                        self.go = None
                    while self.pending is not None or not finished():
                        if self.pending is None:
                            await socket.send(self.send_frame())
                        self.on_frame(json.loads(await asyncio.wait_for(socket.recv(), 60)))
                    return
            except (
                TimeoutError,
                websockets.exceptions.ConnectionClosed,
                # A refused handshake: a stopping web worker (503), no live upstream (502).
                websockets.exceptions.InvalidHandshake,
                OSError,
            ) as error:
                self.on_lost(error)
                attempt += 1
                if attempt > 30:
                    self.report.errors.append(f"{self.conversation}: gave up after {error!r}")
                    self.give_up()
                    return
                await asyncio.sleep(min(0.2 * attempt, 2))


async def load(args: argparse.Namespace, report: LoadReport) -> LoadReport:
    session = Session(args.base, args.cafile, args.forwarded_proto)
    session.sign_in(args.user, args.password)
    texts = args.message or ["Tell me something while the fleet changes."]
    deadline = time.monotonic() + args.max_seconds
    if args.crowd:
        return await crowd(args, session, texts, deadline, report)
    chats: list[ResumingChat] = []
    runs: list[asyncio.Task[None]] = []
    for _ in range(args.load_chats):
        # The site hands out an untouched conversation again rather than a new one, so each
        # chat starts (its first message acknowledged) before the next is asked for.
        conversation = await asyncio.to_thread(session.new_conversation)
        if conversation in {chat.conversation for chat in chats}:
            report.errors.append(f"{conversation}: handed out twice")
            continue
        chat = ResumingChat(session, conversation, args.model, texts[0], report)
        chats.append(chat)
        runs.append(asyncio.create_task(chat.run(Path(args.stop), deadline)))
        # However long that takes here: no fixed number of tries.
        while time.monotonic() < deadline:
            if chat.started() or runs[-1].done():
                break
            await asyncio.sleep(0.1)
    await asyncio.gather(*runs)
    return report


async def crowd(
    args: argparse.Namespace, session: Session, texts: list[str], deadline: float,
    report: LoadReport,
) -> LoadReport:  # fmt: skip
    """N chats whose first messages go at the same moment, once every socket is open."""
    conversations: list[str] = []
    while len(conversations) < args.load_chats and time.monotonic() < deadline:
        conversation = await asyncio.to_thread(session.new_conversation)
        if conversation in conversations:
            report.errors.append(f"{conversation}: handed out twice")
            break
        conversations.append(conversation)
    go = asyncio.Event()
    chats = [
        ResumingChat(session, conversation, args.model, texts[-1], report, first_text=texts[0],
                     go=go)
        for conversation in conversations
    ]  # fmt: skip
    runs = [asyncio.create_task(chat.run(Path(args.stop), deadline)) for chat in chats]
    while report.connected < len(chats) and time.monotonic() < deadline:
        if all(run.done() for run in runs):
            break
        await asyncio.sleep(0.05)
    go.set()
    await asyncio.gather(*runs)
    return report


async def keep_progress(path: Path, report: LoadReport) -> None:
    """Keep the counts so far in `path` (replaced whole, twice a second) until cancelled."""
    while True:
        staged = path.with_name(path.name + ".new")
        staged.write_text(json.dumps({"replies": report.replies, "complete": report.complete}))
        staged.replace(path)
        await asyncio.sleep(0.5)


async def load_and_keep_progress(args: argparse.Namespace, report: LoadReport) -> None:
    keeper = (
        asyncio.create_task(keep_progress(Path(args.progress), report)) if args.progress else None
    )
    try:
        await load(args, report)
    finally:
        if keeper:
            keeper.cancel()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="site URL, e.g. https://chat.parley.test")
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument(
        "--message", action="append", help="repeat to send several (--load-chats: the first)"
    )
    parser.add_argument("--model")
    parser.add_argument("--cafile", help="the only root to trust for HTTPS")
    parser.add_argument(
        "--forwarded-proto", help="send X-Forwarded-Proto (talking to the web tier directly)"
    )
    parser.add_argument("--timeout", type=float, default=60, help="seconds to wait for each frame")
    parser.add_argument("--load-chats", type=int, help="run a bounded load of N conversations")
    parser.add_argument("--stop", help="with --load-chats: stop sending when this file exists")
    parser.add_argument("--out", help="with --load-chats: where the JSON report goes")
    parser.add_argument("--max-seconds", type=float, default=600, help="with --load-chats")
    parser.add_argument(
        "--progress", help="with --load-chats: a file kept holding the replies counted so far"
    )
    parser.add_argument(
        "--crowd", action="store_true", help="with --load-chats: every chat's first send at once"
    )
    args = parser.parse_args()
    if args.load_chats:
        if not (args.stop and args.out):
            parser.error("--load-chats needs --stop and --out")
        report = LoadReport()
        asyncio.run(load_and_keep_progress(args, report))
        Path(args.out).write_text(json.dumps(report.__dict__))
        return 0
    if not args.message:
        parser.error("--message is required")
    session = Session(args.base, args.cafile, args.forwarded_proto)
    session.sign_in(args.user, args.password)
    conversation = session.new_conversation()
    replies = asyncio.run(converse(session, conversation, args.message, args.model, args.timeout))
    json.dump({"conversation": conversation, "replies": replies}, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
