"""zchat.sharing.media: pictures built here byte by byte (no imaging library), one table
of (bytes, what sniff tells) for each format's rules, and fuzzing that sniff never
raises. Pure and fast."""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zchat.sharing.media import MAX_PNG_SIDE, SNIFF_BYTES, MediaInfo, sniff

# --- PNG: signature, IHDR, one IDAT of filtered scanlines, IEND ------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_ihdr(
    width: int,
    height: int,
    depth: int = 8,
    colour: int = 2,
    *,
    compression: int = 0,
    interlace: int = 0,
) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, depth, colour, compression, 0, interlace)
    return png_chunk(b"IHDR", header)


def png(width: int, height: int) -> bytes:
    """An RGB picture of ``width`` x ``height`` red pixels."""
    rows = (b"\x00" + b"\xff\x00\x00" * width) * height  # filter type 0 before each row
    return (
        PNG_SIGNATURE
        + png_ihdr(width, height)
        + png_chunk(b"IDAT", zlib.compress(rows))
        + png_chunk(b"IEND", b"")
    )


# --- GIF: header, logical screen, a global palette, one 1x1 image, trailer ------------


def gif(width: int, height: int, version: bytes = b"89a") -> bytes:
    screen = struct.pack("<HHBBB", width, height, 0x80, 0, 0)  # a palette of 2 colours
    palette = b"\x00\x00\x00\xff\xff\xff"
    image = b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0)
    pixels = b"\x02\x02\x44\x01\x00"  # LZW, code size 2: clear, colour 0, end
    return b"GIF" + version + screen + palette + image + pixels + b"\x3b"


# --- JPEG: a grey baseline picture whose every block is flat --------------------------
# With one-symbol Huffman tables (DC: category 0, AC: end of block) each 8x8 block is
# the two bits 00, so a decodable picture of any size takes a few bytes.


def jpeg_segment(marker: int, data: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(data) + 2) + data


EXIF = jpeg_segment(0xE1, b"Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08\x00\x00\x00\x00\x00\x00")
JFIF = jpeg_segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
DQT = jpeg_segment(0xDB, b"\x00" + b"\x01" * 64)
DHT = jpeg_segment(
    0xC4, b"\x00\x01" + b"\x00" * 15 + b"\x00" + b"\x10\x01" + b"\x00" * 15 + b"\x00"
)
SOS = jpeg_segment(0xDA, b"\x01\x01\x00\x00\x3f\x00")


def sof(width: int, height: int, marker: int = 0xC0) -> bytes:
    return jpeg_segment(marker, struct.pack(">BHHB", 8, height, width, 1) + b"\x01\x11\x00")


def jpeg(width: int, height: int, before_frame: bytes = EXIF) -> bytes:
    blocks = -(-width // 8) * -(-height // 8)
    bits = "00" * blocks
    bits += "1" * (-len(bits) % 8)  # padded with ones
    scan = int(bits, 2).to_bytes(len(bits) // 8, "big")
    frame = sof(width, height) + DHT + SOS + scan
    return b"\xff\xd8" + before_frame + DQT + frame + b"\xff\xd9"


# --- WebP: RIFF container, one of three first chunks ----------------------------------


def riff(*chunks: bytes) -> bytes:
    body = b"WEBP" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def webp_chunk(kind: bytes, data: bytes) -> bytes:
    return kind + struct.pack("<I", len(data)) + data + b"\x00" * (len(data) % 2)


def vp8l(width: int, height: int) -> bytes:
    """A lossless picture of one colour: with a single symbol in each of the five prefix
    codes, the pixels take no bits at all."""
    fields = [
        (width - 1, 14),
        (height - 1, 14),
        (0, 1),  # no alpha
        (0, 3),  # version 0
        (0, 1),  # no transform
        (0, 1),  # no colour cache
        (0, 1),  # no meta prefix codes
        # simple codes with one symbol: green 0 (1 bit), red 255, blue 0, alpha 255, distance 0
        *[(1, 1), (0, 1), (0, 1), (0, 1)],
        *[(1, 1), (0, 1), (1, 1), (255, 8)],
        *[(1, 1), (0, 1), (1, 1), (0, 8)],
        *[(1, 1), (0, 1), (1, 1), (255, 8)],
        *[(1, 1), (0, 1), (0, 1), (0, 1)],
    ]
    bits, at = 0, 0
    for value, count in fields:  # least significant bit first
        bits |= value << at
        at += count
    return b"\x2f" + bits.to_bytes((at + 7) // 8, "little")


# A 3x2 red picture as cwebp 1.2.4 wrote it (-q 80): the data of its VP8 chunk.
VP8_3X2 = bytes.fromhex(
    "d001009d012a0300020001402625a002"
    "74ba01f80003b000fef2eb7ffcd815cd"
    "73eff7ffd2e0fd2e0fd2e0ffd2900000"
)


def vp8(width: int, height: int) -> bytes:
    """VP8_3X2's frame header with another size in it (the size bits only)."""
    return VP8_3X2[:6] + struct.pack("<HH", width, height) + VP8_3X2[10:]


def vp8x(width: int, height: int, flags: int = 0) -> bytes:
    return (
        bytes([flags, 0, 0, 0])
        + (width - 1).to_bytes(3, "little")
        + (height - 1).to_bytes(3, "little")
    )


def webp_lossy(width: int, height: int) -> bytes:
    return riff(webp_chunk(b"VP8 ", vp8(width, height)))


def webp_lossless(width: int, height: int) -> bytes:
    return riff(webp_chunk(b"VP8L", vp8l(width, height)))


def webp_extended(width: int, height: int) -> bytes:
    return riff(webp_chunk(b"VP8X", vp8x(width, height)), webp_chunk(b"VP8L", vp8l(width, height)))


# --- what sniff tells ------------------------------------------------------------------


def as_png(width: int, height: int) -> MediaInfo:
    return MediaInfo("image/png", width, height)


def as_gif(width: int, height: int) -> MediaInfo:
    return MediaInfo("image/gif", width, height)


def as_jpeg(width: int, height: int) -> MediaInfo:
    return MediaInfo("image/jpeg", width, height)


def as_webp(width: int, height: int) -> MediaInfo:
    return MediaInfo("image/webp", width, height)


def with_byte(data: bytes, at: int, value: int) -> bytes:
    return data[:at] + bytes([value]) + data[at + 1 :]


SOI = b"\xff\xd8"
RIFF_LOSSY = webp_lossy(3, 2)
HEADER_ONLY_PNG = PNG_SIGNATURE + png_ihdr(MAX_PNG_SIDE, 1)

CASES: list[tuple[str, bytes, MediaInfo | None]] = [
    # PNG
    ("png 1x1", png(1, 1), as_png(1, 1)),
    ("png 37x19", png(37, 19), as_png(37, 19)),
    ("png header only, widest", HEADER_ONLY_PNG, as_png(MAX_PNG_SIDE, 1)),
    ("png wider than 2^31-1", PNG_SIGNATURE + png_ihdr(1 << 31, 1), None),
    ("png 0 wide", PNG_SIGNATURE + png_ihdr(0, 1), None),
    ("png 0 high", PNG_SIGNATURE + png_ihdr(1, 0), None),
    ("png palette, 1 bit", PNG_SIGNATURE + png_ihdr(5, 6, depth=1, colour=3), as_png(5, 6)),
    ("png grey, 16 bits", PNG_SIGNATURE + png_ihdr(5, 6, depth=16, colour=0), as_png(5, 6)),
    ("png RGB, 4 bits", PNG_SIGNATURE + png_ihdr(5, 6, depth=4, colour=2), None),
    ("png colour type 5", PNG_SIGNATURE + png_ihdr(5, 6, colour=5), None),
    ("png interlaced", PNG_SIGNATURE + png_ihdr(5, 6, interlace=1), as_png(5, 6)),
    ("png interlace method 2", PNG_SIGNATURE + png_ihdr(5, 6, interlace=2), None),
    ("png compression method 1", PNG_SIGNATURE + png_ihdr(5, 6, compression=1), None),
    ("png signature only", PNG_SIGNATURE, None),
    ("png short IHDR", png(3, 2)[:32], None),
    ("png IHDR without its CRC", png(3, 2)[:29], None),
    ("png IHDR with a wrong CRC", with_byte(png(3, 2), 32, png(3, 2)[32] ^ 1), None),
    ("png IHDR of 12 bytes", PNG_SIGNATURE + png_chunk(b"IHDR", png_ihdr(3, 2)[8:20]), None),
    ("png CgBI before IHDR", PNG_SIGNATURE + png_chunk(b"CgBI", b"\x50\x00\x20\x06"), None),
    ("png signature damaged", with_byte(png(3, 2), 1, ord("p")), None),
    # GIF
    ("gif89a 37x19", gif(37, 19), as_gif(37, 19)),
    ("gif87a 1x1", gif(1, 1, b"87a"), as_gif(1, 1)),
    ("gif largest", gif(65535, 65535), as_gif(65535, 65535)),
    ("gif 0 wide", gif(0, 5), None),
    ("gif 0 high", gif(5, 0), None),
    ("gif screen cut", gif(37, 19)[:9], None),
    ("gif unknown version", gif(37, 19, b"88a"), None),
    # JPEG
    ("jpeg, APP1 before SOF0", jpeg(37, 19), as_jpeg(37, 19)),
    ("jpeg, JFIF and Exif", jpeg(1, 1, JFIF + EXIF), as_jpeg(1, 1)),
    ("jpeg largest", SOI + EXIF + sof(65535, 65535), as_jpeg(65535, 65535)),
    ("jpeg fill bytes", SOI + b"\xff\xff\xff" + EXIF + b"\xff" + sof(8, 9), as_jpeg(8, 9)),
    ("jpeg TEM and RST", SOI + b"\xff\x01\xff\xd0\xff\xd7" + sof(8, 9), as_jpeg(8, 9)),
    (
        "jpeg DHT, JPG, DAC skipped",
        SOI + DHT + jpeg_segment(0xC8, b"") + jpeg_segment(0xCC, b"ab") + sof(8, 9),
        as_jpeg(8, 9),
    ),
    ("jpeg SOF2 (progressive)", SOI + sof(8, 9, 0xC2), as_jpeg(8, 9)),
    ("jpeg SOF15", SOI + sof(8, 9, 0xCF), as_jpeg(8, 9)),
    ("jpeg height by DNL", SOI + EXIF + sof(8, 0), None),
    ("jpeg 0 wide", SOI + EXIF + sof(0, 8), None),
    ("jpeg SOF past the bytes", jpeg(37, 19)[: len(SOI + EXIF + DQT) + 6], None),
    ("jpeg SOF marker only", SOI + EXIF + b"\xff\xc0", None),
    ("jpeg APP1 longer than the bytes", SOI + b"\xff\xe1\xff\xff" + b"Exif" + sof(8, 9), None),
    ("jpeg segment length 0", SOI + b"\xff\xe1\x00\x00" + sof(8, 9), None),
    ("jpeg segment length 1", SOI + b"\xff\xe1\x00\x01" + sof(8, 9), None),
    ("jpeg bytes between segments", SOI + EXIF + b"\x00" + sof(8, 9), None),
    ("jpeg scan before a frame", SOI + SOS + sof(8, 9), None),
    ("jpeg EOI before a frame", SOI + b"\xff\xd9" + sof(8, 9), None),
    ("jpeg second SOI", SOI + SOI + sof(8, 9), None),
    ("jpeg stuffed byte", SOI + b"\xff\x00" + sof(8, 9), None),
    ("jpeg SOF of 0 components", SOI + jpeg_segment(0xC0, struct.pack(">BHHB", 8, 9, 8, 0)), None),
    ("jpeg SOF length lies", SOI + jpeg_segment(0xC0, sof(8, 9)[4:] + b"\x00"), None),
    ("jpeg SOI only", SOI, None),
    ("jpeg fill bytes to the end", SOI + b"\xff\xff", None),
    # WebP
    ("webp lossy 3x2", RIFF_LOSSY, as_webp(3, 2)),
    ("webp lossy largest", webp_lossy(16383, 16383), as_webp(16383, 16383)),
    ("webp lossy, upscaling bits", webp_lossy(0xC000 | 30, 0x4000 | 20), as_webp(30, 20)),
    ("webp lossy 0 wide", webp_lossy(0, 2), None),
    ("webp lossy not a key frame", with_byte(RIFF_LOSSY, 20, RIFF_LOSSY[20] | 1), None),
    ("webp lossy bad start code", with_byte(RIFF_LOSSY, 23, 0), None),
    ("webp lossy cut", RIFF_LOSSY[:29], None),
    ("webp lossless 37x19", webp_lossless(37, 19), as_webp(37, 19)),
    ("webp lossless 1x1", webp_lossless(1, 1), as_webp(1, 1)),
    ("webp lossless largest", webp_lossless(16384, 16384), as_webp(16384, 16384)),
    ("webp lossless bad signature", with_byte(webp_lossless(3, 2), 20, 0x2E), None),
    ("webp lossless version 1", with_byte(webp_lossless(3, 2), 24, 0x20), None),
    ("webp lossless cut", webp_lossless(3, 2)[:24], None),
    ("webp extended 37x19", webp_extended(37, 19), as_webp(37, 19)),
    ("webp extended widest", riff(webp_chunk(b"VP8X", vp8x(1 << 24, 1))), as_webp(1 << 24, 1)),
    (
        "webp extended 65536x65535",
        riff(webp_chunk(b"VP8X", vp8x(65536, 65535))),
        as_webp(65536, 65535),
    ),
    ("webp extended canvas too big", riff(webp_chunk(b"VP8X", vp8x(65536, 65536))), None),
    ("webp extended chunk of 12", riff(webp_chunk(b"VP8X", vp8x(3, 2) + b"\x00\x00")), None),
    ("webp extended cut", webp_extended(3, 2)[:29], None),
    ("webp ALPH first", riff(webp_chunk(b"ALPH", b"\x00" * 10)), None),
    ("webp RIFF size lies", b"RIFF\x10\x00\x00\x00" + RIFF_LOSSY[8:], None),
    ("webp header cut", RIFF_LOSSY[:19], None),
    ("riff, not webp", b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 20, None),
    # not pictures
    ("empty", b"", None),
    ("text", b"hello, world", None),
    ("pdf", b"%PDF-1.7\n", None),
    ("zip", b"PK\x03\x04" + b"\x00" * 26, None),
    ("png behind a byte", b"\x00" + png(3, 2), None),
]


@pytest.mark.parametrize(("data", "info"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_sniff(data: bytes, info: MediaInfo | None) -> None:
    assert sniff(data) == info


REAL = {
    "png": png(3, 2),
    "gif": gif(3, 2),
    "jpeg": jpeg(3, 2),
    "jpeg jfif": jpeg(17, 9, JFIF + EXIF),
    "webp lossy": RIFF_LOSSY,
    "webp lossless": webp_lossless(3, 2),
    "webp extended": webp_extended(3, 2),
}


@pytest.mark.parametrize("data", REAL.values(), ids=REAL.keys())
def test_a_cut_picture_is_the_same_picture_or_none(data: bytes) -> None:
    info = sniff(data)
    assert info is not None
    told = [sniff(data[:length]) for length in range(len(data))]
    assert set(told) <= {None, info}
    assert told[-1] == info, "the last bytes are not needed to tell the size"


def test_sniff_needs_no_more_than_sniff_bytes() -> None:
    data = SOI + jpeg_segment(0xE1, b"\x00" * 65000) * 16 + sof(8, 9)
    assert len(data) < SNIFF_BYTES
    assert sniff(data) == as_jpeg(8, 9)


# --- never raises ----------------------------------------------------------------------

LIMITS = {
    "image/png": MAX_PNG_SIDE,
    "image/gif": 65535,
    "image/jpeg": 65535,
    "image/webp": 1 << 24,
}


def assert_sound(info: MediaInfo | None) -> None:
    if info is not None:
        assert 1 <= info.width <= LIMITS[info.media]
        assert 1 <= info.height <= LIMITS[info.media]


SIGNATURES = [PNG_SIGNATURE, b"GIF89a", SOI, SOI + b"\xff", b"RIFF\xff\xff\x00\x00WEBPVP8"]


@settings(max_examples=1000, deadline=None, database=None)
@given(
    st.one_of(
        st.binary(max_size=200), st.tuples(st.sampled_from(SIGNATURES), st.binary()).map(b"".join)
    )
)
def test_any_bytes(data: bytes) -> None:
    assert_sound(sniff(data))


MUTATIONS = st.lists(
    st.tuples(
        st.sampled_from(["flip", "set", "cut", "insert", "delete"]),
        st.integers(0, 400),
        st.integers(0, 255),
    ),
    min_size=1,
    max_size=6,
)


def mutated(data: bytes, mutations: list[tuple[str, int, int]]) -> bytes:
    for kind, where, value in mutations:
        at = where % (len(data) + 1)
        match kind:
            case "flip" if at < len(data):
                data = with_byte(data, at, data[at] ^ (1 << value % 8))
            case "set" if at < len(data):
                data = with_byte(data, at, value)
            case "cut":
                data = data[:at]
            case "insert":
                data = data[:at] + bytes([value]) + data[at:]
            case "delete":
                data = data[:at] + data[at + 1 :]
    return data


@settings(max_examples=1000, deadline=None, database=None)
@given(st.sampled_from(list(REAL.values())), MUTATIONS)
def test_mutated_pictures(data: bytes, mutations: list[tuple[str, int, int]]) -> None:
    assert_sound(sniff(mutated(data, mutations)))


def test_no_imaging_library_is_needed() -> None:
    # PIL is made unimportable: sniffing must not reach for it, nor for zmq
    code = (
        "import sys; sys.modules['PIL'] = None\n"
        "from zchat.sharing import media, naming\n"
        "assert media.sniff(bytes.fromhex(sys.argv[1])).width == 3\n"
        "assert sys.modules['PIL'] is None\n"
        "assert not {'zmq', 'socket'} & set(sys.modules), sorted(sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code, png(3, 2).hex()], check=True, timeout=30)
