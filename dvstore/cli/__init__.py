"""The ``dvs`` command: a thin click layer over ``dvstore.api``.

It owns argument parsing, output formats (text, ``--json``) and the one map from errors to
exit codes (CLI.md): every failure prints one ``error:`` line (and a ``hint:`` line where one
helps) and never a traceback unless ``DVS_DEBUG=1``. Commands live in one module per group.
"""

from __future__ import annotations

import atexit
import errno
import os
import signal
import sys
import traceback
from typing import Any

import click

from dvstore import perf
from dvstore.errors import EXIT_DAMAGED, EXIT_INTERRUPTED, EXIT_TERMINATED, EXIT_USAGE, DvsError

EXIT_INTERNAL = 70


def _fail(message: str, hint: str | None, code: int) -> None:
    click.echo(f"error: {message}", err=True)
    if hint:
        click.echo(f"hint: {hint}", err=True)
    sys.exit(code)


def _writing_output(e: BaseException) -> bool:
    """Whether ``e`` was raised writing the command's report: in ``click.echo`` or
    ``emit_json``, or by the final flush of stdout in ``_main``."""
    from dvstore.cli.output import emit_json

    frames = [f for f, _ in traceback.walk_tb(e.__traceback__)]
    if any(f.f_code in (click.echo.__code__, emit_json.__code__) for f in frames):
        return True
    return bool(frames) and frames[-1].f_code is _main.__code__


def _silence_stdout() -> None:
    """Point fd 1 at /dev/null so the interpreter's last flush of stdout cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
    except OSError:
        pass


def run() -> None:
    """The ``dvs`` executable: ``main``, then leave without tearing the interpreter down.

    Tearing it down frees every object one at a time: 0.035 s after adding 20,000 files,
    with the work done and the output written. So once ``main`` is over (its report
    flushed, its exit code known), the exit handlers run (they delete scratch files) and
    the process leaves with ``os._exit``. ``main`` itself still returns by ``SystemExit``,
    so a caller in the same process (a test) keeps its interpreter.
    """
    try:
        main()
        code: object = 0
    except SystemExit as e:
        code = e.code
    if code is not None and not isinstance(code, int):
        raise SystemExit(code)  # the interpreter prints it
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass  # main already reported a failing stdout; a closed stderr has no reader
    os._exit(code or 0)


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C's KeyboardInterrupt, so that the same
    cleanup runs: helper processes killed and reaped, scratch files deleted, nothing half
    published (a version is published by one transaction or not at all)."""


def _on_sigterm(_signum: int, _frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the cleanup short
    raise _Terminated()


def _interrupted(e: BaseException) -> None:
    if isinstance(e, _Terminated) or isinstance(e.__cause__, _Terminated):
        _fail("terminated", None, EXIT_TERMINATED)
    _fail("interrupted", None, EXIT_INTERRUPTED)


def main(argv: list[str] | None = None) -> None:
    """Run the click group with dvstore's error handling (exits by ``SystemExit``).

    SIGTERM ends the command as Ctrl-C does (exit 143 instead of 130), while ``main`` runs
    in the main thread; the previous handler is put back when it returns.
    """
    try:
        previous: Any = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread: signals are not this caller's to take
        previous = None
    try:
        _main(argv)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main(argv: list[str] | None) -> None:
    from dvstore.cli.commands import cli

    debug = os.environ.get("DVS_DEBUG") == "1"
    try:
        with perf.bulk():  # a short-lived process of bulk work (see dvstore.perf)
            rv: Any = cli.main(args=argv, prog_name="dvs", standalone_mode=False)
        sys.stdout.flush()  # a failing report must fail here, not unreported at exit
        sys.exit(rv if isinstance(rv, int) else 0)
    except DvsError as e:
        if debug:
            traceback.print_exc()
        _fail(e.message, e.hint, e.exit_code)
    except click.exceptions.Abort as e:  # click's form of KeyboardInterrupt
        _interrupted(e)
    except click.ClickException as e:
        no_args_help = getattr(click.exceptions, "NoArgsIsHelpError", ())
        if isinstance(e, no_args_help) and e.ctx is not None:
            # A bare 'dvs' (or 'dvs recipe') asks for orientation, as --help does: the help
            # on stdout, exit 0, as click did before 8.2 (now a usage error on stderr).
            click.echo(e.ctx.get_help())
            sys.exit(0)
        msg = e.format_message()
        hint = None
        if isinstance(e, click.UsageError) and e.ctx is not None:
            hint = f"see '{e.ctx.command_path} --help'"
        _fail(msg, hint, EXIT_USAGE if e.exit_code == 2 else e.exit_code)
    except KeyboardInterrupt as e:
        _interrupted(e)
    except BrokenPipeError:
        _silence_stdout()
        sys.stderr.close()
        sys.exit(0)
    except OSError as e:
        if debug:
            traceback.print_exc()
        if _writing_output(e):
            # The command's work is done (or it failed before changing anything); only its
            # report was lost, so do not claim that nothing was changed.
            _silence_stdout()
            _fail(f"cannot write the output: {e.strerror or e}",
                  "the store is consistent; 'dvs log NAME' shows whether a change was recorded", EXIT_DAMAGED)
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            _fail(f"no space left: {e.strerror}", "free some disk space; nothing was changed", EXIT_DAMAGED)
        where = f" ({e.filename})" if e.filename else ""
        _fail(f"{e.strerror or e}{where}", None, EXIT_DAMAGED if e.errno in (errno.EIO,) else EXIT_USAGE)
    except SystemExit:
        raise
    except Exception as e:  # noqa: BLE001 -- the last line of defence against tracebacks
        if debug:
            traceback.print_exc()
        _fail(f"internal error: {type(e).__name__}: {e}",
              "this is a bug in dvs; run again with DVS_DEBUG=1 and report the traceback", EXIT_INTERNAL)
