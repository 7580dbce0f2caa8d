"""The browser policy: which Host names this server answers to and which web pages may call it.

A browser lets any page it shows send requests to this server: simple cross-site POSTs need no CORS
preflight, and DNS rebinding points the page's own name at this server so that its requests count as
same-origin. So, for every route but the probes (SECURITY.md has the threat model):

- Host: an IP address (which cannot be rebound), `localhost`, the bound name, or a name in
  `GLMTTS_ALLOWED_HOSTS`; compared exactly after the port is stripped. Else 421.
- Origin: a request that changes something (any method but GET, HEAD, OPTIONS) and carries an
  `Origin` (else a `Referer`) of another origin gets 403, as does any request that the browser marks
  `Sec-Fetch-Site: cross-site` or `same-site` (other ports of the same host are other sites' pages),
  but for following a link. Origins in `GLMTTS_ALLOWED_ORIGINS` may do both. Requests without these
  headers (SDKs, curl, Home Assistant) are not from a page and pass.
- CORS: preflights are answered here (204 for an allowed origin, else 403); a response carries CORS
  headers only for an allowed origin, whatever the app behind (Gradio's own middleware) adds.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from glmtts.settings import Settings

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOCAL_NAMES = frozenset({"localhost"})
ANY = "*"
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
FOREIGN_SITES = frozenset({"cross-site", "same-site"})
EMBEDDING_DESTINATIONS = frozenset({"object", "embed"})  # navigations that load the response into another page
PREFLIGHT_MAX_AGE_S = 600
CORS_PREFIX = b"access-control-"


def split_host(value: str) -> tuple[str, int | None] | None:
    """A Host header (or an origin's authority) as (lower-case name, port or None); None when malformed."""
    value = value.strip().lower()
    if value.startswith("["):  # [v6 address]:port
        name, bracket, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ("" if not rest else None)
        if not bracket or port is None:
            return None
    else:
        name, _, port = value.partition(":")
    if not name or (port and not port.isdigit()):
        return None
    return name, int(port) if port else None


def is_ip_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def normalize_origin(value: str) -> str:
    """`scheme://host[:port]` in lower case without a default port; `null` and malformed values as given."""
    parts = urlsplit(value.strip())
    host = split_host(parts.netloc.rpartition("@")[2]) if parts.scheme and parts.netloc else None
    if host is None:
        return value.strip().lower()
    name, port = host
    name = f"[{name}]" if ":" in name else name
    scheme = parts.scheme.lower()
    return f"{scheme}://{name}" if port in (None, DEFAULT_PORTS.get(scheme)) else f"{scheme}://{name}:{port}"


def request_origin(headers: dict[str, str]) -> str | None:
    """The page a browser request comes from: its `Origin`, else the origin of its `Referer`; None for neither."""
    if "origin" in headers:
        return normalize_origin(headers["origin"])
    referer = headers.get("referer")
    return normalize_origin(referer) if referer else None


def is_same_origin(origin: str, host_header: str | None) -> bool:
    """Whether `origin` is this server's own origin as the request's Host names it.

    The names must be equal and so must the ports; a Host without a port was reached on its scheme's
    default port, which an origin without a port also means (http or https: a TLS proxy in front
    changes the scheme, not the page).
    """
    parts = urlsplit(origin)
    origin_host = split_host(parts.netloc) if parts.scheme in DEFAULT_PORTS else None
    request_host = split_host(host_header or "")
    if origin_host is None or request_host is None or origin_host[0] != request_host[0]:
        return False
    origin_port = origin_host[1] or DEFAULT_PORTS[parts.scheme]
    return origin_port == request_host[1] if request_host[1] is not None else origin_host[1] is None


@dataclass(frozen=True)
class BrowserPolicy:
    """Decides the Host, Origin and CORS questions for one request (see the module docstring)."""

    allowed_hosts: frozenset[str]
    allowed_origins: frozenset[str]

    @classmethod
    def from_settings(cls, settings: Settings) -> BrowserPolicy:
        hosts = {name.lower() for name in settings.allowed_hosts}
        bound = settings.host.lower()
        if bound not in ("", "0.0.0.0", "::") and not is_ip_address(bound):
            hosts.add(bound)  # bound to a name: that name is this server's
        return cls(frozenset(hosts), frozenset(normalize_origin(origin) for origin in settings.allowed_origins))

    def host_refusal(self, host_header: str | None) -> str | None:
        """Why the Host header is refused (DNS rebinding), or None when it names this server."""
        if host_header is None:  # HTTP/1.0 without a Host: never a browser
            return None
        host = split_host(host_header)
        if host is None:
            return f"The Host header {host_header!r} is malformed."
        name = host[0]
        if ANY in self.allowed_hosts or name in LOCAL_NAMES or name in self.allowed_hosts or is_ip_address(name):
            return None
        return (
            f"This server does not answer to the name {name!r} (the Host header); "
            "add it to GLMTTS_ALLOWED_HOSTS to serve it under that name."
        )

    def origin_is_allowed(self, origin: str | None) -> bool:
        """Whether `origin` was configured as one whose pages may call this server (CORS included)."""
        return origin is not None and origin in self.allowed_origins

    def origin_refusal(self, method: str, headers: dict[str, str]) -> str | None:
        """Why a request from a browser page is refused (cross-site request forgery), or None."""
        origin = request_origin(headers)
        if self.origin_is_allowed(origin):
            return None
        navigation = method in ("GET", "HEAD") and headers.get("sec-fetch-mode") == "navigate"
        navigation = navigation and headers.get("sec-fetch-dest") not in EMBEDDING_DESTINATIONS
        foreign_site = headers.get("sec-fetch-site") in FOREIGN_SITES and not navigation
        foreign_write = method not in SAFE_METHODS and origin is not None and not is_same_origin(origin, headers.get("host"))
        if not (foreign_site or foreign_write):
            return None
        page = origin or f"a {headers.get('sec-fetch-site')} page"
        return (
            f"Requests from {page} are not allowed: only this server's own pages may call it. "
            "Add the origin to GLMTTS_ALLOWED_ORIGINS to allow it."
        )

    def preflight(self, headers: dict[str, str]) -> tuple[int, list[tuple[bytes, bytes]]]:
        """The answer to a CORS preflight: 204 with CORS headers for an allowed origin, else 403."""
        origin = request_origin(headers)
        if not self.origin_is_allowed(origin):
            return 403, []
        cors = self.cors_headers(origin, [])
        cors.append((b"access-control-allow-methods", headers.get("access-control-request-method", "").encode("latin-1")))
        requested = headers.get("access-control-request-headers")
        if requested:
            cors.append((b"access-control-allow-headers", requested.encode("latin-1")))
        cors.append((b"access-control-max-age", str(PREFLIGHT_MAX_AGE_S).encode()))
        return 204, cors

    def cors_headers(self, origin: str | None, response_headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """The response's headers without any CORS header, plus ours when `origin` is allowed."""
        kept = [(name, value) for name, value in response_headers if not name.lower().startswith(CORS_PREFIX)]
        if not self.origin_is_allowed(origin):
            return kept
        exposed = b", ".join(sorted({name.lower() for name, _ in kept} - {b"set-cookie"}))
        kept += [
            (b"access-control-allow-origin", origin.encode("latin-1")),
            (b"access-control-allow-credentials", b"true"),
            (b"vary", b"Origin"),
        ]
        if exposed:
            kept.append((b"access-control-expose-headers", exposed))
        return kept
