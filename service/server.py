"""The HTTP server under the app: aiohttp's runner, with a request handler whose own answers are JSON
and whose log lines never carry the request's bytes.

aiohttp answers some requests before any middleware runs: those its parser refuses (a bad request
line or method, a header without a colon or with a control character, a line or header too long,
broken chunked encoding, a ``Content-Encoding`` it cannot decode, ...) and an unknown ``Expect``.
Left alone it answers them in plain text that echoes the offending bytes, and logs them at ERROR
with a traceback whose message holds the raw request, ``Authorization`` header and all.
:class:`RequestHandler` answers them as every other error (``{"error", "detail"}``, no byte of the
request), logs one line, and counts them in /metrics. :class:`AccessLogger` writes the request line
without the query's secrets (``?token=``) and without the Referer (which may carry one); it is off
unless ``TSWARM_ACCESS_LOG`` is on (a line per request costs more than the rest of aiohttp's work on
it): :class:`AppRunner` gives the server no access log then.

A body whose chunked framing breaks in a later packet than its headers is failed at once too
(:meth:`RequestHandler.data_received`): aiohttp queued the parser's error as a request of its own
and left the body open, so the handler reading it waited until the client gave up. Bodies reach
the handlers as sent (``auto_decompress`` off): service/bodies.py decodes them, to the end.

aiohttp has no setting for the request handler's class (aio-libs/aiohttp#3287), so :func:`run_app`
is ``web.run_app`` with :class:`AppRunner`, which makes the server build :class:`RequestHandler`.
"""
from __future__ import annotations

import asyncio
import logging
import re
import socket
from typing import Iterable, Optional
from urllib.parse import unquote_plus

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import ContentEncodingError, HttpProcessingError, LineTooLong
from aiohttp.web_protocol import _ErrInfo  # what aiohttp queues for a request its parser refused

from . import keys
from .errors import ENCODING_HELP, as_json, json_error
from .metrics import count_unseen

log = logging.getLogger("tswarm.server")
access_log = logging.getLogger("aiohttp.access")

# The words of a parser message before the first that could be the request's: the C parser quotes the
# request's bytes on the lines after its first, the pure-Python one after a quote. The names it quotes
# itself (`Transfer-Encoding`, 'Host', ...) are kept, unquoted; anything else becomes a generic detail.
_OWN_NAMES = re.compile(r"['`](Host|Content-Length|Transfer-Encoding|Connection: close)['`]")
_PHRASE = re.compile(r"(?:Connection: close|[A-Za-z0-9 ,.()/-])+")
_SECRET_QUERY = re.compile(r"(?i)(token|key|pass|pw|pwd|secret|auth|sig|cred|session|cookie)")


def describe(exc: Optional[BaseException]) -> str:
    """What is wrong with a request the parser refused, in words that quote none of its bytes."""
    if isinstance(exc, LineTooLong):
        return f"the request line or a header is longer than {exc.args[1]} bytes"
    message = getattr(exc, "message", "") or ""
    first = _OWN_NAMES.sub(r"\1", message.split("\n", 1)[0].replace("can't", "cannot"))
    found = _PHRASE.match(first)
    phrase = found.group().strip().rstrip(".") if found else ""
    if 3 <= len(phrase) <= 120 and phrase[0].isalpha():
        return f"{phrase}; this is not a valid HTTP/1.1 request"
    return "this is not a valid HTTP/1.1 request"


class RequestHandler(web.RequestHandler):
    """aiohttp's connection handler, with JSON answers and byte-free log lines for what it answers
    itself, those answers counted in /metrics, and no body left waiting on a parser that failed."""

    __slots__ = ("_app",)

    def __init__(self, manager: web.Server, *, app: web.Application, **kwargs):
        super().__init__(manager, **kwargs)
        self._app = app

    def data_received(self, data: bytes) -> None:
        queued = len(self._messages)
        super().data_received(data)
        if len(self._messages) > queued and isinstance(self._messages[-1][0], _ErrInfo):
            self._fail_open_bodies(self._messages[-1][0].exc)

    def _fail_open_bodies(self, exc: BaseException) -> None:
        """The parser failed on bytes of a body (a broken chunk that came after the headers): aiohttp
        queues the failure as a request of its own and leaves the body open, so the handler reading it
        would wait for the rest until the client gave up. Every body still open fails instead, as a body
        that breaks in the first packet does: the handler's read raises, and the answer is a 400."""
        bodies = [payload for _, payload in list(self._messages)[:-1]]
        if self._current_request is not None:
            bodies.append(self._current_request.content)
        for body in bodies:
            if not body.is_eof() and body.exception() is None:
                body.set_exception(web.RequestPayloadError("the body's framing is broken"), exc)

    def handle_error(self, request, status: int = 500, exc: Optional[BaseException] = None, message=None):
        if request.writer.output_size > 0:  # as aiohttp: an answer has begun, the connection is broken
            raise ConnectionError("Response is sent already, cannot send another response with the error message")
        if isinstance(exc, ContentEncodingError):
            log.info("refused a request from %s: its body does not match its Content-Encoding", request.remote)
            response = json_error(400, "bad_encoding", ENCODING_HELP)
        elif isinstance(exc, HttpProcessingError):
            detail = describe(exc)
            log.info("refused a malformed request from %s: %s", request.remote, detail)
            response = json_error(400, "bad_request", detail)
        elif status == 504:
            log.warning("a request from %s timed out", request.remote)
            response = json_error(504, "timeout", "the service did not answer in time; retry later")
        else:  # an exception that escaped the app's middlewares: a bug, logged as one
            log.error("unexpected error on a request from %s", request.remote, exc_info=exc)
            response = json_error(500, "internal_error", "the service failed on this request; it is logged")
        response.force_close()
        return response

    def log_exception(self, *args, **kwargs) -> None:
        exc = kwargs.get("exc_info")
        if isinstance(exc, (HttpProcessingError, web.RequestPayloadError, ConnectionError)):
            # The rest of a body that was already answered (400, 413) could not be read and skipped:
            # the connection closes; nothing more to say, and the message may quote the body.
            log.debug("closed a connection after a bad body: %s", type(exc).__name__)
            return
        super().log_exception(*args, **kwargs)

    async def finish_response(self, request, resp, start_time):
        if isinstance(resp, web.Response) and resp.status >= 400 and not resp.prepared \
                and resp.content_type != "application/json":
            # An HTTPException raised before the middlewares (417 for an unknown Expect) or a handler's
            # own plain-text error: every 4xx/5xx body is JSON.
            resp = as_json(resp.status, resp.reason, resp.headers)
        if resp is not None:
            count_unseen(self._app, request, resp.status)
        return await super().finish_response(request, resp, start_time)


class Server(web.Server):
    """aiohttp's low-level server, building :class:`RequestHandler` for each connection."""

    def __init__(self, app: web.Application, stock: web.Server):
        # aiohttp keeps the handler's settings (timeouts, access log) in the private ``_kwargs``
        super().__init__(
            stock.request_handler, request_factory=stock.request_factory,
            handler_cancellation=stock.handler_cancellation, loop=asyncio.get_running_loop(), **stock._kwargs,
        )
        self.app = app

    def __call__(self) -> RequestHandler:
        return RequestHandler(self, app=self.app, loop=self._loop, **self._kwargs)


class AppRunner(web.AppRunner):
    """``web.AppRunner`` whose server is :class:`Server`, with an access log only when the app's
    configuration turns it on (``TSWARM_ACCESS_LOG``), and bodies left as sent (service/bodies.py
    decodes them)."""

    __slots__ = ()

    async def _make_server(self) -> web.Server:
        # bodies are decoded by service/bodies.py, which checks a gzip stream to its end (aiohttp does not)
        self._kwargs["auto_decompress"] = False
        config = self.app.get(keys.CONFIG)
        if config is not None and not config.access_log:
            self._kwargs["access_log"] = None  # aiohttp then builds no access logger for a connection
        return Server(self.app, await super()._make_server())


class AccessLogger(AbstractAccessLogger):
    """One line per answer: peer, request line (query values of secret-looking names masked), status,
    size, seconds. No Referer, no User-Agent: other headers are the client's, not ours to write down."""

    @property
    def enabled(self) -> bool:  # aiohttp asks once a connection: below INFO it calls no log()
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            '%s "%s" %d %d %.3fs', request.remote, request_line(request), response.status, response.body_length, time,
        )


def request_line(request: web.BaseRequest) -> str:
    """``PUT /api/nodes/porch HTTP/1.1`` as a log line may show it: query values of secret-looking names masked."""
    path, sep, query = request.raw_path.partition("?")
    if query:
        path += sep + "&".join(_mask(pair) for pair in query.split("&"))
    return f"{request.method} {path} HTTP/{request.version.major}.{request.version.minor}"


def _mask(pair: str) -> str:
    name, sep, value = pair.partition("=")
    # judged by the name as the app reads it: ``tok%65n`` is ``token``
    return f"{name}{sep}***" if sep and _SECRET_QUERY.search(unquote_plus(name)) else pair


def run_app(
    app: web.Application, *, host: Optional[str] = None, port: Optional[int] = None,
    sock: Optional[Iterable[socket.socket]] = None, shutdown_timeout: float = 60.0, handle_signals: bool = True,
) -> None:
    """``web.run_app`` with :class:`AppRunner` and :class:`AccessLogger`: serve until SIGINT/SIGTERM
    (``handle_signals``) or :class:`web.GracefulExit`, then stop as aiohttp does: the server first
    (in-flight requests get ``shutdown_timeout`` seconds, then the app's cleanup contexts), then any
    task left. A port that cannot be bound raises its OSError."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    main = loop.create_task(_serve(app, host, port, sock, shutdown_timeout, handle_signals))
    try:
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        _cancel(loop, {main})
        _cancel(loop, asyncio.all_tasks(loop))
        loop.run_until_complete(loop.shutdown_asyncgens())
        asyncio.set_event_loop(None)
        loop.close()


async def _serve(app, host, port, sock, shutdown_timeout, handle_signals) -> None:
    runner = AppRunner(app, handle_signals=handle_signals, shutdown_timeout=shutdown_timeout, access_log_class=AccessLogger)
    await runner.setup()
    try:
        sites = [web.SockSite(runner, s) for s in sock] if sock is not None else [web.TCPSite(runner, host, port)]
        for site in sites:
            await site.start()
        await asyncio.Future()  # until cancelled
    finally:
        await runner.cleanup()


def _cancel(loop: asyncio.AbstractEventLoop, tasks) -> None:
    tasks = [t for t in tasks if not t.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            loop.call_exception_handler({"message": "unhandled exception while stopping", "exception": task.exception(), "task": task})
