"""Command-line interface: a thin layer over the Python API.

Every user-facing problem raises :class:`gptwaves.errors.GptwavesError`, printed here as one
line (``gptwaves: error: ...``) with a non-zero exit code, never a traceback.

The commands live in :mod:`gptwaves.cli_stages` (one per pipeline stage) and
:mod:`gptwaves.cli_jobs` (whole runs); what they share in :mod:`gptwaves.cli_options`.
"""

from __future__ import annotations

import sys

import click

from .errors import GptwavesError
from . import cli_jobs, cli_stages  # noqa: F401  (importing them registers their commands on the group)
from .cli_options import cli, _harden, _Finite, _Integer, spelling_table, table_text, waves_table

bench = cli_jobs.bench  # the bench command object (tests read its choices)


_harden(cli)


def main(argv: list[str] | None = None) -> int:
    try:
        cli.main(args=argv, prog_name="gptwaves", standalone_mode=False)
    except GptwavesError as e:
        click.echo(f"gptwaves: error: {e}", err=True)
        return e.exit_code
    except click.exceptions.Abort:
        click.echo("gptwaves: aborted", err=True)
        return 130
    except KeyboardInterrupt:
        click.echo("gptwaves: interrupted; re-run the same command to resume", err=True)
        return 130
    except click.ClickException as e:  # usage errors too: one line like every other error
        msg = " ".join(e.format_message().split())
        ctx = getattr(e, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if isinstance(e, click.UsageError) and ctx is not None else ""
        click.echo(f"gptwaves: error: {msg}{hint}", err=True)
        return e.exit_code
    except click.exceptions.Exit as e:
        return e.exit_code
    except OSError as e:  # a write or read fault the stages did not name themselves
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        click.echo(f"gptwaves: error: {where}{e.strerror or e}", err=True)
        return 1
    except MemoryError:
        click.echo("gptwaves: error: out of memory; try fewer --samples or a smaller batch", err=True)
        return 1
    except Exception as e:  # a bug, not bad input: still one line (GPTWAVES_DEBUG=1 shows the traceback)
        import os

        if os.environ.get("GPTWAVES_DEBUG"):
            raise
        first = (str(e).strip().splitlines() or [""])[0][:200]
        click.echo(f"gptwaves: error: internal error ({type(e).__name__}: {first}); re-run with "
                   "GPTWAVES_DEBUG=1 for the traceback and please report it", err=True)
        return 3
    return 0


def entry() -> None:  # pragma: no cover
    sys.exit(main())


__all__ = ["cli", "main", "entry", "bench", "spelling_table", "table_text", "waves_table", "_Finite", "_Integer"]
