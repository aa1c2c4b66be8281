"""Upstream HTTP calls: one shared httpx client per app, honouring HTTP_PROXY/NO_PROXY (trust_env)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import httpx

from isthmus.log import event

log = logging.getLogger("bookinfo.client")
# httpx logs every request at INFO; our own upstream.* events say what matters.
logging.getLogger("httpx").setLevel(logging.WARNING)


def make_client() -> httpx.AsyncClient:
    # trust_env: HTTP_PROXY/NO_PROXY from the environment decide whether calls go through a sidecar.
    return httpx.AsyncClient(trust_env=True, timeout=None, follow_redirects=False)


@dataclass(frozen=True)
class Fetched:
    """Outcome of one upstream call: `status` is the HTTP status (500 when no response came)."""

    status: int
    body: Any = None

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.body is not None


async def get_json(client: httpx.AsyncClient, url: str, headers: dict[str, str], timeout: float) -> Fetched:
    """GET url within `timeout` seconds in total. Never raises for network errors or bad JSON."""
    try:
        response = await asyncio.wait_for(client.get(url, headers=headers), timeout)
    except TimeoutError:
        event(log, logging.WARNING, "upstream.timeout", url=url, timeout_s=timeout)
        return Fetched(500)
    except httpx.HTTPError as e:
        event(log, logging.WARNING, "upstream.error", url=url, error=f"{type(e).__name__}: {e}")
        return Fetched(500)
    if response.status_code != 200:
        event(log, logging.WARNING, "upstream.status", url=url, status=response.status_code)
        return Fetched(response.status_code)
    try:
        return Fetched(200, response.json())
    except ValueError:
        event(log, logging.WARNING, "upstream.bad_json", url=url)
        return Fetched(500)
