"""Which brokers' keys a person trusts: zchat's known_hosts, as SSH's.

A client of an accounts broker must know the broker's public key before connecting,
and learns it as SSH does, trusting it on first use. The first time, it asks the key
port (protocol/hello.py), shows the key's fingerprint and asks the person whether to
trust it; a key they trust is remembered, per host and port, in a known_hosts file::

    # zchat's trusted brokers: HOST:PORT KEY, one a line
    chat.example.org:5005 N)<o!rE&j45s-kLsdSA5d$QB[?.msfou{/Sb8hc&
    [::1]:5005 8k1Q96VTd.BR>I+03lxObH8.zt%Z%L&5>T{Q9Pni

How a client uses it, with --server HOST:PORT (addresses.parse_server):

a. ``lookup`` finds a key for HOST:PORT: connect with it.
b. None: fetch the broker's hello (client/hello.py), show its fingerprint, ask, and
   ``remember`` the key if the person says yes.
c. The CURVE handshake with the remembered key fails: fetch the hello again and
   ``check`` its key. KeyChanged if it is another; if it is the same, the key is not
   why the handshake failed (say so, as for any other failed handshake).

An operator can skip the question by handing out ``invite``'s line: ``--server-key``
(``server_key``) gives the key outright, as a file or as the 40 characters.

The file is read up to a bound; a line that cannot be read is skipped with a warning
naming the file and the line, never fatal (a person edits it by hand). Hosts are
compared without case, and IP addresses in their shortest form, so ``[0::1]:5005`` is
``[::1]:5005``. A second key is never remembered for the same host and port: that is
the change KeyChanged reports, and the person removes the old line themselves.
"""

from __future__ import annotations

import logging
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from zchat.addresses import host_port, port_number, same_broker, split_address
from zchat.errors import ConfigError, ProtocolError
from zchat.filemodes import OTHERS_WRITE, private_umask
from zchat.keys import load_public, read_bounded
from zchat.protocol.hello import check_key, fingerprint

MAX_KNOWN_HOSTS_BYTES = 1024 * 1024  # some 20,000 brokers
HEADER = b"# zchat's trusted brokers: HOST:PORT KEY, one a line\n"

log = logging.getLogger(__name__)


def known_hosts_path() -> Path:
    """$ZCHAT_KNOWN_HOSTS, else $XDG_CONFIG_HOME/zchat/known_hosts, else
    ~/.config/zchat/known_hosts."""
    chosen = os.environ.get("ZCHAT_KNOWN_HOSTS")
    if chosen:
        return Path(chosen)
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "zchat" / "known_hosts"


class KeyChanged(ConfigError):
    """The broker at a host and port has another key than the one the person trusted."""

    def __init__(self, host: str, port: int, old: bytes, new: bytes, path: Path, line: int):
        self.host, self.port, self.old, self.new = host, port, old, new
        self.path, self.line = path, line
        super().__init__(
            f"the broker at {host_port(host, port)} now has a different key "
            f"({fingerprint(new)}) than the one you trusted ({fingerprint(old)}, {path} "
            f"line {line}). Someone may be intercepting the connection; or its operator "
            "changed its key. Ask the operator for the broker's fingerprint, and if it is "
            f"the new one, delete line {line} of {path}"
        )


@dataclass(frozen=True)
class Known:
    key: bytes  # Z85
    line: int  # where in the file, from 1


class KnownHosts:
    """The known_hosts file at ``path`` (known_hosts_path()); it is read at each call,
    so that what another zchat remembered meanwhile counts."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._warned: set[int] = set()  # lines skipped with a warning already

    def lookup(self, host: str, port: int) -> bytes | None:
        """The key trusted for ``host:port``, or None if there is none."""
        known = self._entries().get(same_broker(host, port))
        return None if known is None else known.key

    def check(self, host: str, port: int, key: bytes) -> bool:
        """True if ``key`` is the one trusted for ``host:port``, False if none is;
        KeyChanged if another one is."""
        key = _checked_key(key)
        known = self._entries().get(same_broker(host, port))
        if known is None:
            return False
        if known.key != key:
            raise KeyChanged(host, port, known.key, key, self.path, known.line)
        return True

    def remember(self, host: str, port: int, key: bytes) -> None:
        """Trust ``key`` for ``host:port`` from now on: a line at the end of the file
        (made, and its folder, for this user's eyes only). Nothing is written if it is
        trusted already; KeyChanged if another key is."""
        if self.check(host, port, key):
            return
        line = f"{host_port(host, port)} {key.decode('ascii')}\n".encode("ascii")
        try:
            self._append(line)
        except OSError as exc:
            raise ConfigError(f"cannot write {self.path}: {exc.strerror or exc}") from None

    def _append(self, line: bytes) -> None:
        with private_umask():  # never readable by others, not even for a moment
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
            try:  # a link planted in its place is not followed
                fd = os.open(self.path, flags, 0o600)
            except OSError as exc:
                raise ConfigError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        with os.fdopen(fd, "r+b") as file:
            size = os.fstat(fd).st_size
            if size == 0:
                line = HEADER + line
            elif os.pread(fd, 1, size - 1) != b"\n":  # edited by hand, no line end
                line = b"\n" + line
            file.write(line)

    def _entries(self) -> dict[tuple[str, int], Known]:
        try:
            self.path.stat()
        except FileNotFoundError:
            return {}
        except OSError:
            pass  # unreadable: read_bounded says so, before anyone is asked to trust a key
        _check_private(self.path)
        data = read_bounded(self.path, MAX_KNOWN_HOSTS_BYTES, "a known_hosts file")
        entries: dict[tuple[str, int], Known] = {}
        for number, raw in enumerate(data.split(b"\n"), 1):
            text = raw.decode("utf-8", "replace").strip()
            if not text or text.startswith("#"):
                continue
            try:
                host, port, key = _parse_line(text)
            except ValueError as exc:
                self._warn(number, str(exc))
                continue
            address = same_broker(host, port)
            first = entries.setdefault(address, Known(key, number))
            if first.key != key:
                self._warn(number, f"line {first.line} has another key for the same broker")
        return entries

    def _warn(self, number: int, why: str) -> None:
        if number not in self._warned:
            self._warned.add(number)
            log.warning(
                "%s line %d skipped: %s (a line reads HOST:PORT KEY); edit or delete it",
                self.path,
                number,
                why,
            )


def _parse_line(text: str) -> tuple[str, int, bytes]:
    """A known_hosts line's host, port and key; ValueError says what is wrong."""
    fields = text.split()
    if len(fields) != 2:
        raise ValueError(f"it should be 2 fields, and it has {len(fields)}")
    host, port = split_address(fields[0])
    if port is None:
        raise ValueError(f"{fields[0]!r} has no port")
    key = fields[1].encode("utf-8")
    try:
        check_key(key)
    except ProtocolError as exc:
        raise ValueError(f"the key is not one: {exc}") from None
    return host, port_number(port), key


def _checked_key(key: bytes) -> bytes:
    try:
        check_key(key)
    except ProtocolError as exc:
        raise ConfigError(f"not a broker's public key: {exc}") from None
    return key


def server_key(value: str) -> bytes:
    """The broker's public key from a --server-key value: the path of its key file (a
    file there wins), else the 40 Z85 characters of the key itself."""
    path = Path(value).expanduser()
    try:
        is_file = path.exists()
    except (OSError, ValueError):  # a name too long, or with a NUL in it
        is_file = False
    if is_file:
        key = load_public(path)
        try:
            check_key(key)
        except ProtocolError as exc:
            raise ConfigError(f"{path} holds no valid public key: {exc}") from None
        return key
    key = value.strip().encode("utf-8")
    try:
        check_key(key)
    except ProtocolError as exc:
        raise ConfigError(
            f"--server-key {value[:80]!r} is neither a key file (there is no file of that "
            f"name) nor a broker's public key ({exc})"
        ) from None
    return key


def _check_private(path: Path) -> None:
    """ConfigError if another user could change the file (then its keys prove nothing)."""
    info = path.stat()
    if info.st_uid not in (os.geteuid(), 0) or info.st_mode & OTHERS_WRITE:
        raise ConfigError(
            f"{path} can be changed by another user (owner uid {info.st_uid}, mode "
            f"{info.st_mode & 0o777:o}): any of them could make you trust their own broker. "
            f"Check its lines, then run chmod 600 {path} (as its owner)"
        )


def invite(host: str, port: int, key: bytes) -> str:
    """The line an operator hands out: it joins the broker with its key given, so that
    nobody is asked to trust a fingerprint. Quoted for a shell (Z85 has '&', '$', ...)."""
    server = shlex.quote(f"tcp://{host_port(host, port)}")
    return f"zchat join --server {server} --server-key {shlex.quote(_checked_key(key).decode())}"
