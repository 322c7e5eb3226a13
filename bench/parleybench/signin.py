"""Sign in through nginx the way a browser does: the login form, its CSRF token, a session.

Production settings hash passwords with PBKDF2 (slow on purpose), so the harness signs each
user in once; Django sessions live in PostgreSQL and every design shares that database and
secret key, so one session cookie opens sockets on every design.
"""

from __future__ import annotations

import http.client
import re
import ssl
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from http.cookies import SimpleCookie

CSRF_INPUT = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


def _cookies(response: http.client.HTTPResponse) -> dict[str, str]:
    jar: dict[str, str] = {}
    for header in response.headers.get_all("Set-Cookie") or []:
        parsed = SimpleCookie()
        parsed.load(header)
        jar.update({name: morsel.value for name, morsel in parsed.items()})
    return jar


def sign_in(port: int, context: ssl.SSLContext, username: str, password: str) -> str:
    """The session cookie for `username`, from a real POST to /login/."""
    origin = f"https://127.0.0.1:{port}"
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=60)
    try:
        connection.request("GET", "/login/")
        page = connection.getresponse()
        body = page.read().decode()
        if page.status != 200:
            raise RuntimeError(f"GET /login/ answered {page.status}")
        csrf_cookie = _cookies(page)["csrftoken"]
        match = CSRF_INPUT.search(body)
        if match is None:
            raise RuntimeError("the login page has no CSRF token")
        form = urllib.parse.urlencode(
            {"username": username, "password": password, "csrfmiddlewaretoken": match.group(1)}
        )
        connection.request(
            "POST",
            "/login/",
            body=form,
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "Cookie": f"csrftoken={csrf_cookie}",
                "Origin": origin,
                "Referer": f"{origin}/login/",
            },
        )
        answer = connection.getresponse()
        answer.read()
        session = _cookies(answer).get("sessionid")
        if answer.status != 302 or not session:
            raise RuntimeError(f"signing in {username} failed: HTTP {answer.status}")
        return session
    finally:
        connection.close()


def sign_in_all(
    port: int, context: ssl.SSLContext, usernames: list[str], password: str
) -> dict[str, str]:
    with ThreadPoolExecutor(max_workers=4) as pool:
        cookies = pool.map(lambda name: sign_in(port, context, name, password), usernames)
        return dict(zip(usernames, cookies, strict=True))
