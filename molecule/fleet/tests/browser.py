"""Headless Chromium (Debian's) on the real chat page of the fleet, through nginx over WSS.

Run with the app's virtualenv (it has Playwright); the fleet's verify step does:

    app/.venv/bin/python molecule/fleet/tests/browser.py --base https://chat.parley.test \
        --address 172.30.0.5 --root pebble-root.pem --user admin --password ... \
        --screenshot .artifacts/fleet/chat.png

Chromium trusts only the given root: it gets a home directory of its own whose NSS database
holds that root and nothing else (certutil, from libnss3-tools). The site's name resolves
to --address inside the browser only. Signs in, sends a message, watches the reply stream
in, stops it, checks the page obeyed nginx's Content-Security-Policy, saves a screenshot.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import urllib.parse
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

PROMPT = "Tell me about the fleet, slowly [fakellm:tokens=400 tps=30]"


def trust_store(home: Path, root: Path) -> None:
    nssdb = home / ".pki" / "nssdb"
    nssdb.mkdir(parents=True)
    subprocess.run(["certutil", "-N", "-d", f"sql:{nssdb}", "--empty-password"], check=True)
    subprocess.run(
        ["certutil", "-A", "-d", f"sql:{nssdb}", "-n", "Pebble root", "-t", "C,,", "-i", str(root)],
        check=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True)
    parser.add_argument("--address", required=True, help="the lb host's address")
    parser.add_argument("--root", required=True, type=Path, help="the only root CA trusted")
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--screenshot", required=True, type=Path)
    parser.add_argument("--model", help="model to pick (default: the page's own choice)")
    args = parser.parse_args()
    name = urllib.parse.urlsplit(args.base).hostname
    with tempfile.TemporaryDirectory() as home, sync_playwright() as playwright:
        trust_store(Path(home), args.root)
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium",
            env={"HOME": home, "PATH": "/usr/bin:/bin"},
            args=["--no-sandbox", "--disable-background-networking", "--disable-gpu",
                  "--disable-component-update", "--disable-sync",
                  f"--host-resolver-rules=MAP {name} {args.address}"],
        )  # fmt: skip
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        violations: list[str] = []
        page.on(
            "console",
            lambda m: violations.append(m.text) if "Content Security" in m.text else None,
        )
        page.goto(f"{args.base}/")
        expect(page).to_have_url(f"{args.base}/login/?next=/")
        page.fill("#id_username", args.user)
        page.fill("#id_password", args.password)
        page.click("button[type=submit]")
        page.click("#new-chat")
        expect(page.locator("#connection")).to_have_text("Connected")
        if args.model:
            page.select_option("#model", args.model)
        page.fill("#prompt", PROMPT)
        page.keyboard.press("Enter")
        reply = page.locator(".message.assistant").last
        expect(reply).to_have_class("message assistant generating")
        text = reply.locator(".text")
        expect(text).not_to_have_text("")
        first = len(text.inner_text())
        page.wait_for_function(
            "n => document.querySelector('.message.assistant:last-of-type .text')"
            ".innerText.length > n",
            arg=first + 40,
        )
        args.screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(args.screenshot), full_page=True)
        page.click("#stop")
        expect(reply).to_have_class("message assistant cancelled")
        expect(reply.locator(".note")).to_have_text("Stopped.")
        streamed = len(reply.locator(".text").inner_text())
        browser.close()
    if violations:
        print("\n".join(violations), file=sys.stderr)
        return 1
    print(f"Chromium: signed in over WSS, {streamed} characters streamed, then stopped; "
          f"screenshot {args.screenshot}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
