"""The server-rendered pages: sign-in required, own conversations only, no empty-chat pile-up."""

from __future__ import annotations

from chat.models import Conversation, Message


def test_pages_require_sign_in(client, transactional_db) -> None:
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"] == "/login/?next=/"


def test_new_chat_reuses_an_empty_conversation(client, user) -> None:
    client.force_login(user)
    first = client.post("/c/new/")
    second = client.post("/c/new/")
    assert first["Location"] == second["Location"]
    assert Conversation.objects.filter(user=user).count() == 1
    assert client.get("/")["Location"] == first["Location"]


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
