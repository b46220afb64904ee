"""The operator's line to a running broker: ``zchat admin`` and the broker's side of it.

The broker binds a ROUTER socket on a Unix socket file that only its owner may open
(the file is mode 0600, in a folder of mode 0700); ``zchat admin`` sends each request
on a REQ socket. Requests and replies are one JSON object each::

    -> {"op": "kick", "name": "bob", "reason": "spamming"}
    <- {"ok": true, "text": "bob was kicked"}
    <- {"ok": false, "error": "no user named 'bob' is here"}

``op`` is one of OPS. ``who``, ``bans``, ``stats`` and ``users`` add a ``data`` field.
``user-add`` (``name``, ``hash``, ``admin``), ``user-passwd`` (``name``, ``hash``) and
``user-del`` (``name``) change an accounts broker's accounts: `zchat user` hashes the
password on this machine, and only the hash is sent. A
``reload`` is answered once the keys folder is read (in a thread of the broker's), and
other requests are answered meanwhile; a second ``reload`` meanwhile is refused.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import tempfile
from pathlib import Path
from typing import Any

from zchat.errors import ConfigError, ZchatError
from zchat.passwords import is_hash

OPS = ("kick", "ban", "unban", "who", "bans", "stats", "reload", "users", "user-add",
       "user-passwd", "user-del")  # fmt: skip
REPLY_SECONDS = 5.0
MAX_REQUEST_BYTES = 4096
_OTHERS_WRITE = stat.S_IWGRP | stat.S_IWOTH  # a folder others may put files in


class AdminError(ZchatError):
    """The broker refused an admin request, or could not be reached."""


def default_path(port: int) -> Path:
    """Where the broker on ``port`` listens for its operator:
    $XDG_RUNTIME_DIR/zchat/admin-PORT.sock, or /tmp/zchat-UID/admin-PORT.sock."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = (
        Path(runtime) / "zchat" if runtime else Path(tempfile.gettempdir()) / f"zchat-{os.getuid()}"
    )
    return base / f"admin-{port}.sock"


def private_folder(path: Path) -> None:
    """Make the socket's folder, or check it. A folder made for zchat (missing, or named
    zchat...: the default's) must be ours and is made private (0700). Any other folder
    is left as it is, but refused if other users may write to it. And no folder above
    may let others rename it (written by others, and not sticky as /tmp is). Either
    would let another user put their own socket in the broker's place, for `zchat
    admin` to talk to."""
    folder = path.parent
    ours = not folder.exists() or folder.name.startswith("zchat")  # made by us, or default
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = folder.lstat()
    owner_ok = info.st_uid == os.getuid() or (not ours and info.st_uid == 0)
    if not stat.S_ISDIR(info.st_mode) or not owner_ok:
        raise ConfigError(
            f"{folder} is not a folder of this user's: refusing to put the admin socket there"
        )
    if ours and info.st_mode & 0o077:
        folder.chmod(0o700)
    elif not ours and info.st_mode & _OTHERS_WRITE:
        raise ConfigError(
            f"{folder} can be written by other users (mode {stat.S_IMODE(info.st_mode):o}): "
            "one of them could put their own socket in place of the broker's admin socket. "
            f"Give --admin-socket a path in a folder only you can write to (chmod go-w "
            f"{folder}, or make one with mkdir -m 700 DIR), or leave --admin-socket out"
        )
    for above in folder.absolute().parents:
        mode = above.stat().st_mode
        if mode & _OTHERS_WRITE and not mode & stat.S_ISVTX:
            raise ConfigError(
                f"{above} can be written by other users (mode {stat.S_IMODE(mode):o}) and is "
                f"not sticky: one of them could rename {folder} and put their own admin "
                "socket in its place. Give --admin-socket a path under folders only you can "
                "write to, or leave --admin-socket out"
            )


def request(
    path: Path, op: str, args: dict[str, Any] | None = None, timeout: float = REPLY_SECONDS
) -> dict[str, Any]:
    """Send one request to the broker at ``path``; its reply (``ok`` true), or AdminError."""
    import zmq

    if not path.exists():
        raise AdminError(
            f"no broker here: {path} does not exist (is `zchat broker` running on this "
            "machine, as this user, with this --port?)"
        )
    if not os.access(path, os.R_OK | os.W_OK):
        raise AdminError(f"cannot open {path}: it belongs to another user")
    _probe(path)
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(f"ipc://{path}")
        sock.send(json.dumps({"op": op, **(args or {})}).encode("utf-8"))
        if not sock.poll(int(timeout * 1000)):
            raise AdminError(f"no answer from the broker at {path} within {timeout:g} s")
        reply = json.loads(sock.recv())
    finally:
        sock.close()
    if not reply.get("ok"):
        raise AdminError(str(reply.get("error", "refused")))
    return dict(reply)


def _probe(path: Path) -> None:
    """Fail at once if no one listens at ``path`` (a file left by a broker that was
    killed), rather than after the reply's timeout: ZeroMQ would retry in silence."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except ConnectionRefusedError:
            raise AdminError(
                f"no broker is listening at {path}: the file was left by a broker that "
                "stopped (is `zchat broker` running, with this --port?)"
            ) from None
        except OSError as exc:
            raise AdminError(f"cannot open {path}: {exc.strerror or exc}") from None


def parse(data: bytes) -> dict[str, Any]:
    """A request as the broker reads it; ValueError says what is wrong with it."""
    if len(data) > MAX_REQUEST_BYTES:
        raise ValueError(f"request longer than {MAX_REQUEST_BYTES} bytes")
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("request is not JSON") from None
    if not isinstance(obj, dict) or obj.get("op") not in OPS:
        raise ValueError(f"request needs an op, one of: {', '.join(OPS)}")
    for key in ("name", "reason", "hash"):
        if not isinstance(obj.get(key, ""), str):
            raise ValueError(f"{key} must be a string")
    if not isinstance(obj.get("admin", False), bool):
        raise ValueError("admin must be true or false")
    request = {"op": obj["op"], "name": obj.get("name", ""), "reason": obj.get("reason", "")}
    request |= {"hash": obj.get("hash", ""), "admin": obj.get("admin", False)}
    if request["op"] in ("user-add", "user-passwd") and not is_hash(request["hash"]):
        raise ValueError("hash must be a password hash made by zchat (passwords.py)")
    return request
