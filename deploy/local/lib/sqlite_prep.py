#!/usr/bin/python3
"""Prepare an OpenStack SQLite database for a long-lived test stack.

usage: sqlite_prep.py DB [--cascade]
  - journal_mode=WAL: readers and the writer stop failing with "database is locked" (stored in the file).
  - --cascade: emulate every `FOREIGN KEY ... ON DELETE CASCADE` with an AFTER DELETE trigger, and drop
    rows already orphaned. oslo.db leaves SQLite's foreign_keys pragma off, so Keystone's bulk deletes
    (a user's or an application credential's) keep the child rows; SQLite then reuses the parent's
    integer id, and the next application credential fails with 409 "Duplicate entry". Idempotent."""
import sqlite3
import sys
from collections import defaultdict


def q(name):
    return '"' + name.replace('"', '""') + '"'


def cascade(db):
    tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    for child in tables:
        fks = defaultdict(list)   # fk id -> [(parent, from, to, on_delete)]
        for fk_id, _seq, parent, col_from, col_to, _upd, on_delete, _m in db.execute(
                f"PRAGMA foreign_key_list({q(child)})"):
            fks[fk_id].append((parent, col_from, col_to, on_delete))
        for fk_id, cols in fks.items():
            parent, on_delete = cols[0][0], cols[0][3]
            if on_delete != "CASCADE":
                continue
            match_old = " AND ".join(f"{q(f)} = OLD.{q(t)}" for _, f, t, _ in cols)
            match_parent = " AND ".join(f"p.{q(t)} = c.{q(f)}" for _, f, t, _ in cols)
            not_null = " AND ".join(f"c.{q(f)} IS NOT NULL" for _, f, _, _ in cols)
            db.execute(f"CREATE TRIGGER IF NOT EXISTS {q(f'cascade_{parent}_{child}_{fk_id}')} "
                       f"AFTER DELETE ON {q(parent)} BEGIN DELETE FROM {q(child)} WHERE {match_old}; END")
            n = db.execute(f"DELETE FROM {q(child)} AS c WHERE {not_null} AND NOT EXISTS "
                           f"(SELECT 1 FROM {q(parent)} AS p WHERE {match_parent})").rowcount
            if n:
                print(f"{child}: removed {n} orphaned rows")


def main():
    db = sqlite3.connect(sys.argv[1], isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    if "--cascade" in sys.argv[2:]:
        db.execute("BEGIN")
        cascade(db)
        db.execute("COMMIT")


if __name__ == "__main__":
    main()
