"""Service settings: where things are and how the server runs, from flags and environment."""

from __future__ import annotations

import argparse
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MIN_BATCH_LEASE_S = 3.0  # a lease is renewed every third of it; shorter would be renewal traffic for nothing


@dataclass
class Settings:
    """Everything the app needs to start; each field has an environment variable of the same name."""

    host: str = "127.0.0.1"
    port: int = 7860
    device: str = "auto"
    ckpt: Path | None = None  # GLM-TTS checkpoint root; None or invalid -> embedded engine
    dtype: str | None = None  # GLM-TTS precision: fp32, bf16, fp16 (default: bf16 on capable GPUs)
    max_batch: int | None = None  # GLM-TTS requests decoded together (default: 4 on CUDA, else 1)
    decode: str | None = None  # GLM-TTS decode path: fast or reference (default: fast on CUDA, else reference)
    capture: str | None = None  # fast path step capture: graphs, compile or eager (default: graphs on CUDA)
    outputs: Path = PROJECT_ROOT / "outputs"
    examples: Path = PROJECT_ROOT / "examples"
    replace_dict: Path = PROJECT_ROOT / "configs" / "G2P_replace_dict.jsonl"
    voice_aliases: Path = PROJECT_ROOT / "configs" / "openai_voices.json"  # OpenAI voice names -> our voices
    max_upload_mb: int = 20
    voice_cache_size: int = 32
    extra_allowed: list[Path] = field(default_factory=list)
    api_key: str | None = None  # GLMTTS_API_KEY: required on /v1/* and as the UI password when set
    rate_limit: int = 0  # requests a minute per client (API key or IP) on synthesis routes; 0 = off
    request_timeout_s: float = 300.0  # a synthesis stops between segments once it runs this long
    max_queue: int = 16  # requests that may wait for the device before more get 429
    redis_url: str | None = None  # GLMTTS_REDIS_URL: voices, batch jobs and rate limits shared by replicas; None = local disk
    replica: str = ""  # GLMTTS_REPLICA: this replica's name in manifests (default host name:port)
    batch_lease_s: float = 30.0  # GLMTTS_BATCH_LEASE_S: a batch item whose replica stopped renewing it runs elsewhere
    # Browser policy (SECURITY.md): Host names served besides localhost and IP addresses ("*": any), other
    # origins whose pages may call this server (scheme://host[:port]), proxies whose X-Forwarded-* are believed.
    allowed_hosts: tuple[str, ...] = ()  # GLMTTS_ALLOWED_HOSTS
    allowed_origins: tuple[str, ...] = ()  # GLMTTS_ALLOWED_ORIGINS
    trusted_proxies: tuple[str, ...] = ()  # GLMTTS_TRUSTED_PROXIES: addresses or networks; none by default
    metrics_token: str | None = None  # GLMTTS_METRICS_TOKEN: a bearer token for /metrics only (the API key works too)

    def __post_init__(self) -> None:
        self.replica = self.replica or f"{socket.gethostname()}:{self.port}"

    @property
    def max_body_bytes(self) -> int:
        """Largest HTTP request body: an upload of `max_upload_mb` plus room for multipart overhead."""
        return (self.max_upload_mb + 1) * 1024 * 1024

    @property
    def batch_dir(self) -> Path:
        return self.outputs / "batch"

    @property
    def voices_dir(self) -> Path:
        return self.outputs / "voices"

    @property
    def uploads_dir(self) -> Path:
        """Prompt files the UI keeps for batch jobs, so a resumed job finds them again."""
        return self.outputs / "uploads"

    @property
    def cache_dir(self) -> Path:
        return self.outputs / "cache"

    @property
    def allowed_roots(self) -> list[Path]:
        """Folders that prompt paths in batch files may point into."""
        return [self.examples, self.uploads_dir, self.voices_dir, *self.extra_allowed]

    @classmethod
    def from_args(cls, argv: list[str] | None = None) -> Settings:
        env = os.environ
        defaults = cls()
        parser = argparse.ArgumentParser(description="Warm-start zero-shot TTS WebUI")
        parser.add_argument("--host", default=env.get("GLMTTS_HOST", defaults.host))
        parser.add_argument("--port", type=int, default=int(env.get("GLMTTS_PORT", defaults.port)))
        parser.add_argument("--device", default=env.get("GLMTTS_DEVICE", defaults.device), help="auto, cpu, cuda, cuda:N, mps")
        parser.add_argument("--ckpt", default=env.get("GLMTTS_CKPT") or None, help="GLM-TTS checkpoint root (ckpt/)")
        parser.add_argument("--dtype", default=env.get("GLMTTS_DTYPE") or None, choices=[None, "fp32", "bf16", "fp16"])
        parser.add_argument(
            "--max-batch",
            type=int,
            default=int(env["GLMTTS_MAX_BATCH"]) if env.get("GLMTTS_MAX_BATCH") else None,
            help="GLM-TTS requests decoded together (default: 4 on CUDA, else 1)",
        )
        parser.add_argument("--decode", default=env.get("GLMTTS_DECODE") or None, choices=[None, "fast", "reference"])
        parser.add_argument(
            "--capture", default=env.get("GLMTTS_DECODE_CAPTURE") or None, choices=[None, "graphs", "compile", "eager"]
        )
        parser.add_argument("--outputs", default=env.get("GLMTTS_OUTPUTS", str(defaults.outputs)))
        parser.add_argument("--max-upload-mb", type=int, default=int(env.get("GLMTTS_MAX_UPLOAD_MB", defaults.max_upload_mb)))
        parser.add_argument(
            "--rate-limit",
            type=int,
            default=int(env.get("GLMTTS_RATE_LIMIT", defaults.rate_limit)),
            help="requests a minute per client; 0 = off",
        )
        parser.add_argument(
            "--request-timeout",
            type=float,
            default=float(env.get("GLMTTS_REQUEST_TIMEOUT_S", defaults.request_timeout_s)),
            help="seconds",
        )
        parser.add_argument("--max-queue", type=int, default=int(env.get("GLMTTS_MAX_QUEUE", defaults.max_queue)))
        parser.add_argument("--allowed-hosts", default=env.get("GLMTTS_ALLOWED_HOSTS", ""), help="comma-separated host names")
        parser.add_argument("--allowed-origins", default=env.get("GLMTTS_ALLOWED_ORIGINS", ""), help="comma-separated origins")
        parser.add_argument(
            "--trusted-proxies", default=env.get("GLMTTS_TRUSTED_PROXIES", ""), help="comma-separated proxy addresses"
        )
        args, _ = parser.parse_known_args(argv)
        return cls(
            host=args.host,
            port=args.port,
            device=args.device,
            ckpt=Path(args.ckpt).expanduser() if args.ckpt else None,
            dtype=args.dtype,
            max_batch=None if args.max_batch is None else max(1, args.max_batch),
            decode=args.decode,
            capture=args.capture,
            outputs=Path(args.outputs).expanduser().resolve(),
            max_upload_mb=args.max_upload_mb,
            api_key=env.get("GLMTTS_API_KEY") or None,  # environment only: a flag would show in `ps`
            rate_limit=max(0, args.rate_limit),
            request_timeout_s=args.request_timeout,
            max_queue=max(1, args.max_queue),
            voice_aliases=Path(env.get("GLMTTS_VOICE_ALIASES", str(defaults.voice_aliases))).expanduser(),
            redis_url=env.get("GLMTTS_REDIS_URL") or None,  # environment only: the URL may hold a password
            replica=env.get("GLMTTS_REPLICA", ""),
            batch_lease_s=max(MIN_BATCH_LEASE_S, float(env.get("GLMTTS_BATCH_LEASE_S", defaults.batch_lease_s))),
            allowed_hosts=comma_list(args.allowed_hosts),
            allowed_origins=comma_list(args.allowed_origins),
            trusted_proxies=comma_list(args.trusted_proxies),
            metrics_token=env.get("GLMTTS_METRICS_TOKEN") or None,  # environment only, as the API key
        )


def comma_list(raw: str) -> tuple[str, ...]:
    """A comma-separated setting as a tuple of its non-empty, stripped items."""
    return tuple(item.strip() for item in raw.split(",") if item.strip())
