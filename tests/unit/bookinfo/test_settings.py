import pytest

from bookinfo.common.settings import Upstream, listen_from_env, upstream_from_env


def test_defaults_are_istio_service_names_and_port_9080():
    assert upstream_from_env("details", {}) == Upstream("details", ("details",), 9080)
    assert listen_from_env({}) == ("0.0.0.0", 9080)


def test_hostname_port_and_services_domain():
    env = {"REVIEWS_HOSTNAME": "reviews", "REVIEWS_SERVICE_PORT": "9081", "SERVICES_DOMAIN": "default.svc"}
    up = upstream_from_env("reviews", env)
    assert up.base_urls() == ["http://reviews.default.svc:9081"]


def test_comma_separated_hosts_give_one_url_each():
    up = upstream_from_env("reviews", {"REVIEWS_HOSTNAME": "127.0.0.12, 127.0.0.13,127.0.0.14"})
    assert up.base_urls() == ["http://127.0.0.12:9080", "http://127.0.0.13:9080", "http://127.0.0.14:9080"]


@pytest.mark.parametrize(
    "env, message",
    [
        ({"DETAILS_SERVICE_PORT": "http"}, "DETAILS_SERVICE_PORT must be a port number"),
        ({"DETAILS_SERVICE_PORT": "70000"}, "between 0 and 65535"),
        ({"DETAILS_HOSTNAME": " , "}, "DETAILS_HOSTNAME names no host"),
    ],
)
def test_bad_values_are_reported_by_name(env, message):
    with pytest.raises(ValueError, match=message):
        upstream_from_env("details", env)


def test_listen_env():
    assert listen_from_env({"LISTEN_ADDRESS": "127.0.0.10", "LISTEN_PORT": "19080"}) == ("127.0.0.10", 19080)
    with pytest.raises(ValueError, match="LISTEN_PORT"):
        listen_from_env({"LISTEN_PORT": "x"})
