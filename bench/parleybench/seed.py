"""Create the benchmark's users and conversations through the app's own models.

Run with the app on PYTHONPATH and its settings: `python -m parleybench.seed USERS
CONVERSATIONS` prints JSON naming each user and the conversations it owns (round robin).
The password comes from BENCH_USER_PASSWORD; it is hashed once (PBKDF2 as in production is
slow on purpose) and that hash is given to every user.
"""

from __future__ import annotations

import json
import os
import sys


def main() -> None:
    # Models cannot be imported before django.setup(), hence the imports in here.
    import django  # noqa: PLC0415

    django.setup()
    from chat.models import Conversation  # noqa: PLC0415
    from django.contrib.auth import get_user_model  # noqa: PLC0415
    from django.contrib.auth.hashers import make_password  # noqa: PLC0415

    users_wanted, conversations_wanted = int(sys.argv[1]), int(sys.argv[2])
    password_hash = make_password(os.environ["BENCH_USER_PASSWORD"])
    user_model = get_user_model()
    users = user_model.objects.bulk_create(
        user_model(username=f"bench-{index:03d}", password=password_hash)
        for index in range(users_wanted)
    )
    conversations = Conversation.objects.bulk_create(
        (Conversation(user=users[index % len(users)]) for index in range(conversations_wanted)),
        batch_size=2000,
    )
    json.dump(
        {
            "users": [user.username for user in users],
            "conversations": [
                [users[index % len(users)].username, str(conversation.pk)]
                for index, conversation in enumerate(conversations)
            ],
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
