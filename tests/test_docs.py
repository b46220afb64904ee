"""The raw-pyzmq examples in docs/protocol.md, run as written against a real broker."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import RunningBroker
from support import Proc, speak_until_heard, zchat_command
from zchat import Client
from zchat import protocol as p

DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"


def example(heading: str) -> str:
    """The first ```python block after a heading of docs/protocol.md."""
    text = DOC.read_text(encoding="utf-8")
    start = text.index(heading)
    match = re.search(r"```python\n(.*?)```", text[start:], re.S)
    assert match, f"no python example under {heading!r}"
    return match.group(1)


@pytest.fixture
def scripts(tmp_path: Path) -> dict[str, Path]:
    paths = {}
    for name, heading in (("listen", "### 11.1"), ("bot", "### 11.2")):
        path = tmp_path / f"{name}.py"
        path.write_text(example(heading), encoding="utf-8")
        paths[name] = path
    return paths


def test_the_client_frames_shown_in_the_protocol_doc_decode() -> None:
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("### 3.3 Examples") : text.index("### 3.4")]
    frames = re.findall(r"```json\n(.*?)\n```", section, re.S)
    assert len(frames) >= 18
    for frame in frames:
        p.decode_client([frame.encode()])  # raises if the doc shows a frame the broker drops


def test_raw_listener_and_raw_bot_from_the_protocol_doc(
    broker: RunningBroker,
    make_client: Callable[..., Client],
    procs: list[Proc],
    scripts: dict[str, Path],
) -> None:
    listener = Proc([sys.executable, str(scripts["listen"]), str(broker.port), "30"])
    procs.append(listener)
    speak_until_heard(make_client("warmup"), [listener], r"warmup: are you there")

    bot = Proc([sys.executable, str(scripts["bot"]), str(broker.port), "hello-bot"])
    procs.append(bot)
    bot.expect(r"^joined as hello-bot; in #general: ")
    bot.expect(r"^delivered as #\d+ at \d{4}-\d\d-\d\dT")
    bot.expect(r"^left: quit: done$")
    assert bot.wait() == 0
    listener.expect(r"^\[\d\d:\d\d:\d\d\] hello-bot joined$")
    listener.expect(r"^\[\d\d:\d\d:\d\d\] hello-bot: hello from a bot$")
    listener.expect(r"^\[\d\d:\d\d:\d\d\] hello-bot left \(quit: done\)$")


def test_raw_bot_is_refused_a_taken_name(
    broker: RunningBroker, make_client: Callable[..., Client], scripts: dict[str, Path]
) -> None:
    make_client("Hello-Bot")
    bot = Proc([sys.executable, str(scripts["bot"]), str(broker.port), "hello-bot"])
    try:
        bot.expect(r"^refused: name-taken: name 'hello-bot' is taken$", stream="stderr")
        assert bot.wait() == 1
    finally:
        bot.stop()


README = DOC.parent.parent / "README.md"


def test_the_readme_jq_example_prints_only_what_is_said(
    broker: RunningBroker, make_client: Callable[..., Client], procs: list[Proc]
) -> None:
    [line] = [ln for ln in README.read_text().splitlines() if "zchat listen --json | jq" in ln]
    jq_argv = shlex.split(line.split("|", 1)[1].split("#", 1)[0])
    listen = Proc(zchat_command("listen", "--json", "--port", str(broker.port)))
    procs.append(listen)
    alice = make_client("Alice")
    speak_until_heard(alice, [listen], r'"text": "are you there')
    alice.act("waves")
    make_client("Bob").send("hello from Bob")  # and Bob joined, with an empty text
    alice.send("the end")
    listen.expect(r'"text": "the end"')
    listen.signal(signal.SIGTERM)
    assert listen.wait() == 0
    listen.collect()
    shown = subprocess.run(
        jq_argv, input="\n".join(listen.lines["stdout"]), capture_output=True, text=True,
        timeout=30, check=True,
    )  # fmt: skip
    said = [text for text in shown.stdout.splitlines() if not text.startswith("are you there")]
    assert said == ["hello from Bob", "the end"]


def test_the_raw_file_bot_from_the_protocol_doc(
    broker: RunningBroker, make_client: Callable[..., Client], tmp_path: Path
) -> None:
    script = tmp_path / "filebot.py"
    script.write_text(example("### 13.6"), encoding="utf-8")
    notes = tmp_path / "notes.txt"
    notes.write_bytes(bytes(range(256)) * 3000)  # 768,000 bytes: three chunks and a bit
    alice = make_client("Alice")
    run = subprocess.run(
        [sys.executable, str(script), str(broker.port), str(notes)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    number = int(run.stdout.split("\n")[0].removeprefix("shared as file "))
    assert run.stdout.split("\n")[1] == "fetched 768000 bytes, SHA-256 checked"
    saved = alice.get_file(number, tmp_path / "back.txt")
    assert saved.read_bytes() == notes.read_bytes()


def test_the_raw_login_bot_from_the_protocol_doc(tmp_path: Path) -> None:
    """Section 14.7's bot logs in to an accounts broker, says a line and leaves."""
    import zmq

    from zchat.admin import request
    from zchat.client.transport import Keys
    from zchat.passwords import hash_password

    script = tmp_path / "loginbot.py"
    script.write_text(example("### 14.7"), encoding="utf-8")
    running = RunningBroker(
        zmq.Context.instance(), accounts=True, admin_socket=str(tmp_path / "run" / "a.sock")
    )
    try:
        for name, password in (("robot", "robot's password"), ("alice", "alice's password")):
            request(running.broker.admin_path, "user-add", {"name": name, "hash":
                    hash_password(password), "admin": False})  # fmt: skip
        auth = running.broker._auth
        assert auth is not None
        keys = Keys.for_login(auth.keyring.public)
        with Client("alice", port=running.port, keys=keys, password="alice's password") as alice:
            run = subprocess.run(
                [sys.executable, str(script), str(running.port), "robot", "beep boop"],
                capture_output=True, text=True, timeout=60, check=False,
                env={**os.environ, "ZCHAT_PASSWORD": "robot's password"},
            )  # fmt: skip
            assert run.returncode == 0, run.stderr
            assert run.stdout == "said: beep boop\n"
            heard = alice.receive(timeout=10)
            while heard is not None and not (heard.kind == "message" and heard.sender == "robot"):
                heard = alice.receive(timeout=10)
            assert heard is not None and heard.text == "beep boop"
        wrong = subprocess.run(
            [sys.executable, str(script), str(running.port), "robot", "x"],
            capture_output=True, text=True, timeout=60, check=False,
            env={**os.environ, "ZCHAT_PASSWORD": "not it"},
        )  # fmt: skip
        assert wrong.returncode == 1
        assert wrong.stderr.strip() == "refused: login refused: wrong name or password"
    finally:
        running.stop()
