"""The broker's history store, on its own: SQLite files in tmp_path, no broker."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from support import read_only
from zchat import protocol as p
from zchat.broker.store import PRUNE_SLACK, HistoryStore, default_path
from zchat.errors import ConfigError

TS = datetime(2025, 3, 1, 14, 30, 15, 123456, tzinfo=UTC)


def chat(seq: int, room: str = "general", text: str | None = None) -> p.Chat:
    return p.Chat(room, seq, TS, "Alice", text or f"line {seq}", f"m{seq}")


def fill(store: HistoryStore, count: int, room: str = "general", topic: str = "") -> None:
    for seq in range(1, count + 1):
        store.append(chat(seq, room), topic)


@pytest.fixture
def memory() -> Iterator[HistoryStore]:
    store = HistoryStore(":memory:")
    yield store
    store.close()


def test_every_kind_of_event_comes_back_as_it_went_in_oldest_first(memory: HistoryStore) -> None:
    events: list[p.RoomEvent] = [
        p.Joined("general", 1, TS, "Alice"),
        p.Chat("general", 2, TS, "Alice", "Halo semua! \u00e9\u4e2d", "m1"),
        p.Chat("general", 3, TS, "Alice", "waves", "m2", action=True),
        p.TopicChanged("general", 4, TS, "Alice", "Rapat jam 3"),
        p.Renamed("general", 5, TS, "Alice", "Alicia"),
        p.Left("general", 6, TS, "Alicia", "quit: bye"),
    ]
    for event in events:
        memory.append(event, "Rapat jam 3")
    memory.commit()
    assert memory.history("general", 0, 7, 50) == (events, 0)
    assert memory.room_state("general") == (6, "Rapat jam 3")


def test_events_stored_as_json_dumps_wrote_them_still_come_back(tmp_path: Path) -> None:
    """A file from before the compact layout: bodies without the version, with spaces."""
    path = tmp_path / "old.db"
    events: list[p.RoomEvent] = [
        p.Joined("general", 1, TS, "Alice"),
        p.Chat("general", 2, TS, "Alice", "Halo semua! \u00e9\u4e2d", "m1"),
        p.Left("general", 3, TS, "Alice", "quit: bye"),
    ]
    store = HistoryStore(path)
    for event in events:
        store.append(event, "")
    store.close()
    old = sqlite3.connect(path)
    for seq, event in enumerate(events, 1):
        body = json.dumps(p.event_body(event), ensure_ascii=False)
        old.execute("UPDATE events SET body = ? WHERE seq = ?", (body, seq))
    old.commit()
    old.close()
    again = HistoryStore(path)
    try:
        assert again.history("general", 0, 4, 50) == (events, 0)
    finally:
        again.close()


def test_history_bounds_are_exclusive_and_the_limit_keeps_the_newest(
    memory: HistoryStore,
) -> None:
    fill(memory, 10)
    memory.commit()
    assert memory.history("general", 0, 11, 3) == ([chat(8), chat(9), chat(10)], 0)
    assert memory.history("general", 2, 6, 50) == ([chat(3), chat(4), chat(5)], 0)
    # a range wants all of it: what the limit leaves out is lost to the asker
    assert memory.history("general", 2, 6, 2) == ([chat(4), chat(5)], 1)
    assert memory.history("general", 10, 11, 50) == ([], 0)
    assert memory.history("general", 5, 5, 50) == ([], 0)


def test_rooms_are_kept_apart(memory: HistoryStore) -> None:
    fill(memory, 3, "general")
    fill(memory, 2, "dev", topic="kode")
    assert memory.history("dev", 0, 3, 50) == ([chat(1, "dev"), chat(2, "dev")], 0)
    assert memory.room_state("general") == (3, "")
    assert memory.room_state("dev") == (2, "kode")
    assert memory.room_state("nowhere") == (0, "")
    assert memory.history("nowhere", 0, 1, 50) == ([], 0)


def test_set_topic_records_the_room_state(memory: HistoryStore) -> None:
    memory.set_topic("general", 4, "baru")
    assert memory.room_state("general") == (4, "baru")


def test_retention_keeps_the_newest_and_reports_the_rest_lost() -> None:
    store = HistoryStore(":memory:", retention=100)
    try:
        fill(store, 700)
        fill(store, 5, "dev")
        store.commit()
        held, lost = store.history("general", 0, 701, 1000)
        seqs = [event.seq for event in held]
        assert len(seqs) <= 100 + PRUNE_SLACK
        assert seqs == list(range(seqs[0], 701))  # no holes, ends with the newest
        assert seqs[-100:] == list(range(601, 701))
        assert lost == 700 - len(seqs)
        assert store.history("general", 0, 101, 100) == ([], 100)  # seqs 1..100: gone
        assert store.history("general", 50, 60, 5) == ([], 9)  # the whole range is lost
        assert store.history("general", 600, 701, 100) == ([chat(s) for s in range(601, 701)], 0)
        assert store.room_state("general") == (700, "")
        assert store.history("dev", 0, 6, 50) == ([chat(s, "dev") for s in range(1, 6)], 0)
    finally:
        store.close()


def test_retention_still_applies_after_reopening(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    store = HistoryStore(path, retention=10)
    fill(store, 300)
    store.close()
    store = HistoryStore(path, retention=10)
    try:
        for seq in range(301, 521):
            store.append(chat(seq), "")
        store.commit()
        held, _ = store.history("general", 0, 521, 1000)
        assert len(held) <= 10 + PRUNE_SLACK
        assert [e.seq for e in held][-10:] == list(range(511, 521))
        assert store.history("general", 0, 11, 10) == ([], 10)
    finally:
        store.close()


def test_sequence_topic_and_events_survive_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    store = HistoryStore(path)
    fill(store, 3, topic="Rapat")
    store.commit()
    store.append(chat(4), "Rapat jam 3")  # not committed: close() commits it
    store.close()
    again = HistoryStore(path)
    try:
        assert again.room_state("general") == (4, "Rapat jam 3")
        assert again.history("general", 0, 5, 50) == ([chat(1), chat(2), chat(3), chat(4)], 0)
    finally:
        again.close()


@pytest.mark.parametrize(("made", "other"), [("open", "secure"), ("secure", "open")])
def test_a_file_keeps_one_modes_history(tmp_path: Path, made: str, other: str) -> None:
    path = tmp_path / "history.db"
    store = HistoryStore(path, mode=made)
    fill(store, 2)
    store.close()
    with pytest.raises(ConfigError) as refused:
        HistoryStore(path, mode=other)
    assert str(refused.value) == (
        f"history database {path} holds the history of a broker in {made} mode; "
        f"a broker in {other} mode keeps its own: pass --db with another file"
    )
    HistoryStore(path, mode=made).close()  # the file is untouched


def test_a_history_from_before_modes_were_kept_is_open_modes(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    store = HistoryStore(path)
    fill(store, 2)
    store.close()
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM meta")
    with pytest.raises(ConfigError, match="in open mode"):
        HistoryStore(path, mode="secure")
    empty = tmp_path / "empty.db"
    HistoryStore(empty, mode="secure").close()  # a new file takes the mode of its broker
    with pytest.raises(ConfigError, match="in secure mode"):
        HistoryStore(empty)


def test_secure_brokers_keep_their_history_beside_open_ones(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_path() == tmp_path / "zchat" / "history.db"
    assert default_path(secure=True) == tmp_path / "zchat" / "secure-history.db"


def test_each_port_has_its_own_default_file_and_5005_keeps_the_old_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_path(port=5005) == tmp_path / "zchat" / "history.db"
    assert default_path(port=6000) == tmp_path / "zchat" / "history-6000.db"
    assert default_path(True, 6000) == tmp_path / "zchat" / "secure-history-6000.db"


def test_only_the_default_folder_is_made(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    HistoryStore(default_path(port=6000)).close()  # data/zchat did not exist
    assert (tmp_path / "data" / "zchat" / "history-6000.db").is_file()
    typo = tmp_path / "no" / "such" / "history.db"
    with pytest.raises(ConfigError) as refused:
        HistoryStore(typo)
    folder = tmp_path / "no" / "such"
    assert str(refused.value) == (
        f"history database {typo} cannot be made: {folder} does not exist. Make the folder "
        f"first (mkdir -p {folder}), or pass --db with another path"
    )
    assert not (tmp_path / "no").exists()


def test_a_second_store_on_a_file_in_use_is_refused_until_the_first_closes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "history.db"
    first = HistoryStore(path, port=6000)
    try:
        with pytest.raises(ConfigError) as refused:
            HistoryStore(path, port=7000)
        assert str(refused.value).startswith(
            f"history database {path} is in use by another broker (pid {os.getpid()}, port 6000): "
        )
        assert "--db PATH" in str(refused.value)
    finally:
        first.close()
    assert sorted(tmp_path.iterdir()) == [path]  # the lock file goes with its holder
    HistoryStore(path, port=7000).close()


HOLDER = """
import sys
from zchat.broker.store import HistoryStore
store = HistoryStore(sys.argv[1], port=6000)
print("holding", flush=True)
sys.stdin.read()  # until killed
"""


def test_a_lock_left_by_a_killed_broker_does_not_block(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "holding\n"
        with pytest.raises(
            ConfigError, match=rf"in use by another broker \(pid {holder.pid}, port 6000\)"
        ):
            HistoryStore(path)
    finally:
        holder.kill()
        holder.wait(10)
        for stream in (holder.stdin, holder.stdout):
            if stream is not None:
                stream.close()
    assert (tmp_path / "history.db.lock").exists()  # what kill -9 leaves
    HistoryStore(path).close()  # the kernel let go of its lock with the process


def damaged_rollback_journal_file(path: Path) -> bytes:
    """A SQLite file in rollback-journal mode (not zchat's WAL) whose pages after the
    first are garbage: readable enough to open, damaged for any check."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE notes (body TEXT)")
        db.executemany("INSERT INTO notes VALUES (?)", [("x" * 500,)] * 40)
        db.commit()
        assert db.execute("PRAGMA journal_mode").fetchone() == ("delete",)
        page = db.execute("PRAGMA page_size").fetchone()[0]
    data = bytearray(path.read_bytes())
    data[page:] = b"\xa5" * (len(data) - page)
    path.write_bytes(bytes(data))
    return bytes(data)


def test_a_damaged_file_is_refused_before_anything_in_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    before = damaged_rollback_journal_file(path)
    with pytest.raises(ConfigError, match="nothing was changed"):
        HistoryStore(path)
    assert path.read_bytes() == before  # not switched to WAL, no table added
    assert sorted(tmp_path.iterdir()) == [path]


@pytest.mark.parametrize("locked", ["file", "folder"])
def test_a_history_that_cannot_be_written_is_refused_at_start(tmp_path: Path, locked: str) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    path = folder / "history.db"
    store = HistoryStore(path)
    fill(store, 2)
    store.close()
    with read_only(path if locked == "file" else folder), pytest.raises(ConfigError) as refused:
        HistoryStore(path)
    assert str(refused.value).startswith(f"history database {path} cannot be written (")
    assert "check the permissions of" in str(refused.value)
    again = HistoryStore(path)  # and the file is as it was
    try:
        assert again.room_state("general") == (2, "")
    finally:
        again.close()


def test_uncommitted_events_are_invisible_to_other_readers(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    store = HistoryStore(path)
    try:
        fill(store, 2)
        store.commit()
        store.append(chat(3), "")
        reader = sqlite3.connect(path)
        try:
            rows = reader.execute("SELECT seq FROM events ORDER BY seq").fetchall()
            room = reader.execute("SELECT seq FROM rooms WHERE room = 'general'").fetchone()
        finally:
            reader.close()
        assert rows == [(1,), (2,)]
        assert room == (2,)
    finally:
        store.close()


CRASH = """
import os, sys
from datetime import UTC, datetime
from zchat import protocol as p
from zchat.broker.store import HistoryStore

ts = datetime(2025, 3, 1, tzinfo=UTC)
store = HistoryStore(sys.argv[1])
for seq in (1, 2):
    store.append(p.Chat("general", seq, ts, "Alice", f"line {seq}"), "kept")
store.commit()
store.append(p.Chat("general", 3, ts, "Alice", "line 3"), "lost")
os._exit(0)  # killed: no commit, no close
"""


def test_a_killed_writer_keeps_exactly_what_it_committed(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    subprocess.run([sys.executable, "-c", CRASH, str(path)], check=True, timeout=60)
    store = HistoryStore(path)
    try:
        assert store.room_state("general") == (2, "kept")
        events, lost = store.history("general", 0, 4, 50)
        assert [(e.seq, e.text) for e in events if isinstance(e, p.Chat)] == [
            (1, "line 1"),
            (2, "line 2"),
        ]
        assert lost == 1
    finally:
        store.close()


def test_a_file_that_is_not_a_database_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    garbage = b"this is not a database, just some bytes\n" * 200
    path.write_bytes(garbage)
    with pytest.raises(ConfigError) as caught:
        HistoryStore(path)
    message = str(caught.value)
    assert str(path) in message
    assert "nothing was changed" in message
    assert path.read_bytes() == garbage
    assert sorted(tmp_path.iterdir()) == [path]  # no -wal or -shm file left behind


@pytest.mark.parametrize("under", ["history.db", "deeper/history.db"])
def test_a_path_under_a_regular_file_is_a_config_error(tmp_path: Path, under: str) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file\n")
    path = blocker / under
    with pytest.raises(ConfigError) as caught:
        HistoryStore(path)
    assert str(path) in str(caught.value)
    assert blocker.read_text() == "a file\n"


def test_a_file_database_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    store = HistoryStore(path)
    try:
        check = sqlite3.connect(path)
        try:
            assert check.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        finally:
            check.close()
    finally:
        store.close()


def test_close_twice_is_harmless(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    store = HistoryStore(path)
    fill(store, 1)
    store.close()
    store.close()
    again = HistoryStore(path)
    try:
        assert again.room_state("general") == (1, "")
    finally:
        again.close()
        again.close()
