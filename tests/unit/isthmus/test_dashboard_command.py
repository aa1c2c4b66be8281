"""`isthmus dashboard`: the URL it prints, when it opens a browser, and its errors (no sockets)."""

import httpx
import pytest

from isthmus.cli import main
from isthmus.commands import dashboard


@pytest.mark.parametrize(
    "given, url",
    [
        ("http://127.0.0.1:20001", "http://127.0.0.1:20001/"),
        ("http://127.0.0.1:20001/", "http://127.0.0.1:20001/"),
        ("127.0.0.1:20001", "http://127.0.0.1:20001/"),
        ("https://mixer.example:8443/mesh", "https://mixer.example:8443/mesh/"),
        ("http://[::1]:20001", "http://[::1]:20001/"),
    ],
)
def test_dashboard_url(given, url):
    assert dashboard.dashboard_url(given) == url


@pytest.mark.parametrize(
    "given, why",
    [
        ("ftp://127.0.0.1:20001", "http:// or https://"),
        ("http://", "no host"),
        ("http://127.0.0.1:99999", "bad port"),
        ("http://127.0.0.1:20001/?x=1", "query"),
    ],
)
def test_bad_mixer_urls_are_rejected(given, why):
    with pytest.raises(ValueError, match=why):
        dashboard.dashboard_url(given)


@pytest.mark.parametrize(
    "no_browser, platform, env, opens",
    [
        (False, "linux", {"DISPLAY": ":0"}, True),
        (False, "linux", {"WAYLAND_DISPLAY": "wayland-0"}, True),
        (False, "linux", {}, False),  # an SSH session: print only
        (True, "linux", {"DISPLAY": ":0"}, False),
        (False, "darwin", {}, True),
        (False, "win32", {}, True),
    ],
)
def test_can_open_browser(no_browser, platform, env, opens):
    assert dashboard.can_open_browser(no_browser, platform, env) is opens


class Opened:
    def __init__(self, result=True):
        self.urls, self.result = [], result

    def __call__(self, url):
        self.urls.append(url)
        return self.result


def test_prints_the_url_and_opens_it(monkeypatch, capsys):
    opened = Opened()
    monkeypatch.setattr(dashboard, "check_mixer", lambda url: None)
    monkeypatch.setattr(dashboard.webbrowser, "open", opened)
    monkeypatch.setattr(dashboard.sys, "platform", "linux")
    monkeypatch.setenv("DISPLAY", ":0")
    assert main(["dashboard", "--mixer", "http://127.0.0.1:21001"]) == 0
    assert capsys.readouterr().out == "Mixer dashboard: http://127.0.0.1:21001/\n"
    assert opened.urls == ["http://127.0.0.1:21001/"]


def test_no_browser_only_prints(monkeypatch, capsys):
    opened = Opened()
    monkeypatch.setattr(dashboard, "check_mixer", lambda url: None)
    monkeypatch.setattr(dashboard.webbrowser, "open", opened)
    monkeypatch.setenv("DISPLAY", ":0")
    assert main(["dashboard", "--no-browser"]) == 0
    assert capsys.readouterr().out == "Mixer dashboard: http://127.0.0.1:20001/\n"
    assert opened.urls == []


def test_a_browser_that_does_not_start_is_not_an_error(monkeypatch, capsys):
    monkeypatch.setattr(dashboard, "check_mixer", lambda url: None)
    monkeypatch.setattr(dashboard.webbrowser, "open", Opened(result=False))
    monkeypatch.setattr(dashboard.sys, "platform", "darwin")
    assert main(["dashboard"]) == 0
    assert "open the URL above yourself" in capsys.readouterr().out


def test_unreachable_mixer_exits_1_with_the_reason(monkeypatch, capsys):
    def refuse(url, timeout):
        raise httpx.ConnectError("[Errno 111] Connection refused")

    monkeypatch.setattr(dashboard.httpx, "get", refuse)
    assert main(["dashboard", "--no-browser"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "mixer is not reachable at http://127.0.0.1:20001/: [Errno 111] Connection refused" in captured.err


def test_something_else_answering_is_reported(monkeypatch):
    monkeypatch.setattr(dashboard.httpx, "get", lambda url, timeout: httpx.Response(404))
    assert "answered HTTP 404" in dashboard.check_mixer("http://127.0.0.1:20001/")


def test_bad_url_exits_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["dashboard", "--mixer", "ftp://x"])
    assert e.value.code == 2 and "--mixer" in capsys.readouterr().err
