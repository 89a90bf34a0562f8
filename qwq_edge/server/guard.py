"""What keeps web pages from using a local server: origin and host checks, and the page's headers.

Any website can make its visitor's browser send a "simple" POST (``text/plain``, no
preflight) to ``http://127.0.0.1:PORT``, and a page whose name is rebound to 127.0.0.1
(DNS rebinding) is even same-origin. So, before any work, a request whose ``Origin``
is neither the server's own nor an allowed one (``--cors-origin``) gets 403, and so does
one whose ``Host`` names something else than the bound address, ``localhost``, a
loopback address or an allowed host (``--allowed-host``; ``*`` allows any). Clients
that send no ``Origin`` (curl, the SDKs) are not browsers and pass. Every response
carries headers that keep the web page from being framed or sniffed, and a
Content-Security-Policy that runs only the page's own script.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import APIError

#: The headers of every response: the page runs its own files only and is never framed.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
}
ANY = "*"


def host_name(host: str) -> str:
    """The name or address in a ``Host`` header or URL authority, without port or brackets."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    name, colon, port = host.rpartition(":")
    if not (colon and port.isdigit() and ":" not in name):
        name = host  # no port (or a bare IPv6 address)
    return name.rstrip(".")


def _address(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


class Hosts:
    """The names a request's ``Host`` may give: the bound address (any address when it is
    0.0.0.0 or ::, and then this machine's name), ``localhost``, loopback addresses, and
    the allowed names."""

    def __init__(self, bound: str, allowed: Iterable[str] = ()) -> None:
        self.allowed = {host_name(name) for name in allowed}
        bound_name = host_name(bound)
        bound_address = _address(bound_name)
        self.any_address = bound_address is not None and bound_address.is_unspecified
        self.names = {"localhost", bound_name}
        if self.any_address or (bound_address is not None and not bound_address.is_loopback):
            self.names |= {host_name(socket.gethostname()), f"{host_name(socket.gethostname())}.local"}

    def admits(self, host: str) -> bool:
        name = host_name(host)
        if ANY in self.allowed or name in self.names or name in self.allowed:
            return True
        address = _address(name)
        return address is not None and (address.is_loopback or self.any_address)


class RequestGuard:
    """The ASGI middleware: 403 for a foreign ``Origin`` or ``Host``; the security headers on
    every response."""

    def __init__(
        self,
        app: ASGIApp,
        hosts: Hosts,
        origins: Iterable[str] = (),
        respond: Callable[[str, APIError], Response] = lambda path, error: JSONResponse(error.body(), error.status),
    ) -> None:
        """``respond``: an error as a response for the path asked (each door has its error shape)."""
        self.app = app
        self.hosts = hosts
        self.origins = {origin.rstrip("/").lower() for origin in origins}
        self.respond = respond

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self.refusal(Headers(scope=scope))
        if refusal is not None:
            code, message = refusal
            response = self.respond(scope["path"], APIError(403, message, kind="permission_error", code=code))
            response.headers.update(SECURITY_HEADERS)
            await response(scope, receive, send)
            return

        async def secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, secured)

    def refusal(self, headers: Headers) -> tuple[str, str] | None:
        """Why a request is refused (its error code and message), or ``None``."""
        host = headers.get("host")
        if host is not None and not self.hosts.admits(host):
            return "host_not_allowed", (
                f"the Host {host!r} is not this server's; start it with --allowed-host NAME to serve that name"
            )
        origin = headers.get("origin")
        if origin is not None and not self.admits_origin(origin, host):
            return "origin_not_allowed", (
                f"requests from the web origin {origin!r} are refused; start the server with "
                "--cors-origin ORIGIN to allow one"
            )
        return None

    def admits_origin(self, origin: str, host: str | None) -> bool:
        """The server's own origin (the page it serves), or one allowed with ``--cors-origin``."""
        normalized = origin.rstrip("/").lower()
        if ANY in self.origins or normalized in self.origins:
            return True
        parts = urlsplit(normalized)
        return host is not None and parts.scheme in ("http", "https") and parts.netloc == host.strip().lower()
