#!/usr/bin/env python3
"""A bounded HTTP request loop for the probe: requests URLs one after another until a stop
file appears, or a count or a time limit is reached, and writes what happened as JSON.

    httploop.py --url http://web:8000/healthz --url http://web:8000/login/ \
        --header 'Host: chat.parley.test' --stop /tmp/stop --out /tmp/loop.json \
        [--max-requests 5000] [--max-seconds 300] [--cafile root.pem]

A request fails when it raises (refused, reset, timed out) or answers 5xx or an unexpected
status; every failure is recorded with its time and reason. With --progress FILE the count of
requests made so far is kept in FILE, so a test can wait until the loop has run before and
after what it does instead of sleeping.
"""

from __future__ import annotations

import argparse
import json
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path

# A request slower than this is listed (with when it began) even when it succeeds.
SLOW_SECONDS = 5.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", action="append", required=True)
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument(
        "--expect", type=int, action="append", help="accepted statuses (default 200)"
    )
    parser.add_argument("--stop", required=True, help="the loop ends when this file exists")
    parser.add_argument("--out", required=True)
    parser.add_argument("--max-requests", type=int, default=5000)
    parser.add_argument("--max-seconds", type=float, default=300)
    parser.add_argument("--cafile")
    parser.add_argument("--progress", help="file kept holding the count of requests made")
    args = parser.parse_args()
    headers = dict(h.split(": ", 1) for h in args.header)
    expected = set(args.expect or [200])
    context = ssl.create_default_context(cafile=args.cafile) if args.cafile else None
    opener = urllib.request.build_opener(
        urllib.request.HTTPSHandler(context=context),
        # A redirect is an answer too; do not follow it.
        type(
            "NoRedirect",
            (urllib.request.HTTPRedirectHandler,),
            {"redirect_request": lambda *a: None},
        ),
    )
    started = time.monotonic()
    started_wall = time.time()
    done, failures, slow = 0, [], []
    statuses: dict[str, int] = {}
    while done < args.max_requests and time.monotonic() - started < args.max_seconds:
        if Path(args.stop).exists():
            break
        url = args.url[done % len(args.url)]
        request = urllib.request.Request(url, headers=headers)
        began = time.monotonic()
        try:
            with opener.open(request, timeout=30) as response:
                status = response.status
        except urllib.error.HTTPError as error:
            status = error.code
        except OSError as error:
            failures.append(
                {
                    "at": round(time.monotonic() - started, 3),
                    "began": round(began - started, 3),
                    "url": url,
                    "error": repr(error),
                }
            )
            status = 0
        if time.monotonic() - began > SLOW_SECONDS:
            slow.append(
                {"began": round(began - started, 3), "seconds": round(time.monotonic() - began, 3)}
            )
        done += 1
        statuses[str(status)] = statuses.get(str(status), 0) + 1
        if args.progress:
            Path(f"{args.progress}.new").write_text(str(done))
            Path(f"{args.progress}.new").replace(args.progress)
        if status and status not in expected:
            failures.append(
                {"at": round(time.monotonic() - started, 3), "url": url, "status": status}
            )
    report = {
        "requests": done,
        "seconds": round(time.monotonic() - started, 3),
        "statuses": statuses,
        "failures": failures,
        "slow": slow[:50],
        # When the loop began, so a failure's time can be found in the servers' logs.
        "started_at": started_wall,
    }
    Path(args.out).write_text(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
