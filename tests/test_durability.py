"""kill -9 of the broker in the middle of a stream: nothing it acknowledged is lost.

The broker commits a batch to SQLite before it publishes any of it, so a line's echo
(its acknowledgement) means the line is stored. A sender streams numbered lines as fast
as the PUSH socket takes them; once some hundreds are echoed the broker is killed with
SIGKILL and started again on the same database and ports, several times. Afterwards
the room's history holds every acknowledged line under the seq it was echoed with,
numbers every event once with no gap, and a new line is numbered after all of them.
"""

from __future__ import annotations

import secrets
import signal
import time
from collections import Counter
from pathlib import Path

import zmq

from support import Proc, expect_message, start_broker
from zchat import Client
from zchat import protocol as p

ROOM = "durable"
SENDER = "streamer"
ACKS_PER_ROUND = 400  # acknowledged lines that trigger each kill
KILLS = 3
IN_FLIGHT = 2000  # lines sent and not yet echoed, at most
ROUND_SECONDS = 20.0  # a round that takes longer fails
ANSWER_SECONDS = 10.0
# The sender streams far faster than a person types, and every line must stay stored.
BROKER_OPTIONS = ("--rate", "0", "--retention", "1000000")


class Speaker:
    """A raw PUSH + SUB pair speaking the protocol in ROOM. The echo of a line (our
    name, our id) is its acknowledgement, and carries the seq the broker stamped."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], port: int, name: str) -> None:
        self.name = name
        self.secret, self.inbox = secrets.token_hex(16), secrets.token_hex(16)
        self.sub = ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.RCVHWM, 0)
        self.disconnects = self.sub.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        self.sub.subscribe(p.room_topic(ROOM))
        self.sub.subscribe(p.inbox_topic(self.inbox))  # last, as the protocol asks
        self.sub.connect(f"tcp://127.0.0.1:{port + 1}")
        self.push = ctx.socket(zmq.PUSH)
        self.push.setsockopt(zmq.LINGER, 0)
        self.push.connect(f"tcp://127.0.0.1:{port}")
        self.acked: dict[int, int] = {}  # line number -> the seq its echo carried
        self.answers: list[p.ServerMessage] = []  # inbox messages, oldest first

    def request(self, msg: p.ClientMessage) -> None:
        self.push.send_multipart(p.encode_client(msg), zmq.NOBLOCK)

    def _take(self) -> None:
        """Handle everything that has arrived, without waiting."""
        while True:
            try:
                frames = self.sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            topic, msg = p.decode_server(frames)
            if topic == p.inbox_topic(self.inbox):
                self.answers.append(msg)
            elif isinstance(msg, p.Chat) and msg.sender == self.name and msg.id[:1] == "n":
                number = int(msg.id[1:])
                assert number not in self.acked, f"line {number} echoed twice: {msg}"
                self.acked[number] = msg.seq

    def answer(self, wanted: type[p.ServerMessage], id_: str | None = None) -> p.ServerMessage:
        """The first inbox message of type ``wanted`` (with ``id_``, if given)."""
        end = time.monotonic() + ANSWER_SECONDS
        while True:
            for msg in self.answers:
                if isinstance(msg, wanted) and getattr(msg, "id", id_) == id_:
                    self.answers.remove(msg)
                    return msg
            left = end - time.monotonic()
            assert left > 0, f"{self.name}: no {wanted.__name__} {id_ or ''}; got {self.answers}"
            self.sub.poll(left * 1000)
            self._take()

    def join(self) -> p.Welcome:
        self.request(p.Join(self.name, self.secret, self.inbox, (ROOM,), history=0))
        welcome = self.answer(p.Welcome)
        assert isinstance(welcome, p.Welcome)
        return welcome

    def stream(self, first: int, until_acked: int) -> int:
        """Send lines ``first``, ``first + 1``, ... as fast as the PUSH takes them, until
        ``until_acked`` lines are acknowledged, then one burst more, so that a kill right
        after finds lines on their way; returns the next line's number."""
        poller = zmq.Poller()
        poller.register(self.sub, zmq.POLLIN)
        number = first
        end = time.monotonic() + ROUND_SECONDS
        while len(self.acked) < until_acked:
            assert time.monotonic() < end, (
                f"only {len(self.acked)} lines acknowledged in {ROUND_SECONDS} s"
            )
            room = IN_FLIGHT - (number - first - len(self.acked))
            poller.register(self.push, zmq.POLLOUT if room > 0 else 0)
            if self.push in dict(poller.poll(100)):
                number = self._burst(number, room)
            self._take()
        return self._burst(number, IN_FLIGHT - (number - first - len(self.acked)))

    def _burst(self, number: int, count: int) -> int:
        """Send up to ``count`` lines from ``number`` without blocking; the next number."""
        for _ in range(count):
            try:
                self.request(p.Say(self.secret, ROOM, f"line {number}", f"n{number}"))
            except zmq.Again:
                break
            number += 1
        return number

    def after_broker_death(self) -> None:
        """Once the connection to the dead broker is seen to drop, everything it sent is
        here: take the last acknowledgements, then close."""
        assert self.disconnects.poll(ANSWER_SECONDS * 1000), "the connection never dropped"
        self._take()
        self.close()

    def history(self, last: int) -> list[p.RoomEvent]:
        """Every stored event of ROOM from seq 1 to ``last``, a page of 1000 at a time."""
        events: list[p.RoomEvent] = []
        for after in range(0, last, p.MAX_HISTORY):
            id_ = f"h{after}"
            before = min(after + p.MAX_HISTORY, last) + 1
            self.request(p.GetHistory(self.secret, ROOM, after, before, p.MAX_HISTORY, id_))
            page = self.answer(p.History, id_)
            assert isinstance(page, p.History) and page.lost == 0, page
            events += page.events
        return events

    def close(self) -> None:
        self.sub.disable_monitor()
        for sock in (self.disconnects, self.sub, self.push):
            sock.close()


def test_kill_9_loses_no_acknowledged_line_and_numbers_continue(
    procs: list[Proc], ctx: zmq.Context[zmq.Socket[bytes]], tmp_path: Path
) -> None:
    """Every line echoed before a kill -9 is in the history under its echoed seq; the
    room's events are numbered 1, 2, 3, ... with none twice and none skipped; a line
    said after the last restart is numbered after every acknowledged one."""
    db = str(tmp_path / "history.db")
    broker, port = start_broker(*BROKER_OPTIONS, db=db)
    procs.append(broker)
    acked: dict[int, int] = {}
    number = 1
    report = []
    for kill in range(KILLS):
        sender = Speaker(ctx, port, SENDER)
        welcome = sender.join()
        assert welcome.rooms[ROOM].seq >= max(acked.values(), default=0), "seq went back"
        first = number
        number = sender.stream(first, until_acked=ACKS_PER_ROUND)
        broker.signal(signal.SIGKILL)
        in_flight = number - first - len(sender.acked)
        assert in_flight > 0, "the kill must come in the middle of the stream"
        assert broker.wait() == -signal.SIGKILL
        sender.after_broker_death()
        report.append(
            f"kill {kill + 1}: {number - first} sent, {in_flight} unacknowledged when killed, "
            f"{len(sender.acked)} acknowledged in all"
        )
        acked |= sender.acked
        broker, _ = start_broker(*BROKER_OPTIONS, port=port, db=db)
        procs.append(broker)
    print("; ".join(report))

    checker = Speaker(ctx, port, "checker")
    last = checker.join().rooms[ROOM].seq
    events = checker.history(last)
    checker.close()
    print(f"{len(acked)} lines acknowledged in all; the room's last seq is {last}")
    assert [event.seq for event in events] == list(range(1, last + 1)), "a seq skipped or reused"
    by_seq = {event.seq: event for event in events}
    for line, seq in sorted(acked.items()):
        event = by_seq[seq]
        assert isinstance(event, p.Chat), f"line {line} echoed as #{seq}, stored: {event}"
        assert (event.sender, event.id, event.text) == (SENDER, f"n{line}", f"line {line}"), (
            f"line {line} echoed as #{seq}, stored: {event}"
        )
    stored = Counter(e.id for e in events if isinstance(e, p.Chat) and e.sender == SENDER)
    assert not [id_ for id_, count in stored.items() if count > 1], "a line stored twice"

    with Client("after", port=port, rooms=(ROOM,), history=0, context=ctx) as client:
        client.send("after the crashes")
        echo = expect_message(client, lambda m: m.sender == "after" and m.kind == "message")
    assert echo.seq is not None and echo.seq > max(acked.values()) and echo.seq > last
