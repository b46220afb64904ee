"""What a terminal remembers of the rooms as its events go by: who is in each room and
who spoke last (for Tab completion), and what the person has not seen yet, in the
rooms other than the one they are in (the prompt shows ``(#dev: 3, 1 mention)``).

Pure: Messages in, names and counts out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from zchat.client.message import Members, Message

MAX_NAMES_KEPT = 2000  # per room: the first names of a big room, and who speaks


@dataclass
class Unread:
    lines: int = 0
    mentions: int = 0


@dataclass
class Roster:
    me: str
    members: dict[str, set[str]] = field(default_factory=dict)  # room -> names seen in it
    spoke: dict[str, dict[str, None]] = field(default_factory=dict)  # last to speak last
    unread: dict[str, Unread] = field(default_factory=dict)

    def heard(self, msg: Message, current: str | None, mentions_me: bool) -> None:
        """Take one event shown; ``current``: the room the person is in."""
        room = msg.room
        if isinstance(msg.data, Members) and msg.data.room:
            self._members(msg.data.room).update(msg.data.names[:MAX_NAMES_KEPT])
        if room is None or msg.sender is None:
            return
        if msg.kind == "leave":
            self._members(room).discard(msg.sender)
            self.spoke.get(room, {}).pop(msg.sender, None)
        elif msg.kind == "nick":
            self._renamed(msg.sender, msg.text)
        else:
            members = self._members(room)
            if len(members) < MAX_NAMES_KEPT:
                members.add(msg.sender)
        if msg.kind in ("message", "action"):
            spoke = self.spoke.setdefault(room, {})
            spoke.pop(msg.sender, None)
            spoke[msg.sender] = None
            if len(spoke) > MAX_NAMES_KEPT:
                del spoke[next(iter(spoke))]
            if room != current and not msg.replayed:
                unread = self.unread.setdefault(room, Unread())
                unread.lines += 1
                unread.mentions += mentions_me

    def seen(self, room: str | None) -> None:
        """The person is in ``room`` now: its lines are read."""
        if room is not None:
            self.unread.pop(room, None)

    def left(self, room: str) -> None:
        for held in (self.members, self.spoke, self.unread):
            held.pop(room, None)

    def completions(self, room: str | None) -> list[str]:
        """Names to complete in ``room``: the last to speak first, then the others in
        alphabetical order; never oneself."""
        spoke = list(reversed(self.spoke.get(room or "", {})))
        others = sorted(self.members.get(room or "", set()) - set(spoke), key=str.lower)
        return [name for name in spoke + others if name.lower() != self.me.lower()]

    def summary(self) -> str:
        """``#dev: 3, 1 mention; #ops: 1``, or "" when all is read."""
        parts = []
        for room, unread in sorted(self.unread.items()):
            mentions = unread.mentions
            told = f", {mentions} mention{'s' * (mentions != 1)}" if mentions else ""
            parts.append(f"#{room}: {unread.lines}{told}")
        return "; ".join(parts)

    def _members(self, room: str) -> set[str]:
        return self.members.setdefault(room, set())

    def _renamed(self, old: str, new: str) -> None:
        for members in self.members.values():
            if old in members:
                members.discard(old)
                members.add(new)
        for spoke in self.spoke.values():
            if old in spoke:  # keeps its place among those who spoke
                renamed = {new if name == old else name: None for name in spoke}
                spoke.clear()
                spoke.update(renamed)
        if old.lower() == self.me.lower():
            self.me = new
