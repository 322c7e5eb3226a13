"""A fresh install with no LLM endpoint configured, as `make run` starts it: the offline demo
provider is the default model, the only one offered, and answers through the real round trip
(web server, signal, Celery worker, channel layer)."""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterator

import pytest
from django.conf import settings

from chat.models import Message
from chat.providers.demo import demo_reply
from tests.chatclient import ChatSocket, assert_contiguous, delta_text
from tests.processes import Process, start_web, start_worker

PORT = 28002


@pytest.fixture(scope="module")
def demo_stack(service_env: dict[str, str], worker_process: dict[str, Process]) -> Iterator[None]:
    """A web server and a worker with the development settings and no PARLEY_LLM_* or
    PARLEY_DEMO_* variable at all (the test settings configure the fake endpoint)."""
    env = {
        name: value
        for name, value in service_env.items()
        if not name.startswith(("PARLEY_LLM_", "PARLEY_DEMO_"))
    }
    env.update(
        DJANGO_SETTINGS_MODULE="parley.settings.dev",
        # The key the tests sign sessions with, so their cookies are valid here too.
        PARLEY_SECRET_KEY=settings.SECRET_KEY,
        PARLEY_WORKER_METRICS_BIND="",
    )
    # Only this worker may take the replies: the session's has the fake endpoint configured.
    worker_process["worker"].stop()
    worker = start_worker(env, name="demo-worker")
    web = start_web(env, port=PORT, name="demo-web")
    yield
    web.stop()
    worker.stop()


def test_without_an_endpoint_the_demo_is_the_default_and_answers(
    demo_stack: None, conversation, cookie: str
) -> None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{PORT}/c/{conversation.id}/", headers={"Cookie": f"sessionid={cookie}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310  (loopback)
        page = response.read().decode()
    options = re.findall(r"<option value=\"([^\"]*)\"[^>]*?( selected)?>([^<]*)</option>", page)
    assert options == [("demo", " selected", "Demo (offline)")]

    socket = ChatSocket(conversation.id, cookie, origin=f"http://127.0.0.1:{PORT}", port=PORT)
    try:
        # No model named: the server picks its default.
        ack = socket.ack_for(socket.send({"type": "send", "text": "Hello, is anyone there?"}))
        assert ack["model"] == "demo"
        frames = socket.reply_frames(ack["reply_id"])
    finally:
        socket.close()
    done = frames[-1]
    assert done["type"] == "done" and done["status"] == "complete", done
    assert_contiguous(frames)
    assert done["content"] == demo_reply("Hello, is anyone there?")
    assert done["content"].startswith("**Demo provider**")
    assert delta_text(frames) == done["content"]
    reply = Message.objects.get(pk=ack["reply_id"])
    assert (reply.model, reply.provider, reply.status) == ("demo", "demo", "complete")
    assert reply.content == done["content"]
