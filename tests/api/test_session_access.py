"""`lastAccessedAt` follows use: opening a session or sending it a prompt makes it recent, so
the list puts it first and `db archive` leaves it alone. Reads write at most once a minute."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa
from fastapi.testclient import TestClient

from pocketcode.db.engine import Database
from pocketcode.db.tables import SessionRow
from pocketcode.db.types import utcnow
from pocketcode.services.operations import archive_sessions
from tests.api.test_sessions_api import create

LONG_AGO = timedelta(days=100)


def age_all(db: Database) -> None:
    with db.write() as session:
        session.execute(sa.update(SessionRow).values(last_accessed_at=utcnow() - LONG_AGO))


def listed(api: TestClient) -> list[str]:
    return [s["id"] for s in api.get("/api/sessions").json()["sessions"]]


def old_ones(db: Database) -> set[str]:
    result = archive_sessions(db, timedelta(days=90), dry_run=True)
    return {str(session_id) for session_id in result.session_ids}


def test_opening_or_prompting_a_session_makes_it_recent(
    api: TestClient, project: Path, db: Database
) -> None:
    opened, messaged, prompted, untouched = (create(api, project)["id"] for _ in range(4))
    age_all(db)
    assert old_ones(db) == {opened, messaged, prompted, untouched}

    assert api.get(f"/api/sessions/{opened}").status_code == 200
    assert api.get(f"/api/sessions/{messaged}/messages").status_code == 200
    response = api.post(f"/api/sessions/{prompted}/messages", json={"content": "hello"})
    assert response.status_code == 202

    assert old_ones(db) == {untouched}
    assert listed(api)[-1] == untouched
    assert set(listed(api)[:3]) == {opened, messaged, prompted}


def test_reads_within_a_minute_do_not_write_again(
    api: TestClient, project: Path, db: Database
) -> None:
    session_id = create(api, project)["id"]
    age_all(db)
    api.get(f"/api/sessions/{session_id}")
    first = api.get(f"/api/sessions/{session_id}").json()["lastAccessedAt"]

    for _ in range(3):
        api.get(f"/api/sessions/{session_id}/messages")
        api.get(f"/api/sessions/{session_id}")

    assert api.get(f"/api/sessions/{session_id}").json()["lastAccessedAt"] == first
