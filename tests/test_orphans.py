"""Who a broker leaves in its rooms when it stops or is killed: the store's record of
who is present, kept with the events that change it, and upgraded into an old file."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from zchat import protocol as p
from zchat.broker.store import HistoryStore

TS = datetime(2025, 3, 1, 14, 30, 15, tzinfo=UTC)


def joined(name: str, room: str = "general") -> p.Joined:
    return p.Joined(room, 0, TS, name)


def left(name: str, room: str = "general", reason: str = "quit") -> p.Left:
    return p.Left(room, 0, TS, name, reason)


def renamed(old: str, new: str, room: str = "general") -> p.Renamed:
    return p.Renamed(room, 0, TS, old, new)


@pytest.fixture
def memory() -> Iterator[HistoryStore]:
    store = HistoryStore(":memory:")
    yield store
    store.close()


def append_all(store: HistoryStore, *events: p.RoomEvent) -> None:
    """Append ``events`` numbered after the last of their room (not committed)."""
    for event in events:
        seq = store.room_state(event.room)[0] + 1
        store.append(dataclasses.replace(event, seq=seq), "")


# --- the store's record of who is present ---------------------------------------------


def test_present_is_who_the_stored_events_leave_in_each_room(memory: HistoryStore) -> None:
    append_all(
        memory,
        joined("Alice"),
        joined("Bob"),
        joined("Alice", "lab"),
        p.Chat("general", 0, TS, "Bob", "hi"),
        left("Bob"),
        renamed("Alice", "Alicia"),
        joined("carol", "lab"),
        renamed("carol", "Carol", "lab"),  # a change of case is a rename too
    )
    assert memory.present() == {"general": ["Alicia"], "lab": ["Alice", "Carol"]}


def test_present_changes_with_its_event_and_only_once_committed(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    store = HistoryStore(path)
    try:
        append_all(store, joined("Alice"))
        store.commit()
        append_all(store, left("Alice"), joined("Bob"))
        reader = sqlite3.connect(path)
        try:  # another reader sees the committed state: the leave is not there yet
            rows = reader.execute("SELECT room, shown FROM present").fetchall()
        finally:
            reader.close()
        assert rows == [("general", "Alice")]
        store.commit()
    finally:
        store.close()
    again = HistoryStore(path)
    try:
        assert again.present() == {"general": ["Bob"]}
    finally:
        again.close()


def test_a_file_from_before_the_record_is_upgraded_from_its_events(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    store = HistoryStore(path)
    append_all(
        store,
        joined("Alice"),
        joined("Bob"),
        left("Bob", reason="connection lost"),
        joined("Alice", "lab"),
        renamed("Alice", "Alicia", "lab"),
        joined("Alice"),  # an old broker announced a rejoin again: still one Alice
    )
    store.close()
    old = sqlite3.connect(path)
    old.execute("DROP TABLE present")  # as a file made before the record was kept
    old.commit()
    old.close()
    upgraded = HistoryStore(path)
    try:
        assert upgraded.present() == {"general": ["Alice"], "lab": ["Alicia"]}
    finally:
        upgraded.close()
