"""Django, used the ordinary way, saves a stale row to a table protected with
last_write_wins.

Run by tests/client/tests/orm_stale_writes.rs against a throwaway server with table
profiles_lww (id, name, synced_at), row 1 stored at --stored-at. Each step
saves an older payload (synced_at --stale-at) with an everyday Django idiom:

  save            get(), assign, save(): an UPDATE; on 0 rows Django INSERTs
  update_fields   save(update_fields=[...]): 0 rows is an error
  update_or_create
  fresh           update_or_create with a newer synced_at

It prints one JSON object: each step's outcome ("ok", or the exception's class
and message) and the name Django reads back after it. The Rust test asserts.
"""

import argparse
import json
from datetime import datetime

import django
from django.conf import settings

parser = argparse.ArgumentParser()
for arg in ("host", "port", "user", "dbname", "stale-at", "fresh-at"):
    parser.add_argument("--" + arg, required=True)
args = parser.parse_args()

settings.configure(
    DATABASES={
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": args.host,
            "PORT": args.port,
            "USER": args.user,
            "NAME": args.dbname,
        }
    },
    INSTALLED_APPS=[],
    USE_TZ=True,
)
django.setup()

from django.db import models, transaction  # noqa: E402


class Profile(models.Model):
    id = models.IntegerField(primary_key=True)
    name = models.TextField(null=True)
    synced_at = models.DateTimeField()

    class Meta:
        app_label = "syncguard_test"
        db_table = "profiles_lww"
        managed = False


stale = datetime.fromisoformat(args.stale_at)
fresh = datetime.fromisoformat(args.fresh_at)


def step(fn):
    try:
        with transaction.atomic():
            fn()
        outcome = "ok"
    except Exception as e:  # the outcome is the report
        outcome = f"{type(e).__name__}: {e}"
    return {"outcome": outcome, "name": Profile.objects.get(id=1).name}


def save():
    p = Profile.objects.get(id=1)
    p.name, p.synced_at = "stale save", stale
    p.save()


def update_fields():
    p = Profile.objects.get(id=1)
    p.name, p.synced_at = "stale update_fields", stale
    p.save(update_fields=["name", "synced_at"])


def update_or_create(name, at):
    def run():
        obj, created = Profile.objects.update_or_create(id=1, defaults={"name": name, "synced_at": at})
        assert not created, "update_or_create created a row"
    return run


print(json.dumps({
    "save": step(save),
    "update_fields": step(update_fields),
    "update_or_create": step(update_or_create("stale update_or_create", stale)),
    "fresh": step(update_or_create("fresh", fresh)),
}))
