"""StreamInfo's hand-written constructor behaves as the dataclass one did: fresh flags and filter
state per request, start times taken at construction unless given, every field settable by keyword."""

from __future__ import annotations

import dataclasses
import time

from proxy.core.stream_info import StreamInfo


def test_each_request_gets_its_own_flags_and_filter_state():
    a, b = StreamInfo(), StreamInfo()
    a.set_flag("UF")
    a.filter_state["k"] = "v"
    assert b.response_flags == set() and b.filter_state == {}
    assert a.flags_string() == "UF" and b.flags_string() == "-"


def test_start_times_default_to_now_and_explicit_values_are_kept():
    before_wall, before_mono = time.time(), time.monotonic()
    si = StreamInfo()
    assert before_wall <= si.start_time <= time.time()
    assert before_mono <= si.start_monotonic <= time.monotonic()
    fixed = StreamInfo(start_time=0.0, start_monotonic=5.0, response_flags={"NR"}, protocol="")
    assert (fixed.start_time, fixed.start_monotonic, fixed.protocol) == (0.0, 5.0, "")
    assert fixed.flags_string() == "NR"


def test_every_dataclass_field_is_a_keyword_of_the_constructor():
    values = {f.name: f"v-{f.name}" for f in dataclasses.fields(StreamInfo)}
    si = StreamInfo(**values)
    assert all(getattr(si, name) == value for name, value in values.items())
    assert StreamInfo(start_time=1.0, start_monotonic=2.0) == StreamInfo(start_time=1.0, start_monotonic=2.0)
