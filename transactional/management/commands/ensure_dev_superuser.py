"""Create the documented development admin account if no superuser exists."""

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

USERNAME = "admin"
PASSWORD = "admin"


class Command(BaseCommand):
    help = (
        f"Create superuser {USERNAME!r} with password {PASSWORD!r} if there is no "
        "superuser yet. Development only: refuses to run unless DEBUG is on."
    )

    def handle(self, *args, **options) -> None:
        if not settings.DEBUG:
            raise CommandError("Refusing to create a well-known admin account with DEBUG off.")
        users = get_user_model().objects
        if users.filter(is_superuser=True).exists():
            self.stdout.write("A superuser exists; leaving accounts alone.")
            return
        users.create_superuser(USERNAME, email="admin@acme.test", password=PASSWORD)
        self.stdout.write(f"Created superuser {USERNAME!r} with password {PASSWORD!r}.")
