#!/usr/bin/env python3
"""A chat client for the probe container: signs in, opens a conversation's socket, sends
messages and reports what came back, as one JSON object on stdout.

Only the standard library and Debian's python3-websockets, so it runs on the probe as is.

    chatprobe.py --base https://chat.parley.test --user alice --password ... \
        --message "Hello" [--model fake-model] [--cafile pebble.pem] [--forwarded-proto https]

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="site URL, e.g. https://chat.parley.test")
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--message", action="append", required=True, help="repeat to send several")
    parser.add_argument("--model")
    parser.add_argument("--cafile", help="the only root to trust for HTTPS")
    parser.add_argument(
        "--forwarded-proto", help="send X-Forwarded-Proto (talking to the web tier directly)"
    )
    parser.add_argument("--timeout", type=float, default=60, help="seconds to wait for each frame")
    args = parser.parse_args()
    session = Session(args.base, args.cafile, args.forwarded_proto)
    session.sign_in(args.user, args.password)
    conversation = session.new_conversation()
    replies = asyncio.run(converse(session, conversation, args.message, args.model, args.timeout))
    json.dump({"conversation": conversation, "replies": replies}, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
