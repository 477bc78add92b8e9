"""A request's body, decoded by its ``Content-Encoding`` and checked to its end, never inflated past a limit.

aiohttp's own decoding is off (service/server.py gives the server ``auto_decompress=False``): it took a
gzip body whose last bytes were cut off (the CRC-32 and length that end a gzip stream) for a whole
one, so a truncated body could be stored. Here zlib decodes ``gzip`` (one member or several, as RFC
1952 allows) and ``deflate`` (zlib-wrapped, or raw as some clients send it, told apart by the first
byte as aiohttp does), a piece at a time, never more than ``limit + 1`` bytes out, and the stream must
end where the body ends: cut short, or followed by anything, it is a
:class:`~aiohttp.http_exceptions.ContentEncodingError` (400 ``bad_encoding``, service/errors.py). Any
other encoding was refused before the handler ran (service/errors.py ``refused_request``).
"""
from __future__ import annotations

import zlib
from typing import Optional

from aiohttp import web
from aiohttp.http_exceptions import ContentEncodingError

READ_BYTES = 64 * 1024  # of a compressed body, per read
RAW_SLACK = 1024  # a compressed body may exceed its limit by this (headers, incompressible data) ...
RAW_FACTOR = 2  # ... or be up to twice it: beyond, it is refused unread, whatever it decodes to


async def read_body(request: web.BaseRequest, limit: int) -> Optional[bytes]:
    """The whole body, decoded, or None when it is larger than ``limit`` bytes: declared, sent, or
    (compressed) decoded. Raises ContentEncodingError for a compressed body that does not decode to
    its end, and aiohttp's RequestPayloadError when its framing breaks (service/server.py)."""
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    content = request.content
    if encoding in ("", "identity"):
        declared = request.content_length
        if declared is not None and declared > limit:
            return None
        if content.is_eof():  # the whole body is here already (a reading comes in one packet): no wait
            body = content.read_nowait(limit + 1)
            return None if len(body) > limit else body
        buffer = bytearray()
        while chunk := await content.read(limit + 1 - len(buffer)):
            buffer += chunk
            if len(buffer) > limit:
                return None
        return bytes(buffer)

    decoder = _Decoder(encoding)
    raw_limit = RAW_FACTOR * limit + RAW_SLACK
    raw = 0
    out = bytearray()
    while chunk := await content.read(READ_BYTES):
        raw += len(chunk)
        if raw > raw_limit:
            return None
        out += decoder.feed(chunk, limit + 1 - len(out))
        if len(out) > limit:
            return None
    decoder.end()
    return bytes(out)


class _Decoder:
    """One compressed body's zlib stream(s), fed piece by piece."""

    def __init__(self, encoding: str):
        self.encoding = encoding
        self._zlib = None  # made on the first byte: deflate's first byte says whether it is wrapped
        self._ended = False  # a whole stream has been decoded (and, for gzip, its CRC and length checked)

    def _new(self, first: int):
        if self.encoding == "gzip":
            return zlib.decompressobj(16 + zlib.MAX_WBITS)
        # RFC 1950: a zlib stream's first byte has compression method 8 in its low bits; else raw deflate
        return zlib.decompressobj(zlib.MAX_WBITS if first & 0x0F == 8 else -zlib.MAX_WBITS)

    def feed(self, data: bytes, room: int) -> bytes:
        """At most ``room`` (>= 1) bytes decoded from ``data``; more than fits leaves the rest
        undecoded (the caller refuses the body then, having had ``room`` bytes)."""
        out = b""
        while data:
            if self._zlib is None:
                self._zlib = self._new(data[0])
            elif self._zlib.eof:  # bytes after a whole stream: another gzip member, or garbage
                if self.encoding != "gzip":
                    raise ContentEncodingError(self.encoding)
                self._zlib = self._new(data[0])
            try:
                piece = self._zlib.decompress(data, room - len(out))
            except zlib.error:
                raise ContentEncodingError(self.encoding) from None
            out += piece
            self._ended = self._zlib.eof
            if len(out) >= room:
                return out
            data = self._zlib.unused_data if self._zlib.eof else b""
        return out

    def end(self) -> None:
        """The body is over: it must have ended a stream. An empty body decodes to nothing, as before."""
        if self._zlib is not None and not self._ended:
            raise ContentEncodingError(self.encoding)
