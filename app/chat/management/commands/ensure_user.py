"""Create a user, or reset its password, idempotently: `manage.py ensure_user NAME`.

For bootstrapping (the local demo account, a deploy's first administrator). The password is
read from --password or from the environment variable named by --password-env.
"""

from __future__ import annotations

import os

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    help = "Create a user or reset its password (idempotent)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument(
            "--password", help="the password (visible in ps; prefer --password-env)"
        )
        parser.add_argument("--password-env", help="name of an environment variable holding it")
        parser.add_argument("--superuser", action="store_true", help="staff and superuser")

    def handle(self, *args: object, **options: object) -> None:
        password = options["password"]
        if options["password_env"]:
            password = os.environ.get(str(options["password_env"]))
        if not password:
            raise CommandError("give --password or --password-env naming a set variable")
        user, created = get_user_model().objects.get_or_create(username=options["username"])
        wanted_staff = bool(options["superuser"]) or user.is_superuser
        if not created and user.check_password(str(password)) and user.is_superuser == wanted_staff:
            # Nothing to do: a deploy re-running this must be able to report "no change".
            self.stdout.write(f"unchanged user {user.get_username()}")
            return
        user.set_password(str(password))
        if options["superuser"]:
            user.is_staff = user.is_superuser = True
        user.save()
        self.stdout.write(f"{'created' if created else 'updated'} user {user.get_username()}")
