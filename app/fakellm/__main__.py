"""`python -m fakellm --host 127.0.0.1 --port 8100 --ttft-ms 50 --tokens-per-second 200`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import ssl

from fakellm.server import Behaviour, FakeLLM


def main() -> None:
    parser = argparse.ArgumentParser(prog="fakellm", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--ttft-ms", type=float, default=50.0, help="time to first token")
    parser.add_argument("--tokens-per-second", type=float, default=200.0)
    parser.add_argument("--reply-tokens", type=int, default=60, help="tokens in a reply")
    parser.add_argument(
        "--models", default="fake-model,fake-large", help="comma-separated model list"
    )
    parser.add_argument(
        "--fail",
        default="",
        help="markers applied to every request, e.g. '429x1' or 'disconnect-after=5'",
    )
    parser.add_argument("--tls-cert", help="certificate chain (PEM): serve HTTPS")
    parser.add_argument("--tls-key", help="the certificate's private key (PEM)")
    args = parser.parse_args()
    tls = None
    if args.tls_cert:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(args.tls_cert, args.tls_key)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s fakellm %(message)s")
    behaviour = Behaviour(
        ttft=args.ttft_ms / 1000,
        tokens_per_second=args.tokens_per_second,
        reply_tokens=args.reply_tokens,
    )
    server = FakeLLM(
        behaviour,
        models=[m.strip() for m in args.models.split(",") if m.strip()],
        default_markers=args.fail,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(server.serve_forever(args.host, args.port, tls))


if __name__ == "__main__":
    main()
