"""Make the seed peer's database: its tables (migrate) and NODES users, each with a Node (created),
all sharing one password hash (hashing each separately would take minutes; each node still costs a
check per request, or per worker once with SEED_AUTH=cached). Run with the seed venv's python:

    SEED_DB=/tmp/x.sqlite3 SEED_AUTH=pbkdf2 python register.py NODES PASSWORD
"""
import os
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "seedsite.settings")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import django  # noqa: E402

django.setup()

from django.contrib.auth.hashers import make_password  # noqa: E402
from django.contrib.auth.models import User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import transaction  # noqa: E402

from readings.models import Node  # noqa: E402


def main(count: int, password: str) -> None:
    call_command("migrate", verbosity=0)
    password_hash = make_password(password)  # the first of PASSWORD_HASHERS: Django's default unless cached
    names = [f"node{i:05d}" for i in range(count)]
    with transaction.atomic():
        users = User.objects.bulk_create([User(username=name, password=password_hash) for name in names])
        Node.objects.bulk_create([Node(name=u.username, user=u) for u in users])
    print(password_hash.split("$", 2)[0] + "$" + password_hash.split("$", 2)[1])


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
