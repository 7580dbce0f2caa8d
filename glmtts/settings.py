"""Service settings: where things are and how the server runs, from flags and environment."""

from __future__ import annotations

import argparse
import os
import socket
from dataclasses import dataclass, field, fields
from pathlib import Path

from glmtts.engines.glm.choices import CAPTURES, DECODES, DTYPES

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
    cache: Path | None = None  # what can be computed again (voice analyses, jieba's dictionary, graphs); default outputs/cache
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
    # Home Assistant's Wyoming protocol (glmtts.wyoming_server): off unless a port is given; it has no authentication,
    # so an address beyond loopback while GLMTTS_API_KEY is set needs `wyoming_allow_exposed` (SECURITY.md).
    wyoming_port: int | None = None  # GLMTTS_WYOMING_PORT
    wyoming_host: str = "127.0.0.1"  # GLMTTS_WYOMING_HOST
    wyoming_allow_exposed: bool = False  # GLMTTS_WYOMING_ALLOW_EXPOSED

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
        return self.cache or self.outputs / "cache"

    @property
    def allowed_roots(self) -> list[Path]:
        """Folders that prompt paths in batch files may point into."""
        return [self.examples, self.uploads_dir, self.voices_dir, *self.extra_allowed]

    @classmethod
    def from_args(cls, argv: list[str] | None = None) -> Settings:
        """Settings from the app's flags (an unknown flag exits 2 naming it, as argparse does) and the environment."""
        parser = argparse.ArgumentParser(description="Warm-start zero-shot TTS WebUI")
        add_server_arguments(parser)
        add_engine_arguments(parser)
        return cls.from_namespace(parser.parse_args(argv))

    @classmethod
    def from_namespace(cls, args: argparse.Namespace) -> Settings:
        """Settings from flags parsed by a parser built with `add_*_arguments` (flags of other names, such
        as the CLI's own, are not settings) plus the settings read from the environment only."""
        flags = {name: value for name, value in vars(args).items() if name in _FIELD_NAMES}
        env = os.environ
        return cls(
            **flags,
            api_key=env.get("GLMTTS_API_KEY") or None,  # environment only: a flag would show in `ps`
            voice_aliases=Path(env.get("GLMTTS_VOICE_ALIASES", str(cls.voice_aliases))).expanduser(),
            redis_url=env.get("GLMTTS_REDIS_URL") or None,  # environment only: the URL may hold a password
            replica=env.get("GLMTTS_REPLICA", ""),
            batch_lease_s=max(MIN_BATCH_LEASE_S, float(env.get("GLMTTS_BATCH_LEASE_S", cls.batch_lease_s))),
            metrics_token=env.get("GLMTTS_METRICS_TOKEN") or None,  # environment only, as the API key
        )


_FIELD_NAMES = frozenset(item.name for item in fields(Settings))


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags the app and the CLI share: device, checkpoint, GLM-TTS precision and decode, outputs.
    Each defaults to its environment variable; a value outside a flag's choices is an error either way."""
    env = os.environ
    parser.add_argument("--device", default=env.get("GLMTTS_DEVICE", "auto"), help="auto, cpu, cuda, cuda:N, mps")
    parser.add_argument("--ckpt", type=_user_path, default=env.get("GLMTTS_CKPT") or None, help="GLM-TTS checkpoint root (ckpt/)")
    parser.add_argument("--dtype", choices=DTYPES, default=_env_choice(parser, "GLMTTS_DTYPE", DTYPES))
    parser.add_argument(
        "--max-batch",
        type=_at_least(1),
        default=env.get("GLMTTS_MAX_BATCH") or None,
        help="GLM-TTS requests decoded together (default: 4 on CUDA, else 1)",
    )
    parser.add_argument("--decode", choices=DECODES, default=_env_choice(parser, "GLMTTS_DECODE", DECODES))
    parser.add_argument("--capture", choices=CAPTURES, default=_env_choice(parser, "GLMTTS_DECODE_CAPTURE", CAPTURES))
    parser.add_argument("--outputs", type=_resolved_path, default=env.get("GLMTTS_OUTPUTS", str(PROJECT_ROOT / "outputs")))
    parser.add_argument(
        "--cache",
        type=_resolved_path,
        default=env.get("GLMTTS_CACHE") or None,
        help="folder for what can be computed again, shareable by several outputs folders (default: <outputs>/cache)",
    )


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """The web server's flags: address, limits and browser policy, each defaulting to its environment variable."""
    env = os.environ
    defaults = Settings
    parser.add_argument("--host", default=env.get("GLMTTS_HOST", defaults.host))
    parser.add_argument("--port", type=int, default=env.get("GLMTTS_PORT", defaults.port))
    parser.add_argument("--max-upload-mb", type=int, default=env.get("GLMTTS_MAX_UPLOAD_MB", defaults.max_upload_mb))
    parser.add_argument(
        "--rate-limit",
        type=_at_least(0),
        default=env.get("GLMTTS_RATE_LIMIT", defaults.rate_limit),
        help="requests a minute per client; 0 = off",
    )
    parser.add_argument(
        "--request-timeout",
        dest="request_timeout_s",
        type=float,
        default=env.get("GLMTTS_REQUEST_TIMEOUT_S", defaults.request_timeout_s),
        help="seconds",
    )
    parser.add_argument("--max-queue", type=_at_least(1), default=env.get("GLMTTS_MAX_QUEUE", defaults.max_queue))
    parser.add_argument(
        "--allowed-hosts", type=comma_list, default=env.get("GLMTTS_ALLOWED_HOSTS", ""), help="comma-separated host names"
    )
    parser.add_argument(
        "--allowed-origins", type=comma_list, default=env.get("GLMTTS_ALLOWED_ORIGINS", ""), help="comma-separated origins"
    )
    parser.add_argument(
        "--trusted-proxies",
        type=comma_list,
        default=env.get("GLMTTS_TRUSTED_PROXIES", ""),
        help="comma-separated proxy addresses",
    )
    parser.add_argument(
        "--wyoming-port",
        type=_port,
        default=env.get("GLMTTS_WYOMING_PORT") or None,
        help="serve Home Assistant's Wyoming protocol on this port (off when unset)",
    )
    parser.add_argument("--wyoming-host", default=env.get("GLMTTS_WYOMING_HOST", defaults.wyoming_host))
    parser.add_argument(
        "--wyoming-allow-exposed",
        action="store_true",
        default=_env_flag(parser, "GLMTTS_WYOMING_ALLOW_EXPOSED"),
        help="serve Wyoming (which has no authentication) beyond loopback although GLMTTS_API_KEY is set",
    )


def _env_choice(parser: argparse.ArgumentParser, name: str, choices: tuple[str, ...]) -> str | None:
    """The environment variable `name` when set, which must be one of `choices` (else exit 2, as a bad flag)."""
    value = os.environ.get(name) or None
    if value is not None and value not in choices:
        parser.error(f"{name}={value!r} is not one of {', '.join(choices)}")
    return value


_SWITCH_ON, _SWITCH_OFF = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _env_flag(parser: argparse.ArgumentParser, name: str) -> bool:
    """The environment variable `name` as a switch, off when unset or empty (another value exits 2, as a bad flag)."""
    value = os.environ.get(name, "").strip().lower()
    if value and value not in _SWITCH_ON + _SWITCH_OFF:
        parser.error(f"{name}={value!r} is not one of {', '.join(_SWITCH_ON + _SWITCH_OFF)}")
    return value in _SWITCH_ON


def _port(raw: str) -> int:
    """An argparse type: a TCP port number, 1 to 65535."""
    port = int(raw)
    if not 1 <= port <= 65535:
        raise ValueError(raw)
    return port


_port.__name__ = "port"  # argparse names the type in its error: "invalid port value"


def _at_least(floor: int):
    """An argparse type: an integer, raised to `floor` when below it."""

    def parse(raw: str) -> int:
        return max(floor, int(raw))

    parse.__name__ = "int"  # argparse names the type in its error: "invalid int value"
    return parse


def _user_path(raw: str) -> Path:
    return Path(raw).expanduser()


def _resolved_path(raw: str) -> Path:
    return Path(raw).expanduser().resolve()


def comma_list(raw: str) -> tuple[str, ...]:
    """A comma-separated setting as a tuple of its non-empty, stripped items."""
    return tuple(item.strip() for item in raw.split(",") if item.strip())
