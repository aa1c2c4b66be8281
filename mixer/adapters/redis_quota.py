"""Quota counters in Redis, shared by every mixer replica that uses the same Redis.

Keys are those of ``mixer.adapters.quota.counter_key``:
``ratelimit:<domain>_<key1>_<value1>..._<window start>``. One call sends, for every counter, ``INCRBY key
hits`` then ``EXPIRE key <window length>`` inside one ``MULTI``/``EXEC`` transaction, so the increments
of all replicas are atomic and a counter disappears one window after it was last touched.

Calls must fail fast rather than hold requests: connect and socket timeouts are short (0.2 s by
default) and redis-py's own retries are off. Any Redis error becomes ``BackendError``, so the quota
service applies its failure mode. redis-py reconnects on the next call, so mixer recovers by itself
as soon as Redis is back.
"""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from mixer.adapters.quota import BackendError


class RedisBackend:
    name = "redis"

    def __init__(self, url: str, timeout_s: float = 0.2) -> None:
        self.url = url
        self.client = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )

    async def increment(self, items: list[tuple[str, int]], hits: int) -> list[int]:
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                for key, ttl in items:
                    pipe.incrby(key, hits)
                    pipe.expire(key, ttl)
                replies = await pipe.execute()
        except (RedisError, OSError) as e:
            raise BackendError(f"redis {self.url}: {type(e).__name__}: {e}") from None
        return [int(v) for v in replies[0::2]]

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except (RedisError, OSError):
            return False

    async def close(self) -> None:
        await self.client.aclose()
