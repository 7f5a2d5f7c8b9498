"""A credential revoked by another process sharing the database (the `pocketcode` CLI, a
second server) is forgotten by a server's credential cache at once: SQLite through a file
beside the database, PostgreSQL through NOTIFY and the event bus. The server's cache runs on
a clock that never moves here, so only the announcement can end a cached credential."""

from __future__ import annotations

import asyncio
import contextlib
import stat
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from pocketcode.db.engine import Database
from pocketcode.services.auth import (
    AuthService,
    CredentialCache,
    Identity,
    revocation_marker,
)
from pocketcode.services.events import EventBus
from pocketcode.services.secrets import Keyring, generate_key

PASSWORD = "revocation-password-canary-81f3"
NEW_PASSWORD = "revocation-password-canary-new-2c9a"

pytestmark = pytest.mark.timeout(60)


class FrozenClock:
    def __call__(self) -> float:
        return 1000.0


def _service(db: Database, keyring: Keyring, **kwargs: object) -> AuthService:
    return AuthService(
        db,
        keyring,
        hasher=PasswordHasher(time_cost=1, memory_cost=8, parallelism=1),
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture
def keyring() -> Keyring:
    return Keyring([generate_key().encode()], "test")


@pytest.fixture
def server(db: Database, keyring: Keyring) -> AuthService:
    """A server's AuthService: it caches, on a clock that never moves."""
    return _service(
        db, keyring, cache_credentials=True, credential_cache=CredentialCache(clock=FrozenClock())
    )


@pytest.fixture
def elsewhere(db: Database, keyring: Keyring) -> AuthService:
    """Another process's AuthService (the CLI): a cache of its own, so what it forgets in
    its process does not reach the server's."""
    return _service(db, keyring, credential_cache=CredentialCache())


async def _forgotten(db: Database, gone: Callable[[], bool]) -> None:
    """SQLite: forgotten by the very next look-up. PostgreSQL: once the notification has
    reached the server's listening connection (milliseconds; 5 s at most here)."""
    if db.is_sqlite:
        assert gone()
        return
    deadline = time.monotonic() + 5
    while not gone():
        assert time.monotonic() < deadline, "the revocation was not heard"
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def _listening(db: Database, server: AuthService) -> AsyncIterator[None]:
    """The server's event bus, forgetting into its cache what other processes revoke."""
    bus = EventBus(db)
    bus.when_revoked(server.credentials.invalidate)
    await bus.start()
    try:
        yield
    finally:
        await bus.stop()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_token_revoked_elsewhere_is_forgotten_at_once(
    db: Database, server: AuthService, elsewhere: AuthService, anyio_backend: str
) -> None:
    async with _listening(db, server):
        user = elsewhere.create_user("owner", PASSWORD)
        kept, revoked = (elsewhere.create_token(user.id, name) for name in ("laptop", "phone"))
        for made in (kept, revoked):
            assert server.authenticate_token(made.token) == Identity(
                user.id, api_token_id=made.info.id
            )
            assert server.cached_identity(made.token, "token") is not None

        elsewhere.revoke_token(user.id, revoked.info.id)

        await _forgotten(db, lambda: server.cached_identity(revoked.token, "token") is None)
        assert server.authenticate_token(revoked.token) is None
        # The others are checked again, and still valid.
        assert server.authenticate_token(kept.token) is not None


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_password_changed_elsewhere_ends_cached_logins_at_once(
    db: Database, server: AuthService, elsewhere: AuthService, anyio_backend: str
) -> None:
    async with _listening(db, server):
        user = elsewhere.create_user("owner", PASSWORD)
        login = server.login("owner", PASSWORD)
        assert server.authenticate_session(login.token) is not None
        assert server.cached_identity(login.token, "session") is not None

        assert elsewhere.change_password(user.id, NEW_PASSWORD, current_password=None) == 1

        await _forgotten(db, lambda: server.cached_identity(login.token, "session") is None)
        assert server.authenticate_session(login.token) is None


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_logout_elsewhere_is_forgotten_at_once(
    db: Database, server: AuthService, elsewhere: AuthService, anyio_backend: str
) -> None:
    """A second server answering the same browser's logout."""
    async with _listening(db, server):
        elsewhere.create_user("owner", PASSWORD)
        login = server.login("owner", PASSWORD)
        assert server.authenticate_session(login.token) is not None

        elsewhere.logout(login.session_id)

        await _forgotten(db, lambda: server.cached_identity(login.token, "session") is None)
        assert server.authenticate_session(login.token) is None


def test_without_an_announcement_the_cache_keeps_a_credential(
    db: Database, server: AuthService, elsewhere: AuthService
) -> None:
    """The counter-check of the tests above: the frozen clock keeps a cached credential for
    as long as nothing is announced, so only the announcement ended it there."""
    user = elsewhere.create_user("owner", PASSWORD)
    made = elsewhere.create_token(user.id, "phone")
    assert server.authenticate_token(made.token) is not None
    other = elsewhere.create_token(user.id, "other")  # a write, but no revocation
    assert other.token != made.token
    assert server.cached_identity(made.token, "token") is not None


def test_on_sqlite_the_announcement_is_a_private_file_beside_the_database(
    db: Database, elsewhere: AuthService
) -> None:
    user = elsewhere.create_user("owner", PASSWORD)
    elsewhere.revoke_token(user.id, elsewhere.create_token(user.id, "phone").info.id)
    marker = revocation_marker(db)
    if not db.is_sqlite:
        assert marker is None  # PostgreSQL: NOTIFY, no file
        return
    database = Path(str(db.engine.url.database))
    assert marker == database.parent / f"{database.name}-revocations"
    assert stat.S_IMODE(marker.stat().st_mode) == 0o600
    assert marker.read_bytes() == b"\n"  # one byte per revocation: its size only grows


def test_a_check_that_began_before_a_revocation_is_not_cached() -> None:
    """A request read a credential, then a revocation was heard, then the request put what
    it read: the put is dropped (else the revoked credential would live on in the cache)."""
    cache = CredentialCache(clock=FrozenClock())
    identity = Identity(uuid.uuid4(), api_token_id=uuid.uuid4())
    for forget in (cache.invalidate, lambda: cache.forget(lambda _: False)):
        began = cache.epoch
        forget()
        cache.put("h", identity, expires_in=None, epoch=began)
        assert cache.get("h") is None
    cache.put("h", identity, expires_in=None, epoch=cache.epoch)
    assert cache.get("h") == identity
