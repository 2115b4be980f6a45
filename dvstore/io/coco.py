"""COCO instances files: reading one into labels and per-file annotations in the stored shape.

This module owns the translation from a COCO ``instances`` JSON (``images``, ``annotations``,
``categories``) to dvstore annotations, which follow Dataloop's annotation JSON:

* ``bbox [x, y, w, h]`` with no usable segmentation -> ``type "box"``, coordinates
  ``[{"x": x, "y": y, "z": 0}, {"x": x + w, "y": y + h, "z": 0}]`` (top-left, bottom-right).
* polygon segmentation ``[[x1, y1, x2, y2, ...], ...]`` -> ``type "segment"``, coordinates
  ``[[{"x", "y", "z": 0}, ...], ...]``: one point list per COCO polygon part, in order.
  COCO's parts are disjoint pieces of one object (not holes). dtlpy's ``Polygon`` reads only
  the first list, so a Dataloop tool shows the first part; the rest are kept, not dropped.
* RLE segmentation (``{"size": [h, w], "counts": [...] | "..."}``, usually ``iscrowd: 1``)
  -> ``type "binary"``, coordinates a Dataloop mask: ``"data:image/png;base64,..."``, an
  RGBA PNG of the image size, white and opaque where the mask is set (what dtlpy's
  ``Segmentation`` writes and reads). The original RLE stays in ``metadata.system.coco``.

Nothing in the COCO record is lost: ``metadata.system.coco`` keeps every field of the COCO
annotation (``id``, ``iscrowd``, ``area``, ``bbox``, ``category_id``, ``keypoints``, tool
extras...) except ``image_id`` (the item says it) and a polygon ``segmentation`` (the
coordinates hold it exactly, numbers unchanged). ``attributes`` is ``{}``.

Labels are category names; ``supercategory`` does not enter the label (a COCO supercategory
is a grouping, not an ontology parent that annotations use). ``CocoImport.categories`` keeps
the category records, supercategory included, for whoever builds the recipe.

It must not read images, touch the store, or accept a ``file_name`` that could leave the
directory being added. Every malformed input is an ``ImportFormatError`` naming the file and
the entry; no other exception escapes.
"""

from __future__ import annotations

import json
import os
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from dvstore.codec import array_header, decode, encode_canonical, map_header, sort_maps
from dvstore.errors import ImportFormatError, InvalidNameError
from dvstore.io.coco_masks import PNG_DATA_URI, MaskRenderer, mask_size, png_uri, rle_counts, rle_to_png
from dvstore.io.dataloop import (
    JSON_CHUNK,
    MAX_JSON_DEPTH,
    JsonChunks,
    check_storable,
    check_storable_part,
    reject_constant,
)
from dvstore.model import new_annotation_id, normalize_filename

__all__ = ["PNG_DATA_URI", "CocoImport", "EncodedAnnotation", "label_part", "load_coco", "parse_coco", "rle_counts",
           "rle_to_png"]


@dataclass(frozen=True, slots=True)
class CocoImport:
    """What a COCO file says, ready to join with the files being added.

    Attributes:
        labels: Category names in category-id order, each once.
        by_file: ``file_name`` (relative POSIX path, as written in the file) -> annotations
            in the stored shape (dicts, or ``EncodedAnnotation`` from ``load_coco(...,
            encoded=True)``); an image without annotations maps to ``[]``.
        images: ``file_name`` -> the COCO image record (``id``, ``width``, ``height``, ...);
            empty when ``encoded``.
        categories: The COCO category records in id order (``id``, ``name``,
            ``supercategory``, ``keypoints``...), for building a recipe.
        image_count: How many images the file has (also when a spill holds them).
    """

    labels: list[str]
    by_file: dict[str, list[Any]]
    images: dict[str, dict[str, Any]] = field(default_factory=dict)
    categories: list[dict[str, Any]] = field(default_factory=list)
    image_count: int = field(default=0, compare=False)  # derived: not part of what the file says


class EncodedAnnotation:
    """An annotation in stored form, encoded but for its id (given once the item is known).

    Encoded as it is read, with holes for the id and the label (the categories may come
    after the annotations in the file): about a fifth of the memory of the annotation as
    Python objects, which matters when an import holds hundreds of thousands of them until
    the items exist.
    """

    __slots__ = ("coco_id", "label", "body", "cut")

    def __init__(self, coco_id: Any, category: Any, head: bytes, tail: bytes) -> None:
        self.coco_id = coco_id  # the COCO annotation id (int or str)
        self.label = category  # the category id until the categories are known, then the label
        self.body = head + tail
        self.cut = len(head)

    def split(self, part: bytes | None = None) -> tuple[bytes, bytes]:
        """``(head, tail)``: the canonical encoding of the annotation with id ``i`` is
        ``head + encode_canonical(i) + tail`` (once the label is known; ``part`` is
        ``label_part(label)`` when the caller has it already)."""
        body, cut = self.body, self.cut
        return body[:cut], (part or label_part(self.label)) + body[cut:]

    @property
    def pending(self) -> bool:
        """Are its coordinates still being rendered (a mask given to a ``MaskRenderer``)?"""
        return self.cut == _PENDING_CUT

    def fill(self, coordinates: bytes) -> None:
        """Put in the encoded coordinates of an annotation made without them (a mask being
        rendered: ``coco_masks.MaskRenderer``)."""
        at = len(_HEAD)
        self.body = self.body[:at] + coordinates + self.body[at:]
        self.cut += len(coordinates)

    def encode(self, annotation_id: str) -> bytes:
        """The canonical encoding of the annotation with ``annotation_id`` as its id."""
        head, tail = self.split()
        return head + encode_canonical(annotation_id) + tail


_LABEL_KEY = encode_canonical("label")


def label_part(label: str) -> bytes:
    """What ``EncodedAnnotation.split``'s tail starts with for ``label``: the rest is the
    annotation's body from its cut."""
    return _LABEL_KEY + encode_canonical(label)

# The stored annotation's keys in canonical order: attributes, coordinates, id, label,
# metadata, type. The head runs up to the id's value, the tail from "metadata" on; both
# are built from these constant pieces around the encoded coordinates and COCO record.
_HEAD = map_header(6) + encode_canonical("attributes") + encode_canonical({}) + encode_canonical("coordinates")
_ID_KEY = encode_canonical("id")
_PENDING_CUT = len(_HEAD) + len(_ID_KEY)  # the cut of an annotation made without coordinates
_TAIL_COCO = (encode_canonical("metadata") + map_header(2) + encode_canonical("system") + map_header(1)
              + encode_canonical("coco"))
_TAIL_TYPE = {t: encode_canonical("user") + encode_canonical({}) + encode_canonical("type") + encode_canonical(t)
              for t in ("binary", "box", "segment")}


def load_coco(path: str | os.PathLike[str], *, encoded: bool = False, chunk: int = JSON_CHUNK,
              spill: Spiller | None = None, masks: MaskRenderer | None = None) -> CocoImport:
    """Read a COCO instances file.

    The file is read a chunk at a time as a stream of records: each image, annotation and
    category is parsed, checked and converted on its own, so memory follows the converted
    result, not the file (about a tenth of it with ``encoded``), and a ``spill`` bounds
    even that.

    Args:
        path: The COCO JSON file. Its ``file_name`` values are relative to the directory
            being added (CLI.md), not to the file itself.
        encoded: Give annotations as ``EncodedAnnotation`` and no image records (bulk
            ingest).
        chunk: Bytes of the file read at a time.
        spill: Where images and annotations go once too many are held (``encoded`` only;
            ``coco_spill``). If it took any, the result's ``by_file`` is empty: the
            spill gives them.
        masks: Renders RLE masks beside the reading (``encoded`` only; the caller
            closes it).

    Returns:
        The labels, per-file annotations, image and category records.

    Raises:
        ImportFormatError: The file is not JSON or not a COCO instances document: missing
            or mistyped keys, duplicate image or category ids or file names, an annotation
            naming an unknown image or category, an absolute or escaping ``file_name``, a
            malformed box, polygon or RLE. The message names the file and the entry.
    """
    where = str(path)
    b = _Builder(where, keep_images=not encoded, spill=spill if encoded else None, masks=masks if encoded else None)
    with JsonChunks(path, chunk) as src:
        _stream(src, where, b)
    if b.bad_references():
        # Read again, checking each annotation against what the whole file defines, to
        # name the first bad one in file order (rare: not worth an index per annotation).
        with JsonChunks(path, chunk) as src:
            _stream(src, where, _Builder(where, keep_images=False, known=b))
    return b.finish(encoded)


def parse_coco(doc: Any, where: str = "<coco>") -> CocoImport:
    """Like ``load_coco``, for a document already parsed; ``where`` names it in errors."""
    check_storable(doc, where)
    if not isinstance(doc, dict):
        raise ImportFormatError(f"{where}: a COCO file must be a JSON object")
    b = _Builder(where, keep_images=True)
    for key, value in doc.items():
        b.top(key, value)
    if b.bad_references():
        checker = _Builder(where, keep_images=False, known=b)
        for key, value in doc.items():
            checker.top(key, value)
    return b.finish(False)


_WS = re.compile(r"[ \t\n\r]*")
_STREAMED = ("images", "annotations", "categories")
# A decode that ends this close to the end of the text read so far may have been cut by it
# (a number's digits, "-Infinity"): read more and decode again.
_MARGIN = 16
# Runs of list elements are parsed by orjson this much text at a time (``_stream``), and
# only where at least _BATCH_MIN of text is in the window.
_BATCH = 1 << 20
_BATCH_MIN = 64 << 10
# What follows the "}" that ends a list element when another element (an object) follows.
_NEXT_OBJECT = re.compile(r"[ \t\n\r]*,[ \t\n\r]*(?=\{)")
_fast_loads: Callable[[str], Any] | None
try:
    import orjson

    _fast_loads = orjson.loads
except ImportError:  # pragma: no cover - a platform without its wheel: every element parsed by json
    _fast_loads = None


def _stream(src: JsonChunks, where: str, b: _Builder) -> None:
    """Feed the top-level object of ``src``'s text to ``b``, one list element at a time.

    The text is a window on the file: ``text`` holds what is read and not yet consumed,
    ``more`` drops what is consumed and reads on. A decode that fails or ends near the end
    of the window is retried with more text, unless the file has ended: only then is it an
    error. Errors' line and column count what was dropped.

    This loop runs once per image and per annotation, so it avoids per-record work that is
    only needed on bad input: a record's nesting depth is counted only when its text holds
    enough brackets to be too deep, and its JSON path is formatted only for an error.
    """
    dec = json.JSONDecoder(parse_constant=reject_constant)
    decode_at = dec.raw_decode
    fast_loads, next_object = _fast_loads, _NEXT_OBJECT.match
    match = _WS.match
    blank = " \t\n\r"
    text = ""
    size = 0  # len(text)
    eof = False
    suspect = False
    refused = -1  # where the last run batch() could not parse ends: one element at a time to there
    lines = 0  # newlines dropped
    column = 0  # characters dropped since the last of them

    def more(i: int) -> int:  # drop text[:i], read on; i's new position (0)
        nonlocal text, size, eof, suspect, refused, lines, column
        refused -= i
        n = text.count("\n", 0, i)
        if n:
            lines += n
            column = i - text.rfind("\n", 0, i) - 1
        else:
            column += i
        # At least as much again as is kept: a long value is read in O(its length).
        text = text[i:] + src.read(max(src.chunk, size - i))
        size, eof, suspect = len(text), src.eof, src.suspect
        return 0

    def ws(i: int) -> int:  # the first non-blank position at or after i (size at the end)
        m = match(text, i)
        assert m is not None  # the pattern matches the empty string
        i = m.end()
        while i == size and not eof:
            more(i)  # (before reading ``text`` again: it is another string now)
            m = match(text, 0)
            assert m is not None
            i = m.end()
        return i

    def raw(i: int) -> tuple[Any, int, int]:  # the JSON value at i, read on until whole; its span
        while True:
            try:
                v, end = decode_at(text, i)
            except json.JSONDecodeError as e:
                # Cut by the window: the parser fails at its end, or at the start of a
                # string it could not find the end of.
                if eof or (e.pos < size - _MARGIN and not e.msg.startswith("Unterminated string")):
                    raise
                i = more(i)
                continue
            if end + _MARGIN <= size or eof:
                return v, i, end
            i = more(i)

    def value(i: int, depth: int, key: str, n: int | None) -> tuple[Any, int]:
        try:  # (raw's loop inlined for the usual case: a whole value well inside the window)
            v, end = decode_at(text, i)
            whole = end + _MARGIN <= size or eof
        except json.JSONDecodeError:
            whole = False
        if not whole:
            v, i, end = raw(i)
        # Over-counting (brackets inside strings) only costs the full check.
        if suspect or text.count("[", i, end) + text.count("{", i, end) > MAX_JSON_DEPTH - depth:
            at = "$" if not key else f"$.{key}" if n is None else f"$.{key}[{n}]"
            check_storable_part(v, where, at, depth, suspect)
        return v, end

    def batch(i: int) -> tuple[list[Any], int] | None:
        # The list elements from i (an element's start) to the end of an object well inside
        # the window that another object follows, parsed at once, and where that one starts;
        # None where there is no such end or orjson refuses the run (the caller then parses
        # on one element at a time, which gives json's own errors and positions). Only for
        # text that holds nothing check_storable refuses (``suspect``: no integer beyond 64
        # bits, 3-digit exponent or surrogate escape), where orjson and json agree.
        # A "}" inside a string or a nested object is no element's end: "[" + text + "]"
        # then does not parse, so no run parses to anything but whole elements.
        nonlocal refused
        hi = min(i + _BATCH, size if eof else size - _MARGIN)
        if fast_loads is None or suspect or hi - i < _BATCH_MIN or i < refused:
            return None
        refused = hi  # unless a run parses below
        end = text.rfind("}", i, hi)
        while end > i:
            m = next_object(text, end + 1)
            if m is not None:
                try:
                    run = fast_loads("[" + text[i:end + 1] + "]")
                except ValueError:
                    return None
                refused = -1
                return run, m.end()
            end = text.rfind("}", i, end)
        return None

    def position(doc: str, pos: int) -> tuple[int, int]:  # (line, column) of doc[pos], 1-based
        n = doc.count("\n", 0, pos)
        return lines + n + 1, pos - doc.rfind("\n", 0, pos) if n else column + pos + 1

    def expect(i: int, chars: str, what: str) -> str:
        c = text[i:i + 1]
        if not c or c not in chars:
            raise json.JSONDecodeError(what, text, i)
        return c

    try:
        i = ws(more(0))
        if text[i:i + 1] != "{":
            value(i, 0, "", None)  # a JSON error if it is one, else:
            raise ImportFormatError(f"{where}: a COCO file must be a JSON object")
        i = ws(i + 1)
        seen: set[str] = set()
        if text[i:i + 1] == "}":
            i += 1
        else:
            while True:
                expect(i, '"', "Expecting property name enclosed in double quotes")
                key, _, i = raw(i)
                i = ws(i)
                expect(i, ":", "Expecting ':' delimiter")
                i = ws(i + 1)
                if key in seen and key in _STREAMED:
                    raise ImportFormatError(f"{where}: {key!r} appears twice")
                seen.add(key)
                if key in _STREAMED and text[i:i + 1] == "[":
                    add = b.adder(key)
                    shallow = b.shallow_adder(key)
                    i = ws(i + 1)
                    n = 0
                    refused = -1
                    if text[i:i + 1] == "]":
                        i += 1
                    else:
                        while True:
                            run = batch(i)
                            if run is not None:
                                values, i = run
                                for v in values:
                                    # The depth check value() makes, unless the element is
                                    # one whose shape was checked (a plain annotation).
                                    if not shallow(v):
                                        check_storable_part(v, where, f"$.{key}[{n}]", 2, False)
                                        add(n, v)
                                    n += 1
                                continue
                            v, i = value(i, 2, key, n)
                            add(n, v)
                            n += 1
                            c = text[i:i + 1]
                            if c and c in blank:
                                i = ws(i)
                                c = text[i:i + 1]
                            if c == ",":
                                i += 1
                                if text[i:i + 1] in blank:  # "" (the end) too: ws reads on
                                    i = ws(i)
                            elif c == "]":
                                i += 1
                                break
                            else:
                                raise json.JSONDecodeError("Expecting ',' delimiter", text, i)
                    b.streamed(key)
                else:
                    v, i = value(i, 1, key, None)
                    b.top(key, v)
                i = ws(i)
                if expect(i, ",}", "Expecting ',' delimiter") == "}":
                    i += 1
                    break
                i = ws(i + 1)
        line, col = position(text, i)  # (ws may drop the text up to i)
        if ws(i) != size:
            raise ImportFormatError(f"{where}: not valid JSON: Extra data at line {line} column {col}")
    except json.JSONDecodeError as e:
        line, col = position(e.doc, e.pos)  # e.doc is the window it was found in
        raise ImportFormatError(f"{where}: not valid JSON: {e.msg} at line {line} column {col}") from None
    except RecursionError:
        raise ImportFormatError(f"{where}: JSON nested too deeply") from None
    except ValueError as e:  # from the parser's hooks
        raise ImportFormatError(f"{where}: {e}") from None


class Spiller(Protocol):
    """Where a ``_Builder`` moves its images and annotations once it holds ``limit`` of them
    (``coco_spill.CocoSpill``). Once ``active`` (it took some), the builder's ``file_of``,
    ``images`` (``file_name`` -> image index in the file) and ``by_image`` hold only what
    came since (and the annotations of images with a mask still being rendered, which a
    take leaves), and the checks that look for an earlier image ask the spill too."""

    limit: int
    active: bool

    def take(self, b: _Builder) -> None:
        """Move what ``b`` holds (and empty it)."""

    def has_image(self, image_id: Any) -> bool:
        """Did it take an image with this id?"""

    def has_file_name(self, name: str) -> bool:
        """Did it take an image with this ``file_name``?"""

    def bad_references(self, b: _Builder) -> bool:
        """``_Builder.bad_references`` for what it took, once it took all."""


class _Builder:
    """Checks and converts COCO records in whatever order the file has them."""

    def __init__(self, where: str, *, keep_images: bool, known: _Builder | None = None,
                 spill: Spiller | None = None, masks: MaskRenderer | None = None) -> None:
        self.where = where
        self.masks = masks  # renders RLE masks in a helper; None: here, as they are read
        self.keep_images = keep_images
        self.known = known  # a builder that read the whole file: check annotations against it
        self.spill = spill
        self.held = 0  # images and annotations in memory, counted only for a spill
        self.image_count = 0
        self.present: set[str] = set()
        self.categories: dict[Any, dict[str, Any]] = {}
        self.images: dict[str, Any] = {}
        self.file_of: dict[Any, str] = {}
        self.by_image: dict[Any, list[EncodedAnnotation]] = {}

    def adder(self, key: str) -> Any:
        return {"images": self.image, "annotations": self.annotation, "categories": self.category}[key]

    def shallow_adder(self, key: str) -> Callable[[Any], bool]:
        """For records parsed without a depth check (``_stream``'s runs): adds a record
        whose whole shape it checks (so it cannot be too deep) and says True; False for
        any other, which the caller checks and gives to ``adder``."""
        return self._plain_annotation if key == "annotations" else _no_record

    def _plain_annotation(self, ann: Any) -> bool:
        return type(ann) is dict and ann.keys() == _PLAIN_KEYS and self.known is None and self._plain(ann)

    def streamed(self, key: str) -> None:
        """The list under ``key`` was given element by element."""
        self.present.add(key)

    def top(self, key: str, value: Any) -> None:
        """A top-level entry."""
        if key not in _STREAMED:
            return
        self.present.add(key)
        if not isinstance(value, list):
            raise ImportFormatError(f"{self.where}: {key!r} must be a list")
        add = self.adder(key)
        for n, v in enumerate(value):
            add(n, v)

    def category(self, i: int, cat: Any) -> None:
        where, at = self.where, f"categories[{i}]"
        if not isinstance(cat, dict):
            raise ImportFormatError(f"{where}: {at}: a category must be an object")
        cid = _coco_id(cat, "id", where, at)
        name = cat.get("name")
        if type(name) is not str or not name.strip():
            raise ImportFormatError(f"{where}: {at} (id {cid!r}): name must be a non-empty string")
        sup = cat.get("supercategory")
        if sup is not None and type(sup) is not str:
            raise ImportFormatError(f"{where}: {at} (id {cid!r}): supercategory must be a string")
        if cid in self.categories:
            raise ImportFormatError(f"{where}: {at}: duplicate category id {cid!r}")
        self.categories[cid] = cat

    def image(self, i: int, img: Any) -> None:
        if self.known is not None:
            return  # checked by the first reading, which holds them
        where, at = self.where, f"images[{i}]"
        if not isinstance(img, dict):
            raise ImportFormatError(f"{where}: {at}: an image must be an object")
        img_id = _coco_id(img, "id", where, at)
        at = f"images[{i}] (id {img_id!r})"
        name = _file_name(img.get("file_name"), where, at)
        spill = self.spill
        if img_id in self.file_of or (spill is not None and spill.active and spill.has_image(img_id)):
            raise ImportFormatError(f"{where}: {at}: duplicate image id")
        if name in self.images or (spill is not None and spill.active and spill.has_file_name(name)):
            raise ImportFormatError(f"{where}: {at}: file_name {name!r} appears twice")
        self.file_of[img_id] = name
        self.image_count += 1
        if spill is None:
            self.images[name] = img if self.keep_images else _NO_RECORD
        else:
            self.images[name] = i  # the spill reports item-name clashes by image index
            self._held_one(spill)

    def annotation(self, i: int, ann: Any) -> None:
        # Once per annotation: the checks of well-formed ids are inline, and the entry's name
        # for error messages is only formatted on the way to an error.
        if self._plain_annotation(ann):
            return
        if type(ann) is not dict:
            raise ImportFormatError(f"{self.where}: annotations[{i}]: an annotation must be an object")
        ann_id, image_id, category_id = ann.get("id"), ann.get("image_id"), ann.get("category_id")
        if not (_good_id(ann_id) and _good_id(image_id) and _good_id(category_id)):
            ann_id = _coco_id(ann, "id", self.where, f"annotations[{i}]")
            at = f"annotations[{i}] (id {ann_id!r})"
            _coco_id(ann, "image_id", self.where, at)
            _coco_id(ann, "category_id", self.where, at)
        where, at = self.where, f"annotations[{i}] (id {ann_id!r})"
        if self.known is not None:
            if not self.known.has_image(image_id):
                raise ImportFormatError(f"{where}: {at}: image_id {image_id!r} names no image")
            if category_id not in self.known.categories:
                raise ImportFormatError(f"{where}: {at}: category_id {category_id!r} names no category")
            return
        masks = self.masks
        ann_type, coordinates, coco = _annotation(ann, where, at, render=masks is None)
        tail = _TAIL_COCO + encode_canonical(coco) + _TAIL_TYPE[ann_type]
        if ann_type == "binary" and masks is not None:  # coordinates: the mask's runs, checked
            pending = EncodedAnnotation(ann_id, category_id, _HEAD + _ID_KEY, tail)
            masks.submit(pending, *coordinates)
            self._add(image_id, pending)
        else:
            self._add_annotation(ann_id, image_id, category_id, _HEAD + encode_canonical(coordinates) + _ID_KEY, tail)

    def _plain(self, ann: dict[str, Any]) -> bool:
        """Add ``ann`` if it is one of the two commonest COCO annotations (its keys
        ``_PLAIN_KEYS``): a box with no segmentation, or a polygon (a bbox and one or more
        non-empty even-length lists of points), with good ids and numbers where numbers
        belong. Checked and encoded inline, without ``_annotation``'s general walk, to the
        same bytes; False for anything else, which takes the general path with its checks
        and messages."""
        ann_id, image_id, category_id = ann["id"], ann["image_id"], ann["category_id"]
        bbox, seg, area, crowd = ann["bbox"], ann["segmentation"], ann["area"], ann["iscrowd"]
        if not (_good_id(ann_id) and _good_id(image_id) and _good_id(category_id)
                and type(bbox) is list and len(bbox) == 4 and type(seg) is list
                and type(area) in _NUMBER_TYPES and type(crowd) is int):
            return False
        x, y, w, h = bbox
        if not (type(x) in _NUMBER_TYPES and type(y) in _NUMBER_TYPES and type(w) in _NUMBER_TYPES
                and type(h) in _NUMBER_TYPES and w >= 0 and h >= 0):
            return False
        if seg == [] or seg == [[]]:
            coco = {"area": area, "bbox": bbox, "category_id": category_id, "id": ann_id,
                    "iscrowd": crowd, "segmentation": seg}  # sorted keys: canonical as built
            self._add_annotation(ann_id, image_id, category_id,
                                 _HEAD + encode_canonical(_box(x, y, w, h)) + _ID_KEY,
                                 _TAIL_COCO + encode_canonical(coco) + _BOX_TAIL)
            return True
        parts = [array_header(len(seg))]
        for part in seg:
            if type(part) is not list or not part or len(part) % 2:
                return False
            types = set(map(type, part))
            if types == _FLOAT_ONLY:
                parts.append(_float_points(part))
            elif _NUMBER_TYPES.issuperset(types):
                parts.append(encode_canonical([{"x": px, "y": py, "z": 0} for px, py in zip(part[0::2], part[1::2])]))
            else:
                return False
        coco = {"area": area, "bbox": bbox, "category_id": category_id, "id": ann_id, "iscrowd": crowd}
        self._add_annotation(ann_id, image_id, category_id,
                             _HEAD + b"".join(parts) + _ID_KEY,
                             _TAIL_COCO + encode_canonical(coco) + _SEGMENT_TAIL)
        return True

    def _add_annotation(self, ann_id: Any, image_id: Any, category_id: Any, head: bytes, tail: bytes) -> None:
        self._add(image_id, EncodedAnnotation(ann_id, category_id, head, tail))

    def _add(self, image_id: Any, ann: EncodedAnnotation) -> None:
        anns = self.by_image.get(image_id)
        if anns is None:
            anns = self.by_image[image_id] = []
        anns.append(ann)
        if self.spill is not None:
            self._held_one(self.spill)

    def _held_one(self, spill: Spiller) -> None:
        """One more image or annotation held: past the spill's limit, it takes them all."""
        self.held += 1
        if self.held >= spill.limit:
            # Not waiting for the masks in flight: the spill leaves an image's annotations
            # here while one of them is (``EncodedAnnotation.pending``), for a later take.
            # (Waiting at each take kept the reader idle ~24 % of a train2017-shaped file.)
            if self.masks is not None:
                self.masks.collect()
            spill.take(self)

    def has_image(self, image_id: Any) -> bool:
        """Has the file an image with this id (once it is all read)?"""
        spill = self.spill
        return image_id in self.file_of or (spill is not None and spill.active and spill.has_image(image_id))

    def bad_references(self) -> bool:
        """Does some annotation name an image or a category the file does not define?

        Raises ImportFormatError first if the file has no ``images``.
        """
        if "images" not in self.present:
            raise ImportFormatError(f"{self.where}: missing 'images': not a COCO instances file")
        if self.spill is not None and self.spill.active:
            self._settle()
            self.spill.take(self)  # the rest: it checks all it took
            return self.spill.bad_references(self)
        cats = self.categories
        return any(image_id not in self.file_of or any(a.label not in cats for a in anns)
                   for image_id, anns in self.by_image.items())

    def _settle(self) -> None:
        """Every mask given to the renderer filled in: the annotations are whole."""
        if self.masks is not None:
            self.masks.settle()

    def finish(self, encoded: bool) -> CocoImport:
        """The import, once ``bad_references`` said there are none (``by_file`` empty if a
        spill took the images and annotations)."""
        self._settle()
        names = {cid: c["name"] for cid, c in self.categories.items()}
        order = sorted(self.categories, key=_id_order)
        labels = list(dict.fromkeys(names[cid] for cid in order))
        by_file: dict[str, list[Any]] = {name: [] for name in self.images}
        for image_id, anns in self.by_image.items():
            for a in anns:
                a.label = names[a.label]
            by_file[self.file_of[image_id]] = anns if encoded else [_as_dict(a) for a in anns]
        self.by_image.clear()
        return CocoImport(labels=labels, by_file=by_file, images={} if encoded else self.images,
                          image_count=self.image_count,
                          categories=[self.categories[cid] for cid in order])


def _no_record(record: Any) -> bool:
    return False


def _as_dict(a: EncodedAnnotation) -> dict[str, Any]:
    value: dict[str, Any] = decode(a.encode(new_annotation_id()))
    return value


def _good_id(value: Any) -> bool:
    """Is ``value`` a COCO id as ``_coco_id`` accepts it?"""
    return type(value) is int or (type(value) is str and value != "")


def _coco_id(record: dict[str, Any], key: str, where: str, at: str) -> Any:
    # COCO ids are ints; some tools write strings. Both are fine, bools are not ints here.
    if key not in record:
        raise ImportFormatError(f"{where}: {at}: missing {key!r}")
    value = record[key]
    if type(value) is int or (type(value) is str and value):
        return value
    raise ImportFormatError(f"{where}: {at}: {key} must be an integer or a string")


def _id_order(cid: Any) -> tuple[int, Any]:
    # Ints before strings so that a mixed file still sorts deterministically.
    return (0, cid) if type(cid) is int else (1, cid)


def _file_name(name: Any, where: str, at: str) -> str:
    if type(name) is not str or not name:
        raise ImportFormatError(f"{where}: {at}: file_name must be a non-empty string")
    if name.startswith("/"):
        raise ImportFormatError(
            f"{where}: {at}: file_name {name!r} is absolute",
            hint="COCO file_name must be relative to the directory being added",
        )
    try:
        normalize_filename(name)
    except InvalidNameError as e:
        raise ImportFormatError(f"{where}: {at}: file_name {name!r}: {e.message}") from None
    return name


def _annotation(ann: dict[str, Any], where: str, at: str, *, render: bool = True) -> tuple[str, Any, dict[str, Any]]:
    """The stored form of a COCO annotation: (type, coordinates, the COCO record kept in
    ``metadata.system.coco``), each canonical. With ``render`` false, a mask's coordinates
    are its checked runs, ``(height, width, counts)``, for a ``MaskRenderer``."""
    bbox = ann.get("bbox")
    if bbox is not None:
        _bbox(bbox, where, at)
    seg = ann.get("segmentation")
    ann_type: str
    coordinates: Any
    if isinstance(seg, dict):
        ann_type, coordinates = "binary", mask_size(seg, where, f"{at}.segmentation")
        if render:
            coordinates = png_uri(*coordinates)
    elif seg is not None and _has_points(seg, where, at):
        ann_type, coordinates = "segment", _polygons(seg, where, at)
    elif bbox is not None:
        x, y, w, h = bbox
        ann_type = "box"
        coordinates = _box(x, y, w, h)
    else:
        raise ImportFormatError(f"{where}: {at}: has neither a bbox nor a segmentation")
    # Canonical, so that it is encoded as it is: keys in order, and any map inside sorted
    # too (this runs per annotation: only values that can hold a map are walked).
    coco = dict(sorted(ann.items()))
    del coco["image_id"]
    if ann_type == "segment":
        del coco["segmentation"]  # exactly in the coordinates
    for k, v in coco.items():
        if type(v) is dict or (type(v) is list and v and k != "bbox"):  # a bbox holds numbers (checked)
            coco[k] = sort_maps(v)
    return ann_type, coordinates, coco


_PLAIN_KEYS = frozenset(("area", "bbox", "category_id", "id", "image_id", "iscrowd", "segmentation"))
_BOX_TAIL, _SEGMENT_TAIL = _TAIL_TYPE["box"], _TAIL_TYPE["segment"]


_FLOAT_ONLY = {float}
_POINT_RUN = 128  # points packed by one cached Struct
_POINT_STRUCTS: dict[int, tuple[struct.Struct, list[Any]]] = {}


def _float_points(part: list[float]) -> bytes:
    """The encoding of a polygon's ``[x1, y1, x2, y2, ...]`` floats as its points, the list
    ``[{"x": x1, "y": y1, "z": 0}, ...]``, without building the maps: a float always encodes
    as 0xcb and its 8 bytes, so the points are a fixed ``struct`` layout (3 against 9 us for a
    polygon of 32 points, on a path that runs per annotation of a COCO file)."""
    n = len(part) >> 1
    out = [array_header(n)]
    for start in range(0, n, _POINT_RUN):
        k = min(_POINT_RUN, n - start)
        packing = _POINT_STRUCTS.get(k)
        if packing is None:  # per point: {"x": 0xcb + x, "y": 0xcb + y, "z": 0}, the floats left as holes
            template = [b"\x83\xa1x\xcb", 0.0, b"\xa1y\xcb", 0.0, b"\xa1z\x00"] * k
            packing = _POINT_STRUCTS[k] = (struct.Struct(">" + "4sd3sd3s" * k), template)
        layout, template = packing
        args = template.copy()
        args[1::5] = part[2 * start : 2 * (start + k) : 2]
        args[3::5] = part[2 * start + 1 : 2 * (start + k) : 2]
        out.append(layout.pack(*args))
    return b"".join(out)


def _box(x: Any, y: Any, w: Any, h: Any) -> list[dict[str, Any]]:
    """A COCO ``bbox`` as a Dataloop box's coordinates: top-left, bottom-right."""
    return [{"x": x, "y": y, "z": 0}, {"x": x + w, "y": y + h, "z": 0}]


_NUMBER_TYPES = frozenset((int, float))
_NO_RECORD: dict[str, Any] = {}  # images' records are not kept for an encoded import


def _bbox(bbox: Any, where: str, at: str) -> None:
    if not (type(bbox) is list and len(bbox) == 4 and _NUMBER_TYPES.issuperset(map(type, bbox))):
        raise ImportFormatError(f"{where}: {at}: bbox must be [x, y, width, height] numbers")
    if bbox[2] < 0 or bbox[3] < 0:
        raise ImportFormatError(f"{where}: {at}: bbox has a negative width or height")


def _has_points(seg: Any, where: str, at: str) -> bool:
    # [] and [[]] mean "no segmentation" in files that only have boxes.
    if not isinstance(seg, list) or not all(isinstance(part, list) for part in seg):
        raise ImportFormatError(f"{where}: {at}: segmentation must be a list of polygons or an RLE object")
    return any(part for part in seg)


def _polygons(seg: list[list[Any]], where: str, at: str) -> list[list[dict[str, Any]]]:
    parts = []
    for j, part in enumerate(seg):
        if len(part) % 2 or not _NUMBER_TYPES.issuperset(map(type, part)):
            raise ImportFormatError(
                f"{where}: {at}: segmentation[{j}] must be an even-length list of numbers [x1, y1, x2, y2, ...]"
            )
        parts.append([{"x": part[k], "y": part[k + 1], "z": 0} for k in range(0, len(part), 2)])
    return parts
