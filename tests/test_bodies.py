"""service/bodies.py's decoder: any split of a gzip or deflate stream decodes to what was compressed,
never more than the room it is given at a time, and a stream cut short or followed by other bytes
is refused. (Through the node route, with a served app: tests/test_protocol.py.)"""
import gzip
import zlib

import pytest
from aiohttp.http_exceptions import ContentEncodingError
from hypothesis import given, strategies as st

from tswarm.bodies import _Decoder

COMPRESS = {
    "gzip": lambda b: gzip.compress(b, mtime=0),
    "deflate": zlib.compress,
    "raw deflate": lambda b: zlib.compress(b)[2:-4],
    "two gzip members": lambda b: gzip.compress(b[: len(b) // 2], mtime=0) + gzip.compress(b[len(b) // 2:], mtime=0),
}


def pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:])]


@pytest.mark.parametrize("how", COMPRESS)
@given(body=st.binary(max_size=3000), cuts=st.lists(st.integers(0, 10_000), max_size=6))
def test_any_split_decodes_to_the_body(how, body, cuts):
    decoder = _Decoder("gzip" if "gzip" in how else "deflate")
    out = b"".join(decoder.feed(piece, 10_000) for piece in pieces(COMPRESS[how](body), cuts))
    decoder.end()
    assert out == body


@pytest.mark.parametrize("how", COMPRESS)
@given(body=st.binary(min_size=1, max_size=3000), cut=st.integers(1, 40))
def test_a_stream_cut_short_is_refused(how, body, cut):
    data = COMPRESS[how](body)
    if how == "two gzip members":
        cut = min(cut, 8)  # within the second member's trailer: cut more, and the first member alone is whole
    decoder = _Decoder("gzip" if "gzip" in how else "deflate")
    with pytest.raises(ContentEncodingError):
        decoder.feed(data[: len(data) - min(cut, len(data) - 1)], 10_000)  # a byte at least: none is an empty body
        decoder.end()


@pytest.mark.parametrize("how", ["gzip", "deflate"])
def test_bytes_after_a_whole_stream_are_refused(how):
    decoder = _Decoder(how)
    with pytest.raises(ContentEncodingError):
        decoder.feed(COMPRESS[how](b'{"name": "n1"}') + b"\x00garbage", 10_000)
        decoder.end()


def test_a_bomb_is_never_inflated_past_the_room_given():
    bomb = gzip.compress(b" " * 50_000_000)
    decoder = _Decoder("gzip")
    out = decoder.feed(bomb, 4097)
    assert len(out) == 4097  # the caller refuses the body here: the rest stays undecoded


def test_an_empty_body_decodes_to_nothing():
    decoder = _Decoder("gzip")
    assert decoder.feed(b"", 10) == b""
    decoder.end()
