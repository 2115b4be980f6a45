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
