"""Who may do what: the broker's mode as an object the rules ask, never a flag they test.

Open mode trusts names (anyone takes any free name) and has no keys; secure mode ties
every frame to the key it came with (``user``, from the ZAP handler), a session's name
to its key's, an inbox to the key that subscribed to it first, and moderation to the
admins' keys. An accounts broker does the same, but names a session after the account
whose password its key gave (identity.py, login_rules.py). The rules ask the same
questions in every mode; the answers differ here.
"""

from __future__ import annotations

from dataclasses import dataclass

from zchat.broker.actions import Answer
from zchat.broker.identity import LOGIN_KEY_PREFIX, is_login_key


@dataclass(frozen=True)
class OpenPolicy:
    """Open mode: no keys; names are first come, first served."""

    secure = False
    logins = False  # passwords are taken (AccountsPolicy)
    by_address = True  # the limits beyond a session's are its address's (state.owner_of)

    def same_key(self, holder: str | None, user: str | None) -> bool:
        """May a frame with key ``user`` act for what key ``holder`` made? (Always.)"""
        return True

    def owns(self, owner: str | None, user: str | None) -> bool:
        """May key ``user`` use an inbox that key ``owner`` claimed? (Always.)"""
        return True

    def name_for(self, name: str, user: str | None) -> str:
        """The name a JOIN gets: the one it asks for."""
        return name

    def is_admin(self, name: str) -> bool:
        return False

    def still_allowed(self, name: str) -> bool:
        return True

    def may_rename(self) -> None:
        """Names may change (a taken one is refused elsewhere)."""

    def may_moderate(self, admin: bool, op: str) -> None:
        raise Answer(
            "not-allowed",
            "kick, ban and unban in the chat need a broker in secure mode; "
            "on the broker's machine, use `zchat admin`",
        )


@dataclass(frozen=True)
class SecurePolicy:
    """Secure mode: ``allowed`` (lower-case names with a key; None before the keys are
    known) and ``admins`` (lower-case names)."""

    admins: frozenset[str] = frozenset()
    allowed: frozenset[str] | None = None

    secure = True
    logins = False
    by_address = False

    def same_key(self, holder: str | None, user: str | None) -> bool:
        return holder == user

    def owns(self, owner: str | None, user: str | None) -> bool:
        return user is not None and (owner is None or owner == user)

    def name_for(self, name: str, user: str | None) -> str:
        if user is None or name.lower() != user.lower():
            raise Answer(
                "not-your-name",
                f"your key is {user}'s: join as {user}" if user else "no key: join again",
            )
        if not self.still_allowed(user):
            raise Answer("key-withdrawn", f"the key of {user} was withdrawn by the operator")
        return user

    def is_admin(self, name: str) -> bool:
        return name.lower() in self.admins

    def still_allowed(self, name: str) -> bool:
        return self.allowed is None or name.lower() in self.allowed

    def may_rename(self) -> None:
        raise Answer("fixed-name", "in secure mode your name is your key's name")

    def may_moderate(self, admin: bool, op: str) -> None:
        if not admin:
            raise Answer("not-admin", f"only admins may {op} (see the broker's keys)")


@dataclass(frozen=True)
class AccountsPolicy(SecurePolicy):
    """An accounts broker: any key connects, and a login key's session has the name of
    the account whose password it gave (login_rules.py); a listed key's, as in secure
    mode, its key's. ``register``: people may make their own accounts."""

    register: bool = False

    logins = True
    by_address = True  # login keys are free to make: their limits are their address's

    def name_for(self, name: str, user: str | None) -> str:
        if is_login_key(user):
            return name  # the account's, which its password proved
        return super().name_for(name, user)

    def still_allowed(self, name: str) -> bool:
        return name.startswith(LOGIN_KEY_PREFIX) or super().still_allowed(name)

    def may_rename(self) -> None:
        raise Answer("fixed-name", "on this broker your name is your account's (or your key's)")

    def may_moderate(self, admin: bool, op: str) -> None:
        if not admin:
            raise Answer("not-admin", f"only admins may {op} (`zchat user add NAME --admin`)")


Policy = OpenPolicy | SecurePolicy | AccountsPolicy
