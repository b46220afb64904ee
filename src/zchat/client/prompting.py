"""What helps a person type in ``zchat join``: the lines they sent, kept across runs
(Up and Down walk them); Tab completing names and commands; Alt-Enter (or Esc, Enter)
for a new line in a message. A paste of several lines is one message: prompt_toolkit
turns on the terminal's bracketed paste, and a paste arrives as one piece.

Only ``zchat join`` in a terminal imports this (it imports prompt_toolkit).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from prompt_toolkit.completion import CompleteEvent, Completer, Completion, PathCompleter
from prompt_toolkit.document import Document
from prompt_toolkit.history import History
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent

from zchat.filemodes import data_folder, private_umask

MAX_SENT_KEPT = 1000  # lines a user's history file keeps
# The file is rewritten with the last MAX_SENT_KEPT once it holds this many more.
REWRITE_SLACK = 200


def sent_lines_path(name: str, folder: Path | None = None) -> Path:
    """Where a user's sent lines are kept: one file per name (any case), 0600."""
    return (folder or data_folder()) / "sent" / f"{name.lower()}.jsonl"


class SentLines(History):
    """A user's sent lines in a file of JSON strings, one per line (a line of a message
    of several lines stays in one), at most MAX_SENT_KEPT of them. A file that cannot
    be read or written leaves the history to this run, with one note (``problem``)."""

    def __init__(self, path: Path, keep: int = MAX_SENT_KEPT) -> None:
        super().__init__()
        self.path = path
        self.keep = keep
        self.problem = ""  # why the file is not used, if it is not
        self._written = 0  # entries in the file

    def load_history_strings(self) -> Iterable[str]:
        try:
            with self.path.open("rb") as file:
                raw = file.read().splitlines()
        except FileNotFoundError:
            return []
        except OSError as exc:
            self.problem = f"cannot read {self.path}: {exc.strerror or exc}"
            return []
        entries = []
        for line in raw:
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a line cut short by a crash: the others are kept
            if isinstance(entry, str) and entry.strip():
                entries.append(entry)
        self._written = len(entries)
        return reversed(entries[-self.keep :])  # newest first, as prompt_toolkit wants

    def store_string(self, string: str) -> None:
        if self.problem or not string.strip():
            return
        try:
            with private_umask():
                self.path.parent.mkdir(parents=True, exist_ok=True)
                if self._written >= self.keep + REWRITE_SLACK:
                    self._rewrite()
                else:
                    with self.path.open("a", encoding="utf-8") as file:
                        file.write(json.dumps(string, ensure_ascii=False) + "\n")
                    self._written += 1
        except OSError as exc:
            self.problem = f"cannot write {self.path}: {exc.strerror or exc}"

    def _rewrite(self) -> None:
        """Keep the newest ``keep`` entries, through a new file put in place at once."""
        newest = list(self.get_strings()[-self.keep :])  # oldest first; holds this one
        spare = self.path.with_name(self.path.name + ".new")
        with spare.open("w", encoding="utf-8") as file:
            file.writelines(json.dumps(entry, ensure_ascii=False) + "\n" for entry in newest)
        spare.replace(self.path)
        self._written = len(newest)


class ChatCompleter(Completer):
    """Tab completes a command at the start of the line, a path after /send and after
    /get's file id, else a name: those who spoke last in the current room first, then
    the room's other members (``names``, called each time), with ": " after a name that
    starts the line."""

    def __init__(self, commands: Iterable[str], names: Callable[[], list[str]]) -> None:
        self.commands = sorted(set(commands))
        self.names = names
        self.paths = PathCompleter(expanduser=True)

    def get_completions(
        self, document: Document, complete_event: CompleteEvent
    ) -> Iterator[Completion]:
        before = document.text_before_cursor
        word = before.split(" ")[-1].split("\n")[-1]
        if word.startswith("/") and before == word:
            for command in self.commands:
                if command.startswith(word.lower()):
                    yield Completion(command + " ", -len(word), display=command)
            return
        path = _path_typed(before)
        if path is not None:
            yield from self.paths.get_completions(Document(path), complete_event)
            return
        bare = word.removeprefix("@")
        if not bare and not word:
            return
        starts_line = before == word
        for name in self.names():
            if name.lower().startswith(bare.lower()):
                completed = ("@" if word.startswith("@") else "") + name
                after = ": " if starts_line and not word.startswith("@") else " "
                yield Completion(completed + after, -len(word), display=name)


def _path_typed(before: str) -> str | None:
    """The path being typed after ``/send [#room|@NAME]`` or ``/get ID`` (an opening
    quote left out); None if the cursor is not in one (``@NAME`` being typed is a name)."""
    command, space, rest = before.partition(" ")
    if command.lower() not in ("/send", "/get") or not space or "\n" in rest:
        return None
    first, space, more = rest.partition(" ")
    if command.lower() == "/get" and not first.isdigit():
        return None
    if command.lower() == "/get" or first.startswith(("#", "@")):
        if not space:
            return None
        rest = more
    return rest.lstrip("\"'")


def key_bindings() -> KeyBindings:
    """Alt-Enter (Esc, Enter in any terminal) puts a new line in the message."""
    bindings = KeyBindings()

    @bindings.add("escape", "enter")
    def _newline(event: KeyPressEvent) -> None:
        event.current_buffer.insert_text("\n")

    return bindings
