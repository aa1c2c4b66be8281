"""``envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit``: quota decisions.

The answer follows envoyproxy/ratelimit: one status per request descriptor (``current_limit``,
``limit_remaining``, ``duration_until_reset`` for limited ones), ``overall_code`` OVER_LIMIT when any
descriptor is over. When the counter backend fails, the failure mode from the config applies; the
error is counted (``mixer_quota_backend_errors_total``) and logged once when the backend goes down and
once when it is back.
"""

from __future__ import annotations

import logging

from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from google.protobuf import duration_pb2

from isthmus.log import event
from mixer.adapters.quota import QuotaResult, QuotaService

log = logging.getLogger("mixer.quota")
RL = rls_pb2.RateLimitResponse
_UNITS = {
    "second": RL.RateLimit.SECOND,
    "minute": RL.RateLimit.MINUTE,
    "hour": RL.RateLimit.HOUR,
    "day": RL.RateLimit.DAY,
}


def to_response(result: QuotaResult) -> rls_pb2.RateLimitResponse:
    resp = RL(overall_code=RL.Code.Value(result.overall))
    for st in result.statuses:
        status = resp.statuses.add(code=RL.Code.Value(st.code))
        if st.limit is not None and not st.limit.unlimited:
            status.current_limit.requests_per_unit = st.limit.requests_per_unit
            status.current_limit.unit = _UNITS[st.limit.unit]
            status.limit_remaining = st.remaining
            status.duration_until_reset.CopyFrom(
                duration_pb2.Duration(seconds=int(st.reset_s), nanos=int(st.reset_s % 1 * 1e9))
            )
    return resp


class RateLimitService(rls_pb2_grpc.RateLimitServiceServicer):
    def __init__(self, holder, quota: QuotaService, metrics, ratelimited, usage) -> None:
        self.holder = holder
        self.quota = quota
        self.metrics = metrics
        self.ratelimited = ratelimited
        self.usage = usage
        self.backend_down = False

    async def ShouldRateLimit(self, request, context):  # noqa: N802 (gRPC's naming)
        config = self.holder.current.quota
        descriptors = [[(e.key, e.value) for e in d.entries] for d in request.descriptors]
        result = await self.quota.should_rate_limit(config, request.domain, descriptors, request.hits_addend)
        backend = self.quota.backend.name
        if result.backend_error is not None:
            self.metrics.quota_backend_errors.labels(backend, config.failure_mode).inc()
            self.metrics.quota_backend_up.labels(backend).set(0)
            if not self.backend_down:
                self.backend_down = True
                event(
                    log,
                    logging.ERROR,
                    "quota.backend_unavailable",
                    backend=backend,
                    error=result.backend_error,
                    failure_mode=config.failure_mode,
                )
        elif any(st.limit is not None for st in result.statuses):
            self.metrics.quota_backend_up.labels(backend).set(1)
            if self.backend_down:
                self.backend_down = False
                event(log, logging.INFO, "quota.backend_recovered", backend=backend)
        self.metrics.quota_requests.labels(request.domain, result.overall).inc()
        for descriptor, st in zip(descriptors, result.statuses, strict=True):
            if st.limit is None or st.limit.unlimited:
                continue
            text = ",".join(f"{k}={v}" for k, v in descriptor)
            if result.backend_error is None:
                self.usage.observe(
                    request.domain,
                    text,
                    st.used,
                    st.limit.requests_per_unit,
                    st.limit.unit,
                    st.reset_s,
                    st.shadow_over,
                )
            if st.shadow_over:
                self.metrics.quota_shadow_over.labels(request.domain).inc()
            if st.code == "OVER_LIMIT":
                self.ratelimited.add(
                    domain=request.domain,
                    descriptor=text,
                    limit=f"{st.limit.requests_per_unit}/{st.limit.unit}",
                    reason="backend unavailable (fail closed)" if result.backend_error else "over limit",
                )
        return to_response(result)
