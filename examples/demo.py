"""The main job on a bundled sample dataset, through the real ``dvs`` command.

Run by ``make demo``: generates 24 small images with COCO annotations, then ingest, list,
clone a subset for an annotation team, edit on both sides, merge three-way, diff, snapshot
and roll back. Every step prints the command it runs, so this is also a walkthrough.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys

from dvstore.io.sample import make_sample

OUT = os.path.abspath(os.environ.get("DVS_DEMO_DIR", "demo-out"))


def dvs(*args: str, check: bool = True) -> str:
    print(f"\n$ dvs {' '.join(shlex.quote(a) for a in args)}", flush=True)
    p = subprocess.run([sys.executable, "-m", "dvstore", *args], cwd=OUT, capture_output=True, text=True)
    out = p.stdout.rstrip()
    if out:
        print(out if len(out) < 3000 else out[:3000] + "\n...")
    if p.stderr.strip():
        print(p.stderr.rstrip(), file=sys.stderr)
    if check and p.returncode != 0:
        sys.exit(f"demo failed: dvs {' '.join(args)} exited {p.returncode}")
    return p.stdout


def edit_json(path: str, fn) -> None:  # type: ignore[no-untyped-def]
    with open(path) as f:
        doc = json.load(f)
    fn(doc)
    with open(path, "w") as f:
        json.dump(doc, f, indent=2)


def main() -> None:
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    make_sample(os.path.join(OUT, "pets"), n_images=24, seed=0)
    print(f"sample dataset written to {OUT}/pets (24 PNG images in images/ + annotations.coco.json)")

    dvs("init")
    dvs("create", "pets")
    dvs("add", "pets", "pets/images", "--annotations", "pets/annotations.coco.json", "-m", "import the pets")
    dvs("ls", "pets")
    dvs("show", "pets")

    # An annotation team gets only the cats, annotates one and approves another.
    dvs("clone", "pets", "cats-team", "--filter", '{"filename": "/cats/**"}')
    dvs("checkout", "cats-team", "work")
    items = sorted(os.listdir(os.path.join(OUT, "work", "json", "cats")))
    first = os.path.join(OUT, "work", "json", "cats", items[0])
    edit_json(first, lambda d: d["annotations"].append(
        {"type": "box", "label": "cat", "coordinates": [{"x": 1, "y": 2, "z": 0}, {"x": 20, "y": 30, "z": 0}],
         "attributes": [], "metadata": {"system": {"status": "approved"}, "user": {}}}))
    second = os.path.join(OUT, "work", "json", "cats", items[1])
    edit_json(second, lambda d: d["metadata"]["user"].update({"quality": "blurry"}))
    dvs("status", "work")
    dvs("commit", "work", "-m", "team: one more box, one blurry cat")

    # Meanwhile the main dataset moves on: a dog gets metadata.
    dvs("checkout", "pets", "main-work")
    dogs = sorted(os.listdir(os.path.join(OUT, "main-work", "json", "dogs")))
    edit_json(os.path.join(OUT, "main-work", "json", "dogs", dogs[0]),
              lambda d: d["metadata"]["user"].update({"split": "train"}))
    dvs("commit", "main-work", "-m", "mark a dog for training")

    # Three-way merge: the team's two changes and the dog's metadata, nothing deleted.
    dvs("merge", "pets-merged", "pets", "cats-team")
    dvs("diff", "pets", "pets-merged", "--stat")
    dvs("log", "pets-merged")

    # Snapshot before risky processing, break things, roll back.
    dvs("tag", "pets-merged", "before-cleanup")
    dvs("checkout", "pets-merged", "cleanup")
    shutil.rmtree(os.path.join(OUT, "cleanup", "items", "dogs"))
    dvs("commit", "cleanup", "-m", "oops: deleted every dog")
    dvs("diff", "pets-merged@before-cleanup", "pets-merged", "--stat")
    dvs("restore", "pets-merged", "before-cleanup")
    out = dvs("diff", "pets-merged@before-cleanup", "pets-merged", "--json", "--exit-code")
    print("\nafter the rollback the dataset equals the snapshot:", json.loads(out)["identical"])
    dvs("fsck")
    print(f"\ndemo finished; the store is in {OUT}/.dvs")


if __name__ == "__main__":
    main()
