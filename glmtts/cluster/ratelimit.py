"""Per-client rate limits across replicas: the token bucket of glmtts.ratelimit, kept in Redis.

Keys:
    glmtts:ratelimit:<sha256 of the client, 16 hex>   hash: tokens, updated (ms, Redis's clock)
expiring once the bucket would be full again. One script reads, refills and takes a token
atomically, with Redis's clock, so every replica draws from the same bucket. Clients (API keys
included) are stored only as hashes.
"""

from __future__ import annotations

import hashlib

from redis.exceptions import RedisError

from glmtts.cluster import KEY_PREFIX, SharedState, SharedStateUnavailable
from glmtts.ratelimit import SECONDS_PER_MINUTE

# KEYS: bucket; ARGV: capacity (tokens), refill rate (tokens per ms). Returns the wait in ms ("0" when allowed).
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local capacity, rate = tonumber(ARGV[1]), tonumber(ARGV[2])
local stored = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
local tokens, updated = tonumber(stored[1]) or capacity, tonumber(stored[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - updated) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'updated', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate) + 1000)
return tostring(wait)
"""


def bucket_key(client: str) -> str:
    return f"{KEY_PREFIX}ratelimit:{hashlib.sha256(client.encode('utf-8', 'surrogateescape')).hexdigest()[:16]}"


class RedisRateLimiter:
    """RateLimiter's interface (`per_minute`, `acquire`) with the buckets shared by every replica.

    `acquire` makes a network call: callers in an event loop run it in a thread (`shared` says so)."""

    shared = True
    Unavailable = SharedStateUnavailable  # what acquire raises when Redis cannot be reached

    def __init__(self, per_minute: int, shared: SharedState):
        self.per_minute = per_minute
        self._rate_per_ms = per_minute / SECONDS_PER_MINUTE / 1000
        self._script = shared.client.register_script(_ACQUIRE)

    def acquire(self, client: str) -> float:
        """Take one token for `client`: 0.0 when allowed, else the seconds until a token is due.
        Raises SharedStateUnavailable when Redis cannot be reached."""
        try:
            wait_ms = float(self._script(keys=[bucket_key(client)], args=[self.per_minute, repr(self._rate_per_ms)]))
        except RedisError as error:
            raise SharedStateUnavailable(f"rate limit buckets unreachable: {type(error).__name__}: {error}") from error
        return wait_ms / 1000
