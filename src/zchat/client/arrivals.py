"""ClientCore, what arrives on the SUB socket: room events in sequence order, gaps
filled from history (rooms.RoomView), the WELCOME, answers and refusals, the
heartbeat's news of a restarted broker."""

from __future__ import annotations

from collections.abc import Iterable

from zchat import protocol as p
from zchat.client.message import (
    Members,
    crowd_text,
    from_private,
    from_room_event,
    names_text,
)
from zchat.client.rooms import Fill, RoomView
from zchat.client.state import (
    ENTER_ERRORS,
    FINAL_REFUSALS,
    JOIN_RETRY_SECONDS,
    REJOIN_RETRY_SECONDS,
    WAIT_REFUSALS,
    CoreState,
    State,
)
from zchat.errors import JoinRefused, ProtocolError


class Arrivals(CoreState):
    """What the broker publishes to this client."""

    def on_publish(self, frames: list[bytes], now: float) -> None:
        try:
            _, msg = p.decode_server(frames)
        except ProtocolError:
            return  # a broker speaking another version, or noise: nothing to show
        self._last_heard = now
        if self._away and not isinstance(msg, p.Shutdown):
            # back: which broker (the same, or one that restarted) the next heartbeat
            # tells; room events of a restarted broker may come before it
            self._away, self._back_unsaid = False, True
        match msg:
            case p.Chat() | p.Joined() | p.Left() | p.Renamed() | p.TopicChanged():
                self._on_live(msg, now)
            case p.Tail(room, seq):
                view = self.views.get(room)
                if view is not None and self.joined and (before := view.tail(seq)) is not None:
                    self.gaps += 1  # the last lines before a quiet spell were dropped
                    self._ask_fill(room, view, before, now)
            case p.Crowd(room):
                if room in self.views:
                    self._note(crowd_text(msg), room)
            case p.Welcome():
                self._on_welcome(msg, now)
            case p.History():
                self._on_history(msg, now)
            case p.Private():
                if msg.sender == self.name:
                    self._pending.pop(msg.id, None)
                self.events.append(from_private(msg))
            case p.Refused(code, text, retry_after):
                self._on_refused(code, text, now, retry_after)
            case p.LoggedIn():
                self._on_logged_in(msg)
            case p.Kicked(by, reason, banned):
                verb = "banned" if banned else "kicked out"
                self._end(f"you were {verb} by {by}" + (f": {reason}" if reason else ""))
            case p.Error(code, text, id_):
                self._on_error(code, text, id_, now)
            case p.Heartbeat(epoch):
                if self.state is State.JOINED and epoch != self.epoch:
                    self._rejoin(now, "the broker restarted, joining again…")
                elif self._back_unsaid and self.state is State.JOINED:
                    self._note("broker reachable again")
                    self._gone_told = False
                self._back_unsaid = False  # or the WELCOME of the rejoin says it
            case p.Shutdown(_, _, text):
                self._away = self._gone_told = True
                self._note(f"broker shut down ({text}); waiting for it to come back…")
            case _:
                self._on_reply(msg)

    def _on_live(self, event: p.RoomEvent, now: float) -> None:
        view = self.views.get(event.room)
        if view is None or self.state is State.JOINING:
            return  # not ours (yet): what we need comes with the WELCOME or the history
        if type(event) is p.Chat:  # identity, not isinstance: this runs for every line
            if event.sender == self.name:
                self._pending.pop(event.id, None)
        elif type(event) is p.Left and event.sender == self.name and self.leaving:
            self.state = State.CLOSED
        shown, before = view.live(event)
        if shown and self._intros:
            self._introduce(event.room)  # its history never came (none kept): say it now
        self._show(shown)
        if before is not None:
            self.gaps += 1
            self._ask_fill(event.room, view, before, now)

    def _ask_fill(
        self, room: str, view: RoomView, before: int, now: float, check: bool = False
    ) -> None:
        """Ask for the room's lines after the last one shown, up to ``before``."""
        view.fill = Fill(self._next_id("f"), view.shown, before, now, check=check)
        self._outbox.append(self._fill_request(room, view.fill))

    def _fill_request(self, room: str, fill: Fill) -> list[bytes]:
        get = p.GetHistory(self.secret, room, fill.after, fill.before, p.MAX_HISTORY, fill.id)
        return p.encode_client(get)

    def _show(self, events: Iterable[p.RoomEvent], replayed: bool = False) -> None:
        for event in events:
            view = self.views.get(event.room)
            if view is not None:
                view.seen = max(view.seen, event.seq)
                if type(event) is p.TopicChanged:
                    view.topic = event.text
            if type(event) is p.Chat and not replayed and event.sender == self.name:
                self._pending.pop(event.id, None)
            self.events.append(from_room_event(event, replayed))

    def _on_history(self, history: p.History, now: float) -> None:
        view = self.views.get(history.room)
        if history.id in self._lookups:  # the answer to /history
            self._lookups.discard(history.id)
            count = len(history.events)
            self._note(f"last {count} line{'s' * (count != 1)} of #{history.room}:", history.room)
            self.events.extend(from_room_event(e, replayed=True) for e in history.events)
        elif view is not None and view.fill is not None and history.id == view.fill.id:
            self._show_filled(history.room, view, history.events, history.lost, now)
        elif view is not None and view.rejoined and not history.id:  # missed while away
            # the newest of what was missed, 1,000 at most: through the view like live
            # lines, so that what came before them is asked for as a gap, in turns,
            # oldest first, and only what history no longer holds is reported lost
            for event in history.events:
                self._on_live(event, now)
            if view.fill is None and (before := view.gap()) is not None:
                self._ask_fill(history.room, view, before, now)
        elif view is not None and not history.id:  # sent on a first join or an enter
            lost, room = history.lost, history.room
            if lost and not view.seen:
                self._note(
                    f"{lost} earlier line{'s' * (lost != 1)} of #{room} are no longer kept", room
                )
            # older lines, for context: those not shown here before (in this room before
            # it was left, or with the answer to a JOIN sent twice), then where they end
            fresh = [event for event in history.events if event.seq > view.seen]
            self._show(fresh, replayed=True)
            if fresh:
                self._note(f"— end of the history of #{room} —", room)
            self._introduce(room)

    def _show_filled(
        self, room: str, view: RoomView, events: tuple[p.RoomEvent, ...], lost: int, now: float
    ) -> None:
        missing, lost = view.filled(events, lost)
        if lost:  # the oldest of the range: said before the lines that follow them
            self._note(f"{lost} line{'s' * (lost != 1)} of #{room} could not be recovered", room)
        self._show(missing)
        for event in view.take_held():
            self._on_live(event, now)
        if view.fill is None and (before := view.gap()) is not None:
            self._ask_fill(room, view, before, now)  # a Tail's range, in turns

    def _on_welcome(self, welcome: p.Welcome, now: float) -> None:
        if self.state is not State.JOINING:
            return  # an answer to a repeated JOIN
        self.state = State.JOINED
        self.name = welcome.name  # the broker's spelling (in secure mode, the key's)
        self.epoch = welcome.epoch
        self._last_ping = now
        self._subscriptions.extend((False, marker) for marker in self._join_markers)
        self._join_markers.clear()
        missed = 0
        for room, state in welcome.rooms.items():
            view = self.views.get(room)
            if view is None:
                self.views[room] = RoomView(state.seq, state.topic)
                self._describe(room, state)
            elif state.seq < view.shown:
                self._note(f"the broker's history of #{room} starts again at {state.seq}", room)
                self.views[room] = RoomView(state.seq, state.topic, rejoined=True)
            else:  # a rejoin: what was missed comes next, from after the last line shown
                missed += state.seq - view.shown
                self.views[room] = RoomView(view.shown, state.topic, True, known=state.seq)
        if self._joined_once:  # the broker is back: one line, what was missed follows it
            count = f"{missed} line{'s' * (missed != 1)} missed meanwhile follow"
            self._note(f"joined again as {self.name} ({count if missed else 'nothing missed'})")
        self._joined_once = True
        self._gone_told = self._retry_told = self._back_unsaid = False
        login, self.logged_in = self.logged_in, None
        if login is not None and login.failed:
            since = "your last visit" if login.last else "your account was made"
            when = f" (your last login: {login.last:%Y-%m-%d %H:%M} UTC)" if login.last else ""
            plural = "s" * (login.failed != 1)
            self._note(f"{login.failed} failed login{plural} since {since}{when}")

    def _describe(self, room: str, state: p.RoomState) -> None:
        """Who is in a room just joined, and its topic: said after its history (which
        comes next if the room has lines and any were asked for), so that the times
        shown never go back."""
        others = tuple(m for m in state.members if m != self.name)
        more = max(0, state.count - len(state.members))
        here = names_text(others, more) if others else "nobody else yet"
        notes = [f"in #{room}: {here}"]
        if state.topic:
            notes.append(f"topic of #{room}: {state.topic}")
        self._intros[room] = notes
        if not state.seq or not self.history:
            self._introduce(room)

    def _introduce(self, room: str) -> None:
        for text in self._intros.pop(room, ()):
            self._note(text, room)

    def _on_reply(self, msg: p.ServerMessage) -> None:
        match msg:
            case p.Entered(room, state):
                if room in self._enter_markers:
                    self._subscriptions.append((False, self._enter_markers.pop(room)))
                if room not in self.rooms:
                    self.rooms.append(room)
                seen = self._seen.pop(room, 0)  # shown before leaving the room: not again
                seen = seen if seen <= state.seq else 0  # unless its numbers started again
                self.views[room] = RoomView(state.seq, state.topic, seen=seen)
                self._describe(room, state)
            case p.Parted(room):
                if room in self.rooms:
                    self.rooms.remove(room)
                    view = self.views.pop(room, None)
                    if view is not None:
                        self._seen[room] = max(view.seen, view.shown)
                    self._intros.pop(room, None)
                    self._subscriptions.append((False, p.room_topic(room)))
                    self._note(f"you left #{room}")
            case p.Members(room, _, topic, id_) if id_ in self._topic_queries:
                self._topic_queries.discard(id_)
                self._note(f"topic of #{room}: {topic}" if topic else f"#{room} has no topic", room)
            case p.Members(room, members, topic, id_, count):
                answer = Members(room, members, topic, count)
                here = names_text(members, answer.more) if members else "nobody"
                if id_ in self._asked:
                    self._asked[id_] = answer
                text = f"in #{room}: {here}" + (f" (topic: {topic})" if topic else "")
                self._note(text, room, answer)
            case p.RoomList(_, id_) if id_ in self._barriers:
                self._barriers.discard(id_)
            case p.RoomList(rooms, id_):
                if id_ in self._asked:
                    self._asked[id_] = rooms
                if not rooms:
                    self._note("no rooms")
                for info in rooms:
                    topic = f": {info.topic}" if info.topic else ""
                    self._note(f"#{info.room} ({info.members}){topic}", data=info)
            case p.NickChanged(name):
                self.name = name
                self._note(f"you are now known as {name}")
            case p.Done(text, id_):
                if id_ in self._new_passwords:  # logging in again after a restart needs it
                    self.password = self._new_passwords.pop(id_)
                self._note(text)

    def _on_refused(
        self, code: str, text: str, now: float, retry_after: float | None = None
    ) -> None:
        if self.state is not State.JOINING:
            return
        if code in WAIT_REFUSALS and retry_after is not None:
            again = now + retry_after  # a login that came too soon: the JOIN goes again then
            if self._joined_once or again < self._join_deadline:
                self._join_sent = again - JOIN_RETRY_SECONDS
                return
        if self._joined_once and code in FINAL_REFUSALS:
            self._end(f"cannot join again: {text}")
            return
        if self._joined_once:
            # our old session may still hold the name for a moment: keep trying
            if not self._retry_told:
                self._note(f"cannot join again yet: {text}; retrying")
                self._retry_told = True
            self._join_sent = now + REJOIN_RETRY_SECONDS - JOIN_RETRY_SECONDS
            return
        self.state = State.CLOSED
        self.failure = JoinRefused(code, text)

    def _on_error(self, code: str, text: str, id_: str, now: float) -> None:
        self._new_passwords.pop(id_, None)
        if code in ENTER_ERRORS:  # an enter refused: its marker is of no more use
            self._subscriptions.extend((False, m) for m in self._enter_markers.values())
            self._enter_markers.clear()
        if code == "unknown-session":
            if self.state is State.LEAVING:  # the answer to the ping after our LEAVE
                self.state = State.CLOSED
            elif self.state is State.JOINED:
                why = "the broker forgot this session (a restart, or a long silence)"
                self._rejoin(now, f"{why}, joining again…")
            return
        pending = self._pending.pop(id_, None)
        if pending is not None:
            self.undelivered.append(pending.text)
        self._note(f"not sent: {text}" if pending else f"error: {text}")
