"""SQLAlchemy, used the ordinary way, writes partial sync results.

Run by tests/client/tests/orm_sqlalchemy.rs against a throwaway server that has two tables
of the same shape, already seeded (rows 1 to 3, all three parts of
external_data and a name), which passes the documents in --fixture:

  profiles         under syncguard.protect
  profiles_plain   a plain table, the control

A sync job fetched contact and preferences; billing failed, so the payload
lacks the billing part and the legal name (which billing supplies) is None.
The script saves that payload with three everyday SQLAlchemy idioms, one row
each, on both tables:

  row 1  session.get() + attribute assignment + commit
  row 2  session.merge(Model(...)) + commit
  row 3  postgresql insert(...).on_conflict_do_update(...)
  row 4  the same insert for a new id (no conflict: a plain insert)

Then it reads every row back with a fresh session and checks: the protected
table kept every stored field and took the new values; the plain table lost
the billing part and the name (proof that SQLAlchemy really sent a full
replace). The Rust test checks the stored rows again in SQL afterwards.

Exit status 0 when every check holds; 1 with a "FAILED:" line otherwise.
"""

import argparse
import copy
import json
import sys
from datetime import datetime, timezone
from typing import Optional

import sqlalchemy
from sqlalchemy import URL, DateTime, Integer, Text, create_engine, event
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

# Set from --fixture (the Rust test's documents, tests/client/src/profiles.rs):
NAME = None     # the legal name stored before; billing, which supplies it, failed
FETCHED = None  # what the sync job got: contact and preferences, no billing
MERGED = None   # the stored document with FETCHED deep-merged in
NEW_ROW_NAME = "Charles Babbage"


class Base(DeclarativeBase):
    pass


class ProfileColumns:
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[Optional[str]] = mapped_column(Text)
    external_data: Mapped[Optional[dict]] = mapped_column(JSONB)
    synced_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))

    def __repr__(self):
        return f"<{type(self).__name__} id={self.id} name={self.name!r} external_data={self.external_data!r}>"


class Profile(ProfileColumns, Base):
    __tablename__ = "profiles"


class PlainProfile(ProfileColumns, Base):
    __tablename__ = "profiles_plain"


class CheckFailed(Exception):
    pass


def check(condition, message):
    if not condition:
        raise CheckFailed(message)


def payload():
    """A fresh copy, so no write shares a dict with another."""
    return copy.deepcopy(FETCHED)


def now():
    return datetime.now(timezone.utc)


def write_with_get(engine, model):
    with Session(engine) as session:
        profile = session.get(model, 1)
        check(profile is not None, f"{model.__tablename__}: row 1 not seeded")
        profile.external_data = payload()
        profile.name = None  # the failed billing fetch
        profile.synced_at = now()
        session.commit()
        # Expired on commit: this reads back what the server stored.
        print(f"  after commit the ORM sees {profile!r}")


def write_with_merge(engine, model):
    with Session(engine) as session:
        merged = session.merge(
            model(id=2, name=None, external_data=payload(), synced_at=now())
        )
        session.commit()
        print(f"  after commit the ORM sees {merged!r}")


def write_with_on_conflict(engine, model, row_id, name):
    stmt = insert(model).values(
        id=row_id, name=name, external_data=payload(), synced_at=now()
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[model.id],
        set_={
            "name": stmt.excluded.name,
            "external_data": stmt.excluded.external_data,
            "synced_at": stmt.excluded.synced_at,
        },
    )
    with Session(engine) as session:
        session.execute(stmt)
        session.commit()


def verify(engine):
    with Session(engine) as session:
        for row_id, idiom in [(1, "get+assign"), (2, "merge"), (3, "on_conflict_do_update")]:
            p = session.get(Profile, row_id)
            what = f"profiles (protected) row {row_id} via {idiom}"
            check(p.external_data == MERGED,
                  f"{what}: external_data\n  expected {MERGED!r}\n  got      {p.external_data!r}")
            check(p.name == NAME, f"{what}: name expected {NAME!r}, got {p.name!r}")

            c = session.get(PlainProfile, row_id)
            what = f"profiles_plain (control) row {row_id} via {idiom}"
            check(c.external_data == FETCHED,
                  f"{what}: SQLAlchemy was expected to send a full replace\n"
                  f"  expected {FETCHED!r}\n  got      {c.external_data!r}")
            check("billing" not in c.external_data, f"{what}: billing survived")
            check(c.name is None, f"{what}: name expected None, got {c.name!r}")

        for model in (Profile, PlainProfile):
            p = session.get(model, 4)
            what = f"{model.__tablename__} row 4 (new id)"
            check(p is not None, f"{what}: not inserted")
            check(p.external_data == FETCHED,
                  f"{what}: expected {FETCHED!r}, got {p.external_data!r}")
            check(p.name == NEW_ROW_NAME, f"{what}: name {p.name!r}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", required=True, help="socket directory or host name")
    parser.add_argument("--port", required=True, type=int)
    parser.add_argument("--user", required=True)
    parser.add_argument("--dbname", required=True)
    parser.add_argument("--fixture", required=True,
                        help='JSON: {"name": ..., "fetched": {...}, "merged": {...}}')
    args = parser.parse_args()
    global NAME, FETCHED, MERGED
    fixture = json.loads(args.fixture)
    NAME, FETCHED, MERGED = fixture["name"], fixture["fetched"], fixture["merged"]

    check(sqlalchemy.__version__.split(".")[0] == "2",
          f"SQLAlchemy 2.x expected, found {sqlalchemy.__version__}")
    print(f"SQLAlchemy {sqlalchemy.__version__}")

    url = URL.create("postgresql+psycopg", username=args.user, host=args.host,
                     port=args.port, database=args.dbname)
    engine = create_engine(url)

    # Show what the ORM sends, so a failure shows the statements too.
    @event.listens_for(engine, "before_cursor_execute")
    def show(conn, cursor, statement, parameters, context, executemany):
        print("  SQL:", " ".join(statement.split()))

    for model in (Profile, PlainProfile):
        print(f"{model.__tablename__}: session.get + assignment + commit (row 1)")
        write_with_get(engine, model)
        print(f"{model.__tablename__}: session.merge + commit (row 2)")
        write_with_merge(engine, model)
        print(f"{model.__tablename__}: insert().on_conflict_do_update() (row 3)")
        write_with_on_conflict(engine, model, 3, None)
        print(f"{model.__tablename__}: insert().on_conflict_do_update(), new id (row 4)")
        write_with_on_conflict(engine, model, 4, NEW_ROW_NAME)

    print("reading back")
    verify(engine)
    engine.dispose()
    print("ok: every check held")


if __name__ == "__main__":
    try:
        main()
    except CheckFailed as e:
        print(f"FAILED: {e}", file=sys.stderr)
        sys.exit(1)
