from isthmus.launcher.supervisor import RESET, child_env, prefix
from isthmus.launcher.topology import bookinfo


def test_child_env_drops_inherited_proxies_and_adds_workload_env():
    w = bookinfo().get("details")
    env = child_env(
        {"PATH": "/bin", "HTTP_PROXY": "http://corp:3128", "no_proxy": "x", "LISTEN_PORT": "1"}, w, "debug"
    )
    assert "HTTP_PROXY" not in env and "no_proxy" not in env
    assert env["PATH"] == "/bin" and env["PYTHONUNBUFFERED"] == "1" and env["ISTHMUS_LOG_LEVEL"] == "debug"
    assert env["LISTEN_PORT"] == "9080" and env["LISTEN_ADDRESS"] == "127.0.0.11"


def test_prefix_is_aligned_and_optionally_coloured():
    assert prefix("details", 11, None) == "details     | "
    coloured = prefix("details", 11, "\033[36m")
    assert coloured.startswith("\033[36mdetails") and RESET in coloured
