"""zchat.sharing.naming: one table of (sender's name, name on disk) drives safe_name's
tests; free_path runs on a real folder. Pure and fast."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zchat.errors import InvalidInput
from zchat.sharing.naming import (
    DEFAULT_NAME,
    MAX_NAME_BYTES,
    free_path,
    human_size,
    part_name,
    safe_name,
)

DEVANAGARI = "\u0928\u092e\u0938\u094d\u0924\u0947"  # "namaste": 6 characters, 18 bytes
LONG_DEVANAGARI = DEVANAGARI * 17  # 306 bytes

CASES: list[tuple[str, str]] = [
    # plain names are kept as they are
    ("tugas3.pdf", "tugas3.pdf"),
    ("Photo 2024-01-02 at 10.11.12.jpeg", "Photo 2024-01-02 at 10.11.12.jpeg"),
    ("archive.tar.gz", "archive.tar.gz"),
    ("README", "README"),
    ("~", "~"),
    ("a~b", "a~b"),
    ("café.txt", "café.txt"),
    (f"{DEVANAGARI}.txt", f"{DEVANAGARI}.txt"),
    ("\u05e9\u05dc\u05d5\u05dd.txt", "\u05e9\u05dc\u05d5\u05dd.txt"),  # Hebrew, RTL by itself
    # folders: only the last component, on either separator
    ("../../etc/passwd", "passwd"),
    ("/etc/passwd", "passwd"),
    ("..\\..\\Windows\\win.ini", "win.ini"),
    ("C:\\Users\\a\\b.txt", "b.txt"),
    ("a/b\\c", "c"),
    ("a/", "a"),
    ("a\\", "a"),
    ("/", DEFAULT_NAME),
    ("foo/..", DEFAULT_NAME),
    ("./", DEFAULT_NAME),
    # dots and spaces at the edges
    (".bashrc", "bashrc"),
    ("..bashrc", "bashrc"),
    (".", DEFAULT_NAME),
    ("..", DEFAULT_NAME),
    ("...", DEFAULT_NAME),
    ("", DEFAULT_NAME),
    ("   ", DEFAULT_NAME),
    ("report.pdf   ", "report.pdf"),
    ("report.pdf. . .", "report.pdf"),
    ("  report.pdf", "report.pdf"),
    ("report .pdf", "report .pdf"),
    ("a\u00a0", "a"),  # a no-break space is a space too
    # control and format characters are dropped
    ("a\x1b[31mb.txt", "a[31mb.txt"),
    ("a\x00b", "ab"),
    ("a\x7fb", "ab"),
    ("a\x85b", "ab"),  # C1
    ("a\x9b31mb", "a31mb"),  # C1 CSI
    ("a\nb\r\tc", "abc"),
    ("a\u2028b\u2029c", "abc"),
    ("\u202egnp.exe", "gnp.exe"),  # shown as "exe.png" with the override
    ("photo\u202ecod.exe", "photocod.exe"),
    ("a\u202a\u202b\u202c\u202db", "ab"),
    ("a\u2066\u2067\u2068\u2069b", "ab"),
    ("a\u200bb", "ab"),  # zero-width space (Cf)
    ("a\ud800b", "ab"),  # a lone surrogate cannot be written as UTF-8
    ("a\ue000b", "ab"),  # private use
    ("\x1b", DEFAULT_NAME),
    ("a/\x00", "a"),
    ("C\x00ON", "_CON"),
    (".\u202e.bashrc", "bashrc"),
    # NFC
    ("cafe\u0301.txt", "caf\u00e9.txt"),
    ("\u212b", "\u00c5"),  # ANGSTROM SIGN is A WITH RING ABOVE
    # characters Windows forbids
    ('a<b>c:d"e|f?g*h.txt', "a_b_c_d_e_f_g_h.txt"),
    ("what?", "what_"),
    ("C:", "C_"),
    # Windows device names, any case, any extension
    ("CON", "_CON"),
    ("con", "_con"),
    ("con.txt", "_con.txt"),
    ("CON .txt", "_CON .txt"),
    ("nul.tar.gz", "_nul.tar.gz"),
    ("PRN", "_PRN"),
    ("aux.c", "_aux.c"),
    ("COM1", "_COM1"),
    ("com9.log", "_com9.log"),
    ("LPT1", "_LPT1"),
    ("lpt9", "_lpt9"),
    ("COM\u00b9", "_COM\u00b9"),
    ("CONIN$", "_CONIN$"),
    ("CON.", "_CON"),
    ("COM0", "COM0"),
    ("COM10", "COM10"),
    ("CONSOLE", "CONSOLE"),
    ("icon.png", "icon.png"),
    ("CON_", "CON_"),
    ("x.CON", "x.CON"),
    # length: 255 bytes of UTF-8, the extension kept
    ("a" * 255, "a" * 255),
    ("a" * 256, "a" * 255),
    ("a" * 296 + ".txt", "a" * 251 + ".txt"),
    ("a" * 300 + ".ab.cd", "a" * 252 + ".cd"),
    (LONG_DEVANAGARI, LONG_DEVANAGARI[:85]),  # 85 characters of 3 bytes
    (LONG_DEVANAGARI + ".pdf", LONG_DEVANAGARI[:83] + ".pdf"),
    ("\u00e9" * 200, "\u00e9" * 127),  # 254 bytes: a half character is not kept
    ("a" * 300 + "." + "b" * 20, ("a" * 300 + "." + "b" * 20)[:255]),  # no extension that long
    ("a" * 254 + " b", "a" * 254),  # cut before the b: the space is at the end
    ("CON" + "a" * 300, "CON" + "a" * 252),  # "CONaaa" is no device
    ("con." + "a" * 300, ("_con." + "a" * 300)[:255]),
    ("CON" + " " * 300 + ".txt", "_CON" + " " * 247 + ".txt"),
]


@pytest.mark.parametrize(("name", "safe"), CASES, ids=[repr(name[:40]) for name, _ in CASES])
def test_safe_name(name: str, safe: str) -> None:
    assert safe_name(name) == safe


HOSTILE = ["/", "\\", ".", " ", "\x1b", "\x00", "\u202e", "\u2028", "\ud800", "\u0301", "CON"]
PIECES = [*"aé:*?<>|~", "\u0928", "\U0001f600", ".txt", ".tar.gz", "COM1"]
NAMES = st.one_of(
    st.lists(st.sampled_from(PIECES + HOSTILE), max_size=120).map("".join),
    st.text(max_size=300),
)


def is_dropped(char: str) -> bool:
    return unicodedata.category(char) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")


@settings(max_examples=500, deadline=None, database=None)
@given(NAMES)
def test_any_name_becomes_one_plain_file_name(name: str) -> None:
    safe = safe_name(name)
    assert safe
    assert len(safe.encode("utf-8")) <= MAX_NAME_BYTES
    assert not any(char in safe for char in '/\\<>:"|?*')
    assert not any(map(is_dropped, safe))
    assert safe == unicodedata.normalize("NFC", safe)
    assert safe == safe.strip().strip(".")
    assert safe not in (".", "..")
    assert safe_name(safe) == safe


NUMBERED = [
    # (files already in the folder, the name asked for, the path given)
    ([], "tugas3.pdf", "tugas3.pdf"),
    (["tugas3.pdf"], "tugas3.pdf", "tugas3 (1).pdf"),
    (["tugas3.pdf", "tugas3 (1).pdf"], "tugas3.pdf", "tugas3 (2).pdf"),
    (["tugas3.pdf", "tugas3 (2).pdf"], "tugas3.pdf", "tugas3 (1).pdf"),
    (["README"], "README", "README (1)"),
    (["archive.tar.gz"], "archive.tar.gz", "archive.tar (1).gz"),
    # a download in progress holds its name
    ([".tugas3.pdf.zchat-part"], "tugas3.pdf", "tugas3 (1).pdf"),
    (["tugas3.pdf", ".tugas3 (1).pdf.zchat-part"], "tugas3.pdf", "tugas3 (2).pdf"),
    # the name asked for is made safe first
    ([], "../../etc/passwd", "passwd"),
    (["passwd"], "../passwd", "passwd (1)"),
    (["_CON"], "CON", "_CON (1)"),
    ([], ".bashrc", "bashrc"),
]


@pytest.mark.parametrize(("present", "name", "expected"), NUMBERED)
def test_free_path(tmp_path: Path, present: list[str], name: str, expected: str) -> None:
    for existing in present:
        (tmp_path / existing).write_bytes(b"")
    assert free_path(tmp_path, name) == tmp_path / expected


def test_free_path_counts_a_folder_and_a_broken_link_as_taken(tmp_path: Path) -> None:
    (tmp_path / "a.txt").mkdir()
    (tmp_path / "a (1).txt").symlink_to(tmp_path / "nowhere")
    assert free_path(tmp_path, "a.txt") == tmp_path / "a (2).txt"


def test_free_path_shortens_the_stem_to_fit_the_number(tmp_path: Path) -> None:
    name = "a" * 251 + ".txt"
    (tmp_path / name).write_bytes(b"")
    for number in range(1, 12):
        path = free_path(tmp_path, name)
        assert path.name == "a" * (251 - len(f" ({number})")) + f" ({number}).txt"
        assert len(path.name.encode("utf-8")) == MAX_NAME_BYTES
        path.write_bytes(b"")


def test_free_path_shortens_a_multibyte_stem_on_a_character_boundary(tmp_path: Path) -> None:
    name = safe_name(LONG_DEVANAGARI)  # 255 bytes
    (tmp_path / name).write_bytes(b"")
    path = free_path(tmp_path, name)
    assert path.name == LONG_DEVANAGARI[:83] + " (1)"
    assert len(path.name.encode("utf-8")) <= MAX_NAME_BYTES


def test_free_path_of_a_long_name_with_its_download_in_progress(tmp_path: Path) -> None:
    # the part names of two long names are cut: they must still differ, or the
    # numbered name would never be free
    name = "a" * 251 + ".txt"
    (tmp_path / part_name(name)).write_bytes(b"")
    path = free_path(tmp_path, name)
    assert path.name == "a" * 247 + " (1).txt"
    assert not (tmp_path / part_name(path.name)).exists()


PARTS = [
    ("tugas3.pdf", ".tugas3.pdf.zchat-part"),
    ("a" * 243, "." + "a" * 243 + ".zchat-part"),  # 255 bytes: not cut
]


@pytest.mark.parametrize(("name", "part"), PARTS, ids=[name[:20] for name, _ in PARTS])
def test_part_name(name: str, part: str) -> None:
    assert part_name(name) == part


@pytest.mark.parametrize("name", ["a" * 244, "a" * 255, LONG_DEVANAGARI[:85], "é" * 127])
def test_a_long_names_part_name_is_cut_and_told_apart(name: str) -> None:
    part = part_name(name)
    assert len(part.encode("utf-8")) <= MAX_NAME_BYTES
    assert part.startswith(".")
    assert part.endswith(".zchat-part")
    assert part != part_name(name[:-1] + "b")


SIZES = [
    (0, "0 B"),
    (1, "1 B"),
    (999, "999 B"),
    (1000, "1.0 kB"),
    (1049, "1.0 kB"),
    (1050, "1.1 kB"),
    (9949, "9.9 kB"),
    (9950, "10 kB"),
    (12_345, "12 kB"),
    (340_000, "340 kB"),
    (999_499, "999 kB"),
    (999_500, "1.0 MB"),
    (1_200_000, "1.2 MB"),
    (12_000_000, "12 MB"),
    (100_000_000, "100 MB"),
    (1_100_000_000, "1.1 GB"),
    (2_000_000_000_000, "2.0 TB"),
    (1024**3, "1.1 GB"),
    (10**24, "1.0 YB"),
    (10**27, "1000 YB"),
]


@pytest.mark.parametrize(("size", "shown"), SIZES, ids=[str(size) for size, _ in SIZES])
def test_human_size(size: int, shown: str) -> None:
    assert human_size(size) == shown


def test_a_negative_size_is_refused() -> None:
    with pytest.raises(InvalidInput, match="-1"):
        human_size(-1)
