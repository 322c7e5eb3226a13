"""Who may open a socket, and what a socket does with bad input: an error frame, nothing else."""

from __future__ import annotations

import json
import time

import pytest
from django.conf import settings
from websockets.exceptions import InvalidStatus

from chat.models import Conversation, Message
from tests.chatclient import ChatSocket
from tests.timing import timing


def _refused(conversation_id, cookie, **kwargs) -> int:
    with pytest.raises(InvalidStatus) as refused:
        ChatSocket(conversation_id, cookie, **kwargs)
    return refused.value.response.status_code


def test_unauthenticated_socket_is_refused(stack, conversation) -> None:
    assert _refused(conversation.id, None) == 403


def test_forged_session_is_refused(stack, conversation) -> None:
    assert _refused(conversation.id, "not-a-real-session") == 403


def test_foreign_origin_is_refused(stack, conversation, cookie) -> None:
    assert _refused(conversation.id, cookie, origin="https://evil.example") == 403


def test_someone_elses_conversation_is_refused(stack, cookie, django_user_model) -> None:
    other = django_user_model.objects.create_user(username="someone-else", password="x-y-z-123")
    theirs = Conversation.objects.create(user=other)
    assert _refused(theirs.id, cookie) == 403


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("{not json", "bad_json"),
        ("[1, 2]", "bad_frame"),
        (json.dumps({"v": 1, "type": "shout", "id": "x"}), "unknown_type"),
        (json.dumps({"v": 99, "type": "send", "text": "hi", "id": "x"}), "unsupported_version"),
        (json.dumps({"v": 1, "type": "send", "text": "   ", "id": "x"}), "empty_message"),
        (json.dumps({"v": 1, "type": "send", "text": 42, "id": "x"}), "bad_frame"),
        (json.dumps({"v": 1, "type": "cancel", "reply_id": "7", "id": "x"}), "bad_frame"),
        (json.dumps({"v": 1, "type": "send", "text": "hi", "model": "gpt-9", "id": "x"}),
         "unknown_model"),
    ],
)  # fmt: skip
def test_bad_frames_get_an_error_and_change_nothing(chat: ChatSocket, raw: str, code: str) -> None:
    chat.send_raw(raw)
    error = chat.recv_until(lambda f: f["type"] == "error")
    assert error["code"] == code
    assert error["message"]
    chat.ping()  # the socket stays open
    assert not Message.objects.exists()


def test_oversized_message_is_refused(chat: ChatSocket) -> None:
    client_id = chat.send({"type": "send", "text": "x" * 8001})
    assert chat.error_for(client_id)["code"] == "message_too_long"
    chat.send_raw(json.dumps({"v": 1, "type": "send", "text": "y" * 60_000}))
    assert chat.recv_until(lambda f: f["type"] == "error")["code"] == "frame_too_large"
    chat.ping()
    assert not Message.objects.exists()


def test_binary_frames_are_refused(chat: ChatSocket) -> None:
    chat.send_raw(b"\x00\x01binary")
    assert chat.recv_until(lambda f: f["type"] == "error")["code"] == "bad_frame"
    chat.ping()


def test_a_flood_of_frames_is_throttled_and_the_socket_survives(chat: ChatSocket) -> None:
    """Of 200 frames sent at once, only WS_FRAME_BURST + WS_FRAMES_PER_SECOND x the seconds
    from the first frame to the last answer (+ 1 for rounding) are answered frame by frame;
    the rest are dropped with at most one too_many_frames a second (+ 1)."""
    began = time.monotonic()
    for _ in range(200):
        chat.send_raw(json.dumps({"v": 1, "type": "shout"}))
    codes = []
    last_answer = began
    while True:
        try:
            frame = chat.recv(timeout=2)
        except TimeoutError:
            break
        last_answer = time.monotonic()
        codes.append(frame.get("code"))
    took = last_answer - began
    assert "too_many_frames" in codes
    answered = int(settings.WS_FRAME_BURST + settings.WS_FRAMES_PER_SECOND * took) + 1
    assert codes.count("unknown_type") <= answered, timing(
        f"{codes.count('unknown_type')} answered in {took:.2f} s",
        str(answered),
        f"WS_FRAME_BURST {settings.WS_FRAME_BURST} + WS_FRAMES_PER_SECOND "
        f"{settings.WS_FRAMES_PER_SECOND:g} x {took:.2f} s + 1",
    )
    errors = int(took) + 2
    assert codes.count("too_many_frames") <= errors, timing(
        f"{codes.count('too_many_frames')} error frames in {took:.2f} s",
        str(errors),
        "one error frame a second, + 1 for each end of the flood",
    )
    # The bucket refills by the clock: a second and a half holds a token at 5 frames a second.
    time.sleep(1.5)
    chat.ping()
