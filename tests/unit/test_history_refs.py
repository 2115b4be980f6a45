"""Tags, restore, the reflog and snapshots through the library."""

from __future__ import annotations

import re

import pytest

from dvstore import history
from dvstore.api import Dataset, Store
from dvstore.errors import ConflictError, NotFoundError, UsageError


@pytest.fixture
def ds(store: Store) -> Dataset:
    d = store.datasets.create("pets")
    for i in range(3):
        with d.edit(f"v{i + 1}") as e:
            e.add_bytes(f"/{i}.jpg", bytes([i]) * 10)
    return d


def filenames(ds: Dataset) -> list[str]:
    return [it.filename for it in ds.items.list()]


# -- tags -----------------------------------------------------------------------------


def test_tag_head_and_older_version(ds: Dataset) -> None:
    assert history.tag(ds, "v3") == ds.head_id
    old = history.tag(ds, "v1", "~2")
    assert history.tags(ds) == {"v1": old, "v3": ds.head_id}
    assert ds.at("v1").head_id == old
    assert filenames(ds.at("v1")) == ["/0.jpg"]


def test_tag_of_a_pinned_handle_tags_that_version(ds: Dataset) -> None:
    pinned = ds.at("~1")
    assert history.tag(pinned, "prev") == pinned.head_id != ds.head_id


def test_tag_exists_needs_force(ds: Dataset) -> None:
    history.tag(ds, "t", "~1")
    with pytest.raises(UsageError, match="already exists"):
        history.tag(ds, "t")
    assert history.tag(ds, "t", force=True) == ds.head_id


@pytest.mark.parametrize("bad", ["", "-x", "a b", "a@b", "a/b", "..", "abc123", "deadbeefcafe", "x" * 129])
def test_bad_tag_names(ds: Dataset, bad: str) -> None:
    with pytest.raises(UsageError):
        history.tag(ds, bad)


def test_delete_tag(ds: Dataset) -> None:
    history.tag(ds, "t")
    history.delete_tag(ds, "t")
    assert history.tags(ds) == {}
    with pytest.raises(NotFoundError):
        history.delete_tag(ds, "t")


def test_tag_unknown_revision(ds: Dataset) -> None:
    with pytest.raises(NotFoundError):
        history.tag(ds, "t", "nosuchtag")


# -- restore --------------------------------------------------------------------------


def test_restore_makes_a_new_version_equal_to_the_old(ds: Dataset) -> None:
    head = ds.head_id
    old = ds.at("~2")
    new = history.restore(ds, "~2")
    c = ds.version
    assert new == ds.head_id != old.head_id
    assert c.op == "restore"
    assert c.parents == (head,)
    assert c.info == {"restored": old.head_id.hex()}
    assert c.layers == old.version.layers and c.recipe == old.version.recipe
    assert filenames(ds) == ["/0.jpg"]
    assert [cid for cid, _ in ds.log()][1] == head  # history kept, never rewritten


@pytest.mark.parametrize("form", ["{spec}", "@{spec}", "pets@{spec}"])
def test_restore_revision_forms(ds: Dataset, form: str) -> None:
    target = ds.at("~1").head_id
    for spec in ("~1", target.hex()[:8], "{1}"):
        history.restore(ds, form.format(spec=spec))
        assert ds.version.layers == ds._repo.commit(target).layers
        history.restore(ds, "@{1}")  # back, for the next spelling


def test_restore_of_the_current_content_writes_nothing(ds: Dataset) -> None:
    head = ds.head_id
    assert history.restore(ds, head.hex()) == head
    assert history.reflog(ds)[0]["new"] == head.hex()


def test_restore_refuses_another_dataset(store: Store, ds: Dataset) -> None:
    store.datasets.create("other")
    with pytest.raises(UsageError, match="not of pets"):
        history.restore(ds, "other@~0")


def test_restore_bad_revisions(ds: Dataset) -> None:
    for rev, err in (("~9", NotFoundError), ("@{99}", NotFoundError), ("@", UsageError), ("@{x}", UsageError)):
        with pytest.raises(err):
            history.restore(ds, rev)



# -- id prefixes name versions of the dataset only ------------------------------------


@pytest.fixture
def other(store: Store) -> Dataset:
    d = store.datasets.create("other")
    with d.edit("add") as e:
        e.add_bytes("/o.jpg", b"other")
    return d


def test_prefix_of_another_dataset_s_version_is_unknown(ds: Dataset, other: Dataset) -> None:
    head = ds.head_id
    prefix = other.head_id.hex()[:8]
    for call in (lambda: ds.at(prefix), lambda: history.restore(ds, prefix),
                 lambda: history.restore(ds, f"pets@{prefix}"), lambda: history.tag(ds, "t", prefix),
                 lambda: ds.at(other.head_id.hex())):
        with pytest.raises(NotFoundError, match="unknown revision") as e:
            call()
        assert "another dataset" in (e.value.hint or "")
    assert ds.head_id == head and history.tags(ds) == {}
    assert ds._repo.resolve(f"other@{prefix}")[1] == other.head_id


def test_prefix_of_older_versions_and_of_a_clone_s_source(store: Store, ds: Dataset) -> None:
    first = ds.at("~3").head_id  # the create version
    history.restore(ds, "~3")
    assert ds.at(first.hex()[:6]).head_id == first
    copy = ds.clone("copy")
    # The clone's history holds its source's versions (dvs log lists them), so they resolve.
    assert copy.at(first.hex()[:6]).head_id == first
    assert [cid for cid, _ in copy.log()][-1] == first


def test_prefix_of_a_version_only_the_reflog_names(ds: Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    """A head move that leaves versions unreachable from the head keeps them versions of it."""
    repo = ds._repo
    head, oldest = ds.head_id, ds.at("~3").head_id
    repo.move_ref(ds.record, new=oldest, expected=head, op="restore")
    assert [cid for cid, _ in ds.log()] == [oldest]
    monkeypatch.setattr("dvstore.repo._RECENT", 0)  # not found by the first walk: the reflog scan
    assert ds.at(head.hex()[:6]).head_id == head


def test_prefix_found_past_the_recent_walk(store: Store, ds: Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    """A source version of a clone is in no reflog of the clone: the walk goes on to it."""
    v1 = ds.at("~2").head_id
    copy = ds.clone("copy")
    for i in range(3):
        with copy.edit() as e:
            e.add_bytes(f"/c{i}.jpg", bytes([i]))
    monkeypatch.setattr("dvstore.repo._RECENT", 1)
    assert copy.at(v1.hex()[:6]).head_id == v1



# -- revision syntax ----------------------------------------------------------------------


@pytest.mark.parametrize("rev", ["", "~-1", "~x", "~1.5", "~ 1", "~1\n", "{-1}", "{x}", "{}", "{1",
                                 "a b", "a@b", "-x", "..", "x/y", "t" * 129])
def test_malformed_revisions_are_usage_errors(ds: Dataset, rev: str) -> None:
    with pytest.raises(UsageError, match="revision"):
        ds.at(rev)
    with pytest.raises(UsageError):
        ds._repo.resolve(f"pets@{rev}")


def test_well_formed_revisions_that_name_nothing_are_not_found(ds: Dataset) -> None:
    for rev in ("abc", "nosuchtag", "zzzzzz", "abcdef12", "~9", "{9}"):
        with pytest.raises(NotFoundError):
            ds.at(rev)
    with pytest.raises(NotFoundError) as e:
        ds.at("abc")
    assert "at least 6 hex digits" in (e.value.hint or "")


def test_short_hex_and_uppercase_hex(ds: Dataset) -> None:
    old = ds.at("~1").head_id
    history.tag(ds, "abc", "~2")  # a tag may read like a short prefix: not an id prefix
    assert ds.at("abc").head_id == ds.at("~2").head_id
    assert ds.at(old.hex()[:8].upper()).head_id == old
    assert ds.at(old.hex().upper()).head_id == old
    for bad in ("ABCDEF", "DeadBeef"):
        with pytest.raises(UsageError, match="looks like a version id"):
            history.tag(ds, bad)
    assert ds.snapshot("CAFEBABE").tag == "snapshot-CAFEBABE"


def test_a_tag_is_looked_up_before_an_id_prefix(ds: Dataset) -> None:
    """A store may hold an uppercase hex tag made before they were refused: it still resolves."""
    first = ds.at("~3").head_id
    name = ds.head_id.hex()[:8].upper()
    ds._repo.move_ref(ds.record, tag=name, new=first, expected=None, op="tag")
    assert ds.at(name).head_id == first


def test_log_limit(ds: Dataset) -> None:
    assert ds.log(0) == [] and len(ds.log(2)) == 2 and len(ds.log()) == 4


# -- reflog: the undo path --------------------------------------------------------------


def test_reflog_indices_name_head_moves(ds: Dataset) -> None:
    log = history.reflog(ds)
    assert [r["index"] for r in log] == [0, 1, 2, 3]
    assert [r["ref"] for r in log] == ["pets@{0}", "pets@{1}", "pets@{2}", "pets@{3}"]
    assert [r["op"] for r in log] == ["commit", "commit", "commit", "create"]
    assert log[0]["new"] == ds.head_id.hex() and log[0]["old"] == log[1]["new"]
    assert log[3]["old"] is None


def test_undo_the_last_operation_and_the_undo(ds: Dataset) -> None:
    before = ds.head_id
    with ds.edit("oops") as e:
        e.delete("/0.jpg")
    history.restore(ds, "@{1}")  # undo the delete
    assert ds.version.layers == ds._repo.commit(before).layers
    assert history.reflog(ds)[0]["op"] == "restore"
    history.restore(ds, "@{1}")  # undo the undo: the delete is back
    assert filenames(ds) == ["/1.jpg", "/2.jpg"]


# -- snapshots ---------------------------------------------------------------------------


def test_snapshot_block_keeps_changes_on_success(ds: Dataset) -> None:
    with ds.snapshot("before dedup") as snap:
        for i in range(2):
            with ds.edit() as e:
                e.delete(f"/{i}.jpg")
    assert snap.tag == "before-dedup"
    assert history.tags(ds)["before-dedup"] == snap.commit
    assert filenames(ds) == ["/2.jpg"]
    assert snap.rolled_back is None
    assert snap.diff()["items"]["removed"] == ["/0.jpg", "/1.jpg"]


def test_snapshot_rolls_back_on_exception_and_propagates(ds: Dataset) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with ds.snapshot() as snap:
            with ds.edit() as e:
                e.delete("/0.jpg")
            with ds.edit() as e:
                e.add_bytes("/new.jpg", b"x")
            raise RuntimeError("boom")
    assert ds.version.layers == ds._repo.commit(snap.commit).layers
    assert ds.version.op == "restore"
    assert snap.rolled_back == ds.head_id
    assert filenames(ds) == ["/0.jpg", "/1.jpg", "/2.jpg"]


def test_snapshot_exception_inside_an_edit(ds: Dataset) -> None:
    head = ds.head_id
    with pytest.raises(KeyboardInterrupt):
        with ds.snapshot("s"):
            with ds.edit() as e:
                e.delete("/0.jpg")
                raise KeyboardInterrupt
    assert ds.head_id == head  # the edit never committed, so the rollback had nothing to undo


def test_rollback_later(ds: Dataset) -> None:
    snap = ds.snapshot("s")
    with ds.edit() as e:
        e.delete("/0.jpg")
    history.delete_tag(ds, "s")  # the snapshot keeps its commit id, not the tag
    new = snap.rollback()
    assert new == ds.head_id
    assert ds.version.layers == ds._repo.commit(snap.commit).layers


def test_snapshot_names(ds: Dataset) -> None:
    a = ds.snapshot("nightly")
    b = ds.snapshot("nightly")
    c = ds.snapshot("cafe12")
    d = ds.snapshot("  !!  ")
    e = ds.snapshot()
    assert (a.tag, b.tag, c.tag) == ("nightly", "nightly-2", "snapshot-cafe12")
    assert re.fullmatch(r"snapshot-\d{8}T\d{6}\.\d{6}Z", d.tag)
    assert e.tag.startswith("snapshot-") and e.tag != d.tag
    assert set(history.tags(ds)) == {a.tag, b.tag, c.tag, d.tag, e.tag}


def test_failed_rollback_raises_its_own_error_with_a_hint(ds: Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    def moved(*args: object, **kw: object) -> None:
        raise ConflictError("dataset pets moved under this operation")

    with pytest.raises(ConflictError) as info:
        with ds.snapshot("s"):
            monkeypatch.setattr(history, "restore", moved)
            raise ValueError("processing failed")
    assert "dvs restore pets s" in (info.value.hint or "")
    assert isinstance(info.value.__context__, ValueError)


def test_snapshot_api_delegates(ds: Dataset) -> None:
    ds.tag("t1", "~1")
    assert "t1" in history.tags(ds)
    new = ds.restore("t1")
    assert new == ds.head_id
    assert ds.reflog()[0]["op"] == "restore"
