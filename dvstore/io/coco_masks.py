"""COCO RLE masks: reading their runs, rendering them as the PNG Dataloop stores, and
rendering them in a helper process while the COCO file is read on.

A crowd annotation's mask comes as ``{"size": [h, w], "counts": ...}`` (column-major runs,
as a list or as COCO's compressed string). Dataloop stores a ``binary`` annotation as an
RGBA PNG data URI, white and opaque where the mask is set. ``rle_counts`` checks the runs,
``rle_to_png`` renders them (C-speed slices, no per-pixel Python).

Rendering is most of a COCO reader's time on a file with masks: in a train2017-shaped file,
1 % of the annotations are masks and took ~45 % of the reader's time (2.4 ms a mask of
~330,000 pixels, against ~10 us a polygon). The forked COCO reader (``coco_child``) therefore
hands them to a ``MaskRenderer``: a helper process that renders while the reader parses on,
on the core the storers leave idle once the files are stored. The reader checks each RLE
itself (``mask_size``), so errors are reported in file order as before, and fills the
rendered coordinates into the annotation before it leaves the reader (``settle``).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
from collections import deque
from typing import Any, BinaryIO, Protocol

from dvstore import childproc
from dvstore.codec import encode_canonical
from dvstore.errors import ImportFormatError, StorageError
from dvstore.io.imageinfo import encode_png

PNG_DATA_URI = "data:image/png;base64,"
# A mask is decoded to an RGBA PNG in memory: cap it (8192 x 8192) so that a hostile
# "size" cannot ask for gigabytes.
MAX_MASK_PIXELS = 8192 * 8192
_RLE_FIRST, _RLE_LAST = 48, 48 + 63  # COCO's compressed RLE alphabet: chr(48) .. chr(111)


def rle_counts(rle: Any, where: str = "<rle>", at: str = "segmentation") -> tuple[int, int, list[int]]:
    """Validate a COCO RLE object and return ``(height, width, counts)``.

    Args:
        rle: ``{"size": [height, width], "counts": [int, ...] | str}``; a string is COCO's
            compressed form (pycocotools ``rleToString``).
        where: Names the file in errors.
        at: Names the entry in errors.

    Returns:
        The mask size and its run lengths: column-major, starting with a run of zeros,
        summing to ``height * width``.

    Raises:
        ImportFormatError: A malformed size or counts, or runs that do not cover the mask.
    """
    if not isinstance(rle, dict):
        raise ImportFormatError(f"{where}: {at}: an RLE must be an object")
    size = rle.get("size")
    if not (isinstance(size, list) and len(size) == 2 and all(type(v) is int and v >= 0 for v in size)):
        raise ImportFormatError(f"{where}: {at}: RLE size must be [height, width] non-negative integers")
    height, width = size
    raw = rle.get("counts")
    if isinstance(raw, str):
        counts = _decode_counts(raw, where, at)
    elif isinstance(raw, list) and all(type(v) is int for v in raw):
        counts = raw
    else:
        raise ImportFormatError(f"{where}: {at}: RLE counts must be a list of integers or a string")
    if any(c < 0 for c in counts):
        raise ImportFormatError(f"{where}: {at}: RLE counts must not be negative")
    if sum(counts) != height * width:
        raise ImportFormatError(
            f"{where}: {at}: RLE counts cover {sum(counts)} pixels, the size {height}x{width} has {height * width}"
        )
    return height, width, counts


def _decode_counts(s: str, where: str, at: str) -> list[int]:
    # pycocotools rleFrString: 5 bits per character with a continuation bit (0x20) and a
    # sign bit (0x10) on the last one; from the third count on, each is a delta from the
    # count two before it.
    counts: list[int] = []
    p, n = 0, len(s)
    while p < n:
        x, k, more = 0, 0, True
        while more:
            if p >= n:
                raise ImportFormatError(f"{where}: {at}: RLE counts string ends mid-number")
            c = ord(s[p])
            if not _RLE_FIRST <= c <= _RLE_LAST:
                raise ImportFormatError(f"{where}: {at}: RLE counts string has an invalid character {s[p]!r}")
            c -= _RLE_FIRST
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
            if k > 13:  # more than 64 bits
                raise ImportFormatError(f"{where}: {at}: RLE count out of range")
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def mask_size(rle: Any, where: str = "<rle>", at: str = "segmentation") -> tuple[int, int, list[int]]:
    """``rle_counts``, and a mask that can be rendered: not empty in a dimension, at most
    ``MAX_MASK_PIXELS``."""
    height, width, counts = rle_counts(rle, where, at)
    if height == 0 or width == 0:
        raise ImportFormatError(f"{where}: {at}: RLE mask of size {height}x{width} is empty")
    if height * width > MAX_MASK_PIXELS:
        raise ImportFormatError(f"{where}: {at}: RLE mask of {height}x{width} is larger than {MAX_MASK_PIXELS} pixels")
    return height, width, counts


def rle_to_png(rle: Any, where: str = "<rle>", at: str = "segmentation") -> bytes:
    """Render a COCO RLE as the RGBA PNG Dataloop stores for a ``binary`` annotation.

    Args:
        rle: A COCO RLE object (see ``rle_counts``).
        where: Names the file in errors.
        at: Names the entry in errors.

    Returns:
        PNG bytes: white opaque pixels where the mask is set, transparent elsewhere.

    Raises:
        ImportFormatError: The RLE is malformed, empty in a dimension, or larger than
            ``MAX_MASK_PIXELS``.
    """
    return render_png(*mask_size(rle, where, at))


def render_png(height: int, width: int, counts: list[int]) -> bytes:
    """``rle_to_png`` of runs ``mask_size`` accepted."""
    # COCO masks are column-major: index = x * height + y. Build that, then read rows with
    # a strided slice (C speed, no per-pixel Python loop).
    flat = bytearray(height * width)
    pos, value = 0, 0
    for run in counts:
        if value:
            flat[pos : pos + run] = b"\xff" * run
        pos += run
        value ^= 1

    def rows() -> Any:
        out, empty = bytearray(4 * width), bytes(4 * width)
        for y in range(height):
            row = flat[y::height]
            if 255 not in row:  # most rows of most masks
                yield empty
                continue
            for ch in range(4):
                out[ch::4] = row
            yield out  # (copied by encode_png before the next row)

    return encode_png(width, height, rows(), channels=4, runs=True)


def png_uri(height: int, width: int, counts: list[int]) -> str:
    """The coordinates of a ``binary`` annotation: its PNG as a data URI."""
    return PNG_DATA_URI + base64.b64encode(render_png(height, width, counts)).decode("ascii")


class Pending(Protocol):
    """An annotation whose coordinates are not there yet (``coco.EncodedAnnotation``)."""

    def fill(self, coordinates: bytes) -> None:
        """Put the encoded coordinates in."""


IN_FLIGHT = 512 << 10  # bytes of masks sent to the helper and not yet answered, at most
_PIPE_SIZE = 1 << 20


class MaskRenderer:
    """Renders masks in a helper process, in the order they are given.

    ``submit`` sends a mask and returns at once; the rendered coordinates are filled into
    the annotation by a later ``submit`` (which takes the answers that are there, so the
    helper never waits on a full pipe), or by ``settle``, which waits for all of them. The
    helper is started by the first mask: a file without masks costs nothing.

    Deadlock-free by construction: at most ``IN_FLIGHT`` bytes of masks are sent and not
    yet answered, and never more than half of what the pipe holds, so sending never blocks while answers are owed,
    and a mask bigger than that is sent only when nothing is owed (the helper is then
    reading).
    """

    def __init__(self) -> None:
        self._child: childproc.Child | None = None
        self._owed: deque[tuple[Pending, int]] = deque()
        self._bytes = 0  # of the masks sent and not answered
        self._bound = 0

    def submit(self, target: Pending, height: int, width: int, counts: list[int]) -> None:
        """Render this mask (checked by ``mask_size``) into ``target``."""
        if self._child is None:
            self._start()
        child = self._child
        assert child is not None and child.inp is not None
        job = encode_canonical([height, width, counts])
        while self._owed and (self._bytes + len(job) + 4 > self._bound or child.ready()):
            self._take()
        try:
            childproc.write_frame_bytes(child.inp, job)
            child.inp.flush()
        except BrokenPipeError:
            raise StorageError("the mask helper ended early") from None
        self._owed.append((target, len(job) + 4))
        self._bytes += len(job) + 4

    def settle(self) -> None:
        """Wait for every mask sent, and fill it in."""
        while self._owed:
            self._take()

    def collect(self) -> None:
        """Fill in the masks rendered so far, without waiting for the others."""
        child = self._child
        while self._owed and child is not None and child.ready():
            self._take()

    def close(self) -> None:
        """Stop the helper (after ``settle``, it has nothing left to do)."""
        if self._child is not None:
            self._child.close()
            self._child = None
        self._owed.clear()

    def _start(self) -> None:
        self._child = child = childproc.Child(_serve, talk_back=True)
        assert child.inp is not None and child.out is not None
        try:
            # Pipes of 1 MiB where Linux allows them (up to /proc/sys/fs/pipe-max-size, 1 MiB
            # by default): with 64 KiB, ~15 masks were in flight, and the reader and the
            # helper, which take turns producing and rendering masks at similar rates, kept
            # waiting on each other (a 118,287-image add 40.1 -> 38.6 s, 2 interleaved runs
            # each; see docs/design.md).
            for f in (child.inp, child.out):
                with contextlib.suppress(OSError):
                    fcntl.fcntl(f.fileno(), fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
            capacity = fcntl.fcntl(child.inp.fileno(), fcntl.F_GETPIPE_SZ)
        except (OSError, AttributeError):  # not Linux: POSIX promises 512 bytes at once
            capacity = 4096
        self._bound = min(IN_FLIGHT, capacity // 2)

    def _take(self) -> None:
        child = self._child
        assert child is not None and child.out is not None
        frame = childproc.read_frame(child.out, lambda: StorageError("the mask helper's answer was cut short"))
        if frame is None:
            raise StorageError("the mask helper ended without an answer")
        if type(frame) is list:
            childproc.raise_error(frame, StorageError)
        target, size = self._owed.popleft()
        self._bytes -= size
        target.fill(encode_canonical(frame))


def _serve(inp: BinaryIO | None, out: BinaryIO) -> None:
    """The helper: each mask it reads, rendered as a data URI, until its input ends."""
    assert inp is not None
    while (job := childproc.read_frame(inp, lambda: StorageError("a mask was cut short"))) is not None:
        height, width, counts = job
        childproc.write_frame(out, png_uri(height, width, counts))
        out.flush()
