"""Merge orchestration: datasets in, one new version out (SEMANTICS §3.3-3.5, G3-G9, G14-G21).

It owns everything around the pure layer merge (``dvstore.merge``): resolving the inputs,
the recipe precondition (checked before anything is written) and the three-way ontology
merge, the merge base in the version graph (clone parents count; greatest generation,
ties by smallest id; none -> the empty version), each side's sparse scope (§3.4), the
N-way left fold, the projection flags, ``--map-labels``, ``--dry-run``, fast-forward and
"already up to date" for ``--into``, and publishing the result through
``Repository.publish`` with the derived filename index kept in step. It also switches a
dataset's recipe (a version of its own, ``op: "switch_recipe"``).

Determinism: the result's layer roots and recipe are a function of the inputs, their
order, the flags and the strategy alone. The merge version keeps the wall-clock time (so
``dvs log`` orders it truthfully); hence its *commit id* differs between runs while its
manifest does not. The commit's ``info`` holds no time either.

It must not implement merge rules itself (they live in ``merge``/``merge_item``), touch
LMDB directly, or print; the CLI (``dvstore.cli.merge_cmds``) formats what it returns.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from dvstore import merge as m3
from dvstore import perf, recipes, recipes_merge, tree
from dvstore.api import Dataset, Store
from dvstore.edit import Editor
from dvstore.errors import MergeConflictError, NotFoundError, UsageError
from dvstore.hashing import Digest, short
from dvstore.merge import Conflict, MergeOptions, Scope
from dvstore.merge_item import STRATEGIES, same
from dvstore.model import (
    LAYERS,
    OPTIONAL_LAYERS,
    Commit,
    default_author,
    new_item_id,
    now_iso,
    validate_dataset_name,
)
from dvstore.repo import RECIPE, DatasetRecord, Repository, apply_folder_delta

__all__ = [
    "History",
    "MergePlan",
    "merge_commits",
    "merge_datasets",
    "merge_into",
    "plan_merge",
    "run_merge",
    "side_scope",
    "switch_recipe",
]

INFO_CAP = 1000
"""At most this many resolved conflicts and renames are listed in a merge version's info."""
_DATASET_ID_RE = re.compile(r"^[0-9a-f]{32}$")


# --------------------------------------------------------------------------------------
# the version graph


class History:
    """The version graph as merge sees it: parents (clone sources included), generations.

    Generation numbers are computed, not stored: 1 for a version without parents, else one
    more than its highest parent. Commits and ancestor sets are cached for one operation.
    """

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self._commits: dict[bytes, Commit] = {}
        self._gen: dict[bytes, int] = {}
        self._anc: dict[bytes, frozenset[bytes]] = {}

    def commit(self, cid: bytes) -> Commit:
        c = self._commits.get(cid)
        if c is None:
            c = self._commits[cid] = self.repo.commit(cid)
        return c

    def generation(self, cid: bytes) -> int:
        stack = [cid]
        while stack:
            top = stack[-1]
            if top in self._gen:
                stack.pop()
                continue
            missing = [p for p in self.commit(top).parents if p not in self._gen]
            if missing:
                stack.extend(missing)
                continue
            self._gen[top] = 1 + max((self._gen[p] for p in self.commit(top).parents), default=0)
            stack.pop()
        return self._gen[cid]

    def ancestors(self, heads: Iterable[bytes]) -> frozenset[bytes]:
        """Every version reachable from ``heads``, the heads included."""
        out: set[bytes] = set()
        for h in heads:
            cached = self._anc.get(h)
            if cached is None:
                seen = {h}
                stack = [h]
                while stack:
                    for p in self.commit(stack.pop()).parents:
                        if p not in seen:
                            seen.add(p)
                            stack.append(p)
                cached = self._anc[h] = frozenset(seen)
            out |= cached
        return frozenset(out)

    def merge_base(self, left: Sequence[bytes], right: bytes) -> Digest | None:
        """The best common ancestor of the versions ``left`` (a fold's heads so far) and ``right``.

        The common ancestor with the greatest generation, ties broken by the smallest id;
        None when there is none (then the base is the empty version, SEMANTICS case 2).
        """
        common = self.ancestors(left) & self.ancestors([right])
        if not common:
            return None
        return Digest(min(common, key=lambda c: (-self.generation(c), c)))


def _sparse_clone(info: Mapping[str, Any]) -> bool:
    clone = info.get("clone") or {}
    if clone.get("target_directory") is not None:
        return False  # a clone into an existing dataset adds items; it narrows nothing
    flags = ("with_items_annotations", "with_metadata", "with_task_annotations_status")
    return clone.get("filter") is not None or not all(clone.get(f, True) for f in flags)


def side_scope(hist: History, head: bytes, base_ancestors: frozenset[bytes]) -> Scope | None:
    """The scope of the version ``head`` relative to a merge base (SEMANTICS §3.4).

    Walks first parents from ``head`` back to the base's history and intersects the item
    sets and kept layers of every filtered or projected clone met on the way. A clone the
    base descends from does not count: then the base is as sparse as the side. A merge
    version ends the walk unless it recorded ``keeps_scope`` (its first input was not
    widened by the merge). Returns None when nothing narrows the side.
    """
    items: frozenset[bytes] | None = None
    layers = set(LAYERS)
    cur: bytes | None = head
    objs = hist.repo.objects
    while cur is not None and cur not in base_ancestors:
        c = hist.commit(cur)
        if c.op == "create" or (c.op == "merge" and not (c.info.get("merge") or {}).get("keeps_scope")):
            break
        if c.op == "clone" and _sparse_clone(c.info):
            keys = frozenset(tree.keys(objs, c.layers["items"] or tree.EMPTY))
            items = keys if items is None else items & keys
            layers &= {layer for layer in LAYERS if c.layers.get(layer) is not None}
        cur = c.parents[0] if c.parents else None
    if items is None and layers == set(LAYERS):
        return None
    return Scope(items, frozenset(layers))


def _scoped(store: Any, base: Mapping[str, bytes | None], side: dict[str, bytes | None],
            scope: Scope | None) -> dict[str, bytes | None]:
    if scope is None and not any(side.get(la) is None and base.get(la) is not None for la in OPTIONAL_LAYERS):
        return side
    return m3.scoped_side(store, base, side, scope)


# --------------------------------------------------------------------------------------
# inputs and the plan


@dataclass(frozen=True, slots=True)
class MergeInput:
    """One dataset version taking part in a merge."""

    name: str
    record: DatasetRecord
    head: Digest
    commit: Commit

    def json(self) -> dict[str, str]:
        return {"name": self.name, "dataset": self.record.id_hex, "commit": self.head.hex()}


def _resolve(store: Store, src: Any) -> MergeInput:
    repo = store.repo
    if isinstance(src, Dataset):
        rec, head = src.record, src.head_id
        name = src.name if src._rev is None else f"{src.name}@{short(head)}"
    elif isinstance(src, str):
        found = None
        if _DATASET_ID_RE.match(src):
            found = repo.dataset_by_id(bytes.fromhex(src))
        if found is not None:
            rec, head, name = found, repo.head(found), found.name
        else:
            rec, head = repo.resolve(src)
            name = src
    else:
        raise UsageError(f"a merge input must be a Dataset or a dataset name, got {type(src).__name__}")
    return MergeInput(name, rec, head, repo.commit(head))


@dataclass
class MergePlan:
    """A computed merge, before (or after) it is written.

    Attributes:
        inputs: Ours first (the target for ``--into``), then each theirs, in fold order.
        target: The dataset merged into (``--into``), else None.
        merge_name: The new dataset's name, else None.
        layers: The result's layer roots, projection applied.
        path_root: Root of the result's filename index.
        folders_root: Root of the result's folder index (None: rebuilt when an edit needs it).
        recipe: The result's recipe record; ``recipe_oid`` its object id.
        conflicts: Every conflict met, resolved (by the strategy) or not.
        renamed: ``(item id hex, old filename, new filename)`` for path collisions.
        bases: The merge base of each fold step (hex, None for the empty version).
        fast_forward: ``--into`` a target whose head is an ancestor of the single source.
        up_to_date: ``--into`` a target that already contains every source: nothing to do.
        keeps_scope: The first input was not widened (see ``side_scope``).
        options: Flags and strategy, as recorded in the version's info.
        committed: The new version's id once written.
        dataset: The dataset written to, once written.
    """

    inputs: list[MergeInput]
    target: MergeInput | None
    merge_name: str | None
    layers: dict[str, bytes | None]
    path_root: Digest
    recipe: dict[str, Any]
    recipe_oid: Digest
    folders_root: Digest | None = None
    conflicts: list[Conflict] = field(default_factory=list)
    renamed: list[tuple[str, str, str]] = field(default_factory=list)
    bases: list[str | None] = field(default_factory=list)
    fast_forward: bool = False
    up_to_date: bool = False
    keeps_scope: bool = True
    options: dict[str, Any] = field(default_factory=dict)
    committed: Digest | None = None
    dataset: Dataset | None = None
    store: Store | None = field(default=None, repr=False)
    _stats: dict[str, int] | None = field(default=None, repr=False)

    @property
    def stats(self) -> dict[str, int]:
        """``items`` in the result, and items ``added``/``removed``/``modified`` relative to ours.

        Computed on first use (a diff of every layer against ours, O(changes)); a merge
        through the library does not pay for it.
        """
        if self._stats is None:
            assert self.store is not None
            objs = self.store.repo.objects
            if self.up_to_date:
                self._stats = {"items": tree.count(objs, self.layers["items"] or tree.EMPTY),
                               "added": 0, "removed": 0, "modified": 0}
            else:
                self._stats = _stats(objs, self.inputs[0].commit.layers, self.layers)
        return self._stats

    @property
    def unresolved(self) -> list[Conflict]:
        return [c for c in self.conflicts if c.resolution is None]

    @property
    def sources(self) -> list[MergeInput]:
        return self.inputs[1:] if self.target is not None else self.inputs

    def info(self) -> dict[str, Any]:
        """The ``info["merge"]`` record of the version (no time, no author: deterministic)."""
        resolved = [{"kind": c.kind, "filename": c.filename, "path": c.path, "item": c.item,
                     "resolution": c.resolution, "source": c.source} for c in self.conflicts]
        return {"merge": {
            "sources": [s.json() for s in self.sources],
            "target": self.target.json() if self.target is not None else None,
            "bases": list(self.bases),
            **self.options,
            "fast_forward": self.fast_forward,
            "keeps_scope": self.keeps_scope,
            "resolved_conflicts": resolved[:INFO_CAP],
            "resolved_total": len(resolved),
            "renamed": [list(r) for r in self.renamed[:INFO_CAP]],
            "renamed_total": len(self.renamed),
        }}

    def to_json(self) -> dict[str, Any]:
        """What ``dvs merge --json`` prints (``--dry-run`` included)."""
        ds = self.dataset
        return {
            "name": ds.name if ds is not None else (self.target.record.name if self.target else self.merge_name),
            "id": ds.id if ds is not None else (self.target.record.id_hex if self.target else None),
            "head": self.committed.hex() if self.committed else None,
            "sources": [s.json() for s in self.sources],
            "bases": self.bases,
            "fast_forward": self.fast_forward,
            "up_to_date": self.up_to_date,
            **self.stats,
            "recipe": {"id": self.recipe.get("id"), "title": self.recipe.get("title")},
            "conflicts": [c.to_json() for c in self.unresolved],
            "resolved": [c.to_json() for c in self.conflicts if c.resolution is not None],
            "renamed": [{"item": i, "from": a, "to": b} for i, a, b in self.renamed],
        }


def _merge_recipe(base: dict[str, Any] | None, ours: dict[str, Any], theirs: dict[str, Any], strategy: str,
                  mapping: Mapping[str, str] | None) -> tuple[dict[str, Any], list[Conflict]]:
    """Three-way ontology merge when the lineage ids match (G17); ours' recipe otherwise."""
    raw: list[dict[str, Any]] = []
    if same(ours, theirs):
        merged = ours
    elif ours.get("id") == theirs.get("id"):
        b = base if base is not None and base.get("id") == ours.get("id") else None
        if strategy in ("theirs", "union"):
            # merge_recipes keeps its first side on a conflict: hand it theirs first.
            merged, raw = recipes_merge.merge_recipes(b, theirs, ours)
            raw = [dict(c, ours=c["theirs"], theirs=c["ours"]) for c in raw]
        else:
            merged, raw = recipes_merge.merge_recipes(b, ours, theirs)
    else:
        # Compatible by ontology (or relabelled on purpose): the ontologies are equal, so
        # ours loses nothing; display data follows the left side.
        merged = ours
    if mapping:
        merged = recipes.add_labels(merged, sorted(set(mapping.values())))
    conflicts = [Conflict(kind="recipe", filename="", path=c["path"], detail=f"recipe {c['path']} {c['detail']}",
                          base=c.get("base"), ours=c.get("ours"), theirs=c.get("theirs"),
                          resolution=None if strategy == "fail" else strategy) for c in raw]
    return merged, conflicts


def _stats(store: Any, ours: Mapping[str, bytes | None], result: Mapping[str, bytes | None]) -> dict[str, int]:
    added = removed = 0
    touched: set[bytes] = set()
    for k, old, new in tree.diff(store, ours.get("items") or tree.EMPTY, result.get("items") or tree.EMPTY):
        if old is None:
            added += 1
        elif new is None:
            removed += 1
        else:
            touched.add(k)
    for layer in OPTIONAL_LAYERS:
        a, b = ours.get(layer), result.get(layer)
        if a is not None and b is not None:
            touched.update(k for k, _, _ in tree.diff(store, a, b))
    ours_items = ours.get("items") or tree.EMPTY
    res_items = result.get("items") or tree.EMPTY
    modified = sum(1 for k in touched if tree.get(store, ours_items, k) is not None
                   and tree.get(store, res_items, k) is not None)
    return {"items": tree.count(store, res_items), "added": added, "removed": removed, "modified": modified}


def plan_merge(store: Store, sources: Sequence[Any], *, target: Any = None, merge_name: str | None = None,
               with_items_annotations: bool = True, with_metadata: bool = True,
               with_task_annotations_status: bool = True, strategy: str = "fail", path_collision: str = "rename",
               keep_deleted: bool = False, map_labels: str | Mapping[str, str] | None = None) -> MergePlan:
    """Compute a merge without writing a version (objects are only staged).

    Args:
        store: The open store.
        sources: Datasets (``Dataset``, ``NAME``, ``NAME@REV`` or a dataset id), in fold order.
        target: The dataset to merge into (``--into``); None for a merge into a new dataset.
        merge_name: The new dataset's name (for the plan's output only).
        with_items_annotations: Keep annotations in the result (else the layer is dropped).
        with_metadata: Keep metadata in the result.
        with_task_annotations_status: Keep task and QA statuses in the result.
        strategy: ``fail``, ``ours``, ``theirs`` or ``union``.
        path_collision: ``rename`` or ``fail``.
        keep_deleted: Items deleted on one side survive if the other side holds them.
        map_labels: ``old=new,...``, a JSON object string, or a mapping: rename the labels of
            every theirs side's annotations; recipes then need not be compatible.

    Returns:
        The plan; ``plan.unresolved`` lists the conflicts a ``fail`` merge stops on.

    Raises:
        UsageError: Bad inputs (fewer than two distinct datasets, unknown strategy...).
        IncompatibleRecipesError: The recipes differ and no label map was given.
        NotFoundError: A dataset or revision does not exist.
    """
    if strategy not in STRATEGIES:
        raise UsageError(f"unknown merge strategy {strategy!r}", hint=f"use one of {', '.join(STRATEGIES)}")
    if path_collision not in m3.PATH_POLICIES:
        raise UsageError(f"unknown path collision policy {path_collision!r}", hint="use rename or fail")
    repo = store.repo
    objs = repo.objects
    srcs = [_resolve(store, s) for s in sources]
    tgt = _resolve(store, target) if target is not None else None
    if tgt is not None:
        if isinstance(target, Dataset) and target._rev is not None or isinstance(target, str) and "@" in target:
            raise UsageError("merge --into takes a dataset name, not a revision")
        if not srcs:
            raise UsageError("Merge requires at least one source to merge into the target")
        inputs = [tgt, *srcs]
    else:
        inputs = srcs
    ids = [i.record.id for i in inputs]
    if len(set(ids)) != len(ids) or len(inputs) < 2:
        raise UsageError("Merge requires at least two distinct datasets")
    mapping = recipes.parse_label_map(map_labels) if map_labels is not None else None
    named = [(i.name, repo.recipe(i.commit.recipe)) for i in inputs]
    if not mapping:
        recipes.check_compatible([(n, r) for n, r in named])
    options = {"with_items_annotations": bool(with_items_annotations), "with_metadata": bool(with_metadata),
               "with_task_annotations_status": bool(with_task_annotations_status), "strategy": strategy,
               "path_collision": path_collision, "keep_deleted": bool(keep_deleted),
               "map_labels": dict(mapping) if mapping else None}
    hist = History(repo)
    ours = inputs[0]
    acc: dict[str, bytes | None] = dict(ours.commit.layers)
    acc_items: bytes = acc["items"] or tree.EMPTY
    acc_paths = repo.path_index(acc_items)
    acc_folders = repo.stored_folder_index(acc_items)
    plan = MergePlan(inputs=inputs, target=tgt, merge_name=merge_name, layers=acc, path_root=acc_paths,
                     recipe=named[0][1], recipe_oid=Digest(ours.commit.recipe), options=options, store=store)
    if tgt is not None:
        target_history = hist.ancestors([tgt.head])
        if all(s.head in target_history for s in srcs):
            plan.up_to_date = True
            return plan
        plan.fast_forward = len(srcs) == 1 and tgt.head in hist.ancestors([srcs[0].head])
    dropped = [layer for layer, keep in (("annotations", with_items_annotations), ("metadata", with_metadata),
                                         ("status", with_task_annotations_status)) if not keep]
    heads = [ours.head]
    recipe = named[0][1]
    for theirs, (_, theirs_recipe) in zip(inputs[1:], named[1:]):
        base_id = hist.merge_base(heads, theirs.head)
        plan.bases.append(base_id.hex() if base_id else None)
        t_layers = dict(theirs.commit.layers)
        if mapping:
            t_layers["annotations"] = m3.remap_labels(objs, t_layers["annotations"], mapping)
        base_recipe = None
        if base_id is None:
            base_layers = m3.empty_layers()
            eff_o, eff_t = acc, t_layers
        else:
            base_commit = hist.commit(base_id)
            base_layers = dict(base_commit.layers)
            base_recipe = repo.recipe(base_commit.recipe)
            base_anc = hist.ancestors([base_id])
            o_scope = side_scope(hist, ours.head, base_anc) if plan.keeps_scope else None
            eff_o = _scoped(objs, base_layers, acc, o_scope)
            # Ours took values from the base it never held: the result is no longer narrower
            # than the base, so later merges must not treat it as sparse.
            plan.keeps_scope = plan.keeps_scope and eff_o == acc
            eff_t = _scoped(objs, base_layers, t_layers, side_scope(hist, theirs.head, base_anc))
        base_layers, eff_o, eff_t = dict(base_layers), dict(eff_o), dict(eff_t)
        for layer in dropped:
            base_layers[layer] = eff_o[layer] = eff_t[layer] = None
        res = m3.merge_layers(objs, base_layers, eff_o, eff_t,
                              MergeOptions(strategy=strategy, keep_deleted=keep_deleted,
                                           theirs_id=theirs.record.id_hex))
        paths = m3.resolve_paths(objs, acc_items, acc_paths, res.layers["items"] or tree.EMPTY,
                                 policy=path_collision, ours_folders=acc_folders)
        recipe, recipe_conflicts = _merge_recipe(base_recipe, recipe, theirs_recipe, strategy, mapping)
        plan.conflicts.extend(replace(c, source=theirs.name)
                              for c in [*recipe_conflicts, *res.conflicts, *paths.conflicts])
        plan.renamed.extend(paths.renamed)
        acc = dict(res.layers)
        acc["items"] = acc_items = paths.items
        acc_paths = paths.paths
        if acc_folders is not None:
            acc_folders = apply_folder_delta(objs, acc_folders, paths.folder_delta)
        heads.append(theirs.head)
    plan.layers = acc
    plan.path_root = acc_paths
    plan.folders_root = acc_folders
    plan.recipe = recipe
    plan.recipe_oid = Digest(ours.commit.recipe) if same(recipe, named[0][1]) else objs.put(RECIPE, recipe)
    return plan


def _publish(store: Store, plan: MergePlan, message: str) -> None:
    repo = store.repo
    parents: list[bytes] = []
    for i in plan.inputs:
        if i.head not in parents:
            parents.append(i.head)
    names = ", ".join(s.name for s in plan.sources)
    if plan.target is not None:
        default = f"merge {names} into {plan.target.record.name}"
    else:
        default = f"merge {names} -> {plan.merge_name}"
    c = Commit(layers=dict(plan.layers), recipe=plan.recipe_oid, parents=tuple(parents), op="merge",
               info=plan.info(), author=default_author(), message=message or default, time=now_iso())
    items_root = plan.layers["items"] or tree.EMPTY
    if plan.target is not None:
        plan.committed = repo.publish(ds=plan.target.record, expected_head=plan.target.head, commit=c,
                                      path_index=(items_root, plan.path_root), folders=plan.folders_root)
        plan.dataset = Dataset(store, plan.target.record)
        return
    assert plan.merge_name is not None
    rec = DatasetRecord(name=plan.merge_name, id=new_item_id(), created=now_iso(),
                        info={"src_datasets": [s.record.id_hex for s in plan.sources]})
    plan.committed = repo.publish(ds=None, expected_head=None, commit=c, create=rec,
                                  path_index=(items_root, plan.path_root), folders=plan.folders_root)
    plan.dataset = Dataset(store, repo.dataset(plan.merge_name))


@perf.bulk_op
def run_merge(store: Store, sources: Sequence[Any], *, target: Any = None, merge_name: str | None = None,
              dry_run: bool = False, message: str = "", **options: Any) -> MergePlan:
    """Plan a merge and, unless ``dry_run`` or conflicts stop it, write it as one version.

    Everything is checked and computed before anything is written; a ``fail`` merge with
    conflicts, an error or a dry run leaves the store as it was.

    Args:
        store: The open store.
        sources: The datasets to merge, in fold order (see ``plan_merge``).
        target: Merge into this dataset (``--into``) instead of a new one.
        merge_name: The new dataset's name (required without ``target``).
        dry_run: Compute and return the plan; write nothing, raise nothing for conflicts.
        message: The version message (default: says what was merged).
        **options: ``plan_merge``'s keyword options.

    Returns:
        The plan, with ``committed`` and ``dataset`` set when a version was written.

    Raises:
        MergeConflictError: Unresolved conflicts (strategy ``fail``); carries them.
        ConflictError: The target's head moved while merging (exit 5).
    """
    repo = store.repo
    if target is None:
        if merge_name is None:
            raise UsageError("Must provide a name for the merged dataset")
        validate_dataset_name(merge_name)
        try:
            repo.dataset(merge_name)
        except NotFoundError:
            pass
        else:
            raise UsageError(f"Dataset already exists: {merge_name}", hint="pick another name, or use --into")
    plan: MergePlan | None = None
    with repo.lock():
        try:
            plan = plan_merge(store, sources, target=target, merge_name=merge_name, **options)
            if dry_run or plan.up_to_date:
                plan.stats  # noqa: B018 -- read the staged result before it is discarded
                return plan
            if plan.unresolved:
                n = len(plan.unresolved)
                raise MergeConflictError(
                    f"merge stopped on {n} conflict{'s' if n != 1 else ''}; nothing was written",
                    [*plan.unresolved],
                    hint="choose a side with --strategy ours|theirs|union"
                    + (", or --path-collision rename" if any(c.kind == "path" for c in plan.unresolved) else ""),
                )
            _publish(store, plan, message)
            return plan
        finally:
            if plan is None or plan.committed is None:
                repo.objects.discard()  # staged nodes of a merge that was not written


def merge_datasets(store: Store, merge_name: str, datasets: Sequence[Any], *, with_items_annotations: bool = True,
                   with_metadata: bool = True, with_task_annotations_status: bool = True, strategy: str = "fail",
                   path_collision: str = "rename", keep_deleted: bool = False,
                   map_labels: str | Mapping[str, str] | None = None, message: str = "") -> Dataset:
    """Merge ``datasets`` into a new dataset ``merge_name`` (``store.datasets.merge``, §3.3).

    Returns the new Dataset (dtlpy returns True; we return what the caller needs next).

    Raises:
        MergeConflictError: Conflicts under strategy ``fail``; nothing was written.
        IncompatibleRecipesError: Recipes differ (exit 4); switch a recipe or map labels.
    """
    plan = run_merge(store, datasets, merge_name=merge_name, message=message,
                     with_items_annotations=with_items_annotations, with_metadata=with_metadata,
                     with_task_annotations_status=with_task_annotations_status, strategy=strategy,
                     path_collision=path_collision, keep_deleted=keep_deleted, map_labels=map_labels)
    assert plan.dataset is not None
    return plan.dataset


def merge_into(target_dataset: Dataset, sources: Sequence[Any], *, with_items_annotations: bool = True,
               with_metadata: bool = True, with_task_annotations_status: bool = True, strategy: str = "fail",
               path_collision: str = "rename", keep_deleted: bool = False,
               map_labels: str | Mapping[str, str] | None = None, message: str = "") -> Dataset:
    """Merge ``sources`` into ``target_dataset`` as a new version of it (``dataset.merge``, §3.5).

    The target is ours; each source is folded in as theirs. A target whose head is an
    ancestor of the single source fast-forwards; one that already holds every source is
    left as it is.
    """
    run_merge(target_dataset._store, sources, target=target_dataset, message=message,
              with_items_annotations=with_items_annotations, with_metadata=with_metadata,
              with_task_annotations_status=with_task_annotations_status, strategy=strategy,
              path_collision=path_collision, keep_deleted=keep_deleted, map_labels=map_labels)
    return Dataset(target_dataset._store, target_dataset.record)


@dataclass
class MergedVersion:
    """What ``merge_versions`` computed: the result's layers, its conflicts, and its derived
    filename and folder indexes (carried forward from ours; ``folders`` None when ours has
    none recorded)."""

    layers: dict[str, bytes | None]
    conflicts: list[Conflict]
    paths: Digest
    folders: Digest | None


def merge_commits(store: Store | Repository, base_commit_id: bytes | None, ours_commit_id: bytes,
                  theirs_commit_id: bytes, strategy: str = "fail", *, keep_deleted: bool = False,
                  path_collision: str = "rename", theirs_id: str = "") -> tuple[dict[str, bytes | None], list[Conflict]]:
    """Three-way merge of three versions' layers, for callers that publish themselves.

    Made for the working folder's commit when the head moved (CLI.md): ``ours`` is the new
    head, ``theirs`` the folder's version, ``base`` the version it was checked out from.
    No scopes, recipes or projection: the three are versions of one dataset.

    Args:
        store: A ``Store`` or ``Repository``; new tree nodes are staged in its object store
            (published by the caller's ``repo.publish``, or dropped with ``objects.discard``).
        base_commit_id: The base version, or None for the empty version.
        ours_commit_id: Ours.
        theirs_commit_id: Theirs.
        strategy: ``fail`` (conflicts returned, ours kept for them), ``ours``, ``theirs``, ``union``.
        keep_deleted: See ``MergeOptions``.
        path_collision: ``rename`` or ``fail`` (then ``path`` conflicts are returned and the
            items root is left unrenamed).
        theirs_id: Used to re-key annotations under ``union``.

    Returns:
        ``(layers, conflicts)``: layer name -> root (None: not held), and every conflict met
        (``Conflict.resolution`` is None for the unresolved ones). Never raises for conflicts.
    """
    m = merge_versions(store, base_commit_id, ours_commit_id, theirs_commit_id, strategy,
                       keep_deleted=keep_deleted, path_collision=path_collision, theirs_id=theirs_id)
    return m.layers, m.conflicts


def merge_versions(store: Store | Repository, base_commit_id: bytes | None, ours_commit_id: bytes,
                   theirs_commit_id: bytes, strategy: str = "fail", *, keep_deleted: bool = False,
                   path_collision: str = "rename", theirs_id: str = "") -> MergedVersion:
    """``merge_commits`` with the result's filename and folder indexes, for publishing it
    without rebuilding them from the whole items layer."""
    if strategy not in STRATEGIES:
        raise UsageError(f"unknown merge strategy {strategy!r}")
    repo = store.repo if isinstance(store, Store) else store
    objs = repo.objects
    base = dict(repo.commit(base_commit_id).layers) if base_commit_id else m3.empty_layers()
    ours = dict(repo.commit(ours_commit_id).layers)
    theirs = dict(repo.commit(theirs_commit_id).layers)
    res = m3.merge_layers(objs, base, _scoped(objs, base, ours, None), _scoped(objs, base, theirs, None),
                          MergeOptions(strategy=strategy, keep_deleted=keep_deleted, theirs_id=theirs_id))
    ours_items = ours["items"] or tree.EMPTY
    folders = repo.stored_folder_index(ours_items)
    paths = m3.resolve_paths(objs, ours_items, repo.path_index(ours_items), res.layers["items"] or tree.EMPTY,
                             policy=path_collision, ours_folders=folders)
    layers = dict(res.layers)
    layers["items"] = paths.items
    if folders is not None:
        folders = apply_folder_delta(objs, folders, paths.folder_delta)
    return MergedVersion(layers, [*res.conflicts, *paths.conflicts], paths.paths, folders)


# --------------------------------------------------------------------------------------
# recipe switch


def switch_recipe(dataset: Dataset, recipe: Mapping[str, Any], *, message: str = "") -> Digest | None:
    """Give ``dataset`` a new recipe as a version of its own (``op: "switch_recipe"``, §5).

    Args:
        dataset: The dataset (its head; not an older revision).
        recipe: A recipe record or document (validated with ``recipes.parse_recipe``).
        message: The version message.

    Returns:
        The new version's id, or None when the dataset already has exactly this recipe.
    """
    if dataset._rev is not None:
        raise UsageError("cannot switch the recipe of an older version")
    record = recipes.parse_recipe(dict(recipe))
    repo = dataset._repo
    with repo.lock():
        try:
            e = Editor(repo, dataset.record, message or f"switch recipe to {recipes.describe_recipe(record)}",
                       op="switch_recipe")
            e.set_recipe(record)
            return e.commit()
        except BaseException:
            repo.objects.discard()
            raise
