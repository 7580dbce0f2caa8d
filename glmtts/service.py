"""The composition root: one service object that holds everything the app serves with.

`build_service(settings)` assembles the engine, the text frontend, the device scheduler, the
voice library, the pipeline and the batch jobs. Its lifecycle (LitServe's setup -> READY):
constructing is cheap, and starts the text frontend's process, which loads on its own
(glmtts.frontend.process); `load()` loads the engine, waits for the frontend and reads what is on
disk; `warmup()` runs real syntheses; `mark_ready()` opens the service (after the HTTP warm-up the
app does through its own routes) and starts the batch worker; `shutdown()` stops it. The HTTP
routers and the UI receive this object and reach nothing else; each speech request they serve is
a session the service starts (`start_speech`, glmtts.session).

With `settings.redis_url` (GLMTTS_REDIS_URL) replicas share state (glmtts.cluster): the saved
voices' store and the batch job queue (glmtts.jobs.redis_store) are the Redis ones, `load()` first
checks that Redis answers, and the batch queue depth in /metrics is the shared queue's. Without it nothing of that is imported.
"""

from __future__ import annotations

import gc
import logging
import math
import os
import secrets
import threading
import time
from collections import deque

from glmtts import memory
from glmtts.engine import Engine
from glmtts.frontend.process import FrontendProcess
from glmtts.jobs.disk_store import DiskJobQueue
from glmtts.jobs.interface import JobQueue
from glmtts.metrics import Metrics
from glmtts.pipeline import Pipeline, SynthesisRequest
from glmtts.ratelimit import Limiter, RateLimiter
from glmtts.scheduler import DeviceScheduler
from glmtts.session import SpeechSession
from glmtts.settings import Settings
from glmtts.voices import VoiceLibrary

_LOGGER = logging.getLogger(__name__)

HISTORY_PERIOD_S = 5.0
HISTORY_POINTS = 120  # ten minutes of memory and queue readings for the System tab
# Status phrases the page translates (glmtts.ui.i18n).
NO_CHECKPOINT = "no GLM-TTS checkpoint configured (set GLMTTS_CKPT)"
LOCAL_DISK = "local disk"


class Service:
    """Settings, engine, frontend, scheduler, voices, pipeline, jobs and metrics, with one lifecycle."""

    def __init__(self, settings: Settings, engine: Engine, engine_reason: str, frontend: FrontendProcess | None = None):
        self.settings = settings
        self.engine = engine
        self.engine_reason = engine_reason
        self.device = engine.auto_device() if settings.device == "auto" else settings.device
        self.scheduler = DeviceScheduler(max_waiting=settings.max_queue)
        self.frontend = frontend or FrontendProcess(settings.replace_dict, settings.cache_dir)
        self.shared = None  # glmtts.cluster.SharedState when replicas share state
        store = None  # the saved voices' store: folders on local disk unless replicas share state
        if settings.redis_url:
            from glmtts.cluster import connect
            from glmtts.cluster.voices import RedisVoiceStore

            self.shared = connect(settings.redis_url, settings.replica)
            store = RedisVoiceStore(self.shared)
        self.limiter = self._rate_limiter(settings.rate_limit)
        self.voices = VoiceLibrary(settings, engine, self.frontend, self.scheduler, self.device, store)
        self.pipeline = Pipeline(engine, self.frontend, self.voices, self.scheduler, settings.request_timeout_s)
        self.jobs = self._job_queue(settings)
        self.metrics = Metrics()
        self.timings: dict[str, float] = {}
        self.warmup_token = secrets.token_hex(16)  # marks the app's own warm-up requests (not rate limited)
        self.warm = False  # the models are warm: requests are served
        self.ready = False  # warm, and the HTTP stack warmed too: /ready says 200
        self.history: deque[tuple[float, float, int]] = deque(maxlen=HISTORY_POINTS)  # (time, RSS MiB, waiting)
        self._stopping = threading.Event()
        self._register_metrics()

    def _job_queue(self, settings: Settings) -> JobQueue:
        """The batch jobs' store, chosen once: on local disk, or in Redis when replicas share state."""
        if self.shared is None:
            return DiskJobQueue(self.pipeline, self.voices, settings.batch_dir, settings.allowed_roots, replica=settings.replica)
        from glmtts.jobs.redis_store import RedisJobQueue

        return RedisJobQueue(
            self.pipeline, self.voices, settings.batch_dir, settings.allowed_roots, self.shared, settings.batch_lease_s
        )

    def _rate_limiter(self, per_minute: int) -> Limiter | None:
        """The HTTP middleware's rate limiter (None: no limit); with shared state its buckets are in Redis,
        through the service's one client."""
        if per_minute <= 0:
            return None
        if self.shared is None:
            return RateLimiter(per_minute)
        from glmtts.cluster.ratelimit import RedisRateLimiter

        return RedisRateLimiter(per_minute, self.shared)

    # ----------------------------------------------------------------- lifecycle
    def load(self) -> None:
        """Check the shared state, load the engine, wait for the frontend, find the voices, recover the batch jobs.

        The frontend has been loading in its own process since the service was built:
        `frontend_load_s` is its own load time, `frontend_wait_s` what this waited for it.
        """
        if self.shared is not None:  # first: an unreachable Redis fails start-up in seconds, with its address
            self._timed("shared_state_check_s", self.shared.check)
        self._timed("engine_load_s", self.engine.load, self.device)
        self._timed("frontend_wait_s", self.frontend.load)
        self.timings["frontend_load_s"] = self.frontend.load_s
        self.scheduler.capacity = self.engine.max_batch  # an engine sizes its batch for the device at load
        self._timed("voices_load_s", self.voices.load)
        self.jobs.recover()
        _LOGGER.info("Loaded %s on %s in %.1f s", self.engine.name, self.device, self.timings["engine_load_s"])

    def warmup(self) -> None:
        """Analyse the built-in voices (from disk where stored) and synthesize each language once."""
        self._timed("voices_warmup_s", self.voices.warm)
        self._timed("engine_warmup_s", self.pipeline.warmup)
        self.warm = True

    def mark_ready(self) -> None:
        """Open for everyone: /ready says 200 and the batch worker starts."""
        self.ready = True
        self.jobs.start()
        threading.Thread(target=self._record_history, name="history", daemon=True).start()

    def shutdown(self) -> None:
        self._stopping.set()
        self.jobs.shutdown()
        self.frontend.close()

    def start_speech(self, request: SynthesisRequest, *, whole: bool = False, keep: bool = False) -> SpeechSession:
        """Start one request's synthesis, with the request time limit and the metrics (inside an event loop)."""
        return SpeechSession(self.pipeline, request, self.settings.request_timeout_s, self.metrics, whole=whole, keep=keep)

    def _timed(self, name: str, step, *args) -> None:
        start = time.perf_counter()
        step(*args)
        self.timings[name] = time.perf_counter() - start

    # ----------------------------------------------------------------- memory and status
    def memory_report(self) -> dict[str, float]:
        report = {"rss_mib": memory.rss_mib(), "frontend_rss_mib": self.frontend.rss_mib(), **self.engine.memory_report()}
        return {name: round(value, 1) for name, value in report.items()}

    def clear_caches(self) -> tuple[dict[str, float], dict[str, float]]:
        """Free per-request and allocator caches, keep the models; returns memory before and after."""
        before = self.memory_report()
        with self.scheduler.slot(exclusive=True):
            self.voices.clear_cache()
            self.engine.release_caches()
            gc.collect()
            memory.trim()
        return before, self.memory_report()

    def status(self) -> dict[str, object]:
        return {
            "ready": self.ready,
            "pid": os.getpid(),
            **self.engine.describe(),
            "engine_reason": self.engine_reason,
            "device": self.device,
            "timings": {name: round(value, 2) for name, value in self.timings.items()},
            "memory": self.memory_report(),
            "cached_voices": self.voices.cached,
            "saved_voices": self._shared_read(lambda: self.voices.saved_count),
            "queue_waiting": self.scheduler.waiting,
            "device_busy": self.scheduler.holding,
            "syntheses_active": self.pipeline.active,
            "batch_items_pending": self._shared_read(self.jobs.pending_items),
            "replica": self.settings.replica,
            "shared_state": "redis" if self.shared is not None else LOCAL_DISK,
            "builtin_voices": self._shared_read(lambda: [info.id for info in self.voices.describe() if info.builtin], []),
        }

    def _register_metrics(self) -> None:
        metrics = self.metrics
        metrics.gauge("glmtts_ready", "1 once warm and serving", lambda: float(self.ready))
        metrics.gauge("glmtts_queue_waiting", "Requests waiting for the device", lambda: self.scheduler.waiting)
        metrics.gauge("glmtts_device_busy", "Requests holding a device slot", lambda: self.scheduler.holding)
        metrics.gauge(
            "glmtts_syntheses_active", "Syntheses in progress, waiting for the device or on it", lambda: self.pipeline.active
        )
        metrics.gauge(
            "glmtts_batch_items_pending",
            "Batch items queued or running (with shared state: on every replica, the autoscaler's queue depth)",
            lambda: self._shared_read(self.jobs.pending_items, math.nan),
        )
        if self.shared is not None:
            metrics.gauge(
                "glmtts_shared_state_up", "1 while the shared state store (Redis) answers", lambda: float(self.shared.reachable())
            )
        metrics.labelled_gauge("glmtts_memory_mib", "Resident memory by kind (MiB)", "kind", self.memory_report)

    def _shared_read(self, read, unreachable=None):
        """A reading that may need Redis: `unreachable` instead of an error while it does not answer."""
        if self.shared is None:
            return read()
        from glmtts.cluster import UNAVAILABLE

        try:
            return read()
        except UNAVAILABLE:
            return unreachable

    def _record_history(self) -> None:
        while not self._stopping.wait(0 if not self.history else HISTORY_PERIOD_S):
            self.history.append((time.time(), memory.rss_mib(), self.scheduler.waiting))


def build_service(settings: Settings, frontend: FrontendProcess | None = None) -> Service:
    """Choose the engine: GLM-TTS when a valid checkpoint root is configured, else the embedded voices.
    `frontend`: one started earlier (the app starts it first, so that it loads while the app imports)."""
    if settings.ckpt is not None:
        from glmtts.engines.glm.checkpoint import validate_checkpoint
        from glmtts.engines.glm.errors import CheckpointError

        try:
            validate_checkpoint(settings.ckpt)
        except CheckpointError as error:
            _LOGGER.error("GLM-TTS checkpoint unusable, using the embedded voices: %s", error)
            reason = f"checkpoint {settings.ckpt} unusable: {error}"
        else:
            from glmtts.engines.glm.engine import GLMTTSEngine

            engine = GLMTTSEngine(settings.ckpt, settings.dtype, settings.max_batch, settings.decode, capture=settings.capture)
            return Service(settings, engine, f"checkpoint {settings.ckpt}", frontend)
    else:
        reason = NO_CHECKPOINT
    from glmtts.engines.embedded import EmbeddedEngine

    return Service(settings, EmbeddedEngine(settings.cache_dir), reason, frontend)
