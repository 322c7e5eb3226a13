"""Fast checks of the pure parts: frame parsing, Markdown sanitizing, coalescing, settings."""

from __future__ import annotations

import json
import time
import uuid
from html.parser import HTMLParser

import pytest
from django.core.exceptions import ImproperlyConfigured

from chat.generation import Coalescer
from chat.limits import FrameBucket
from chat.markdown import render_markdown
from chat.protocol import (
    CancelFrame,
    ProtocolError,
    ResumeFrame,
    SendFrame,
    parse_client_frame,
)
from chat.providers.demo import demo_reply, split_tokens
from parley.env import database_from_url


def parse(frame: object) -> object:
    return parse_client_frame(json.dumps(frame), max_message_chars=10)


def test_valid_frames_parse() -> None:
    assert parse({"v": 1, "type": "send", "text": "hi", "id": "a"}) == SendFrame("a", "hi", None)
    assert parse({"v": 1, "type": "cancel", "reply_id": 3}) == CancelFrame(None, 3)
    assert parse({"v": 1, "type": "resume", "reply_id": 3, "after_seq": 0}) == ResumeFrame(
        None, 3, 0
    )
    key = "6f1c2a9e-0d4b-4c1e-9a57-3e2f1b0c9d8a"
    assert parse({"v": 1, "type": "send", "text": "hi", "client_id": key}) == SendFrame(
        None, "hi", None, uuid.UUID(key)
    )


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({"v": 1, "type": "send", "text": "x" * 11}, "message_too_long"),
        ({"v": 1, "type": "cancel", "reply_id": True}, "bad_frame"),
        ({"v": 1, "type": "resume", "reply_id": 1, "after_seq": -1}, "bad_frame"),
        ({"v": 1, "type": "send", "text": "hi", "id": "x" * 65}, "bad_frame"),
        ({"v": 1, "type": "send", "text": "hi", "client_id": "c1"}, "bad_frame"),
        ({"v": 1, "type": "send", "text": "hi", "client_id": 7}, "bad_frame"),
        ({"v": 1, "type": "send", "text": "hi", "client_id": "0" * 65}, "bad_frame"),
        ({"type": "send", "text": "hi"}, "unsupported_version"),
        ({"v": 1}, "unknown_type"),
    ],
)
def test_invalid_frames_are_refused_with_a_code(frame: object, code: str) -> None:
    with pytest.raises(ProtocolError) as refused:
        parse(frame)
    assert refused.value.code == code


@pytest.mark.parametrize(
    "payload",
    [
        "<script>alert(1)</script>",
        '<img src=x onerror="alert(1)">',
        "[x](javascript:alert(1))",
        '<a href="javascript:alert(1)">x</a>',
        "<iframe src=//evil.example></iframe>",
        "[x](data:text/html;base64,PHNjcmlwdD4=)",
    ],
)
def test_markdown_output_is_inert(payload: str) -> None:
    elements = Elements()
    elements.feed(render_markdown(payload))
    for tag, attributes in elements.found:
        assert tag not in {"script", "img", "iframe", "object", "embed", "style"}
        for name, value in attributes:
            assert not name.startswith("on")
            if name == "href":
                assert (value or "").startswith(("http:", "https:", "mailto:")), value


class Elements(HTMLParser):
    """Collects the real elements and attributes of an HTML fragment (not escaped text)."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, attrs))


def test_markdown_keeps_formatting() -> None:
    html = render_markdown("**b** `c`\n\n- one\n\n```py\nx = 1\n```\n\n[link](https://a.example)")
    assert "<strong>b</strong>" in html and "<li>one</li>" in html
    assert '<code class="language-py">' in html
    assert 'href="https://a.example"' in html and "noopener" in html


def test_coalescer_flushes_by_count_and_by_time() -> None:
    by_count = Coalescer(interval=10, max_tokens=3)
    assert by_count.add("0") is True  # the first text goes at once
    assert by_count.take() == "0"
    assert [by_count.add(t) for t in "abc"] == [False, False, True]
    assert by_count.take() == "abc"
    assert by_count.time_left() is None
    by_time = Coalescer(interval=0.01, max_tokens=100)
    assert by_time.add("") is False  # an empty first chunk is no first text
    assert by_time.add("w") is True
    assert by_time.take() == "w"
    by_time.add("x")
    time.sleep(0.02)
    assert by_time.time_left() < 0
    assert by_time.add("y") is True
    assert by_time.take() == "xy"


def test_demo_reply_is_deterministic_and_splits_losslessly() -> None:
    reply = demo_reply("hello")
    assert reply == demo_reply("hello")
    assert "".join(split_tokens(reply)) == reply


def test_frame_bucket_allows_a_burst_then_throttles() -> None:
    bucket = FrameBucket(rate=1, burst=3)
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    assert bucket.should_report() is True
    assert bucket.should_report() is False


def test_database_url() -> None:
    db = database_from_url("postgres://u:p%40ss@db.example:5433/parley?sslmode=verify-full")
    assert (db["USER"], db["PASSWORD"], db["HOST"], db["PORT"], db["NAME"]) == (
        "u", "p@ss", "db.example", "5433", "parley",
    )  # fmt: skip
    assert db["OPTIONS"] == {"sslmode": "verify-full"}
    with pytest.raises(ImproperlyConfigured):
        database_from_url("mysql://x/y")
