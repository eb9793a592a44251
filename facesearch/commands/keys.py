"""`facesearch keys create|list|revoke`: the API keys kept in the gallery's store (SQLite under --data-dir, or
PostgreSQL at FACESEARCH_DATABASE_URL), effective at once on every replica, without a restart.

    facesearch keys create --role search|enroll|admin [--collection C ...]   # prints the new key, once
    facesearch keys list [--json]                                            # id, role, collections, dates; no key
    facesearch keys revoke ID

Roles: search (search, verify, embed, find photos, read), enroll (and enroll, index photos, name and merge),
admin (and delete, export, audit). A key limited to collections is refused (403) elsewhere. Keys in
FACESEARCH_API_KEYS stay admin keys of every collection.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

from facesearch.settings import Settings
from index import keys
from index.config import open_store
from index.errors import NotFound


def when(t: float | None) -> str:
    return "-" if t is None else datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="facesearch keys", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, help="the gallery's folder (default: FACESEARCH_DATA_DIR)")
    sub = p.add_subparsers(dest="action", required=True)
    create = sub.add_parser("create", help="a new key (printed once)")
    create.add_argument("--role", required=True, choices=keys.ROLES)
    create.add_argument("--collection", action="append", default=[], help="limit the key to this collection "
                                                                          "(repeat for several; default: all)")
    listing = sub.add_parser("list", help="every key: id, role, collections, created, last used, revoked")
    listing.add_argument("--json", action="store_true")
    revoke = sub.add_parser("revoke", help="refuse a key from now on (every replica within a second)")
    revoke.add_argument("id")
    a = p.parse_args(argv)
    s = Settings(**({"data_dir": a.data_dir} if a.data_dir else {}))
    if not s.database_url:
        s.data_dir.mkdir(parents=True, exist_ok=True)  # keys may be made before the service first starts
    store = open_store(s.data_dir, s.database_url, 2)
    try:
        if a.action == "create":
            key, record = keys.create(store, a.role, a.collection)
            print(f"{key}\t{record.id}\t{record.role}\t{','.join(record.collections) or '*'}")
            print("the key is shown this once: keep it now", file=sys.stderr)
        elif a.action == "list":
            records = keys.listed(store)
            if a.json:
                print(json.dumps([{"id": r.id, "role": r.role, "collections": list(r.collections),
                                   "created_at": r.created_at, "last_used": r.last_used, "revoked_at": r.revoked_at}
                                  for r in records]))
            for r in [] if a.json else records:
                print(f"{r.id}\t{r.role}\t{','.join(r.collections) or '*'}\tcreated {when(r.created_at)}\t"
                      f"last used {when(r.last_used)}\t" + (f"revoked {when(r.revoked_at)}" if r.revoked_at else
                                                            "active"))
        else:
            keys.revoke(store, a.id)
            print(f"revoked {a.id}")
    except NotFound as e:
        print(f"facesearch keys: {e}", file=sys.stderr)
        return 2
    finally:
        store.close()
    return 0
