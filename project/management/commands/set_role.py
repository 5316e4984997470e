from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from project.roles import Role, assign_role

CHOICES = [*Role, "none"]


class Command(BaseCommand):
    help = "Give a user a role: admin, sender or viewer; none takes the role away (see project/roles.py)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("role", help=", ".join(CHOICES))

    def handle(self, *args, username: str, role: str, **options):
        if role not in CHOICES:
            raise CommandError(f"Unknown role {role!r}: choose one of {', '.join(CHOICES)}.", returncode=2)
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user named {username!r}.", returncode=2)
        assign_role(user, None if role == "none" else Role(role))
        self.stdout.write(f"{username} now has no role." if role == "none" else f"{username} is now {role}.")
