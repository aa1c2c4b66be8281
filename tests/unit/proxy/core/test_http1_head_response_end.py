"""Responses to HEAD that llhttp ends by itself are ended once."""

from __future__ import annotations

import pytest

from proxy.core.http1 import ResponseParser

OK = b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nhello"


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n",
    ],
)
def test_a_response_to_head_that_llhttp_ends_itself_is_ended_once(head):
    """A response to HEAD without a body llhttp could wait for (1xx, 204, 304, Content-Length: 0) was
    ended twice: a second EndOfMessage and the next request's method popped (an IndexError out of
    feed when there was none)."""
    rp = ResponseParser()
    rp.expect("HEAD")
    rp.expect("GET")
    events = rp.feed(head)
    assert [type(e).__name__ for e in events] == ["ResponseHead", "EndOfMessage"]
    assert [type(e).__name__ for e in rp.feed(OK)] == ["ResponseHead", "Data", "EndOfMessage"]
    rp = ResponseParser()
    rp.expect("HEAD")
    assert len(rp.feed(head)) == 2 and rp.idle
