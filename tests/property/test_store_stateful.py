"""The store against a plain-Python model: a dict of datasets, each a dict of items."""

from __future__ import annotations

import shutil
import tempfile

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from dvstore import Store

names = st.sampled_from([f"/d{i % 3}/f{i}.bin" for i in range(12)])
payloads = st.binary(min_size=1, max_size=40)


class StoreVsModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="dvs-stateful-")
        self.store = Store.init(self.dir)
        self.store.datasets.create("main")
        # model: dataset -> filename -> (bytes, user metadata, labels)
        self.model: dict[str, dict[str, tuple[bytes, dict[str, int], tuple[str, ...]]]] = {"main": {}}
        self.versions: dict[str, int] = {"main": 1}
        self.n_clones = 0

    def teardown(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(fn=names, data=payloads)
    def put(self, fn, data):
        ds = self.store.datasets.get("main")
        with ds.edit("put") as e:
            e.add_bytes(fn, data)
        cur = self.model["main"].get(fn)
        changed = cur is None or cur[0] != data
        self.model["main"][fn] = (data, cur[1] if cur else {}, cur[2] if cur else ())
        self.versions["main"] += 1 if changed else 0

    @precondition(lambda self: self.model["main"])
    @rule(data=st.data())
    def delete(self, data):
        fn = data.draw(st.sampled_from(sorted(self.model["main"])))
        with self.store.datasets.get("main").edit("del") as e:
            e.delete(fn)
        del self.model["main"][fn]
        self.versions["main"] += 1

    @precondition(lambda self: self.model["main"])
    @rule(data=st.data(), score=st.integers(0, 9), label=st.sampled_from(["cat", "dog"]))
    def annotate(self, data, score, label):
        fn = data.draw(st.sampled_from(sorted(self.model["main"])))
        with self.store.datasets.get("main").edit("ann") as e:
            e.update_metadata(fn, user={"score": score})
            e.add_annotation(fn, {"type": "class", "label": label})
        b, md, labels = self.model["main"][fn]
        self.model["main"][fn] = (b, dict(md, score=score), tuple(sorted(labels + (label,))))
        self.versions["main"] += 1

    @rule(folder=st.sampled_from(["/d0/**", "/d1/**", None]))
    def clone(self, folder):
        self.n_clones += 1
        name = f"c{self.n_clones}"
        q = {"filename": folder} if folder else None
        self.store.datasets.get("main").clone(clone_name=name, filters=q)
        prefix = folder[:-2] if folder else "/"
        self.model[name] = {k: v for k, v in self.model["main"].items() if k.startswith(prefix)}
        self.versions[name] = self.versions["main"] + 1

    @invariant()
    def store_matches_model(self):
        for name, items in self.model.items():
            ds = self.store.datasets.get(name)
            got = {}
            for it in ds.items.list(filters={"$or": [{"hidden": True}, {"hidden": False}]}):
                labels = tuple(sorted(a["label"] for a in it.annotations))
                got[it.filename] = (it.read(), it.metadata["user"], labels)
            assert got == items
            assert len(ds.log()) == self.versions[name]


TestStoreVsModel = StoreVsModel.TestCase
TestStoreVsModel.settings = settings(max_examples=15, stateful_step_count=12, deadline=None)


class SpilledStoreVsModel(StoreVsModel):
    """The same model with every change dict moved to disk at once (spill.LIMIT = 1)."""

    def __init__(self) -> None:
        from dvstore import spill

        self._limit = spill.LIMIT
        spill.LIMIT = 1
        super().__init__()

    def teardown(self) -> None:
        from dvstore import spill

        spill.LIMIT = self._limit
        super().teardown()


TestSpilledStoreVsModel = SpilledStoreVsModel.TestCase
TestSpilledStoreVsModel.settings = settings(max_examples=10, stateful_step_count=12, deadline=None)
