"""The app under production settings: readiness, static files, TLS redirects, in-process mode.

This server gets a Redis of its own for the channel layer, so the test can stop it and watch
/readyz turn unhealthy without disturbing the other tests.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from email.message import Message
from pathlib import Path

import pytest
from django.conf import settings

from tests.chatclient import ChatSocket, assert_contiguous, delta_text
from tests.processes import APP_DIR, Process, start_web, wait_until

PORT = 28001
REDIS_PORT = 28379
PASSWORD = "prod-test-password"


def _get(path: str, headers: dict[str, str] | None = None) -> tuple[int, Message, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{PORT}{path}", headers=headers or {})

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    directory = tmp_path_factory.mktemp("redis")
    conf = directory / "redis.conf"
    conf.write_text(
        f'bind 127.0.0.1\nport {REDIS_PORT}\nsave ""\nappendonly no\ndir {directory}\n'
        "user default off\n"
        f"user parley on >{PASSWORD} ~parley:* &parley:* +@all -@dangerous\n"
    )
    process = Process("prod-redis", ["redis-server", str(conf)], {})
    wait_until(lambda: "Ready to accept" in process.log_text(), 10, "private redis")
    yield process
    process.stop()


@pytest.fixture(scope="module")
def production_server(
    service_env: dict[str, str], private_redis: Process, fakellm: Process,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Process]:  # fmt: skip
    static_root = tmp_path_factory.mktemp("static")
    env = {
        **service_env,
        "DJANGO_SETTINGS_MODULE": "parley.settings.production",
        # The key the tests sign sessions with, so their cookies are valid here too.
        "PARLEY_SECRET_KEY": settings.SECRET_KEY,
        "PARLEY_ALLOWED_HOSTS": "127.0.0.1",
        "PARLEY_CHANNEL_LAYER_URL": f"redis://parley:{PASSWORD}@127.0.0.1:{REDIS_PORT}/0",
        "PARLEY_STATIC_ROOT": str(static_root),
        "PARLEY_GENERATION_MODE": "inprocess",
    }
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"],
        cwd=APP_DIR, env=env, check=True,
    )  # fmt: skip
    process = start_web(env, port=PORT, name="prod-web")
    process.static_root = static_root  # type: ignore[attr-defined]
    yield process
    process.stop()


def test_readyz_names_every_check(production_server: Process) -> None:
    status, _, body = _get("/readyz")
    report = json.loads(body)
    assert status == 200, report
    assert report["status"] == "ok"
    assert set(report["checks"]) == {
        "database", "redis_channel_layer", "redis_broker", "broker", "llm",
    }  # fmt: skip
    assert all(check["ok"] for check in report["checks"].values())
    assert report["checks"]["llm"]["detail"] == "ok (2 models)"


def test_plain_http_is_redirected_to_https(production_server: Process) -> None:
    status, headers, _ = _get("/login/")
    assert status == 301
    assert headers["Location"].startswith("https://")
    assert _get("/healthz")[0] == 200  # probes are exempt


def test_static_files_have_hashed_names_and_long_cache(production_server: Process) -> None:
    status, headers, page = _get("/login/", {"X-Forwarded-Proto": "https"})
    assert status == 200
    assert "max-age=63072000" in headers["Strict-Transport-Security"]
    css = re.search(rb'href="(/static/chat/chat\.[0-9a-f]{12}\.css)"', page)
    assert css, page[:500]
    status, headers, body = _get(css.group(1).decode(), {"X-Forwarded-Proto": "https"})
    assert status == 200
    assert "immutable" in headers["Cache-Control"]
    assert "max-age=315360000" in headers["Cache-Control"]
    assert b".message" in body
    manifest = Path(production_server.static_root) / "staticfiles.json"  # type: ignore[attr-defined]
    assert "chat/chat.js" in json.loads(manifest.read_text())["paths"]


def test_in_process_generation_mode(
    production_server: Process, transactional_db: None, conversation, cookie
) -> None:
    socket = ChatSocket(conversation.id, cookie, origin=f"https://127.0.0.1:{PORT}", port=PORT)
    try:
        ack = socket.send_message("served without celery")
        frames = socket.reply_frames(ack["reply_id"])
    finally:
        socket.close()
    assert_contiguous(frames)
    assert frames[-1]["type"] == "done"
    assert delta_text(frames) == frames[-1]["content"]


def test_readyz_goes_unhealthy_when_redis_stops(
    production_server: Process, private_redis: Process
) -> None:
    assert _get("/readyz")[0] == 200
    private_redis.stop()
    status, _, body = _get("/readyz")
    report = json.loads(body)
    assert status == 503
    assert report["status"] == "unavailable"
    assert report["checks"]["redis_channel_layer"]["ok"] is False
    assert report["checks"]["database"]["ok"] is True
    assert report["checks"]["broker"]["ok"] is True


def test_check_deploy_is_clean() -> None:
    env = {
        "DJANGO_SETTINGS_MODULE": "parley.settings.production",
        "PARLEY_SECRET_KEY": "production-test-key-" + "y" * 40,
        "PATH": "/usr/bin:/bin",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=APP_DIR, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout
