"""The paced client's response framing: it must count exactly the answers that finished."""

from __future__ import annotations

from bench.paced import _ResponseFramer, percentile

ONE = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nServer: x\r\n\r\nhello"
CHUNKED = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
EMPTY = b"HTTP/1.1 204 No Content\r\n\r\n"


def test_content_length_answer_split_anywhere_completes_once():
    for cut in range(1, len(ONE)):
        f = _ResponseFramer()
        assert f.feed(ONE[:cut]) == 0
        assert f.feed(ONE[cut:]) == 1
        assert f.buf == b""


def test_several_answers_in_one_read_and_chunked_and_bodiless():
    f = _ResponseFramer()
    assert f.feed(ONE + CHUNKED + EMPTY + ONE[:10]) == 3
    assert f.feed(ONE[10:]) == 1


def test_percentile_is_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
