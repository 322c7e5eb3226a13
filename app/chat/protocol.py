"""The WebSocket frame protocol (app/PROTOCOL.md): parsing client frames, building server ones.

Parsing is strict and total: every way a frame can be wrong maps to an error code, and a
frame that fails here changes nothing on the server.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

PROTOCOL_VERSION = 1
MAX_CLIENT_ID_CHARS = 64


class ProtocolError(Exception):
    def __init__(self, code: str, message: str, client_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.client_id = client_id


@dataclass(frozen=True)
class SendFrame:
    client_id: str | None
    text: str
    model: str | None
    # The frame's `client_id` (not `id`, which only pairs a frame with its answer): the
    # client's own name for this message, kept with it, so that a re-sent frame is recognised.
    client_message_id: uuid.UUID | None = None


@dataclass(frozen=True)
class CancelFrame:
    client_id: str | None
    reply_id: int


@dataclass(frozen=True)
class RegenerateFrame:
    client_id: str | None
    model: str | None


@dataclass(frozen=True)
class ResumeFrame:
    client_id: str | None
    reply_id: int
    after_seq: int


@dataclass(frozen=True)
class PingFrame:
    client_id: str | None


ClientFrame = SendFrame | CancelFrame | RegenerateFrame | ResumeFrame | PingFrame


def _int_field(data: dict[str, Any], name: str, client_id: str | None) -> int:
    value = data.get(name)
    # bool is an int in Python; true is not a valid id.
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ProtocolError("bad_frame", f"'{name}' must be a non-negative integer", client_id)
    return value


def _optional_str(data: dict[str, Any], name: str, client_id: str | None) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 200:
        raise ProtocolError("bad_frame", f"'{name}' must be a string", client_id)
    return value


def _optional_uuid(data: dict[str, Any], name: str, client_id: str | None) -> uuid.UUID | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, str) and len(value) <= MAX_CLIENT_ID_CHARS:
        try:
            return uuid.UUID(value)
        except ValueError:
            pass
    raise ProtocolError("bad_frame", f"'{name}' must be a UUID", client_id)


def parse_client_frame(raw: str, *, max_message_chars: int) -> ClientFrame:
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, RecursionError) as error:
        raise ProtocolError("bad_json", "The frame is not valid JSON.") from error
    if not isinstance(data, dict):
        raise ProtocolError("bad_frame", "A frame must be a JSON object.")

    client_id = data.get("id")
    if client_id is not None and (
        not isinstance(client_id, str) or len(client_id) > MAX_CLIENT_ID_CHARS
    ):
        raise ProtocolError("bad_frame", "'id' must be a string of at most 64 characters")

    if data.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(
            "unsupported_version", f"This server speaks protocol v{PROTOCOL_VERSION}.", client_id
        )

    frame_type = data.get("type")
    if frame_type == "send":
        text = data.get("text")
        if not isinstance(text, str):
            raise ProtocolError("bad_frame", "'text' must be a string", client_id)
        if not text.strip():
            raise ProtocolError("empty_message", "The message is empty.", client_id)
        if len(text) > max_message_chars:
            raise ProtocolError(
                "message_too_long",
                f"Messages are limited to {max_message_chars} characters.",
                client_id,
            )
        return SendFrame(
            client_id,
            text,
            _optional_str(data, "model", client_id),
            _optional_uuid(data, "client_id", client_id),
        )
    if frame_type == "cancel":
        return CancelFrame(client_id, _int_field(data, "reply_id", client_id))
    if frame_type == "regenerate":
        return RegenerateFrame(client_id, _optional_str(data, "model", client_id))
    if frame_type == "resume":
        return ResumeFrame(
            client_id,
            _int_field(data, "reply_id", client_id),
            _int_field(data, "after_seq", client_id),
        )
    if frame_type == "ping":
        return PingFrame(client_id)
    raise ProtocolError("unknown_type", f"Unknown frame type {frame_type!r}.", client_id)


def server_frame(frame_type: str, **fields: object) -> dict[str, Any]:
    return {"v": PROTOCOL_VERSION, "type": frame_type, **fields}


def error_frame(code: str, message: str, **fields: object) -> dict[str, Any]:
    return server_frame("error", code=code, message=message, **fields)


def encode(frame: dict[str, Any]) -> str:
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)
