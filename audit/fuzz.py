"""The WebSocket fuzz campaign: frames drawn by Hypothesis, written to real sockets through
nginx, each answered or not.

Every drawn frame is invalid by construction (random JSON that is no v1 frame, v1 frames with
one field wrong, messages or frames over the limits, binary frames, invalid UTF-8, RFC 6455
violations, a send naming a model nobody offers), so each must be answered by an error frame
or a clean close (a close frame with a code), must never be acknowledged, and must write no
row. Floods (frames faster than the per-socket limit) must get `too_many_frames` and leave the
socket working.

Sockets send at most four frames a second each (the app allows five, bursts of twenty), and
wait for each answer before the next frame: a frame dropped by the rate limit would otherwise
look like a frame left unanswered.
"""

from __future__ import annotations

import json
import os
import queue
import string
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from audit.web import BINARY, CLOSE, CONTINUATION, PING, TEXT, Client, Closed, RawFrame

FRAME_TYPES = ("send", "cancel", "regenerate", "resume", "ping")
MAX_MESSAGE_CHARS = 8000  # PARLEY_MAX_MESSAGE_CHARS as deployed (the app's default)
# Codes of frames refused by the app (app/PROTOCOL.md) and close codes of a clean refusal.
ERROR_CODES = {
    "bad_json", "bad_frame", "unsupported_version", "unknown_type", "empty_message",
    "message_too_long", "frame_too_large", "too_many_frames", "rate_limited", "unknown_model",
    "not_found", "nothing_to_regenerate", "busy", "quota_exceeded",
}  # fmt: skip
CLEAN_CLOSE_CODES = {1002, 1003, 1007, 1008, 1009}
SEND_INTERVAL = 0.25
# Seconds to wait for the answer to one frame (an app answers in milliseconds); three times
# that under PARLEY_TEST_SLOW=1, as molecule/conftest.py's patience().
ANSWER_TIMEOUT = 10 * (3 if os.environ.get("PARLEY_TEST_SLOW") == "1" else 1)
# Pings sent at once in a flood: more than the frame limit lets through unless answering
# them took (FLOOD_SIZE - burst) / rate seconds, 16 s at the defaults.
FLOOD_SIZE = 100


@dataclass(frozen=True)
class Case:
    """One drawn input: what kind of wrong it is, and the frames that carry it."""

    kind: str
    detail: str
    frames: tuple[RawFrame, ...]

    def describe(self) -> str:
        shown = self.frames[0].payload[:80]
        return (
            f"{self.kind} ({self.detail}): opcode {self.frames[0].opcode}, {shown!r}, "
            f"{len(self.frames[0].payload)} bytes, {len(self.frames)} frame(s)"
        )


def _text_frame(value: object) -> tuple[RawFrame, ...]:
    return (RawFrame(TEXT, json.dumps(value).encode()),)


json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_leaves,
    lambda inner: (
        st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=12), inner, max_size=6)
    ),
    max_leaves=25,
)
# Not a string, and not null either: `id` and `model` are optional, so null is valid for them.
not_a_string = json_leaves.filter(lambda v: v is not None and not isinstance(v, str)) | st.lists(
    json_leaves, max_size=3
)
not_an_index = (
    st.integers(max_value=-1)
    | st.booleans()
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.none()
    | st.lists(st.integers(), max_size=2)
)


@st.composite
def random_json(draw: st.DrawFn) -> Case:
    """Any JSON that is not a v1 frame."""
    value = draw(json_values.filter(lambda v: not (isinstance(v, dict) and v.get("v") == 1)))
    return Case("random JSON", type(value).__name__, _text_frame(value))


@st.composite
def one_field_wrong(draw: st.DrawFn) -> Case:
    """A v1 frame of a real type with exactly one field wrong (type, value or size)."""
    frame_type = draw(st.sampled_from(FRAME_TYPES))
    frame: dict[str, object] = {"v": 1, "type": frame_type, "id": draw(st.text(max_size=64))}
    flaw = draw(st.sampled_from(["id", "version", "type", "text", "empty", "model", "index"]))
    if flaw == "id":
        frame["id"] = draw(not_a_string | st.text(min_size=65, max_size=200))
    elif flaw == "version":
        frame["v"] = draw(json_leaves.filter(lambda v: v != 1))
    elif flaw == "type":
        frame["type"] = draw(json_leaves.filter(lambda v: v not in FRAME_TYPES))
    elif flaw in {"text", "empty"}:
        frame["type"] = "send"
        frame["text"] = draw(
            not_a_string if flaw == "text" else st.text(alphabet=" \t\r\n\u3000\u00a0", max_size=30)
        )
    elif flaw == "model":
        frame["type"] = draw(st.sampled_from(["send", "regenerate"]))
        frame["text"] = "audit fuzz"
        frame["model"] = draw(not_a_string | st.text(min_size=201, max_size=300))
    else:
        frame["type"] = draw(st.sampled_from(["cancel", "resume"]))
        frame["reply_id"] = draw(not_an_index)
        frame["after_seq"] = draw(not_an_index)
    extra = draw(
        st.dictionaries(
            st.text(max_size=8).filter(lambda k: k not in frame), json_leaves, max_size=3
        )
    )
    return Case("one field wrong", f"{frame['type']!r}: {flaw}", _text_frame({**frame, **extra}))


@st.composite
def unknown_model(draw: st.DrawFn) -> Case:
    """A well-formed send naming a model that is not offered: refused before any row."""
    model = draw(st.text(alphabet=string.ascii_letters + "-.:/", min_size=1, max_size=60))
    return Case("unknown model", "send", _text_frame({
        "v": 1, "type": "send", "text": "audit fuzz", "model": f"no-such-{model}",
    }))  # fmt: skip


@st.composite
def oversized(draw: st.DrawFn) -> Case:
    """A message over PARLEY_MAX_MESSAGE_CHARS, or a frame over the largest valid frame."""
    size = draw(
        st.integers(MAX_MESSAGE_CHARS + 1, MAX_MESSAGE_CHARS * 3)
        | st.integers(MAX_MESSAGE_CHARS * 6 + 1100, 200_000)
    )
    letter = draw(st.sampled_from(["a", "é", "\u20ac", "😀", '"', "\\"]))
    return Case(
        "oversized",
        f"{size} x {letter!r}",
        _text_frame({"v": 1, "type": "send", "text": letter * size}),
    )


@st.composite
def binary(draw: st.DrawFn) -> Case:
    payload = draw(st.binary(max_size=512) | st.just(b'{"v":1,"type":"ping"}'))
    return Case("binary frame", f"{len(payload)} bytes", (RawFrame(BINARY, payload),))


@st.composite
def invalid_utf8(draw: st.DrawFn) -> Case:
    prefix = draw(st.binary(max_size=20).map(lambda b: b.decode("ascii", "ignore").encode()))
    bad = draw(
        st.sampled_from(
            [b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\xe2\x82"]
        )
    )
    return Case("invalid UTF-8", repr(bad), (RawFrame(TEXT, prefix + bad + b'"}'),))


@st.composite
def rfc_violation(draw: st.DrawFn) -> Case:
    """Frames RFC 6455 says a server must fail the connection for."""
    body = draw(st.binary(max_size=40))
    kind = draw(
        st.sampled_from(
            [
                "rsv bits",
                "reserved opcode",
                "unmasked",
                "long control",
                "fragmented control",
                "stray continuation",
            ]
        )
    )
    if kind == "rsv bits":
        frame = RawFrame(TEXT, b'{"v":1,"type":"ping"}', rsv=draw(st.integers(1, 7)))
    elif kind == "reserved opcode":
        frame = RawFrame(draw(st.sampled_from([3, 4, 5, 6, 7, 11, 12, 13, 14, 15])), body)
    elif kind == "unmasked":
        frame = RawFrame(TEXT, b'{"v":1,"type":"ping"}', masked=False)
    elif kind == "long control":
        frame = RawFrame(PING, b"p" * draw(st.integers(126, 1000)))
    elif kind == "fragmented control":
        frame = RawFrame(PING, body, fin=False)
    else:
        frame = RawFrame(CONTINUATION, body)
    return Case("RFC 6455 violation", kind, (frame,))


@st.composite
def fragmented_garbage(draw: st.DrawFn) -> Case:
    """A legal fragmented text message whose whole is not a valid frame."""
    text = draw(st.text(min_size=2, max_size=200).filter(lambda t: not t.lstrip().startswith("{")))
    cut = draw(st.integers(1, len(text.encode()) - 1))
    data = text.encode()
    # The cut may split a character: each fragment alone is not UTF-8, the message is.
    return Case("fragmented message", f"cut at byte {cut}", (
        RawFrame(TEXT, data[:cut], fin=False), RawFrame(CONTINUATION, data[cut:]),
    ))  # fmt: skip


def case_strategy() -> st.SearchStrategy[Case]:
    return st.one_of(
        random_json(), one_field_wrong(), one_field_wrong(), unknown_model(), oversized(),
        binary(), invalid_utf8(), rfc_violation(), fragmented_garbage(),
    )  # fmt: skip


def draw_cases(count: int, seed_value: int) -> list[Case]:
    """`count` inputs from Hypothesis, reproducible from the seed."""
    cases: list[Case] = []

    @settings(
        max_examples=count,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @seed(seed_value)
    @given(case_strategy())
    def collect(case: Case) -> None:
        cases.append(case)

    collect()
    return cases[:count]


# --- the campaign ---------------------------------------------------------------------------


@dataclass
class Outcome:
    frames: int = 0
    error_frames: Counter[str] = field(default_factory=Counter)
    clean_closes: Counter[int] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    handshakes: Counter[int] = field(default_factory=Counter)
    liveness_pings: int = 0
    floods: int = 0
    flood_frames: int = 0
    conversations: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def answered(self) -> int:
        return sum(self.error_frames.values()) + sum(self.clean_closes.values())

    def fail(self, message: str) -> None:
        with self.lock:
            if len(self.failures) < 50:
                self.failures.append(message)


class Fuzzer:
    """One socket of the campaign: a conversation of its own, one frame in flight at a time."""

    def __init__(self, client: Client, conversation: str, outcome: Outcome) -> None:
        self.client = client
        self.path = f"/ws/chat/{conversation}/"
        self.outcome = outcome
        self.socket = None
        self.last_sent = 0.0
        self.sent_since_ping = 0

    def connect(self) -> bool:
        status, _, socket = self.client.websocket(self.path)
        with self.outcome.lock:
            self.outcome.handshakes[status] += 1
        if status != 101:
            self.outcome.fail(f"handshake answered HTTP {status}")
            return False
        self.socket = socket
        return True

    def pace(self) -> None:
        wait = self.last_sent + SEND_INTERVAL - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self.last_sent = time.monotonic()

    def run_case(self, case: Case) -> None:
        if (self.socket is None or self.socket.closed) and not self.connect():
            return
        if self.socket is None:
            return
        self.pace()
        try:
            for frame in case.frames:
                self.socket.write(frame)
        except OSError as error:
            self.outcome.fail(f"{case.describe()}: could not write ({error!r})")
            self.socket.shutdown()
            return
        with self.outcome.lock:
            self.outcome.frames += len(case.frames)
            self.outcome.kinds[case.kind] += 1
        try:
            answer = self.socket.recv(ANSWER_TIMEOUT)
        except Closed as closed:
            if closed.code in CLEAN_CLOSE_CODES:
                with self.outcome.lock:
                    self.outcome.clean_closes[closed.code] += 1
            else:
                self.outcome.fail(f"{case.describe()}: closed without a clean close ({closed})")
            return
        except TimeoutError:
            self.outcome.fail(f"{case.describe()}: no answer within {ANSWER_TIMEOUT} s")
            self.socket.shutdown()
            return
        self.judge(case, answer.text)
        self.sent_since_ping += 1
        if self.sent_since_ping >= 25:
            self.sent_since_ping = 0
            self.ping()

    def judge(self, case: Case, text: str) -> None:
        try:
            frame = json.loads(text)
        except json.JSONDecodeError:
            self.outcome.fail(f"{case.describe()}: answer is not JSON: {text[:200]!r}")
            return
        if frame.get("type") == "error" and frame.get("code") in ERROR_CODES:
            with self.outcome.lock:
                self.outcome.error_frames[frame["code"]] += 1
            return
        self.outcome.fail(f"{case.describe()}: answered {text[:200]!r}")

    def ping(self) -> None:
        """The socket still works: a ping gets its pong."""
        if self.socket is None:
            return
        self.pace()
        try:
            self.socket.send_text(json.dumps({"v": 1, "type": "ping", "id": "alive"}))
            answer = json.loads(self.socket.recv(ANSWER_TIMEOUT).text)
        except (Closed, TimeoutError, OSError, json.JSONDecodeError) as error:
            self.outcome.fail(f"liveness ping after 25 frames: {error!r}")
            return
        with self.outcome.lock:
            self.outcome.liveness_pings += 1
        if answer != {"v": 1, "type": "pong", "id": "alive"}:
            self.outcome.fail(f"liveness ping answered {answer}")

    def flood(self, count: int, limit: FrameLimit) -> None:
        """`count` pings at once: at most the bucket's burst + rate x the seconds from the first
        frame to the last answer (+ 1 for rounding) are answered with a pong, the rest are
        refused (too_many_frames, reported at most once a second), and the socket lives on."""
        if (self.socket is None or self.socket.closed) and not self.connect():
            return
        if self.socket is None:
            return
        frame = RawFrame(TEXT, json.dumps({"v": 1, "type": "ping", "id": "flood"}).encode())
        began = time.monotonic()
        for _ in range(count):
            self.socket.write(frame)
        codes: Counter[str] = Counter()
        last_answer = began
        try:
            while True:
                answer = json.loads(self.socket.recv(3).text)
                last_answer = time.monotonic()
                codes[answer.get("code") or answer.get("type")] += 1
        except TimeoutError:
            pass
        except Closed as closed:
            self.outcome.fail(f"flood of {count} frames closed the socket ({closed})")
            return
        with self.outcome.lock:
            self.outcome.floods += 1
            self.outcome.flood_frames += count
            self.outcome.error_frames.update({k: v for k, v in codes.items() if k in ERROR_CODES})
        seconds = last_answer - began
        bound = int(limit.burst + limit.rate * seconds) + 1
        measured = (
            f"timing bound: measured {codes['pong']} of {count} answered in {seconds:.2f} s, "
            f"bound {bound} (from WS_FRAME_BURST {limit.burst} + WS_FRAMES_PER_SECOND "
            f"{limit.rate:g} x {seconds:.2f} s + 1 for rounding)"
        )
        if codes["pong"] > bound:
            self.outcome.fail(f"flood of {count} frames: too many answered; {measured}")
        if codes["pong"] >= count or not codes["too_many_frames"]:
            self.outcome.fail(
                f"flood of {count} frames: no too_many_frames {dict(codes)}; {measured}"
            )
        # The bucket refills by the clock, whatever the machine's speed: a second and a half
        # gives the liveness ping a token at any rate of one frame a second or more.
        time.sleep(1.5)
        self.ping()

    def close(self) -> None:
        if self.socket is not None:
            self.socket.close()


@dataclass(frozen=True)
class FrameLimit:
    """The app's frame limit per socket, as deployed (WS_FRAMES_PER_SECOND, WS_FRAME_BURST)."""

    rate: float
    burst: int


def run_campaign(
    client: Client,
    cases: list[Case],
    *,
    sockets: int,
    floods: int,
    limit: FrameLimit,
) -> Outcome:
    """Send every case over `sockets` parallel sockets (each in its own new conversation),
    then the floods."""
    outcome = Outcome()
    work: queue.Queue[Case] = queue.Queue()
    for case in cases:
        work.put(case)
    fuzzers = []
    for _ in range(sockets):
        conversation = client.new_conversation()
        outcome.conversations.append(conversation)
        fuzzers.append(Fuzzer(client, conversation, outcome))

    def drain(fuzzer: Fuzzer) -> None:
        while True:
            try:
                case = work.get_nowait()
            except queue.Empty:
                break
            try:
                fuzzer.run_case(case)
            except Exception as error:
                outcome.fail(f"{case.describe()}: the client failed: {error!r}")
                if fuzzer.socket is not None:
                    fuzzer.socket.shutdown()
        fuzzer.close()

    threads = [threading.Thread(target=drain, args=(f,), daemon=True) for f in fuzzers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if floods:
        flooder = Fuzzer(client, fuzzers[0].path.split("/")[3], outcome)
        for _ in range(floods):
            flooder.flood(FLOOD_SIZE, limit)
        flooder.close()
    return outcome


__all__ = ["CLOSE", "Case", "FrameLimit", "Outcome", "draw_cases", "run_campaign"]
