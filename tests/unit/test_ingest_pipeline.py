"""The ingest pipeline's moving parts: the storer processes, large-blob copies, early flushes."""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path
from typing import Any

import pytest
from blake3 import blake3

from dvstore import edit, ingest, statcache, storer
from dvstore.api import Store
from dvstore.edit import Editor
from dvstore.errors import StorageError, UsageError
from dvstore.storage import blobs as blobs_mod


def _files(root: Path, n: int) -> list[tuple[str, os.stat_result]]:
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = root / f"f{i:04d}.bin"
        p.write_bytes(f"file {i} ".encode() * (i % 50 + 1))
        out.append((str(p), os.stat(p)))
    return out


@pytest.fixture(params=["forked", "inline"])
def make_storer(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """The storer as ``dvs add`` starts it: two child processes, or (DVS_NO_FORK=1) inline."""
    if request.param == "inline":
        monkeypatch.setenv("DVS_NO_FORK", "1")
    return storer.start


def test_storer_returns_every_file_in_order_and_stores_it(tmp_path: Path, make_storer) -> None:  # type: ignore[no-untyped-def]
    files = _files(tmp_path / "src", 300)  # several chunks per child
    store = Store.init(str(tmp_path / "store"))
    paths = [p for p, _ in files]
    with make_storer(store.repo) as s:
        got = []
        for window in (paths[:130], paths[130:]):  # as ingest asks: a window at a time
            s.submit(window)
            got += [s.next() for _ in window]
        s.end()
        s.wait()
    rows = statcache.lookup_stat(store.repo, [os.fsencode(p) for p in paths])
    for path, (blob, size, mimetype, system) in zip(paths, got):
        data = Path(path).read_bytes()
        assert blob == blake3(data).digest() and size == len(data)
        assert (mimetype, system) == ("application/octet-stream", {})
        assert store.repo.blobs.read(blob) == data  # committed by the time finish returned
        assert rows[os.fsencode(path)][5] == blob  # and its stat-cache row with it


def test_storer_stores_objects_given_to_it_by_the_time_wait_returns(tmp_path: Path, make_storer) -> None:  # type: ignore[no-untyped-def]
    from dvstore.hashing import object_id

    files = _files(tmp_path / "src", 70)
    store = Store.init(str(tmp_path / "store"))
    batches = [{object_id(b"annset", payload): b"annset\0" + payload
                for payload in (f"{b}-{i}".encode() * 40 for i in range(50))} for b in range(5)]
    with make_storer(store.repo) as s:
        s.submit([p for p, _ in files])
        [s.next() for _ in files]
        s.end()
        for batch in batches:  # after the files, taking turns between the two children
            s.store_objects(batch)
        s.wait()
    for batch in batches:
        for oid, raw in batch.items():
            assert store.repo.db.get("objects", oid) == raw
    assert store.repo.blobs.read(blake3(Path(files[-1][0]).read_bytes()).digest())


def test_objects_handed_over_leave_pending_and_count_as_written(tmp_path: Path) -> None:
    store = Store.init(str(tmp_path / "store"))
    objects = store.repo.objects
    handed: list[dict[bytes, bytes]] = []
    offers = 0

    def every_other(batch: dict[bytes, bytes]) -> bool:
        nonlocal offers
        offers += 1
        if offers % 2:
            handed.append(dict(batch))
            return True
        return False  # committed here

    with objects.writing_ahead(200, to=every_other):
        oids = [objects.put(b"recipe", {"n": i, "pad": "x" * 50}) for i in range(10)]
    assert len(handed) >= 2 and offers > len(handed)
    taken = {k for batch in handed for k in batch}
    assert all(store.repo.db.get("objects", oid) is None for oid in taken)  # not here
    kept = set(oids) - taken - set(objects.pending)
    assert kept and all(store.repo.db.get("objects", oid) is not None for oid in kept)
    assert objects.write_ahead_to is None  # only within the block
    objects.discard()


def test_storer_reports_a_vanished_file_no_later_than_its_turn(tmp_path: Path, make_storer) -> None:  # type: ignore[no-untyped-def]
    files = _files(tmp_path / "src", 200)
    os.unlink(files[150][0])
    store = Store.init(str(tmp_path / "store"))
    got = 0
    with pytest.raises(UsageError, match="cannot read .*f0150.bin"):
        with make_storer(store.repo) as s:
            s.submit([p for p, _ in files])
            for _ in files:
                s.next()
                got += 1
    assert got <= 150  # results before the failing file were delivered, none after it


def test_storer_children_are_gone_when_the_consumer_gives_up(tmp_path: Path) -> None:
    files = _files(tmp_path / "src", 2000)  # far more than a pipe holds
    store = Store.init(str(tmp_path / "store"))
    with pytest.raises(RuntimeError):
        with storer.start(store.repo) as s:
            pids = [c._child.pid for c in s._pair]
            s.submit([p for p, _ in files])
            s.next()
            raise RuntimeError("consumer failed")
    for pid in pids:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, 0)  # reaped, not left blocked on a full pipe


def test_a_storer_that_dies_fails_the_add_with_one_clear_error(tmp_path: Path) -> None:
    import signal

    files = _files(tmp_path / "src", 300)
    store = Store.init(str(tmp_path / "store"))
    with storer.start(store.repo) as s:
        s.submit([p for p, _ in files])
        os.kill(s._pair[1]._child.pid, signal.SIGKILL)
        with pytest.raises(StorageError, match="stopped without an answer"):
            for _ in files:
                s.next()


def test_storer_stores_a_file_that_grew_past_small_as_a_file_blob(tmp_path: Path, make_storer) -> None:  # type: ignore[no-untyped-def]
    [(path, st)] = _files(tmp_path / "src", 1)
    with open(path, "ab") as f:  # grew after ingest's stat said "small"
        f.write(b"x" * (blobs_mod.SMALL_MAX + 10))
    store = Store.init(str(tmp_path / "store"))
    with make_storer(store.repo) as s:
        s.submit([path])
        blob, size, _, _ = s.next()
        s.end()
        s.wait()
    data = Path(path).read_bytes()
    assert size == len(data) > st.st_size and blob == blake3(data).digest()
    assert os.path.exists(store.repo.blobs.path_for(blob))  # a blob file, not an LMDB value


def _big(tmp_path: Path, name: str = "big.bin", size: int = 3 * 1024 * 1024 + 17) -> Path:
    p = tmp_path / name
    p.write_bytes(os.urandom(size))
    return p


@pytest.mark.parametrize("copy", ["copy_file_range", "sendfile", "python"])
def test_large_blob_is_named_by_the_hash_of_its_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       copy: str) -> None:
    if copy == "sendfile":  # what another file system gets: copy_file_range says EXDEV
        def exdev(*args: object) -> int:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        monkeypatch.setattr(os, "copy_file_range", exdev)
    sent: list[int] = []
    real_sendfile = os.sendfile

    def counting_sendfile(out_fd: int, in_fd: int, offset: int | None, count: int) -> int:
        n = real_sendfile(out_fd, in_fd, offset, count)
        sent.append(n)
        return n

    monkeypatch.setattr(os, "sendfile", counting_sendfile)
    if copy == "python":
        monkeypatch.setattr(blobs_mod, "_copy_in_kernel", lambda src, dst: False)
    src = _big(tmp_path)
    store = Store.init(str(tmp_path / "store"))
    ds = store.datasets.create("ds")
    with ds.edit("big") as e:
        e.add_file(str(src), "/big.bin")
    item = ds.items.get("/big.bin")
    assert item.read() == src.read_bytes()
    blob = blake3(src.read_bytes()).hexdigest()
    assert os.path.exists(Path(store.path) / "blobs" / blob[:2] / blob[2:])
    assert os.listdir(Path(store.path) / "tmp") == []
    assert store.fsck(read_data=True).ok
    assert (sum(sent) == src.stat().st_size) == (copy == "sendfile")


def test_failed_fsync_of_a_large_blob_fails_the_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = _big(tmp_path)
    store = Store.init(str(tmp_path / "store"))
    ds = store.datasets.create("ds")
    with ds.edit("small") as e:
        e.add_bytes("/a.txt", b"a")
    head = ds.head_id
    real_fsync = os.fsync

    def failing_fsync(fd: int) -> None:
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).endswith(".partial"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(blobs_mod.os, "fsync", failing_fsync)
    with pytest.raises(StorageError, match="no space left"):
        with ds.edit("big") as e:
            e.add_file(str(src), "/big.bin")
    monkeypatch.setattr(blobs_mod.os, "fsync", real_fsync)
    assert store.datasets.get("ds").head_id == head
    assert os.listdir(Path(store.path) / "tmp") == []
    with ds.edit("big again") as e:  # nothing stale is left to fail the next edit
        e.add_file(str(src), "/big.bin")
    assert store.datasets.get("ds").items.get("/big.bin").read() == src.read_bytes()


def test_long_ingest_flushes_blobs_and_stat_rows_early(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       make_storer) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(storer, "FLUSH_BYTES", 4096)  # forked storers inherit it
    monkeypatch.setattr(ingest, "WINDOW", 64)
    files = _files(tmp_path / "src", 500)
    store = Store.init(str(tmp_path / "store"))
    ds = store.datasets.create("ds")
    before = store.repo.db.env.info()["last_txnid"]  # counts the children's transactions too
    with ds.edit("add") as e:
        stats = ingest.ingest(e, [str(tmp_path / "src")])
    assert stats.files == 500 and stats.hashed == 500
    assert store.repo.db.env.info()["last_txnid"] - before > 10  # flushed along the way, not at the end
    rows = statcache.lookup_stat(store.repo, [os.fsencode(p) for p, _ in files])
    assert len(rows) == 500
    for p, _ in files:
        name = "/" + os.path.basename(p)
        assert ds.items.get(name).read() == Path(p).read_bytes()
    assert store.fsck(read_data=True).ok


def test_annotation_sets_are_flushed_early_and_all_land(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    monkeypatch.setattr(ingest, "FLUSH_BYTES", 1024)
    monkeypatch.setattr(ingest, "WINDOW", 32)
    files = _files(tmp_path / "src", 300)
    coco = {"images": [{"id": i, "file_name": os.path.basename(p)} for i, (p, _) in enumerate(files)],
            "categories": [{"id": 1, "name": "thing"}],
            "annotations": [{"id": 1000 + i, "image_id": i, "category_id": 1, "bbox": [1, 2, 3, 4]}
                            for i in range(len(files))]}
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    store = Store.init(str(tmp_path / "store"))
    ds = store.datasets.create("ds")
    objects = store.repo.objects
    flushed = []
    real = objects.write_ahead

    def counting_write_ahead() -> None:
        flushed.append(len(objects.pending))
        real()

    monkeypatch.setattr(objects, "write_ahead", counting_write_ahead)
    with ds.edit("add") as e:
        stats = ingest.ingest(e, [str(tmp_path / "src")], annotations=str(tmp_path / "coco.json"), fmt="coco")
    assert stats.annotated == 300
    assert len(flushed) > 2 and all(flushed)  # some before the version's own transaction
    for p, _ in files:
        [a] = ds.items.get("/" + os.path.basename(p)).annotations
        assert a["label"] == "thing" and a["coordinates"][1] == {"x": 4, "y": 6, "z": 0}
    assert store.fsck().ok


@pytest.mark.parametrize("fork", [True, False])
def test_a_big_coco_imports_annotation_sets_are_stored_by_the_storers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                       fork: bool) -> None:
    import json

    if not fork:
        monkeypatch.setenv("DVS_NO_FORK", "1")
    monkeypatch.setattr(ingest, "FLUSH_BYTES", 2048)
    files = _files(tmp_path / "src", 400)
    coco = {"images": [{"id": i, "file_name": os.path.basename(p)} for i, (p, _) in enumerate(files)],
            "categories": [{"id": 1, "name": "thing"}],
            "annotations": [{"id": 1000 + i, "image_id": i // 2, "category_id": 1, "bbox": [1, 2, 3, 4],
                             "area": 12, "iscrowd": 0, "segmentation": [[1.5, 2.5, 3.5, 4.5, 5.5, 6.5]]}
                            for i in range(2 * len(files))]}
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    store = Store.init(str(tmp_path / "store"))
    ds = store.datasets.create("ds")
    handed = []
    real = storer.Pair.store_objects if fork else storer.Inline.store_objects

    def counting(self: Any, objects: dict[bytes, bytes]) -> None:
        handed.append(len(objects))
        real(self, objects)

    monkeypatch.setattr(storer.Pair if fork else storer.Inline, "store_objects", counting)
    with ds.edit("add") as e:
        stats = ingest.ingest(e, [str(tmp_path / "src")], annotations=str(tmp_path / "coco.json"), fmt="coco")
    assert stats.annotated == 400
    assert len(handed) > 2  # the storers stored most of them
    for p, _ in files[::37]:
        anns = ds.items.get("/" + os.path.basename(p)).annotations
        assert [a["type"] for a in anns] == ["segment", "segment"]
    assert store.fsck(read_data=True).ok


def test_progress_is_reported_along_the_way(tmp_path: Path) -> None:
    _files(tmp_path / "src", 1100)
    store = Store.init(str(tmp_path / "store"))
    ds = store.datasets.create("ds")
    calls: list[tuple[int, int]] = []
    with ds.edit("add") as e:
        ingest.ingest(e, [str(tmp_path / "src")], progress=lambda done, total: calls.append((done, total)))
    assert calls == [(512, 1100), (1024, 1100), (1100, 1100)]


@pytest.mark.parametrize("fork", [True, False])
def test_annotating_progress_counts_the_annotation_files_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                fork: bool) -> None:
    import json

    if not fork:
        monkeypatch.setenv("DVS_NO_FORK", "1")
    files = _files(tmp_path / "src", 1100)
    coco = {"images": [{"id": i, "file_name": os.path.basename(p)} for i, (p, _) in enumerate(files)],
            "categories": [{"id": 1, "name": "thing"}],
            "annotations": [{"id": i, "image_id": i, "category_id": 1, "bbox": [1, 2, 3, 4]} for i in range(0, 1100, 3)]}
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    store = Store.init(str(tmp_path / "store"))
    ds = store.datasets.create("ds")
    calls: list[tuple[int, int]] = []
    with ds.edit("add") as e:
        ingest.ingest(e, [str(tmp_path / "src")], annotations=str(tmp_path / "coco.json"), fmt="coco",
                      annotating=lambda done, total: calls.append((done, total)))
    waits = [c for c in calls if c == (0, -1)]
    bars = [c for c in calls if c != (0, -1)]
    assert calls[: len(waits)] == waits and len(waits) <= 1  # a wait, if any, comes first
    assert bars and bars[-1] == (1100, 1100)  # every image of the file, once the files are recorded
    assert all(total == 1100 for _, total in bars) and [d for d, _ in bars] == sorted(d for d, _ in bars)


def test_progress_bar_prints_a_wait_then_a_bar(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DVS_PROGRESS", "1")
    bar = ingest.progress_bar("annotating", "reading coco.json")
    bar(0, -1)
    bar(512, 1000)
    bar(1000, 1000)
    err = capsys.readouterr().err
    assert err.startswith("annotating: reading coco.json\n")
    assert "\rannotating [###############...............] 512/1000" in err
    assert re.search(r"\rannotating \[#{30}\] 1000/1000 [\d,]+/s\n$", err)


def test_walk_rebuilds_every_local_path(tmp_path: Path) -> None:
    """``Files`` keeps one string per file; every (local, name) pair must come back exactly."""
    import unicodedata

    a, b = tmp_path / "a", tmp_path / "b"
    (a / "sub").mkdir(parents=True)
    b.mkdir()
    (a / "sub" / "x.bin").write_bytes(b"1")
    (a / "top.bin").write_bytes(b"2")
    decomposed = unicodedata.normalize("NFD", "é.bin")  # normalisation changes the name
    (b / decomposed).write_bytes(b"3")
    (tmp_path / "lone.bin").write_bytes(b"4")
    files = ingest.walk([str(a), str(b), str(tmp_path / "lone.bin"), str(a)], to="/in")
    got = files.window(0, 100)
    assert got == sorted([
        (str(a / "sub" / "x.bin"), "/in/sub/x.bin"),
        (str(a / "top.bin"), "/in/top.bin"),
        (str(b / decomposed), "/in/" + unicodedata.normalize("NFC", "é.bin")),
        (str(tmp_path / "lone.bin"), "/in/lone.bin"),
    ], key=lambda t: t[1])
    assert files.window(1, 3) == got[1:3] and len(files) == 4
    (b / "top.bin").write_bytes(b"5")
    with pytest.raises(UsageError, match="two files map to the same item /top.bin"):
        ingest.walk([str(a), str(b)])


def test_dataloop_json_named_after_the_stem_or_the_full_name(tmp_path: Path) -> None:
    """json/a/1.json (Dataloop's exports) and json/a/2.png.json (dvs checkouts) both land;
    a stem two added files share is ambiguous and reported, not guessed."""
    import json

    src = tmp_path / "src"
    for rel in ("a/1.jpg", "a/2.png", "x.jpg", "x.png"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(rel.encode())
    js = tmp_path / "json"
    for rel in ("a/1.json", "a/2.png.json", "x.json"):
        (js / rel).parent.mkdir(parents=True, exist_ok=True)
        (js / rel).write_text(json.dumps({"annotations": [{"id": "k" + rel[-8:-5], "type": "class", "label": "cat"}]}))
    store = Store.init(str(tmp_path / "store"))
    ds = store.datasets.create("ds")
    with ds.edit("add") as e:
        stats = ingest.ingest(e, [str(src)], annotations=str(js), fmt="dataloop")
    assert stats.annotated == 2 and stats.skipped == ["/x"]
    assert [a["label"] for a in ds.items.get("/a/1.jpg").annotations] == ["cat"]
    assert [a["label"] for a in ds.items.get("/a/2.png").annotations] == ["cat"]
    assert ds.items.get("/x.jpg").annotations == [] and ds.items.get("/x.png").annotations == []


def _new_items(e: Editor, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        e.add_bytes(f"/d{i % 7}/f{i:05d}", b"%d" % i)


def _serial_roots(e: Editor) -> tuple[bytes, bytes]:
    """The items root and filename index root built here, as without a helper."""
    from dvstore import tree
    from dvstore.edit import _NAMES

    items = tree.apply_sorted(e.objects, e.base.layers["items"] or tree.EMPTY,
                              e._spill.merged(_NAMES["items"], e.changes["items"]))
    return items, e._build_paths()


@pytest.fixture
def ahead_ds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Store, Any]:
    """A store and an empty dataset whose edits fork the items-tree helper from 10 items."""
    monkeypatch.setattr(edit, "AHEAD_MIN", 10)
    store = Store.init(str(tmp_path / "store"))
    return store, store.datasets.create("ds")


@pytest.mark.parametrize("with_paths", [True, False])
@pytest.mark.parametrize("base_items", [0, 50])
def test_items_built_ahead_equal_the_ones_built_here(ahead_ds: tuple[Store, Any], base_items: int,
                                                      with_paths: bool) -> None:
    store, ds = ahead_ds
    if base_items:
        with ds.edit("base") as e:
            _new_items(e, base_items, start=10_000)
    with ds.edit("add") as e:
        _new_items(e, 300)
        e.build_items_ahead(with_paths)
        assert e._ahead is not None  # a helper builds them
        items, paths = _serial_roots(e)
        assert e._ahead_roots() == (items, paths if with_paths else None)
        assert e._ahead is None
    # And through the whole path: the version is complete and every node is stored.
    with ds.edit("more") as e:
        _new_items(e, 300, start=300)
        e.build_items_ahead(with_paths)
    assert len(ds.items.list()) == 600 + base_items
    assert ds.items.get("/d3/f00500").read() == b"500"  # found through the filename index
    assert store.fsck().ok


def test_a_change_after_the_helper_started_makes_it_stale(ahead_ds: tuple[Store, Any]) -> None:
    store, ds = ahead_ds
    with ds.edit("add") as e:
        _new_items(e, 100)
        e.build_items_ahead()
        child = e._ahead
        assert child is not None
        e.set_hidden("/d0/f00000", True)  # an item changes: the helper's tree would miss it
        assert e._ahead is None and child.pid == 0  # stopped and reaped
        e.build_items_ahead()
        e.add_bytes("/late", b"late")  # a new name too
        assert e._ahead is None
    assert ds.items.get("/d0/f00000").hidden and ds.items.get("/late").read() == b"late"
    assert len(ds.items.list()) == 100  # 101 items, the hidden one not listed
    assert store.fsck().ok


def test_a_helper_that_dies_leaves_the_build_to_the_editor(ahead_ds: tuple[Store, Any]) -> None:
    import signal

    store, ds = ahead_ds
    with ds.edit("add") as e:
        _new_items(e, 100)
        e.set_annotations("/d0/f00000", [{"type": "box", "label": "a", "coordinates": [1, 2, 3, 4]}])
        e.build_items_ahead()
        assert e._ahead is not None
        os.kill(e._ahead.pid, signal.SIGKILL)
    assert len(ds.items.list()) == 100
    assert ds.items.get("/d0/f00000").annotations[0]["label"] == "a"
    assert store.fsck().ok


def test_no_helper_for_a_small_edit_or_without_fork(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store.init(str(tmp_path / "store"))
    ds = store.datasets.create("ds")
    with ds.edit("add") as e:
        _new_items(e, 100)
        e.build_items_ahead()  # below AHEAD_MIN
        assert e._ahead is None
    monkeypatch.setattr(edit, "AHEAD_MIN", 10)
    monkeypatch.setenv("DVS_NO_FORK", "1")
    with ds.edit("more") as e:
        _new_items(e, 100, start=100)
        e.build_items_ahead()
        assert e._ahead is None
    assert len(ds.items.list()) == 200


@pytest.mark.parametrize("n", [1, 3])
def test_a_coco_annotation_set_is_the_canonical_map_of_its_annotations(tmp_path: Path, n: int) -> None:
    from dvstore import codec
    from dvstore.errors import ImportFormatError
    from dvstore.hashing import hash_bytes

    store = Store.init(str(tmp_path / "store"))
    ds = store.datasets.create("ds")
    iid = bytes(range(16))
    anns = []
    for k in range(n):
        head, tail = _box_parts(k)
        anns.append([900 - k, head, tail])
    with ds.edit("x") as e:
        got = ingest._encoded_annset(e, iid, anns)
        want = {}
        for coco_id, head, tail in anns:
            aid = hash_bytes(iid + b"coco:" + str(coco_id).encode())[:12].hex()
            want[aid] = codec.decode(head + codec.encode_canonical(aid) + tail)
        assert got == codec.encode(want)
        if n > 1:
            with pytest.raises(ImportFormatError, match="two COCO annotations with id"):
                ingest._encoded_annset(e, iid, [anns[0], [str(anns[0][0]), *anns[1][1:]]])


def _box_parts(k: int) -> tuple[bytes, bytes]:
    """(head, tail) of a stored box annotation around its id, as the COCO reader gives them."""
    from dvstore import codec

    head = codec.map_header(3) + codec.encode_canonical("coordinates") + codec.encode_canonical([k, k + 1])
    head += codec.encode_canonical("id")
    tail = codec.encode_canonical("label") + codec.encode_canonical(f"c{k}")
    return head, tail


def test_adding_the_same_coco_file_again_changes_nothing(tmp_path: Path) -> None:
    import json

    files = _files(tmp_path / "src", 40)
    coco = {"images": [{"id": i, "file_name": os.path.basename(p)} for i, (p, _) in enumerate(files)],
            "categories": [{"id": 1, "name": "thing"}],
            "annotations": [{"id": 1000 + i * 3 + k, "image_id": i, "category_id": 1, "bbox": [k, 2, 3, 4]}
                            for i in range(len(files)) for k in range(i % 3)]}
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    store = Store.init(str(tmp_path / "store"))
    ds = store.datasets.create("ds")
    for _ in range(2):
        with ds.edit("add") as e:
            ingest.ingest(e, [str(tmp_path / "src")], annotations=str(tmp_path / "coco.json"), fmt="coco")
    assert e.committed is None  # the second add found every annotation id unchanged
    assert [len(ds.items.get("/" + os.path.basename(p)).annotations) for p, _ in files[:3]] == [0, 1, 2]


def test_objects_are_written_ahead_by_count_as_well_as_by_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A transaction of many small objects keeps one dirty page per object in LMDB's memory
    (then kept for later ones): ``writing_ahead`` also stores every WRITE_AHEAD_OBJECTS."""
    from dvstore.storage import objects as objects_mod

    monkeypatch.setattr(objects_mod, "WRITE_AHEAD_OBJECTS", 5)
    store = Store.init(str(tmp_path / "store"))
    objects = store.repo.objects
    with objects.writing_ahead(1 << 30):
        oids = [objects.put(b"recipe", {"n": i}) for i in range(12)]
        assert len(objects.pending) == 2  # two batches of five stored, two staged
    for oid in oids[:10]:
        assert store.repo.db.get("objects", oid) is not None
    objects.put(b"recipe", {"n": 99})
    assert len(objects.pending) == 3  # outside the block nothing is written ahead
    objects.discard()


@pytest.mark.parametrize("source", ["coco", "dataloop"])
def test_an_add_with_the_items_tree_helper_lands_every_layer(ahead_ds: tuple[Store, Any], tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch, source: str) -> None:
    """Through ``ingest``: COCO annotations (the helper builds both trees while they are set),
    and Dataloop json whose ``hidden`` changes items after the helper started (it is dropped,
    the editor builds them)."""
    import json

    store, ds = ahead_ds
    files = _files(tmp_path / "src", 40)
    names = [os.path.basename(p) for p, _ in files]
    if source == "coco":
        ann = tmp_path / "coco.json"
        ann.write_text(json.dumps({
            "images": [{"id": i, "file_name": n} for i, n in enumerate(names)],
            "categories": [{"id": 1, "name": "thing"}],
            "annotations": [{"id": 100 + i, "image_id": i, "category_id": 1, "bbox": [1, 2, 3, 4]}
                            for i in range(len(names))]}))
    else:
        ann = tmp_path / "json"
        ann.mkdir()
        for i, n in enumerate(names):
            (ann / (n + ".json")).write_text(json.dumps({
                "annotations": [{"id": f"a{i}", "type": "class", "label": "thing"}],
                "hidden": i % 2 == 0, "metadata": {"user": {"n": i}}}))
    started = []
    real = Editor.build_items_ahead

    def spy(self: Editor, with_paths: bool = True) -> None:
        real(self, with_paths)
        started.append((self._ahead is not None, with_paths))

    monkeypatch.setattr(Editor, "build_items_ahead", spy)
    with ds.edit("add") as e:
        stats = ingest.ingest(e, [str(tmp_path / "src")], annotations=str(ann), fmt=source)
    assert started == [(True, True)]  # started, building the filename index too
    assert stats.annotated == 40
    for i, n in enumerate(names):
        item = ds.items.get("/" + n)
        assert [a["label"] for a in item.annotations] == ["thing"]
        if source == "dataloop":
            assert item.hidden == (i % 2 == 0) and item.metadata["user"] == {"n": i}
    assert store.fsck().ok


def test_walk_leaves_out_the_store_checkout_files_and_the_annotations(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for rel in ("a.png", "sub/b.png", "sub/.dvs-checkout", ".dvs-checkout", "json/a.png.json", "ann/c.json"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(rel.encode())
    store = Store.init(str(src / "sub" / "store"))
    (src / "ann-link.json").symlink_to(src / "ann" / "c.json")
    files = ingest.walk([str(src)], store=store.path, annotations=str(src / "ann" / "c.json"))
    assert files.names == ["/a.png", "/json/a.png.json", "/sub/b.png"]
    assert files.excluded == [str(src / "ann" / "c.json")]
    # a Dataloop json/ folder given as the annotations
    files = ingest.walk([str(src), str(src)], store=store.path, annotations=str(src / "json"))
    assert "/json/a.png.json" not in files.names and files.excluded == [str(src / "json")]
    with pytest.raises(UsageError, match="is the store"):
        ingest.walk([store.path], store=store.path)
    with pytest.raises(UsageError, match="inside the store"):
        ingest.walk([os.path.join(store.path, "config.json")], store=store.path)
