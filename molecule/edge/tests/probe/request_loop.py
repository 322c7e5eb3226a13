"""Bounded request loop run on the probe while a certificate is renewed.

Each request opens a new TLS connection (trusting only the CA file given), so each one sees
the certificate served at that moment. The loop runs until the stop file appears, or
--max-requests or --max-seconds is reached, and prints one JSON report: per name, the count
of requests, the failures (any error or a status other than 200) and the serials seen in
order. With --progress FILE it keeps the count of requests per name in FILE after each round,
so a test can wait until the loop has seen enough before and after what it does.
"""

from __future__ import annotations

import argparse
import http.client
import json
import ssl
import time
from pathlib import Path


def one_request(context: ssl.SSLContext, name: str) -> tuple[str | None, str | None]:
    """Return (serial, error) of one GET / on a fresh connection."""
    connection = http.client.HTTPSConnection(name, 443, context=context, timeout=10)
    try:
        connection.request("GET", "/", headers={"Connection": "close"})
        # Read before the answer: http.client drops the socket once a closing answer is read.
        serial = connection.sock.getpeercert()["serialNumber"]
        response = connection.getresponse()
        response.read()
    except (OSError, http.client.HTTPException) as error:
        return None, f"{type(error).__name__}: {error}"
    finally:
        connection.close()
    return serial, None if response.status == 200 else f"HTTP {response.status}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cafile", required=True)
    parser.add_argument("--stop-file", required=True)
    parser.add_argument("--max-requests", type=int, default=4000)
    parser.add_argument("--max-seconds", type=float, default=300)
    parser.add_argument("--pause", type=float, default=0.05)
    parser.add_argument("--progress")
    parser.add_argument("names", nargs="+")
    args = parser.parse_args()
    context = ssl.create_default_context(cafile=args.cafile)
    report = {name: {"requests": 0, "failures": [], "serials": []} for name in args.names}
    stop = Path(args.stop_file)
    deadline = time.monotonic() + args.max_seconds
    total = 0
    while not stop.exists() and total < args.max_requests and time.monotonic() < deadline:
        for name in args.names:
            serial, error = one_request(context, name)
            entry = report[name]
            entry["requests"] += 1
            total += 1
            if error:
                entry["failures"].append(error)
            if serial and (not entry["serials"] or entry["serials"][-1] != serial):
                entry["serials"].append(serial)
        if args.progress:
            counts = {name: entry["requests"] for name, entry in report.items()}
            Path(f"{args.progress}.new").write_text(json.dumps(counts))
            Path(f"{args.progress}.new").replace(args.progress)
        time.sleep(args.pause)
    report_out = {"stopped_by": "stop file" if stop.exists() else "bound", "names": report}
    print(json.dumps(report_out))


if __name__ == "__main__":
    main()
