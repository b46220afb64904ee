"""Sessions an earlier broker never closed: its "orphans". Plain data, no clock.

A broker that stops (SIGTERM) or is killed announces no leave, so its history shows
who joined and never shows them go. The store keeps who its events leave in each room
(store.present); the next broker takes those names as orphans, and:

* a join under an orphan's name settles every orphan of that name (any case). In the
  rooms the join names in ``since`` (a client coming back to what it was in), under
  the very same name, the session goes on: no leave, no second join notice. Elsewhere,
  and for a first join, the orphan is closed first, with a leave ``broker restarted``,
  then the join is announced as any;
* a nick to an orphan's name closes it first, as a first join would;
* once the grace period is over, every orphan left is closed the same way, so history
  never reads "Alice joined" twice without "Alice left" between.

An orphan is not a member: ``who`` and ``rooms`` leave it out. A member list that a
client follows from then on (``welcome``, ``entered``) shows it: the orphan either
comes back in silence or leaves with a notice, so the list and the events after it
always add up to who is there.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

# How long after its start a broker waits for the clients of an earlier one to come
# back before it closes their sessions (clients rejoin within a few seconds).
REJOIN_GRACE_SECONDS = 30.0
# The reason of the leave that closes an orphan.
RESTART_REASON = "broker restarted"


class Orphans:
    """Room -> the names left in it by an earlier broker, until ``ends`` (monotonic)."""

    def __init__(self, present: Mapping[str, Collection[str]] | None = None, ends: float = 0.0):
        self._rooms: dict[str, dict[str, str]] = {
            room: {name.lower(): name for name in names}
            for room, names in (present or {}).items()
            if names
        }
        self.ends = ends

    def __len__(self) -> int:
        return sum(len(names) for names in self._rooms.values())

    def in_room(self, room: str) -> tuple[str, ...]:
        return tuple(self._rooms.get(room, {}).values())

    def settle(
        self, name: str, resumed: Collection[str], now: float
    ) -> tuple[set[str], list[tuple[str, str]]]:
        """Forget every orphan of ``name`` (any case). Returns the rooms where the session
        goes on (those in ``resumed``, same spelling, within the grace period) and the
        (room, name) of each orphan to close."""
        goes_on: set[str] = set()
        close: list[tuple[str, str]] = []
        for room in list(self._rooms):
            shown = self._rooms[room].pop(name.lower(), None)
            if not self._rooms[room]:
                del self._rooms[room]
            if shown is None:
                continue
            if room in resumed and shown == name and now < self.ends:
                goes_on.add(room)
            else:
                close.append((room, shown))
        return goes_on, close

    def expired(self, now: float) -> list[tuple[str, str]]:
        """Once the grace period is over: the (room, name) of every orphan left, forgotten."""
        if now < self.ends or not self._rooms:
            return []
        close = [(room, shown) for room, names in self._rooms.items() for shown in names.values()]
        self._rooms.clear()
        return close
