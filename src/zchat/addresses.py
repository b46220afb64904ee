"""Where a broker is: the host and port of a --server value, and how they are written.

Pure: no sockets, no name lookups. A broker listens on PORT to PORT + 3 (the chat's
two sockets, the file port, and the key port of accounts mode), so PORT is at most
MAX_PORT. An IPv6 address is written in brackets when a port follows it
(``[::1]:5005``), as in URLs and in known_hosts (trust.py); without them ``::1:5005``
could be read two ways, so it is refused.
"""

from __future__ import annotations

import ipaddress
import re

from zchat.errors import ConfigError
from zchat.protocol.hello import KEY_PORT_OFFSET

DEFAULT_PORT = 5005  # as transport.DEFAULT_PORT (which would import zmq here)
MAX_PORT = 65535 - KEY_PORT_OFFSET  # a broker uses PORT to PORT + 3
# A host name or an IPv4 address (IPv6 ones are in brackets, and checked by ipaddress).
HOST_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,252}")


def parse_server(url: str) -> tuple[str, int]:
    """The host and port of a --server value: ``tcp://HOST:PORT``, ``HOST:PORT`` or
    ``HOST`` (port DEFAULT_PORT), an IPv6 host in brackets (``tcp://[::1]:5005``)."""
    text = url.strip()
    scheme, sep, rest = text.partition("://")
    if sep and scheme.lower() != "tcp":
        raise ConfigError(f"--server {url!r}: zchat connects with tcp://, not {scheme}://")
    try:
        host, port = split_address(rest if sep else text)
        return host, DEFAULT_PORT if port is None else port_number(port)
    except ValueError as exc:
        raise ConfigError(
            f"--server {url!r}: {exc}; give HOST, HOST:PORT or tcp://HOST:PORT"
        ) from None


def same_broker(host: str, port: int) -> tuple[str, int]:
    """What tells brokers apart: the port, and the host without case, an IP address in
    its shortest form (``0:0::1`` is ``::1``)."""
    try:
        return str(ipaddress.ip_address(host)), port
    except ValueError:
        return host.lower(), port


def host_port(host: str, port: int) -> str:
    """``host:port``, an IPv6 host in brackets: ``[::1]:5005``."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def split_address(text: str) -> tuple[str, str | None]:
    """``HOST``, ``HOST:PORT``, ``[IPv6]`` or ``[IPv6]:PORT``: the host and the port's
    text (None if there is none). ValueError says what is wrong."""
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket:
            raise ValueError("the '[' before an IPv6 address has no ']' after it")
        if not _is_ipv6(host):
            raise ValueError(f"[{host}] is not an IPv6 address")
        if rest and not rest.startswith(":"):
            raise ValueError(f"{rest!r} after ']' is not :PORT")
        return host, rest[1:] if rest else None
    if text.count(":") > 1:
        raise ValueError("an IPv6 address goes in brackets, as in [::1]:5005")
    host, colon, port = text.partition(":")
    if not HOST_RE.fullmatch(host):
        raise ValueError(f"{host!r} is not a host name or address")
    return host, port if colon else None


def _is_ipv6(host: str) -> bool:
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        return False
    return True


def port_number(text: str) -> int:
    """The broker's port in ``text``; ValueError unless it is 1 to MAX_PORT."""
    if not (text.isascii() and text.isdigit() and len(text) <= 5 and 1 <= int(text) <= MAX_PORT):
        raise ValueError(
            f"port {text!r} is not a number from 1 to {MAX_PORT} (a broker uses PORT to "
            f"PORT + {KEY_PORT_OFFSET})"
        )
    return int(text)
