"""Who a frame comes with, as the ZAP handler names it (security.py, ``User-Id``).

In secure mode a listed key is named by its file's name, a user name. An accounts
broker lets in any key, and names one it does not list ``~`` and its Z85 text: a
**login key**. No user name contains ``~`` (values.check_name), so a login key never
passes for a listed one. A login key proves nothing but that its connections are one
client's; the name its sessions get comes from a password checked by the broker
(login_rules.py). Anyone can make fresh keys, so the limits charged to a listed key
(guard.py, limits.py) are charged to a login key's address instead, as in open mode.
"""

from __future__ import annotations

LOGIN_KEY_PREFIX = "~"


def login_key_user(z85_key: bytes) -> str:
    """The ``User-Id`` of a key the broker does not list (an accounts broker)."""
    return LOGIN_KEY_PREFIX + z85_key.decode("ascii")


def is_login_key(user: str | None) -> bool:
    """Whether ``user`` names a login key (not a listed key, nor no key at all)."""
    return user is not None and user.startswith(LOGIN_KEY_PREFIX)


def keyed(user: str | None) -> bool:
    """Whether limits are charged to ``user``'s key: a listed key (secure mode); a
    login key, or none, is charged to its address."""
    return user is not None and not user.startswith(LOGIN_KEY_PREFIX)
