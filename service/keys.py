"""Typed keys of the application's state, one per resource."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from aiohttp import web

from .auth import CredentialCache, LoginGuard
from .storage import Storage, Writer
from .settings import Config


@dataclass
class Stats:
    accepted: int = 0


CONFIG = web.AppKey("config", Config)
JOURNAL = web.AppKey("journal", Storage)
WRITER = web.AppKey("writer", Writer)
CREDENTIALS = web.AppKey("credentials", CredentialCache)
GUARD = web.AppKey("guard", LoginGuard)
HASHER = web.AppKey("hasher", ThreadPoolExecutor)
STATS = web.AppKey("stats", Stats)
