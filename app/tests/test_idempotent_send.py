"""`send` with a client_id is idempotent: a message whose ack was lost with its socket is sent
again on the next socket and stored once, and its reply streams (or resumes) as usual."""

from __future__ import annotations

import os
import re
import signal
import urllib.request
import uuid

import pytest
from django.conf import settings
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from chat.models import Message
from tests.chatclient import ChatSocket, assert_contiguous, delta_text
from tests.processes import WEB_PORT, wait_until


def rows(conversation) -> list[tuple[str, int | None]]:
    return list(
        Message.objects.filter(conversation=conversation)
        .order_by("id")
        .values_list("role", "reply_to_id")
    )


def test_resending_a_client_id_returns_the_same_ack_and_stores_nothing(
    chat: ChatSocket, conversation
) -> None:
    client_id = str(uuid.uuid4())
    first = chat.send_message("only once [fakellm:tokens=200 tps=100]", client_id=client_id)
    assert first["client_id"] == client_id
    assert "duplicate" not in first
    # While the reply is still being written: the same ack, not `busy`.
    again = chat.send_message("only once [fakellm:tokens=200 tps=100]", client_id=client_id)
    assert again["id"] != first["id"]
    assert {k: again[k] for k in ("message_id", "reply_id", "model", "replaces", "client_id")} == {
        k: first[k] for k in ("message_id", "reply_id", "model", "replaces", "client_id")
    }
    assert again["duplicate"] is True
    frames = chat.reply_frames(first["reply_id"])
    assert_contiguous(frames)  # the replay after the repeated ack sent nothing twice
    assert frames[-1]["type"] == "done"
    # After the reply is done, too; and nothing more is sent for it.
    late = chat.send_message("only once [fakellm:tokens=200 tps=100]", client_id=client_id)
    assert (late["message_id"], late["reply_id"], late["duplicate"]) == (
        first["message_id"], first["reply_id"], True,
    )  # fmt: skip
    chat.ping()
    assert chat.received[-1]["type"] == "pong"
    assert not [f for f in chat.received[-2:] if f.get("reply_id") == first["reply_id"]
                and "seq" in f]  # fmt: skip

    assert rows(conversation) == [("user", None), ("assistant", first["message_id"])]
    assert Message.objects.get(pk=first["message_id"]).client_id == uuid.UUID(client_id)
    # Other messages go on as usual, with their own client_id or none.
    second = chat.send_message("next", client_id=str(uuid.uuid4()))
    chat.reply_frames(second["reply_id"])
    third = chat.send_message("and one without a client_id")
    assert "client_id" not in third
    assert chat.reply_frames(third["reply_id"])[-1]["status"] == "complete"
    assert len(rows(conversation)) == 6


def test_a_client_id_cannot_be_reused_for_another_message(chat: ChatSocket, conversation) -> None:
    client_id = str(uuid.uuid4())
    ack = chat.send_message("the first text", client_id=client_id)
    chat.reply_frames(ack["reply_id"])
    frame_id = chat.send(
        {"type": "send", "text": "another text", "model": "fake-model", "client_id": client_id}
    )
    assert chat.error_for(frame_id)["code"] == "client_id_conflict"
    frame_id = chat.send({"type": "send", "text": "hi", "client_id": "not-a-uuid"})
    assert chat.error_for(frame_id)["code"] == "bad_frame"
    assert len(rows(conversation)) == 2


def send_then_lose(socket: ChatSocket, frame: dict, how: str, conversation, web) -> None:
    if how == "dropped":
        # Never read: a burst of frames used up the socket's allowance, so the server drops
        # the send (the client only learns that some frame was dropped).
        for _ in range(settings.WS_FRAME_BURST):
            socket.send({"type": "ping"})
    socket.send(frame)
    if how == "dropped":
        socket.recv_until(lambda f: f.get("code") == "too_many_frames")
        assert not Message.objects.filter(conversation=conversation).exists()
    elif how == "stored":
        # The server stored it; its ack is never read.
        wait_until(lambda: Message.objects.filter(conversation=conversation).count() == 2,
                   10, "the message to be stored")  # fmt: skip
    elif how == "restart":
        # A deploy: Gunicorn replaces its workers, which close their sockets (1012).
        os.kill(web.pid, signal.SIGHUP)
        with pytest.raises(ConnectionClosed):
            while True:
                socket.recv(timeout=15)
    socket.close()


@pytest.mark.parametrize("how", ["at_once", "stored", "dropped", "restart"])
def test_a_send_lost_with_its_socket_is_sent_again_and_stored_once(
    stack, conversation, cookie, web, how: str
) -> None:
    text = "are you there? [fakellm:tokens=80 tps=100]"
    frame = {"type": "send", "text": text, "model": "fake-model", "client_id": str(uuid.uuid4())}
    send_then_lose(ChatSocket(conversation.id, cookie), frame, how, conversation, web)

    for _attempt in range(5):
        socket = wait_until(lambda: _connect(conversation, cookie), 30, "a socket")
        try:
            ack = socket.ack_for(socket.send(frame))
            assert ack["client_id"] == frame["client_id"]
            frames = socket.reply_frames(ack["reply_id"])
            break
        except ConnectionClosed:
            # A worker of the restart took this socket just before it began to stop and
            # closed it too (1012): send again on a new one, as the page does.
            continue
        finally:
            socket.close()
    else:
        pytest.fail("no socket stayed open for the whole reply in five tries")

    assert_contiguous(frames)  # from seq 1: the reply so far, then the live frames
    done = frames[-1]
    assert done["type"] == "done" and done["status"] == "complete"
    assert delta_text(frames) == done["content"]
    assert len(done["content"].split()) == 80
    assert rows(conversation) == [("user", None), ("assistant", ack["message_id"])]
    message = Message.objects.get(pk=ack["message_id"])
    assert (message.content, str(message.client_id)) == (text, frame["client_id"])
    assert Message.objects.get(pk=ack["reply_id"]).content == done["content"]
    if how == "stored":
        assert ack["duplicate"] is True
    if how == "dropped":
        assert "duplicate" not in ack
    # The server handled the lost socket's end too: an ack sent after the client had gone
    # did not end the consumer without its disconnect (which left it counted open).
    wait_until(lambda: open_sockets() == 0, 10, "the server to count no open socket")


def open_sockets() -> float:
    url = f"http://127.0.0.1:{WEB_PORT}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return float(re.search(r"^parley_websockets_open (\S+)$", text, re.MULTILINE)[1])


def _connect(conversation, cookie) -> ChatSocket | None:
    try:
        socket = ChatSocket(conversation.id, cookie)
    except (OSError, ConnectionClosed, InvalidHandshake):
        return None  # not up yet, or a stopping worker refused the handshake (503)
    return socket


def test_the_turn_carries_the_client_id(chat: ChatSocket) -> None:
    """So a tab that sees the turn of its re-sent message before the ack knows it is its own."""
    client_id = str(uuid.uuid4())
    ack = chat.send_message("match me", client_id=client_id)
    turn = chat.recv_until(lambda f: f["type"] == "turn")
    assert (turn["message_id"], turn["client_id"], turn["text"]) == (
        ack["message_id"], client_id, "match me",
    )  # fmt: skip


def test_a_resend_after_live_frames_of_its_reply_gets_the_reply_from_seq_1(
    stack, conversation, cookie
) -> None:
    """The lost socket's message is stored and its reply streaming. The new socket is in the
    conversation's group, so it relays live frames of that reply before the client sends
    again; the client, without its ack, does not know the reply yet. After the repeated ack
    comes the reply from seq 1, not from the last frame the socket relayed before it (the
    fleet's deploy under a hundred chats saw that gap)."""
    text = "start over for me [fakellm:tokens=200 tps=40]"
    frame = {"type": "send", "text": text, "model": "fake-model", "client_id": str(uuid.uuid4())}
    lost = ChatSocket(conversation.id, cookie)
    ack = lost.ack_for(lost.send(frame))
    reply_id = ack["reply_id"]
    lost.recv_until(lambda f: f.get("reply_id") == reply_id and f["type"] == "delta")
    lost.close()

    socket = ChatSocket(conversation.id, cookie)
    try:
        # A frame of the reply, relayed before the resend (and passed over by the client).
        socket.recv_until(lambda f: f.get("reply_id") == reply_id and f["type"] == "delta")
        again = socket.ack_for(socket.send(frame))
        told = len(socket.received)
        socket.reply_frames(reply_id)
    finally:
        socket.close()
    assert (again["reply_id"], again["duplicate"]) == (reply_id, True)
    frames = [f for f in socket.received[told:] if f.get("reply_id") == reply_id and "seq" in f]
    assert_contiguous(frames)
    assert frames[-1]["type"] == "done" and delta_text(frames) == frames[-1]["content"]
