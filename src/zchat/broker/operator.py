"""The broker's operator side: `zchat admin` on the admin socket, and the keys the
operator bans, withdraws or replaces (their connections are cut).

A mixin of the Broker (server.py), as the rules' parts are of BrokerRules: it reads
and changes the broker's state, declared below, and leaves the sockets' loop to it.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import zmq

from zchat import admin
from zchat import protocol as p
from zchat.broker.files import FileService
from zchat.broker.guard import ConnectionGuard
from zchat.broker.identity import is_login_key
from zchat.broker.policy import AccountsPolicy, SecurePolicy
from zchat.broker.reloading import KeyReload, Reloaded
from zchat.broker.rules import Actions, Answer, BrokerRules
from zchat.broker.security import KeyAuthenticator
from zchat.broker.store import HistoryStore
from zchat.errors import ConfigError
from zchat.keys import KeyRing

log = logging.getLogger("zchat.broker")

# A banned or withdrawn key's connections are cut this long after, at the heartbeat:
# the notice that ends its session goes out on them first.
CUT_BARRED_SECONDS = 0.25


class Operator:
    """`zchat admin`'s requests, and the connections of barred keys."""

    rules: BrokerRules
    store: HistoryStore
    guard: ConnectionGuard
    files: FileService
    _auth: KeyAuthenticator | None
    _reload: KeyReload | None
    _admin: zmq.Socket[bytes]
    _bars: dict[str, bool]  # key name -> banned or withdrawn (see _barred)
    _cut_barred_at: float | None  # when to cut their connections
    _replaced: set[str]  # users whose key was replaced, till then
    turns: Any  # server.Turns: how long the loop's turns take

    @property
    def secure(self) -> bool:
        return self._auth is not None

    def _apply(self, actions: Actions) -> None:
        raise NotImplementedError  # the Broker's

    def _use_keys(self, keyring: KeyRing) -> None:
        allowed = frozenset(name.lower() for name in keyring.users.values())
        if self.rules.policy.logins:
            register = getattr(self.rules.policy, "register", False)
            self.rules.policy = AccountsPolicy(keyring.admins, allowed, register)
        else:
            self.rules.policy = SecurePolicy(keyring.admins, allowed)

    def _barred(self, user: str) -> bool:
        """Is ``user``'s key banned or withdrawn (its connections are cut)?"""
        if is_login_key(user):
            return user in self.rules.ended_keys
        barred = self._bars.get(user)
        if barred is None:
            name = user.lower()
            withdrawn = not self.rules.policy.still_allowed(name)
            barred = withdrawn or (self._auth is not None and name in self._auth.banned)
            if len(self._bars) > 10_000:
                self._bars.clear()
            self._bars[user] = barred
        return barred

    def _drop_barred(self, fd: int, now: float, user: str, serial: int = 0) -> None:
        """A frame came from a banned or withdrawn key: it is dropped, and the key's
        connections are cut at the next heartbeat."""
        self.rules.dropped["barred"] += 1
        self.guard.seen(fd, now, user, serial)
        if self._cut_barred_at is None:
            self._cut_barred_at = now

    def _bars_changed(self, replaced: frozenset[str] = frozenset()) -> None:
        """Keys were banned, withdrawn, or ``replaced`` (users whose key changed: the
        old one may have leaked): their connections are cut a moment later (the notice
        that ends their sessions goes out first)."""
        self._bars.clear()
        self._replaced |= replaced
        self._cut_barred_at = time.monotonic() + CUT_BARRED_SECONDS

    def _cut_barred(self) -> None:
        """Cut every connection of a key that is now banned, withdrawn or replaced (the
        new key's connections are made again; the old one's are refused)."""
        self._cut_barred_at = None
        replaced, self._replaced = self._replaced, set()
        for user in self.guard.users():
            if (self._barred(user) or user in replaced) and (cut := self.guard.cut_owner(user)):
                log.info("cut %d connection(s) of %s: key banned, withdrawn or replaced", cut, user)

    def _serve_admin(self) -> None:
        """One request from the operator, answered now or, for a reload, when it is
        done. It comes as a REQ socket sends it: [its identity, b"", the request]."""
        try:
            frames = self._admin.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return
        if len(frames) < 3 or frames[-2] != b"":  # not from a REQ socket: nowhere to answer
            return
        asker, data = frames[:-1], frames[-1]
        try:
            request = admin.parse(data)
            if request["op"] == "reload":
                reply = self._start_reload(asker)
                if reply is None:
                    return  # answered when done (_woken)
            else:
                reply = self._admin_reply(request)
        except (ValueError, ConfigError) as exc:
            reply = {"ok": False, "error": str(exc)}
        except Answer as answer:
            reply = {"ok": False, "error": answer.text}
        except Exception as exc:
            log.exception("admin request failed")
            reply = {"ok": False, "error": f"the broker failed: {exc}"}
        self._answer_admin(asker, reply)

    def _answer_admin(self, asker: list[bytes], reply: dict[str, Any]) -> None:
        # an asker that is gone (it gave up waiting) is not found: ROUTER drops the reply
        self._admin.send_multipart([*asker, json.dumps(reply).encode("utf-8")])

    def _start_reload(self, asker: list[bytes]) -> dict[str, Any] | None:
        """Begin reading the keys folder (reloading.py); None: the answer comes later."""
        if self._reload is None:
            return {"ok": False, "error": "reload is for a broker in secure mode (--secure)"}
        if not self._reload.start(asker):
            return {"ok": False, "error": "a reload is already under way: try again when it ends"}
        return None

    def _reloaded(self, done: Reloaded) -> dict[str, Any]:
        """Use the keys a reload read, all at once; or say why they were refused."""
        if done.keyring is None or self._auth is None:
            log.warning("operator: keys not reloaded: %s", done.error)
            return {"ok": False, "error": done.error}
        keyring = done.keyring
        replaced = frozenset(
            name
            for key, name in self._auth.keyring.users.items()
            if keyring.users.get(key) != name and name in keyring.users.values()
        )
        self._auth.reload(keyring)
        self._use_keys(keyring)
        self._apply(self.rules.withdraw())
        self._bars_changed(replaced)
        text = f"keys reloaded: {len(keyring.users)} user(s), {len(keyring.admins)} admin(s)"
        if keyring.skipped:
            text += f"; {len(keyring.skipped)} file(s) skipped, see the broker's log"
        log.info("operator: %s", text)
        return {"ok": True, "text": text}

    def _admin_reply(self, request: dict[str, Any]) -> dict[str, Any]:
        op, name, reason = request["op"], request["name"], request["reason"]
        if op in ("kick", "ban", "unban"):
            text, actions = self.rules.moderate(op, name, reason)
            self._apply(actions)
            log.info("operator: %s", text)
            return {"ok": True, "text": text}
        if op == "who":
            return {"ok": True, "data": self.rules.who(time.monotonic())}
        if op == "bans":
            bans = [
                {"name": b.name, "reason": b.reason, "by": b.by, "ts": p.format_ts(b.ts)}
                for b in self.store.bans()
            ]
            return {"ok": True, "data": bans}
        if op == "stats":
            return {"ok": True, "data": self.stats()}
        if op.startswith("user"):
            return self._accounts_reply(request)
        raise ValueError(f"unknown op {op!r}")

    def _accounts_reply(self, request: dict[str, Any]) -> dict[str, Any]:
        """`zchat user`: the accounts of an accounts broker. The password is hashed by
        `zchat user`, on this machine: only its hash comes here."""
        if not self.rules.policy.logins:
            raise ValueError("accounts are for a broker started with --accounts")
        op, name = request["op"], request["name"]
        if op == "users":
            accounts = [
                {"name": a.name, "admin": a.admin, "created": a.created, "last": a.last,
                 "failed": a.failed}
                for a in self.rules.accounts.all()
            ]  # fmt: skip
            return {"ok": True, "data": accounts}
        actions = Actions()
        if op == "user-add":
            text = self.rules.add_account(name, request["hash"], request["admin"])
        elif op == "user-passwd":
            text, actions = self.rules.change_account(name, request["hash"])
        else:  # user-del
            text, actions = self.rules.delete_account(name)
        self._apply(actions)
        log.info("operator: %s", text)
        return {"ok": True, "text": text}

    def stats(self) -> dict[str, Any]:
        return {
            "sessions": len(self.rules.sessions),
            "orphans": len(self.rules.orphans),
            "rooms": len(self.rules.presence.rooms),
            "dropped": dict(self.rules.dropped),
            "refused_keys": self._auth.refused if self._auth else 0,
            "cuts": dict(self.guard.cuts),
            "refused_handshakes": self.guard.refusals,
            "connections": self.guard.connections,
            "penalised_addresses": self.guard.penalised,
            "secure": self.secure,
            "logins": dict(self.rules.logins_counted),
            "loop": self.turns.taken(),
            "files": {
                "shared": self.files.counts.uploaded,
                "bytes_in": self.files.counts.bytes_in,
                "bytes_out": self.files.counts.bytes_out,
                "stored_bytes": self.files.store.stored,
                "refused": dict(self.files.counts.dropped),
            },
        }

    def _banned(self) -> frozenset[str]:
        return frozenset(ban.name.lower() for ban in self.store.bans())
