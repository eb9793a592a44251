"""`Gallery.compact` on a PostgreSQL gallery whose role may rewrite its tables but not retire the WAL: the tables
are rewritten, and the report says what still keeps the deleted faces' bytes instead of claiming erasure."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import psycopg

from index import Gallery, NewFace


def test_compact_without_wal_privileges_reports_what_is_left(tmp_path: Path, pg_cluster) -> None:  # type: ignore[no-untyped-def]
    url = pg_cluster.new_database()
    database, role = url.rsplit("/", 1)[1], "owner_" + uuid.uuid4().hex[:8]
    with psycopg.connect(pg_cluster.url(), autocommit=True) as c:
        c.execute(f"CREATE ROLE {role} LOGIN")
        c.execute(f"ALTER DATABASE {database} OWNER TO {role}")
    try:
        g = Gallery(tmp_path, dim=8, model_version="m1", database_url=url.replace("//postgres@", f"//{role}@"))
        v = np.eye(8, dtype=np.float32)
        ids = g.add_many([(f"p{i}", NewFace(x)) for i, x in enumerate(v)])
        g.delete_face(ids[0])
        report = g.compact()
        store = report["store"]
        assert store["tables"].startswith("rewritten") and store["wal"] == "not retired", store
        assert len(store["left"]) == 1 and "pg_checkpoint" in store["left"][0], store
        assert g.count() == (8, 7) and g.verify()["ok"]  # identities, faces
        g.close()
    finally:
        pg_cluster.drop_database(url)
        with psycopg.connect(pg_cluster.url(), autocommit=True) as c:
            c.execute(f"DROP ROLE {role}")
