from proxy.config.errors import ConfigError
from proxy.xds import api
from proxy.xds.nack import error_detail
from proxy.xds.resources import ResourceDecodeError


def test_update_rejected_names_every_resource_and_problem():
    st = error_detail(api.LISTENER, api.UpdateRejected({"l2": "port 80 in use", "l1": "router is not last"}))
    assert st.code == 3  # INVALID_ARGUMENT
    assert st.message.splitlines() == ["LDS update rejected:", "l1: router is not last", "l2: port 80 in use"]


def test_config_error_keeps_its_field_path():
    st = error_detail(api.CLUSTER, ConfigError("clusters[backend].lb_policy", "MAGLEV is not supported"))
    assert "clusters[backend].lb_policy: MAGLEV is not supported" in st.message
    assert st.message.startswith("CDS update rejected")


def test_decode_error_and_unexpected_exceptions_are_reported_too():
    assert (
        "resources[2]: malformed"
        in error_detail(api.ROUTE, ResourceDecodeError("resources[2]", "malformed x")).message
    )
    assert "KeyError" in error_detail(api.ENDPOINT, KeyError("boom")).message
