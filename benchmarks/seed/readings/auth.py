"""The "auth cached" variant: DRF's BasicAuthentication, each verified Authorization value kept per
worker process (as tswarm's credential cache keeps it), so a known node costs no hash."""
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from rest_framework.authentication import BasicAuthentication, get_authorization_header


class FewIterationsPBKDF2(PBKDF2PasswordHasher):
    """PBKDF2-SHA256 with few iterations: only the warm-up (each node's first request per worker) hashes."""
    iterations = 1000


class CachedBasicAuthentication(BasicAuthentication):
    _verified: dict = {}  # the raw Authorization value -> (user, None)

    def authenticate(self, request):
        key = get_authorization_header(request)
        found = self._verified.get(key)
        if found is not None:
            return found
        result = super().authenticate(request)
        if result is not None:
            self._verified[key] = result
        return result
