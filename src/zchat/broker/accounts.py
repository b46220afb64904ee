"""The accounts of an accounts broker, in the history database: who may log in with a
password, and who is admin. Only a password's hash is kept (passwords.py); it never
leaves this table but for the hashing thread (logins.py).

Names are unique ignoring case, as in the chat: ``name`` is the lower-case key and
``shown`` the name as it was given. Each account counts the logins refused since its
last one, which its owner is told of on their next (``logged_in``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from zchat import protocol as p
from zchat.broker.store import HistoryStore

_COLUMNS = "shown, hash, admin, created, failed, last, seen_from"


@dataclass(frozen=True)
class Account:
    name: str  # as shown
    hash: str
    admin: bool
    created: str  # protocol timestamps (UTC)
    failed: int  # logins refused since the last one
    last: str  # the last login; "" if none yet
    seen_from: str = ""  # the address of the last login


class AccountStore:
    def __init__(self, history: HistoryStore) -> None:
        self.history = history

    def get(self, name: str) -> Account | None:
        rows = self.history.rows(f"SELECT {_COLUMNS} FROM accounts WHERE name = ?", (name.lower(),))
        return _account(rows[0]) if rows else None

    def all(self) -> list[Account]:
        rows = self.history.rows(f"SELECT {_COLUMNS} FROM accounts ORDER BY name")
        return [_account(row) for row in rows]

    def count(self) -> int:
        return int(self.history.rows("SELECT COUNT(*) FROM accounts")[0][0])

    def add(self, name: str, hashed: str, admin: bool, when: datetime) -> bool:
        """Make the account; False if the name has one already."""
        if self.get(name) is not None:
            return False
        self.history.write(
            lambda db: db.execute(
                "INSERT INTO accounts (name, shown, hash, admin, created) VALUES (?, ?, ?, ?, ?)",
                (name.lower(), name, hashed, int(admin), p.format_ts(when)),
            )
        )
        return True

    def set_hash(self, name: str, hashed: str) -> bool:
        """Give the account a new password's hash; False if it has none."""
        if self.get(name) is None:
            return False
        self.history.write(
            lambda db: db.execute(
                "UPDATE accounts SET hash = ? WHERE name = ?", (hashed, name.lower())
            )
        )
        return True

    def set_admin(self, name: str, admin: bool) -> None:
        self.history.write(
            lambda db: db.execute(
                "UPDATE accounts SET admin = ? WHERE name = ?", (int(admin), name.lower())
            )
        )

    def delete(self, name: str) -> bool:
        """Delete the account; False if there is none."""
        if self.get(name) is None:
            return False
        self.history.write(
            lambda db: db.execute("DELETE FROM accounts WHERE name = ?", (name.lower(),))
        )
        return True

    def failed(self, name: str) -> None:
        """A login to the account was refused (counted, for its owner to be told)."""
        self.history.write(
            lambda db: db.execute(
                "UPDATE accounts SET failed = failed + 1 WHERE name = ?", (name.lower(),)
            )
        )

    def logged_in(self, name: str, when: datetime, address: str) -> tuple[int, datetime | None]:
        """A login to the account, from ``address``: the logins refused since the one
        before, and when that was (None: the first); both start afresh."""
        account = self.get(name)
        if account is None:
            return 0, None
        self.history.write(
            lambda db: db.execute(
                "UPDATE accounts SET failed = 0, last = ?, seen_from = ? WHERE name = ?",
                (p.format_ts(when), address, name.lower()),
            )
        )
        return account.failed, p.parse_ts(account.last) if account.last else None


def _account(row: tuple[Any, ...]) -> Account:
    shown, hashed, admin, created, failed, last, seen_from = row
    return Account(shown, hashed, bool(admin), created, int(failed), last, seen_from)
