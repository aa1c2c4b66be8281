import pytest

from proxy.xds.backoff import JitteredBackoff


def test_ceilings_double_from_base_and_cap_at_max():
    b = JitteredBackoff(rand=lambda: 0.999999)
    delays = [b.next_delay() for _ in range(10)]
    assert delays[0] == pytest.approx(0.5, rel=1e-5)
    assert delays[1] == pytest.approx(1.0, rel=1e-5)
    assert delays[2] == pytest.approx(2.0, rel=1e-5)
    assert max(delays) <= 30.0
    assert delays[-1] == pytest.approx(30.0, rel=1e-5)


def test_delays_are_jittered_within_bounds():
    b = JitteredBackoff()
    for _ in range(200):
        ceiling = b.ceiling()
        d = b.next_delay()
        assert 0 <= d < ceiling <= 30.0


def test_reset_after_healthy_stream_starts_again_from_base():
    b = JitteredBackoff(rand=lambda: 0.5)
    for _ in range(6):
        b.next_delay()
    b.reset()
    assert b.next_delay() == pytest.approx(0.25)


def test_bad_bounds_are_rejected():
    with pytest.raises(ValueError):
        JitteredBackoff(base=0)
    with pytest.raises(ValueError):
        JitteredBackoff(base=2, maximum=1)
