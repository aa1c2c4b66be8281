"""istio.v1.auth.IstioCertificateService over gRPC: authenticate the caller, then let the CA sign.

Every refusal is one audit log line and one count by reason."""

from __future__ import annotations

import logging

import grpc

from api.istio.v1.auth import ca_pb2, ca_pb2_grpc
from citadel.ca.authority import CertificateAuthority
from citadel.ca.errors import INVALID_ARGUMENT, PERMISSION_DENIED, UNAUTHENTICATED, CaError
from citadel.server import auth
from citadel.server.metrics import CitadelMetrics
from isthmus.log import event

log = logging.getLogger("citadel.server")

STATUS = {
    INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
}


class CertificateService(ca_pb2_grpc.IstioCertificateServiceServicer):
    def __init__(self, ca: CertificateAuthority, token_key: bytes, metrics: CitadelMetrics) -> None:
        self.ca = ca
        self.token_key = token_key
        self.metrics = metrics

    def CreateCertificate(self, request, context):  # noqa: N802 (gRPC's naming)
        self.metrics.csr_count.inc()
        peer = context.peer()
        identity = None
        try:
            certs = context.auth_context().get("x509_pem_cert") or []
            try:
                identity, method = auth.authenticate(
                    self.ca, self.token_key, context.invocation_metadata(), certs[0] if certs else None
                )
            except CaError:
                self.metrics.authentication_failure_count.inc()
                raise
            chain = self.ca.sign(request.csr, identity, request.validity_duration)
        except CaError as e:
            self.metrics.csr_rejections.labels(reason=e.reason).inc()
            event(
                log,
                logging.WARNING,
                "audit.csr_rejected",
                reason=e.reason,
                code=STATUS[e.kind].name,
                peer=peer,
                identity=identity.uri if identity else "-",
                detail=e.message,
            )
            context.abort(STATUS[e.kind], e.message)
        self.metrics.success_cert_issuance_count.inc()
        event(
            log,
            logging.INFO,
            "audit.cert_issued",
            identity=identity.uri,
            auth=method,
            peer=peer,
            ttl=int(self.ca.lifetime(request.validity_duration)),
        )
        return ca_pb2.IstioCertificateResponse(cert_chain=chain)
