"""G11 (RELIABILITY §3.1, §5.11): hostile item names and planted symlinks never let a
checkout write outside its folder; copies are real files; store blobs are read-only."""

from __future__ import annotations

import os
import stat
import subprocess
import unicodedata
from pathlib import Path
from typing import Any

import pytest

from dvstore import codec, safefs, workdir
from dvstore.api import Dataset, Store
from dvstore.errors import CorruptObjectError, DvsError, InvalidNameError, UsageError
from dvstore.hashing import hash_bytes
from dvstore.model import new_item_id, normalize_filename
from dvstore.storage.blobs import SMALL_MAX
from tests.conftest import run_dvs

pytestmark = pytest.mark.timeout(120)

NFC_E = unicodedata.normalize("NFC", "\u00e9")
NFD_E = unicodedata.normalize("NFD", "\u00e9")

# Each is refused by normalize_filename (ingest) and, written into a tree by hand, by checkout.
HOSTILE: list[str] = [
    "../x",
    "../../etc/passwd",
    "/../x",
    "a/../../x",
    "a/..",
    "a/./b",
    "./a",
    "/./a",
    ".",
    "..",
    "/..",
    "",
    "/",
    "//etc/passwd",
    "a//b",
    "a/",
    "/a/b/",
    "C:\\x",
    "c:/windows/system32",
    "\\\\srv\\x",
    "a\\..\\b",
    "..\\x",
    "a\x00b",
    "\n",
    "a\nb",
    "a\rb",
    "a\tb",
    "a\x1b[31mb",
    "a\x7fb",
    "a\x01b",
    "x" * 256,
    "a/" + "é" * 128,  # 256 bytes in one component
    "/".join(["d" * 200] * 25),  # a 5,025-byte path of valid components
    ".dvs/config.json",
    "a/.dvs/x",
    ".dvs",
    ".dvs-checkout",
    "sub/.dvs-checkout",
    "a/\udcff",  # not UTF-8 (a lone surrogate)
]
# The checkout-side catalogue: the names a tree can hold at all (msgpack needs valid UTF-8),
# plus names that normalize_filename would rewrite, so only a hand-made tree can hold them.
NOT_CANONICAL = ["a/b", NFD_E, f"/x/{NFD_E}.jpg", "no-slash.txt"]
CRAFTABLE = [n for n in HOSTILE if "\udcff" not in n] + NOT_CANONICAL


def test_catalogue_size() -> None:
    assert len(HOSTILE) >= 30 and len(CRAFTABLE) >= 30


# -- helpers ---------------------------------------------------------------------------------


def tree_digest(root: Path) -> dict[str, Any]:
    """Listing, modes, mtimes and blake3 of everything below ``root`` (links not followed)."""
    out: dict[str, Any] = {".": os.lstat(root).st_mtime_ns}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            st = os.lstat(p)
            rel = str(p.relative_to(root))
            if stat.S_ISREG(st.st_mode):
                out[rel] = (st.st_mode, st.st_mtime_ns, st.st_size, hash_bytes(p.read_bytes()).hex())
            elif stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p), st.st_mtime_ns)
            else:
                out[rel] = (st.st_mode, st.st_mtime_ns)
    return out


@pytest.fixture
def canary(tmp_path: Path) -> Path:
    c = tmp_path / "canary"
    (c / "sub").mkdir(parents=True)
    (c / "f").write_bytes(b"canary file")
    (c / "sub" / "x.txt").write_bytes(b"do not touch")
    (c / "passwd").write_bytes(b"root:x:0:0")
    os.utime(c / "f", ns=(1_000_000_000, 1_000_000_000))
    return c


def crafted(store: Store, filenames: list[str], name: str = "evil") -> Dataset:
    """A version whose items layer names ``filenames`` as given: records poked straight into
    the Editor's change set, bypassing every API check, then published."""
    ds = store.datasets.create(name)
    with ds.edit("hand-crafted") as e:
        e.add_bytes("/zz-benign.txt", b"benign")
        for fn in filenames:
            data = f"payload {fn!r}".encode()
            blob = e.repo.blobs.add_bytes(data)
            e.changes["items"][new_item_id()] = {
                "filename": fn, "blob": blob, "size": len(data), "mimetype": "text/plain", "system": {},
                "hidden": False, "createdAt": "",
            }
    head = Dataset(store, ds.record)
    assert sorted(it["filename"] for _, it, *_ in head.items.iter_records()) == sorted([*filenames, "/zz-benign.txt"])
    return head


def files_below(root: Path) -> list[str]:
    if not root.exists():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir())


# -- names ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    s = Store.init(str(tmp_path_factory.mktemp("ingest")))
    s.datasets.create("ds")
    return s


@pytest.mark.parametrize("name", HOSTILE, ids=[repr(n)[:40] for n in HOSTILE])
def test_hostile_name_rejected_at_ingest(name: str, shared_store: Store) -> None:
    with pytest.raises(InvalidNameError):
        normalize_filename(name)
    ds = shared_store.datasets.get("ds")
    head = ds.head_id
    with pytest.raises(InvalidNameError):
        with ds.edit("hostile") as e:
            e.add_bytes(name, b"x")
    assert Dataset(shared_store, ds.record).head_id == head


@pytest.mark.parametrize("name", CRAFTABLE, ids=[repr(n)[:40] for n in CRAFTABLE])
def test_hostile_name_rejected_at_checkout(name: str, tmp_path: Path, canary: Path) -> None:
    try:
        codec.encode(name)
    except DvsError:
        pytest.skip("not storable")
    store = Store.init(str(tmp_path / "store"))
    ds = crafted(store, [name])
    before = tree_digest(canary)
    top = sorted(os.listdir(tmp_path))
    target = tmp_path / "work" / "target"
    with pytest.raises(InvalidNameError):
        workdir.checkout(store, ds, None, str(target))
    assert tree_digest(canary) == before
    assert sorted(os.listdir(tmp_path)) == top  # nothing created beside the target either
    assert files_below(tmp_path / "work") == []


def test_hostile_name_rejected_by_cli_checkout(tmp_path: Path, canary: Path) -> None:
    store = Store.init(str(tmp_path / "store"))
    crafted(store, ["../canary/f", "a/../../canary/x"])
    before = tree_digest(canary)
    r = run_dvs("checkout", "evil", str(tmp_path / "target"), cwd=str(tmp_path / "store"))
    assert r.rc == 2 and r.err.startswith("error: ") and "hostile item name" in r.err
    assert tree_digest(canary) == before
    assert files_below(tmp_path / "target") == []


@pytest.mark.parametrize(
    "names, match",
    [
        (["/a", "/a/b"], "both an item and a folder"),
        (["/d/x", "/d/x/y/z"], "both an item and a folder"),
        ([f"/{NFC_E}", f"/{NFD_E}"], "canonical"),
        (["/dup.txt", "/dup.txt"], "two items named"),
        (["/zz-benign.txt"], "two items named"),
    ],
)
def test_clashing_names_rejected_at_checkout(names: list[str], match: str, tmp_path: Path, canary: Path) -> None:
    store = Store.init(str(tmp_path / "store"))
    ds = store.datasets.create("evil")
    with ds.edit("clash") as e:
        e.add_bytes("/zz-benign.txt", b"benign")
        for fn in names:
            blob = e.repo.blobs.add_bytes(fn.encode())
            e.changes["items"][new_item_id()] = {"filename": fn, "blob": blob, "size": len(fn.encode()),
                                                 "mimetype": "text/plain", "system": {}, "hidden": False}
    before = tree_digest(canary)
    with pytest.raises(InvalidNameError, match=match):
        workdir.checkout(store, Dataset(store, ds.record), None, str(tmp_path / "target"))
    assert tree_digest(canary) == before
    assert files_below(tmp_path / "target") == []


def test_nfc_nfd_siblings_and_file_folder_clash_refused_by_dvs_add(tmp_path: Path) -> None:
    store = Store.init(str(tmp_path / "store"))
    store.datasets.create("ds")
    src = tmp_path / "src"
    src.mkdir()
    (src / NFC_E).write_bytes(b"1")
    (src / NFD_E).write_bytes(b"2")
    r = run_dvs("add", "ds", str(src), cwd=str(tmp_path / "store"))
    assert r.rc == 2 and "same item" in r.err


def test_file_and_folder_clash_rejected_at_ingest(tmp_path: Path) -> None:
    store = Store.init(str(tmp_path / "store"))
    ds = store.datasets.create("ds")
    with pytest.raises(InvalidNameError):
        with ds.edit("clash") as e:
            e.add_bytes("/a", b"1")
            e.add_bytes("/a/b", b"2")


@pytest.mark.parametrize("bad", [b"a\\b", b"a\nb", b"a\x01b", b"\x7f", b"\xff\xfe", b"C:\\x"])
def test_hostile_names_on_disk_rejected_by_add_status_commit(bad: bytes, tmp_path: Path) -> None:
    store = Store.init(str(tmp_path / "store"))
    ds = store.datasets.create("ds")
    with ds.edit("seed") as e:
        e.add_bytes("/ok.txt", b"ok")
    head = Dataset(store, ds.record).head_id
    src = tmp_path / "src"
    src.mkdir()
    with open(os.path.join(os.fsencode(src), bad), "wb") as f:
        f.write(b"x")
    r = run_dvs("add", "ds", str(src), cwd=str(tmp_path / "store"))
    assert r.rc == 2 and r.err.startswith("error: "), r.err
    wd = tmp_path / "wd"
    workdir.checkout(store, ds, None, str(wd))
    with open(os.path.join(os.fsencode(wd / "items"), bad), "wb") as f:
        f.write(b"x")
    with pytest.raises(InvalidNameError):
        workdir.status(str(wd))
    r = run_dvs("commit", str(wd))
    assert r.rc == 2 and "hostile file name" in r.err
    assert Dataset(store, ds.record).head_id == head


def test_reserved_names_in_items_are_refused(tmp_path: Path) -> None:
    store = Store.init(str(tmp_path / "store"))
    ds = store.datasets.create("ds")
    with ds.edit("seed") as e:
        e.add_bytes("/ok.txt", b"ok")
    wd = tmp_path / "wd"
    workdir.checkout(store, ds, None, str(wd))
    (wd / "items/.dvs").mkdir()
    (wd / "items/.dvs/config.json").write_text("{}")
    with pytest.raises(InvalidNameError, match="reserved"):
        workdir.status(str(wd))


def test_absolute_item_names_stay_inside_items(tmp_path: Path, canary: Path) -> None:
    """Item names start with "/" by design: "/etc/passwd" is DIR/items/etc/passwd."""
    store = Store.init(str(tmp_path / "store"))
    ds = store.datasets.create("ds")
    with ds.edit("seed") as e:
        e.add_bytes("/etc/passwd", b"harmless")
    before = tree_digest(canary)
    workdir.checkout(store, ds, None, str(tmp_path / "t"))
    assert (tmp_path / "t/items/etc/passwd").read_bytes() == b"harmless"
    assert tree_digest(canary) == before


def test_json_name_clash_skips_that_json(tmp_path: Path) -> None:
    store = Store.init(str(tmp_path / "store"))
    ds = store.datasets.create("ds")
    with ds.edit("seed") as e:
        e.add_bytes("/a", b"1")
        e.add_bytes("/a.json/x", b"2")
    stats = workdir.checkout(store, ds, None, str(tmp_path / "t"))
    assert stats.skipped_json == ["/a"]
    assert (tmp_path / "t/json/a.json/x.json").is_file()
    assert workdir.status(str(tmp_path / "t")).clean


# -- planted symlinks --------------------------------------------------------------------------------


def small_dataset(store: Store) -> Dataset:
    ds = store.datasets.create("ds")
    with ds.edit("seed") as e:
        e.add_bytes("/top.txt", b"top")
        e.add_bytes("/sub/x.txt", b"new x")
        e.add_bytes("/sub/deeper/y.txt", b"y")
        e.add_bytes("/f", b"new f")
    return Dataset(store, ds.record)


@pytest.mark.parametrize(
    "plant",
    [
        lambda t, c: (t / "items").symlink_to(c, target_is_directory=True),
        lambda t, c: ((t / "items").mkdir(), (t / "items/sub").symlink_to(c, target_is_directory=True)),
        lambda t, c: ((t / "items/sub").mkdir(parents=True),
                      (t / "items/sub/deeper").symlink_to(c / "sub", target_is_directory=True)),
        lambda t, c: ((t / "items").mkdir(), (t / "items/f").symlink_to(c / "f")),
        lambda t, c: ((t / "items/sub").mkdir(parents=True), (t / "items/sub/x.txt").symlink_to(c / "sub/x.txt")),
        lambda t, c: (t / "json").symlink_to(c, target_is_directory=True),
        lambda t, c: ((t / "json").mkdir(), (t / "json/sub").symlink_to(c, target_is_directory=True)),
        lambda t, c: ((t / "json").mkdir(), (t / "json/f.json").symlink_to(c / "f")),
        lambda t, c: (t / ".dvs-checkout").symlink_to(c / "f"),
    ],
    ids=["items->canary", "items/sub->canary", "items/sub/deeper->canary/sub", "items/f->canary/f",
         "items/sub/x.txt->canary/sub/x.txt", "json->canary", "json/sub->canary", "json/f.json->canary/f",
         ".dvs-checkout->canary/f"],
)
def test_planted_symlinks_are_never_followed(plant: Any, tmp_path: Path, canary: Path) -> None:
    store = Store.init(str(tmp_path / "store"))
    ds = small_dataset(store)
    target = tmp_path / "target"
    target.mkdir()
    plant(target, canary)
    before = tree_digest(canary)
    with pytest.raises(UsageError, match="not empty"):
        workdir.checkout(store, ds, None, str(target))
    assert tree_digest(canary) == before
    r = run_dvs("checkout", "ds", str(target), cwd=str(tmp_path / "store"))
    assert r.rc == 2 and "not empty" in r.err
    assert tree_digest(canary) == before
    # --force replaces the links themselves and writes real files and folders
    workdir.checkout(store, ds, None, str(target), force=True)
    assert tree_digest(canary) == before
    for dirpath, dirnames, filenames in os.walk(target, followlinks=False):
        for name in dirnames + filenames:
            assert not os.path.islink(os.path.join(dirpath, name)), os.path.join(dirpath, name)
    assert (target / "items/sub/x.txt").read_bytes() == b"new x"
    assert (target / "items/f").read_bytes() == b"new f"
    assert workdir.status(str(target)).clean


def test_force_never_deletes_a_real_file_in_the_way_of_a_folder(tmp_path: Path) -> None:
    store = Store.init(str(tmp_path / "store"))
    ds = small_dataset(store)
    target = tmp_path / "target"
    (target / "items").mkdir(parents=True)
    (target / "items/sub").write_bytes(b"user data")
    with pytest.raises(UsageError, match="in the way"):
        workdir.checkout(store, ds, None, str(target), force=True)
    assert (target / "items/sub").read_bytes() == b"user data"


def test_force_into_a_working_folder_removes_planted_links_never_their_targets(tmp_path: Path,
                                                                             canary: Path) -> None:
    # --force in a working folder deletes what the version does not have under items/ and
    # json/: a link there goes, the link itself; what it points at is never touched.
    store = Store.init(str(tmp_path / "store"))
    ds = small_dataset(store)
    target = tmp_path / "target"
    workdir.checkout(store, ds, None, str(target))
    (target / "items/stolen").symlink_to(canary, target_is_directory=True)
    (target / "items/sub/f").symlink_to(canary / "f")
    (target / "items/sub/deeper/more").mkdir()
    (target / "items/sub/deeper/more/p").symlink_to(canary / "passwd")
    (target / "json/sub").rename(target / "json-sub")
    (target / "json/sub").symlink_to(canary / "sub", target_is_directory=True)
    (target / "outside").symlink_to(canary, target_is_directory=True)  # not under items/ or json/
    before = tree_digest(canary)
    workdir.checkout(store, ds, None, str(target), force=True)
    assert tree_digest(canary) == before
    assert os.path.islink(target / "outside")
    for top in ("items", "json"):
        for dirpath, dirnames, filenames in os.walk(target / top, followlinks=False):
            for name in dirnames + filenames:
                assert not os.path.islink(os.path.join(dirpath, name)), os.path.join(dirpath, name)
    assert workdir.status(str(target)).clean
    assert files_below(target / "items") == ["f", "sub/deeper/y.txt", "sub/x.txt", "top.txt"]


def test_force_deletes_nothing_on_another_file_system(tmp_path: Path) -> None:
    store = Store.init(str(tmp_path / "store"))
    ds = small_dataset(store)
    target = tmp_path / "target"
    workdir.checkout(store, ds, None, str(target))
    mnt = target / "items/mnt"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.decode().strip()})")
    try:
        (mnt / "keep").write_bytes(b"on another file system")
        with pytest.raises(UsageError, match="another file system"):
            workdir.checkout(store, ds, None, str(target), force=True)
        assert (mnt / "keep").read_bytes() == b"on another file system"
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_symlinks_in_a_working_folder_are_refused_by_status_and_commit(tmp_path: Path, canary: Path) -> None:
    store = Store.init(str(tmp_path / "store"))
    ds = small_dataset(store)
    head = ds.head_id
    wd = tmp_path / "wd"
    workdir.checkout(store, ds, None, str(wd))
    before = tree_digest(canary)
    (wd / "items/stolen").symlink_to(canary / "passwd")
    with pytest.raises(UsageError, match="symbolic link"):
        workdir.status(str(wd))
    r = run_dvs("commit", str(wd), "-m", "steal")
    assert r.rc == 2 and "symbolic link" in r.err
    (wd / "items/stolen").unlink()
    os.rename(wd / "items/sub", wd / "sub-real")
    (wd / "items/sub").symlink_to(canary, target_is_directory=True)
    with pytest.raises(UsageError, match="symbolic link"):
        workdir.commit(str(wd), "steal")
    assert Dataset(store, ds.record).head_id == head
    assert tree_digest(canary) == before
    assert all(b"root:x" not in store.read_blob(it.binary) for it in Dataset(store, ds.record).items.list())


# -- copies, permissions, verification ----------------------------------------------------------------


def test_copies_are_real_files_and_store_blobs_are_read_only(tmp_path: Path) -> None:
    store = Store.init(str(tmp_path / "store"))
    ds = store.datasets.create("ds")
    big = os.urandom(SMALL_MAX + 4096)
    with ds.edit("seed") as e:
        e.add_bytes("/big.bin", big)
        e.add_bytes("/small.txt", b"small")
    blob = hash_bytes(big)
    blob_path = Path(store.repo.blobs.path_for(blob))
    assert blob_path.is_file() and stat.S_IMODE(blob_path.stat().st_mode) == 0o444
    old_umask = os.umask(0o077)
    try:
        workdir.checkout(store, ds, None, str(tmp_path / "wd"))
    finally:
        os.umask(old_umask)
    for rel in ("items/big.bin", "items/small.txt", "json/big.bin.json", "json/small.txt.json", ".dvs-checkout"):
        st = os.lstat(tmp_path / "wd" / rel)
        assert stat.S_ISREG(st.st_mode) and st.st_nlink == 1, rel
        assert stat.S_IMODE(st.st_mode) == 0o644, rel
    copy = tmp_path / "wd/items/big.bin"
    assert copy.read_bytes() == big
    assert copy.stat().st_ino != blob_path.stat().st_ino
    copy.write_bytes(b"edited copy")  # editing the copy never touches the store
    assert blob_path.read_bytes() == big
    assert stat.S_IMODE(blob_path.stat().st_mode) == 0o444


def test_corrupt_blob_fails_checkout_without_a_bad_file(tmp_path: Path) -> None:
    store = Store.init(str(tmp_path / "store"))
    ds = store.datasets.create("ds")
    big = os.urandom(SMALL_MAX + 10_000)
    with ds.edit("seed") as e:
        e.add_bytes("/big.bin", big)
        e.add_bytes("/a.txt", b"fine")
    p = Path(store.repo.blobs.path_for(hash_bytes(big)))
    os.chmod(p, 0o644)
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x01
    p.write_bytes(bytes(data))
    os.chmod(p, 0o444)
    with pytest.raises(CorruptObjectError):
        workdir.checkout(store, ds, None, str(tmp_path / "wd"))
    assert not (tmp_path / "wd/items/big.bin").exists()
    assert not (tmp_path / "wd/.dvs-checkout").exists()
    leftovers = [n for n in files_below(tmp_path / "wd") if safefs.TMP_PREFIX in n]
    assert leftovers == []
    r = run_dvs("checkout", "ds", str(tmp_path / "wd2"), cwd=str(tmp_path / "store"))
    assert r.rc == 6 and "corrupt" in r.err
    assert not (tmp_path / "wd2/items/big.bin").exists()
    r = run_dvs("checkout", "ds", str(tmp_path / "wd3"), "--force", cwd=str(tmp_path / "store"))
    assert r.rc == 6 and not (tmp_path / "wd3/items/big.bin").exists()
    assert [n for n in files_below(tmp_path / "wd3") if safefs.TMP_PREFIX in n] == []
