"""Working folders: checkout -> edit -> status -> commit, through the library and the real ``dvs``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from dvstore import codec, tree, workdir
from dvstore.api import Dataset, Store
from dvstore.errors import ConflictError, DvsError, ImportFormatError, InvalidNameError, NotFoundError, UsageError
from dvstore.hashing import hash_bytes
from dvstore.views import item_json
from tests.conftest import run_dvs

SEED = ["/cats/a.jpg", "/cats/b.jpg", "/dogs/c.jpg", "/dogs/d.jpg", "/e.txt", "/f.txt", "/g.txt"]


def seed(store: Store, name: str = "pets") -> Dataset:
    ds = store.datasets.create(name)
    with ds.edit("seed") as e:
        for fn in SEED:
            e.add_bytes(fn, f"bytes of {fn}".encode())
        e.add_annotation("/cats/b.jpg", {"type": "class", "label": "cat"})
        a1 = e.add_annotation("/dogs/c.jpg", {"type": "box", "label": "dog", "coordinates": [{"x": 1, "y": 2}]})
        e.add_annotation("/dogs/c.jpg", {"type": "box", "label": "dog", "coordinates": [{"x": 5, "y": 6}]})
        e.set_annotation_status("/dogs/c.jpg", a1, "review")
        e.update_metadata("/dogs/d.jpg", user={"split": "val", "score": 1})
        e.set_task_status("/f.txt", "task-2", "completed")
    return ds


def load(p: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(p.read_text())
    return doc


def dump(p: Path, doc: dict[str, Any]) -> None:
    p.write_text(json.dumps(doc, indent=1))


def edit_folder(wd: Path) -> None:
    """The edits of CLI.md: binary, new files, deletion, annotations, metadata, status, hidden."""
    (wd / "items/cats/a.jpg").write_bytes(b"new bytes of a")
    (wd / "items/new").mkdir()
    (wd / "items/new/h.txt").write_bytes(b"brand new h")
    (wd / "json/new").mkdir()
    dump(wd / "json/new/h.txt.json", {"annotations": [{"type": "class", "label": "cat"}],
                                      "metadata": {"user": {"source": "manual"}}})
    (wd / "items/i.txt").write_bytes(b"brand new i, no json")
    (wd / "items/cats/b.jpg").unlink()
    (wd / "json/cats/b.jpg.json").unlink()
    c = load(wd / "json/dogs/c.jpg.json")
    first, second = c["annotations"]
    first["label"] = "puppy"
    first["metadata"]["system"]["status"] = "approved"
    c["annotations"] = [first, {"type": "point", "label": "nose", "coordinates": {"x": 3, "y": 3}}]
    dump(wd / "json/dogs/c.jpg.json", c)
    d = load(wd / "json/dogs/d.jpg.json")
    d["metadata"]["user"] = {"split": "train", "score": 1}
    dump(wd / "json/dogs/d.jpg.json", d)
    e = load(wd / "json/e.txt.json")
    e["status"] = {"task-1": "completed"}
    dump(wd / "json/e.txt.json", e)
    f = load(wd / "json/f.txt.json")
    f["metadata"]["system"]["refs"][0]["metadata"]["status"] = "discard"
    del f["status"]  # edited through refs only
    dump(wd / "json/f.txt.json", f)
    g = load(wd / "json/g.txt.json")
    g["hidden"] = True
    dump(wd / "json/g.txt.json", g)


EXPECTED_STATUS = {
    "added": ["/i.txt", "/new/h.txt"],
    "removed": ["/cats/b.jpg"],
    "modified": ["/cats/a.jpg"],
    "json_changed": {"/dogs/c.jpg": ["annotations"], "/dogs/d.jpg": ["metadata"], "/e.txt": ["status"],
                     "/f.txt": ["status"], "/g.txt": ["hidden"]},
}


def _all_items(ds: Dataset) -> list[Any]:
    out = []
    for iid, irec, _ann, _meta, _st in ds.items.iter_records():
        out.append(ds.items.get(item_id=iid.hex()))
        assert out[-1].filename == irec["filename"]
    return out


def changed_keys(store: Store, old: bytes, new: bytes) -> dict[str, set[str]]:
    repo = store.repo
    a, b = repo.commit(old), repo.commit(new)
    return {layer: {k.hex() for k, _, _ in tree.diff(repo.objects, a.layers[layer], b.layers[layer])}
            for layer in ("items", "annotations", "metadata", "status")}


def check_committed(store: Store, ds: Dataset, old: bytes, new: bytes) -> None:
    repo = store.repo
    assert repo.commit(new).parents == (old,)
    before = {it.filename: it for it in _all_items(Dataset(store, ds.record, old))}
    after = {it.filename: it for it in _all_items(Dataset(store, ds.record, new))}
    assert set(after) == set(before) - {"/cats/b.jpg"} | {"/new/h.txt", "/i.txt"}
    for fn in set(before) & set(after):
        assert after[fn].id == before[fn].id, fn  # identity kept
    idx = {fn: it.id for fn, it in after.items()} | {"/cats/b.jpg": before["/cats/b.jpg"].id}
    keys = changed_keys(store, old, new)
    assert keys["items"] == {idx[f] for f in ("/cats/a.jpg", "/cats/b.jpg", "/g.txt", "/new/h.txt", "/i.txt")}
    assert keys["annotations"] == {idx[f] for f in ("/cats/b.jpg", "/dogs/c.jpg", "/new/h.txt")}
    assert keys["metadata"] == {idx[f] for f in ("/dogs/d.jpg", "/new/h.txt")}
    assert keys["status"] == {idx[f] for f in ("/dogs/c.jpg", "/e.txt", "/f.txt")}
    assert after["/cats/a.jpg"].read() == b"new bytes of a"
    assert after["/new/h.txt"].read() == b"brand new h"
    c_old = {a["id"]: a for a in before["/dogs/c.jpg"].annotations}
    c_new = {a["id"]: a for a in after["/dogs/c.jpg"].annotations}
    kept = [aid for aid in c_new if aid in c_old]
    assert len(kept) == 1 and len(c_new) == 2
    assert c_new[kept[0]]["label"] == "puppy" and c_new[kept[0]]["metadata"]["system"]["status"] == "approved"
    (fresh,) = [a for aid, a in c_new.items() if aid not in c_old]
    assert fresh["label"] == "nose" and fresh["coordinates"] == {"x": 3, "y": 3}
    assert after["/dogs/d.jpg"].metadata["user"] == {"split": "train", "score": 1}
    assert after["/e.txt"].status == {"task-1": "completed"}
    assert after["/f.txt"].status == {"task-2": "discard"}
    assert after["/g.txt"].hidden is True
    h = after["/new/h.txt"]
    assert [a["label"] for a in h.annotations] == ["cat"] and h.metadata["user"] == {"source": "manual"}
    assert after["/i.txt"].annotations == [] and after["/i.txt"].read() == b"brand new i, no json"


# -- library ---------------------------------------------------------------------------------


def test_checkout_layout_and_clean_status(tmp_path: Path) -> None:
    store = Store.init(str(tmp_path / "s"))
    ds = seed(store)
    wd = tmp_path / "wd"
    stats = workdir.checkout(store, ds, None, str(wd))
    assert stats.items == len(SEED) and stats.json_files == len(SEED)
    for it in _all_items(ds):
        rel = it.filename[1:]
        assert (wd / "items" / rel).read_bytes() == it.read()
        assert load(wd / "json" / (rel + ".json")) == json.loads(json.dumps(it.to_json()))
        st = (wd / "items" / rel).stat()
        assert st.st_nlink == 1 and st.st_mode & 0o777 == 0o644
    meta = load(wd / ".dvs-checkout")
    assert meta["dataset"] == "pets" and meta["commit"] == ds.head_id.hex() and meta["dataset_id"] == ds.id
    assert os.path.realpath(meta["store"]) == os.path.realpath(store.path)
    s = workdir.status(str(wd))
    assert s.clean and s.read == 0
    assert workdir.commit(str(wd), "nothing") is None
    assert Dataset(store, ds.record).head_id == ds.head_id


def test_edit_status_commit_library(tmp_path: Path) -> None:
    store = Store.init(str(tmp_path / "s"))
    ds = seed(store)
    old = ds.head_id
    wd = tmp_path / "wd"
    workdir.checkout(store, "pets", None, str(wd))
    edit_folder(wd)
    s = workdir.status(str(wd))
    assert {k: s.to_json()[k] for k in EXPECTED_STATUS} == EXPECTED_STATUS
    assert s.ignored == []
    # status is read-only for the dataset
    assert Dataset(store, ds.record).head_id == old
    new = workdir.commit(str(wd / "items"), "edit in a folder")  # any folder inside works
    assert new is not None
    check_committed(store, ds, old, new)
    assert Dataset(store, ds.record).head_id == new
    assert load(wd / ".dvs-checkout")["commit"] == new.hex()
    after = workdir.status(str(wd))
    assert after.clean and after.read == 0, after
    # touched json files were rewritten from the new version (the new annotation got its id)
    c = load(wd / "json/dogs/c.jpg.json")
    assert all(a.get("id") for a in c["annotations"])
    assert (wd / "json/i.txt.json").exists() and not (wd / "json/cats/b.jpg.json").exists()
    assert load(wd / "json/cats/a.jpg.json")["binary"] == hash_bytes(b"new bytes of a").hex()


def test_commit_onto_a_moved_head_merges_three_way(tmp_path: Path) -> None:
    store = Store.init(str(tmp_path / "s"))
    ds = seed(store)
    first = ds.head_id
    with ds.edit("second") as e:
        e.add_bytes("/z.txt", b"z")
    second = Dataset(store, ds.record).head_id
    wd = tmp_path / "wd"
    workdir.checkout(store, ds, first, str(wd))
    assert not (wd / "items/z.txt").exists()
    (wd / "items/e.txt").write_bytes(b"changed")
    res = workdir.commit_folder(str(wd), "x")
    head = Dataset(store, ds.record)
    assert res.version == head.head_id and res.merged_onto == second
    v = head.version
    assert v.op == "merge" and v.parents == (second, res.folder_version)
    assert head.items.get(filepath="/z.txt").read() == b"z"            # the head's change kept
    assert head.items.get(filepath="/e.txt").read() == b"changed"      # the folder's change merged
    # The folder stays at its own version: clean, and a later commit merges again.
    assert workdir.status(str(wd)).clean
    (wd / "items/e.txt").write_bytes(b"again")
    workdir.commit(str(wd), "y")
    head = Dataset(store, ds.record)
    assert head.items.get(filepath="/e.txt").read() == b"again"
    assert head.items.get(filepath="/z.txt").read() == b"z"
    workdir.checkout(store, "pets@~2", None, str(tmp_path / "wd2"))


def test_commit_onto_a_moved_head_refused_on_conflict(tmp_path: Path) -> None:
    store = Store.init(str(tmp_path / "s"))
    ds = seed(store)
    wd = tmp_path / "wd"
    workdir.checkout(store, ds, None, str(wd))
    with ds.edit("someone else") as e:
        e.add_bytes("/e.txt", b"theirs")
    moved = Dataset(store, ds.record).head_id
    (wd / "items/e.txt").write_bytes(b"mine")
    with pytest.raises(ConflictError, match="moved since this folder was checked out") as ei:
        workdir.commit(str(wd), "x")
    assert "CONFLICT binary /e.txt" in ei.value.message
    assert Dataset(store, ds.record).head_id == moved
    assert workdir.status(str(wd)).modified == ["/e.txt"]


def test_json_rules(tmp_path: Path) -> None:
    store = Store.init(str(tmp_path / "s"))
    ds = seed(store)
    wd = tmp_path / "wd"
    workdir.checkout(store, ds, None, str(wd))
    # deleted json and fields left out change nothing; reformatting changes nothing
    (wd / "json/e.txt.json").unlink()
    dump(wd / "json/dogs/d.jpg.json", {"id": load(wd / "json/dogs/d.jpg.json")["id"]})
    c = load(wd / "json/dogs/c.jpg.json")
    (wd / "json/dogs/c.jpg.json").write_text(json.dumps(c))
    s = workdir.status(str(wd))
    assert s.clean, s
    # a json for nothing is listed as ignored
    dump(wd / "json/ghost.png.json", {"annotations": []})
    assert workdir.status(str(wd)).ignored == ["json/ghost.png.json"]
    # the status map and refs must agree when both are edited
    f = load(wd / "json/f.txt.json")
    f["status"] = {"task-2": "approved"}
    f["metadata"]["system"]["refs"][0]["metadata"]["status"] = "discard"
    dump(wd / "json/f.txt.json", f)
    with pytest.raises(UsageError, match="disagree"):
        workdir.status(str(wd))
    f["metadata"]["system"]["refs"][0]["metadata"]["status"] = "approved"
    dump(wd / "json/f.txt.json", f)
    assert workdir.status(str(wd)).json_changed == {"/f.txt": ["status"]}
    # a task set to null is removed
    f["status"] = {"task-2": None}
    del f["metadata"]["system"]["refs"]
    dump(wd / "json/f.txt.json", f)
    new = workdir.commit(str(wd), "drop task")
    assert new is not None
    assert Dataset(store, ds.record).items.get(filepath="/f.txt").status == {}


@pytest.mark.parametrize(
    "mutate, exc, match",
    [
        (lambda d: "{not json", ImportFormatError, "json/dogs/c.jpg.json: not valid JSON"),
        (lambda d: json.dumps(dict(d, id="0" * 32)), UsageError, "json/dogs/c.jpg.json: id '0000"),
        (lambda d: json.dumps(dict(d, filename="/dogs/other.jpg")), UsageError, "does not match its path"),
        (lambda d: json.dumps(dict(d, annotations={"a": 1})), ImportFormatError, "json/dogs/c.jpg.json: annotations"),
        (lambda d: json.dumps(dict(d, annotations=[{"type": "box"}])), ImportFormatError, "label must be a string"),
        (lambda d: json.dumps(dict(d, hidden="yes")), ImportFormatError, "hidden must be true or false"),
        (lambda d: json.dumps([1, 2]), ImportFormatError, "must be an object"),
        (lambda d: '{"hidden": NaN}', ImportFormatError, "NaN"),
        (lambda d: json.dumps(dict(d, annotations=[dict(d["annotations"][0], metadata={"system": {"status": "bogus"}})])),
         UsageError, "unknown status 'bogus'"),
    ],
)
def test_bad_json_is_a_clear_error(tmp_path: Path, mutate: Any, exc: type[DvsError], match: str) -> None:
    store = Store.init(str(tmp_path / "s"))
    ds = seed(store)
    head = ds.head_id
    wd = tmp_path / "wd"
    workdir.checkout(store, ds, None, str(wd))
    p = wd / "json/dogs/c.jpg.json"
    p.write_text(mutate(load(p)))
    with pytest.raises(exc, match=match):
        workdir.status(str(wd))
    with pytest.raises(exc, match=match):
        workdir.commit(str(wd), "x")
    assert Dataset(store, ds.record).head_id == head


def test_new_item_json_with_an_id_is_refused(tmp_path: Path) -> None:
    store = Store.init(str(tmp_path / "s"))
    ds = seed(store)
    wd = tmp_path / "wd"
    workdir.checkout(store, ds, None, str(wd))
    shutil.copy(wd / "items/e.txt", wd / "items/copy.txt")
    shutil.copy(wd / "json/e.txt.json", wd / "json/copy.txt.json")
    with pytest.raises(UsageError, match="new item"):
        workdir.status(str(wd))


def test_missing_checkout_file_and_unknown_dataset(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="not a dvs working folder"):
        workdir.status(str(tmp_path))
    store = Store.init(str(tmp_path / "s"))
    ds = seed(store)
    wd = tmp_path / "wd"
    workdir.checkout(store, ds, None, str(wd))
    store.datasets.delete("pets")
    with pytest.raises(NotFoundError, match="no longer exists"):
        workdir.status(str(wd))
    (wd / ".dvs-checkout").write_text("{}")
    with pytest.raises(UsageError, match="malformed"):
        workdir.status(str(wd))


def test_checkout_refuses_non_empty_folder(tmp_path: Path) -> None:
    store = Store.init(str(tmp_path / "s"))
    ds = seed(store)
    wd = tmp_path / "wd"
    wd.mkdir()
    (wd / "keep.txt").write_text("mine")
    with pytest.raises(UsageError, match="not empty"):
        workdir.checkout(store, ds, None, str(wd))
    assert sorted(os.listdir(wd)) == ["keep.txt"]
    workdir.checkout(store, ds, None, str(wd), force=True)
    assert (wd / "keep.txt").read_text() == "mine"
    with pytest.raises(UsageError, match="inside the store"):
        workdir.checkout(store, ds, None, str(tmp_path / "s/.dvs/x"))


def test_force_into_a_working_folder_leaves_exactly_the_version(tmp_path: Path) -> None:
    # The audit's case: a working folder at the head, then --force to an older version kept
    # the head's files, and the stale json (an id the older version lacks) failed status.
    store = Store.init(str(tmp_path / "s"))
    ds = seed(store)
    old = ds.head_id
    with ds.edit("more") as e:
        e.add_bytes("/new.png", b"new")
        e.add_bytes("/deep/er/z.txt", b"z")
        e.delete("/e.txt")
    sp = str(tmp_path / "s")
    wd = tmp_path / "wd"
    assert run_dvs("checkout", "pets", str(wd), cwd=sp).rc == 0
    (wd / "notes.txt").write_text("mine, outside items/ and json/")
    (wd / "items/mine.txt").write_bytes(b"an uncommitted new item")
    (wd / "json/readme.txt").write_text("not a json of any item")
    (wd / "items/cats/a.jpg").write_bytes(b"an uncommitted change")
    (wd / "items/dogs/c.jpg").unlink()
    r = run_dvs("checkout", f"pets@{old.hex()[:12]}", str(wd), "--force", cwd=sp)
    assert r.rc == 0, r.err
    r = run_dvs("status", str(wd), "--json")
    assert r.rc == 0, r.err
    assert json.loads(r.out)["clean"] is True and json.loads(r.out)["ignored"] == []
    assert sorted(str(p.relative_to(wd / "items")) for p in (wd / "items").rglob("*") if p.is_file()) == \
        sorted(fn[1:] for fn in SEED)
    assert sorted(str(p.relative_to(wd / "json")) for p in (wd / "json").rglob("*") if p.is_file()) == \
        sorted(fn[1:] + ".json" for fn in SEED)
    assert not (wd / "items/deep").exists() and not (wd / "json/deep").exists()
    assert (wd / "notes.txt").read_text() == "mine, outside items/ and json/"
    assert (wd / "items/cats/a.jpg").read_bytes() == b"bytes of /cats/a.jpg"
    # and back to the head: the older version's e.txt goes, the head's files come back
    assert run_dvs("checkout", "pets", str(wd), "--force", cwd=sp).rc == 0
    assert workdir.status(str(wd)).clean
    assert not (wd / "items/e.txt").exists() and (wd / "items/deep/er/z.txt").read_bytes() == b"z"


def test_force_into_a_folder_that_is_not_a_working_folder_deletes_nothing(tmp_path: Path) -> None:
    store = Store.init(str(tmp_path / "s"))
    ds = seed(store)
    wd = tmp_path / "wd"
    (wd / "items").mkdir(parents=True)
    (wd / "items/theirs.jpg").write_bytes(b"a file of the user's")
    workdir.checkout(store, ds, None, str(wd), force=True)
    assert (wd / "items/theirs.jpg").read_bytes() == b"a file of the user's"
    assert workdir.status(str(wd)).added == ["/theirs.jpg"]


def _corrupt_blob(store: Store, data: bytes) -> None:
    from dvstore.storage.blobs import SMALL_MAX

    assert len(data) > SMALL_MAX  # a blob file
    p = Path(store.repo.blobs.path_for(hash_bytes(data)))
    os.chmod(p, 0o644)
    raw = bytearray(p.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    p.write_bytes(bytes(raw))
    os.chmod(p, 0o444)


def test_failed_checkout_into_a_new_or_empty_folder_leaves_nothing(tmp_path: Path) -> None:
    store = Store.init(str(tmp_path / "s"))
    ds = seed(store)
    big = os.urandom(300 * 1024)
    with ds.edit("big") as e:
        e.add_bytes("/zz/big.bin", big)  # last in name order: everything before it is written
    _corrupt_blob(store, big)
    sp = str(tmp_path / "s")
    new = tmp_path / "new/nested/wd"
    r = run_dvs("checkout", "pets", str(new), cwd=sp)
    assert r.rc == 6 and "corrupt" in r.err, r.err
    assert not (tmp_path / "new").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    for _ in range(2):  # a retry is the same checkout again, not "not empty"
        r = run_dvs("checkout", "pets", str(empty), cwd=sp)
        assert r.rc == 6 and "corrupt" in r.err, r.err
        assert os.listdir(empty) == []
    with pytest.raises(DvsError):
        workdir.checkout(store, ds, None, str(empty), force=True)
    assert os.listdir(empty) == []


def test_failed_force_checkout_leaves_no_working_folder(tmp_path: Path) -> None:
    store = Store.init(str(tmp_path / "s"))
    ds = seed(store)
    sp = str(tmp_path / "s")
    wd = tmp_path / "wd"
    assert run_dvs("checkout", "pets", str(wd), cwd=sp).rc == 0
    big = os.urandom(300 * 1024)
    with ds.edit("big") as e:
        e.add_bytes("/zz/big.bin", big)
    _corrupt_blob(store, big)
    r = run_dvs("checkout", "pets", str(wd), "--force", cwd=sp)
    assert r.rc == 6 and "corrupt" in r.err, r.err
    assert not (wd / ".dvs-checkout").exists()  # neither version's working folder
    r = run_dvs("status", str(wd))
    assert r.rc == 3 and "not a dvs working folder" in r.err


def test_hostile_file_names_in_items_are_refused(tmp_path: Path) -> None:
    store = Store.init(str(tmp_path / "s"))
    ds = seed(store)
    head = ds.head_id
    wd = tmp_path / "wd"
    workdir.checkout(store, ds, None, str(wd))
    for bad in ["a\\b", "tab\there", "nl\nx", "esc\x1b[31m"]:
        p = wd / "items" / bad
        p.write_bytes(b"x")
        with pytest.raises(InvalidNameError, match="hostile file name"):
            workdir.status(str(wd))
        with pytest.raises(InvalidNameError):
            workdir.commit(str(wd), "x")
        p.unlink()
    assert workdir.status(str(wd)).clean
    assert Dataset(store, ds.record).head_id == head


# -- no file contents read for an unchanged folder ------------------------------------------------


def _big_dataset(store: Store, n: int) -> Dataset:
    ds = store.datasets.create("many")
    with ds.edit("many") as e:
        for i in range(n):
            e.add_bytes(f"/d{i % 7}/f{i:06d}.bin", i.to_bytes(4, "big") * 3)
    return ds


def test_unchanged_folder_reads_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store.init(str(tmp_path / "s"))
    ds = _big_dataset(store, 400)
    wd = tmp_path / "wd"
    workdir.checkout(store, ds, None, str(wd))
    opened: list[str] = []
    from dvstore import safefs

    real_open = safefs.open_in

    def spy_open(root_fd: int, parts: list[str], display: str) -> int:
        if parts[0] in ("items", "json"):
            opened.append("/".join(parts))
        return real_open(root_fd, parts, display)

    monkeypatch.setattr(safefs, "open_in", spy_open)  # every read of a folder file opens through it
    monkeypatch.setattr(workdir, "open_in", spy_open)
    s = workdir.status(str(wd))
    assert s.clean and s.read == 0
    assert opened == []
    # the spy sees the files that must be read: it can fail
    (wd / "items/d1/f000001.bin").write_bytes(b"changed!!!!!")
    os.utime(wd / "json/d2/f000002.bin.json")  # same content, new mtime: read once, then trusted
    s = workdir.status(str(wd))
    assert s.modified == ["/d1/f000001.bin"] and not s.json_changed and s.read == 2
    assert sorted(opened) == ["items/d1/f000001.bin", "json/d2/f000002.bin.json"]
    opened.clear()
    s = workdir.status(str(wd))
    assert s.modified == ["/d1/f000001.bin"] and s.read == 0 and opened == []  # its new hash is cached
    assert workdir.commit(str(wd), "one") is not None
    opened.clear()
    s = workdir.status(str(wd))
    assert s.clean and s.read == 0 and opened == []


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_unchanged_folder_opens_no_file_strace(tmp_path: Path) -> None:
    store = Store.init(str(tmp_path / "s"))
    ds = _big_dataset(store, 300)
    wd = tmp_path / "wd"
    workdir.checkout(store, ds, None, str(wd))

    def opened_files() -> list[str]:
        log = tmp_path / "strace.log"
        env = dict(os.environ)
        env.pop("DVS_STORE", None)
        p = subprocess.run(["strace", "-f", "-qq", "-e", "trace=open,openat,openat2", "-o", str(log),
                            sys.executable, "-m", "dvstore", "status", str(wd)],
                           capture_output=True, text=True, env=env, timeout=120)
        assert p.returncode == 0, p.stderr
        assert "Traceback" not in p.stderr
        out = []
        for line in log.read_text().splitlines():
            if ".bin" in line and "O_DIRECTORY" not in line and "ENOENT" not in line:
                out.append(line)
        return out

    assert opened_files() == []
    (wd / "items/d3/f000003.bin").write_bytes(b"modified")
    lines = opened_files()
    assert any("f000003.bin" in ln for ln in lines), lines  # the check can fail
    assert all("f000003.bin" in ln for ln in lines), lines


@pytest.mark.slow
def test_unchanged_100k_folder_reads_no_file(tmp_path: Path) -> None:
    store = Store.init(str(tmp_path / "s"))
    ds = _big_dataset(store, 100_000)
    wd = tmp_path / "wd"
    workdir.checkout(store, ds, None, str(wd))
    t = time.monotonic()
    s = workdir.status(str(wd))
    assert s.clean and s.read == 0
    assert time.monotonic() - t < 120


# -- through the real dvs command -----------------------------------------------------------------


def test_cli_checkout_edit_status_commit(tmp_path: Path) -> None:
    store = Store.init(str(tmp_path / "s"))
    ds = seed(store)
    old = ds.head_id
    sp = str(tmp_path / "s")
    wd = tmp_path / "wd"
    r = run_dvs("checkout", "pets", str(wd), "--json", cwd=sp)
    assert r.rc == 0, r.err
    assert json.loads(r.out)["items"] == len(SEED)
    r = run_dvs("status", "--exit-code", cwd=str(wd))
    assert r.rc == 0 and "clean" in r.out, r.err
    edit_folder(wd)
    r = run_dvs("status", str(wd), "--json", "--exit-code", cwd=str(tmp_path))
    assert r.rc == 1, r.err
    doc = json.loads(r.out)
    assert {k: doc[k] for k in EXPECTED_STATUS} == EXPECTED_STATUS and doc["clean"] is False
    r = run_dvs("status", str(wd), cwd=str(tmp_path))
    assert r.rc == 0 and "modified: /cats/a.jpg" in r.out and "json:     /dogs/c.jpg (annotations)" in r.out
    r = run_dvs("commit", str(wd), "-m", "folder edits", "--json", cwd=str(tmp_path))
    assert r.rc == 0, r.err
    doc = json.loads(r.out)
    assert doc["parent"] == old.hex() and doc["version"]
    new = bytes.fromhex(doc["version"])
    check_committed(store, ds, old, new)
    r = run_dvs("log", "pets", "--json", cwd=sp)
    assert json.loads(r.out)[0]["message"] == "folder edits"
    r = run_dvs("status", str(wd), "--exit-code", "--json")
    assert r.rc == 0 and json.loads(r.out)["clean"] is True
    r = run_dvs("commit", str(wd))
    assert r.rc == 0 and "nothing to commit" in r.out


def test_cli_commit_when_head_moved(tmp_path: Path) -> None:
    store = Store.init(str(tmp_path / "s"))
    ds = seed(store)
    wd = tmp_path / "wd"
    assert run_dvs("checkout", "pets", str(wd), cwd=str(tmp_path / "s")).rc == 0
    (wd / "items/e.txt").write_bytes(b"mine")
    with ds.edit("someone else") as e:
        e.add_bytes("/other.txt", b"theirs")
    # A clean three-way merge succeeds.
    r = run_dvs("commit", str(wd), "-m", "late")
    assert r.rc == 0, r.err
    head = Dataset(store, ds.record)
    assert head.version.op == "merge" and head.items.get(filepath="/e.txt").read() == b"mine"
    # A conflicting one is refused with exit 5 and lists the conflict.
    (wd / "items/e.txt").write_bytes(b"mine again")
    with ds.edit("someone else again") as e:
        e.add_bytes("/e.txt", b"theirs")
    moved = Dataset(store, ds.record).head_id
    r = run_dvs("commit", str(wd), "-m", "late")
    assert r.rc == 5, (r.rc, r.err)
    assert r.err.startswith("error: dataset pets moved since this folder was checked out")
    assert "CONFLICT binary /e.txt" in r.err
    assert "hint:" in r.err
    assert Dataset(store, ds.record).head_id == moved
    r = run_dvs("status", str(wd), "--json")
    assert r.rc == 0 and json.loads(r.out)["modified"] == ["/e.txt"]


def test_cli_errors(tmp_path: Path) -> None:
    store = Store.init(str(tmp_path / "s"))
    seed(store)
    sp = str(tmp_path / "s")
    r = run_dvs("status", str(tmp_path))
    assert r.rc == 3 and "not a dvs working folder" in r.err
    r = run_dvs("checkout", "nope", str(tmp_path / "x"), cwd=sp)
    assert r.rc == 3 and "error:" in r.err
    wd = tmp_path / "wd"
    assert run_dvs("checkout", "pets", str(wd), cwd=sp).rc == 0
    r = run_dvs("checkout", "pets", str(wd), cwd=sp)
    assert r.rc == 2 and "not empty" in r.err and "--force" in r.err
    assert run_dvs("checkout", "pets", str(wd), "--force", cwd=sp).rc == 0
    (wd / "json/e.txt.json").write_text("{oops")
    r = run_dvs("status", str(wd))
    assert r.rc == 2 and "json/e.txt.json" in r.err and r.err.count("\n") <= 2
    r = run_dvs("commit", str(wd))
    assert r.rc == 2 and "json/e.txt.json" in r.err
    (wd / "json/e.txt.json").unlink()
    (wd / "items/back\\slash").write_bytes(b"x")
    r = run_dvs("status", str(wd))
    assert r.rc == 2 and "backslash" in r.err
    (wd / "items/back\\slash").unlink()
    run_dvs("delete", "pets", cwd=sp)
    r = run_dvs("status", str(wd))
    assert r.rc == 3 and "no longer exists" in r.err


def test_checkout_json_shape_is_item_json(tmp_path: Path) -> None:
    store = Store.init(str(tmp_path / "s"))
    ds = seed(store)
    wd = tmp_path / "wd"
    workdir.checkout(store, ds, None, str(wd))
    repo = store.repo
    for iid, irec, ann, meta, st in ds.items.iter_records():
        annset = repo.objects.get(ann, b"annset") if ann else None
        want = workdir.render_json(item_json(iid, irec, annset, meta, st))
        assert (wd / "json" / (irec["filename"][1:] + ".json")).read_bytes() == want


def test_untouched_annotations_keep_their_stored_form(tmp_path: Path) -> None:
    store = Store.init(str(tmp_path / "s"))
    ds = store.datasets.create("pets")
    with ds.edit("seed") as e:
        e.add_bytes("/x.jpg", b"x")
        keep = e.add_annotation("/x.jpg", {"type": "class", "label": "keep"})  # no attributes/coordinates keys
        change = e.add_annotation("/x.jpg", {"type": "class", "label": "change"})
    old = Dataset(store, ds.record)
    old_set = store.repo.objects.get(next(old.items.iter_records())[2], b"annset")
    wd = tmp_path / "wd"
    workdir.checkout(store, ds, None, str(wd))
    doc = load(wd / "json/x.jpg.json")
    for a in doc["annotations"]:
        if a["id"] == change:
            a["label"] = "changed"
    dump(wd / "json/x.jpg.json", doc)
    assert workdir.commit(str(wd), "one label") is not None
    new_set = store.repo.objects.get(next(Dataset(store, ds.record).items.iter_records())[2], b"annset")
    assert set(new_set) == {keep, change}
    assert codec.encode(new_set[keep]) == codec.encode(old_set[keep])
    assert new_set[change]["label"] == "changed"


def test_clean_folder_commits_nothing_even_behind_head(tmp_path: Path) -> None:
    store = Store.init(str(tmp_path / "s"))
    ds = seed(store)
    wd = tmp_path / "wd"
    workdir.checkout(store, ds, None, str(wd))
    with ds.edit("elsewhere") as e:
        e.add_bytes("/other.txt", b"o")
    r = run_dvs("commit", str(wd))
    assert r.rc == 0 and "nothing to commit" in r.out
