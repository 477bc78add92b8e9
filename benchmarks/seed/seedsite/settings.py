"""The seed's stack, minimal: Django + Django REST framework, SQLite through the ORM, HTTP Basic auth
against Django's user model. A benchmark peer only (benchmarks/seed_peer.py), never a service to run.

SEED_DB: the SQLite file. SEED_AUTH: "pbkdf2" (DRF's BasicAuthentication, every request checked with
Django's default hasher, PBKDF2-SHA256 at Django's iteration count, as the seed did) or "cached"
(the same, with each verified Authorization value cached per process, as tswarm caches it; the
users' hashes then are PBKDF2 with few iterations, so the warm-up is quick: the window sees no hash).
"""
import os

from django.contrib.auth.hashers import PBKDF2PasswordHasher  # noqa: F401  (the default, named below)

SECRET_KEY = "benchmark-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
USE_TZ = True
ROOT_URLCONF = "seedsite.urls"
WSGI_APPLICATION = "seedsite.wsgi.application"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "rest_framework", "readings"]
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]

DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ.get("SEED_DB", "seed.sqlite3")}}

AUTH = os.environ.get("SEED_AUTH", "pbkdf2")
if AUTH not in ("pbkdf2", "cached"):
    raise ValueError(f"SEED_AUTH must be pbkdf2 or cached, not {AUTH!r}")
if AUTH == "cached":
    PASSWORD_HASHERS = ["readings.auth.FewIterationsPBKDF2"]  # only the warm-up hashes: the window is cached
# else Django's default PASSWORD_HASHERS: PBKDF2PasswordHasher first

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "readings.auth.CachedBasicAuthentication" if AUTH == "cached" else "rest_framework.authentication.BasicAuthentication"
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "UNAUTHENTICATED_USER": None,
}
LOGGING = {"version": 1, "disable_existing_loggers": False,
           "handlers": {"stderr": {"class": "logging.StreamHandler"}},
           "root": {"handlers": ["stderr"], "level": "WARNING"}}
