"""Every 4xx/5xx body is JSON: ``{"error": "<short code>", "detail": "<what to fix>"}``.

The answers aiohttp makes below the middlewares (a request its parser refuses, an unknown
``Expect``) are made JSON by service/server.py, with :func:`as_json` and the same codes.
"""
from __future__ import annotations

import logging
from typing import Mapping, Optional

from aiohttp import HttpVersion10, HttpVersion11, web
from aiohttp.http_exceptions import ContentEncodingError, HttpProcessingError

from . import keys
from .storage import StorageUnavailable

log = logging.getLogger("tswarm")

_DEFAULT_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    417: "expectation_failed",
    422: "impossible_value",
    423: "halted",
    429: "too_many_failures",
    431: "headers_too_large",
    500: "internal_error",
    503: "unavailable",
}
# Details that say more than the reason phrase, and never quote the request (aiohttp's 417 text
# echoes the Expect header).
_DEFAULT_DETAILS = {
    404: "no such route; docs/api.md and docs/protocol.md list them",
    417: "the only expectation understood is 'Expect: 100-continue'",
}

RETRY_AFTER_STORAGE = "30"  # seconds: a database restart or failover takes about that
CLIENT_GONE = 499  # the client went away before the answer was complete (nginx's code for it)

# The body encodings a request may use: none, or what the standard library's zlib decodes (aiohttp
# decodes them before the handler reads, within the same size limit). Others (br, zstd, compress,
# a list of several) depend on optional packages or are not HTTP: refused, whatever is installed.
ACCEPTED_ENCODINGS = frozenset({"", "identity", "gzip", "deflate"})
HTTP_VERSIONS = frozenset({HttpVersion10, HttpVersion11})
VERSION_HELP = "the request line must end in HTTP/1.1 (or HTTP/1.0); this is not a valid HTTP/1.1 request"
ENCODING_HELP = "a body is sent plain or with 'Content-Encoding: gzip' or 'deflate', and must decode as such"


def json_error(status: int, error: str, detail: str, headers: Optional[Mapping[str, str]] = None, **extra) -> web.Response:
    """The JSON error answer; with ``Connection: close`` among its headers the connection does close."""
    response = web.json_response({"error": error, "detail": detail, **extra}, status=status, headers=headers)
    if response.headers.get("Connection", "").lower() == "close":
        response.force_close()
    return response


def as_json(status: int, reason: str, headers: Mapping[str, str]) -> web.Response:
    """An error answer of aiohttp's own (plain text) as JSON, with its other headers (Allow, ...)."""
    kept = {k: v for k, v in headers.items() if k.lower() not in ("content-type", "content-length", "content-encoding")}
    detail = _DEFAULT_DETAILS.get(status, reason)
    if status == 405 and "Allow" in headers:
        detail = f"this route takes {headers['Allow'].replace(',', ', ')} only"
    return json_error(status, _DEFAULT_CODES.get(status, "error"), detail, headers=kept)


def client_gone(request: web.BaseRequest) -> bool:
    """The client's connection is closed (it hung up mid-request or mid-answer)."""
    return request.transport is None or request.transport.is_closing()


def refused_request(request: web.BaseRequest) -> Optional[web.Response]:
    """The 400 for a request refused before its handler runs, or None: a request line of another
    HTTP than 1.0 and 1.1 (aiohttp's parser takes one without a version, as HTTP/0.9, and HTTP/2.0),
    or a body in an encoding that is not accepted (before the handler reads it)."""
    if request.version not in HTTP_VERSIONS:
        log.info("refused a malformed request from %s: HTTP/%d.%d is not HTTP/1.1", request.remote, *request.version)
        return json_error(400, "bad_request", VERSION_HELP, headers={"Connection": "close"})
    encodings = request.headers.getall("Content-Encoding", ())
    if not encodings or not request.body_exists:
        return None
    # two header lines are a list as much as "gzip, gzip" is (RFC 9110 5.3): refused, not decoded by one of them
    if len(encodings) > 1 or encodings[0].strip().lower() not in ACCEPTED_ENCODINGS:
        return json_error(400, "bad_encoding", ENCODING_HELP, headers={"Connection": "close"})
    return None


def error_answer(request: web.Request, exc: Exception) -> web.Response:
    """The JSON answer for what a handler raised: aiohttp's own errors (unknown route, wrong method, a
    body that does not decode, ...) and crashes; a client that hung up mid-body is a 499 (nothing is
    sent: it is gone). An exception that is an answer already (a JSON or non-error HTTPException) is
    raised again."""
    if isinstance(exc, web.HTTPException):
        if exc.status < 400 or exc.content_type == "application/json":
            raise exc
        return as_json(exc.status, exc.reason, exc.headers)
    if isinstance(exc, (web.RequestPayloadError, HttpProcessingError)):
        # the body broke while it was read: aiohttp's C parser raises the first, wrapping the parser's
        # error; its pure-Python parser raises that error itself for some breaks (a bad chunk size)
        if isinstance(exc, ContentEncodingError) or isinstance(exc.__cause__, ContentEncodingError):
            return json_error(400, "bad_encoding", ENCODING_HELP, headers={"Connection": "close"})
        return json_error(400, "bad_body", "the body does not match its Content-Length or chunked encoding",
                          headers={"Connection": "close"})
    if isinstance(exc, StorageUnavailable):  # the database is away (PostgreSQL restarting, a disk full): retry
        # logged once an outage, by the writer (service/storage/group.py), not once a request
        log.debug("storage unavailable on %s %s: %s", request.method, request.path, exc)
        if keys.WRITER in request.app:
            request.app[keys.WRITER].unavailable(exc)
        return json_error(503, "storage_unavailable", "the database cannot be reached now; retry later",
                          headers={"Retry-After": RETRY_AFTER_STORAGE})
    if isinstance(exc, ConnectionError):
        if not client_gone(request):
            log.error("unexpected error on %s %s", request.method, request.path, exc_info=exc)
            return json_error(500, "internal_error", "the service failed on this request; it is logged")
        # One line for it: the access log's (status 499) when it is on, else this one.
        if keys.CONFIG in request.app and not request.app[keys.CONFIG].access_log:
            from .server import request_line  # here: server.py imports this module

            log.info('%s "%s" %d: the client hung up before its request was complete',
                     request.remote, request_line(request), CLIENT_GONE)
        return json_error(CLIENT_GONE, "client_gone", "the client closed the connection before its request was complete")
    log.error("unexpected error on %s %s", request.method, request.path, exc_info=exc)
    return json_error(500, "internal_error", "the service failed on this request; it is logged")

