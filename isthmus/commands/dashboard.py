"""`isthmus dashboard`: check that mixer answers, print its dashboard's URL and open it in a browser
(like `istioctl dashboard`), unless told not to or there is no display to open it on."""

from __future__ import annotations

import argparse
import os
import sys
import webbrowser
from collections.abc import Mapping
from urllib.parse import urlsplit

import httpx

DEFAULT_MIXER = "http://127.0.0.1:20001"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "dashboard",
        help="open mixer's live dashboard of the mesh in a browser",
        description="Print the URL of mixer's dashboard (service graph, per-service table, denials, "
        "rate limits, quota, charts of the last 15 minutes) and open it in the default browser. "
        "Fails with a clear error when mixer does not answer.",
    )
    p.add_argument(
        "--mixer", default=DEFAULT_MIXER, metavar="URL", help=f"mixer's HTTP address ({DEFAULT_MIXER})"
    )
    p.add_argument("--no-browser", action="store_true", help="only print the URL")
    p.set_defaults(run=run, parser=p)


def dashboard_url(mixer: str) -> str:
    """The dashboard's URL for a mixer address given by the user; ValueError says what is wrong."""
    text = mixer.strip()
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"expected an http:// or https:// URL, got {mixer!r}")
    if not parts.hostname:
        raise ValueError(f"no host in {mixer!r}")
    try:
        parts.port  # noqa: B018 (urlsplit validates the port lazily)
    except ValueError:
        raise ValueError(f"bad port in {mixer!r}") from None
    if parts.query or parts.fragment:
        raise ValueError(f"expected mixer's base URL without a query or fragment, got {mixer!r}")
    path = parts.path.rstrip("/") + "/"
    return f"{parts.scheme}://{parts.netloc}{path}"


def can_open_browser(no_browser: bool, platform: str, env: Mapping[str, str]) -> bool:
    """Open a browser unless asked not to, or on a Unix without a graphical display (an SSH session)."""
    if no_browser:
        return False
    if platform.startswith(("linux", "freebsd", "openbsd", "netbsd")):
        return bool(env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"))
    return True


def check_mixer(url: str, timeout: float = 5.0) -> str | None:
    """None when mixer serves its dashboard at `url`, else why not (for the user)."""
    try:
        response = httpx.get(url, timeout=timeout)
    except httpx.HTTPError as e:
        return (
            f"mixer is not reachable at {url}: {e or type(e).__name__}. Is mixer running (python -m mixer)?"
        )
    if response.status_code != 200:
        return f"{url} answered HTTP {response.status_code}; is this mixer's HTTP address?"
    return None


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    try:
        url = dashboard_url(args.mixer)
    except ValueError as e:
        parser.error(f"--mixer: {e}")
    problem = check_mixer(url)
    if problem:
        print(f"isthmus dashboard: {problem}", file=sys.stderr)
        return 1
    print(f"Mixer dashboard: {url}", flush=True)
    if can_open_browser(args.no_browser, sys.platform, os.environ):
        if not webbrowser.open(url):
            print("(no browser could be started; open the URL above yourself)")
    return 0
