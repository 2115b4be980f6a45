"""``dvs`` commands over history: diff, tag, tags, restore, reflog.

A thin layer over ``dvstore.history``: parse arguments, print text or one JSON document,
and pick the exit code (``diff --exit-code`` exits 1 on differences). No logic of its own.
"""

from __future__ import annotations

from typing import Any

import click

from dvstore import history
from dvstore.api import Dataset
from dvstore.cli.commands import Ctx, cli, json_opt, pass_ctx
from dvstore.cli.output import emit_json
from dvstore.errors import EXIT_DIFFERENCES, NotFoundError, UsageError
from dvstore.hashing import short
from dvstore.model import validate_dataset_name
from dvstore.repo import DeletedDataset


@cli.command()
@click.argument("a", metavar="A[@REV]")
@click.argument("b", metavar="[B[@REV]]", required=False)
@click.option("--stat", "as_stat", is_flag=True, help="Counts per section instead of the lists.")
@click.option(
    "--labels", is_flag=True, help="Also count every label on both sides (reads the whole annotations layer)."
)
@click.option("--exit-code", is_flag=True, help="Exit 1 when the versions differ, 0 when they are equal.")
@json_opt
@pass_ctx
def diff(c: Ctx, a: str, b: str | None, as_stat: bool, labels: bool, exit_code: bool, as_json: bool) -> None:
    """What differs from A to B, layer by layer (B defaults to A's dataset head).

    A and B are versions of one dataset or of two related ones (a clone and its source).
    Label counts: the change comes from the changed items only; absolute counts are given
    with --labels, and by --stat when both sides have few annotated items.
    """
    da = c.dataset(a)
    db = c.dataset(b if b is not None else da.name)
    doc = history.diff(da, db, labels=True if labels else (None if as_stat else False))
    if as_json:
        emit_json(_stat_doc(doc) if as_stat else doc)
    elif as_stat:
        _echo_stat(doc)
    else:
        _echo_diff(doc)
    if exit_code and not doc["identical"]:
        click.get_current_context().exit(EXIT_DIFFERENCES)


def _stat_doc(doc: dict[str, Any]) -> dict[str, Any]:
    out = history.stat(doc)
    out.update(a=doc["a"], b=doc["b"], identical=doc["identical"])
    return out


def _echo_diff(doc: dict[str, Any]) -> None:
    """git's --name-status spirit: one line per change, a letter for its kind."""
    click.echo(f"diff {_side(doc['a'])} -> {_side(doc['b'])}")
    if doc["identical"]:
        click.echo("no differences")
        return
    items = doc["items"]
    lines = [f"A  {f}" for f in items["added"]] + [f"D  {f}" for f in items["removed"]]
    lines += [f"M  {f}" for f in items["modified"]]
    lines += [f"R  {r['from']} -> {r['to']}" for r in items["renamed"]]
    lines += [f"H  {r['filename']} ({'hidden' if r['hidden'] else 'shown'})" for r in items["hidden"]]
    _section("items", lines)
    ann = doc["annotations"]
    lines = [f"A  {r['filename']}  {r['id']}  {r['label']}" for r in ann["added"]]
    lines += [f"D  {r['filename']}  {r['id']}  {r['label']}" for r in ann["removed"]]
    lines += [f"M  {r['filename']}  {r['id']}  {_label_move(r)}  ({', '.join(r['fields'])})" for r in ann["modified"]]
    _section("annotations", lines)
    lines = []
    for r in doc["metadata"]["changed"]:
        keys = [f"+{k}" for k in r["added"]] + [f"-{k}" for k in r["removed"]] + [f"~{k}" for k in r["modified"]]
        lines.append(f"{r['filename']}  {' '.join(keys)}")
    _section("metadata", lines)
    st = doc["status"]
    lines = [f"{r['filename']}  task {r['task']}: {_st(r['from'])} -> {_st(r['to'])}" for r in st["tasks"]]
    lines += [
        f"{r['filename']}  annotation {r['annotation']}: {_st(r['from'])} -> {_st(r['to'])}" for r in st["annotations"]
    ]
    _section("status", lines)
    _section("labels", _label_lines(doc["labels"]))
    _section("recipe", _recipe_lines(doc["recipe"]))


def _st(status: Any) -> str:
    return "(none)" if status is None else str(status)


def _side(s: dict[str, str]) -> str:
    return f"{s['dataset']}@{s['version'][:12]}"


def _label_move(r: dict[str, Any]) -> str:
    return f"{r['label_from']} -> {r['label']}" if "label_from" in r else str(r["label"])


def _section(title: str, lines: list[str]) -> None:
    if lines:
        click.echo(f"{title}:")
        for line in lines:
            click.echo(f"  {line}")


def _label_lines(labels: dict[str, Any]) -> list[str]:
    counts = labels.get("counts")
    if counts is not None:
        return [f"{k}  {v['a']} -> {v['b']} ({v['b'] - v['a']:+d})" for k, v in counts.items() if v["a"] != v["b"]]
    return [f"{k}  {v:+d}" for k, v in labels["change"].items()]


def _recipe_lines(r: dict[str, Any]) -> list[str]:
    if not r["changed"]:
        return []
    lines = [f"{r['a'][:12]} -> {r['b'][:12]}{'' if r.get('compatible') else ' (incompatible)'}"]
    if r.get("title"):
        lines.append(f"title: {r['title']['a']} -> {r['title']['b']}")
    for part in ("labels", "attributes"):
        for kind, sign in (("added", "+"), ("removed", "-"), ("changed", "~")):
            names = (r.get(part) or {}).get(kind) or []
            if names:
                lines.append(f"{part} {sign} {', '.join(names)}")
    return lines


def _echo_stat(doc: dict[str, Any]) -> None:
    s = history.stat(doc)
    click.echo(f"diff {_side(doc['a'])} -> {_side(doc['b'])}")
    i, a = s["items"], s["annotations"]
    click.echo(
        f"items        +{i['added']} -{i['removed']} ~{i['modified']} modified, "
        f"{i['renamed']} renamed, {i['hidden']} hidden/shown"
    )
    click.echo(f"annotations  +{a['added']} -{a['removed']} ~{a['modified']} modified")
    keys = doc["metadata"]["keys"]
    top = ", ".join(f"{k} ({n})" for k, n in sorted(keys.items(), key=lambda kv: (-kv[1], kv[0]))[:5])
    click.echo(f"metadata     {s['metadata']['items']} items" + (f": {top}" if top else ""))
    click.echo(f"status       {s['status']['tasks']} task, {s['status']['annotations']} annotation changes")
    label_lines = _label_lines(doc["labels"])
    click.echo("labels       " + ("; ".join(label_lines) if label_lines else "no change"))
    click.echo("recipe       " + ("changed" if s["recipe"]["changed"] else "unchanged"))


@cli.command(name="tag")
@click.argument("spec", metavar="NAME[@REV]")
@click.argument("name", metavar="TAG")
@click.option("-d", "--delete", is_flag=True, help="Remove the tag instead.")
@click.option("-f", "--force", is_flag=True, help="Move the tag if it exists.")
@json_opt
@pass_ctx
def tag_cmd(c: Ctx, spec: str, name: str, delete: bool, force: bool, as_json: bool) -> None:
    """Name a version (a snapshot); tags are gc roots."""
    ds = c.dataset(spec)
    if delete:
        if "@" in spec:
            raise UsageError("--delete takes NAME, not NAME@REV", hint=f"dvs tag --delete {ds.name} {name}")
        history.delete_tag(ds, name)
        if as_json:
            emit_json({"dataset": ds.name, "tag": name, "deleted": True})
        else:
            click.echo(f"Deleted tag {ds.name}@{name}")
        return
    target = history.tag(ds, name, force=force)
    if as_json:
        emit_json({"dataset": ds.name, "tag": name, "version": target.hex()})
    else:
        click.echo(f"Tagged {ds.name}@{name} -> {short(target)}")


def _live_or_deleted(c: Ctx, name: str) -> Dataset | DeletedDataset:
    """Dataset NAME, else the most recently deleted one of that name (NotFoundError if none)."""
    try:
        return c.dataset(name)
    except NotFoundError:
        if "@" in name:
            raise
        gone = c.store.repo.deleted_dataset(name)
        # {1} is the entry before the delete; once gc expired the delete entry, {0} is the head.
        when = f" at {gone.deleted}" if gone.deleted else " (gc expired its newest entries)"
        click.echo(f"note: dataset {name} was deleted{when}; 'dvs restore {name} @{{{1 if gone.deleted else 0}}}' "
                   f"brings back its head {short(gone.head)}", err=True)
        return gone


@cli.command(name="tags")
@click.argument("name")
@json_opt
@pass_ctx
def tags_cmd(c: Ctx, name: str, as_json: bool) -> None:
    """List the tags of dataset NAME (also of a deleted NAME)."""
    ds = _live_or_deleted(c, name)
    repo = c.store.repo
    tags = history.tags(ds) if isinstance(ds, Dataset) else {k: ds.tags[k] for k in sorted(ds.tags)}
    rows = []
    for t, cid in tags.items():
        v = repo.commit(cid)
        rows.append({"tag": t, "version": cid.hex(), "op": v.op, "time": v.time, "message": v.message})
    if as_json:
        emit_json(rows)
        return
    for r in rows:
        first = r["message"].splitlines()[0] if r["message"] else ""
        click.echo(f"{r['tag']:<30} {r['version'][:12]}  {r['time']}  {first}")


@cli.command(name="restore")
@click.argument("name")
@click.argument("rev")
@click.option("-m", "--message", default="", help="Version message.")
@click.option("--id", "dataset_id", metavar="ID",
              help="Bring back the deleted dataset with this id (see 'dvs datasets --deleted') as NAME.")
@json_opt
@pass_ctx
def restore_cmd(c: Ctx, name: str, rev: str, message: str, dataset_id: str | None, as_json: bool) -> None:
    """Make a new head version of NAME equal to REV (history is never rewritten).

    REV: an id prefix, a tag, ~N, or @{N} from 'dvs reflog NAME' (also written NAME@REV).
    Undo the last operation: dvs restore NAME @{1}

    A deleted NAME comes back the same way ('dvs restore NAME @{1}': its head when it was
    deleted), with its reflog and tags; --id picks a deleted dataset whose name is taken.
    """
    if "@" in name:
        raise UsageError("restore takes a dataset name, then the version", hint="dvs restore NAME REV")
    if dataset_id is not None or not _is_live(c, name):
        new, target = history.restore_deleted(c.store.repo, name, rev, dataset_id=dataset_id, message=message)
        if as_json:
            emit_json({"dataset": name, "version": new.hex(), "restored": target.hex(), "changed": True})
        else:
            click.echo(f"Restored deleted dataset {name} to {rev} ({short(target)}): head {short(new)}")
        return
    ds = c.dataset(name)
    before = ds.head_id
    target = history.resolve(ds, rev)  # before the restore: it moves what @{N} names
    new = history.restore(ds, target, message=message or f"restore {rev} ({short(target)})")
    if as_json:
        emit_json({"dataset": ds.name, "version": new.hex(), "restored": target.hex(), "changed": new != before})
    elif new == before:
        click.echo(f"{ds.name} already has the content of {rev} ({short(target)}); nothing to do")
    else:
        click.echo(f"Restored {ds.name} to {rev} ({short(target)}): new version {short(new)}")


@cli.command()
@click.argument("name")
@click.option("-n", "limit", type=click.IntRange(min=0), help="At most this many entries (0: none).")
@json_opt
@pass_ctx
def reflog(c: Ctx, name: str, limit: int | None, as_json: bool) -> None:
    """Every head move of NAME, newest first; 'dvs restore NAME @{N}' goes back to one.

    For a deleted NAME, its history up to the delete ({0}); 'dvs restore NAME @{1}' brings it back.
    """
    if "@" in name:
        raise UsageError("reflog takes a dataset name")
    ds = _live_or_deleted(c, name)
    rows = history.reflog(ds) if isinstance(ds, Dataset) else history.reflog_of(c.store.repo, ds.record)
    if limit is not None:
        rows = rows[:limit]
    if as_json:
        emit_json(rows)
        return
    for r in rows:
        new = r["new"][:12] if r["new"] else "-" * 12
        first = r["message"].splitlines()[0] if r["message"] else ""
        click.echo(f"{new}  {r['ref']:<14} {r['op']:<13} {r['time']}  {first}")


def _is_live(c: Ctx, name: str) -> bool:
    validate_dataset_name(name)
    return c.store.repo.db.get("datasets", name.encode("utf-8", "surrogatepass")) is not None
