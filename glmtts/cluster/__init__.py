"""Shared state for several replicas of the service: saved voices, batch jobs and rate limits in Redis.

Turned on by one setting, `GLMTTS_REDIS_URL` (Redis 7). Without it nothing here is imported and
every replica keeps its state on its own disk, as a single service does. With it:

    voices.py     RedisVoiceStore: the saved voices' registry, prompt audio and analyses
    ratelimit.py  RedisRateLimiter: one token bucket per client across replicas (a Lua script)

and the batch jobs' Redis store, glmtts.jobs.redis_store (beside the disk store it stands in for),
through this client: items leased to every replica's worker through a Redis Streams consumer group.

Keys (all under `glmtts:`) are listed in each module's docstring. `SharedState` holds the client
with short connect and read timeouts: an unreachable Redis is a start-up error (`check()` from
Service.load) and, during a request, a quick 503 (the redis errors are in glmtts.http.errors).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

_LOGGER = logging.getLogger(__name__)

KEY_PREFIX = "glmtts:"
CONNECT_TIMEOUT_S = 2.0  # an unreachable Redis fails a request in seconds, never hangs it
READ_TIMEOUT_S = 5.0  # longer than any blocking read (glmtts.jobs.redis_store.BLOCK_MS) and any script
RETRIES = 1  # one quick retry: the first command on a pooled connection after a Redis restart fails
RETRY_BACKOFF_S = (0.05, 0.25)  # base, cap
MIN_REDIS_MAJOR = 7  # XAUTOCLAIM, and Streams commands inside scripts as this code uses them
# What an unreachable or restarting Redis raises: a 503 during a request, a retry in the batch worker.
UNAVAILABLE = (RedisConnectionError, RedisTimeoutError)


class SharedStateUnavailable(RuntimeError):
    """Redis cannot be reached, or is not a Redis this code can use."""


def redacted(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass
class SharedState:
    """The Redis client every shared-state part uses, and who this replica is."""

    url: str
    replica: str  # this replica's name, recorded with each batch item it makes
    client: redis.Redis

    def check(self) -> None:
        """Reach Redis once, at start-up: a clear error when it is unreachable or too old."""
        try:
            version = str(self.client.info("server").get("redis_version", "0"))
        except RedisError as error:
            raise SharedStateUnavailable(
                f"Redis at {redacted(self.url)} (GLMTTS_REDIS_URL) is unreachable: {type(error).__name__}: {error}"
            ) from error
        if int(version.split(".")[0] or 0) < MIN_REDIS_MAJOR:
            raise SharedStateUnavailable(
                f"Redis at {redacted(self.url)} is version {version}; {MIN_REDIS_MAJOR} or later is needed."
            )
        _LOGGER.info("Shared state: Redis %s at %s; this replica is %s", version, redacted(self.url), self.replica)

    def reachable(self) -> bool:
        try:
            return bool(self.client.ping())
        except RedisError:
            return False


def connect(url: str, replica: str) -> SharedState:
    """A client for `url` (nothing is sent yet): short timeouts, one quick retry, a name per replica."""
    base, cap = RETRY_BACKOFF_S
    client = redis.Redis.from_url(
        url,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        socket_timeout=READ_TIMEOUT_S,
        retry=Retry(ExponentialBackoff(cap=cap, base=base), RETRIES),
        health_check_interval=30,
        client_name=f"glmtts-{replica}".replace(" ", "_"),
        decode_responses=False,
    )
    return SharedState(url, replica, client)
