"""Bounces and undeliverable addresses: scan, list what could not be read, clear a mark."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pshnotify.cli.common import (
    JsonOpt,
    NowOpt,
    ProgramOpt,
    app,
    err,
    fitted_table,
    handle_errors,
    label,
    local_time,
    make_runtime,
    out,
    print_json,
    rehearsal_note,
)
from pshnotify.domain.errors import InputError

bounces_app = typer.Typer(help="Bounces: read them, list what could not be read.")
address_app = typer.Typer(help="Participants' addresses marked undeliverable.")
app.add_typer(bounces_app, name="bounces")
app.add_typer(address_app, name="address")


@bounces_app.command("scan")
def scan_cmd(
    files: Annotated[
        list[Path] | None, typer.Argument(help="Bounce messages (.eml) to read; never moved.")
    ] = None,
    maildir: Annotated[
        Path | None,
        typer.Option("--maildir", help="A Maildir to read (default PSHNOTIFY_BOUNCE_MAILDIR)."),
    ] = None,
    now: NowOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Read bounces once: from FILEs, --maildir, or the configured Maildir and IMAP folder.

    Handled mail is moved to Processed, unreadable mail to Unrecognised; nothing is deleted."""
    from pshnotify.bounces.sources import FileSource, MaildirSource, Source
    from pshnotify.services.bounces.scan import scan

    with handle_errors():
        rt = make_runtime(now)
        rt.require_schema()
        rehearsal_note(rt, now)
        sources: list[Source] = []
        problems = [f"{f}: no such file" for f in files or [] if not f.is_file()]
        if maildir is not None:
            try:
                sources.append(MaildirSource(maildir))
            except FileNotFoundError as exc:
                problems.append(f"--maildir: {exc}")
        if problems:
            raise InputError(problems, hint="nothing was read")
        if files:
            sources.append(FileSource(list(files)))
        if not sources:
            sources = rt.bounce_sources()
        if not sources:
            raise InputError(
                [
                    "nothing to scan: name FILEs, --maildir DIR, or set PSHNOTIFY_BOUNCE_MAILDIR "
                    "or PSHNOTIFY_BOUNCE_IMAP_URL"
                ]
            )
        try:
            report = scan(rt.engine, rt.clock, sources, rt.scan_config())
        finally:
            for s in sources:
                s.close()
        if as_json:
            print_json(report.as_dict())
            return
        classes = ", ".join(f"{n} {c}" for c, n in sorted(report.bounces.items())) or "none"
        out.print(
            f"read {report.read}: bounces {classes}; auto-replies {report.autoreplies}; "
            f"unrecognised {report.unrecognised}; forged {report.forged}; "
            f"not ours {report.unmatched}; seen before {report.duplicates}",
            highlight=False,
        )
        for person in report.marked:
            out.print(f"marked undeliverable: {(person)}", highlight=False)
        for b in report.blocked:
            out.print(
                (
                    f"refused as {b['class']} (our mail, not the address): {b['recipient']} "
                    f"{b['status']} {b['diagnostic'][:120]}"
                ),
                highlight=False,
            )
        if report.unrecognised or report.unmatched:
            err.print(
                label("next:", "yellow", "`pshnotify bounces unrecognised` lists the mail kept")
            )


@bounces_app.command("unrecognised")
def unrecognised_cmd(
    limit: Annotated[int, typer.Option("--limit", min=1)] = 100,
    as_json: JsonOpt = False,
) -> None:
    """Mail at the bounce address that pshnotify could not read, newest first.

    It is kept, never deleted: read it in the Unrecognised folder."""
    from pshnotify.services.bounces.marks import list_unrecognised

    with handle_errors():
        rt = make_runtime(None)
        rt.require_schema()
        rows = list_unrecognised(rt.engine, limit)
        if as_json:
            print_json([r.__dict__ for r in rows])
            return
        if not rows:
            out.print("no unrecognised mail")
            return
        tz = rt.program(None).program.tz
        table = fitted_table(
            ["received", "from", "subject", "where", "why"],
            [
                [local_time(r.received_at, tz), r.sender, r.subject, r.location, r.reason]
                for r in rows
            ],
            drop_first=("where", "subject"),
            wrap=("from", "subject", "why"),
        )
        out.print(table)


@address_app.command("ok")
def address_ok_cmd(
    person: Annotated[str, typer.Argument(help="The person's roster id (or email).")],
    program: ProgramOpt = None,
    now: NowOpt = None,
) -> None:
    """Clear an undeliverable mark by hand (the address works again); audited. A launch
    email that bounced goes out again on the next pass."""
    from pshnotify.services.bounces.marks import address_ok

    with handle_errors(action="address.ok", subject=person):
        rt = make_runtime(now)
        stored = rt.program(program)
        rehearsal_note(rt, now, stored.program.tz)
        result = address_ok(
            rt.engine,
            stored,
            person,
            rt.clock,
            actor=rt.actor,
            message_id_domain=rt.settings.message_id_domain,
        )
        if not result.was_marked:
            out.print(
                (f"{result.person} ({result.email}) is not marked undeliverable; nothing changed"),
                highlight=False,
            )
            return
        out.print(
            (f"{result.person} ({result.email}): mark cleared ({result.reason})"),
            highlight=False,
        )
        if result.launch_requeued:
            out.print("their launch email goes out again on the next pass")
