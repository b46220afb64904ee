"""Pictures told by their content: type, width and height from a file's first bytes. Pure.

A shared file's name and the type its sender claims are not trusted: ``sniff`` reads
the bytes themselves, so a program renamed ``cat.png`` is no picture, and a picture is
shown with the size it really has. It knows four formats, and only their headers:

PNG   signature, then the IHDR chunk (its CRC checked)
GIF   ``GIF87a``/``GIF89a``, then the logical screen's width and height
JPEG  SOI, then segments by their lengths up to the first frame header (SOFn)
WebP  ``RIFF`` size ``WEBP``, then a ``VP8 ``, ``VP8L`` or ``VP8X`` chunk

Whatever the bytes, ``sniff`` answers ``None`` or a ``MediaInfo`` whose sizes the
format allows; it never raises. It does not decode pixels: a sound header on a broken
body is still a picture here.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

SNIFF_BYTES = 1 << 20  # what a caller should read at most; a JPEG's SOF comes after EXIF
MAX_PNG_SIDE = (1 << 31) - 1  # the PNG specification's limit on each side
MAX_WEBP_CANVAS = (1 << 32) - 1  # the WebP container's limit on width x height

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IHDR_LENGTH = 13
# colour type -> the bit depths it allows (PNG specification, 11.2.2)
_PNG_DEPTHS = {0: {1, 2, 4, 8, 16}, 2: {8, 16}, 3: {1, 2, 4, 8}, 4: {8, 16}, 6: {8, 16}}

_GIF_SIGNATURES = (b"GIF87a", b"GIF89a")

# JPEG markers (ITU T.81, table B.1). A frame header is SOF0..SOF15 but for the three
# codes in that range that are something else: DHT, JPG (reserved) and DAC.
_JPEG_SOI = 0xD8
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RST0..RST7: no length
# not before a frame header: a stuffed byte, a second SOI, EOI, a scan (SOS)
_JPEG_NOT_BEFORE_SOF = frozenset({0x00, _JPEG_SOI, 0xD9, 0xDA})

_VP8_START_CODE = b"\x9d\x01\x2a"
_VP8L_SIGNATURE = 0x2F
_VP8X_CHUNK_SIZE = 10


@dataclass(frozen=True, slots=True)
class MediaInfo:
    """A picture's type and size in pixels, as stored (an EXIF rotation is not applied)."""

    media: str  # a MIME type: "image/png", "image/jpeg", "image/gif" or "image/webp"
    width: int
    height: int


def sniff(head: bytes) -> MediaInfo | None:
    """The picture ``head`` begins, or None: for what is not one of the four formats,
    is cut before its size, or states a size its format does not allow. ``head`` is a
    file's first bytes (a caller reads SNIFF_BYTES at most: a JPEG whose frame header
    lies further is not told). Never raises."""
    if head.startswith(PNG_SIGNATURE):
        return _png(head)
    if head.startswith(_GIF_SIGNATURES):
        return _gif(head)
    if head.startswith(b"\xff\xd8"):
        return _jpeg(head)
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return _webp(head)
    return None


def _png(head: bytes) -> MediaInfo | None:
    # signature, then the first chunk: length, "IHDR", 13 bytes of data, CRC
    start = len(PNG_SIGNATURE)
    chunk = head[start : start + 8 + _PNG_IHDR_LENGTH + 4]
    if len(chunk) < 8 + _PNG_IHDR_LENGTH + 4:
        return None
    length, kind = struct.unpack(">I4s", chunk[:8])
    if length != _PNG_IHDR_LENGTH or kind != b"IHDR":
        return None
    data = chunk[8 : 8 + _PNG_IHDR_LENGTH]
    (crc,) = struct.unpack(">I", chunk[8 + _PNG_IHDR_LENGTH :])
    if zlib.crc32(kind + data) != crc:
        return None
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(
        ">IIBBBBB", data
    )
    if not (1 <= width <= MAX_PNG_SIDE and 1 <= height <= MAX_PNG_SIDE):
        return None
    if depth not in _PNG_DEPTHS.get(colour, set()) or compression or filtering or interlace > 1:
        return None
    return MediaInfo("image/png", width, height)


def _gif(head: bytes) -> MediaInfo | None:
    if len(head) < 10:
        return None
    width, height = struct.unpack("<HH", head[6:10])
    if not (width and height):  # 16 bits: never past 65535
        return None
    return MediaInfo("image/gif", width, height)


def _jpeg(head: bytes) -> MediaInfo | None:
    """Walk the segments after SOI to the first frame header. Each step moves forward
    (a marker, a fill byte, or a segment of at least its two length bytes), so the walk
    ends within ``len(head)`` steps."""
    at = 2
    end = len(head)
    while at < end:
        if head[at] != 0xFF:
            return None  # bytes between segments: not a JPEG we can read
        while at < end and head[at] == 0xFF:  # fill bytes before a marker
            at += 1
        if at >= end:
            return None
        marker = head[at]
        at += 1
        if marker in _JPEG_STANDALONE:
            continue
        if marker in _JPEG_NOT_BEFORE_SOF:
            return None
        if at + 2 > end:
            return None
        (length,) = struct.unpack(">H", head[at : at + 2])
        if length < 2:
            return None
        if marker in _JPEG_SOF:
            return _jpeg_frame(head[at : at + length], length)
        at += length
    return None


def _jpeg_frame(segment: bytes, length: int) -> MediaInfo | None:
    # length, sample precision, lines (height), samples per line (width), components,
    # then three bytes for each component
    if len(segment) < 8:
        return None
    _, _, height, width, components = struct.unpack(">HBHHB", segment[:8])
    if components < 1 or length != 8 + 3 * components:
        return None
    if not (width and height):  # a height of 0 is given later, by a DNL segment
        return None
    return MediaInfo("image/jpeg", width, height)


def _webp(head: bytes) -> MediaInfo | None:
    # "RIFF", size of what follows, "WEBP", then the first chunk: fourcc, size, data
    if len(head) < 20:
        return None
    riff_size, kind, chunk_size = struct.unpack("<I4x4sI", head[4:20])
    if riff_size < 12 + chunk_size:
        return None  # the chunk says it is longer than the file
    data = head[20 : 20 + chunk_size]
    match kind:
        case b"VP8 ":
            size = _vp8(data)
        case b"VP8L":
            size = _vp8l(data)
        case b"VP8X":
            size = _vp8x(data) if chunk_size == _VP8X_CHUNK_SIZE else None
        case _:
            size = None
    return None if size is None else MediaInfo("image/webp", *size)


def _vp8(data: bytes) -> tuple[int, int] | None:
    # a key frame's 3-byte tag, start code, then 14 bits of width and of height (the
    # two bits above them ask for upscaling, which does not change the picture's size)
    if len(data) < 10:
        return None
    tag = int.from_bytes(data[:3], "little")
    key_frame = not tag & 1
    version = (tag >> 1) & 7
    if not key_frame or version > 3 or data[3:6] != _VP8_START_CODE:
        return None
    width, height = struct.unpack("<HH", data[6:10])
    width &= 0x3FFF
    height &= 0x3FFF
    if not (width and height):
        return None
    return width, height


def _vp8l(data: bytes) -> tuple[int, int] | None:
    # signature byte, then 32 bits: width - 1 (14), height - 1 (14), alpha (1), version (3)
    if len(data) < 5 or data[0] != _VP8L_SIGNATURE:
        return None
    bits = int.from_bytes(data[1:5], "little")
    if bits >> 29:  # the version must be 0
        return None
    return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1


def _vp8x(data: bytes) -> tuple[int, int] | None:
    # flags (1 byte), reserved (3), canvas width - 1 (24 bits), canvas height - 1 (24)
    if len(data) < _VP8X_CHUNK_SIZE:
        return None
    width = int.from_bytes(data[4:7], "little") + 1
    height = int.from_bytes(data[7:10], "little") + 1
    if width * height > MAX_WEBP_CANVAS:
        return None
    return width, height
