"""Who may use the console: loopback by default; any other address only with a token (compared in
constant time); every state-changing request a POST carrying the page's CSRF token; only known
Host names (no DNS rebinding onto a loopback console)."""

from __future__ import annotations

import hmac
import ipaddress
import re
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from locaria_batch.errors import ConfigurationError

COOKIE = "locaria_console"
CSRF_HEADER = "x-csrf-token"
MIN_TOKEN_LENGTH = 16
SAFE_METHODS = {"GET", "HEAD"}
TOKEN_CHARACTERS = re.compile(r"[A-Za-z0-9._~+/=-]+")  # what a cookie carries as it is
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ConsoleRefused(ConfigurationError):
    """The console will not start as asked."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse to listen beyond loopback without a (long enough) token."""
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise ConsoleRefused(f"the console token is too short: use at least {MIN_TOKEN_LENGTH} characters, e.g. "
                             "`python3 -c 'import secrets; print(secrets.token_urlsafe())'`")
    if token is not None and not TOKEN_CHARACTERS.fullmatch(token):
        raise ConsoleRefused("the console token may hold only letters, digits and . _ ~ + / = -")
    if not is_loopback(host) and not token:
        raise ConsoleRefused(f"the console would listen on {host}, beyond this machine, without a token: set "
                             "--token or LOCARIA_CONSOLE_TOKEN (at least 16 characters), or bind to 127.0.0.1")


def same(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def host_name(authority: str) -> str | None:
    """The host of a Host header's `name[:port]`, lower case ("" when empty); None when malformed
    (an unclosed `[::1`, say)."""
    try:
        return (urlsplit("//" + authority).hostname or "").lower()
    except ValueError:
        return None


def netloc(url: str) -> str | None:
    """An Origin's `host[:port]`, lower case; None when malformed."""
    try:
        return urlsplit(url).netloc.lower()
    except ValueError:
        return None


def local_location(path: str, query: list[tuple[str, str]]) -> str:
    """A redirect target on this console only: one leading slash (never `//host` nor a scheme, which
    browsers take to another site) and every character percent-encoded (no CR/LF, nothing beyond
    ASCII in a header)."""
    rest = urlencode(query)
    return "/" + quote(path.lstrip("/"), safe="/") + (f"?{rest}" if rest else "")


@dataclass
class Guard:
    """The console's ASGI middleware: Host names, the token and the CSRF check."""

    app: ASGIApp
    host: str
    port: int
    token: str | None
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))

    @property
    def allowed_hosts(self) -> set[str] | None:
        """None: any Host (bound to every address, the token guards it)."""
        if self.host in {"0.0.0.0", "::", ""}:
            return None
        return {"localhost", "127.0.0.1", "::1", self.host.strip("[]").lower()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]}
        allowed = self.allowed_hosts
        host = host_name(headers.get("host", ""))
        if host is None:
            await plain(send, 400, "malformed Host header")
            return
        if allowed is not None and host not in allowed:
            await plain(send, 400, "unknown Host: open the console as http://127.0.0.1 or http://localhost")
            return
        if self.token is not None:
            query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
            if scope["method"] in SAFE_METHODS and any(key == "token" and same(value, self.token)
                                                       for key, value in query):
                # the link with ?token= sets the cookie once, then the token leaves the address bar
                location = local_location(scope["path"], [(k, v) for k, v in query if k != "token"])
                await redirect(send, location, set_cookie=self.token, secure=scope.get("scheme") == "https")
                return
            if not self.authorised(headers):
                await plain(send, 401, "this console needs its token: open it with ?token=... once, or send "
                                       "Authorization: Bearer <token>")
                return
        if scope["method"] not in SAFE_METHODS:
            origin = headers.get("origin")
            if origin is not None and netloc(origin) != headers.get("host", "").lower():
                await plain(send, 403, "cross-site request refused")
                return
            if not same(headers.get(CSRF_HEADER), self.csrf):
                await plain(send, 403, "missing or wrong CSRF token: reload the page and try again")
                return
        scope.setdefault("state", {})["csrf"] = self.csrf
        await self.app(scope, receive, send)

    def authorised(self, headers: dict[str, str]) -> bool:
        assert self.token is not None
        bearer = headers.get("authorization", "")
        if bearer.lower().startswith("bearer ") and same(bearer[7:].strip(), self.token):
            return True
        cookie: SimpleCookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # a malformed Cookie header is no cookie
            return False
        morsel = cookie.get(COOKIE)
        return morsel is not None and same(morsel.value, self.token)


async def plain(send: Send, status: int, text: str) -> None:
    body = (text + "\n").encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": body})


async def redirect(send: Send, location: str, *, set_cookie: str, secure: bool) -> None:
    cookie = f"{COOKIE}={set_cookie}; Path=/; HttpOnly; SameSite=Strict" + ("; Secure" if secure else "")
    await send({"type": "http.response.start", "status": 303, "headers": [
        (b"location", location.encode("ascii")), (b"set-cookie", cookie.encode("latin-1")),
        (b"cache-control", b"no-store"), (b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})
