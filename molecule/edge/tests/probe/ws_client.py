"""WebSocket client run on the probe, trusting only the CA file given. By default it opens
wss://NAME/PATH with the given Origin, sends a text and a binary frame and prints one JSON
report: the handshake's HTTP status and what came back. With --hold N it opens up to N + 1
sockets, keeping them open, and reports how many opened and the status of the first refusal."""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl

import websockets


async def exchange(args: argparse.Namespace) -> dict:
    context = ssl.create_default_context(cafile=args.cafile)
    extra = {"origin": args.origin} if args.origin else {}
    try:
        async with websockets.connect(
            f"wss://{args.name}{args.path}", ssl=context, open_timeout=10, **extra
        ) as socket:
            await socket.send("hello through nginx")
            text = await asyncio.wait_for(socket.recv(), 10)
            payload = bytes(range(256)) * 64
            await socket.send(payload)
            binary = await asyncio.wait_for(socket.recv(), 10)
            return {
                "status": 101,
                "text_echoed": text == "hello through nginx",
                "binary_echoed": binary == payload,
            }
    except websockets.exceptions.InvalidStatusCode as refused:
        return {"status": refused.status_code}


async def hold(args: argparse.Namespace) -> dict:
    context = ssl.create_default_context(cafile=args.cafile)
    url = f"wss://{args.name}{args.path}"
    held = []
    refused = None
    try:
        for _ in range(args.hold + 1):
            try:
                held.append(await websockets.connect(url, ssl=context, origin=args.origin))
            except websockets.exceptions.InvalidStatusCode as refusal:
                refused = refusal.status_code
                break
        return {"opened": len(held), "refused_status": refused}
    finally:
        await asyncio.gather(*(socket.close() for socket in held))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cafile", required=True)
    parser.add_argument("--origin", default="")
    parser.add_argument("--path", default="/ws/echo/")
    parser.add_argument("--hold", type=int, default=0)
    parser.add_argument("name")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(hold(args) if args.hold else exchange(args))))


if __name__ == "__main__":
    main()
