"""``dvs gc`` and ``dvs fsck``: thin wrappers over ``dvstore.gc`` and ``dvstore.fsck``.

Exit codes (CLI.md): gc 0, or 6 when it refuses to run on a damaged store (fail closed),
5 when the store lock stays busy; fsck 0 when there are no findings (notes allowed), 6 when
there are. Reports go to stdout (one JSON document with ``--json``); the one ``error:`` line
goes to stderr.
"""

from __future__ import annotations

import click

from dvstore.cli.commands import Ctx, cli, json_opt, pass_ctx
from dvstore.cli.output import emit_json
from dvstore.errors import CorruptionError


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


@cli.command()
@click.option("--dry-run", is_flag=True, help="Report what would be freed; delete nothing.")
@click.option("--expire", metavar="now|DURATION",
              help="Reflog retention (default 90d); 'now' also ignores the grace period unless --grace is given.")
@click.option("--grace", metavar="DURATION",
              help="Keep unreferenced data younger than this (default 1h; 0 with --expire now).")
@click.option("--compact", is_flag=True,
              help="Then rewrite the database file without its free pages (needs no other dvs process running).")
@json_opt
@pass_ctx
def gc(c: Ctx, dry_run: bool, expire: str | None, grace: str | None, compact: bool, as_json: bool) -> None:
    """Reclaim space taken by data no head, tag, recent reflog entry or running operation needs."""
    from dvstore import gc as gc_mod

    res = gc_mod.collect(c.store.repo, dry_run=dry_run, expire=expire, grace=grace, compact=compact)
    if as_json:
        emit_json(res.to_json())
        return
    verb = "would free" if dry_run else "freed"
    click.echo(f"gc {verb} {res.objects} objects ({_human(res.bytes)}): {res.object_entries} objects, "
               f"{res.small_blobs} small blobs, {res.blob_files} blob files, {res.tmp_files} temp files")
    if res.kept_young:
        click.echo(f"kept {res.kept_young} unreferenced entries younger than the grace period")
    if res.compacted:
        click.echo(f"compacted the database: {_human(res.db_bytes_before)} -> {_human(res.db_bytes_after)}")
    elif compact:
        click.echo(f"database not compacted ({_human(res.db_bytes_after)}): {res.compact_skipped}")


@cli.command()
@click.option("--read-data", is_flag=True, help="Also hash every blob (reads all data).")
@click.option("--rebuild", is_flag=True,
              help="Rebuild derived indexes, and salvage a damaged database into a fresh one.")
@json_opt
@pass_ctx
def fsck(c: Ctx, read_data: bool, rebuild: bool, as_json: bool) -> None:
    """Verify the store (read-only unless --rebuild); findings exit 6."""
    from dvstore import fsck as fsck_mod
    from dvstore.repo import find_store

    path = find_store(explicit=c.store_path) if c.store_path else find_store()
    rep = fsck_mod.fsck(path, read_data=read_data, rebuild=rebuild)
    if as_json:
        emit_json(rep.to_json())
    else:
        for f in rep.findings:
            click.echo(f"{f.kind}\t{f.subject}\t{f.message}")
        for n in sorted(rep.notes.values(), key=lambda n: n["kind"]):
            click.echo(f"note: {n['count']} {n['kind']} (e.g. {n['examples'][0]})")
        if rep.rebuilt is not None:
            for q in rep.rebuilt.get("quarantined", ()):
                click.echo(f"quarantined\t{q['blob']}\t{q['from']} copy did not match its name: moved to {q['kept']}")
            click.echo(f"rebuilt: {rep.rebuilt}")
        s = rep.stats
        if s:
            click.echo(f"checked {s.get('datasets', 0)} datasets, {s.get('commits', 0)} versions, "
                       f"{s.get('objects', 0)} objects, {s.get('small_blobs', 0) + s.get('blob_files', 0)} blobs"
                       f"{' (data read)' if read_data else ''}")
    if rep.findings:
        kinds = ", ".join(sorted(rep.kinds()))
        raise CorruptionError(f"fsck found {len(rep.findings)} problem(s): {kinds}", hint=_hint(rep.kinds()))


def _hint(kinds: set[str]) -> str:
    """What to do next, for the kinds found (docs/reliability.md section 5)."""
    readd = "add their original files again ('dvs add' to any dataset, e.g. a scratch one)"
    if kinds & {"blob-hash", "blob-size"}:
        return ("run 'dvs fsck --read-data --rebuild': it moves blobs whose bytes do not match their names to "
                f".dvs/quarantine/ (and repairs what else it can); then {readd}; see docs/reliability.md section 5")
    rebuild = "'dvs fsck --rebuild' repairs derived indexes and a damaged database"
    if "blob-missing" in kinds:
        rest = f"; {rebuild}" if kinds - {"blob-missing"} else ""
        return f"blobs are missing: {readd}{rest}; see docs/reliability.md section 5"
    return f"see docs/reliability.md for each kind; {rebuild}"
