"""Image headers: the mimetype and intrinsic size of a binary, read from its first bytes.

This module owns two small things. ``sniff`` reads the leading bytes of a file and returns
its mimetype plus the intrinsic system fields Dataloop shows for images (``width``,
``height``, ``channels``) by parsing headers only: PNG, JPEG, GIF, BMP, WebP and baseline
TIFF. ``encode_png`` writes the smallest valid PNG from raw rows, for annotation masks and the
sample dataset.

It must not decode pixels, open files, or raise on malformed input: an ingest of a million
files must not stop because one of them is truncated or lies about its format. Anything it
cannot read it reports as "no size" and falls back to the file extension for the mimetype.
"""

from __future__ import annotations

import functools
import mimetypes
import struct
import zlib
from collections.abc import Callable, Iterable
from typing import Any

# 64 KiB covers the header of every format above in practice. A JPEG can put megabytes of
# EXIF/ICC segments before its SOF marker; then ``sniff`` returns no width/height rather
# than asking for more bytes.
HEAD_BYTES = 64 * 1024

OCTET_STREAM = "application/octet-stream"

# A private table built from Python's defaults only: the module-level ``mimetypes``
# functions also read /etc/mime.types and the Windows registry, which would make the
# mimetype (part of the item record, hence of its hash) depend on the machine.
_MIMETYPES = mimetypes.MimeTypes()

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}
# SOF0..SOF15 carry the frame size; C4 (DHT), C8 (JPG extension) and CC (DAC) share the
# range but are not frame headers.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers without a length field: TEM, RST0..7, SOI, EOI.
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD9)})
_JPEG_SOS = 0xDA
_JPEG_EOI = 0xD9
_TIFF_WIDTH, _TIFF_HEIGHT, _TIFF_SAMPLES = 256, 257, 277
_TIFF_SHORT, _TIFF_LONG = 3, 4
_TIFF_MAX_ENTRIES = 4096


def sniff(head: bytes, filename: str) -> tuple[str, dict[str, Any]]:
    """Return the mimetype and intrinsic image fields of a binary from its leading bytes.

    Args:
        head: The first bytes of the file; ``HEAD_BYTES`` of them is enough in the common
            case. Fewer is fine: a truncated header yields no size, never an error.
        filename: The item's name, used only for the extension fallback.

    Returns:
        ``(mimetype, fields)`` where ``fields`` holds ``width`` and ``height`` (positive
        ints) and, when the header says, ``channels``; it is empty for non-images and for
        headers that could not be read. The mimetype comes from the magic bytes when they
        are recognised, else from the extension, else ``application/octet-stream``.
    """
    head = bytes(head)
    for magic, mimetype, parser in _BY_FIRST_BYTE.get(head[:1], ()):
        if magic(head):
            try:
                fields = parser(head)
            except (struct.error, IndexError, ValueError):  # belt and braces: never raise
                fields = {}
            return mimetype, _valid(fields)
    return _guess_type(filename), {}


def encode_png(width: int, height: int, rows: Iterable[bytes], *, channels: int, runs: bool = False) -> bytes:
    """Encode raw 8-bit rows as a PNG, deterministically (fixed zlib level, no metadata).

    Args:
        width: Image width in pixels, at least 1.
        height: Image height in pixels, at least 1; ``rows`` must yield exactly this many.
        rows: Each row's pixels, ``width * channels`` bytes, top row first. A row is
            copied before the next is asked for, so one buffer may be yielded again.
        channels: 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA).
        runs: The image is runs of equal pixels (a mask): deflate them with zlib's
            run-length strategy (at memLevel 6: 1.37 against 1.84 ms at 8 on one mask).
            On 400 crowd masks of ``benchmarks/ingest_coco.py`` (~350,000 pixels each), a
            mask rendered in 2.5 against 7.5 ms at level 9, for ~10 % more bytes (3,334
            against 3,027); level 9 spends its time walking the match chains that runs of
            equal bytes make long.

    Returns:
        The PNG file's bytes.

    Raises:
        ValueError: A dimension, the channel count or a row length is wrong.
    """
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}.get(channels)
    if color_type is None:
        raise ValueError(f"unsupported channel count {channels}")
    if not (1 <= width < 2**31 and 1 <= height < 2**31):
        raise ValueError(f"bad PNG size {width}x{height}")
    stride = width * channels
    comp = zlib.compressobj(9, zlib.DEFLATED, 15, 6, zlib.Z_RLE) if runs else zlib.compressobj(9)
    parts = []
    count = 0
    band = bytearray()  # rows are deflated a band at a time: a call and a copy per row cost ~8 %
    for row in rows:
        if len(row) != stride:
            raise ValueError(f"row {count} has {len(row)} bytes, expected {stride}")
        # Filter type 0 (none) per row: masks and flat shapes compress well without it.
        band += b"\x00"
        band += row
        if len(band) >= _PNG_BAND:
            parts.append(comp.compress(band))
            band.clear()
        count += 1
    parts.append(comp.compress(band))
    if count != height:
        raise ValueError(f"got {count} rows, expected {height}")
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return _PNG_SIGNATURE + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", b"".join(parts)) + _chunk(b"IEND", b"")


_PNG_BAND = 1 << 20


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _guess_type(filename: str) -> str:
    # The guess depends on the extension alone; cache it per extension (ingest calls this per file).
    base = filename.rsplit("/", 1)[-1]
    dot = base.rfind(".")
    return _guess_ext(base[dot:].lower() if dot > 0 else base)


@functools.lru_cache(maxsize=1024)
def _guess_ext(ext: str) -> str:
    try:
        guessed, _ = _MIMETYPES.guess_type("x" + ext if ext.startswith(".") else ext, strict=False)
    except (TypeError, ValueError):  # odd names must not stop an ingest
        guessed = None
    return guessed or OCTET_STREAM


def _valid(fields: dict[str, int]) -> dict[str, Any]:
    # A header that parses but says 0x0 (JPEG with a DNL marker, a corrupt file) has no
    # usable size; report none rather than a size nobody can use.
    w, h = fields.get("width", 0), fields.get("height", 0)
    if w <= 0 or h <= 0:
        return {}
    out: dict[str, Any] = {"width": w, "height": h}
    if fields.get("channels", 0) > 0:
        out["channels"] = fields["channels"]
    return out


def _u16be(b: bytes, at: int) -> int:
    return int.from_bytes(b[at : at + 2], "big") if at + 2 <= len(b) else 0


def _is_png(b: bytes) -> bool:
    return b.startswith(_PNG_SIGNATURE)


def _png(b: bytes) -> dict[str, int]:
    # The first chunk must be IHDR: length 13, type, width, height, depth, colour type.
    if len(b) < 26 or b[12:16] != b"IHDR":
        return {}
    width, height = struct.unpack_from(">II", b, 16)
    return {"width": width, "height": height, "channels": _PNG_CHANNELS.get(b[25], 0)}


def _is_jpeg(b: bytes) -> bool:
    return b[:3] == b"\xff\xd8\xff"


def _jpeg(b: bytes) -> dict[str, int]:
    pos = 2
    n = len(b)
    while pos < n:
        if b[pos] != 0xFF:
            return {}  # lost sync: not a marker where one must be
        # Any number of 0xFF fill bytes may precede a marker code.
        while pos < n and b[pos] == 0xFF:
            pos += 1
        if pos >= n:
            break
        marker = b[pos]
        pos += 1
        if marker in _JPEG_STANDALONE:
            if marker == _JPEG_EOI:
                break
            continue
        if marker == _JPEG_SOS:
            break  # entropy-coded data follows; a frame header after it would be invalid
        length = _u16be(b, pos)
        if length < 2:
            break
        if marker in _JPEG_SOF:
            if pos + 8 > n:
                break
            height, width = struct.unpack_from(">HH", b, pos + 3)
            return {"width": width, "height": height, "channels": b[pos + 7]}
        pos += length
    return {}


def _is_gif(b: bytes) -> bool:
    return b[:6] in (b"GIF87a", b"GIF89a")


def _gif(b: bytes) -> dict[str, int]:
    if len(b) < 10:
        return {}
    width, height = struct.unpack_from("<HH", b, 6)
    return {"width": width, "height": height}


def _is_bmp(b: bytes) -> bool:
    # "BM" alone matches too much text; also require a known DIB header size.
    return len(b) >= 18 and b[:2] == b"BM" and struct.unpack_from("<I", b, 14)[0] in (12, 40, 52, 56, 64, 108, 124)


def _bmp(b: bytes) -> dict[str, int]:
    dib = struct.unpack_from("<I", b, 14)[0]
    if dib == 12:  # BITMAPCOREHEADER: unsigned 16-bit sizes
        if len(b) < 26:
            return {}
        width, height, _planes, bpp = struct.unpack_from("<HHHH", b, 18)
    else:
        if len(b) < 30:
            return {}
        width, height, _planes, bpp = struct.unpack_from("<iiHH", b, 18)
        height = abs(height)  # negative height means rows stored top-down
    channels = {16: 3, 24: 3, 32: 4}.get(bpp, 0)
    return {"width": width, "height": height, "channels": channels}


def _is_webp(b: bytes) -> bool:
    return len(b) >= 12 and b[:4] == b"RIFF" and b[8:12] == b"WEBP"


def _webp(b: bytes) -> dict[str, int]:
    kind = b[12:16]
    if kind == b"VP8 " and len(b) >= 30 and b[23:26] == b"\x9d\x01\x2a":
        w, h = struct.unpack_from("<HH", b, 26)
        return {"width": w & 0x3FFF, "height": h & 0x3FFF, "channels": 3}
    if kind == b"VP8L" and len(b) >= 25 and b[20] == 0x2F:
        bits = struct.unpack_from("<I", b, 21)[0]
        alpha = (bits >> 28) & 1
        return {
            "width": (bits & 0x3FFF) + 1,
            "height": ((bits >> 14) & 0x3FFF) + 1,
            "channels": 4 if alpha else 3,
        }
    if kind == b"VP8X" and len(b) >= 30:
        flags = b[20]
        width = int.from_bytes(b[24:27], "little") + 1
        height = int.from_bytes(b[27:30], "little") + 1
        return {"width": width, "height": height, "channels": 4 if flags & 0x10 else 3}
    return {}


def _is_tiff(b: bytes) -> bool:
    return b[:4] in (b"II*\x00", b"MM\x00*")


def _tiff(b: bytes) -> dict[str, int]:
    order = "<" if b[:2] == b"II" else ">"
    if len(b) < 8:
        return {}
    ifd = struct.unpack_from(order + "I", b, 4)[0]
    if ifd + 2 > len(b):
        return {}  # first IFD beyond the head (written after the pixels)
    count = min(struct.unpack_from(order + "H", b, ifd)[0], _TIFF_MAX_ENTRIES)
    fields: dict[str, int] = {}
    for i in range(count):
        at = ifd + 2 + 12 * i
        if at + 12 > len(b):
            break
        tag, typ, n = struct.unpack_from(order + "HHI", b, at)
        if n != 1 or typ not in (_TIFF_SHORT, _TIFF_LONG):
            continue
        # A single SHORT or LONG value sits left-justified in the 4-byte value field.
        value = struct.unpack_from(order + ("H" if typ == _TIFF_SHORT else "I"), b, at + 8)[0]
        if tag == _TIFF_WIDTH:
            fields["width"] = value
        elif tag == _TIFF_HEIGHT:
            fields["height"] = value
        elif tag == _TIFF_SAMPLES:
            fields["channels"] = value
    return fields


_PARSERS: tuple[tuple[Callable[[bytes], bool], str, Callable[[bytes], dict[str, int]]], ...] = (
    (_is_png, "image/png", _png),
    (_is_jpeg, "image/jpeg", _jpeg),
    (_is_gif, "image/gif", _gif),
    (_is_bmp, "image/bmp", _bmp),
    (_is_webp, "image/webp", _webp),
    (_is_tiff, "image/tiff", _tiff),
)
# Every format's magic fixes its first byte: look only at the formats a file's first byte
# allows (ingest sniffs every file; most are one format, or none of these).
_FIRST_BYTES: dict[Callable[[bytes], bool], bytes] = {
    _is_png: b"\x89", _is_jpeg: b"\xff", _is_gif: b"G", _is_bmp: b"B", _is_webp: b"R", _is_tiff: b"IM",
}
_BY_FIRST_BYTE = {
    bytes([c]): tuple(p for p in _PARSERS if c in _FIRST_BYTES[p[0]]) for c in set(b"".join(_FIRST_BYTES.values()))
}
