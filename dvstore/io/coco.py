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

import base64
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Protocol

from dvstore.codec import decode, encode_canonical, map_header, sort_maps
from dvstore.errors import ImportFormatError, InvalidNameError
from dvstore.io.dataloop import (
    JSON_CHUNK,
    MAX_JSON_DEPTH,
    JsonChunks,
    check_storable,
    check_storable_part,
    reject_constant,
)
from dvstore.io.imageinfo import encode_png
from dvstore.model import new_annotation_id, normalize_filename

PNG_DATA_URI = "data:image/png;base64,"
# A mask is decoded to an RGBA PNG in memory: cap it (8192 x 8192) so that a hostile
# "size" cannot ask for gigabytes.
MAX_MASK_PIXELS = 8192 * 8192
_RLE_FIRST, _RLE_LAST = 48, 48 + 63  # COCO's compressed RLE alphabet: chr(48) .. chr(111)


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
    """

    labels: list[str]
    by_file: dict[str, list[Any]]
    images: dict[str, dict[str, Any]] = field(default_factory=dict)
    categories: list[dict[str, Any]] = field(default_factory=list)


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
_TAIL_COCO = (encode_canonical("metadata") + map_header(2) + encode_canonical("system") + map_header(1)
              + encode_canonical("coco"))
_TAIL_TYPE = {t: encode_canonical("user") + encode_canonical({}) + encode_canonical("type") + encode_canonical(t)
              for t in ("binary", "box", "segment")}


def load_coco(path: str | os.PathLike[str], *, encoded: bool = False, chunk: int = JSON_CHUNK,
              spill: Spiller | None = None) -> CocoImport:
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

    Returns:
        The labels, per-file annotations, image and category records.

    Raises:
        ImportFormatError: The file is not JSON or not a COCO instances document: missing
            or mistyped keys, duplicate image or category ids or file names, an annotation
            naming an unknown image or category, an absolute or escaping ``file_name``, a
            malformed box, polygon or RLE. The message names the file and the entry.
    """
    where = str(path)
    b = _Builder(where, keep_images=not encoded, spill=spill if encoded else None)
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
    match = _WS.match
    blank = " \t\n\r"
    text = ""
    size = 0  # len(text)
    eof = False
    suspect = False
    lines = 0  # newlines dropped
    column = 0  # characters dropped since the last of them

    def more(i: int) -> int:  # drop text[:i], read on; i's new position (0)
        nonlocal text, size, eof, suspect, lines, column
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
                    i = ws(i + 1)
                    n = 0
                    if text[i:i + 1] == "]":
                        i += 1
                    else:
                        while True:
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
    came since, and the checks that look for an earlier image ask the spill too."""

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
                 spill: Spiller | None = None) -> None:
        self.where = where
        self.keep_images = keep_images
        self.known = known  # a builder that read the whole file: check annotations against it
        self.spill = spill
        self.held = 0  # images and annotations in memory, counted only for a spill
        self.present: set[str] = set()
        self.categories: dict[Any, dict[str, Any]] = {}
        self.images: dict[str, Any] = {}
        self.file_of: dict[Any, str] = {}
        self.by_image: dict[Any, list[EncodedAnnotation]] = {}

    def adder(self, key: str) -> Any:
        return {"images": self.image, "annotations": self.annotation, "categories": self.category}[key]

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
        if spill is None:
            self.images[name] = img if self.keep_images else _NO_RECORD
        else:
            self.images[name] = i  # the spill reports item-name clashes by image index
            self._held_one(spill)

    def annotation(self, i: int, ann: Any) -> None:
        # Once per annotation: the checks of well-formed ids are inline, and the entry's name
        # for error messages is only formatted on the way to an error.
        if type(ann) is not dict:
            raise ImportFormatError(f"{self.where}: annotations[{i}]: an annotation must be an object")
        if ann.keys() == _PLAIN_BOX_KEYS and self.known is None and self._plain_box(ann):
            return
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
        ann_type, coordinates, coco = _annotation(ann, where, at)
        head = _HEAD + encode_canonical(coordinates) + _ID_KEY
        tail = _TAIL_COCO + encode_canonical(coco) + _TAIL_TYPE[ann_type]
        self._add_annotation(ann_id, image_id, category_id, head, tail)

    def _plain_box(self, ann: dict[str, Any]) -> bool:
        """Add ``ann`` if it is the commonest COCO annotation (its keys ``_PLAIN_BOX_KEYS``):
        a box with good ids, no segmentation and numbers where numbers belong. Checked and
        encoded inline, without ``_annotation``'s general walk, to the same bytes; False
        for anything else, which takes the general path with its checks and messages."""
        ann_id, image_id, category_id = ann["id"], ann["image_id"], ann["category_id"]
        bbox, seg, area, crowd = ann["bbox"], ann["segmentation"], ann["area"], ann["iscrowd"]
        if not (_good_id(ann_id) and _good_id(image_id) and _good_id(category_id)
                and type(bbox) is list and len(bbox) == 4 and (seg == [] or seg == [[]])
                and type(area) in _NUMBER_TYPES and type(crowd) is int):
            return False
        x, y, w, h = bbox
        if not (type(x) in _NUMBER_TYPES and type(y) in _NUMBER_TYPES and type(w) in _NUMBER_TYPES
                and type(h) in _NUMBER_TYPES and w >= 0 and h >= 0):
            return False
        coco = {"area": area, "bbox": bbox, "category_id": category_id, "id": ann_id,
                "iscrowd": crowd, "segmentation": seg}  # sorted keys: canonical as built
        self._add_annotation(ann_id, image_id, category_id,
                             _HEAD + encode_canonical(_box(x, y, w, h)) + _ID_KEY,
                             _TAIL_COCO + encode_canonical(coco) + _BOX_TAIL)
        return True

    def _add_annotation(self, ann_id: Any, image_id: Any, category_id: Any, head: bytes, tail: bytes) -> None:
        anns = self.by_image.get(image_id)
        if anns is None:
            anns = self.by_image[image_id] = []
        anns.append(EncodedAnnotation(ann_id, category_id, head, tail))
        if self.spill is not None:
            self._held_one(self.spill)

    def _held_one(self, spill: Spiller) -> None:
        """One more image or annotation held: past the spill's limit, it takes them all."""
        self.held += 1
        if self.held >= spill.limit:
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
            self.spill.take(self)  # the rest: it checks all it took
            return self.spill.bad_references(self)
        cats = self.categories
        return any(image_id not in self.file_of or any(a.label not in cats for a in anns)
                   for image_id, anns in self.by_image.items())

    def finish(self, encoded: bool) -> CocoImport:
        """The import, once ``bad_references`` said there are none (``by_file`` empty if a
        spill took the images and annotations)."""
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
                          categories=[self.categories[cid] for cid in order])


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


def _annotation(ann: dict[str, Any], where: str, at: str) -> tuple[str, Any, dict[str, Any]]:
    """The stored form of a COCO annotation: (type, coordinates, the COCO record kept in
    ``metadata.system.coco``), each canonical."""
    bbox = ann.get("bbox")
    if bbox is not None:
        _bbox(bbox, where, at)
    seg = ann.get("segmentation")
    ann_type: str
    coordinates: Any
    if isinstance(seg, dict):
        ann_type, coordinates = "binary", _rle_to_png_uri(seg, where, at)
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


_PLAIN_BOX_KEYS = frozenset(("area", "bbox", "category_id", "id", "image_id", "iscrowd", "segmentation"))
_BOX_TAIL = _TAIL_TYPE["box"]


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
    height, width, counts = rle_counts(rle, where, at)
    if height == 0 or width == 0:
        raise ImportFormatError(f"{where}: {at}: RLE mask of size {height}x{width} is empty")
    if height * width > MAX_MASK_PIXELS:
        raise ImportFormatError(f"{where}: {at}: RLE mask of {height}x{width} is larger than {MAX_MASK_PIXELS} pixels")
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
        out = bytearray(4 * width)
        for y in range(height):
            row = flat[y::height]
            for ch in range(4):
                out[ch::4] = row
            yield bytes(out)

    return encode_png(width, height, rows(), channels=4)


def _rle_to_png_uri(rle: dict[str, Any], where: str, at: str) -> str:
    png = rle_to_png(rle, where, f"{at}.segmentation")
    return PNG_DATA_URI + base64.b64encode(png).decode("ascii")
