"""Debounce and merge with a fake clock: quiet period, max wait, what a merged request carries."""

from pilot.model.config import ConfigKey
from pilot.xds.debounce import Debouncer, PushRequest, config_push, endpoint_push, service_push

VS = ConfigKey("VirtualService", "default", "reviews")
DR = ConfigKey("DestinationRule", "default", "reviews")


def test_nothing_pending_has_no_deadline():
    d = Debouncer(0.1, 1.0)
    assert d.deadline() is None and not d.due(100.0) and d.take() is None


def test_quiet_period_restarts_with_each_event():
    d = Debouncer(0.1, 1.0)
    d.add(config_push([VS], 0.0), 0.0)
    assert d.deadline() == 0.1
    d.add(config_push([DR], 0.05), 0.05)
    assert not d.due(0.1)  # the second event pushed the deadline out
    assert d.due(0.16)
    merged = d.take()
    assert merged.config_keys == {VS, DR} and merged.count == 2 and merged.start == 0.0
    assert d.deadline() is None


def test_max_wait_bounds_a_steady_stream_of_events():
    d = Debouncer(0.1, 1.0)
    t = 0.0
    while t < 0.95:
        d.add(config_push([VS], t), t)
        t += 0.05
    assert not d.due(0.99)
    assert d.due(1.0)  # events keep coming, but the batch is due 1 s after its first event
    assert d.take().count == 19


def test_endpoint_only_stays_eds_until_a_full_change_joins():
    eds = endpoint_push(["a.default.svc.cluster.local"], 0.0)
    assert not eds.full
    merged = eds.merge(endpoint_push(["b"], 0.1))
    assert not merged.full and merged.eds_hosts == {"a.default.svc.cluster.local", "b"}
    full = merged.merge(config_push([VS], 0.2))
    assert full.full and full.config_keys == {VS} and full.eds_hosts == merged.eds_hosts


def test_unknown_scope_absorbs_known_keys():
    everything = PushRequest(full=True, config_keys=None)
    assert everything.merge(config_push([VS], 0)).config_keys is None
    assert config_push([VS], 0).merge(everything).config_keys is None


def test_service_changes_are_full_pushes_with_services():
    merged = service_push(["x"], 0.0).merge(endpoint_push(["y"], 0.0))
    assert merged.full and merged.services == {"x"} and merged.eds_hosts == {"y"}
    assert merged.reasons == {"services", "endpoints"}
