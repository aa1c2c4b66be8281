"""DNS resolution for STRICT_DNS and LOGICAL_DNS clusters, honouring Envoy's dns_lookup_family."""

from __future__ import annotations

import asyncio
import ipaddress
import socket

# Envoy's DnsLookupFamily names -> the families to ask, in order, and whether to stop at the first
# family that answers (AUTO / V4_PREFERRED) or merge both (ALL).
_FAMILIES = {
    "AUTO": ((socket.AF_INET6, socket.AF_INET), True),
    "V4_ONLY": ((socket.AF_INET,), True),
    "V6_ONLY": ((socket.AF_INET6,), True),
    "V4_PREFERRED": ((socket.AF_INET, socket.AF_INET6), True),
    "ALL": ((socket.AF_INET, socket.AF_INET6), False),
}


def is_ip(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
        return True
    except ValueError:
        return False


async def resolve(hostname: str, port: int, family: str = "AUTO") -> list[tuple[str, int]]:
    """All addresses of `hostname` (deduplicated, resolver order). Raises OSError when none."""
    if is_ip(hostname):
        return [(hostname, port)]
    loop = asyncio.get_running_loop()
    families, first_only = _FAMILIES[family]
    out: list[tuple[str, int]] = []
    last_error: OSError | None = None
    for fam in families:
        try:
            infos = await loop.getaddrinfo(hostname, port, family=fam, type=socket.SOCK_STREAM)
        except OSError as e:
            last_error = e
            continue
        for info in infos:
            addr = (info[4][0], port)
            if addr not in out:
                out.append(addr)
        if out and first_only:
            break
    if not out:
        raise last_error or OSError(f"no addresses for {hostname}")
    return out
