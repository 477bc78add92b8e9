"""The read token a first ``tswarm serve`` makes when ``TSWARM_READ_TOKEN`` is empty, as Jupyter does.

Without it a fresh install is useless from any other device (the readers answer 401 to everyone
but loopback) or, if we let the LAN in, open to anyone on it. So the first ``serve`` makes a token
(``secrets.token_urlsafe``), keeps it in the data dir beside the journal (``read-token``, mode 0600)
and prints once a URL that carries it (``http://<LAN address>:<port>/?token=...``): opening it on a
phone sets a cookie (service/web.py) and the page reads from then on. Later starts reuse the file
and print only where it is, never the token: the service log (journalctl) keeps every start.

The file is published with ``link()``, which never replaces an existing file, so two processes
starting at once (a supervisor's workers, a test) end with one token, and nobody ever reads a
half-written file. Delete it to make a new token: old links and cookies stop working.

On PostgreSQL the data dir is per instance but the page must open on every instance with one link,
so the token is kept in the database instead (``meta``, key ``read_token``), inserted only where
none is (:meth:`~tswarm.storage.Storage.setdefault_meta`): instances starting together end with one
token too. Delete that row for a new one. :func:`kept_read_token` and :func:`token_place` choose.
"""
from __future__ import annotations

import ipaddress
import os
import secrets
from pathlib import Path
from typing import Optional

from .settings import Config
from .storage import READ_TOKEN, StorageError, storage_for

TOKEN_FILENAME = "read-token"
TOKEN_BYTES = 32  # 43 URL-safe characters


class TokenFileError(OSError):
    """The token file cannot be read or made; the message says what to do."""


def token_path(data_dir: Path) -> Path:
    return Path(data_dir) / TOKEN_FILENAME


def load_read_token(data_dir: Path) -> Optional[str]:
    """The kept token, or None when there is no file yet."""
    path = token_path(data_dir)
    try:
        token = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenFileError(f"cannot read the read token in {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if not token:
        raise TokenFileError(f"{path} is empty; delete it and 'tswarm serve' makes a new read token")
    return token


def ensure_read_token(data_dir: Path) -> tuple[str, bool]:
    """The data dir's read token and whether this call made it."""
    token = load_read_token(data_dir)
    if token is not None:
        return token, False
    made = secrets.token_urlsafe(TOKEN_BYTES)
    token = keep_read_token(data_dir, made)
    return token, token == made


def keep_read_token(data_dir: Path, token: str) -> str:
    """Keep ``token`` in the data dir unless one is kept there already; the token the file holds after.
    (``tswarm migrate`` brings a database's token back this way.)"""
    path = token_path(data_dir)
    tmp = path.with_name(f".{TOKEN_FILENAME}.{os.getpid()}.{secrets.token_hex(4)}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, (token + "\n").encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # fails if another process published one first: then theirs is the token
        except FileExistsError:
            return load_read_token(data_dir) or token
    except OSError as exc:
        raise TokenFileError(f"cannot keep a read token in {path}: {exc.strerror or exc}") from None
    finally:
        _remove(tmp)
    return token


def kept_read_token(config: Config) -> tuple[str, bool]:
    """The kept read token and whether this call made it: in the database with PostgreSQL (shared by
    every instance), else in the data dir (:func:`ensure_read_token`). Blocking."""
    if not config.database_url:
        return ensure_read_token(config.data_dir)
    made = secrets.token_urlsafe(TOKEN_BYTES)
    try:
        with storage_for(config) as journal:
            token = journal.setdefault_meta(READ_TOKEN, made)
    except StorageError as exc:
        raise TokenFileError(f"cannot keep a read token in the database: {exc}") from None
    return token, token == made


def token_place(config: Config) -> str:
    """Where :func:`kept_read_token` keeps the token, for people."""
    if config.database_url:
        return f"the database (table meta, key {READ_TOKEN!r}; every instance uses it)"
    return str(token_path(config.data_dir))


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def page_base_url(config: Config, lan_address: Optional[str]) -> str:
    """Where another device opens the page: ``TSWARM_PUBLIC_URL`` when set, else this machine's
    ``lan_address`` (when listening on every address; None: it has none) or the listening host,
    with the port."""
    if config.public_url:
        return config.public_url
    host = config.host
    if host in ("", "0.0.0.0", "::"):
        host = lan_address or "<this machine's address>"
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass
    return f"http://{host}:{config.port}"


def announce(config: Config, lan_address: Optional[str]) -> Optional[str]:
    """What ``serve`` prints about the read token before it starts, or None when one is configured.

    Makes the token when there is none yet. The URL with the token is printed the one time it is
    made; later starts say where the token is kept."""
    if config.read_token:
        return None
    token, created = kept_read_token(config)
    base = page_base_url(config, lan_address)
    place = token_place(config)
    if created:
        forget = "delete the file" if not config.database_url else "delete that row"
        return (
            "No TSWARM_READ_TOKEN is set, so tswarm made a read token for the status page.\n"
            "To open the page on a phone or another computer, use this URL (printed only this once;"
            " keep it to yourself):\n"
            f"    {base}/?token={token}\n"
            f"The token is kept in {place}{' (mode 0600)' if not config.database_url else ''}; {forget} for a new one.\n"
            "This machine itself reads without a token."
        )
    return f"status page: {base}/ (other devices: add ?token= with the read token kept in {place})"
