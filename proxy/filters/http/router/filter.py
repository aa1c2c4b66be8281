"""The router filter: picks the cluster and host, forwards the request, retries, times out, mirrors,
and streams the response back, with Envoy's status codes, bodies, response flags and stats."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

from proxy.core.headers import Headers
from proxy.filters.http.base import STOP, FilterStatus, HttpFilter
from proxy.router.actions import shadow_authority
from proxy.upstream.errors import PoolOverflow, UpstreamConnectError, UpstreamError
from proxy.upstream.lb import LbContext

_new = object.__new__  # slotted per-request objects made without their __init__ frame

log = logging.getLogger(__name__)

NO_HEALTHY_UPSTREAM = b"no healthy upstream"
UPSTREAM_TIMEOUT = b"upstream request timeout"
RESET_BEFORE_HEADERS = "upstream connect error or disconnect/reset before headers. reset reason: "

# Connection-specific headers never forwarded (the codec frames bodies itself).
_HOP_BY_HOP = (
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "upgrade",
    "proxy-authenticate",
    "trailer",
)
_HOP_BY_HOP_SET = frozenset(_HOP_BY_HOP)
_HOP_BY_HOP_UPGRADE = _HOP_BY_HOP_SET - {"upgrade", "connection"}  # a 101 keeps these two
_BODYLESS_STATUS = (204, 304)
_UNSET = object()
# The running task of a loop: asyncio.current_task(loop) without its Python frame (the same dict).
_tasks = getattr(asyncio.tasks, "_current_tasks", None)
_current_task = _tasks.get if _tasks is not None else asyncio.current_task


class _ClusterRouterStats:
    """Stats the router charges under ``cluster.<name>.``; per-code counters made on first use."""

    __slots__ = (
        "scope",
        "retry",
        "retry_success",
        "retry_limit_exceeded",
        "retry_overflow",
        "timeout",
        "per_try_timeout",
        "rq_time",
        "completed",
        "_codes",
        "_retry_codes",
        "none_healthy",
    )

    def __init__(self, scope) -> None:
        self.scope = scope
        self.retry = scope.counter("upstream_rq_retry")
        self.retry_success = scope.counter("upstream_rq_retry_success")
        self.retry_limit_exceeded = scope.counter("upstream_rq_retry_limit_exceeded")
        self.retry_overflow = scope.counter("upstream_rq_retry_overflow")
        self.timeout = scope.counter("upstream_rq_timeout")
        self.per_try_timeout = scope.counter("upstream_rq_per_try_timeout")
        self.rq_time = scope.histogram("upstream_rq_time")
        self.completed = scope.counter("upstream_rq_completed")
        self.none_healthy = scope.counter("upstream_cx_none_healthy")
        self._codes: dict[int, tuple] = {}
        self._retry_codes: dict[int, tuple] = {}

    def charge(self, status: int, dynamic: bool, retried: bool = False) -> None:
        """Envoy's chargeBasicResponseStat: ``upstream_rq_<code>``, ``upstream_rq_<N>xx`` and
        ``upstream_rq_completed``; a response that is retried is charged under ``retry.``."""
        cache = self._retry_codes if retried else self._codes
        counters = cache.get(status)
        if counters is None:
            prefix = "retry." if retried else ""
            s = self.scope
            counters = cache[status] = (
                s.counter(f"{prefix}upstream_rq_{status}"),
                s.counter(f"{prefix}upstream_rq_{status // 100}xx"),
                s.counter(f"{prefix}upstream_rq_completed"),
            )
        if dynamic:  # plain adds on the counters' values: no call per counter on the request path
            counters[0].value += 1
            counters[1].value += 1
        counters[2].value += 1


class _HcmRouterStats:
    """Router stats under ``http.<stat_prefix>.`` (Envoy's RouterStats)."""

    __slots__ = (
        "no_route",
        "no_cluster",
        "rq_redirect",
        "rq_direct_response",
        "rq_total",
        "rq_reset_after_downstream_response_started",
    )

    def __init__(self, scope) -> None:
        for name in self.__slots__:
            setattr(self, name, scope.counter(name))


class RouterConfig:
    """Shared, immutable after construction (apart from its stat caches)."""

    def __init__(
        self, ctx, *, dynamic_stats: bool = True, suppress_envoy_headers: bool = False, rand=None
    ) -> None:
        self.ctx = ctx
        self.dynamic_stats = dynamic_stats
        self.suppress_envoy_headers = suppress_envoy_headers
        self.rand = rand or random.getrandbits  # rand(bits) -> int; injectable for tests
        self._cluster_stats: dict[str, _ClusterRouterStats] = {}
        self._hcm_stats: dict[str, _HcmRouterStats] = {}
        self._last_hcm: tuple = (_UNSET, None)  # (the last HCM config asked about, its stats)
        self.mirror_tasks: set[asyncio.Task] = set()
        self._filter = RouterFilter(self)  # stateless: one instance serves every stream

    @property
    def cluster_manager(self):
        cm = self.ctx.cluster_manager
        if cm is None and self.ctx.server is not None:
            cm = getattr(self.ctx.server, "cluster_manager", None)
        return cm

    def cluster_stats(self, cluster) -> _ClusterRouterStats:
        scope = cluster.stats.scope
        s = self._cluster_stats.get(scope.prefix)
        if s is None:
            s = self._cluster_stats[scope.prefix] = _ClusterRouterStats(scope)
        return s

    def hcm_stats(self, stream) -> _HcmRouterStats:
        hcm_config = stream.config
        last = self._last_hcm
        if last[0] is hcm_config:  # the usual case: the same connection manager config as last time
            return last[1]
        prefix = getattr(hcm_config, "stat_prefix", "") or ""
        s = self._hcm_stats.get(prefix)
        if s is None:
            s = self._hcm_stats[prefix] = _HcmRouterStats(self.ctx.stats.scope(f"http.{prefix}."))
        self._last_hcm = (hcm_config, s)
        return s


class RouterFilterFactory:
    __slots__ = ("config",)

    def __init__(self, config: RouterConfig) -> None:
        self.config = config

    def create(self) -> RouterFilter:
        # The router filter keeps no per-request state (that is in _UpstreamRequest and locals), so
        # every stream shares its config's one instance.
        return self.config._filter


class _UpstreamRequest:
    """What one proxied request carries through its upstream attempts (retries included)."""

    __slots__ = (
        "stream", "route", "action", "weighted", "cluster", "cstats", "up_headers", "body", "headers",
        "lb_ctx", "deadline", "per_try", "retries_left", "retry", "vh", "loop", "retries_done",
        "retry_slot_held",
    )  # fmt: skip

    def __init__(
        self, stream, route, action, weighted, cluster, cstats, up_headers, body, headers, lb_ctx, deadline,
        per_try, retries_left, retry, vh, loop,
    ) -> None:  # fmt: skip
        self.stream = stream
        self.route = route
        self.action = action
        self.weighted = weighted
        self.cluster = cluster
        self.cstats = cstats
        self.up_headers = up_headers  # the headers every attempt sends (copied when one rewrites)
        self.body = body
        self.headers = headers  # the downstream request headers (after finalisation)
        self.lb_ctx = lb_ctx
        self.deadline = deadline  # loop time of the route timeout, or None
        self.per_try = per_try
        self.retries_left = retries_left
        self.retry = retry
        self.vh = vh
        self.loop = loop
        self.retries_done = 0
        self.retry_slot_held = False  # a circuit-breaker retry slot (max_retries) is taken


class _Attempt:
    """Outcome of one upstream try."""

    __slots__ = ("response", "error", "timed_out", "per_try_timed_out", "idle_timed_out")

    def __init__(
        self, response=None, error=None, timed_out=False, per_try_timed_out=False, idle_timed_out=False
    ) -> None:
        self.response = response
        self.error = error
        self.timed_out = timed_out
        self.per_try_timed_out = per_try_timed_out
        self.idle_timed_out = idle_timed_out


def _expire(task: asyncio.Task, fired: list) -> None:
    if not task.done():
        fired.append(True)
        task.cancel()


class RouterFilter(HttpFilter):
    __slots__ = ("config",)

    def __init__(self, config: RouterConfig) -> None:
        self.config = config

    # ------------------------------------------------------------------------------------------
    async def on_request_headers(self, stream, end_stream: bool) -> FilterStatus:
        cfg = self.config
        si = stream.stream_info
        hcm_stats = cfg.hcm_stats(stream)
        route = stream.route
        if route is None:
            hcm_stats.no_route.inc()
            await stream.send_local_reply(404, b"", flag="NR", details="route_not_found")
            return STOP
        si.route_name = route.name or None
        headers = stream.request_headers

        if route.direct_response is not None:
            hcm_stats.rq_direct_response.inc()
            dr = route.direct_response
            await stream.send_local_reply(
                dr.status, dr.body, details="direct_response", headers=self._local_reply_headers(route, si)
            )
            return STOP
        if route.redirect is not None:
            hcm_stats.rq_redirect.inc()
            extra = self._local_reply_headers(route, si) or {}
            extra["location"] = route.redirect_location(headers)
            await stream.send_local_reply(
                route.redirect.response_code, b"", details="direct_response", headers=extra
            )
            return STOP

        action = route.action
        cluster_name, weighted = action.select_cluster(headers, cfg.rand(63))
        si.upstream_cluster = cluster_name or None
        cm = cfg.cluster_manager
        cluster = cm.get(cluster_name) if (cm is not None and cluster_name) else None
        if cluster is None:
            hcm_stats.no_cluster.inc()
            await stream.send_local_reply(
                action.cluster_not_found_code, b"", flag="NC", details="cluster_not_found"
            )
            return STOP
        hcm_stats.rq_total.value += 1
        await self._proxy(stream, route, action, weighted, cluster, end_stream)
        return STOP

    def _local_reply_headers(self, route, si) -> dict[str, str] | None:
        if not route.response_mutations:
            return None
        h = Headers()
        for m in route.response_mutations:
            m.apply(h, si)
        return dict(h.items())

    # ------------------------------------------------------------------------------------------
    def _finalize_request_headers(self, stream, route, action, weighted) -> tuple[Headers, dict]:
        """Envoy's finalizeRequestHeaders, in place on the downstream request headers (as Envoy does:
        the access log's %REQ(:PATH)% then shows the rewritten path). Returns the headers and a dict
        of their names (for presence checks only: a value is read from the headers)."""
        cfg = self.config
        headers = stream.request_headers
        si = stream.stream_info
        items = headers.items()
        if len(items) > 1 and items[1][0] == ":path":  # the codec's order
            full_path = items[1][1] or "/"
        else:
            full_path = headers.get(":path") or "/"
        new_path = route.rewrite_path(full_path)
        if new_path is not None:
            if not cfg.suppress_envoy_headers:
                headers.set("x-envoy-original-path", full_path)
            headers.set(":path", new_path)
        host_rewrite = (
            weighted.host_rewrite
            if weighted is not None and weighted.host_rewrite
            else action.host_rewrite_literal
        )
        if host_rewrite:
            self._rewrite_host(headers, host_rewrite, action)
        if weighted is not None and weighted.request_mutation is not None and not route.most_specific_wins:
            weighted.request_mutation.apply(headers, si)
        for m in route.request_mutations:
            m.apply(headers, si)
        if weighted is not None and weighted.request_mutation is not None and route.most_specific_wins:
            weighted.request_mutation.apply(headers, si)
        names = dict(headers.items())  # one C call; kept up to date below
        if ":scheme" in names and "x-forwarded-proto" not in names:
            scheme = headers.get(":scheme")
            headers.add("x-forwarded-proto", scheme)
            names["x-forwarded-proto"] = scheme
        timeout = action.timeout
        retry = action.retry_policy
        expected = retry.per_try_timeout if retry is not None and retry.per_try_timeout else timeout
        if expected and not cfg.suppress_envoy_headers:
            ms = str(int(expected * 1000))
            if "x-envoy-expected-rq-timeout-ms" in names:
                headers.set("x-envoy-expected-rq-timeout-ms", ms)
            else:
                headers.add("x-envoy-expected-rq-timeout-ms", ms)  # what set does for a new name
            names["x-envoy-expected-rq-timeout-ms"] = ms
        return headers, names

    @staticmethod
    def _rewrite_host(headers: Headers, new_host: str, action) -> None:
        if action.append_x_forwarded_host:
            old = headers.get(":authority")
            if old:
                headers.add("x-forwarded-host", old)
        headers.set(":authority", new_host)

    @staticmethod
    def _upstream_headers(headers: Headers, upgrade: bool, names: dict | None = None) -> Headers:
        """A copy without connection-specific headers (keeping Upgrade for an upgrade request).
        `names`: the headers' names, when the caller has them."""
        if not upgrade:
            if names is not None:
                if _HOP_BY_HOP_SET.isdisjoint(names):
                    return headers.copy()  # the usual case: keeps the received head's raw lines
            else:
                for k, _ in headers.items():
                    if k in _HOP_BY_HOP:
                        break
                else:
                    return headers.copy()
        items = []
        for k, v in headers.items():
            if k in _HOP_BY_HOP:
                if upgrade and k == "upgrade":
                    items.append((k, v))
                elif k == "te" and v.lower() == "trailers":
                    items.append((k, v))
                continue
            items.append((k, v))
        if upgrade:
            items.append(("connection", "upgrade"))
        return Headers.from_lowercase(items)

    async def _read_body(self, stream, limit: int) -> tuple[bytes | None, Any]:
        """Buffer the request body up to `limit` bytes. Returns (body, None) when it fits, or
        (None, iterator) that replays what was read and streams the rest."""
        it = stream.request_body().__aiter__()
        chunks: list[bytes] = []
        size = 0
        async for chunk in it:
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:

                async def replay(first=chunks, rest=it):
                    for c in first:
                        yield c
                    async for c in rest:
                        yield c

                return None, replay()
        return b"".join(chunks), None

    # ------------------------------------------------------------------------------------------
    async def _proxy(self, stream, route, action, weighted, cluster, end_stream: bool) -> None:
        cfg = self.config
        hcm = getattr(stream, "hcm", None)  # its loop: get_running_loop() is a getpid() syscall on 3.11
        loop = hcm.loop if hcm is not None else asyncio.get_running_loop()
        cstats = cfg._cluster_stats.get(cluster.stats.scope.prefix)  # cfg.cluster_stats(cluster), inline
        if cstats is None:
            cstats = cfg.cluster_stats(cluster)
        headers, names = self._finalize_request_headers(stream, route, action, weighted)
        upgrade = "upgrade" in names and "upgrade" in (headers.get("connection") or "").lower()
        retry = action.retry_policy
        mirrors = action.mirrors

        # The request body: buffered when a retry or a mirror may need it again.
        # (The connection manager strips Transfer-Encoding; end_stream says whether a body follows.)
        has_body = not end_stream and not upgrade and headers.get("content-length") != "0"
        if "transfer-encoding" in names:
            headers.remove("transfer-encoding")
            del names["transfer-encoding"]
        body: Any = None
        if has_body:
            if retry is not None or mirrors:
                limit = getattr(stream.config, "buffer_limit", 1024 * 1024) or 1024 * 1024
                body, streaming = await self._read_body(stream, limit)
                if body is None:  # too large to buffer: no retries, no mirrors (as Envoy)
                    body, retry, mirrors = streaming, None, ()
            else:
                body = stream.request_body()
        up_headers = self._upstream_headers(headers, upgrade, names)
        if isinstance(body, bytes) and "content-length" not in up_headers:
            up_headers.set("content-length", str(len(body)))

        if mirrors:
            self._start_mirrors(stream, mirrors, up_headers, body, action)

        hash_key = (
            action.hash_key(headers, getattr(stream.connection, "remote_address", None))
            if action.hash_policies
            else None
        )
        lb_ctx = LbContext(hash_key, stream.connection, headers)
        timeout = action.timeout
        deadline = loop.time() + timeout if timeout else None
        per_try = retry.per_try_timeout if retry is not None else None
        # _UpstreamRequest(...) without its __init__ frame: every slot set, as __init__ sets them.
        rq = _new(_UpstreamRequest)
        rq.stream = stream
        rq.route = route
        rq.action = action
        rq.weighted = weighted
        rq.cluster = cluster
        rq.cstats = cstats
        rq.up_headers = up_headers
        rq.body = body
        rq.headers = headers
        rq.lb_ctx = lb_ctx
        rq.deadline = deadline
        rq.per_try = per_try
        rq.retries_left = retry.num_retries if retry is not None else 0
        rq.retry = retry
        rq.vh = route.virtual_host
        rq.loop = loop
        rq.retries_done = 0
        rq.retry_slot_held = False
        try:
            await self._attempts(rq)
        finally:
            if rq.retry_slot_held:
                cluster.resources.retries.dec()

    async def _attempts(self, rq: _UpstreamRequest) -> None:
        stream, route, action, weighted, cluster = rq.stream, rq.route, rq.action, rq.weighted, rq.cluster
        cstats, up_headers, body, headers, lb_ctx = rq.cstats, rq.up_headers, rq.body, rq.headers, rq.lb_ctx
        deadline, per_try, retry, vh, loop = rq.deadline, rq.per_try, rq.retry, rq.vh, rq.loop
        resources = cluster.resources
        cfg = self.config
        si = stream.stream_info
        while True:
            host = cluster.choose_host(lb_ctx)
            if host is None:
                cstats.none_healthy.inc()
                await stream.send_local_reply(
                    503, NO_HEALTHY_UPSTREAM, flag="UH", details="no_healthy_upstream"
                )
                return
            si.upstream_host = host.address_str
            si.upstream_request_attempts += 1
            attempt_headers = up_headers
            if (action.auto_host_rewrite and host.hostname) or vh.include_request_attempt_count:
                attempt_headers = up_headers.copy()
                if action.auto_host_rewrite and host.hostname:
                    self._rewrite_host(attempt_headers, host.hostname, action)
                if vh.include_request_attempt_count:
                    attempt_headers.set("x-envoy-attempt-count", str(si.upstream_request_attempts))
            started = time.monotonic()
            attempt = await self._attempt(
                stream,
                cluster.http_pool(host),
                attempt_headers,
                body,
                loop,
                deadline,
                per_try,
                action.idle_timeout or None,
            )
            if rq.retry_slot_held:
                resources.retries.dec()
                rq.retry_slot_held = False

            # Decide: done, retry, or fail.
            resp = attempt.response
            retriable = False
            if resp is not None:
                retriable = retry is not None and resp.status != 101 and retry.retriable_status(resp.status)
            elif attempt.per_try_timed_out:
                cstats.per_try_timeout.inc()
                host.stats.rq_timeout += 1
                retriable = retry is not None and retry.retriable_reset(False)
            elif attempt.error is not None and not isinstance(attempt.error, PoolOverflow):
                retriable = retry is not None and retry.retriable_reset(
                    isinstance(attempt.error, UpstreamConnectError)
                )

            if retriable and rq.retries_left > 0 and not attempt.timed_out:
                if not resources.retries.can_create():
                    cstats.retry_overflow.inc()
                else:
                    rq.retries_left -= 1
                    rq.retries_done += 1
                    if resp is not None:
                        cstats.charge(resp.status, cfg.dynamic_stats, retried=True)
                        resp.discard()
                    elif attempt.error is not None or attempt.per_try_timed_out:
                        cstats.charge(
                            504 if attempt.per_try_timed_out else 503, cfg.dynamic_stats, retried=True
                        )
                    cstats.retry.inc()
                    resources.retries.inc()
                    rq.retry_slot_held = True
                    pause = retry.backoff(rq.retries_done, cfg.rand(32))
                    if deadline is not None and loop.time() + pause >= deadline:
                        await self._timeout_reply(stream, cstats, host)
                        return
                    if pause:
                        await asyncio.sleep(pause)
                    continue
            elif retriable and rq.retries_left == 0 and retry is not None:
                si.set_flag("URX")
                cstats.retry_limit_exceeded.inc()

            if resp is None:
                if attempt.idle_timed_out:
                    # The route's idle_timeout (Envoy's per-route stream idle timeout) before any response.
                    await stream.send_local_reply(
                        408, b"stream timeout", flag="SI", details="stream_idle_timeout"
                    )
                    return
                if attempt.timed_out or attempt.per_try_timed_out:
                    if attempt.timed_out:
                        host.stats.rq_timeout += 1
                    await self._timeout_reply(stream, cstats, host)
                    return
                await self._reset_reply(stream, cstats, attempt.error)
                return
            if rq.retries_done:
                cstats.retry_success.inc()
            await self._forward_response(
                stream,
                route,
                weighted,
                resp,
                cstats,
                started,
                deadline,
                loop,
                headers,
                action.idle_timeout or None,
            )
            return

    async def _attempt(self, stream, pool, headers, body, loop, deadline, per_try, idle) -> _Attempt:
        wait = None
        bound = "global"
        if deadline is not None:
            wait = deadline - loop.time()
        if per_try is not None and (wait is None or per_try < wait):
            wait, bound = per_try, "per_try"
        if idle is not None and (wait is None or idle < wait):
            wait, bound = idle, "idle"
        if wait is None:
            try:
                a = _new(_Attempt)  # _Attempt(response) without its __init__ frame
                a.response = await pool.request(headers, body)
                a.error = None
                a.timed_out = a.per_try_timed_out = a.idle_timed_out = False
                return a
            except UpstreamError as e:
                return _Attempt(error=e)
        if wait <= 0:
            return _Attempt(timed_out=True)
        # A deadline that cancels this task (what asyncio.timeout does, without its objects): the
        # connection manager's one lazily re-armed deadline timer when there is one (no timer armed
        # and cancelled per request), else a timer handle.
        task = _current_task(loop)
        fired = []
        timers = getattr(stream, "hcm", None)
        if timers is not None:
            timers.set_deadline(loop.time() + wait, _expire, task, fired)
            handle = timers
        else:
            handle = loop.call_at(loop.time() + wait, _expire, task, fired)
        try:
            a = _new(_Attempt)  # as above
            a.response = await pool.request(headers, body)
            a.error = None
            a.timed_out = a.per_try_timed_out = a.idle_timed_out = False
            return a
        except asyncio.CancelledError:
            if not fired or task.uncancel() > 0:
                raise  # cancelled from outside (stream reset), not by our timer
            return _Attempt(
                per_try_timed_out=bound == "per_try",
                timed_out=bound == "global",
                idle_timed_out=bound == "idle",
            )
        except UpstreamError as e:
            return _Attempt(error=e)
        finally:
            if handle is timers:
                timers.clear_deadline(fired)
            else:
                handle.cancel()

    async def _timeout_reply(self, stream, cstats, host) -> None:
        cstats.timeout.inc()
        cstats.charge(504, self.config.dynamic_stats)
        await stream.send_local_reply(504, UPSTREAM_TIMEOUT, flag="UT", details="upstream_response_timeout")

    async def _reset_reply(self, stream, cstats, error: UpstreamError) -> None:
        cstats.charge(503, self.config.dynamic_stats)
        reason = error.reset_reason or "connection termination"
        flag = error.flag or "UC"
        extra = {"x-envoy-overloaded": "true"} if isinstance(error, PoolOverflow) else None
        details = "upstream_reset_before_response_started{" + reason.replace(" ", "_") + "}"
        await stream.send_local_reply(
            503, RESET_BEFORE_HEADERS + reason, flag=flag, details=details, headers=extra
        )

    async def _forward_response(
        self, stream, route, weighted, resp, cstats, started, deadline, loop, request_headers, idle
    ) -> None:
        cfg = self.config
        si = stream.stream_info
        status = resp.status
        rh = resp.headers
        upgrade = status == 101 and resp.duplex is not None
        rh.remove_names(_HOP_BY_HOP_UPGRADE if upgrade else _HOP_BY_HOP_SET)
        head_at = time.monotonic()
        if not cfg.suppress_envoy_headers:
            rh.set("x-envoy-upstream-service-time", str(int((head_at - started) * 1000)))
        if route.virtual_host.include_attempt_count_in_response:
            rh.set("x-envoy-attempt-count", str(si.upstream_request_attempts))
        if weighted is not None and weighted.response_mutation is not None and not route.most_specific_wins:
            weighted.response_mutation.apply(rh, si)
        for m in route.response_mutations:
            m.apply(rh, si)
        if weighted is not None and weighted.response_mutation is not None and route.most_specific_wins:
            weighted.response_mutation.apply(rh, si)

        if upgrade:
            cstats.charge(status, cfg.dynamic_stats)
            await stream.encode_headers(rh, False)
            await stream.upgrade(resp.duplex)
            return
        req = request_headers.items()
        method = req[0][1] if req and req[0][0] == ":method" else request_headers.get(":method")
        no_body = status in _BODYLESS_STATUS or method == "HEAD" or rh.get("content-length") == "0"
        whole = None
        try:
            whole = resp.buffered_body() if not no_body and hasattr(resp, "buffered_body") else None
            if no_body:
                await stream.encode_headers(rh, True)
            elif whole is not None:
                # The whole answer is here already: no timers, one write with the head (without an
                # await when no filter encodes responses).
                encode_whole = getattr(stream, "encode_whole", None)
                if encode_whole is None or not encode_whole(rh, whole):
                    await stream.encode_headers(rh, False)
                    await stream.encode_data(whole, True)
            else:
                await stream.encode_headers(rh, False)
                if deadline is None and idle is None:
                    async for chunk in resp:
                        await stream.encode_data(chunk, False)
                else:
                    await self._stream_body_with_timeouts(stream, resp, cstats, deadline, idle, loop)
                await stream.encode_data(b"", True)
        except UpstreamError:
            # The upstream went away mid-body: the downstream stream must be reset too.
            si.set_flag("UC")
            cfg.hcm_stats(stream).rq_reset_after_downstream_response_started.inc()
            resp.discard()
            raise ConnectionResetError("upstream reset after the response started") from None
        except BaseException:
            resp.discard()
            raise
        finally:
            counters = cstats._codes.get(status)  # cstats.charge(status, ...), inline for a code seen before
            if counters is None:
                cstats.charge(status, cfg.dynamic_stats)
            else:
                if cfg.dynamic_stats:
                    counters[0].value += 1
                    counters[1].value += 1
                counters[2].value += 1
            # upstream_rq_time ends when the upstream's response did: a whole one had already ended
            # when its head was handled (no second clock read), a streamed one ends now.
            cstats.rq_time.record(((head_at if whole is not None else time.monotonic()) - started) * 1000)

    async def _stream_body_with_timeouts(self, stream, resp, cstats, deadline, idle, loop) -> None:
        """The route timeout covers the whole response; idle_timeout the gap between body chunks.
        Headers already went downstream, so on expiry all Envoy can do is reset the stream."""
        it = resp.__aiter__()
        next_buffered = getattr(resp, "next_buffered", None)
        while True:
            if next_buffered is not None:
                chunk = next_buffered()
                if chunk is not None:  # already here: no timer needed
                    await stream.encode_data(chunk, False)
                    continue
                if resp.complete:
                    return
            limit = None if deadline is None else deadline - loop.time()
            idle_bound = idle is not None and (limit is None or idle < limit)
            if idle_bound:
                limit = idle
            try:
                async with asyncio.timeout(max(0.0, limit)):
                    chunk = await it.__anext__()
            except StopAsyncIteration:
                return
            except TimeoutError:
                si = stream.stream_info
                if idle_bound:
                    si.set_flag("SI")
                else:
                    si.set_flag("UT")
                    cstats.timeout.inc()
                self.config.hcm_stats(stream).rq_reset_after_downstream_response_started.inc()
                resp.discard()
                raise ConnectionResetError("upstream timeout after the response started") from None
            await stream.encode_data(chunk, False)

    # ------------------------------------------------------------------------------------------
    def _start_mirrors(self, stream, mirrors, up_headers: Headers, body, action) -> None:
        cfg = self.config
        cm = cfg.cluster_manager
        for policy in mirrors:
            if not policy.fraction.hit(cfg.rand(32)):
                continue
            name = policy.cluster_name(up_headers)
            cluster = cm.get(name) if (cm is not None and name) else None
            if cluster is None:
                continue
            h = up_headers.copy()
            if policy.host_rewrite:
                h.set(":authority", policy.host_rewrite)
            elif policy.append_shadow_suffix:
                h.set(":authority", shadow_authority(h.get(":authority") or ""))
            task = asyncio.ensure_future(self._mirror(cluster, h, body, action.timeout, stream.connection))
            cfg.mirror_tasks.add(task)
            task.add_done_callback(cfg.mirror_tasks.discard)

    async def _mirror(self, cluster, headers, body, timeout, connection) -> None:
        """Fire and forget: the shadow's answer and failures never reach the client."""
        try:
            host = cluster.choose_host(LbContext(None, connection, headers))
            if host is None:
                return
            async with asyncio.timeout(timeout):
                resp = await cluster.http_pool(host).request(headers, body)
                self.config.cluster_stats(cluster).charge(resp.status, self.config.dynamic_stats)
                try:
                    async for _ in resp:
                        pass
                finally:
                    resp.discard()
        except (UpstreamError, TimeoutError, OSError):
            pass
        except Exception:  # never let a shadow request break anything
            log.debug("mirror request failed", exc_info=True)
