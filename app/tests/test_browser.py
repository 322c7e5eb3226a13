"""The chat page in headless Chromium, under the production Content-Security-Policy.

Signs in, opens a chat, sends a message, watches the reply stream in, stops it, and checks
that model output can never run script (the XSS payload below is echoed by the fake model).
"""

from __future__ import annotations

import datetime as dt
import os
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.sessions.models import Session
from django.utils import timezone
from playwright.sync_api import Browser, Page, Route, expect, sync_playwright

from chat import jobs, replystream
from chat.models import Conversation, Message, conversation_group
from chat.protocol import server_frame
from tests.processes import WEB_PORT

BASE = f"http://127.0.0.1:{WEB_PORT}"
# What nginx on the lb host sends in production.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
)
XSS = (
    '<script>window.__pwned = 1</script> <img src=x onerror="window.__pwned = 2"> '
    "[click me](javascript:window.__pwned=3) **bold**"
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    # Playwright's sync API keeps an event loop in this thread; the ORM calls in these tests
    # are plain synchronous ones in between browser steps.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--no-sandbox", "--disable-background-networking", "--disable-gpu",
                  "--disable-component-update", "--disable-sync"],
        )  # fmt: skip
        yield browser
        browser.close()
    del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]


@pytest.fixture
def page(browser: Browser, stack: None) -> Iterator[Page]:
    context = browser.new_context()
    page = context.new_page()
    page.csp_violations = []  # type: ignore[attr-defined]
    page.dialogs = []  # type: ignore[attr-defined]

    def with_csp(route: Route) -> None:
        response = route.fetch(max_redirects=0)
        route.fulfill(
            response=response, headers={**response.headers, "content-security-policy": CSP}
        )

    page.route("**/*", with_csp)
    page.on("console", lambda message: page.csp_violations.append(message.text)  # type: ignore[attr-defined]
            if "Content Security Policy" in message.text else None)  # fmt: skip
    page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))  # type: ignore[attr-defined]
    yield page
    # A request the page still makes as it closes (a socket's close, then the page asking why)
    # must not fail the next test from its route handler.
    page.unroute_all(behavior="ignoreErrors")
    context.close()


def sign_in(page: Page, user) -> None:
    page.goto(f"{BASE}/")
    expect(page).to_have_url(f"{BASE}/login/?next=/")
    page.fill("#id_username", user.username)
    page.fill("#id_password", "a-test-password-1")
    page.click("button[type=submit]")
    page.click("#new-chat")
    expect(page.locator("#connection")).to_have_text("Connected")


def test_send_watch_it_stream_and_stop(page: Page, user) -> None:
    sign_in(page, user)
    page.select_option("#model", "fake-model")
    page.fill("#prompt", "stream slowly please [fakellm:tokens=600 tps=30]")
    page.keyboard.press("Enter")

    reply = page.locator(".message.assistant").last
    expect(reply).to_have_class("message assistant generating")
    expect(page.locator("#conversation-title")).to_have_text(
        "stream slowly please [fakellm:tokens=600 tps=30]"
    )
    expect(page.locator("#current-conversation")).to_have_text(
        "stream slowly please [fakellm:tokens=600 tps=30]"
    )
    text = reply.locator(".text")
    expect(text).not_to_have_text("")
    first = len(text.inner_text())
    page.wait_for_function(
        "n => document.querySelector('.message.assistant:last-of-type .text').innerText.length > n",
        arg=first + 20,
    )
    expect(page.locator("#stop")).to_be_visible()
    page.click("#stop")
    expect(reply).to_have_class("message assistant cancelled")
    expect(reply.locator(".note")).to_have_text("Stopped.")
    expect(page.locator("#send")).to_be_enabled()

    stored = Message.objects.get(role="assistant", conversation__user=user)
    assert stored.status == Message.Status.CANCELLED
    assert reply.locator(".text").inner_text().strip() == stored.content.strip()
    # The user's message and the stopped reply are still there after a reload.
    page.reload()
    expect(page.locator(".message.user")).to_have_text(
        ["stream slowly please [fakellm:tokens=600 tps=30]"]
    )
    expect(page.locator(".message.assistant .note")).to_have_text("Stopped.")
    assert page.csp_violations == []  # type: ignore[attr-defined]

    page.click("#sign-out")
    expect(page).to_have_url(f"{BASE}/login/")


def test_model_output_cannot_run_script(page: Page, user) -> None:
    sign_in(page, user)
    page.select_option("#model", "fake-model")
    page.fill("#prompt", f"[fakellm:echo] {XSS}")
    page.click("#send")
    reply = page.locator(".message.assistant").last
    expect(reply).to_have_class("message assistant complete", timeout=20_000)
    expect(reply.locator("strong")).to_have_text("bold")  # Markdown is rendered
    expect(reply.locator(".text")).to_contain_text("<script>window.__pwned = 1</script>")
    assert reply.locator("script, img, [onerror]").count() == 0
    assert reply.locator("a[href^=javascript]").count() == 0
    page.reload()  # the server-rendered history is sanitized the same way
    expect(page.locator(".message.assistant strong")).to_have_text("bold")
    assert page.evaluate("window.__pwned") is None
    assert page.dialogs == []  # type: ignore[attr-defined]
    assert page.csp_violations == []  # type: ignore[attr-defined]


def test_a_deploy_mid_reply_reconnects_and_resumes(page: Page, user, web) -> None:
    sign_in(page, user)
    page.evaluate("""() => {
        const badge = document.getElementById('connection');
        window.__states = [];
        new MutationObserver(() => window.__states.push(badge.dataset.state))
            .observe(badge, {attributes: true});
    }""")
    page.select_option("#model", "fake-model")
    page.fill("#prompt", "survive a deploy [fakellm:tokens=300 tps=40]")
    page.click("#send")
    reply = page.locator(".message.assistant").last
    expect(reply.locator(".text")).not_to_have_text("")
    # A deploy: Gunicorn replaces its workers, which close their sockets (1012).
    os.kill(web.pid, signal.SIGHUP)
    expect(reply).to_have_class("message assistant complete", timeout=30_000)
    expect(page.locator("#connection")).to_have_text("Connected")
    assert "reconnecting" in page.evaluate("window.__states")
    stored = Message.objects.get(role="assistant", conversation__user=user)
    assert stored.status == Message.Status.COMPLETE
    # The streamed text was replaced by the rendered final reply: same words, none twice.
    assert reply.locator(".text").inner_text().split() == stored.content.split()


def test_the_end_of_a_reply_ends_it_past_frames_never_stored(page: Page, user) -> None:
    """A reply's end carries its whole text. Frames before it that were never stored (a
    worker stopped mid-frame, Redis failing) cannot be resumed; the page must not wait for
    them with the reply "generating" and the send button off."""
    sign_in(page, user)
    conversation = Conversation.objects.get(user=user)
    question = Message.objects.create(conversation=conversation, role="user", content="q")
    reply = Message.objects.create(
        conversation=conversation, role="assistant", reply_to=question, status="generating"
    )

    def deliver(frame: dict) -> None:
        # From a thread of its own: Playwright's sync API keeps an event loop in this one.
        send = async_to_sync(get_channel_layer().group_send)
        event = {"type": replystream.REPLY_EVENT, "frame": frame}
        with ThreadPoolExecutor(max_workers=1) as pool:
            pool.submit(send, conversation_group(conversation.id), event).result()

    deliver(server_frame("delta", reply_id=reply.pk, seq=1, text="the first "))
    shown = page.locator(f'[data-reply-id="{reply.pk}"]')
    expect(shown).to_have_class("message assistant generating")
    expect(shown.locator(".text")).to_have_text("the first")
    # Frame 2 is in no stream; the end (frame 3) has the whole text.
    usage = {"prompt_tokens": 1, "completion_tokens": 5, "estimated": True}
    text = "the first and the last"
    deliver(server_frame("done", reply_id=reply.pk, seq=3, status="complete", content=text,
                         html=f"<p>{text}</p>", usage=usage))  # fmt: skip
    expect(shown).to_have_class("message assistant complete")
    expect(shown.locator(".text")).to_have_text(text)
    expect(page.locator("#send")).to_be_enabled()


def test_a_refused_message_goes_back_into_the_composer(page: Page, user, redis_admin) -> None:
    day = timezone.now().strftime("%Y%m%d")
    redis_admin["channel_layer"].set(f"parley:quota:{user.pk}:{day}", 10**9, ex=60)
    sign_in(page, user)
    page.fill("#prompt", "one more, please")
    page.click("#send")
    expect(page.locator("#error-line")).to_contain_text("token quota")
    expect(page.locator("#prompt")).to_have_value("one more, please")
    expect(page.locator(".message.user")).to_have_count(0)
    assert not Message.objects.filter(conversation__user=user).exists()


# Cuts the page's socket at its first `send`: the frame either goes out just before the close
# (the server stores the message, the ack is lost) or never leaves (nothing is stored).
CUT_AT_FIRST_SEND = """mode => {
    const original = WebSocket.prototype.send;
    window.__sends = [];
    let cut = false;
    WebSocket.prototype.send = function (data) {
        const frame = JSON.parse(data);
        if (frame.type === "send") { window.__sends.push(frame); }
        if (frame.type === "send" && !cut) {
            cut = true;
            if (mode === "crossing") { original.call(this, data); }
            this.close();
            return;
        }
        return original.call(this, data);
    };
}"""


@pytest.mark.parametrize("mode", ["crossing", "never_sent"])
def test_a_send_lost_with_the_socket_is_sent_again_once(page: Page, user, mode: str) -> None:
    page.add_init_script(f"({CUT_AT_FIRST_SEND})({mode!r})")
    sign_in(page, user)
    page.select_option("#model", "fake-model")
    page.fill("#prompt", "did you get this? [fakellm:tokens=40]")
    page.click("#send")
    reply = page.locator(".message.assistant").last
    expect(reply).to_have_class("message assistant complete", timeout=20_000)
    expect(page.locator(".message.user")).to_have_text(["did you get this? [fakellm:tokens=40]"])
    expect(page.locator("#send")).to_be_enabled()
    expect(page.locator("#error-line")).to_be_hidden()

    sends = page.evaluate("window.__sends")
    assert len(sends) == 2, sends
    assert sends[0]["client_id"] == sends[1]["client_id"]
    assert sends[0]["text"] == sends[1]["text"]
    stored = Message.objects.filter(conversation__user=user).order_by("id")
    assert [m.role for m in stored] == ["user", "assistant"]
    assert str(stored[0].client_id) == sends[0]["client_id"]
    assert stored[1].status == Message.Status.COMPLETE
    assert reply.locator(".text").inner_text().split() == stored[1].content.split()
    assert page.locator(".message.user").get_attribute("data-message-id") == str(stored[0].pk)
    assert page.csp_violations == []  # type: ignore[attr-defined]


def chat_once(page: Page, text: str) -> None:
    """Send `text` to the fake model and wait for the whole reply."""
    page.select_option("#model", "fake-model")
    page.fill("#prompt", text)
    page.click("#send")
    expect(page.locator(".message.assistant").last).to_have_class(
        "message assistant complete", timeout=20_000
    )


def assert_no_more_tries(page: Page, opened: list[str]) -> None:
    tries = len(opened)
    page.wait_for_timeout(3_000)  # the retry loop would have tried again by now
    assert len(opened) == tries


def test_an_empty_chat_purged_under_the_page_gives_way_to_a_new_one(page: Page, user) -> None:
    """The nightly purge drops chats left empty for a day, one open in a forgotten tab too:
    the message typed there moves to a new chat instead of failing."""
    sign_in(page, user)
    gone = Conversation.objects.get(user=user)
    Conversation.objects.filter(pk=gone.pk).update(updated_at=timezone.now() - dt.timedelta(days=2))
    jobs.purge_old_conversations()
    assert not Conversation.objects.filter(pk=gone.pk).exists()

    page.fill("#prompt", "still there? [fakellm:tokens=20]")
    page.click("#send")
    expect(page).not_to_have_url(f"{BASE}/c/{gone.pk}/")
    expect(page.locator("#connection")).to_have_text("Connected")
    expect(page.locator("#prompt")).to_have_value("still there? [fakellm:tokens=20]")
    chat_once(page, "still there? [fakellm:tokens=20]")
    (new,) = Conversation.objects.filter(user=user)
    assert page.url == f"{BASE}/c/{new.pk}/"
    assert [m.role for m in new.messages.order_by("id")] == ["user", "assistant"]
    assert page.csp_violations == []  # type: ignore[attr-defined]


def watch_sockets(page: Page) -> list[str]:
    opened: list[str] = []
    page.on("websocket", lambda socket: opened.append(socket.url))
    return opened


def test_a_chat_deleted_elsewhere_says_so_and_stops_reconnecting(page: Page, user, web) -> None:
    sign_in(page, user)
    chat_once(page, "keep this on screen [fakellm:tokens=10]")
    Conversation.objects.filter(user=user).delete()  # "Delete" pressed in another tab
    page.fill("#prompt", "typed before it went")
    opened = watch_sockets(page)
    # A deploy closes the socket; the handshake of the reconnect is refused (HTTP 403).
    os.kill(web.pid, signal.SIGHUP)
    expect(page.locator("#connection")).to_have_text("Deleted", timeout=30_000)
    expect(page.locator("#error-line")).to_contain_text("This chat no longer exists")
    expect(page.locator(".message.assistant")).to_have_count(1)
    expect(page.locator("#prompt")).to_have_value("typed before it went")
    expect(page.locator("#send")).to_be_disabled()
    assert_no_more_tries(page, opened)
    assert not Conversation.objects.filter(user=user).exists()


def test_a_page_whose_session_ended_says_signed_out(page: Page, user, web) -> None:
    sign_in(page, user)
    opened = watch_sockets(page)
    Session.objects.all().delete()
    os.kill(web.pid, signal.SIGHUP)
    expect(page.locator("#connection")).to_have_text("Signed out", timeout=30_000)
    expect(page.locator("#error-line")).to_contain_text("sign in again")
    assert_no_more_tries(page, opened)


def test_a_browser_refusing_session_storage_still_chats(page: Page, user) -> None:
    # Site data blocked: touching sessionStorage throws, as in browsers set that way.
    page.add_init_script("""Object.defineProperty(window, "sessionStorage", {
        get() { throw new DOMException("blocked", "SecurityError"); }
    });""")
    sign_in(page, user)
    chat_once(page, "no storage here [fakellm:tokens=10]")
