"""Files tracked for a session (seed 000 `files`): one row per session and relative path."""

from __future__ import annotations

import mimetypes
import uuid

import sqlalchemy as sa

from pocketcode.db.engine import Database
from pocketcode.db.tables import FileRow
from pocketcode.db.types import utcnow
from pocketcode.domain.errors import InvalidInput, NotFound
from pocketcode.services.paths import normalise_relative_path
from pocketcode.services.sessions import load_session

MAX_TRACKED_CONTENT_BYTES = 5 * 1024 * 1024


def guess_mime_type(path: str) -> str:
    guessed, _ = mimetypes.guess_type(path, strict=False)
    return guessed or "text/plain"


class FileService:
    def __init__(self, db: Database) -> None:
        self.db = db

    def track(
        self,
        session_id: uuid.UUID,
        path: str,
        content: str | None,
        *,
        mime_type: str | None = None,
        encoding: str = "utf-8",
    ) -> FileRow:
        """Store or replace the tracked content of `path` (relative to the project)."""
        clean = normalise_relative_path(path)
        size = len(content.encode(encoding)) if content is not None else None
        if size is not None and size > MAX_TRACKED_CONTENT_BYTES:
            raise InvalidInput(f"file content is larger than {MAX_TRACKED_CONTENT_BYTES} bytes")
        with self.db.write() as session:
            load_session(session, session_id, lock=True)
            row = session.scalar(
                sa.select(FileRow).where(FileRow.session_id == session_id, FileRow.path == clean)
            )
            if row is None:
                row = FileRow(session_id=session_id, path=clean)
                session.add(row)
            row.content = content
            row.encoding = encoding
            row.size = size
            row.mime_type = mime_type or guess_mime_type(clean)
            row.updated_at = utcnow()
        return row

    def list_files(self, session_id: uuid.UUID) -> list[FileRow]:
        with self.db.read() as session:
            load_session(session, session_id)
            return list(
                session.scalars(
                    sa.select(FileRow)
                    .where(FileRow.session_id == session_id)
                    .order_by(FileRow.path)
                ).all()
            )

    def get(self, session_id: uuid.UUID, path: str) -> FileRow:
        clean = normalise_relative_path(path)
        with self.db.read() as session:
            row = session.scalar(
                sa.select(FileRow).where(FileRow.session_id == session_id, FileRow.path == clean)
            )
        if row is None:
            raise NotFound(f"file {clean!r} is not tracked in session {session_id}")
        return row

    def delete(self, session_id: uuid.UUID, path: str) -> None:
        clean = normalise_relative_path(path)
        with self.db.write() as session:
            result = session.execute(
                sa.delete(FileRow).where(FileRow.session_id == session_id, FileRow.path == clean)
            )
            if result.rowcount == 0:  # type: ignore[attr-defined]
                raise NotFound(f"file {clean!r} is not tracked in session {session_id}")
