import argparse

import pytest

from isthmus.flags import duration, host_port


def test_host_port():
    assert host_port("127.0.0.1:15014") == ("127.0.0.1", 15014)
    assert host_port(":15010") == ("0.0.0.0", 15010)
    assert host_port("[::1]:80") == ("::1", 80)
    for bad in ("15014", "host:", "host:x", "h:70000"):
        with pytest.raises(argparse.ArgumentTypeError):
            host_port(bad)


def test_duration():
    assert duration("24h") == 86400
    assert duration("1h30m") == 5400
    assert duration("500ms") == 0.5
    for bad in ("", "10", "h", "1d", "0s", "1h x"):
        with pytest.raises(argparse.ArgumentTypeError):
            duration(bad)
