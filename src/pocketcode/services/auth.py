"""Accounts and credentials: passwords (argon2id), login sessions, API tokens, TOTP with
recovery codes, and throttling of guesses. No HTTP here: the web layer and the CLI call this.

Secrets handed out (session tokens, API tokens, recovery codes) are random and only their
SHA-256 is stored; a password is only ever stored as an argon2id hash; a TOTP secret is stored
encrypted with the keyring. Nothing in this module logs a secret or a code.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

import pyotp
import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy.orm import Session

from pocketcode.db.engine import Database
from pocketcode.db.tables import ApiTokenRow, AuthFailureRow, LoginSessionRow, UserRow
from pocketcode.db.types import utcnow
from pocketcode.domain.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    TooManyAttempts,
    TotpRequired,
    Unauthenticated,
)
from pocketcode.domain.ids import parse_id
from pocketcode.services.events import REVOCATIONS_CHANNEL
from pocketcode.services.secrets import Keyring

log = logging.getLogger(__name__)

PASSWORD_MIN_LENGTH = 12
PASSWORD_MAX_LENGTH = 1024  # argon2 hashes anything, but a megabyte "password" is a DoS
USERNAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
TOKEN_PREFIX = "pct_"  # noqa: S105 - a marker, not a secret
TOKEN_DISPLAY_LENGTH = len(TOKEN_PREFIX) + 8
TOTP_ISSUER = "pocketcode"
TOTP_VALID_WINDOW = 1  # the step before and after: phones' clocks drift
RECOVERY_CODE_COUNT = 10
RECOVERY_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"  # 32 symbols, no 0/o or 1/l to misread
# Writing last_seen/last_used on every request would turn each read into a write.
TOUCH_INTERVAL = timedelta(minutes=1)
# How long a server process trusts a credential it checked without asking the database again
# (the web app's AuthService reads the cache; the CLI's checks every time). A revocation,
# logout or password change made in the same process takes effect at once; one made by another
# process (the `pocketcode token revoke` or `user passwd` CLI, a second server on the same
# PostgreSQL) too, through `RevocationSignal`; should that signal be lost, within this many
# seconds.
CREDENTIAL_CACHE_SECONDS = 5.0
CREDENTIAL_CACHE_SIZE = 1024


CredentialKind = Literal["session", "token"]


def hash_token(token: str) -> str:
    """SHA-256 is enough for random 256-bit tokens (no dictionary to attack, unlike passwords)."""
    return hashlib.sha256(token.encode()).hexdigest()


def normalize_username(username: str) -> str:
    return username.strip().lower()


def check_username(username: str) -> str:
    name = normalize_username(username)
    if not USERNAME_PATTERN.match(name):
        raise InvalidInput(
            "a username is 1 to 64 letters, digits, '.', '_' or '-', starting with a letter "
            "or digit"
        )
    return name


def check_password(password: str) -> None:
    if len(password) < PASSWORD_MIN_LENGTH:
        raise InvalidInput(f"a password needs at least {PASSWORD_MIN_LENGTH} characters")
    if len(password) > PASSWORD_MAX_LENGTH:
        raise InvalidInput(f"a password has at most {PASSWORD_MAX_LENGTH} characters")


def make_password_hasher() -> PasswordHasher:
    """argon2id with the library's (RFC 9106 low-memory) defaults."""
    return PasswordHasher()


class AttemptThrottle:
    """Failures per key in a sliding window, kept in the database so that every server process
    on it counts them together (two servers behind one proxy give an attacker no more tries).
    Exceeding the limit of any key an attempt is counted under refuses further attempts until
    the oldest failure that counts ages out. Keys are stored as SHA-256: a username or an
    address never sits in this table."""

    def __init__(
        self,
        db: Database,
        *,
        limit: int = 5,
        window: float = 900.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.limit = limit
        self.window = window
        self._clock = clock

    @staticmethod
    def _digest(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()

    @contextmanager
    def attempt(self, *keys: str) -> Iterator[Attempt]:
        """One attempt (a password, a one-time code) counted under `keys`: TooManyAttempts if
        a key is over its limit, else the block judges it and calls `Attempt.failed()` if it
        failed. The attempt is counted as a failure *before* it is judged, in the transaction
        that checks the limit, and taken back when the block ends without `failed()`: attempts
        made at once count against each other (checked first and counted after the slow
        password hash, forty guesses sent together all passed the check)."""
        counted = self._count(keys)
        attempt = Attempt()
        try:
            yield attempt
        finally:
            if not attempt.is_failure:
                with self.db.write() as session:
                    session.execute(sa.delete(AuthFailureRow).where(AuthFailureRow.id.in_(counted)))

    def _count(self, keys: tuple[str, ...]) -> list[uuid.UUID]:
        now = self._clock()
        digests = sorted({self._digest(key) for key in keys})
        with self.db.write() as session:
            if not self.db.is_sqlite:
                # SQLite's write transactions are exclusive; PostgreSQL's are not: two attempts
                # under one key take turns between counting and adding.
                for digest in digests:
                    session.execute(
                        sa.select(sa.func.pg_advisory_xact_lock(_THROTTLE_LOCKS, _lock_id(digest)))
                    )
            self._refuse_if_over(session, digests, now)
            # What aged out is of no use to anyone: each attempt sweeps the table.
            session.execute(
                sa.delete(AuthFailureRow).where(
                    AuthFailureRow.failed_at <= now - timedelta(seconds=self.window)
                )
            )
            rows = [AuthFailureRow(id=uuid.uuid4(), key_hash=d, failed_at=now) for d in digests]
            session.add_all(rows)
        return [row.id for row in rows]

    def _refuse_if_over(self, session: Session, digests: list[str], now: datetime) -> None:
        since = now - timedelta(seconds=self.window)
        rows = session.execute(
            sa.select(AuthFailureRow.key_hash, AuthFailureRow.failed_at)
            .where(AuthFailureRow.key_hash.in_(digests), AuthFailureRow.failed_at > since)
            .order_by(AuthFailureRow.failed_at)
        ).all()
        failures: dict[str, list[datetime]] = {}
        for digest, failed_at in rows:
            failures.setdefault(digest, []).append(failed_at)
        wait = 0.0
        for times in failures.values():
            if len(times) >= self.limit:
                ages_out = times[-self.limit] + timedelta(seconds=self.window)
                wait = max(wait, (ages_out - now).total_seconds())
        if wait > 0:
            raise TooManyAttempts(max(1, int(wait + 0.999)))

    def succeeded(self, key: str) -> None:
        """Forget the failures counted under `key` (the right password for this user from
        this address: its earlier typos no longer count)."""
        with self.db.write() as session:
            session.execute(
                sa.delete(AuthFailureRow).where(AuthFailureRow.key_hash == self._digest(key))
            )


class Attempt:
    """What the block of `AttemptThrottle.attempt` says of its attempt."""

    def __init__(self) -> None:
        self.is_failure = False

    def failed(self) -> None:
        self.is_failure = True


# PostgreSQL advisory locks of the throttle: (this namespace, a key's digest folded to 31 bits).
_THROTTLE_LOCKS = 0x7063_7468  # "pcth"


def _lock_id(digest: str) -> int:
    return int(digest[:8], 16) & 0x7FFF_FFFF


@dataclass(frozen=True)
class UserInfo:
    id: uuid.UUID
    username: str
    is_owner: bool
    totp_enabled: bool
    created_at: datetime
    last_login_at: datetime | None


@dataclass(frozen=True)
class NewLogin:
    token: str  # the cookie value; shown to the client once, only its hash is stored
    session_id: uuid.UUID
    user_id: uuid.UUID
    expires_at: datetime


@dataclass(frozen=True)
class Identity:
    """Who a credential belongs to, and which credential it was."""

    user_id: uuid.UUID
    login_session_id: uuid.UUID | None = None
    api_token_id: uuid.UUID | None = None


@dataclass(frozen=True)
class TokenInfo:
    id: uuid.UUID
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None


@dataclass(frozen=True)
class NewToken:
    token: str  # the plaintext, returned once
    info: TokenInfo


@dataclass(frozen=True)
class TotpEnrollment:
    secret: str
    uri: str


class CredentialCache:
    """Credentials this process checked recently: the SHA-256 of a token → its Identity, for
    `CREDENTIAL_CACHE_SECONDS` at most (never past the credential's own expiry). Only valid
    credentials are kept, so guessing fills nothing; at `size` entries the oldest go first.

    `invalidate` (another process revoked something) empties it and moves its `epoch` on: a
    credential read from the database before that is not put back by a late `put`."""

    def __init__(
        self,
        *,
        ttl: float = CREDENTIAL_CACHE_SECONDS,
        size: int = CREDENTIAL_CACHE_SIZE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.size = size
        self._clock = clock
        self._entries: dict[str, tuple[Identity, float]] = {}
        self._lock = threading.Lock()
        self.epoch = 0

    def get(self, token_hash: str) -> Identity | None:
        entry = self._entries.get(token_hash)
        if entry is None:
            return None
        identity, deadline = entry
        if self._clock() >= deadline:
            with self._lock:
                self._entries.pop(token_hash, None)
            return None
        return identity

    def put(
        self, token_hash: str, identity: Identity, *, expires_in: float | None, epoch: int
    ) -> None:
        """Remember a credential just checked; `expires_in`: seconds until it expires; `epoch`:
        the cache's epoch when the check began (the check is dropped if it has moved on)."""
        if self.ttl <= 0:
            return
        lifetime = self.ttl if expires_in is None else min(self.ttl, expires_in)
        with self._lock:
            if epoch != self.epoch:
                return
            while len(self._entries) >= self.size:  # dicts keep insertion order: oldest first
                del self._entries[next(iter(self._entries))]
            self._entries[token_hash] = (identity, self._clock() + lifetime)

    def forget(self, matches: Callable[[Identity], bool]) -> None:
        """Forget the credentials `matches` picks, and drop the checks under way (they may
        have read one of them before its revocation)."""
        with self._lock:
            self.epoch += 1
            for key in [key for key, (identity, _) in self._entries.items() if matches(identity)]:
                del self._entries[key]

    def invalidate(self) -> None:
        """Forget everything, including checks still under way: a credential was revoked
        somewhere, and which one is not known here."""
        with self._lock:
            self.epoch += 1
            self._entries.clear()


class RevocationSignal:
    """Tells the other processes sharing the database that a credential was revoked, so their
    caches forget at once instead of within `CREDENTIAL_CACHE_SECONDS`. PostgreSQL: a NOTIFY on
    `REVOCATIONS_CHANNEL`, which every server's event bus listens for. SQLite (one machine):
    a byte appended to a file beside the database, whose size and inode every look-up in a
    cache compares with what it saw last (one `stat`). `announce` comes after the commit, so a
    process that hears it reads the revocation."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.marker = revocation_marker(db)
        self._seen = self._marker_state()

    def announce(self) -> None:
        """Revoked and committed: tell the others. A failure is logged; the cache's time limit
        still ends the credential in the other processes."""
        try:
            if self.marker is not None:
                fd = os.open(self.marker, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    os.write(fd, b"\n")
                finally:
                    os.close(fd)
            elif not self.db.is_sqlite:
                with self.db.autocommit_connection() as connection:
                    connection.execute(sa.select(sa.func.pg_notify(REVOCATIONS_CHANNEL, "")))
        except (OSError, sa.exc.SQLAlchemyError) as exc:
            log.warning("could not tell other processes of a revocation (%s)", type(exc).__name__)

    def arrived(self) -> bool:
        """Whether another process announced a revocation since the last call (SQLite; on
        PostgreSQL the event bus hears it and invalidates the cache itself)."""
        if self.marker is None:
            return False
        state = self._marker_state()
        if state == self._seen:
            return False
        self._seen = state
        return True

    def _marker_state(self) -> tuple[int, int] | None:
        if self.marker is None:
            return None
        try:
            found = os.stat(self.marker)
        except OSError:
            return None
        return found.st_ino, found.st_size


def revocation_marker(db: Database) -> Path | None:
    """SQLite: the file beside the database that revocations append to (None in memory)."""
    name = db.engine.url.database if db.is_sqlite else None
    if not name or name == ":memory:" or name.startswith("file:"):
        return None
    return Path(f"{name}-revocations")


# One per process: every AuthService of the process forgets what it revokes here, so a token
# revoked through any of them (two apps in one process, the CLI's commands run in-process) is
# refused at once by all of them.
PROCESS_CREDENTIALS = CredentialCache()


def _user_info(row: UserRow) -> UserInfo:
    return UserInfo(
        row.id, row.username, row.is_owner, row.totp_enabled, row.created_at, row.last_login_at
    )


def _token_info(row: ApiTokenRow) -> TokenInfo:
    return TokenInfo(
        row.id, row.name, row.token_prefix, row.created_at, row.last_used_at, row.expires_at
    )


def _new_recovery_code() -> str:
    # 80 random bits: too many to brute-force from the stored SHA-256 if the database leaks.
    raw = "".join(secrets.choice(RECOVERY_ALPHABET) for _ in range(16))
    return "-".join(raw[i : i + 4] for i in range(0, 16, 4))


def _normalize_code(code: str) -> str:
    return "".join(code.split()).replace("-", "").lower()


class AuthService:
    def __init__(
        self,
        db: Database,
        keyring: Keyring,
        *,
        session_ttl: timedelta = timedelta(days=30),
        hasher: PasswordHasher | None = None,
        throttle: AttemptThrottle | None = None,
        clock: Callable[[], float] = time.time,
        cache_credentials: bool = False,
        credential_cache: CredentialCache = PROCESS_CREDENTIALS,
    ) -> None:
        self.db = db
        self.keyring = keyring
        self.session_ttl = session_ttl
        self.hasher = hasher or make_password_hasher()
        self.throttle = throttle or AttemptThrottle(db)
        self._clock = clock  # wall time, for TOTP steps
        self._dummy_hash: str | None = None
        self._create_lock = threading.Lock()
        # Read only with `cache_credentials` (the web app's service), forgotten by every one:
        # see CREDENTIAL_CACHE_SECONDS.
        self.credentials = credential_cache
        self._cache_credentials = cache_credentials
        self.revocations = RevocationSignal(db)

    # --- passwords -----------------------------------------------------------------------

    @property
    def dummy_hash(self) -> str:
        """A real hash of nothing anyone knows: verified for unknown users so that a login
        attempt takes as long whether the username exists or not."""
        if self._dummy_hash is None:
            self._dummy_hash = self.hasher.hash(secrets.token_urlsafe(16))
        return self._dummy_hash

    def _verify_password(self, password_hash: str, password: str) -> bool:
        try:
            return self.hasher.verify(password_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def _rehash_if_needed(self, session: Session, user: UserRow, password: str) -> None:
        try:
            needs = self.hasher.check_needs_rehash(user.password_hash)
        except InvalidHashError:
            needs = True
        if needs:
            user.password_hash = self.hasher.hash(password)

    # --- users ---------------------------------------------------------------------------

    def count_users(self) -> int:
        with self.db.read() as session:
            return int(session.scalar(sa.select(sa.func.count()).select_from(UserRow)) or 0)

    def create_user(self, username: str, password: str, *, only_if_first: bool = False) -> UserInfo:
        """Create an account; the first one is the owner. With `only_if_first`, refuse
        (Conflict) when any account exists: the web setup creates the owner and nothing else."""
        name = check_username(username)
        check_password(password)
        password_hash = self.hasher.hash(password)
        with self._create_lock, self.db.write() as session:
            if self.db.dialect == "postgresql":
                # Two first-run setups at once must not both create an owner.
                session.execute(sa.text("SELECT pg_advisory_xact_lock(7715011)"))
            existing = int(session.scalar(sa.select(sa.func.count()).select_from(UserRow)) or 0)
            if only_if_first and existing:
                raise Conflict("the owner account already exists")
            if session.scalar(sa.select(UserRow.id).where(UserRow.username == name)):
                raise Conflict(f"the user {name!r} already exists")
            row = UserRow(
                username=name,
                password_hash=password_hash,
                is_owner=existing == 0,
                password_changed_at=utcnow(),
            )
            session.add(row)
            session.flush()
            info = _user_info(row)
        log.info("created user %s (owner: %s)", info.id, info.is_owner)
        return info

    def get_user(self, user_id: uuid.UUID) -> UserInfo:
        with self.db.read() as session:
            row = session.get(UserRow, user_id)
            if row is None:
                raise NotFound("user not found")
            return _user_info(row)

    def find_user(self, username: str | None) -> UserInfo:
        """By name, or the owner when `username` is None (what the admin CLI acts on)."""
        with self.db.read() as session:
            query = sa.select(UserRow)
            if username is None:
                query = query.where(UserRow.is_owner).order_by(UserRow.created_at)
            else:
                query = query.where(UserRow.username == normalize_username(username))
            row = session.scalars(query.limit(1)).first()
            if row is None:
                raise NotFound(
                    "no owner account exists (create one with `pocketcode user create`)"
                    if username is None
                    else f"no user named {normalize_username(username)!r}"
                )
            return _user_info(row)

    def owner_id(self) -> uuid.UUID | None:
        with self.db.read() as session:
            return session.scalar(
                sa.select(UserRow.id).where(UserRow.is_owner).order_by(UserRow.created_at).limit(1)
            )

    # --- login sessions ------------------------------------------------------------------

    def login(
        self,
        username: str,
        password: str,
        *,
        ip: str | None = None,
        user_agent: str | None = None,
        totp_code: str | None = None,
        recovery_code: str | None = None,
    ) -> NewLogin:
        name = normalize_username(username)[:64]
        pair_key, ip_key = f"login:{name}:{ip}", f"login-ip:{ip}"
        with self.throttle.attempt(pair_key, ip_key) as attempt:
            with self.db.read() as session:
                user = session.scalar(sa.select(UserRow).where(UserRow.username == name))
                password_hash = user.password_hash if user is not None else self.dummy_hash
            valid = self._verify_password(password_hash, password[:PASSWORD_MAX_LENGTH])
            if user is None or not valid or len(password) > PASSWORD_MAX_LENGTH:
                attempt.failed()
                log.info("failed login attempt")
                raise Unauthenticated("invalid username or password")
            if user.totp_enabled:
                if not totp_code and not recovery_code:
                    raise TotpRequired("a one-time code from your authenticator app is required")
                ok = (
                    self.verify_totp(user.id, totp_code)
                    if totp_code
                    else self.use_recovery_code(user.id, recovery_code or "")
                )
                if not ok:
                    attempt.failed()
                    log.info("failed one-time code for user %s", user.id)
                    raise Unauthenticated("invalid one-time code")
        self.throttle.succeeded(pair_key)
        token = secrets.token_urlsafe(32)
        now = utcnow()
        with self.db.write() as session:
            row = session.get(UserRow, user.id)
            if row is None:
                raise Unauthenticated("invalid username or password")
            self._rehash_if_needed(session, row, password)
            row.last_login_at = now
            login_row = LoginSessionRow(
                user_id=row.id,
                token_hash=hash_token(token),
                ip_address=(ip or None) and ip[:45],
                user_agent=(user_agent or None) and user_agent[:512],
                created_at=now,
                last_seen_at=now,
                expires_at=now + self.session_ttl,
            )
            session.add(login_row)
            session.flush()
            result = NewLogin(token, login_row.id, row.id, login_row.expires_at)
        log.info("user %s logged in (login session %s)", result.user_id, result.session_id)
        return result

    def authenticate_session(self, token: str) -> Identity | None:
        """The user of a live login session, or None; refreshes last_seen_at now and then."""
        if not token:
            return None
        token_hash = hash_token(token)
        cached = self._cached(token_hash, "session")
        if cached is not None:
            return cached
        epoch = self.credentials.epoch
        now = utcnow()
        with self.db.read() as session:
            row = session.scalar(
                sa.select(LoginSessionRow).where(LoginSessionRow.token_hash == token_hash)
            )
            if row is None or row.revoked_at is not None or row.expires_at <= now:
                return None
            identity = Identity(row.user_id, login_session_id=row.id)
            stale = row.last_seen_at <= now - TOUCH_INTERVAL
            expires_in = (row.expires_at - now).total_seconds()
        if stale:
            with self.db.write() as session:
                session.execute(
                    sa.update(LoginSessionRow)
                    .where(LoginSessionRow.id == identity.login_session_id)
                    .values(last_seen_at=now)
                )
        if self._cache_credentials:
            self.credentials.put(token_hash, identity, expires_in=expires_in, epoch=epoch)
        return identity

    def cached_identity(self, token: str, kind: CredentialKind) -> Identity | None:
        """The identity of a session cookie or API token (`kind`) this process checked in the
        last few seconds (`CREDENTIAL_CACHE_SECONDS`), without touching the database; None
        when it has to be checked (`authenticate_session` / `authenticate_token`)."""
        if not token:
            return None
        return self._cached(hash_token(token), kind)

    def _cached(self, token_hash: str, kind: CredentialKind) -> Identity | None:
        if not self._cache_credentials:
            return None
        if self.revocations.arrived():
            self.credentials.invalidate()
        identity = self.credentials.get(token_hash)
        if identity is None:
            return None
        # The same string sent as the other kind of credential is not that credential.
        is_token = identity.api_token_id is not None
        return identity if is_token == (kind == "token") else None

    def logout(self, login_session_id: uuid.UUID) -> None:
        with self.db.write() as session:
            session.execute(
                sa.update(LoginSessionRow)
                .where(LoginSessionRow.id == login_session_id, LoginSessionRow.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
        self.credentials.forget(lambda identity: identity.login_session_id == login_session_id)
        self.revocations.announce()

    def _revoke_sessions(self, session: Session, user_id: uuid.UUID, keep: uuid.UUID | None) -> int:
        query = sa.update(LoginSessionRow).where(
            LoginSessionRow.user_id == user_id, LoginSessionRow.revoked_at.is_(None)
        )
        if keep is not None:
            query = query.where(LoginSessionRow.id != keep)
        result = session.execute(query.values(revoked_at=utcnow()))
        return int(getattr(result, "rowcount", 0) or 0)

    def _forget_sessions(self, user_id: uuid.UUID, keep: uuid.UUID | None) -> None:
        self.credentials.forget(
            lambda identity: (
                identity.user_id == user_id
                and identity.login_session_id is not None
                and identity.login_session_id != keep
            )
        )

    def _check_password_of(self, user_id: uuid.UUID, password: str, key: str, what: str) -> None:
        """Unauthenticated unless `password` is the user's, throttled under `key`."""
        with self.throttle.attempt(key) as attempt:
            with self.db.read() as session:
                row = session.get(UserRow, user_id)
                current_hash = row.password_hash if row is not None else self.dummy_hash
            if not self._verify_password(current_hash, password):
                attempt.failed()
                raise Unauthenticated(f"{what} is wrong")
        self.throttle.succeeded(key)

    def change_password(
        self,
        user_id: uuid.UUID,
        new_password: str,
        *,
        current_password: str | None,
        keep_session: uuid.UUID | None = None,
        ip: str | None = None,
    ) -> int:
        """Set a new password and revoke every other login session of the user; returns how
        many were revoked. `current_password=None` skips the check (the local admin CLI)."""
        check_password(new_password)
        key = f"password:{user_id}:{ip}"
        if current_password is not None:
            self._check_password_of(user_id, current_password, key, "the current password")
        new_hash = self.hasher.hash(new_password)
        with self.db.write() as session:
            row = session.get(UserRow, user_id)
            if row is None:
                raise NotFound("user not found")
            row.password_hash = new_hash
            row.password_changed_at = utcnow()
            revoked = self._revoke_sessions(session, user_id, keep_session)
        # After the commit: `forget` also moves the cache's epoch on, so a check that read a
        # session before the commit does not put it back afterwards.
        self._forget_sessions(user_id, keep_session)
        self.revocations.announce()
        log.info(
            "password changed for user %s; %d other login session(s) revoked", user_id, revoked
        )
        return revoked

    # --- API tokens ----------------------------------------------------------------------

    def create_token(
        self, user_id: uuid.UUID, name: str, *, expires_at: datetime | None = None
    ) -> NewToken:
        label = name.strip()
        if not label or len(label) > 128:
            raise InvalidInput("a token name is 1 to 128 characters")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self.db.write() as session:
            if session.get(UserRow, user_id) is None:
                raise NotFound("user not found")
            row = ApiTokenRow(
                user_id=user_id,
                name=label,
                token_hash=hash_token(token),
                token_prefix=token[:TOKEN_DISPLAY_LENGTH],
                expires_at=expires_at,
            )
            session.add(row)
            session.flush()
            info = _token_info(row)
        log.info("created API token %s for user %s", info.id, user_id)
        return NewToken(token, info)

    def list_tokens(self, user_id: uuid.UUID) -> list[TokenInfo]:
        with self.db.read() as session:
            rows = session.scalars(
                sa.select(ApiTokenRow)
                .where(ApiTokenRow.user_id == user_id, ApiTokenRow.revoked_at.is_(None))
                .order_by(ApiTokenRow.created_at, ApiTokenRow.id)
            )
            return [_token_info(row) for row in rows]

    def revoke_token(self, user_id: uuid.UUID, token_id: uuid.UUID | str) -> None:
        tid = parse_id(token_id, "token")
        with self.db.write() as session:
            result = session.execute(
                sa.update(ApiTokenRow)
                .where(
                    ApiTokenRow.id == tid,
                    ApiTokenRow.user_id == user_id,
                    ApiTokenRow.revoked_at.is_(None),
                )
                .values(revoked_at=utcnow())
            )
            if not getattr(result, "rowcount", 0):
                raise NotFound(f"token {tid} not found")
        self.credentials.forget(lambda identity: identity.api_token_id == tid)
        self.revocations.announce()
        log.info("revoked API token %s", tid)

    def authenticate_token(self, token: str) -> Identity | None:
        if not token.startswith(TOKEN_PREFIX):
            return None
        token_hash = hash_token(token)
        cached = self._cached(token_hash, "token")
        if cached is not None:
            return cached
        epoch = self.credentials.epoch
        now = utcnow()
        with self.db.read() as session:
            row = session.scalar(sa.select(ApiTokenRow).where(ApiTokenRow.token_hash == token_hash))
            if row is None or row.revoked_at is not None:
                return None
            if row.expires_at is not None and row.expires_at <= now:
                return None
            identity = Identity(row.user_id, api_token_id=row.id)
            stale = row.last_used_at is None or row.last_used_at <= now - TOUCH_INTERVAL
            expires_in = (
                (row.expires_at - now).total_seconds() if row.expires_at is not None else None
            )
        if stale:
            with self.db.write() as session:
                session.execute(
                    sa.update(ApiTokenRow)
                    .where(ApiTokenRow.id == identity.api_token_id)
                    .values(last_used_at=now)
                )
        if self._cache_credentials:
            self.credentials.put(token_hash, identity, expires_in=expires_in, epoch=epoch)
        return identity

    # --- TOTP ----------------------------------------------------------------------------

    def enroll_totp(self, user_id: uuid.UUID) -> TotpEnrollment:
        """A new secret, stored encrypted but not active until `confirm_totp`. Refused while
        TOTP is on: replacing a working second factor takes disabling it first."""
        secret = pyotp.random_base32()
        with self.db.write() as session:
            row = session.get(UserRow, user_id)
            if row is None:
                raise NotFound("user not found")
            if row.totp_enabled:
                raise Conflict("two-factor authentication is already on; disable it first")
            row.totp_secret = self.keyring.encrypt(secret)
            row.totp_last_step = None
            username = row.username
        uri = pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=TOTP_ISSUER)
        return TotpEnrollment(secret, uri)

    def confirm_totp(self, user_id: uuid.UUID, code: str, *, ip: str | None = None) -> list[str]:
        """Turn TOTP on once the user proves their app has the secret; returns the recovery
        codes, in plaintext this once."""
        key = f"totp:{user_id}:{ip}"
        with self.throttle.attempt(key) as attempt:
            with self.db.read() as session:
                row = session.get(UserRow, user_id)
                if row is None:
                    raise NotFound("user not found")
                if row.totp_enabled:
                    raise Conflict("two-factor authentication is already on")
                if row.totp_secret is None:
                    raise Conflict("start with enrolling: there is no pending secret")
                pending = row.totp_secret
            if not self._accept_totp(user_id, code, require_enabled=False):
                attempt.failed()
                raise InvalidInput("that code is not valid; check the clock of your device")
        self.throttle.succeeded(key)
        codes = [_new_recovery_code() for _ in range(RECOVERY_CODE_COUNT)]
        with self.db.write() as session:
            row = session.get(UserRow, user_id, with_for_update=True)
            if row is None:
                raise NotFound("user not found")
            if row.totp_enabled or row.totp_secret != pending:
                # Disabled, enrolled again or confirmed by another request meanwhile: turned
                # on now, it could be on with no secret or one the user's app does not have.
                raise Conflict("two-factor setup changed meanwhile: start again with enrolling")
            row.totp_enabled = True
            row.recovery_code_hashes = [hash_token(_normalize_code(c)) for c in codes]
        log.info("two-factor authentication turned on for user %s", user_id)
        return codes

    def disable_totp(
        self, user_id: uuid.UUID, *, password: str | None, ip: str | None = None
    ) -> None:
        """Turn TOTP off. `password=None` skips the check (the local admin CLI)."""
        if password is not None:
            self._check_password_of(user_id, password, f"password:{user_id}:{ip}", "the password")
        with self.db.write() as session:
            row = session.get(UserRow, user_id)
            if row is None:
                raise NotFound("user not found")
            row.totp_enabled = False
            row.totp_secret = None
            row.totp_last_step = None
            row.recovery_code_hashes = []
        log.info("two-factor authentication turned off for user %s", user_id)

    def verify_totp(self, user_id: uuid.UUID, code: str | None) -> bool:
        return bool(code) and self._accept_totp(user_id, code or "", require_enabled=True)

    def _accept_totp(self, user_id: uuid.UUID, code: str, *, require_enabled: bool) -> bool:
        """Accept a code of the current step ± 1 that is newer than the last accepted one, and
        record its step in the same statement that checks it, so a code works exactly once."""
        code = _normalize_code(code)
        # ASCII only: `isdigit` also takes other scripts' digits ("١٢٣٤٥٦"), which no
        # authenticator shows and `compare_digest` refuses to compare.
        if not (code.isascii() and code.isdigit()) or len(code) != 6:
            return False
        with self.db.read() as session:
            row = session.get(UserRow, user_id)
            if row is None or row.totp_secret is None or (require_enabled and not row.totp_enabled):
                return False
            encrypted = row.totp_secret
        totp = pyotp.TOTP(self.keyring.decrypt(encrypted))
        now = self._clock()
        current = totp.timecode(now)
        matched: int | None = None
        for offset in range(-TOTP_VALID_WINDOW, TOTP_VALID_WINDOW + 1):
            step = current + offset
            if hmac.compare_digest(totp.generate_otp(step), code):
                matched = step
        if matched is None:
            return False
        with self.db.write() as session:
            result = session.execute(
                sa.update(UserRow)
                .where(
                    UserRow.id == user_id,
                    sa.or_(UserRow.totp_last_step.is_(None), UserRow.totp_last_step < matched),
                )
                .values(totp_last_step=matched)
            )
            return bool(getattr(result, "rowcount", 0))

    def use_recovery_code(self, user_id: uuid.UUID, code: str) -> bool:
        digest = hash_token(_normalize_code(code))
        with self.db.write() as session:
            row = session.scalar(sa.select(UserRow).where(UserRow.id == user_id).with_for_update())
            if row is None or not row.totp_enabled:
                return False
            remaining = list(row.recovery_code_hashes or [])
            for stored in remaining:
                if hmac.compare_digest(str(stored), digest):
                    remaining.remove(stored)
                    row.recovery_code_hashes = remaining
                    log.info("recovery code used for user %s; %d left", user_id, len(remaining))
                    return True
        return False
