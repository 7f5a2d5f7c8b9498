import time
from pathlib import Path

import sqlalchemy as sa

from pocketcode.db.engine import Database
from pocketcode.services.jobs import JobService
from pocketcode.services.sessions import SessionService


def test_statements(db: Database, tmp_path: Path) -> None:
    project = tmp_path / "p"
    project.mkdir()
    sid = SessionService(db, [tmp_path]).create(str(project)).id
    jobs = JobService(db)
    jobs.enqueue_and_list(sid, "warm")
    seen = []

    def before(conn, cursor, statement, params, context, executemany):
        seen.append((time.perf_counter(), statement.split("\n")[0][:100]))

    sa.event.listen(db.engine, "before_cursor_execute", before)
    t0 = time.perf_counter()
    jobs.enqueue_and_list(sid, "hello")
    t1 = time.perf_counter()
    sa.event.remove(db.engine, "before_cursor_execute", before)
    for t, s in seen:
        print(f"{(t - t0) * 1000:7.2f} {s}")
    print(f"total {(t1 - t0) * 1000:.2f} ms")
    t0 = time.perf_counter()
    for _ in range(50):
        jobs.enqueue_and_list(sid, "x")
    print(f"avg {(time.perf_counter() - t0) * 20:.2f} ms")
