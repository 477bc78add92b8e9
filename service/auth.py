"""Node credentials: scrypt hashes at rest, Basic auth on the wire, a cache of verified headers,
a guard against guessing passwords, and the login policy that puts them together
(:func:`authenticate`, the node protocol's).

scrypt is slow on purpose, so a header that verified once is remembered under a keyed hash
(keyed BLAKE2b with a per-process key) together with the password hash it matched. A steady swarm
costs one scrypt per node per process. Changing or removing a node's password changes the
hash the request reads from the journal, so the remembered success no longer applies.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict, deque
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Awaitable, Callable, Optional

if TYPE_CHECKING:
    import asyncio  # imported where a login waits for its hash: the CLI does without it (~50 ms a start)

    from aiohttp import BasicAuth  # imported where a header is parsed: the CLI does without aiohttp

    from .storage import NodeAuth

# Two costs, one format (``scrypt$n$r$p$salt$key``: every hash carries its parameters, so hashes made
# with other ones, older tswarm's included, keep verifying). Why two, in benchmarks/README.md
# ("Cold start"):
SCRYPT_N = 2**13  # a password a person chose (`--password`, the admin API's "password"): ~23 ms and 8 MiB a hash
# A password generate_password made: 144 random bits cannot be guessed at any speed (2^143 tries on
# average), so its hash needs no work factor, only to be one-way and salted; n=2^4 (16 KiB) costs
# about 0.1 ms, and a cold start of 10,000 such nodes no longer waits for 10,000 memory-hard hashes.
SCRYPT_N_GENERATED = 2**4
GENERATED_BITS = 144  # what generate_password draws (18 bytes); SCRYPT_N_GENERATED rests on it
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
KEY_BYTES = 32
REALM = 'Basic realm="tswarm"'


def generate_password() -> str:
    """A strong random password (144 bits), safe in JSON and in Basic auth."""
    return secrets.token_urlsafe(GENERATED_BITS // 8)


def hash_password(password: str, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """``password``'s salted scrypt hash, its parameters recorded in it. ``n``: :data:`SCRYPT_N` for a
    password a person chose, :data:`SCRYPT_N_GENERATED` for one :func:`generate_password` made
    (tswarm.nodes.register decides)."""
    salt = secrets.token_bytes(SALT_BYTES)
    key = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=256 * n * r * 2, dklen=KEY_BYTES)
    b64 = lambda b: base64.b64encode(b).decode("ascii")  # noqa: E731
    return f"scrypt${n}${r}${p}${b64(salt)}${b64(key)}"


def verify_password(password: str, stored: str) -> bool:
    """Constant-time check of ``password`` against a hash made by :func:`hash_password`. A password
    with a NUL is no node's (tswarm.nodes refuses one): scrypt's HMAC would take ``"pw\\x00"`` for ``"pw"``."""
    if "\x00" in password:
        return False
    try:
        scheme, n, r, p, salt, key = stored.split("$")
        if scheme != "scrypt":
            return False
        n, r, p = int(n), int(r), int(p)
        salt, key = base64.b64decode(salt), base64.b64decode(key)
    except (ValueError, binascii.Error):
        return False
    candidate = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=256 * n * r * 2, dklen=len(key)
    )
    return hmac.compare_digest(candidate, key)


def xauth(login: str, password: str) -> str:
    """The firmware's ``xauth``: what follows ``Basic`` in its Authorization header."""
    return base64.b64encode(f"{login}:{password}".encode("utf-8")).decode("ascii")


class BadAuthorization(ValueError):
    pass


def parse_basic(header: Optional[str]) -> BasicAuth:
    """Decode an Authorization header. Surrounding white space and any case of ``Basic`` are
    accepted, as the seed firmware sends ``' Basic %s'``."""
    if not header or not header.strip():
        raise BadAuthorization("no Authorization header; send 'Authorization: Basic base64(login:password)'")
    scheme, _, credentials = header.strip().partition(" ")
    if scheme.lower() != "basic":
        raise BadAuthorization("Authorization must use the Basic scheme")
    from aiohttp import BasicAuth  # here, not above: the CLI hashes passwords without loading aiohttp

    try:
        return BasicAuth.decode(f"Basic {credentials.strip()}", encoding="utf-8")
    except (ValueError, UnicodeDecodeError):
        raise BadAuthorization("Authorization is not base64(login:password)") from None


class CredentialCache:
    """Remembers which Authorization values verified, keyed by a MAC so no secret sits in memory as is:
    keyed BLAKE2b (``hashlib.blake2b(key=...)``, a MAC by its design, built into Python) with a random
    key of this process. Not ``hmac.digest``: OpenSSL's HMAC lets go of the GIL on every call, which on
    the event loop hands the GIL to the journal's writer thread and waits to get it back, about 100 µs
    a request in the running service; BLAKE2b keeps the GIL for inputs under 2 KiB
    (benchmarks/gil.py, benchmarks/README.md "This stop's steps")."""

    def __init__(self, max_entries: int = 100_000):
        self._key = secrets.token_bytes(32)
        self._entries: OrderedDict[bytes, tuple[str, str]] = OrderedDict()
        self._inflight: dict[bytes, asyncio.Future] = {}
        self.max_entries = max_entries
        self.hits = 0
        self.misses = 0

    def key(self, header: str) -> bytes:
        return hashlib.blake2b(header.strip().encode("utf-8", "surrogateescape"), key=self._key, digest_size=32).digest()

    def entry(self, key: bytes) -> Optional[tuple[str, str]]:
        """``(login, password_hash)`` the header of this :meth:`key` verified against, or None."""
        return self._entries.get(key)

    def known(self, header: str, login: str, password_hash: str) -> bool:
        """True when this exact header already verified against this password hash."""
        return self.entry(self.key(header)) == (login, password_hash)

    def hit(self, key: bytes) -> None:
        """A login :meth:`entry` answered: counted, and its entry kept longest."""
        self.hits += 1
        self._entries.move_to_end(key)

    async def verify(self, header: str, login: str, password: str, password_hash: str, executor: Optional[Executor]) -> bool:
        """True when ``password`` matches ``password_hash``; scrypt runs in ``executor``, once per header."""
        key = self.key(header)
        if self.entry(key) == (login, password_hash):
            self.hit(key)
            return True
        self.misses += 1
        import asyncio

        inflight = self._inflight.get(key)
        if inflight is None:
            loop = asyncio.get_running_loop()
            inflight = loop.run_in_executor(executor, verify_password, password, password_hash)
            self._inflight[key] = inflight
            inflight.add_done_callback(lambda _f, k=key: self._inflight.pop(k, None))
        ok = await asyncio.shield(inflight)
        if ok:
            self._entries[key] = (login, password_hash)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return ok

    def forget(self, login: str) -> None:
        for key in [k for k, (name, _) in self._entries.items() if name == login]:
            del self._entries[key]


GUARD_MAX_ADDRESSES = 100_000  # addresses the guard follows at once, failing or blocked


class LoginGuard:
    """Counts failed logins per client address; too many within ``window`` seconds blocks that
    address for ``window`` seconds (answered 429 with Retry-After). Other addresses are unaffected."""

    def __init__(self, max_failures: int = 30, window: float = 60.0, clock=time.monotonic):
        self.max_failures = max_failures
        self.window = window
        self.clock = clock
        self._failures: dict[str, deque] = {}
        self._blocked_until: dict[str, float] = {}

    def retry_after(self, address: str) -> int:
        """Seconds this address must wait, or 0."""
        until = self._blocked_until.get(address)
        if until is None:
            return 0
        remaining = until - self.clock()
        if remaining <= 0:
            del self._blocked_until[address]
            return 0
        return max(1, int(remaining + 0.999))

    def failed(self, address: str) -> None:
        now = self.clock()
        failures = self._failures.pop(address, None) or deque()
        self._failures[address] = failures  # re-inserted: the dict stays in the order of each address's last failure
        failures.append(now)
        while failures[0] <= now - self.window:
            failures.popleft()
        if len(failures) >= self.max_failures:
            self._blocked_until.pop(address, None)
            self._blocked_until[address] = now + self.window  # in the order the blocks end
            failures.clear()
        self._forget(now)

    def _forget(self, now: float) -> None:
        """Drop what no longer counts, oldest first (both dicts are in time order): addresses whose
        last failure left the window, blocks that ended, and beyond :data:`GUARD_MAX_ADDRESSES` the
        oldest (a flood from many addresses, an IPv6 prefix, costs bounded memory and no scan)."""
        horizon = now - self.window
        failures, blocked = self._failures, self._blocked_until
        while failures:
            oldest = next(iter(failures))
            times = failures[oldest]
            if times and times[-1] > horizon and len(failures) <= GUARD_MAX_ADDRESSES:
                break
            del failures[oldest]
        while blocked:
            oldest = next(iter(blocked))
            if blocked[oldest] > now and len(blocked) <= GUARD_MAX_ADDRESSES:
                break
            del blocked[oldest]


# -- the login policy ----------------------------------------------------------------------------


class LoginRefused(Exception):
    """A login the policy turns away, as its answer: ``status``, ``error`` code, ``detail`` and ``headers``
    (the handler makes the JSON body of them: service/errors.py's ``json_error``)."""

    def __init__(self, status: int, error: str, detail: str, headers: Optional[dict[str, str]] = None):
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = headers or {}


def too_many_failures(wait: int) -> LoginRefused:
    """The 429 of an address the guard blocks, node or bearer token alike."""
    return LoginRefused(
        429, "too_many_failures", f"too many failed logins from this address; retry in {wait} s",
        {"Retry-After": str(wait)},
    )


async def authenticate(
    header: Optional[str],
    peer: str,
    node_name: str,
    *,
    lookup: Callable[[str], Awaitable[Optional[NodeAuth]]],
    cache: CredentialCache,
    guard: LoginGuard,
    hasher: Optional[Executor],
) -> NodeAuth:
    """The node behind a request's ``Authorization`` ``header`` to ``/api/nodes/{node_name}``, or
    :class:`LoginRefused`: 429 while the guard blocks ``peer``, 401 (a failed login of ``peer``) for
    a missing or bad header, an unknown login or a wrong password, 403 for another node's credentials.

    ``lookup(login)`` gives the node's record (a password changed or a node removed elsewhere
    applies at once: the service's lookup answers on the event loop from a snapshot that any change
    clears, service/storage/snapshot.py, and reads the storage only on a miss); before a 401 is given,
    ``lookup(login, fresh=True)`` reads it once more past any such cache, so a refusal never rests
    on a change another process made a moment ago (a new password that is not announced yet).
    scrypt runs in ``hasher``, once per header and password hash (the cache).

    A header that verified before against the password hash its login's record still has is
    answered from the cache alone: not decoded again, no scrypt, whatever the guard says (it guesses
    nothing). Every other header takes the whole way below."""
    if header:
        key = cache.key(header)
        seen = cache.entry(key)
        if seen is not None:
            login, password_hash = seen
            node = await lookup(login)
            if node is not None and node.password_hash == password_hash:
                cache.hit(key)
                if login != node_name:
                    raise _wrong_node()
                return node
    try:
        credentials = parse_basic(header)
    except BadAuthorization as exc:
        credentials, node, problem = None, None, str(exc)
    else:
        node, problem = await lookup(credentials.login), "unknown login or wrong password"

    # A blocked address may still send a header that already verified (a valid node behind the same
    # NAT as a guesser): that costs no scrypt and guesses nothing. Anything else waits.
    wait = guard.retry_after(peer)
    if wait and not (node and cache.known(header, node.name, node.password_hash)):
        raise too_many_failures(wait)
    verified = node is not None and await cache.verify(
        header, credentials.login, credentials.password, node.password_hash, hasher)
    if not verified and credentials is not None:
        recheck = await lookup(credentials.login, fresh=True)
        if recheck != node:  # the cached record was behind the database
            node = recheck
            verified = node is not None and await cache.verify(
                header, credentials.login, credentials.password, node.password_hash, hasher)
    if not verified:
        guard.failed(peer)
        raise LoginRefused(401, "unauthorized", problem, {"WWW-Authenticate": REALM})
    if credentials.login != node_name:
        raise _wrong_node()
    return node


def _wrong_node() -> LoginRefused:
    return LoginRefused(403, "wrong_node", "these credentials belong to another node; a node sends and reads only as itself")
