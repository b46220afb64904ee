"""ClientCore, what the program asks: lines, private lines, rooms, names, topics,
moderation, history, leaving. Each request is frames for the PUSH socket, or an error
at once (InvalidInput, NotDelivered)."""

from __future__ import annotations

from zchat import protocol as p
from zchat.client.message import Answer
from zchat.client.state import CoreState, PendingLine, State
from zchat.errors import InvalidInput, NotDelivered


class Requests(CoreState):
    """What the program asks of the broker."""

    def say(
        self, text: str, room: str | None, now: float, action: bool = False
    ) -> tuple[str, list[bytes]]:
        """Frames for one line to a room; ``forget(id)`` if they could not be sent."""
        text = p.check_text(text)
        target = self._my_room(room)
        id_ = self._next_id("m")
        frames = self._request(p.Say(self.secret, target, text, id_, action))
        self._pending[id_] = PendingLine(text, now, target)
        return id_, frames

    def msg(self, to: str, text: str, now: float) -> tuple[str, list[bytes]]:
        """Frames for one private line to ``to``."""
        text, to = p.check_text(text), p.check_name(to)
        id_ = self._next_id("m")
        frames = self._request(p.Msg(self.secret, to, text, id_))
        self._pending[id_] = PendingLine(text, now, None)
        return id_, frames

    def moderate(self, op: str, name: str, reason: str = "") -> list[bytes]:
        """An admin's kick, ban or unban (secure mode); the answer comes as a note."""
        if op not in p.MODERATE_OPS:
            raise InvalidInput(f"unknown moderation {op!r}: one of {', '.join(p.MODERATE_OPS)}")
        name, reason = p.check_name(name), p.check_reason(reason)
        return self._request(p.Moderate(self.secret, op, name, reason, self._next_id("a")))

    def change_password(self, old: str, new: str) -> list[bytes]:
        """An accounts broker: change this account's password (the answer comes as a
        note). Once the broker says it is done, the new one logs in again after a
        restart."""
        if self.password is None:
            raise InvalidInput("/passwd is for an accounts broker (you joined without a password)")
        id_ = self._next_id("w")
        self._new_passwords[id_] = new
        return self._request(p.Passwd(self.secret, old, new, id_))

    def forget(self, id_: str) -> None:
        self._pending.pop(id_, None)

    def enter(self, room: str) -> list[bytes] | None:
        """Frames entering a room (None if already there). Apply ``take_subscriptions``
        before sending them."""
        room = p.check_room(room)
        if room in self.rooms:
            return None
        if len(self.rooms) >= p.MAX_ROOMS_PER_SESSION:
            raise InvalidInput(f"you are in {len(self.rooms)} rooms, the limit")
        mark = f"e{self._marks + 1}"
        frames = self._request(p.Enter(self.secret, room, mark, self.history))
        self._marks += 1
        marker = p.marker_topic(self.inbox, mark)
        self._enter_markers[room] = marker
        self._subscriptions.extend([(True, p.room_topic(room)), (True, marker)])
        return frames

    def part(self, room: str | None, reason: str = "") -> list[bytes]:
        return self._request(p.Part(self.secret, self._my_room(room), p.check_reason(reason)))

    def nick(self, name: str) -> list[bytes]:
        if p.check_name(name) == self.name:
            raise InvalidInput(f"you are already known as {name}")
        return self._request(p.Nick(self.secret, name))

    def set_topic(self, room: str | None, text: str) -> list[bytes]:
        return self._request(p.SetTopic(self.secret, self._my_room(room), p.check_topic(text)))

    def who(self, room: str | None, after: str = "") -> tuple[str, list[bytes]]:
        """Ask who is in a room (in a big room, those after ``after``); its id, for
        ``take_answer``."""
        id_ = self._next_id("w")
        frames = self._request(p.Who(self.secret, self._any_room(room), id_, after))
        self._asked[id_] = None
        return id_, frames

    def query_topic(self, room: str | None) -> list[bytes]:
        """Ask for a room's topic (the answer comes after any change sent before)."""
        id_ = self._next_id("t")
        frames = self._request(p.Who(self.secret, self._any_room(room), id_))
        self._topic_queries.add(id_)
        return frames

    def list_rooms(self) -> tuple[str, list[bytes]]:
        """Ask for the rooms that have members; its id, for ``take_answer``."""
        id_ = self._next_id("r")
        frames = self._request(p.ListRooms(self.secret, id_))
        self._asked[id_] = None
        return id_, frames

    def answered_with(self, id_: str) -> bool:
        """The answer to the who or list_rooms request ``id_`` has come."""
        return self._asked.get(id_) is not None

    def take_answer(self, id_: str) -> Answer | None:
        """The answer to a who or list_rooms request (None if it has not come: it is
        then no longer waited for)."""
        return self._asked.pop(id_, None)

    def barrier(self) -> tuple[str, list[bytes]]:
        """A request whose answer comes after the answers to everything sent before it
        (except an enter still waiting for its marker); ``answered(id)`` tells when."""
        id_ = self._next_id("b")
        frames = self._request(p.ListRooms(self.secret, id_))
        self._barriers.add(id_)
        return id_, frames

    def answered(self, id_: str) -> bool:
        return id_ not in self._barriers

    def lookup(self, room: str | None, count: int) -> list[bytes]:
        """Ask for the last ``count`` lines of a room."""
        target = self._any_room(room)
        id_ = self._next_id("h")
        frames = self._request(p.GetHistory(self.secret, target, 0, 0, count, id_))
        self._lookups.add(id_)
        return frames

    def leave(self, reason: str = "") -> list[list[bytes]]:
        """The messages saying goodbye, in order (none if there is no session to end);
        the adapter then waits (at most LEAVE_WAIT_SECONDS) while ``leaving`` for the
        broker to confirm. The confirmation is our own leave notice; a session with no
        notice to wait for (quiet, or in no room) sends a ping after the LEAVE, and the
        broker's answer to it, "unknown-session", is the confirmation."""
        frames = p.encode_client(p.Leave(self.secret, p.check_reason(reason)))
        if self.state is not State.JOINED:
            self.state = State.CLOSED
            return []
        self.state = State.LEAVING
        if self.quiet or not self.rooms:
            return [frames, p.encode_client(p.Ping(self.secret, self.inbox))]
        return [frames]

    def left(self) -> None:
        """The LEAVE could not be sent, or its confirmation did not come: stop waiting."""
        self.state = State.CLOSED

    def topic_of(self, room: str) -> str:
        view = self.views.get(p.check_room(room))
        return view.topic if view else ""

    def _request(self, msg: p.ClientMessage) -> list[bytes]:
        if self.ended is not None:
            raise NotDelivered(self.ended)
        if self.state is not State.JOINED or self._away:
            raise NotDelivered("the broker is unreachable, reconnecting…")
        return p.encode_client(msg)

    def _my_room(self, room: str | None) -> str:
        if room is None and not self.rooms:
            raise NotDelivered("you are in no room: /join one first")
        target = p.check_room(room) if room else self.rooms[0]
        if target not in self.rooms:
            raise NotDelivered(f"you are not in #{target}")
        return target

    def _any_room(self, room: str | None) -> str:
        if room:
            return p.check_room(room)
        if not self.rooms:
            raise NotDelivered("you are in no room: name one")
        return self.rooms[0]
