"""Header sniffing on tiny images built here byte by byte, and the PNG encoder."""

from __future__ import annotations

import struct
import zlib

import pytest

from dvstore.io.imageinfo import HEAD_BYTES, OCTET_STREAM, encode_png, sniff

# --- builders: independent of the code under test ---------------------------------------


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def make_png(width: int, height: int, color_type: int = 2) -> bytes:
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[color_type]
    raw = b"".join(b"\x00" + bytes(width * channels) for _ in range(height))
    out = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0))
    if color_type == 3:
        out += png_chunk(b"PLTE", bytes(3))
    return out + png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b"")


def segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def make_jpeg(width: int, height: int, *, sof: int = 0xC0, components: int = 3, app1: int = 0, fill: int = 0) -> bytes:
    app0 = segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
    exif = b""
    remaining = app1
    while remaining > 0:  # big EXIF/ICC blocks, split into max-size segments
        n = min(remaining, 65533)
        exif += segment(0xE1, b"\x00" * n)
        remaining -= n
    dqt = segment(0xDB, b"\x00" + bytes(64))
    comps = b"".join(bytes([i + 1, 0x11, 0]) for i in range(components))
    frame = segment(sof, struct.pack(">BHHB", 8, height, width, components) + comps)
    dht = segment(0xC4, b"\x00" + bytes(16))
    sos = segment(0xDA, bytes([components]) + b"".join(bytes([i + 1, 0]) for i in range(components)) + b"\x00\x3f\x00")
    return b"\xff\xd8" + app0 + exif + dqt + b"\xff" * fill + frame + dht + sos + b"\x12\x34\x56" + b"\xff\xd9"


def make_gif(width: int, height: int, version: bytes = b"89a") -> bytes:
    return b"GIF" + version + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + bytes(6) + b";"


def make_bmp(width: int, height: int, bpp: int = 24, core: bool = False) -> bytes:
    if core:
        dib = struct.pack("<IHHHH", 12, width, height, 1, bpp)
    else:
        dib = struct.pack("<IiiHHIIiiII", 40, width, height, 1, bpp, 0, 0, 2835, 2835, 0, 0)
    header = b"BM" + struct.pack("<IHHI", 14 + len(dib), 0, 0, 14 + len(dib))
    return header + dib


def riff(kind: bytes, payload: bytes) -> bytes:
    chunk = kind + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def make_webp_vp8(width: int, height: int) -> bytes:
    return riff(b"VP8 ", b"\x10\x02\x00" + b"\x9d\x01\x2a" + struct.pack("<HH", width, height) + bytes(8))


def make_webp_vp8l(width: int, height: int, alpha: bool) -> bytes:
    bits = (width - 1) | ((height - 1) << 14) | (int(alpha) << 28)
    return riff(b"VP8L", b"\x2f" + struct.pack("<I", bits) + bytes(8))


def make_webp_vp8x(width: int, height: int, alpha: bool) -> bytes:
    flags = 0x10 if alpha else 0
    payload = bytes([flags, 0, 0, 0]) + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return riff(b"VP8X", payload)


def make_tiff(width: int, height: int, *, big_endian: bool = False, long_dims: bool = False, samples: int = 3) -> bytes:
    o = ">" if big_endian else "<"
    head = (b"MM\x00*" if big_endian else b"II*\x00") + struct.pack(o + "I", 8)

    def entry(tag: int, value: int, long: bool) -> bytes:
        if long:
            return struct.pack(o + "HHII", tag, 4, 1, value)
        return struct.pack(o + "HHIHH", tag, 3, 1, value, 0)

    entries = [
        entry(256, width, long_dims),
        entry(257, height, long_dims),
        entry(258, 8, False),  # BitsPerSample: ignored
        entry(277, samples, False),
    ]
    return head + struct.pack(o + "H", len(entries)) + b"".join(entries) + struct.pack(o + "I", 0)


# --- sniff ----------------------------------------------------------------------------


def test_head_bytes_is_64_kib() -> None:
    assert HEAD_BYTES == 64 * 1024


@pytest.mark.parametrize(
    ("color_type", "channels"),
    [(0, 1), (2, 3), (3, 3), (4, 2), (6, 4)],
)
def test_png(color_type: int, channels: int) -> None:
    assert sniff(make_png(7, 5, color_type), "x.png") == ("image/png", {"width": 7, "height": 5, "channels": channels})


def test_png_magic_wins_over_extension() -> None:
    assert sniff(make_png(3, 2), "photo.jpg")[0] == "image/png"


def test_png_truncated_header_has_no_size() -> None:
    assert sniff(make_png(3, 2)[:20], "x.png") == ("image/png", {})


def test_png_zero_size_is_no_size() -> None:
    assert sniff(make_png(0, 4)[:40], "x.png") == ("image/png", {})


@pytest.mark.parametrize("sof", [0xC0, 0xC1, 0xC2, 0xC3, 0xC9, 0xCF])
def test_jpeg_frame_markers(sof: int) -> None:
    assert sniff(make_jpeg(640, 480, sof=sof), "a.jpg") == ("image/jpeg", {"width": 640, "height": 480, "channels": 3})


def test_jpeg_greyscale_and_fill_bytes() -> None:
    data = make_jpeg(17, 9, components=1, fill=5)
    assert sniff(data, "a.jpeg") == ("image/jpeg", {"width": 17, "height": 9, "channels": 1})


def test_jpeg_sof_after_large_exif_within_head() -> None:
    data = make_jpeg(1920, 1080, app1=40_000)
    assert sniff(data[:HEAD_BYTES], "a.jpg")[1] == {"width": 1920, "height": 1080, "channels": 3}


def test_jpeg_sof_beyond_head_returns_no_size() -> None:
    data = make_jpeg(1920, 1080, app1=200_000)
    assert sniff(data[:HEAD_BYTES], "a.jpg") == ("image/jpeg", {})
    assert sniff(data, "a.jpg")[1]["width"] == 1920  # the full file does have it


def test_jpeg_without_frame_before_scan() -> None:
    data = b"\xff\xd8" + segment(0xE0, b"JFIF\x00") + segment(0xDA, b"\x01\x01\x00\x00\x3f\x00") + b"\xff\xd9"
    assert sniff(data, "a.jpg") == ("image/jpeg", {})


def test_jpeg_dnl_zero_height_is_no_size() -> None:
    assert sniff(make_jpeg(100, 0), "a.jpg") == ("image/jpeg", {})


@pytest.mark.parametrize("version", [b"87a", b"89a"])
def test_gif(version: bytes) -> None:
    assert sniff(make_gif(320, 200, version), "a.gif") == ("image/gif", {"width": 320, "height": 200})


@pytest.mark.parametrize(("bpp", "channels"), [(24, 3), (32, 4)])
def test_bmp(bpp: int, channels: int) -> None:
    assert sniff(make_bmp(33, 21, bpp), "a.bmp") == ("image/bmp", {"width": 33, "height": 21, "channels": channels})


def test_bmp_top_down_and_core_header() -> None:
    assert sniff(make_bmp(10, -12), "a.bmp")[1] == {"width": 10, "height": 12, "channels": 3}
    assert sniff(make_bmp(5, 6, core=True), "a.bmp")[1] == {"width": 5, "height": 6, "channels": 3}


def test_bmp_palette_has_no_channels() -> None:
    assert sniff(make_bmp(5, 6, bpp=8), "a.bmp")[1] == {"width": 5, "height": 6}


def test_text_starting_with_bm_is_not_bmp() -> None:
    assert sniff(b"BM is a text file, not a bitmap", "notes.txt") == ("text/plain", {})


def test_webp_variants() -> None:
    assert sniff(make_webp_vp8(400, 300), "a.webp") == ("image/webp", {"width": 400, "height": 300, "channels": 3})
    assert sniff(make_webp_vp8l(5, 9, True), "a.webp") == ("image/webp", {"width": 5, "height": 9, "channels": 4})
    assert sniff(make_webp_vp8l(5, 9, False), "a.webp")[1]["channels"] == 3
    assert sniff(make_webp_vp8x(4000, 3000, True), "a.webp") == (
        "image/webp",
        {"width": 4000, "height": 3000, "channels": 4},
    )


@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("long_dims", [False, True])
def test_tiff(big_endian: bool, long_dims: bool) -> None:
    data = make_tiff(70000 if long_dims else 1234, 567, big_endian=big_endian, long_dims=long_dims)
    assert sniff(data, "a.tif") == (
        "image/tiff",
        {"width": 70000 if long_dims else 1234, "height": 567, "channels": 3},
    )


def test_tiff_ifd_beyond_head() -> None:
    data = b"II*\x00" + struct.pack("<I", 10_000_000) + bytes(16)
    assert sniff(data, "a.tif") == ("image/tiff", {})


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("clip.mp4", "video/mp4"),
        ("notes.txt", "text/plain"),
        ("data.json", "application/json"),
        ("photo.JPG", "image/jpeg"),
        ("no_extension", OCTET_STREAM),
        ("weird.zzzunknown", OCTET_STREAM),
        ("", OCTET_STREAM),
    ],
)
def test_extension_fallback(name: str, expected: str) -> None:
    assert sniff(b"\x00\x01garbage", name) == (expected, {})


def test_empty_head() -> None:
    assert sniff(b"", "a.png") == ("image/png", {})


@pytest.mark.parametrize(
    "data",
    [
        make_png(3, 2),
        make_jpeg(8, 8),
        make_gif(1, 1),
        make_bmp(2, 2),
        make_webp_vp8(4, 4),
        make_webp_vp8l(4, 4, False),
        make_webp_vp8x(4, 4, False),
        make_tiff(4, 4),
    ],
)
def test_every_truncation_is_safe(data: bytes) -> None:
    for n in range(len(data) + 1):
        mimetype, fields = sniff(data[:n], "f.bin")
        assert isinstance(mimetype, str)
        assert set(fields) <= {"width", "height", "channels"}


def test_accepts_memoryview_and_bytearray() -> None:
    data = make_png(3, 2)
    assert sniff(memoryview(data), "x")[1]["width"] == 3  # type: ignore[arg-type]
    assert sniff(bytearray(data), "x")[1]["height"] == 2  # type: ignore[arg-type]


# --- encode_png -----------------------------------------------------------------------


def decode_png(data: bytes) -> tuple[int, int, int, bytes]:
    """Minimal PNG reader for filter-0 images: (width, height, color_type, raw pixel rows)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, ihdr = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack_from(">I", data, pos + 8 + length)
        assert crc == zlib.crc32(kind + body)
        if kind == b"IHDR":
            ihdr = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, color_type = struct.unpack(">IIBB", ihdr[:10])
    assert depth == 8
    raw = zlib.decompress(idat)
    channels = {0: 1, 4: 2, 2: 3, 6: 4}[color_type]
    stride = width * channels + 1
    assert len(raw) == stride * height
    assert all(raw[i * stride] == 0 for i in range(height))
    return width, height, color_type, b"".join(raw[i * stride + 1 : (i + 1) * stride] for i in range(height))


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_encode_png_round_trip(channels: int) -> None:
    width, height = 5, 3
    rows = [bytes((x * 7 + y * 13 + c) % 256 for x in range(width) for c in range(channels)) for y in range(height)]
    png = encode_png(width, height, rows, channels=channels)
    w, h, _, pixels = decode_png(png)
    assert (w, h, pixels) == (width, height, b"".join(rows))
    assert sniff(png, "m.png") == ("image/png", {"width": 5, "height": 3, "channels": channels})


def test_encode_png_is_deterministic() -> None:
    rows = [bytes(range(12))] * 4
    assert encode_png(4, 4, rows, channels=3) == encode_png(4, 4, iter(rows), channels=3)


@pytest.mark.parametrize(
    ("width", "height", "rows", "channels"),
    [
        (0, 1, [b""], 3),
        (1, 0, [], 3),
        (2, 1, [b"\x00" * 6], 5),
        (2, 1, [b"\x00" * 5], 3),
        (2, 2, [b"\x00" * 6], 3),
    ],
)
def test_encode_png_rejects_bad_input(width: int, height: int, rows: list[bytes], channels: int) -> None:
    with pytest.raises(ValueError):
        encode_png(width, height, rows, channels=channels)


def test_first_byte_dispatch_finds_what_a_scan_of_every_format_finds() -> None:
    # sniff only tries the formats a head's first byte allows: over every first byte, with
    # the heads of each format behind it, that must pick what trying all formats picks.
    from dvstore.io import imageinfo

    heads = [make_png(3, 2), make_jpeg(8, 8), make_gif(1, 1), make_bmp(2, 2), make_webp_vp8(4, 4),
             make_webp_vp8x(4, 4, False), make_tiff(4, 4), make_tiff(4, 4, big_endian=True), b"", b"text"]
    for head in heads:
        for first in range(256):
            for b in (head, bytes([first]) + head[1:]):
                scan = next((p[1] for p in imageinfo._PARSERS if p[0](b)), None)
                chosen = next((p[1] for p in imageinfo._BY_FIRST_BYTE.get(b[:1], ()) if p[0](b)), None)
                assert chosen == scan, (b[:12], first)
    assert sniff(make_tiff(4, 4, big_endian=True), "f.bin")[0] == "image/tiff"
