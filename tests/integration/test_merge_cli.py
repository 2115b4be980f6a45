"""``dvs merge`` and ``dvs recipe`` end to end, through a real subprocess.

Dataloop's three documented cases (clones merged; unrelated datasets with one recipe summed;
different recipes refused, then merged after ``dvs recipe switch`` or with
``--map-labels``), the annotation team's sparse clone merged back, and conflicts (exit 1,
JSON). Edits the CLI has no command for (annotations, metadata, statuses) go through the
library between commands, as a labelling tool would.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dvstore.api import Store
from tests.conftest import Result, write_files

Dvs = Callable[..., Result]

PETS = {"title": "pets", "labels": [{"tag": "dog", "color": "#ff0000"}, {"tag": "cat"}]}
CARS = {"title": "cars", "labels": [{"tag": "car"}, {"tag": "truck"}]}


def ok(r: Result) -> Result:
    assert r.rc == 0, (r.out, r.err)
    return r


def js(r: Result) -> Any:
    assert r.rc == 0, (r.out, r.err)
    return json.loads(r.out)


def api(tmp_path: Path) -> Store:
    return Store(str(tmp_path / "store" / ".dvs"))


@pytest.fixture
def pets(tmp_path: Path, dvs: Dvs) -> Path:
    """Dataset A: 6 images under /a and /b, with the pets recipe and one annotation."""
    (tmp_path / "pets.json").write_text(json.dumps(PETS))
    (tmp_path / "cars.json").write_text(json.dumps(CARS))
    write_files(tmp_path / "files", {f"{d}/{i}.jpg": f"{d}{i}".encode() for d in "ab" for i in range(3)})
    ok(dvs("create", "A", "--recipe", str(tmp_path / "pets.json")))
    ok(dvs("add", "A", str(tmp_path / "files")))
    with api(tmp_path).datasets.get("A").edit("label") as e:
        e.add_annotation("/a/0.jpg", {"id": "0" * 24, "type": "box", "label": "dog", "coordinates": [0, 0]})
    return tmp_path


def item(dvs: Dvs, name: str, filename: str) -> dict[str, Any]:
    doc: dict[str, Any] = js(dvs("show", name, filename, "--json"))
    return doc


def test_case1_clones_merge_annotations_from_both_sides(pets: Path, dvs: Dvs) -> None:
    ok(dvs("clone", "A", "B"))
    ok(dvs("clone", "A", "C"))
    s = api(pets)
    with s.datasets.get("B").edit() as e:
        e.add_annotation("/a/0.jpg", {"type": "box", "label": "cat", "coordinates": [1, 1]})
    with s.datasets.get("C").edit() as e:
        e.add_annotation("/a/0.jpg", {"type": "point", "label": "dog", "coordinates": [2, 2]})
        e.update_metadata("/b/1.jpg", user={"reviewed": True})
    doc = js(dvs("merge", "M", "B", "C", "--json"))
    assert doc["name"] == "M" and doc["items"] == 6 and doc["conflicts"] == []
    anns = item(dvs, "M", "/a/0.jpg")["annotations"]
    assert sorted(a["label"] for a in anns) == ["cat", "dog", "dog"]  # the shared one appears once
    assert len({a["id"] for a in anns}) == 3
    assert item(dvs, "M", "/b/1.jpg")["metadata"]["user"] == {"reviewed": True}
    v = js(dvs("show", "M", "--json"))
    assert v["op"] == "merge" and len(v["parents"]) == 2
    assert [x["op"] for x in js(dvs("log", "M", "--json"))][:2] == ["merge", "commit"]


def test_case2_unrelated_datasets_same_recipe_sum_and_rename(pets: Path, dvs: Dvs) -> None:
    write_files(pets / "other", {"a/0.jpg": b"other a0", "c/9.jpg": b"c9"})
    ok(dvs("create", "B", "--recipe", str(pets / "pets.json")))  # equal files: compatible recipes
    ok(dvs("add", "B", str(pets / "other")))
    r = ok(dvs("merge", "M", "A", "B"))
    assert "renamed /a/0.jpg -> /a/0_1.jpg" in r.out
    names = sorted(i["filename"] for i in js(dvs("ls", "M", "--json")))
    assert names == ["/a/0.jpg", "/a/0_1.jpg", "/a/1.jpg", "/a/2.jpg", "/b/0.jpg", "/b/1.jpg", "/b/2.jpg",
                     "/c/9.jpg"]
    assert len(item(dvs, "M", "/a/0.jpg")["annotations"]) == 1  # A's item keeps its path
    r = dvs("merge", "M2", "A", "B", "--path-collision", "fail")
    assert r.rc == 1 and "CONFLICT path /a/0.jpg" in r.out


def test_case3_different_recipes_refused_then_switched(pets: Path, dvs: Dvs) -> None:
    write_files(pets / "cars", {"x.jpg": b"car"})
    ok(dvs("create", "C", "--recipe", str(pets / "cars.json")))
    ok(dvs("add", "C", str(pets / "cars")))
    r = dvs("merge", "M", "A", "C")
    assert r.rc == 4
    assert "Cannot merge datasets with different recipes" in r.err and "A=" in r.err and "C=" in r.err
    assert "dvs recipe switch" in r.err
    assert "M" not in {d["name"] for d in js(dvs("datasets", "--json"))}
    r = ok(dvs("recipe", "switch", "C", "--from", "A"))
    assert "recipe switched" in r.out
    assert js(dvs("show", "C", "--json"))["op"] == "switch_recipe"
    assert js(dvs("recipe", "show", "C", "--json"))["title"] == "pets"
    doc = js(dvs("merge", "M", "A", "C", "--json"))
    assert doc["items"] == 7


def test_case3_map_labels(pets: Path, dvs: Dvs) -> None:
    write_files(pets / "cars", {"x.jpg": b"car"})
    ok(dvs("create", "C", "--recipe", str(pets / "cars.json")))
    ok(dvs("add", "C", str(pets / "cars")))
    with api(pets).datasets.get("C").edit() as e:
        e.add_annotation("/x.jpg", {"type": "box", "label": "car", "coordinates": [0, 0]})
    (pets / "map.json").write_text(json.dumps({"car": "vehicle.car"}))
    ok(dvs("merge", "M", "A", "C", "--map-labels", "@" + str(pets / "map.json")))
    assert [a["label"] for a in item(dvs, "M", "/x.jpg")["annotations"]] == ["vehicle.car"]
    recipe = js(dvs("recipe", "show", "M", "--json"))
    assert {"dog", "cat", "vehicle", "vehicle.car"} == set(recipe["flat_labels"])
    assert "vehicle.car" in ok(dvs("recipe", "show", "M")).out.replace("  car", "vehicle.car")
    ok(dvs("merge", "M2", "A", "C", "--map-labels", "car=vehicle.car"))


def test_sparse_clone_team_workflow(pets: Path, dvs: Dvs) -> None:
    ok(dvs("clone", "A", "team", "--filter", json.dumps({"filter": {"dir": "/b"}}), "--no-metadata"))
    assert len(js(dvs("ls", "team", "--json"))) == 3
    s = api(pets)
    with s.datasets.get("team").edit("annotate") as e:
        e.add_annotation("/b/0.jpg", {"type": "box", "label": "cat", "coordinates": [0, 0]})
        e.set_task_status("/b/1.jpg", "task-7", "completed")
    with s.datasets.get("A").edit("curate") as e:
        e.update_metadata("/a/1.jpg", user={"quality": "good"})
    doc = js(dvs("merge", "M", "A", "team", "--json"))
    assert doc["items"] == 6 and doc["removed"] == 0
    r = ok(dvs("merge", "--into", "A", "team"))
    assert r.out.startswith("Merged team -> A")
    for name in ("M", "A"):
        assert len(js(dvs("ls", name, "--json"))) == 6
        assert [a["label"] for a in item(dvs, name, "/b/0.jpg")["annotations"]] == ["cat"]
        assert item(dvs, name, "/b/1.jpg")["status"] == {"task-7": "completed"}
        assert item(dvs, name, "/a/1.jpg")["metadata"]["user"] == {"quality": "good"}
        assert [a["label"] for a in item(dvs, name, "/a/0.jpg")["annotations"]] == ["dog"]
    assert "Already up to date" in ok(dvs("merge", "--into", "A", "team")).out


def test_conflicts_exit_1_with_json_and_write_nothing(pets: Path, dvs: Dvs) -> None:
    ok(dvs("clone", "A", "B"))
    ok(dvs("clone", "A", "C"))
    s = api(pets)
    for name, score in (("B", 1), ("C", 2)):
        with s.datasets.get(name).edit() as e:
            e.update_metadata("/a/1.jpg", user={"score": score})
    with s.datasets.get("B").edit() as e:
        e.delete("/b/2.jpg")
    with s.datasets.get("C").edit() as e:
        e.add_annotation("/b/2.jpg", {"type": "box", "label": "cat", "coordinates": [0, 0]})
    r = dvs("merge", "X", "B", "C")
    assert r.rc == 1
    assert r.out.splitlines() == [
        "CONFLICT metadata /a/1.jpg metadata.user.score added differently on both sides",
        "CONFLICT item /b/2.jpg deleted in ours, modified in theirs",
    ]
    assert r.err.startswith("error: merge stopped on 2 conflicts; nothing was written")
    r = dvs("merge", "X", "B", "C", "--json")
    assert r.rc == 1
    doc = json.loads(r.out)
    assert set(doc) == {"conflicts"}
    assert [(c["kind"], c["filename"], c["path"]) for c in doc["conflicts"]] == [
        ("metadata", "/a/1.jpg", "metadata.user.score"), ("item", "/b/2.jpg", "item")]
    assert doc["conflicts"][0]["ours"] == 1 and doc["conflicts"][0]["theirs"] == 2
    assert "X" not in {d["name"] for d in js(dvs("datasets", "--json"))}
    r = dvs("merge", "X", "B", "C", "--dry-run", "--json")
    assert r.rc == 1 and json.loads(r.out)["dry_run"] is True and len(json.loads(r.out)["conflicts"]) == 2
    assert "X" not in {d["name"] for d in js(dvs("datasets", "--json"))}
    doc = js(dvs("merge", "X", "B", "C", "--strategy", "theirs", "--json"))
    assert len(doc["resolved"]) == 2 and doc["items"] == 6
    assert item(dvs, "X", "/a/1.jpg")["metadata"]["user"] == {"score": 2}
    doc = js(dvs("merge", "Y", "B", "C", "--keep-deleted", "--strategy", "ours", "--json"))
    assert doc["items"] == 6 and len(doc["resolved"]) == 1


def test_n_way_and_usage_errors(pets: Path, dvs: Dvs) -> None:
    for n in ("B", "C", "D"):
        ok(dvs("clone", "A", n))
    s = api(pets)
    for n in ("B", "C", "D"):
        with s.datasets.get(n).edit() as e:
            e.add_bytes(f"/{n}.jpg", n.encode())
    doc = js(dvs("merge", "M", "B", "C", "D", "--json"))
    assert doc["items"] == 9 and len(doc["bases"]) == 2
    assert len(js(dvs("show", "M", "--json"))["parents"]) == 3
    assert dvs("merge", "N", "B").rc == 2
    assert dvs("merge", "M", "B", "C").rc == 2  # M exists
    assert dvs("merge", "N", "B", "nope").rc == 3
    assert dvs("merge", "--into", "A").rc == 2
    assert dvs("recipe", "switch", "B").rc == 2
    dry = js(dvs("merge", "N", "B", "C", "--dry-run", "--json"))
    assert dry["head"] is None and dry["items"] == 8
    assert "N" not in {d["name"] for d in js(dvs("datasets", "--json"))}
