"""Credentials: scrypt at rest, Basic auth as the seed firmware sends it, the verified-header cache, the guard."""
import asyncio
import base64

import pytest

from tswarm import auth
from tswarm.auth import BadAuthorization, CredentialCache, LoginGuard, parse_basic

N = 2**10


def test_hash_is_scrypt_with_a_salt_and_verifies_only_the_right_password():
    h1, h2 = auth.hash_password("pw", n=N), auth.hash_password("pw", n=N)
    assert h1.startswith(f"scrypt${N}$8$1$") and h1 != h2  # per-hash salt
    # The password is not kept: only salt and key, each base64 (which by chance may spell "pw",
    # so the check is on a password base64 cannot spell).
    assert "p w!" not in auth.hash_password("p w!", n=N)
    salt, key = h1.split("$")[4:]
    assert len(base64.b64decode(salt)) >= 16 and len(base64.b64decode(key)) >= 32
    assert auth.verify_password("pw", h1) and auth.verify_password("pw", h2)
    assert not auth.verify_password("pW", h1)
    assert not auth.verify_password("pw", "garbage") and not auth.verify_password("pw", "md5$1$2$3$4$5")


def test_a_password_with_nuls_after_the_right_one_does_not_verify():
    """scrypt's HMAC pads a password with NUL bytes, so hashlib alone takes "pw\\x00" for "pw"."""
    stored = auth.hash_password("pw", n=N)
    assert auth.verify_password("pw", stored)
    for padded in ("pw\x00", "pw\x00\x00", "\x00pw"):
        assert not auth.verify_password(padded, stored)


def test_generated_passwords_are_long_and_distinct():
    passwords = {auth.generate_password() for _ in range(50)}
    assert len(passwords) == 50 and all(len(p) >= 24 for p in passwords)


def test_generated_passwords_carry_the_144_random_bits_their_cheap_hash_rests_on():
    password = auth.generate_password()
    assert auth.GENERATED_BITS == 144 and len(base64.urlsafe_b64decode(password)) * 8 == 144
    assert auth.SCRYPT_N_GENERATED < auth.SCRYPT_N == 2**13


# Made by tswarm before generated and chosen passwords were told apart (and one with an n no longer
# used): a hash carries its parameters, so these keep verifying whatever the defaults are now.
OLD_HASHES = [
    "scrypt$8192$8$1$J2jNH3zgpJjnCrt1KutgWw==$S01XBf/PakDuHcB3tJmnaYszRoTJhiBcEyqHQSVmgsA=",
    "scrypt$16384$8$1$/AjrTV68MM6MMzSc6mPLIg==$yEeH8JC0Mybx/MheAWNOlL3ZfQxew5+jzQ3V3J8ItcU=",
]


@pytest.mark.parametrize("stored", OLD_HASHES, ids=["n=2^13", "n=2^14"])
def test_hashes_made_by_older_tswarm_still_verify(stored):
    assert auth.verify_password("kitchen-pw-from-2025", stored)
    assert not auth.verify_password("kitchen-pw-from-2026", stored)


def test_a_cheap_hash_of_a_generated_password_verifies_like_any_other():
    password = auth.generate_password()
    stored = auth.hash_password(password, n=auth.SCRYPT_N_GENERATED)
    assert stored.split("$")[:4] == ["scrypt", str(auth.SCRYPT_N_GENERATED), "8", "1"]
    assert auth.verify_password(password, stored) and not auth.verify_password(password[:-1], stored)


@pytest.mark.parametrize("header", [" Basic %s", "Basic %s", "basic %s", "BASIC   %s ", "\tBasic %s"])
def test_basic_header_as_firmware_and_people_send_it(header):
    value = header % auth.xauth("kitchen", "s3:cret")
    creds = parse_basic(value)
    assert (creds.login, creds.password) == ("kitchen", "s3:cret")


@pytest.mark.parametrize(
    "header",
    [None, "", "   ", "Bearer abc", "Digest x", "Basic", "Basic !!!notbase64", "Basic " + base64.b64encode(b"nocolon").decode(),
     "Basic " + base64.b64encode(b"\xff\xfe:x").decode()],
)
def test_bad_authorization_headers_are_refused(header):
    with pytest.raises(BadAuthorization):
        parse_basic(header)


async def test_cache_verifies_a_header_once_and_forgets_when_the_hash_changes():
    cache = CredentialCache()
    h = auth.hash_password("pw", n=N)
    header = " Basic " + auth.xauth("a", "pw")
    assert await cache.verify(header, "a", "pw", h, None)
    assert (cache.hits, cache.misses) == (0, 1)
    assert await cache.verify(header, "a", "pw", h, None)
    assert (cache.hits, cache.misses) == (0 + 1, 1)
    new_hash = auth.hash_password("new", n=N)  # password changed: the old header no longer passes
    assert not await cache.verify(header, "a", "pw", new_hash, None)


async def test_concurrent_first_requests_share_one_scrypt(monkeypatch):
    calls = []
    real = auth.verify_password
    monkeypatch.setattr(auth, "verify_password", lambda p, h: calls.append(1) or real(p, h))
    cache = CredentialCache()
    h = auth.hash_password("pw", n=N)
    header = "Basic " + auth.xauth("a", "pw")
    results = await asyncio.gather(*(cache.verify(header, "a", "pw", h, None) for _ in range(20)))
    assert all(results) and len(calls) == 1


async def test_cache_keeps_no_secret_in_memory():
    cache = CredentialCache()
    h = auth.hash_password("pw", n=N)
    header = "Basic " + auth.xauth("a", "pw")
    await cache.verify(header, "a", "pw", h, None)
    assert header.encode() not in repr(cache._entries).encode()
    assert all(len(k) == 32 for k in cache._entries)


def test_guard_blocks_one_address_after_too_many_failures_and_lets_it_go_later():
    now = [1000.0]
    guard = LoginGuard(max_failures=3, window=60, clock=lambda: now[0])
    for _ in range(2):
        guard.failed("10.0.0.1")
    assert guard.retry_after("10.0.0.1") == 0
    guard.failed("10.0.0.1")
    assert guard.retry_after("10.0.0.1") == 60
    assert guard.retry_after("10.0.0.2") == 0  # other addresses unaffected
    now[0] += 59.5
    assert guard.retry_after("10.0.0.1") == 1
    now[0] += 1
    assert guard.retry_after("10.0.0.1") == 0


def test_guard_counts_only_failures_within_the_window():
    now = [0.0]
    guard = LoginGuard(max_failures=3, window=10, clock=lambda: now[0])
    for _ in range(5):
        guard.failed("a")
        now[0] += 6
    assert guard.retry_after("a") == 0


def test_the_guard_forgets_quiet_addresses_and_follows_a_bounded_number(monkeypatch):
    """A flood of failures from ever new addresses (an IPv6 prefix): each one that left the window is
    forgotten, and at most GUARD_MAX_ADDRESSES are followed at once, the most recent."""
    monkeypatch.setattr(auth, "GUARD_MAX_ADDRESSES", 100)
    now = [0.0]
    guard = LoginGuard(max_failures=3, window=10, clock=lambda: now[0])
    for i in range(1000):
        now[0] += 0.5
        guard.failed(f"2001:db8::{i:x}")
    assert len(guard._failures) == 20  # those of the last 10 s
    for i in range(500):  # all within the window: the newest 100 kept
        guard.failed(f"2001:db8:1::{i:x}")
    assert list(guard._failures) == [f"2001:db8:1::{i:x}" for i in range(400, 500)]
    for _ in range(3):
        guard.failed("10.0.0.9")  # a block is kept beside the flood
    assert guard.retry_after("10.0.0.9") == 10
    now[0] += 11
    guard.failed("10.0.0.1")
    assert list(guard._failures) == ["10.0.0.1"] and list(guard._blocked_until) == []


# -- the login policy: authenticate() ---------------------------------------------------------


def login_setup(max_failures=3):
    from tswarm.storage import NodeAuth

    nodes = {"a": NodeAuth(1, "a", auth.hash_password("pw", n=N), True, False)}
    looked_up = []

    async def lookup(login, fresh=False):
        looked_up.append(login + (" (fresh)" if fresh else ""))
        return nodes.get(login)

    cache, guard = CredentialCache(), LoginGuard(max_failures, 60)

    async def login(header, peer="192.0.2.1", node_name="a"):
        return await auth.authenticate(header, peer, node_name, lookup=lookup, cache=cache, guard=guard, hasher=None)

    return login, looked_up, guard, nodes


async def test_authenticate_returns_the_node_of_good_credentials():
    login, looked_up, _, nodes = login_setup()
    assert await login(" Basic " + auth.xauth("a", "pw")) == nodes["a"]
    assert looked_up == ["a"]


@pytest.mark.parametrize("header, detail", [
    (None, "no Authorization header; send 'Authorization: Basic base64(login:password)'"),
    ("Bearer x", "Authorization must use the Basic scheme"),
    (" Basic " + auth.xauth("a", "wrong"), "unknown login or wrong password"),
    (" Basic " + auth.xauth("ghost", "pw"), "unknown login or wrong password"),
])
async def test_authenticate_refuses_bad_credentials_with_401_and_counts_the_failure(header, detail):
    login, _, guard, _ = login_setup(max_failures=1)
    with pytest.raises(auth.LoginRefused) as refused:
        await login(header)
    assert (refused.value.status, refused.value.error, refused.value.detail) == (401, "unauthorized", detail)
    assert refused.value.headers == {"WWW-Authenticate": 'Basic realm="tswarm"'}
    assert guard.retry_after("192.0.2.1") > 0 and guard.retry_after("192.0.2.2") == 0


async def test_authenticate_refuses_another_nodes_credentials_with_403():
    login, _, guard, _ = login_setup()
    with pytest.raises(auth.LoginRefused) as refused:
        await login(" Basic " + auth.xauth("a", "pw"), node_name="b")
    assert (refused.value.status, refused.value.error) == (403, "wrong_node")
    assert guard.retry_after("192.0.2.1") == 0  # not a guess


async def test_a_blocked_address_gets_429_unless_its_header_already_verified():
    login, _, guard, nodes = login_setup(max_failures=1)
    good = " Basic " + auth.xauth("a", "pw")
    assert await login(good) == nodes["a"]
    with pytest.raises(auth.LoginRefused):
        await login(" Basic " + auth.xauth("a", "guess"))
    for header in (" Basic " + auth.xauth("a", "guess2"), None):
        with pytest.raises(auth.LoginRefused) as refused:
            await login(header)
        assert (refused.value.status, refused.value.error) == (429, "too_many_failures")
        assert 0 < int(refused.value.headers["Retry-After"]) <= 60
        assert refused.value.detail == f"too many failed logins from this address; retry in {refused.value.headers['Retry-After']} s"
    assert await login(good) == nodes["a"]  # verified before: guesses nothing, costs no scrypt


async def test_a_changed_hash_never_verifies_the_old_password_from_the_cache():
    login, _, _, nodes = login_setup()
    old = " Basic " + auth.xauth("a", "pw")
    assert await login(old) == nodes["a"]
    nodes["a"] = nodes["a"].__class__(1, "a", auth.hash_password("new", n=N), True, False)  # changed elsewhere
    with pytest.raises(auth.LoginRefused) as refused:
        await login(old)
    assert refused.value.status == 401
    assert await login(" Basic " + auth.xauth("a", "new")) == nodes["a"]


async def test_a_header_verified_before_is_answered_from_the_cache_without_decoding_it(monkeypatch):
    """The cached path: no parse_basic, no scrypt, one lookup; counted as a hit; another node's path
    still 403 from it; a header with only its outer white space changed is the same header."""
    login, looked_up, guard, nodes = login_setup()
    good = " Basic " + auth.xauth("a", "pw")
    assert await login(good) == nodes["a"]

    def no_parse(header):
        raise AssertionError("decoded again")

    monkeypatch.setattr(auth, "parse_basic", no_parse)
    monkeypatch.setattr(auth, "verify_password", no_parse)
    looked_up.clear()
    assert await login(good) == nodes["a"] and await login(good.strip() + "  ") == nodes["a"]
    assert looked_up == ["a", "a"]
    with pytest.raises(auth.LoginRefused) as refused:
        await login(good, node_name="b")
    assert (refused.value.status, refused.value.error) == (403, "wrong_node")
    assert guard.retry_after("192.0.2.1") == 0


async def test_the_cached_path_never_serves_a_record_whose_hash_changed_or_a_removed_node():
    login, looked_up, _, nodes = login_setup()
    good = " Basic " + auth.xauth("a", "pw")
    assert await login(good) == nodes["a"]
    del nodes["a"]  # removed elsewhere: the cached header is no login any more
    with pytest.raises(auth.LoginRefused) as refused:
        await login(good)
    assert (refused.value.status, refused.value.detail) == (401, "unknown login or wrong password")
    from tswarm.storage import NodeAuth

    nodes["a"] = NodeAuth(1, "a", auth.hash_password("pw", n=N), True, False)  # registered again: a new salt
    assert await login(good) == nodes["a"]  # verified again (scrypt) against the new hash
