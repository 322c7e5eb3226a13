"""WebSocket client run on the probe, trusting only the CA file given. By default it opens
wss://NAME/PATH with the given Origin, sends a text and a binary frame and prints one JSON
report: the handshake's HTTP status and what came back. With --hold N it opens up to N + 1
sockets, keeping them open, and reports how many opened and the status of the first refusal.
With --head it sends the upgrade request by hand (the Origin as given, or none) and prints the
answer's status line and headers, as soon as they have come."""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
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


def head(args: argparse.Namespace) -> dict:
    context = ssl.create_default_context(cafile=args.cafile)
    origin = f"Origin: {args.origin}\r\n" if args.origin else ""
    request = (
        f"GET {args.path} HTTP/1.1\r\nHost: {args.name}\r\nConnection: Upgrade\r\n"
        "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{origin}\r\n"
    )
    answer = b""
    with (
        socket.create_connection((args.name, 443), timeout=30) as plain,
        context.wrap_socket(plain, server_hostname=args.name) as tls,
    ):
        tls.sendall(request.encode())
        while b"\r\n\r\n" not in answer:
            chunk = tls.recv(4096)
            if not chunk:
                break
            answer += chunk
    return {"head": answer.split(b"\r\n\r\n", 1)[0].decode("latin-1")}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cafile", required=True)
    parser.add_argument("--origin", default="")
    parser.add_argument("--path", default="/ws/echo/")
    parser.add_argument("--hold", type=int, default=0)
    parser.add_argument("--head", action="store_true")
    parser.add_argument("name")
    args = parser.parse_args()
    if args.head:
        print(json.dumps(head(args)))
    else:
        print(json.dumps(asyncio.run(hold(args) if args.hold else exchange(args))))


if __name__ == "__main__":
    main()
