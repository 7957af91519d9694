"""Who the client is: the peer address, or what a trusted reverse proxy says it forwarded.

The API's "no token needed from loopback" rule depends on the client address, so proxy headers
(``Forwarded``, ``X-Forwarded-For``) are believed only from peers listed in ``[http]
trusted_proxies`` (addresses or networks; none by default). uvicorn's own handling of those
headers, which trusts 127.0.0.1 and whatever ``FORWARDED_ALLOW_IPS`` names, is turned off by
:class:`~evflow.http.server.HttpServer`; :class:`TrustedProxies` takes its place.

From a trusted peer, the forwarded chain is read from its right end (the hop nearest to us),
skipping trusted proxies; the first address that is not one of them is the client. Both headers
are read the same way; when both are present and name different clients, or an entry is not an
address, the client is ``unknown``, which is never loopback.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import ConfigError

__all__ = ["UNKNOWN", "TrustedProxies", "client_address", "proxy_networks"]

UNKNOWN = "unknown"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def proxy_networks(value: object, where: str) -> tuple[str, ...]:
    """``[http] trusted_proxies`` checked: a list of addresses or networks (``10.0.0.0/8``),
    or one string of them separated by commas (as an environment variable gives it)."""
    items: Iterable[object]
    if isinstance(value, str):
        items = [part for part in value.split(",") if part.strip()]
    elif isinstance(value, list | tuple):
        items = value
    else:
        raise ConfigError(
            f"{where}: {value!r} is not a list; use addresses or networks of the reverse "
            'proxies in front of evflow, e.g. ["127.0.0.1", "10.0.0.0/8"]'
        )
    out: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ConfigError(f"{where}: {item!r} is not a string; use an address or a network")
        try:
            out.append(str(ipaddress.ip_network(item.strip(), strict=False)))
        except ValueError:
            raise ConfigError(
                f"{where}: {item!r} is not an IP address or network; use e.g. 10.0.0.5, "
                "10.0.0.0/8 or ::1"
            ) from None
    return tuple(out)


def _address(text: str) -> Address | None:
    text = text.strip().strip('"')
    if text.startswith("["):  # [v6]:port or [v6]
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:  # v4:port
        text = text.partition(":")[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _trusted(ip: Address | None, networks: Sequence[Network]) -> bool:
    return ip is not None and any(ip in net for net in networks)


def _x_forwarded_for(values: Sequence[str]) -> list[str]:
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def _forwarded(values: Sequence[str]) -> list[str]:
    """The ``for=`` of each element of RFC 7239 ``Forwarded`` headers, in order (an element
    without one counts as an address that is not one)."""
    out: list[str] = []
    for value in values:
        for element in value.split(","):
            found = ""
            for pair in element.split(";"):
                name, _, param = pair.strip().partition("=")
                if name.strip().lower() == "for":
                    found = param.strip()
            out.append(found)
    return out


def _resolve(chain: list[str], networks: Sequence[Network]) -> str:
    """The client in a forwarded chain: the rightmost entry not a trusted proxy."""
    for entry in reversed(chain):
        ip = _address(entry)
        if ip is None:
            return UNKNOWN
        if not _trusted(ip, networks):
            return str(ip)
    return str(_address(chain[0])) if chain else UNKNOWN


def client_address(
    peer: str, headers: Iterable[tuple[bytes, bytes]], networks: Sequence[Network]
) -> str:
    """The client of a request from ``peer`` with these raw ``headers`` (see the module)."""
    if not _trusted(_address(peer), networks):
        return peer
    xff: list[str] = []
    fwd: list[str] = []
    for name, value in headers:
        key = name.lower()
        if key == b"x-forwarded-for":
            xff.append(value.decode("latin-1"))
        elif key == b"forwarded":
            fwd.append(value.decode("latin-1"))
    chains = [chain for chain in (_x_forwarded_for(xff), _forwarded(fwd)) if chain]
    if not chains:
        return peer  # the proxy itself calling, or one that forwards no client
    found = {_resolve(chain, networks) for chain in chains}
    return found.pop() if len(found) == 1 else UNKNOWN


class TrustedProxies:
    """ASGI middleware: ``scope["client"]`` becomes the client a trusted proxy forwarded for."""

    def __init__(self, app: ASGIApp, trusted: Sequence[str]) -> None:
        self.app = app
        self.networks: list[Network] = [ipaddress.ip_network(n, strict=False) for n in trusted]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and self.networks:
            peer = scope.get("client")
            if peer is not None:
                client = client_address(peer[0], scope["headers"], self.networks)
                if client != peer[0]:
                    scope["client"] = (client, 0)
        await self.app(scope, receive, send)
