"""Typed keys of the application's state, one per resource: every key the app holds is declared
here, and service/app.py's ``create_app`` sets each one (or the cleanup context it appends does)."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from .auth import CredentialCache, LoginGuard
from .pool import StoragePool
from .storage import Storage, Writer
from .settings import Config

if TYPE_CHECKING:  # these modules import this one
    from .leader import Leader
    from .metrics import Metrics


@dataclass
class Stats:
    accepted: int = 0  # readings stored and acknowledged (202 or 423)
    duplicates: int = 0  # readings sent again under a key stored before: answered again, not stored


CONFIG = web.AppKey("config", Config)
JOURNAL = web.AppKey("journal", Storage)  # the event loop's connection: quick reads only (/healthz)
WRITER = web.AppKey("writer", Writer)  # group commit of readings, in its own thread
STORAGE = web.AppKey("storage", StoragePool)  # every other storage call of a request, off the loop
CREDENTIALS = web.AppKey("credentials", CredentialCache)
GUARD = web.AppKey("guard", LoginGuard)
HASHER = web.AppKey("hasher", ThreadPoolExecutor)  # scrypt
READERS = web.AppKey("readers", ThreadPoolExecutor)  # the threads exports stream from
STATS = web.AppKey("stats", Stats)
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
LEADER: web.AppKey[Leader] = web.AppKey("leader")  # runs the forwarder and the pruner while this process leads
KEPT_READ_TOKEN = web.AppKey("kept_read_token", str)  # the data dir's, when TSWARM_READ_TOKEN is empty
