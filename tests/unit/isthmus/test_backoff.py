import pytest

from isthmus.launcher.backoff import Backoff


def test_delay_doubles_up_to_the_cap():
    b = Backoff(initial=0.5, factor=2, maximum=4)
    assert [b.delay(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    with pytest.raises(ValueError):
        b.delay(0)


def test_a_stable_run_resets_the_count():
    b = Backoff(stable_after=30)
    assert b.next_count(3, uptime=1.0) == 4
    assert b.next_count(3, uptime=31.0) == 1
    assert b.next_count(0, uptime=0.1) == 1
