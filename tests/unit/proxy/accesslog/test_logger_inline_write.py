"""AccessLogger.log appends its line to the sink inline (BufferedSink.write written out): the sink
ends up exactly as write() leaves it — the same buffer, size, timer — and flushes at the same points
(past the size threshold; at once without an event loop; on the timer otherwise)."""

from __future__ import annotations

import asyncio
import random

from proxy.accesslog import loggers
from proxy.accesslog.formatter import TextFormatter
from proxy.accesslog.loggers import AccessLogger, BufferedSink
from proxy.core.stream_info import StreamInfo


class MemorySink(BufferedSink):
    def __init__(self) -> None:
        super().__init__("mem")
        self.written: list[str] = []

    def _write_out(self, data: str) -> None:
        self.written.append(data)


class LineFormatter:
    def __init__(self, lines):
        self.lines = iter(lines)

    def format(self, si):
        return next(self.lines)


def _lines(seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["x" * rng.choice([1, 10, 700, 5000, 20000]) + "\n" for _ in range(60)]


def _drive(lines, use_logger: bool) -> tuple:
    sink = MemorySink()
    logger = AccessLogger("t", LineFormatter(lines), sink)
    states = []
    for line in lines:
        if use_logger:
            logger.log(StreamInfo())
        else:
            sink.write(line)
        states.append((list(sink._buf), sink._size, sink._timer is None, list(sink.written)))
    sink.close()
    return states, sink.written


def test_without_a_loop_every_line_is_written_through_as_write_does():
    for seed in range(5):
        lines = _lines(seed)
        assert _drive(lines, True) == _drive(lines, False)


async def test_with_a_loop_lines_wait_for_the_timer_or_the_size_threshold_as_write_does(monkeypatch):
    monkeypatch.setattr(loggers, "FLUSH_INTERVAL_S", 60.0)  # the timer never fires during the test
    for seed in range(5):
        lines = _lines(seed)
        a, b = _drive(lines, True), _drive(lines, False)
        assert a == b
        assert any(len(state[0]) > 1 for state in a[0])  # lines were buffered
        assert any(state[3] for state in a[0])  # and flushed past the threshold
    await asyncio.sleep(0)


def test_a_filter_still_decides_and_a_replaced_formatter_is_used():
    sink = MemorySink()
    logger = AccessLogger("t", TextFormatter("%RESPONSE_CODE%\n"), sink)
    logger.filter = lambda si: si.response_code != 404
    for code in (200, 404, 503):
        si = StreamInfo()
        si.response_code = code
        logger.log(si)
    logger.formatter = TextFormatter("code=%RESPONSE_CODE%\n")
    si = StreamInfo()
    si.response_code = 201
    logger.log(si)
    sink.flush()
    assert "".join(sink.written) == "200\n503\ncode=201\n"
