"""Mobile clients that report in through `POST /api/connect` (PokéCode's devices)."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from pocketcode.db.engine import Database
from pocketcode.db.tables import DeviceRow
from pocketcode.db.types import utcnow
from pocketcode.domain.errors import InvalidInput

PLATFORMS = frozenset({"ios", "android"})
MAX_PAGE = 200


class DeviceService:
    def __init__(self, db: Database) -> None:
        self.db = db

    def connect(
        self,
        device_id: str,
        device_name: str,
        *,
        platform: str | None = None,
        app_version: str | None = None,
    ) -> DeviceRow:
        """Record that the device is alive (insert or update)."""
        name = device_name.strip()
        if not 1 <= len(device_id) <= 128 or not 1 <= len(name) <= 128:
            raise InvalidInput("device_id and device_name must be 1 to 128 characters")
        if platform is not None and platform not in PLATFORMS:
            raise InvalidInput("platform must be ios or android")
        if app_version is not None and len(app_version) > 64:
            raise InvalidInput("app_version is at most 64 characters")
        for text in (device_id, name, app_version or ""):
            if "\x00" in text:
                raise InvalidInput("device fields may not contain NUL characters")
        # Two first connects of one device may race on PostgreSQL: the loser updates.
        for attempt in range(2):
            try:
                with self.db.write() as session:
                    now = utcnow()
                    row = session.get(DeviceRow, device_id)
                    if row is None:
                        row = DeviceRow(device_id=device_id, created_at=now)
                        session.add(row)
                    row.device_name = name
                    row.platform = platform
                    row.app_version = app_version
                    row.last_connected_at = now
                    row.updated_at = now
                return row
            except IntegrityError:
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def list_active(
        self, *, active_within_seconds: int = 3600, limit: int = 100, offset: int = 0
    ) -> tuple[list[DeviceRow], int]:
        """Devices seen within the window, most recent first, and how many there are."""
        if not 1 <= active_within_seconds <= 86400:
            raise InvalidInput("activeWithinSeconds must be between 1 and 86400")
        if not 1 <= limit <= MAX_PAGE or offset < 0:
            raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}, offset not negative")
        since = utcnow() - timedelta(seconds=active_within_seconds)
        condition = DeviceRow.last_connected_at >= since
        with self.db.read() as session:
            total = session.scalar(
                sa.select(sa.func.count()).select_from(DeviceRow).where(condition)
            )
            rows = session.scalars(
                sa.select(DeviceRow)
                .where(condition)
                .order_by(DeviceRow.last_connected_at.desc(), DeviceRow.device_id)
                .limit(limit)
                .offset(offset)
            ).all()
        return list(rows), int(total or 0)
