"""SQLite's write-ahead log is checkpointed in the background, so it stays small while the
server writes, without any commit paying for the checkpoint."""

from __future__ import annotations

import time
from pathlib import Path

from pocketcode.db import migrate
from pocketcode.db.engine import CHECKPOINT_INTERVAL, Database, create_db_engine
from pocketcode.domain.states import MessageType
from pocketcode.services.messages import MessageService, NewMessage
from pocketcode.services.sessions import SessionService


def test_the_wal_stays_bounded_while_writing(tmp_path: Path) -> None:
    path = tmp_path / "wal.db"
    db = Database(create_db_engine(f"sqlite:///{path}", pool_size=4))
    try:
        migrate.upgrade(db)
        session = SessionService(db, [tmp_path]).create(str(tmp_path))
        messages = MessageService(db)
        wal = path.with_name(path.name + "-wal")
        sizes = []
        for _ in range(4):
            for _ in range(100):
                messages.append_many(session.id, [NewMessage(MessageType.ASSISTANT, "x" * 8000)])
            sizes.append(wal.stat().st_size)
            time.sleep(CHECKPOINT_INTERVAL * 1.5)
        # Without checkpoints the log would grow by a burst's pages each time (4x the first
        # size); checkpointed between bursts, it is reused from its start.
        assert sizes[0] > 1_000_000
        assert max(sizes) < sizes[0] * 1.5, sizes
        assert messages.count(session.id) == 400
    finally:
        db.dispose()
