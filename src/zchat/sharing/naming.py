"""What a shared file is called on the receiver's disk, and its size for people. Pure.

The sender chooses a file's name, so the name is hostile until ``safe_name`` has made
it one plain file name: no folders in it (``../../etc/passwd`` is ``passwd``), nothing
that steers a terminal or reorders a line when it is shown, nothing hidden (a leading
dot), nothing Windows refuses or treats as a device, and no longer than file systems
allow. ``free_path`` then finds a name beside the files already in the folder, and
``part_name`` is the name the download is written under until it is complete.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from pathlib import Path

from zchat.errors import InvalidInput

MAX_NAME_BYTES = 255  # ext4, APFS, NTFS (in UTF-16 units, fewer than these bytes), ...
MAX_SUFFIX_CHARS = 16  # an extension, its dot included, kept when a name is shortened
DEFAULT_NAME = "file"  # when nothing of the sender's name is left
PART_SUFFIX = ".zchat-part"

# Control, format (bidi overrides and isolates among them), surrogate, private-use
# and unassigned characters; and the line and paragraph separators, which are no
# control characters but break a line where a name is shown.
_DROPPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_SEPARATORS_RE = re.compile(r"[/\\]")
_WINDOWS_FORBIDDEN_RE = re.compile(r'[<>:"/\\|?*]')
# Windows strips trailing dots and spaces; leading ones hide a file or hide its name.
_EDGES_RE = re.compile(r"^[\s.]+|[\s.]+$")
# Device names, with or without an extension; Windows also takes the superscript digits.
_RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"]
    + [f"{device}{digit}" for device in ("COM", "LPT") for digit in "123456789\u00b9\u00b2\u00b3"]
)
_HASH_CHARS = 8  # of a shortened part name, so that two long names keep two part files

SI_UNITS = ("kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")


def safe_name(name: str) -> str:
    """The name a shared file is saved under, whatever the sender called it.

    Control and format characters are dropped, the rest is NFC-normalised; only the
    last path component is kept (on ``/`` and ``\\``; ``a/`` is ``a``); characters
    Windows forbids become ``_``; leading and trailing dots and spaces go; a Windows
    device name (``CON``, ``com1.txt``) gets a ``_`` before it; the name is cut to
    MAX_NAME_BYTES of UTF-8, keeping its extension; an empty result is DEFAULT_NAME.
    ``safe_name(safe_name(x)) == safe_name(x)``.
    """
    kept = "".join(ch for ch in name if unicodedata.category(ch) not in _DROPPED_CATEGORIES)
    kept = unicodedata.normalize("NFC", kept)
    components = [part for part in _SEPARATORS_RE.split(kept) if part]
    kept = components[-1] if components else ""
    kept = _EDGES_RE.sub("", _WINDOWS_FORBIDDEN_RE.sub("_", kept))
    if _is_reserved(kept):
        kept = "_" + kept
    stem, suffix = _split_suffix(kept)
    if suffix:
        kept = _cut(stem, MAX_NAME_BYTES - _size(suffix)) + suffix
    else:
        # cut, a name may end in a space or a dot again
        kept = _EDGES_RE.sub("", _cut(kept, MAX_NAME_BYTES))
    return kept or DEFAULT_NAME


def _is_reserved(name: str) -> bool:
    # Windows looks at what comes before the first dot, trailing spaces removed:
    # "con", "CON.txt", "CON .txt" and "con.tar.gz" are all the console
    return name.split(".", 1)[0].rstrip(" ").upper() in _RESERVED


def _split_suffix(name: str) -> tuple[str, str]:
    """(stem, extension): the extension is the last dot and what follows it, when
    that is short and something comes before it; else it is empty."""
    dot = name.rfind(".")
    if dot <= 0 or len(name) - dot > MAX_SUFFIX_CHARS:
        return name, ""
    return name[:dot], name[dot:]


def _size(text: str) -> int:
    return len(text.encode("utf-8"))


def _cut(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` bytes of UTF-8, on a character boundary."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return data[: max(limit, 0)].decode("utf-8", errors="ignore")


def part_name(name: str) -> str:
    """The name a download of ``name`` (a ``safe_name``) is written under until it is
    complete: hidden, beside the final file, and marked as zchat's. A name too long for
    that is cut and given a short hash of the whole name, so that two long names never
    share a part file (``free_path`` would otherwise find every numbered name taken)."""
    whole = f".{name}{PART_SUFFIX}"
    if _size(whole) <= MAX_NAME_BYTES:
        return whole
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()
    tail = f"~{digest[:_HASH_CHARS]}{PART_SUFFIX}"
    return "." + _cut(name, MAX_NAME_BYTES - 1 - len(tail)) + tail


def free_path(folder: Path, name: str) -> Path:
    """``folder / name`` if nothing is there, else the first free of ``name (1).ext``,
    ``name (2).ext``, ... (the stem shortened when the number would make the name
    too long). ``name`` is made safe first (``safe_name``). A name is taken when a
    file, folder or link (even a broken one) has it or has its part name (a download
    in progress).

    This is best effort: another program may take the name between this look and the
    write, so the download's final rename must refuse to replace a file (``os.link``
    or ``O_EXCL``) and ask again here when it fails.
    """
    name = safe_name(name)
    stem, suffix = _split_suffix(name)
    candidate = name
    number = 0
    while _taken(folder, candidate):
        number += 1
        counter = f" ({number})"
        candidate = _cut(stem, MAX_NAME_BYTES - _size(counter + suffix)) + counter + suffix
    return folder / candidate


def _taken(folder: Path, name: str) -> bool:
    # lexists: a broken link is taken too (writing to it would follow it)
    return os.path.lexists(folder / name) or os.path.lexists(folder / part_name(name))


def human_size(n: int) -> str:
    """A size in bytes as the chat shows it, in SI units (1 kB = 1000 B): ``999 B``,
    ``1.0 kB``, ``9.9 MB``, ``12 MB``, ``340 kB``: one decimal below 10 of a unit, none
    from 10 up, rounded half up, never ``1000 kB`` (that is ``1.0 MB``)."""
    if n < 0:
        raise InvalidInput(f"size is {n} bytes, a size is at least 0")
    if n < 1000:
        return f"{n} B"
    base = 1
    for unit in SI_UNITS:
        base *= 1000
        tenths = (n * 10 + base // 2) // base
        if tenths < 100:
            return f"{tenths // 10}.{tenths % 10} {unit}"
        whole = (n + base // 2) // base
        if whole < 1000 or unit == SI_UNITS[-1]:
            return f"{whole} {unit}"
    raise AssertionError("unreachable: the last unit takes every size")
