"""``dvs merge`` and ``dvs recipe show|switch``: argument parsing and output only.

It owns the merge command's surface (CLI.md: ``dvs merge NEW SRC1 SRC2 [SRC...]``,
``dvs merge --into TARGET SRC...``, strategies, projection flags, ``--path-collision``,
``--keep-deleted``, ``--map-labels``, ``--dry-run``) and its output: ``CONFLICT <kind>
<filename> <detail>`` lines, or with ``--json`` exactly one document
(``{"conflicts": [...]}`` and exit 1 when conflicts stop the merge). The recipe group shows a
dataset's ontology and switches it as a version of its own. Everything else is
``dvstore.merging``; errors become exit codes in ``dvstore.cli.main``.
"""

from __future__ import annotations

from typing import Any

import click

from dvstore import merging, recipes
from dvstore.cli.commands import Ctx, cli, json_opt, pass_ctx
from dvstore.cli.output import emit_json
from dvstore.errors import MergeConflictError, UsageError
from dvstore.hashing import short
from dvstore.io.dataloop import read_json_file
from dvstore.merge_item import STRATEGIES


def _load_label_map(spec: str | None) -> Any:
    """``old=new,...`` as given, or the JSON object in ``@mapping.json``."""
    if spec is None or not spec.startswith("@"):
        return spec
    path = spec[1:]
    return read_json_file(path, display=f"label map {path}", error=UsageError)


def _echo_conflicts(conflicts: list[Any]) -> None:
    for c in conflicts:
        click.echo(c.line())


@cli.command()
@click.argument("names", nargs=-1, metavar="NEW SRC1 SRC2 [SRC...] | --into TARGET SRC...")
@click.option("--into", "into", metavar="TARGET", help="Merge into this existing dataset as a new version of it.")
@click.option("--strategy", type=click.Choice(STRATEGIES), default="fail", show_default=True,
              help="How conflicts are settled: fail (write nothing), ours, theirs, union.")
@click.option("--no-annotations", is_flag=True, help="Leave annotations out of the result.")
@click.option("--no-metadata", is_flag=True, help="Leave user and non-intrinsic system metadata out of the result.")
@click.option("--no-task-status", is_flag=True, help="Leave task and annotation statuses out of the result.")
@click.option("--path-collision", type=click.Choice(["rename", "fail"]), default="rename", show_default=True,
              help="Two different items on one path, or an item that is also a folder of items: "
                   "rename one {stem}_{n}{ext}, or fail.")
@click.option("--keep-deleted", is_flag=True, help="Keep items deleted on one side that the other side still has.")
@click.option("--map-labels", metavar="OLD=NEW,...|@FILE.json",
              help="Rename the labels of the merged-in (theirs) annotations; recipes then need not match.")
@click.option("--dry-run", is_flag=True, help="Report what the merge would give; write nothing.")
@click.option("-m", "--message", default="", help="Version message.")
@json_opt
@pass_ctx
def merge(c: Ctx, names: tuple[str, ...], into: str | None, strategy: str, no_annotations: bool, no_metadata: bool,
          no_task_status: bool, path_collision: str, keep_deleted: bool, map_labels: str | None, dry_run: bool,
          message: str, as_json: bool) -> int:
    """Merge datasets into a new dataset NEW, or --into an existing one (three-way, keyed on item ids)."""
    if into is not None:
        if not names:
            raise UsageError("Merge requires at least one source to merge into the target",
                             hint="dvs merge --into TARGET SRC [SRC...]")
        merge_name, sources = None, list(names)
    else:
        if len(names) < 3:
            raise UsageError("Merge requires at least two distinct datasets", hint="dvs merge NEW SRC1 SRC2 [SRC...]")
        merge_name, sources = names[0], list(names[1:])
    store = c.store
    opts: dict[str, Any] = {
        "with_items_annotations": not no_annotations, "with_metadata": not no_metadata,
        "with_task_annotations_status": not no_task_status, "strategy": strategy,
        "path_collision": path_collision, "keep_deleted": keep_deleted,
        "map_labels": _load_label_map(map_labels),
    }
    try:
        plan = merging.run_merge(store, [c.dataset(s) for s in sources],
                                 target=c.dataset(into) if into is not None else None, merge_name=merge_name,
                                 dry_run=dry_run, message=message, **opts)
    except MergeConflictError as e:
        if as_json:
            emit_json({"conflicts": [x.to_json() for x in e.conflicts]})
        else:
            _echo_conflicts(e.conflicts)
        raise
    doc = plan.to_json()
    if as_json:
        doc["dry_run"] = dry_run
        emit_json(doc)
    else:
        _report(plan, doc, dry_run)
    # A dry run that would stop on conflicts says so in its exit code, like the real merge.
    return 1 if dry_run and plan.unresolved else 0


def _report(plan: merging.MergePlan, doc: dict[str, Any], dry_run: bool) -> None:
    sources = ", ".join(s.name for s in plan.sources)
    target = plan.target.record.name if plan.target is not None else plan.merge_name
    if plan.up_to_date:
        click.echo(f"Already up to date: {target} contains {sources}")
        return
    counts = f"{doc['items']} items (+{doc['added']} -{doc['removed']} ~{doc['modified']})"
    if dry_run:
        kind = "would fast-forward" if plan.fast_forward else "would merge"
        click.echo(f"Dry run: {kind} {sources} -> {target}: {counts}")
    else:
        assert plan.committed is not None
        kind = "Fast-forwarded" if plan.fast_forward else "Merged"
        click.echo(f"{kind} {sources} -> {target} ({short(plan.committed)}): {counts}")
    resolved = [x for x in plan.conflicts if x.resolution is not None]
    if resolved:
        click.echo(f"{len(resolved)} conflict{'s' if len(resolved) != 1 else ''} settled by --strategy "
                   f"{plan.options['strategy']}")
    for item, old, new in plan.renamed:
        click.echo(f"renamed {old} -> {new} (item {item[:12]})")
    if dry_run and plan.unresolved:
        _echo_conflicts(plan.unresolved)


# --------------------------------------------------------------------------------------
# recipes


@cli.group()
def recipe() -> None:
    """The label ontology (recipe) of a dataset."""


def _recipe_doc(ds: Any) -> dict[str, Any]:
    rec = ds.recipe
    return {"dataset": ds.name, "object": ds.version.recipe.hex(), **rec,
            "flat_labels": recipes.flat_labels(rec)}


@recipe.command("show")
@click.argument("spec", metavar="NAME[@REV]")
@json_opt
@pass_ctx
def recipe_show(c: Ctx, spec: str, as_json: bool) -> None:
    """Show the recipe of a dataset version: labels and attributes."""
    ds = c.dataset(spec)
    doc = _recipe_doc(ds)
    if as_json:
        emit_json(doc)
        return
    click.echo(f"recipe      {doc.get('title')} ({doc.get('id')})")
    click.echo(f"dataset     {ds.name}")
    labels = doc["flat_labels"]
    click.echo(f"labels      {len(labels)}")
    for name in labels:
        depth = name.count(".")
        click.echo(f"  {'  ' * depth}{name.rsplit('.', 1)[-1]}")
    attrs = doc.get("attributes") or []
    click.echo(f"attributes  {len(attrs)}")
    for a in attrs:
        scope = ",".join(a.get("scope") or ["*"])
        values = f" [{', '.join(a['values'])}]" if a.get("values") else ""
        click.echo(f"  {a['key']} ({a['type']}){values} scope={scope}")


@recipe.command("switch")
@click.argument("name")
@click.option("--file", "recipe_file", type=click.Path(dir_okay=False), help="Recipe JSON file.")
@click.option("--from", "from_ds", metavar="OTHER[@REV]", help="Take the recipe of this dataset.")
@click.option("-m", "--message", default="", help="Version message.")
@json_opt
@pass_ctx
def recipe_switch(c: Ctx, name: str, recipe_file: str | None, from_ds: str | None, message: str,
                  as_json: bool) -> None:
    """Give dataset NAME another recipe, as a new version of it (op switch_recipe)."""
    if recipe_file is not None and from_ds is not None:
        raise UsageError("--file and --from cannot be used together",
                         hint="give exactly one of --file FILE.json or --from OTHER")
    if recipe_file is None and from_ds is None:
        raise UsageError("recipe switch needs the new recipe: --file FILE.json or --from OTHER",
                         hint=f"dvs recipe switch {name} --file FILE.json")
    if "@" in name:
        raise UsageError("recipe switch takes a dataset name, not a revision")
    ds = c.dataset(name)
    new = recipes.load_recipe_file(recipe_file) if recipe_file is not None else c.dataset(str(from_ds)).recipe
    cid = merging.switch_recipe(ds, new, message=message)
    doc = {"name": ds.name, "head": ds.head_id.hex(), "changed": cid is not None,
           "recipe": {"id": new.get("id"), "title": new.get("title")}}
    if as_json:
        emit_json(doc)
    elif cid is None:
        click.echo(f"{ds.name} already uses recipe {recipes.describe_recipe(new)}")
    else:
        click.echo(f"{ds.name}: version {short(cid)}: recipe switched to {recipes.describe_recipe(new)}")
