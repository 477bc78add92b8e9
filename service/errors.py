"""Every 4xx/5xx body is JSON: ``{"error": "<short code>", "detail": "<what to fix>"}``."""
from __future__ import annotations

import logging
from typing import Mapping, Optional

from aiohttp import web

log = logging.getLogger("tswarm")

_DEFAULT_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    422: "impossible_value",
    423: "halted",
    429: "too_many_failures",
    500: "internal_error",
    503: "unavailable",
}


def json_error(status: int, error: str, detail: str, headers: Optional[Mapping[str, str]] = None, **extra) -> web.Response:
    return web.json_response({"error": error, "detail": detail, **extra}, status=status, headers=headers)


@web.middleware
async def json_errors(request: web.Request, handler):
    """Turn aiohttp's own errors (unknown route, wrong method, ...) and crashes into JSON bodies."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() not in ("content-type", "content-length")}
        return json_error(exc.status, _DEFAULT_CODES.get(exc.status, "error"), exc.reason, headers=headers)
    except Exception:
        log.exception("unexpected error on %s %s", request.method, request.path)
        return json_error(500, "internal_error", "the service failed on this request; it is logged")
