"""SPIFFE IDs of workloads: spiffe://<trust-domain>/ns/<namespace>/sa/<service-account> (pure)."""

from __future__ import annotations

import re
from dataclasses import dataclass

# DNS-label-ish names as Kubernetes allows for namespaces and service accounts
_NAME = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")
_TRUST_DOMAIN = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,253}[a-z0-9])?$")


@dataclass(frozen=True)
class Identity:
    trust_domain: str
    namespace: str
    service_account: str

    @property
    def uri(self) -> str:
        return f"spiffe://{self.trust_domain}/ns/{self.namespace}/sa/{self.service_account}"

    def __str__(self) -> str:
        return self.uri


def check_name(kind: str, value: str) -> str:
    if not _NAME.match(value or ""):
        raise ValueError(f"{kind} {value!r} is not a valid name (lower-case letters, digits, '-', '.')")
    return value


def check_trust_domain(value: str) -> str:
    if not _TRUST_DOMAIN.match(value or ""):
        raise ValueError(f"trust domain {value!r} is not valid (lower-case letters, digits, '.', '-', '_')")
    return value


def make(trust_domain: str, namespace: str, service_account: str) -> Identity:
    return Identity(
        check_trust_domain(trust_domain),
        check_name("namespace", namespace),
        check_name("service account", service_account),
    )


def parse(uri: str) -> Identity:
    """Parse a workload SPIFFE ID; raise ValueError saying what is wrong."""
    if not uri.startswith("spiffe://"):
        raise ValueError(f"{uri!r} is not a SPIFFE ID (expected spiffe://<trust-domain>/ns/<ns>/sa/<sa>)")
    trust_domain, _, path = uri[len("spiffe://") :].partition("/")
    parts = path.split("/")
    if len(parts) != 4 or parts[0] != "ns" or parts[2] != "sa":
        raise ValueError(
            f"{uri!r} is not a workload SPIFFE ID (expected spiffe://<trust-domain>/ns/<ns>/sa/<sa>)"
        )
    return make(trust_domain, parts[1], parts[3])
