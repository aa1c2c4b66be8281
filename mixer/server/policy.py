"""``envoy.service.auth.v3.Authorization/Check``: policy decisions with a validity for the proxy's cache.

The validity goes in ``CheckResponse.dynamic_metadata`` with the top-level keys of docs/mixer.md:
``valid_duration_ms`` and ``valid_use_count`` (numbers), ``referenced_attributes`` (the attribute names the
decision read; the proxy keys its cache on their values), and ``mixer_rule`` (the deciding rule, on
denials). A denial answers the rule's gRPC status (PERMISSION_DENIED by default) with
``denied_response`` carrying the HTTP status (403 by default) and a text body.
"""

from __future__ import annotations

import logging

from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from google.protobuf import struct_pb2
from google.rpc import status_pb2

from isthmus.log import event
from mixer.adapters import policy
from mixer.config.model import GRPC_CODES

log = logging.getLogger("mixer.policy")
_CODE_NAMES = {v: k for k, v in GRPC_CODES.items()}


def to_response(decision: policy.Decision) -> external_auth_pb2.CheckResponse:
    meta = struct_pb2.Struct()
    meta.update(
        {
            "valid_duration_ms": round(decision.validity.duration_s * 1000),
            "valid_use_count": decision.validity.use_count,
            "referenced_attributes": list(decision.referenced),
        }
    )
    if decision.allowed:
        return external_auth_pb2.CheckResponse(
            status=status_pb2.Status(code=0),
            ok_response=external_auth_pb2.OkHttpResponse(),
            dynamic_metadata=meta,
        )
    meta.update({"mixer_rule": decision.rule})
    name = _CODE_NAMES.get(decision.status_code, str(decision.status_code))
    body = f"{name}: {decision.message}\n"
    denied = external_auth_pb2.DeniedHttpResponse(body=body)
    denied.status.code = decision.http_status
    denied.headers.add(header=base_pb2.HeaderValue(key="content-type", value="text/plain"))
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=decision.status_code, message=decision.message),
        denied_response=denied,
        dynamic_metadata=meta,
    )


class AuthorizationService(external_auth_pb2_grpc.AuthorizationServicer):
    def __init__(self, holder, metrics, denials) -> None:
        self.holder = holder
        self.metrics = metrics
        self.denials = denials

    async def Check(self, request, context):  # noqa: N802 (gRPC's naming)
        decision = policy.check(self.holder.current.policy, request)
        if decision.allowed:
            self.metrics.checks.labels("ok").inc()
        else:
            self.metrics.checks.labels("denied").inc()
            fields = {
                "rule": decision.rule,
                "message": decision.message,
                "http_status": decision.http_status,
                "source_principal": policy.attribute(request, "source.principal") or "",
                "source_ip": policy.attribute(request, "source.ip") or "",
                "host": policy.attribute(request, "request.host") or "",
                "path": policy.attribute(request, "request.path") or "",
            }
            self.denials.add(**fields)
            event(log, logging.DEBUG, "check.denied", **fields)
        return to_response(decision)
