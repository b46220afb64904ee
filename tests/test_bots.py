"""Bots and scripts: the examples, `zchat listen`, `zchat send`, both client APIs."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import zmq
import zmq.asyncio

from conftest import RunningBroker
from support import (
    Proc,
    child_env,
    expect_message,
    speak_until_heard,
    start_broker,
    zchat_command,
)
from zchat import Client, Message, markup
from zchat.aio import AsyncClient
from zchat.errors import ClientClosed

MakeClient = Callable[..., Client]
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def example(name: str, port: int, *args: str) -> Proc:
    return Proc([sys.executable, str(EXAMPLES / name), *args], ZCHAT_PORT=str(port))


def joined(name: str) -> Callable[[Message], bool]:
    return lambda m: m.kind == "join" and m.sender == name and not m.replayed


def said(sender: str, text: str) -> Callable[[Message], bool]:
    return lambda m: m.kind == "message" and m.sender == sender and m.text == text


def test_echo_bot(broker: RunningBroker, make_client: MakeClient, procs: list[Proc]) -> None:
    alice = make_client("Alice")
    alice.send("!echo from before the bot came")  # history: the bot must not answer it
    procs.append(example("echo_bot.py", broker.port))
    expect_message(alice, joined("echobot"))
    alice.send("!echo halo semua")
    expect_message(alice, said("echobot", "halo semua"))
    alice.send("no command here")
    alice.send("!echo second")
    seen = []
    while (msg := expect_message(alice, lambda m: m.sender == "echobot")).text != "second":
        seen.append(msg.text)
    assert seen == []  # nothing else, and not the old question


def test_helper_bot_answers_a_mention_with_a_code_block(
    broker: RunningBroker, make_client: MakeClient, procs: list[Proc]
) -> None:
    alice = make_client("Alice")
    alice.send("@helperbot from before the bot came")  # history: not answered
    procs.append(example("helper_bot.py", broker.port))
    expect_message(alice, joined("helperbot"))
    alice.send("no mention of it here")
    alice.send("@HelperBot look, @bob:\n```rust\nfn main() {}\n```")
    answer = expect_message(alice, lambda m: m.sender == "helperbot")
    first = answer.text.split("\n")[0]
    assert (
        first
        == "@Alice your line had 1 code block(s) (rust) and named bob. To read a line's markup:"
    )
    assert "Alice" in answer.mentions
    [*_, block] = answer.spans()
    assert isinstance(block, markup.CodeBlock)
    assert (block.lang, block.code) == ("python", "for span in msg.spans():\n    print(span)")


def test_a_crashed_bot_is_seen_leaving_and_gets_its_name_back(
    broker: RunningBroker, make_client: MakeClient, procs: list[Proc]
) -> None:
    alice = make_client("Alice")
    bot = example("echo_bot.py", broker.port)
    procs.append(bot)
    expect_message(alice, joined("echobot"))
    bot.signal(signal.SIGKILL)
    left = expect_message(alice, lambda m: m.kind == "leave" and m.sender == "echobot")
    assert left.text == "connection lost"
    procs.append(example("echo_bot.py", broker.port))
    expect_message(alice, joined("echobot"))
    alice.send("!echo back")
    expect_message(alice, said("echobot", "back"))


def test_logger_bot(
    broker: RunningBroker, make_client: MakeClient, procs: list[Proc], tmp_path: Path
) -> None:
    log = tmp_path / "general.log"
    alice = make_client("Alice")
    bot = example("logger_bot.py", broker.port, "general", str(log))
    procs.append(bot)
    expect_message(alice, joined("logger"))
    for text in ("satu", "dua", "tiga"):
        alice.send(text)
    bot.expect(r"^logged: \[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] Alice: tiga$")
    lines = log.read_text(encoding="utf-8").splitlines()
    assert [line[22:] for line in lines if "Alice:" in line] == [
        "Alice: satu",
        "Alice: dua",
        "Alice: tiga",
    ]


def test_time_bot(broker: RunningBroker, make_client: MakeClient, procs: list[Proc]) -> None:
    alice = make_client("Alice")
    procs.append(example("time_bot.py", broker.port))
    expect_message(alice, joined("timebot"))
    alice.send("!time")
    question = expect_message(alice, said("Alice", "!time"))
    answer = expect_message(alice, lambda m: m.sender == "timebot")
    assert answer.text == f"Alice: it is {question.ts:%Y-%m-%d %H:%M:%S} UTC"


def test_listen_prints_lines_and_json_and_is_invisible(
    broker: RunningBroker, make_client: MakeClient, procs: list[Proc]
) -> None:
    plain = Proc(zchat_command("listen", "--port", str(broker.port), "--room", "general"))
    as_json = Proc(zchat_command("listen", "--port", str(broker.port), "--json"))
    procs += [plain, as_json]
    alice = make_client("Alice")
    speak_until_heard(alice, [plain, as_json], r"Alice: ping|\"text\": \"ping", "ping")
    alice.send("Halo semua!")
    plain.expect(r"^\[\d\d:\d\d:\d\d\] Alice: Halo semua!$")
    line = as_json.expect(r'"text": "Halo semua!"').string
    record = json.loads(line)
    assert record["kind"] == "message" and record["sender"] == "Alice"
    assert record["room"] == "general" and isinstance(record["seq"], int)
    assert record["ts"].endswith("Z") and record["replayed"] is False
    alice.who()  # the listeners are not members
    expect_message(alice, lambda m: m.text == "in #general: Alice")


def test_listen_follows_a_broker_restart(procs: list[Proc], tmp_path: Path) -> None:
    db = str(tmp_path / "h.db")
    broker, port = start_broker(db=db)
    procs.append(broker)
    ears = Proc(zchat_command("listen", "--port", str(port)))
    procs.append(ears)
    with Client("Alice", port=port) as alice:
        speak_until_heard(alice, [ears], r"Alice: ping", "ping")
    broker.signal(signal.SIGTERM)
    broker.wait()
    ears.expect(r"\*\*\* broker shut down")
    again, _ = start_broker(port=port, db=db)
    procs.append(again)
    ears.expect(r"\*\*\* the broker is back: it restarted$")  # one line, not two
    with Client("Bob", port=port) as bob:
        speak_until_heard(bob, [ears], r"Bob: after", "after")


def test_listen_goes_on_when_a_restarted_broker_numbers_from_0(
    procs: list[Proc], tmp_path: Path
) -> None:
    broker, port = start_broker(db=str(tmp_path / "r1.db"))
    procs.append(broker)
    ears = Proc(zchat_command("listen", "--port", str(port), "--time-format", "none"))
    procs.append(ears)
    with Client("Alice", port=port) as alice:
        speak_until_heard(alice, [ears], r"Alice: ping", "ping")
        for i in range(1, 6):
            alice.send(f"before restart {i}")
        ears.expect(r"^Alice: before restart 5$")  # #general is past 7 now
    broker.signal(signal.SIGTERM)
    assert broker.wait() == 0
    ears.expect(r"\*\*\* broker shut down")
    again, _ = start_broker(port=port)  # --db :memory:: every room starts again at 0
    procs.append(again)
    # heard on sys/, which sorts after room/ in the subscriptions sent on reconnecting:
    # the room's subscription is in place
    ears.expect(r"\*\*\* the broker is back: it restarted$")
    with Client("Bob", port=port) as bob:
        for i in range(1, 7):
            bob.send(f"after restart {i}")
        ears.expect(r"^Bob: after restart 6$")
    shown = ears.lines["stdout"]
    after = shown[shown.index("*** the broker is back: it restarted") + 1 :]
    assert after == [
        "*** the broker's history of #general starts again at 0",
        "Bob joined",
        *(f"Bob: after restart {i}" for i in range(1, 7)),
    ]


def test_listen_gives_up_on_a_broker_it_never_hears(silent_port: int) -> None:
    port = str(silent_port)
    result = run("listen", "--port", port, "--connect-timeout", "1")
    assert result.returncode == 1
    assert result.stderr.endswith(
        f"zchat: no answer from the broker at 127.0.0.1:{port} within 1 s: "
        "is `zchat broker` running there?\n"
    )


def test_listen_stops_after_count_and_on_sigterm(broker: RunningBroker) -> None:
    ears = Proc(zchat_command("listen", "--port", str(broker.port)))
    try:
        ears.expect(r"^listening to #general on 127\.0\.0\.1:\d+", stream="stderr")
        ears.signal(signal.SIGTERM)
        assert ears.wait() == 0
    finally:
        ears.stop()


def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        zchat_command(*args),
        input=stdin,
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=30,
        check=False,
    )


def test_send_says_and_waits_for_the_echo(broker: RunningBroker, make_client: MakeClient) -> None:
    alice = make_client("Alice", rooms=["general", "ops"])
    port = str(broker.port)
    result = run("send", "--name", "deploybot", "--port", port, "--room", "ops", "build 142 green")
    assert (result.returncode, result.stderr) == (0, "")
    got = expect_message(alice, said("deploybot", "build 142 green"))
    assert got.room == "ops"
    result = run("send", "--name", "deploybot", "--port", port, stdin="one\n\ntwo\n")
    assert result.returncode == 0, result.stderr
    expect_message(alice, said("deploybot", "one"))
    expect_message(alice, said("deploybot", "two"))
    trace = "Traceback:\n  File x.py\n\tline 3\nValueError\n"
    result = run("send", "--name", "deploybot", "--port", port, "--whole", stdin=trace)
    assert result.returncode == 0, result.stderr
    expect_message(alice, said("deploybot", "Traceback:\n  File x.py\n    line 3\nValueError"))
    too_many = "".join(f"{n}\n" for n in range(61))
    result = run("send", "--name", "deploybot", "--port", port, "--whole", stdin=too_many)
    assert result.returncode == 1
    assert result.stderr == "zchat: nothing sent: message has 61 lines, the limit is 60\n"


def test_send_failures_are_clear(
    broker: RunningBroker, make_client: MakeClient, silent_port: int
) -> None:
    make_client("Taken")
    port = str(broker.port)
    result = run("send", "--name", "taken", "--port", port, "hi")
    assert (result.returncode, result.stderr) == (1, "zchat: name 'taken' is taken\n")
    result = run("send", "--name", "bot", "--port", port, "x" * 5000)
    assert result.returncode == 1
    assert result.stderr == "zchat: nothing sent: message is 5000 bytes long, the limit is 4096\n"
    result = run("send", "--name", "bot", "--port", port, stdin="fine\n" + "x" * 5000 + "\n")
    assert result.stderr == (
        "zchat: nothing sent: line 2: message is 5000 bytes long, the limit is 4096\n"
    )
    result = run("send", "--name", "bot", "--port", port, stdin="")
    assert (result.returncode, result.stderr) == (
        1,
        "zchat: nothing to send: give TEXT or lines on stdin\n",
    )
    result = run("send", "--name", "bot", "--port", str(silent_port), "--timeout", "0.5", "hi")
    assert result.returncode == 1
    assert result.stderr == (
        f"zchat: no answer from the broker at 127.0.0.1:{silent_port} within 0.5 s: "
        "is `zchat broker` running there?\n"
    )


def test_send_is_seen_as_its_lines_only(broker: RunningBroker, make_client: MakeClient) -> None:
    alice = make_client("Alice", history=0)
    assert alice.settle()  # answered after Alice's own join notice
    while alice.receive(timeout=0) is not None:  # what joining told Alice
        pass
    result = run("send", "--name", "deploybot", "--port", str(broker.port), "build 142 green")
    assert (result.returncode, result.stderr) == (0, "")
    alice.history(count=10)  # what the room keeps
    assert alice.settle()  # answered after all that the send caused (it has ended)
    seen = []
    while (msg := alice.receive(timeout=0)) is not None:
        seen.append((msg.kind, msg.sender, msg.text, msg.replayed))
    line = ("message", "deploybot", "build 142 green")
    assert seen == [
        (*line, False),  # live: no join before it, no leave after it
        ("system", None, "last 2 lines of #general:", False),
        ("join", "Alice", "", True),
        (*line, True),
    ]


def test_a_refused_send_never_joins(broker: RunningBroker, make_client: MakeClient) -> None:
    alice = make_client("Alice")
    port = str(broker.port)
    bot = ("send", "--announce", "--port", port)  # seen to join and leave
    assert run(*bot, "--name", "bot", "x" * 5000).returncode == 1
    assert run(*bot, "--name", "bot2", "after").returncode == 0
    seen = []
    while not seen or not said("bot2", "after")(seen[-1]):
        got = alice.receive(timeout=10)
        assert got is not None, seen
        seen.append(got)
    assert [m.sender for m in seen if m.kind == "join"] == ["Alice", "bot2"]  # no "bot joined"


@pytest.mark.broker(rate=20, burst=3)
def test_send_paces_itself_to_the_flood_limit(
    broker: RunningBroker, make_client: MakeClient
) -> None:
    alice = make_client("Alice")
    lines = [f"line {i}" for i in range(10)]  # past the burst of 3: refused, then said again
    result = run("send", "--name", "bot", "--port", str(broker.port), stdin="\n".join(lines))
    assert (result.returncode, result.stderr) == (0, "")
    heard = [expect_message(alice, lambda m: m.sender == "bot" and m.kind == "message").text]
    while len(heard) < len(lines):
        heard.append(expect_message(alice, lambda m: m.sender == "bot").text)
    assert heard == lines  # each once, in order


@pytest.mark.broker(rate=0.5, burst=1)
def test_send_that_the_flood_limit_holds_past_its_timeout_says_so(broker: RunningBroker) -> None:
    port = str(broker.port)
    result = run("send", "--name", "bot", "--port", port, "--timeout", "1", stdin="one\ntwo\n")
    assert result.returncode == 1
    assert result.stderr == (
        "zchat: line 2 of 2: not sent: slow down: at most 0.5 lines a second, 1 at once; "
        "this line and the next ones are dropped until you do (the lines before it were "
        "delivered)\n"
    )


def test_receive_times_out_with_none(make_client: MakeClient) -> None:
    alice = make_client("Alice")
    while alice.receive(timeout=0.2) is not None:
        pass
    assert alice.receive(timeout=0.1) is None
    alice.close()
    with pytest.raises(ClientClosed):
        alice.receive(timeout=0.1)


def test_a_with_block_that_raises_still_leaves_cleanly(
    broker: RunningBroker, make_client: MakeClient, ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    alice = make_client("Alice")
    with pytest.raises(RuntimeError), Client("Bot", port=broker.port, context=ctx):
        raise RuntimeError("the bot's own bug")
    left = expect_message(alice, lambda m: m.kind == "leave" and m.sender == "Bot")
    assert left.text == "quit"


def test_async_client(broker: RunningBroker, make_client: MakeClient) -> None:
    alice = make_client("Alice")

    async def bot() -> list[str]:
        heard = []
        async with AsyncClient("abot", port=broker.port) as chat:
            assert await chat.receive(timeout=0.01) is not None  # the room's welcome notes
            await chat.send("hello from asyncio")
            async for msg in chat:
                if msg.kind == "message":
                    heard.append(msg.text)
                    if msg.text == "bye bot":
                        break
            with pytest.raises(RuntimeError):
                async with AsyncClient("abot2", port=broker.port):
                    raise RuntimeError("inside")
        return heard

    async def main() -> list[str]:
        task = asyncio.create_task(bot())
        await asyncio.to_thread(expect_message, alice, said("abot", "hello from asyncio"))
        alice.send("bye bot")
        return await task

    assert asyncio.run(main()) == ["hello from asyncio", "bye bot"]
    left = expect_message(alice, lambda m: m.kind == "leave" and m.sender == "abot2")
    assert left.text == "quit"
    expect_message(alice, lambda m: m.kind == "leave" and m.sender == "abot")


def test_archive_bot_keeps_shared_files_and_shares_one_back(
    broker: RunningBroker, make_client: MakeClient, procs: list[Proc], tmp_path: Path
) -> None:
    alice = make_client("Alice")
    bot = Proc(
        [sys.executable, str(EXAMPLES / "archive_bot.py")],
        ZCHAT_PORT=str(broker.port),
        ZCHAT_ARCHIVE=str(tmp_path / "archive"),
    )
    procs.append(bot)
    expect_message(alice, joined("archivebot"))
    source = tmp_path / "tugas 3.pdf"
    source.write_bytes(os.urandom(70_000))
    shared = alice.send_file(source)
    kept = expect_message(alice, lambda m: m.sender == "archivebot")
    assert kept.text == f"kept tugas 3.pdf as tugas 3.pdf (sha256 {shared.sha256[:12]}…)"
    assert (tmp_path / "archive" / "tugas 3.pdf").read_bytes() == source.read_bytes()
    alice.send("!latest")
    back = expect_message(alice, lambda m: m.sender == "archivebot" and m.file is not None)
    assert back.file is not None and back.file.sha256 == shared.sha256
