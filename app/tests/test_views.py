"""The server-rendered pages: sign-in required, own conversations only, no empty-chat pile-up."""

from __future__ import annotations

from chat.models import Conversation, Message


def test_pages_require_sign_in(client, transactional_db) -> None:
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"] == "/login/?next=/"


def test_new_chat_on_an_empty_chat_stays_there(client, user) -> None:
    client.force_login(user)
    first = client.post("/c/new/")
    page = client.get(first["Location"]).text
    current = first["Location"].split("/")[2]
    assert f'name="from" value="{current}"' in page
    again = client.post("/c/new/", {"from": current})
    assert again["Location"] == first["Location"]
    assert Conversation.objects.filter(user=user).count() == 1
    assert client.get("/")["Location"] == first["Location"]


def test_new_chat_from_two_tabs_gives_two_conversations(client, user) -> None:
    client.force_login(user)
    # Two tabs on the same written-in chat press "New chat": each gets a chat of its own.
    written = Conversation.objects.create(user=user)
    Message.objects.create(conversation=written, role="user", content="Hi")
    one = client.post("/c/new/", {"from": str(written.id)})
    two = client.post("/c/new/", {"from": str(written.id)})
    assert one["Location"] != two["Location"]
    # Someone else's empty chat, or a malformed id, is never handed out.
    stranger = user.__class__.objects.create_user(username="stranger", password="p-a-s-s-1")
    theirs = Conversation.objects.create(user=stranger)
    mine = client.post("/c/new/", {"from": str(theirs.id)})
    assert str(theirs.id) not in mine["Location"]
    assert client.post("/c/new/", {"from": "not-a-uuid"}).status_code == 302
    assert Conversation.objects.filter(user=user).count() == 5


def test_conversation_page_lists_messages_and_models(client, user, conversation) -> None:
    question = Message.objects.create(conversation=conversation, role="user", content="Hi <b>")
    Message.objects.create(
        conversation=conversation, role="assistant", reply_to=question, content="**Hello**",
        model="demo",
    )  # fmt: skip
    client.force_login(user)
    page = client.get(f"/c/{conversation.id}/").text
    assert "Hi &lt;b&gt;" in page
    assert "<strong>Hello</strong>" in page
    assert 'value="demo"' in page and "Demo (offline)" in page
    assert 'value="fake-model"' in page


def test_someone_elses_conversation_is_not_found(client, conversation, django_user_model) -> None:
    other = django_user_model.objects.create_user(username="other", password="p-a-s-s-1")
    client.force_login(other)
    assert client.get(f"/c/{conversation.id}/").status_code == 404
    assert client.post(f"/c/{conversation.id}/delete/").status_code == 404
    assert Conversation.objects.filter(pk=conversation.pk).exists()


def test_delete_conversation(client, user, conversation) -> None:
    client.force_login(user)
    assert client.post(f"/c/{conversation.id}/delete/").status_code == 302
    assert not Conversation.objects.filter(pk=conversation.pk).exists()


def test_head_says_only_whether_the_chat_is_there(
    client, user, conversation, django_user_model, django_assert_num_queries
) -> None:
    """What the chat page asks when its socket is refused: here (200), gone (404), or
    signed out (a redirect to the login page), without rendering the page."""
    client.force_login(user)
    with django_assert_num_queries(3):  # the session, its user, the conversation
        here = client.head(f"/c/{conversation.id}/")
    assert here.status_code == 200
    assert here.content == b""
    other = django_user_model.objects.create_user(username="other", password="p-a-s-s-1")
    client.force_login(other)
    assert client.head(f"/c/{conversation.id}/").status_code == 404
    client.logout()
    assert client.head(f"/c/{conversation.id}/")["Location"].startswith("/login/")
