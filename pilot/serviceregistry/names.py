"""Host names as Istio resolves them, and service-port protocols as Istio infers them."""

from __future__ import annotations

# Istio's protocol names, matched against a port name's prefix ("http", "http-web", "grpc-foo").
_PROTOCOLS = ("HTTP2", "HTTPS", "HTTP", "GRPC-WEB", "GRPC", "TCP", "TLS", "MONGO", "MYSQL", "REDIS", "UDP")


def resolve_short_name(host: str, namespace: str, domain: str = "cluster.local") -> str:
    """Istio's ResolveShortnameToFQDN: a name without a dot is a service of ``namespace``
    (``reviews`` -> ``reviews.<ns>.svc.<domain>``); wildcards and dotted names stay as written."""
    host = host.strip().lower()
    if not host or host == "*" or "." in host:
        return host
    return f"{host}.{namespace}.svc.{domain}"


def protocol_from_port_name(name: str, default: str = "TCP") -> str:
    """Istio's convention: the protocol is the port name up to the first ``-`` (``http-web``: HTTP).
    Unknown prefixes are ``default`` (Istio's "auto" detection is not implemented; we fall back to TCP)."""
    prefix = name.split("-", 1)[0].upper() if name else ""
    if name.upper().startswith("GRPC-WEB"):
        return "GRPC-WEB"
    return prefix if prefix in _PROTOCOLS else default


def is_http(protocol: str) -> bool:
    return protocol.upper() in ("HTTP", "HTTP2", "GRPC", "GRPC-WEB")


def host_matches(pattern: str, host: str) -> bool:
    """Istio's host matching: ``*`` matches all, ``*.example.com`` matches any name ending ``.example.com``."""
    if pattern == "*" or pattern == host:
        return True
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    if host.startswith("*.") and pattern.endswith(host[1:]):
        return True
    return False
