"""The store through the real ``dvs`` command: init, create, add, ls, show, log, revisions."""

from __future__ import annotations

import json
import os
from pathlib import Path

from blake3 import blake3

from tests.conftest import run_dvs, write_files


def test_add_ls_show_log_round_trip(tmp_path: Path, dvs):
    data = tmp_path / "photos"
    write_files(data, {"cat/1.jpg": b"c1" * 100, "cat/2.jpg": b"c2" * 100, "dog/1.jpg": b"d1" * 100})
    assert dvs("create", "pets").rc == 0
    r = dvs("add", "pets", str(data), "-m", "first", "--json")
    assert r.rc == 0, r.err
    doc = json.loads(r.out)
    assert doc["files"] == 3 and doc["hashed"] == 3 and doc["version"]
    items = json.loads(dvs("ls", "pets", "--json").out)
    assert [i["filename"] for i in items] == ["/cat/1.jpg", "/cat/2.jpg", "/dog/1.jpg"]
    # A blob id equals b3sum of the file.
    assert items[0]["binary"] == blake3(b"c1" * 100).hexdigest()
    for key in ("id", "filename", "binary", "size", "metadata", "annotations", "status"):
        assert key in items[0]
    v = json.loads(dvs("show", "pets", "--json").out)
    for key in ("id", "parents", "op", "message", "time", "items", "annotations", "recipe"):
        assert key in v
    assert v["items"] == 3 and v["op"] == "commit" and v["message"] == "first"
    log = json.loads(dvs("log", "pets", "--json").out)
    assert [x["op"] for x in log] == ["commit", "create"]
    assert log[0]["parents"] == [log[1]["id"]]


def test_to_prefix_plain_file_and_replace_keeps_id(tmp_path: Path, dvs):
    write_files(tmp_path / "d", {"a.png": b"x" * 10})
    (tmp_path / "single.bin").write_bytes(b"s" * 5)
    dvs("create", "ds")
    assert dvs("add", "ds", str(tmp_path / "d"), "--to", "/train").rc == 0
    assert dvs("add", "ds", str(tmp_path / "single.bin")).rc == 0
    items = {i["filename"]: i for i in json.loads(dvs("ls", "ds", "--json").out)}
    assert set(items) == {"/train/a.png", "/single.bin"}
    old_id = items["/train/a.png"]["id"]
    (tmp_path / "d" / "a.png").write_bytes(b"y" * 11)
    assert dvs("add", "ds", str(tmp_path / "d"), "--to", "/train").rc == 0
    new = {i["filename"]: i for i in json.loads(dvs("ls", "ds", "--json").out)}
    assert new["/train/a.png"]["id"] == old_id
    assert new["/train/a.png"]["size"] == 11


def test_re_adding_unchanged_files_makes_no_version_and_hashes_nothing(tmp_path: Path, dvs):
    write_files(tmp_path / "d", {f"f{i}.bin": os.urandom(100) for i in range(20)})
    old = 1_600_000_000
    for p in (tmp_path / "d").iterdir():
        os.utime(p, (old, old))  # not "racily clean"
    dvs("create", "ds")
    dvs("add", "ds", str(tmp_path / "d"))
    r = dvs("add", "ds", str(tmp_path / "d"), "--json")
    doc = json.loads(r.out)
    assert doc["version"] is None and doc["hashed"] == 0 and doc["cached"] == 20
    assert len(json.loads(dvs("log", "ds", "--json").out)) == 2


def test_revisions(tmp_path: Path, dvs):
    dvs("create", "ds")
    (tmp_path / "a").write_bytes(b"1")
    dvs("add", "ds", str(tmp_path / "a"))
    (tmp_path / "b").write_bytes(b"2")
    dvs("add", "ds", str(tmp_path / "b"))
    log = json.loads(dvs("log", "ds", "--json").out)
    assert json.loads(dvs("show", "ds@~1", "--json").out)["id"] == log[1]["id"]
    assert json.loads(dvs("show", "ds@~2", "--json").out)["id"] == log[2]["id"]
    assert json.loads(dvs("show", f"ds@{log[1]['id'][:8]}", "--json").out)["id"] == log[1]["id"]
    assert json.loads(dvs("ls", "ds@~1", "--json").out)[0]["filename"] == "/a"
    assert dvs("show", "ds@~9").rc == 3
    assert dvs("show", "ds@zzzzzz").rc == 3



def test_revision_syntax_and_log_limits(tmp_path: Path, dvs):
    dvs("create", "ds")
    (tmp_path / "a").write_bytes(b"1")
    dvs("add", "ds", str(tmp_path / "a"))
    log = json.loads(dvs("log", "ds", "--json").out)
    # Malformed: a usage error (exit 2), never the head or "unknown".
    for args in (("ls", "ds@~-1"), ("ls", "ds@"), ("restore", "ds", "ds@"), ("show", "ds@{-1}"),
                 ("ls", "ds@a b"), ("log", "ds", "-n", "-1"), ("reflog", "ds", "-n", "-1")):
        r = dvs(*args)
        assert r.rc == 2 and r.err.startswith("error: "), (args, r.err)
    # Well-formed but naming nothing: not found (a tag may be called abc).
    r = dvs("ls", "ds@abc")
    assert r.rc == 3 and "at least 6 hex digits" in r.err
    assert json.loads(dvs("show", f"ds@{log[1]['id'][:8].upper()}", "--json").out)["id"] == log[1]["id"]
    assert dvs("log", "ds", "-n", "0").out == "" and json.loads(dvs("log", "ds", "-n", "0", "--json").out) == []
    assert len(json.loads(dvs("log", "ds", "-n", "1", "--json").out)) == 1
    assert json.loads(dvs("reflog", "ds", "-n", "0", "--json").out) == []
    assert len(json.loads(dvs("reflog", "ds", "-n", "1", "--json").out)) == 1


def test_coco_import_makes_boxes_and_labels(tmp_path: Path, dvs):
    from dvstore.io.sample import make_sample

    make_sample(tmp_path / "pets", n_images=6, seed=1)
    dvs("create", "pets")
    r = dvs("add", "pets", str(tmp_path / "pets" / "images"), "--annotations", str(tmp_path / "pets" / "annotations.coco.json"))
    assert r.rc == 0, r.err
    items = json.loads(dvs("ls", "pets", "--json").out)
    images = [i for i in items if i["filename"].endswith(".png")]
    assert images and all(i["metadata"]["system"]["mimetype"] == "image/png" for i in images)
    assert all(i["metadata"]["system"]["width"] > 0 for i in images)
    assert sum(len(i["annotations"]) for i in images) > 0
    recipe = json.loads(dvs("show", "pets", "--json").out)
    assert recipe["annotations"] > 0
    # Re-importing the same COCO file changes nothing (stable annotation ids).
    again = json.loads(dvs("add", "pets", str(tmp_path / "pets" / "images"), "--annotations",
                           str(tmp_path / "pets" / "annotations.coco.json"), "--json").out)
    assert again["version"] is None


def test_errors_are_one_line_with_documented_codes(tmp_path: Path, dvs):
    r = run_dvs("ls", "x", cwd=tmp_path)
    assert r.rc == 3 and r.err.startswith("error: no dvs store")
    assert dvs("ls", "nope").rc == 3
    assert dvs("create", "bad name").rc == 2
    dvs("create", "ds")
    assert dvs("create", "ds").rc == 2
    assert dvs("add", "ds", str(tmp_path / "missing")).rc == 2
    assert dvs("ls", "ds", "--filter", "{not json").rc == 2
    assert dvs("ls", "ds", "--filter", '{"filename": {"$nope": 1}}').rc == 2
    (tmp_path / "bad.json").write_text("{]")
    assert dvs("create", "r2", "--recipe", str(tmp_path / "bad.json")).rc == 2
    (tmp_path / "coco.json").write_text('{"images": 5}')
    (tmp_path / "f").write_bytes(b"x")
    assert dvs("add", "ds", str(tmp_path / "f"), "--annotations", str(tmp_path / "coco.json")).rc == 2
    # Nothing was half-written: still only the create version.
    assert len(json.loads(dvs("log", "ds", "--json").out)) == 1



def test_help_texts_and_usage_errors(tmp_path: Path, dvs):
    r, full = run_dvs(cwd=tmp_path), run_dvs("--help", cwd=tmp_path)
    assert (r.rc, r.err, r.out) == (0, "", full.out) and r.out.startswith("Usage: dvs ")
    r = run_dvs("recipe", cwd=tmp_path)
    assert r.rc == 0 and r.err == "" and r.out.startswith("Usage: dvs recipe ")
    assert "Usage: dvs diff [OPTIONS] A[@REV] [B[@REV]]" in dvs("diff", "--help").out
    commit_help = " ".join(dvs("commit", "--help").out.split())
    assert "merged three-way" in commit_help and "Refused (exit 5) when" not in commit_help
    dvs("create", "a")
    (tmp_path / "r.json").write_text('{"title": "r", "labels": []}')
    r = dvs("recipe", "switch", "a", "--file", str(tmp_path / "r.json"), "--from", "a")
    assert r.rc == 2 and r.err.startswith("error: --file and --from cannot be used together\n")
    r = dvs("recipe", "switch", "a")
    assert r.rc == 2 and r.err.startswith("error: recipe switch needs the new recipe")


def test_hostile_file_names_are_refused_before_anything_is_written(tmp_path: Path, dvs):
    d = tmp_path / "d"
    d.mkdir()
    (d / "ok.txt").write_bytes(b"ok")
    (d / "back\\slash.txt").write_bytes(b"x")
    dvs("create", "ds")
    r = dvs("add", "ds", str(d))
    assert r.rc == 2 and "backslash" in r.err
    assert json.loads(dvs("ls", "ds", "--json").out) == []


def test_newer_store_format_is_refused(tmp_path: Path, dvs):
    cfg = tmp_path / "store" / ".dvs" / "config.json"
    doc = json.loads(cfg.read_text())
    doc["format"] = 99
    cfg.write_text(json.dumps(doc))
    r = dvs("datasets")
    assert r.rc == 6 and "newer" in r.err


def test_store_found_from_subdirectory_and_env(tmp_path: Path):
    assert run_dvs("init", str(tmp_path)).rc == 0
    sub = tmp_path / "a" / "b"
    sub.mkdir(parents=True)
    assert run_dvs("create", "ds", cwd=sub).rc == 0
    r = run_dvs("datasets", "--json", cwd="/", env={"DVS_STORE": str(tmp_path / ".dvs")})
    assert [d["name"] for d in json.loads(r.out)] == ["ds"]



def test_a_store_without_its_config_is_damaged_and_stops_the_search(tmp_path: Path):
    assert run_dvs("init", str(tmp_path)).rc == 0  # a healthy store above: never picked up
    inner = tmp_path / "inner"
    assert run_dvs("init", str(inner)).rc == 0
    (inner / ".dvs" / "config.json").unlink()
    (inner / "sub").mkdir()
    for args, kw in ((("datasets",), {"cwd": inner / "sub"}), (("datasets",), {"cwd": inner}),
                     (("--store", str(inner), "datasets"), {"cwd": "/"}),
                     (("datasets",), {"cwd": "/", "env": {"DVS_STORE": str(inner / ".dvs")}})):
        r = run_dvs(*args, **kw)
        assert r.rc == 6, (args, r.err)
        lines = r.err.splitlines()
        assert lines[0] == f"error: damaged dvs store at {inner / '.dvs'}: its config.json is missing"
        assert lines[1].startswith("hint: restore .dvs/config.json from a backup")
    r = run_dvs("init", str(inner))  # not a new store over the old one's versions
    assert r.rc == 6 and r.err.startswith(f"error: damaged dvs store at {inner / '.dvs'}")
    assert not (inner / ".dvs" / "config.json").exists()
    (inner / ".dvs" / "config.json").write_text("[1]")
    r = run_dvs("datasets", cwd=inner)
    assert r.rc == 6 and "malformed store config" in r.err and "hint: restore" in r.err


def test_a_working_folder_whose_store_moved_suggests_store(tmp_path: Path):
    assert run_dvs("init", str(tmp_path / "a")).rc == 0
    assert run_dvs("create", "ds", cwd=tmp_path / "a").rc == 0
    assert run_dvs("checkout", "ds", str(tmp_path / "w"), cwd=tmp_path / "a").rc == 0
    (tmp_path / "a").rename(tmp_path / "b")
    r = run_dvs("status", str(tmp_path / "w"), cwd=tmp_path)
    assert r.rc == 3 and r.err.startswith(f"error: no dvs store at {tmp_path / 'a' / '.dvs'}, where this working")
    assert "dvs init" not in r.err and "--store PATH" in r.err
    assert run_dvs("--store", str(tmp_path / "b"), "status", str(tmp_path / "w"), cwd=tmp_path).rc == 0


def test_the_executable_leaves_at_once_with_main_s_code_after_the_exit_handlers(tmp_path: Path):
    # run() skips the interpreter's teardown (os._exit): the exit code, the flushed output
    # and the exit handlers (which delete scratch files) must survive that.
    import subprocess
    import sys

    marker = tmp_path / "handler-ran"
    script = (
        "import atexit, sys, dvstore.cli as c\n"
        f"atexit.register(lambda: open({str(marker)!r}, 'w').close())\n"
        "def fake(argv=None):\n"
        "    sys.stdout.write('report, not yet flushed')\n"
        "    sys.exit(int(sys.argv[1]))\n"
        "c.main = fake\n"
        "c.run()\n"
    )
    for code in (0, 3):
        marker.unlink(missing_ok=True)
        p = subprocess.run([sys.executable, "-c", script, str(code)], capture_output=True, text=True)
        assert p.returncode == code
        assert p.stdout == "report, not yet flushed"
        assert marker.exists()
    r = run_dvs("--version")
    assert r.rc == 0 and r.out.startswith("dvs, version")


def test_add_dot_beside_the_store_leaves_the_store_out(tmp_path: Path):
    # `dvs add d .` in the folder that holds .dvs failed as a whole ("reserved name '.dvs'");
    # under another name (--store) the store's own files became items.
    root = tmp_path / "proj"
    assert run_dvs("init", str(root)).rc == 0
    write_files(root, {"a.png": b"a", "sub/b.png": b"b", ".dvs-checkout": b"{}", "sub/.dvs-checkout": b"{}"})
    assert run_dvs("create", "d", cwd=root).rc == 0
    r = run_dvs("add", "d", ".", "--json", cwd=root)
    assert r.rc == 0, r.err
    assert json.loads(r.out)["files"] == 2
    ls = json.loads(run_dvs("ls", "d", "--json", cwd=root).out)
    assert [i["filename"] for i in ls] == ["/a.png", "/sub/b.png"]
    # the store under any name, given by --store
    os.rename(root / ".dvs", root / "sub" / "mystore")
    store = str(root / "sub" / "mystore")
    (root / "c.png").write_bytes(b"c")
    r = run_dvs("--store", store, "add", "d", str(root), "--json")
    assert r.rc == 0, r.err
    ls = json.loads(run_dvs("--store", store, "ls", "d", "--json").out)
    assert [i["filename"] for i in ls] == ["/a.png", "/c.png", "/sub/b.png"]
    # the store itself, or a file in it, is refused; another .dvs folder is still a reserved name
    for path in (store, os.path.join(store, "config.json")):
        r = run_dvs("--store", store, "add", "d", path)
        assert r.rc == 2 and "store" in r.err and r.err.startswith("error: "), r.err
    write_files(root, {"other/.dvs/x": b"x"})
    r = run_dvs("--store", store, "add", "d", str(root))
    assert r.rc == 2 and "reserved name '.dvs'" in r.err


def test_the_annotation_file_inside_an_added_folder_is_not_an_item(tmp_path: Path, dvs):
    # README's quick start: dvs add pets photos/ --annotations photos/annotations.coco.json
    from dvstore.io.sample import make_sample

    make_sample(tmp_path / "pets", n_images=4, seed=2)
    photos = tmp_path / "photos"
    os.rename(tmp_path / "pets" / "images", photos)
    coco = photos / "annotations.coco.json"
    os.rename(tmp_path / "pets" / "annotations.coco.json", coco)
    dvs("create", "pets")
    r = dvs("add", "pets", str(photos), "--annotations", str(coco), "--json")
    assert r.rc == 0, r.err
    doc = json.loads(r.out)
    assert doc["excluded"] == [str(coco)] and doc["files"] == 4
    names = [i["filename"] for i in json.loads(dvs("ls", "pets", "--json").out)]
    assert len(names) == 4 and all(n.endswith(".png") for n in names)
    r = dvs("add", "pets", str(photos), "--annotations", str(coco))
    assert r.rc == 0 and f"not added: {coco} (the annotation file)" in r.out, r.out
    # given as a file of its own, it is added as asked
    r = dvs("add", "pets", str(coco), "--annotations", str(coco), "--json")
    assert r.rc == 0 and json.loads(r.out)["excluded"] == []
    assert "/annotations.coco.json" in [i["filename"] for i in json.loads(dvs("ls", "pets", "--json").out)]
