"""One room as a client sees it: lines shown in sequence order, gaps filled.

This is the ZeroMQ guide's Clone pattern. Live events arrive numbered; the view shows
each sequence number once and in order. A jump in the numbers (the PUB socket dropped
lines for a slow reader, or a reconnect) holds the live events back, asks the broker
for the missing range, shows it, then lets the held events through. What the broker no
longer stores is reported as lost, never skipped in silence.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from zchat import protocol as p

# The answer to a gap request travels the same crowded queue that dropped the lines,
# so it may be dropped too: ask again after FILL_SECONDS, FILL_TRIES times in all,
# then report the lines lost.
FILL_SECONDS = 1.0
FILL_TRIES = 5


@dataclass
class Fill:
    id: str
    after: int
    before: int
    sent_at: float
    tries: int = 1
    check: bool = False  # asked on a hunch (an echo is late), not for a known gap


@dataclass
class RoomView:
    shown: int  # the highest sequence number shown
    topic: str = ""
    rejoined: bool = False  # the view survived a rejoin: its history is what was missed,
    # and goes through ``live`` (a gap before it is filled, in turns)
    fill: Fill | None = None  # the gap request waiting for its answer
    known: int = 0  # the highest sequence number the broker said it has (a Tail's)
    held: dict[int, p.RoomEvent] = field(default_factory=dict)  # live events held meanwhile
    seen: int = 0  # the highest sequence number this client has shown, history included

    def live(self, event: p.RoomEvent) -> tuple[list[p.RoomEvent], int | None]:
        """What to show now, and where the range to ask for ends if a gap opened (it
        starts after ``shown``, as every range asked for does)."""
        if self.fill is not None:
            if event.seq > self.shown:
                self.held[event.seq] = event
            return [], None
        if event.seq <= self.shown:
            return [], None  # seen already (history and live overlap)
        if event.seq == self.shown + 1:
            self.shown = event.seq
            return [event], None
        self.held[event.seq] = event
        return [], self.gap()

    def tail(self, seq: int) -> int | None:
        """The broker's last sequence number in this room (sent while the room is
        busy): where the range to ask for ends, if lines up to it were missed."""
        self.known = max(self.known, seq)
        return self.gap() if self.fill is None else None

    def gap(self) -> int | None:
        """Where the next range to ask for ends (``before``; it starts after ``shown``):
        oldest first and at most one answer's worth, so a longer gap is filled in
        turns."""
        end = min(self.held, default=self.known + 1)  # live lines resume at the first held
        if end <= self.shown + 1:
            return None
        return min(end, self.shown + 1 + p.MAX_HISTORY)

    def filled(self, events: tuple[p.RoomEvent, ...], lost: int) -> tuple[list[p.RoomEvent], int]:
        """The answer to the gap request came: the events to show, how many were lost.
        Held events are then replayed through ``live`` by the caller."""
        fill = self.fill
        assert fill is not None
        self.fill = None
        out = [e for e in events if self.shown < e.seq < fill.before]
        # a known gap is closed whatever came; a check reaches only as far as it found
        top = max((e.seq for e in out), default=self.shown) if fill.check else fill.before - 1
        self.shown = max(self.shown, top)
        return out, lost

    def take_held(self) -> list[p.RoomEvent]:
        held = [self.held[seq] for seq in sorted(self.held)]
        self.held.clear()
        return held
