"""Redis going away under a running service: a socket opened while the channel layer is down
is refused with HTTP 503 (not 500) and opens once it is back; a message sent while the broker
is down changes nothing and is refused with `unavailable`; a reply whose channel layer goes
mid-stream ends as an error in PostgreSQL (never "generating", never "cancelled"), and a client
that comes back gets that end. Found by the fleet audit (`make audit`, fault `redis-restart`).

This module's web server and worker get a broker and a channel layer of their own (two
Redis instances), so stopping them disturbs no other test.
"""

from __future__ import annotations

import base64
import os
import socket as sockets
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from chat.models import Message
from tests.chatclient import ChatSocket
from tests.processes import Process, start_web, start_worker, wait_until

PORT = 28002
PASSWORD = "outage-test-password"
PORTS = {"broker": 28382, "layer": 28383}
# The production ACL (app/README.md): the broker's user also pattern-subscribes to the
# fanout channels of remote control and worker events.
ACL = {
    "broker": "~parley:* &parley:* &parley:celery:/fanout.celery.pidbox "
    "&parley:celery:/fanout.celeryev/worker.* +@all -@dangerous",
    "layer": "~parley:* &parley:* +@all -@dangerous",
}


class PrivateRedis:
    """A Redis instance that the tests stop and start again (no persistence)."""

    def __init__(self, role: str, directory: Path) -> None:
        self.role = role
        self.conf = directory / f"{role}.conf"
        self.conf.write_text(
            f'bind 127.0.0.1\nport {PORTS[role]}\nsave ""\nappendonly no\ndir {directory}\n'
            f"user default off\nuser parley on >{PASSWORD} {ACL[role]}\n"
        )
        self.process: Process | None = None
        self.start()

    def start(self) -> None:
        self.process = Process(f"outage-redis-{self.role}", ["redis-server", str(self.conf)], {})
        wait_until(lambda: "Ready to accept" in self.process.log_text(), 10, self.role)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def running(self) -> bool:
        return self.process is not None and self.process.alive()

    @property
    def url(self) -> str:
        return f"redis://parley:{PASSWORD}@127.0.0.1:{PORTS[self.role]}/0"


@pytest.fixture(scope="module")
def redises(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, PrivateRedis]]:
    directory = tmp_path_factory.mktemp("outage-redis")
    instances = {role: PrivateRedis(role, directory) for role in PORTS}
    yield instances
    for instance in instances.values():
        instance.stop()


@pytest.fixture(scope="module")
def outage_stack(
    service_env: dict[str, str], redises: dict[str, PrivateRedis], fakellm: Process
) -> Iterator[None]:
    env = {
        **service_env,
        "PARLEY_CELERY_BROKER_URL": redises["broker"].url,
        "PARLEY_CHANNEL_LAYER_URL": redises["layer"].url,
    }
    web = start_web(env, port=PORT, name="outage-web")
    # Supervised as its systemd unit is: kombu can end it when the broker goes mid-ack.
    worker = start_worker(env, name="outage-worker", supervised=True)
    yield
    worker.stop()
    web.stop()


def socket_for(conversation: object, cookie: str, query: str = "") -> ChatSocket:
    return ChatSocket(
        conversation, cookie, origin=f"http://127.0.0.1:{PORT}", port=PORT, query=query
    )


def handshake_head(conversation_id: object, cookie: str) -> bytes:
    """The HTTP answer to a WebSocket handshake, lowercased, up to its blank line."""
    key = base64.b64encode(os.urandom(16)).decode()
    with sockets.create_connection(("127.0.0.1", PORT), 30) as conn:
        conn.sendall(
            f"GET /ws/chat/{conversation_id}/ HTTP/1.1\r\nHost: 127.0.0.1:{PORT}\r\n"
            f"Origin: http://127.0.0.1:{PORT}\r\nCookie: sessionid={cookie}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = conn.recv(4096)
            if not chunk:
                break
            received += chunk
    return received.partition(b"\r\n\r\n")[0].lower()


def test_a_socket_opened_while_the_channel_layer_is_down_is_refused_503_then_opens(
    outage_stack: None, redises: dict[str, PrivateRedis], transactional_db: None,
    conversation, cookie,
) -> None:  # fmt: skip
    try:
        redises["layer"].stop()
        head = handshake_head(conversation.id, cookie)
        assert head.startswith(b"http/1.1 503 "), head
        assert b"\r\nretry-after: 5" in head, head
    finally:
        if not redises["layer"].running():
            redises["layer"].start()
    assert handshake_head(conversation.id, cookie).startswith(b"http/1.1 101 "), "not back"


def test_a_send_while_the_broker_is_down_changes_nothing_and_works_once_it_is_back(
    outage_stack: None, redises: dict[str, PrivateRedis], transactional_db: None,
    conversation, cookie,
) -> None:  # fmt: skip
    socket = socket_for(conversation.id, cookie)
    client_id = str(uuid.uuid4())
    frame = {"type": "send", "text": "while the broker is away", "model": "fake-model",
             "client_id": client_id}  # fmt: skip
    try:
        redises["broker"].stop()
        refused = socket.error_for(socket.send(frame), timeout=30)
        assert refused["code"] == "unavailable", refused
        # Nothing changed: no message, no reply nobody would write, no title.
        assert not Message.objects.filter(conversation=conversation).exists()
        conversation.refresh_from_db()
        assert conversation.title == ""

        redises["broker"].start()
        ack = socket.ack_for(socket.send(frame), timeout=30)
        assert not ack.get("duplicate"), ack
        frames = socket.reply_frames(ack["reply_id"], timeout=90)
        assert frames[-1]["type"] == "done", frames[-1]
        assert Message.objects.filter(conversation=conversation, role="user").count() == 1
    finally:
        socket.close()
        if not redises["broker"].running():
            redises["broker"].start()


def test_the_channel_layer_lost_mid_reply_ends_the_reply_as_an_error(
    outage_stack: None, redises: dict[str, PrivateRedis], transactional_db: None,
    conversation, cookie,
) -> None:  # fmt: skip
    socket = socket_for(conversation.id, cookie)
    try:
        ack = socket.send_message("a long one [fakellm:tokens=300 tps=30]")
        reply_id = ack["reply_id"]
        delta = socket.recv_until(lambda f: f["type"] == "delta" and f["reply_id"] == reply_id)
    finally:
        socket.close()
    redises["layer"].stop()
    time.sleep(3)
    redises["layer"].start()

    def ended() -> Message | None:
        reply = Message.objects.get(pk=reply_id)
        return reply if reply.is_finished else None

    reply = wait_until(ended, 60, "the reply to end")
    assert reply.status == Message.Status.ERROR, reply.status  # not "cancelled": nobody asked
    assert reply.error_code == "internal"

    # The stream went with the restarted Redis: a client that comes back gets the end from
    # PostgreSQL, and the conversation takes the next message (not `busy`).
    socket = socket_for(conversation.id, cookie, query=f"?resume={reply_id}:{delta['seq']}")
    try:
        end = socket.recv_until(lambda f: f.get("reply_id") == reply_id and "seq" in f)
        assert end["type"] == "error" and end["code"] == "internal", end
        assert end["seq"] == reply.final_seq
        ack = socket.send_message("and after that?")
        assert socket.reply_frames(ack["reply_id"], timeout=60)[-1]["type"] == "done"
    finally:
        socket.close()


def test_the_first_socket_and_message_after_a_redis_restart_work(
    outage_stack: None, redises: dict[str, PrivateRedis], transactional_db: None,
    conversation, cookie,
) -> None:  # fmt: skip
    """Every pooled connection of the web processes died with the restart: the next socket
    and message must not pay for it (the pools' connections retry, parley.redis_retry)."""
    socket = socket_for(conversation.id, cookie)
    try:
        ack = socket.send_message("before the restart")
        assert socket.reply_frames(ack["reply_id"], timeout=60)[-1]["type"] == "done"
    finally:
        socket.close()
    for instance in redises.values():
        instance.stop()
        instance.start()
    # Both web processes: each has a pool of its own, and either may take a socket.
    for number in range(4):
        socket = socket_for(conversation.id, cookie)
        try:
            ack = socket.send_message(f"after the restart {number}")
            assert socket.reply_frames(ack["reply_id"], timeout=90)[-1]["type"] == "done"
        finally:
            socket.close()
