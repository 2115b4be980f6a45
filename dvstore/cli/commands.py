"""``dvs`` commands for the store, datasets and versions: init, create, datasets, delete, add,
ls, show, log, and the working folder (checkout, status, commit)."""

from __future__ import annotations

import os
from typing import Any

import click

from dvstore import tree
from dvstore.api import Dataset, Store
from dvstore.cli.output import echo_version, emit_json, version_json
from dvstore.errors import DvsError, NotFoundError, UsageError
from dvstore.hashing import short


class Ctx:
    def __init__(self, store_path: str | None) -> None:
        self.store_path = store_path
        self._store: Store | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.store_path) if self.store_path else Store.find()
        return self._store

    def dataset(self, spec: str) -> Dataset:
        """NAME or NAME@REV."""
        repo = self.store.repo
        rec, cid = repo.resolve(spec)
        rev = None if "@" not in spec else cid
        return Dataset(self.store, rec, rev)


pass_ctx = click.make_pass_decorator(Ctx)
json_opt = click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--store", "store_path", metavar="PATH", help="The store (default: $DVS_STORE, else the nearest .dvs/).")
@click.version_option(package_name="dvstore", prog_name="dvs")
@click.pass_context
def cli(ctx: click.Context, store_path: str | None) -> None:
    """dvs: a Git-like version store for ML datasets."""
    ctx.obj = Ctx(store_path)


@cli.command()
@click.argument("directory", default=".", type=click.Path(file_okay=False))
def init(directory: str) -> None:
    """Create a store in DIRECTORY/.dvs."""
    os.makedirs(directory, exist_ok=True)
    s = Store.init(directory)
    click.echo(f"Initialised an empty dvs store in {s.path}")


@cli.command()
@click.argument("name")
@click.option("--recipe", "recipe_file", type=click.Path(dir_okay=False), help="Recipe JSON file.")
@json_opt
@pass_ctx
def create(c: Ctx, name: str, recipe_file: str | None, as_json: bool) -> None:
    """Create an empty dataset NAME."""
    from dvstore import recipes

    recipe = recipes.load_recipe_file(recipe_file) if recipe_file else None
    ds = c.store.datasets.create(name, recipe=recipe)
    if as_json:
        emit_json({"name": ds.name, "id": ds.id, "head": ds.head_id.hex(), "items": 0})
    else:
        click.echo(f"Created dataset {ds.name} ({short(ds.head_id)})")


@cli.command()
@click.option("--deleted", is_flag=True, help="List deleted datasets whose versions gc still keeps instead.")
@json_opt
@pass_ctx
def datasets(c: Ctx, deleted: bool, as_json: bool) -> None:
    """List datasets."""
    if deleted:
        _deleted_datasets(c, as_json)
        return
    rows: list[dict[str, Any]] = []
    for ds in sorted(c.store.datasets.list(), key=lambda d: d.name):
        head = ds.head_id
        n = tree.count(c.store.repo.objects, ds.version.layers["items"] or tree.EMPTY)
        rows.append({"name": ds.name, "id": ds.id, "head": head.hex(), "items": n})
    if as_json:
        emit_json(rows)
        return
    for r in rows:
        click.echo(f"{r['name']:<30} {r['head'][:12]}  {r['items']:>9} items")


def _deleted_datasets(c: Ctx, as_json: bool) -> None:
    repo = c.store.repo
    rows: list[dict[str, Any]] = []
    for d in repo.deleted_datasets():
        try:
            n: int | None = tree.count(repo.objects, repo.commit(d.head).layers["items"] or tree.EMPTY)
        except DvsError:
            n = None  # a head that was already damaged when it was deleted ('dvs fsck' names it)
        rows.append({"name": d.record.name, "id": d.record.id_hex, "head": d.head.hex(), "items": n,
                     "deleted": d.deleted, "tags": sorted(d.tags)})
    if as_json:
        emit_json(rows)
        return
    for r in rows:
        tags = f"  tags: {', '.join(r['tags'])}" if r["tags"] else ""
        items = "?" if r["items"] is None else r["items"]
        click.echo(f"{r['name']:<30} {r['head'][:12]}  {items:>9} items  deleted {r['deleted'] or '(expired)'}"
                   f"  id {r['id']}{tags}")


@cli.command()
@click.argument("name")
@pass_ctx
def delete(c: Ctx, name: str) -> None:
    """Remove dataset NAME (its versions stay recoverable until gc expires them:
    'dvs restore NAME @{1}' brings it back)."""
    c.store.datasets.delete(name)
    click.echo(f"Deleted dataset {name} (undo: dvs restore {name} @{{1}})")


@cli.command()
@click.argument("name")
@click.argument("paths", nargs=-1, required=True)
@click.option("--to", "to", default="/", metavar="/DIR", help="Put items under this folder.")
@click.option("--annotations", type=click.Path(), help="COCO file or Dataloop-style json/ folder.")
@click.option("--format", "fmt", type=click.Choice(["coco", "dataloop"]), help="Annotation format.")
@click.option("-m", "--message", default="", help="Version message.")
@json_opt
@pass_ctx
def add(c: Ctx, name: str, paths: tuple[str, ...], to: str, annotations: str | None, fmt: str | None,
        message: str, as_json: bool) -> None:
    """Ingest files or folders into dataset NAME as one new version.

    Left out of the folders: the store itself, .dvs-checkout files, and the --annotations
    file when it lies inside one of them.
    """
    from dvstore.ingest import ingest, progress_bar

    if fmt is not None and annotations is None:
        raise UsageError(f"--format {fmt} needs an annotation file (--annotations)",
                         hint=f"dvs add NAME PATH... --annotations FILE --format {fmt}")
    ds = c.dataset(name)
    if "@" in name:
        raise UsageError("add takes a dataset name, not a revision")
    with ds.edit(message or f"add {' '.join(paths)}") as e:
        annotating = progress_bar("annotating", f"reading {os.path.basename(annotations)}") if annotations else None
        stats = ingest(e, list(paths), to=to, annotations=annotations, fmt=fmt, progress=progress_bar("adding"),
                       annotating=annotating)
    new = e.committed
    doc = {"version": new.hex() if new else None, "files": stats.files, "bytes": stats.bytes,
           "hashed": stats.hashed, "cached": stats.cached, "annotated": stats.annotated,
           "unmatched_annotations": stats.skipped, "excluded": stats.excluded}
    if as_json:
        emit_json(doc)
        return
    if new is None:
        click.echo(f"No changes: {stats.files} files already in {name}")
    else:
        click.echo(f"{name}: version {short(new)}: {stats.files} files ({stats.bytes:,} bytes, "
                   f"{stats.hashed} hashed, {stats.cached} unchanged), {stats.annotated} annotated")
    for path in stats.excluded:
        click.echo(f"not added: {path} (the annotation file)")
    if stats.skipped:
        click.echo(f"warning: {len(stats.skipped)} annotated files not found among the added files, "
                   f"e.g. {stats.skipped[0]}", err=True)


@cli.command(name="ls")
@click.argument("spec", metavar="NAME[@REV]")
@click.option("--filter", "query", metavar="QUERY", help="DQL filter as JSON or @file.json.")
@json_opt
@pass_ctx
def ls_cmd(c: Ctx, spec: str, query: str | None, as_json: bool) -> None:
    """List items."""
    ds = c.dataset(spec)
    items = ds.items.list(filters=load_query(query))
    if as_json:
        emit_json([it.to_json() for it in items])
        return
    for it in items:
        n = len(it.annotations)
        click.echo(f"{it.filename}\t{it.size}\t{it.binary[:12]}\t{n} annotation{'s' if n != 1 else ''}")


def load_query(query: str | None) -> Any:
    """A DQL document from inline JSON or @file.json (``dataloop.read_json_file``'s rules)."""
    from dvstore.errors import FilterError
    from dvstore.io.dataloop import parse_json_bytes, read_json_file

    if query is None:
        return None
    if query.startswith("@"):
        return read_json_file(query[1:], display=f"filter file {query[1:]}", error=FilterError)
    return parse_json_bytes(os.fsencode(query), "the filter", error=FilterError)


@cli.command()
@click.argument("spec", metavar="NAME[@REV]")
@click.argument("filename", required=False)
@json_opt
@pass_ctx
def show(c: Ctx, spec: str, filename: str | None, as_json: bool) -> None:
    """Show a version (head, parents, op, counts, recipe) or one item in full."""
    ds = c.dataset(spec)
    if filename:
        item = ds.items.get(filepath=filename)
        if as_json:
            emit_json(item.to_json())
            return
        import json

        click.echo(json.dumps(item.to_json(), indent=2, sort_keys=True, ensure_ascii=False))
        return
    cid = ds.head_id
    v = ds.version
    doc = version_json(ds, cid, v, ds.counts())
    doc["dataset"] = ds.name
    if as_json:
        emit_json(doc)
        return
    click.echo(f"dataset   {ds.name}")
    click.echo(f"version   {cid.hex()}")
    click.echo(f"parents   {' '.join(p.hex()[:12] for p in v.parents) or '-'}")
    click.echo(f"op        {v.op}")
    click.echo(f"time      {v.time}")
    click.echo(f"author    {v.author}")
    click.echo(f"message   {v.message}")
    click.echo(f"items     {doc['items']}")
    click.echo(f"annotations {doc['annotations']}")
    click.echo(f"recipe    {doc['recipe']['title']} ({doc['recipe']['id']})")


@cli.command()
@click.argument("spec", metavar="NAME[@REV]")
@click.option("-n", "limit", type=click.IntRange(min=0), help="At most this many versions (0: none).")
@json_opt
@pass_ctx
def log(c: Ctx, spec: str, limit: int | None, as_json: bool) -> None:
    """Versions, newest first."""
    ds = c.dataset(spec)
    rows = ds.log(limit)
    if as_json:
        out = []
        for cid, v in rows:
            d = version_json(ds, cid, v)
            d.update(Dataset(c.store, ds.record, cid).counts())
            out.append(d)
        emit_json(out)
        return
    for cid, v in rows:
        echo_version(cid, v)


@cli.command()
@click.argument("src", metavar="SRC[@REV]")
@click.argument("new", required=False)
@click.option("--filter", "query", metavar="QUERY", help="DQL item query (JSON or @file.json).")
@click.option("--no-annotations", is_flag=True, help="Do not clone annotations.")
@click.option("--no-metadata", is_flag=True, help="Do not clone user and non-intrinsic system metadata.")
@click.option("--no-task-status", is_flag=True, help="Do not clone task and annotation statuses.")
@click.option("--into", "into", metavar="DST", help="Clone into this existing dataset instead.")
@click.option("--target-dir", metavar="/D", help="With --into: put the items under this folder.")
@click.option("-m", "--message", default="", help="Version message.")
@json_opt
@pass_ctx
def clone(c: Ctx, src: str, new: str | None, query: str | None, no_annotations: bool, no_metadata: bool,
          no_task_status: bool, into: str | None, target_dir: str | None, message: str, as_json: bool) -> None:
    """Clone SRC into a new dataset NEW (or --into an existing one); no binary is copied."""
    from dvstore.clone import clone as do_clone

    if new is None and into is None:
        raise UsageError("Must provide clone name or destination dataset id", hint="dvs clone SRC NEW")
    if target_dir and not into:
        raise UsageError("--target-dir goes with --into")
    ds = c.dataset(src)
    out = do_clone(ds, clone_name=new, filters=load_query(query), with_items_annotations=not no_annotations,
                   with_metadata=not no_metadata, with_task_annotations_status=not no_task_status,
                   dst_dataset=into, target_directory=target_dir, message=message)
    n = tree.count(c.store.repo.objects, out.version.layers["items"] or tree.EMPTY)
    if as_json:
        emit_json({"name": out.name, "id": out.id, "head": out.head_id.hex(), "items": n})
    else:
        click.echo(f"Cloned {src} -> {out.name} ({short(out.head_id)}, {n} items)")


def _register() -> None:
    """Attach the command groups that live in their own modules."""
    import importlib

    for mod in ("workdir_cmds", "merge_cmds", "history_cmds", "maint_cmds"):
        try:
            importlib.import_module(f"dvstore.cli.{mod}")
        except ModuleNotFoundError as e:
            if e.name != f"dvstore.cli.{mod}":
                raise


_register()

__all__ = ["cli", "NotFoundError"]
