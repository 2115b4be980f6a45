"""``dvs checkout``, ``dvs status`` and ``dvs commit``: the working folder (CLI.md).

A thin layer over ``dvstore.workdir``. ``checkout`` finds the store as every command does;
``status`` and ``commit`` take it from the folder's ``.dvs-checkout`` (``--store`` overrides).
"""

from __future__ import annotations

import click

from dvstore import workdir
from dvstore.cli.commands import Ctx, cli, json_opt, pass_ctx
from dvstore.cli.output import emit_json
from dvstore.errors import EXIT_DIFFERENCES
from dvstore.hashing import short
from dvstore.ingest import progress_bar


@cli.command()
@click.argument("spec", metavar="NAME[@REV]")
@click.argument("directory", metavar="DIR")
@click.option("--force", is_flag=True,
              help="Write into a non-empty folder. In a working folder, items/ and json/ become exactly this "
                   "version: files there that it does not have are deleted (uncommitted changes are lost). "
                   "In any other folder nothing is deleted: files in the way are replaced. Nothing outside "
                   "items/, json/ and .dvs-checkout is touched; symlinks are removed, never followed.")
@json_opt
@pass_ctx
def checkout(c: Ctx, spec: str, directory: str, force: bool, as_json: bool) -> None:
    """Materialise a version of a dataset as a working folder DIR (items/, json/).

    A checkout that fails (a corrupt blob, exit 6; Ctrl-C) into a new or empty DIR removes
    what it wrote; into a non-empty DIR it leaves no .dvs-checkout, and running it again
    with --force finishes it.
    """
    ds = c.dataset(spec)
    stats = workdir.checkout(c.store, ds, None, directory, force=force, progress=progress_bar("checking out"))
    if as_json:
        emit_json(stats.to_json())
    else:
        click.echo(f"Checked out {stats.dataset} version {stats.version[:12]} into {stats.dir}: "
                   f"{stats.items} items ({stats.bytes:,} bytes)")
    if stats.skipped_json:
        click.echo(f"warning: {len(stats.skipped_json)} json files not written (a folder of other items' json "
                   f"has the same name), e.g. for {stats.skipped_json[0]}", err=True)


@cli.command()
@click.argument("directory", metavar="[DIR]", default=".")
@click.option("--exit-code", "exit_code", is_flag=True, help="Exit with 1 when the folder has changes.")
@json_opt
@pass_ctx
@click.pass_context
def status(ctx: click.Context, c: Ctx, directory: str, exit_code: bool, as_json: bool) -> None:
    """What changed in a working folder since its checkout."""
    st = workdir.status(directory, store_path=c.store_path)
    if as_json:
        emit_json(st.to_json())
    else:
        _echo_status(st)
    if exit_code and not st.clean:
        ctx.exit(EXIT_DIFFERENCES)


def _echo_status(st: workdir.Status) -> None:
    click.echo(f"On dataset {st.dataset}, version {st.version[:12]}")
    if st.clean:
        click.echo("nothing to commit, working folder clean")
    rows = [("added", fn, "") for fn in st.added]
    rows += [("removed", fn, "") for fn in st.removed]
    rows += [("modified", fn, "") for fn in st.modified]
    rows += [("json", fn, f" ({', '.join(parts)})") for fn, parts in st.json_changed.items()]
    for kind, fn, extra in sorted(rows, key=lambda r: (r[1], r[0])):
        click.echo(f"  {kind + ':':<10}{fn}{extra}")
    for path in st.ignored:
        click.echo(f"  {'ignored:':<10}{path} (no such item)")


@cli.command(name="commit")
@click.argument("directory", metavar="[DIR]", default=".")
@click.option("-m", "--message", default="", help="Version message.")
@json_opt
@pass_ctx
def commit_cmd(c: Ctx, directory: str, message: str, as_json: bool) -> None:
    """Record a working folder's changes as a new version of its dataset.

    Changed, new and missing files under items/ replace, add and delete items. Edits to
    annotations, metadata, status and hidden in json/ files are applied; a deleted json
    file, or a field left out of one, changes nothing. If the dataset's head has moved
    since the checkout, the changes are merged three-way into it (base: the checked-out
    version); when they conflict with the head's, nothing is written (exit 5).
    """
    res = workdir.commit_folder(directory, message, store_path=c.store_path)
    st = res.status
    if as_json:
        doc = {"version": res.version.hex() if res.version else None, "parent": res.parent.hex(),
               "dataset": st.dataset, "added": st.added, "removed": st.removed, "modified": st.modified,
               "json_changed": st.json_changed, "warnings": res.warnings}
        emit_json(doc)
    elif res.version is None:
        click.echo("nothing to commit, working folder clean")
    else:
        click.echo(f"{st.dataset}: version {short(res.version)}: {len(st.added)} added, {len(st.removed)} removed, "
                   f"{len(st.modified)} modified, {len(st.json_changed)} json edited")
    for w in res.warnings:
        click.echo(f"warning: {w}", err=True)
