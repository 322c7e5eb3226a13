"""Session fixtures: the real fake-LLM server, Gunicorn web server and Celery worker.

PostgreSQL and the two Redis instances are started before pytest by
`scripts/services.sh up test` (make test does it). pytest-django creates the test database;
the server and worker processes are pointed at it, so tests use committed data
(transactional_db) that those processes can see.
"""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.conf import settings
from django.db import connection

from tests.chatclient import ChatSocket, session_cookie
from tests.processes import (
    FAKELLM_PORT,
    Process,
    base_env,
    start_fakellm,
    start_web,
    start_worker,
    stop_every_process,
)


def _database_url() -> str:
    db = connection.settings_dict
    return f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


@pytest.fixture(scope="session", autouse=True)
def no_process_outlives_the_suite() -> Iterator[None]:
    yield
    stop_every_process()


@pytest.fixture(scope="session")
def fakellm() -> Iterator[Process]:
    process = start_fakellm()
    yield process
    process.stop()


@pytest.fixture(scope="session")
def service_env(
    django_db_setup: None, django_db_blocker: Any, redis_admin: dict[str, redis.Redis]
) -> dict[str, str]:
    # The test database is new, so ids start again at 1: forget reply streams, cancel flags
    # and counters a previous run left under the same ids.
    for client in redis_admin.values():
        for name in client.scan_iter(match="parley:*", count=1000):
            client.delete(name)
        client.acl_log_reset()
    with django_db_blocker.unblock():
        return base_env(_database_url())


@pytest.fixture(scope="session")
def web(service_env: dict[str, str], fakellm: Process) -> Iterator[Process]:
    process = start_web(service_env)
    yield process
    process.stop()


@pytest.fixture(scope="session")
def worker_process(service_env: dict[str, str], fakellm: Process) -> Iterator[dict[str, Process]]:
    """A holder, so a test that kills the worker can put a fresh one in its place."""
    holder = {"worker": start_worker(service_env)}
    yield holder
    holder["worker"].stop()


@pytest.fixture
def worker(worker_process: dict[str, Process], service_env: dict[str, str]) -> Process:
    if not worker_process["worker"].alive():
        worker_process["worker"] = start_worker(service_env)
    return worker_process["worker"]


@pytest.fixture
def stack(web: Process, worker: Process, transactional_db: None) -> None:
    """Everything a chat round trip needs, with a database the processes can see."""
    fake_llm_request("POST", "/_fakellm/reset")


@pytest.fixture
def user(transactional_db: None, django_user_model: Any) -> Any:
    return django_user_model.objects.create_user(
        username=f"user-{uuid.uuid4().hex[:8]}", password="a-test-password-1"
    )


@pytest.fixture
def conversation(user: Any) -> Any:
    from chat.models import Conversation

    return Conversation.objects.create(user=user)


@pytest.fixture
def cookie(user: Any) -> str:
    return session_cookie(user)


@pytest.fixture
def chat(stack: None, conversation: Any, cookie: str) -> Iterator[ChatSocket]:
    socket = ChatSocket(conversation.id, cookie)
    yield socket
    socket.close()


def fake_llm_request(method: str, path: str) -> Any:
    request = urllib.request.Request(
        f"http://127.0.0.1:{FAKELLM_PORT}{path}",
        method=method,
        data=b"" if method == "POST" else None,
    )
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
        return json.loads(response.read())


@pytest.fixture(scope="session")
def redis_admin() -> dict[str, redis.Redis]:
    """Admin connections to both test Redis instances (ACL LOG, SCAN), never used by the app."""
    clients = {}
    for role, url in (
        ("broker", settings.CELERY_BROKER_URL),
        ("channel_layer", settings.CHANNEL_LAYER_URL),
    ):
        client = redis.Redis.from_url(url)
        kwargs = client.connection_pool.connection_kwargs
        clients[role] = redis.Redis(
            host=kwargs["host"],
            port=kwargs["port"],
            username="parley-admin",
            password="parley-local-admin",
        )
        client.close()
    return clients
