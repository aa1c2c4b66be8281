"""``x-forwarded-client-cert`` as Envoy's HTTP connection manager builds it (pure).

Envoy's ``forward_client_cert_details``:

* SANITIZE (default): remove the header.
* FORWARD_ONLY: on mTLS, forward the client's header unchanged; otherwise remove it.
* APPEND_FORWARD: on mTLS, append this hop's element; otherwise remove it (Istio's sidecars).
* SANITIZE_SET: on mTLS, replace the header with this hop's element; otherwise remove it.
* ALWAYS_FORWARD_ONLY: forward it unchanged, whatever the connection.

This hop's element is ``By=<our URI SAN>;Hash=<sha256 of the peer certificate>`` followed by what
``set_current_client_cert_details`` asks for, in Envoy's order: ``Cert``, ``Chain``, ``Subject``,
``URI``, ``DNS``. Istio sets subject, dns and uri, giving
``By=spiffe://…/sa/reviews;Hash=…;Subject="";URI=spiffe://…/sa/productpage``.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from proxy.tls.der import der_to_pem
from proxy.tls.transport import TlsConnectionInfo

HEADER = "x-forwarded-client-cert"

SANITIZE, FORWARD_ONLY, APPEND_FORWARD, SANITIZE_SET, ALWAYS_FORWARD_ONLY = (
    "SANITIZE",
    "FORWARD_ONLY",
    "APPEND_FORWARD",
    "SANITIZE_SET",
    "ALWAYS_FORWARD_ONLY",
)
MODES = (SANITIZE, FORWARD_ONLY, APPEND_FORWARD, SANITIZE_SET, ALWAYS_FORWARD_ONLY)


@dataclass(frozen=True)
class XfccConfig:
    mode: str = SANITIZE
    subject: bool = False
    cert: bool = False
    chain: bool = False
    dns: bool = False
    uri: bool = False

    @classmethod
    def from_hcm(cls, hcm) -> XfccConfig:
        """From an ``HttpConnectionManager`` proto (its enum and ``set_current_client_cert_details``)."""
        mode = type(hcm).ForwardClientCertDetails.Name(hcm.forward_client_cert_details)
        d = hcm.set_current_client_cert_details
        return cls(
            mode=mode,
            subject=d.subject.value if d.HasField("subject") else False,
            cert=d.cert,
            chain=d.chain,
            dns=d.dns,
            uri=d.uri,
        )


def current_element(info: TlsConnectionInfo, config: XfccConfig, peer_chain_der: list[bytes] = ()) -> str:
    """This hop's XFCC element for an mTLS connection."""
    parts = []
    if info.local_uri_sans:
        parts.append(f"By={info.local_uri_sans[0]}")
    if info.peer_certificate_der:
        parts.append(f"Hash={info.sha256_peer_certificate_digest}")
    if config.cert and info.peer_certificate_der:
        parts.append(f'Cert="{_url_pem(info.peer_certificate_der)}"')
    if config.chain and info.peer_certificate_der:
        chain = list(peer_chain_der) or [info.peer_certificate_der]
        parts.append(f'Chain="{"".join(_url_pem(d) for d in chain)}"')
    if config.subject:
        parts.append(f'Subject="{info.peer_subject}"')
    if config.uri:
        # Envoy keeps the key even when the peer has no URI SAN.
        parts.append(f"URI={info.peer_uri_sans[0] if info.peer_uri_sans else ''}")
    if config.dns:
        parts.extend(f"DNS={d}" for d in info.peer_sans.dns)
    return ";".join(parts)


def _url_pem(der: bytes) -> str:
    return quote(der_to_pem(der), safe="")


def is_mtls(info: TlsConnectionInfo | None) -> bool:
    return info is not None and info.peer_certificate_presented


def apply(config: XfccConfig, existing: str | None, info: TlsConnectionInfo | None) -> str | None:
    """The header value the request goes upstream with (None: no header)."""
    mode = config.mode
    if mode == ALWAYS_FORWARD_ONLY:
        return existing
    if mode == SANITIZE or not is_mtls(info):
        return None
    if mode == FORWARD_ONLY:
        return existing
    memo = getattr(info, "memo", None)
    if memo is None:
        element = current_element(info, config)
    else:  # the same for every request of the connection
        element = memo.get(config)
        if element is None:
            element = memo[config] = current_element(info, config)
    if mode == APPEND_FORWARD and existing:
        return f"{existing},{element}"
    return element


def apply_to_headers(config: XfccConfig, headers, info: TlsConnectionInfo | None) -> None:
    """Mutate a ``proxy.core.headers.Headers`` (``get``/``set``/``remove``) in place."""
    values = headers.get_all(HEADER)
    new = apply(config, ",".join(values) if values else None, info)
    if new is None:
        headers.remove(HEADER)
    else:
        headers.set(HEADER, new)
