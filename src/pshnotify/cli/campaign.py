"""Campaign commands: init, program, roster, launch, preview, run, status."""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

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
    program_app,
    rehearsal_note,
    roster_app,
)
from pshnotify.domain.errors import InputError
from pshnotify.domain.text import visible


# -- init / program ------------------------------------------------------------------------------
@app.command()
def init(now: NowOpt = None) -> None:
    """Create or upgrade the database, and store the program file."""
    from pshnotify.services.campaign.programs import register_program_file
    from pshnotify.store import migrate
    from pshnotify.store.db import normalize_url

    with handle_errors():
        rt = make_runtime(now, creates=True)
        program_file = rt.program_file()  # before the database is made
        migrate.upgrade(rt.engine)
        stored = register_program_file(rt.engine, program_file, rt.clock, rt.actor)
        from sqlalchemy.engine import make_url

        url = make_url(normalize_url(rt.settings.database_url)).render_as_string(hide_password=True)
        out.print(f"database ready: {url} (revision {migrate.current_revision(rt.engine)})")
        out.print(
            f"program: {stored.key} - {stored.program.program.name} "
            f"{stored.program.program.cycle}, {len(stored.program.waves)} waves"
        )
        from pshnotify.skeleton import packaged_templates

        shipped = rt.templates_dir == packaged_templates()
        out.print(
            "templates: the ones shipped with pshnotify (`pshnotify new DIR` writes copies to edit)"
            if shipped
            else f"templates: {rt.templates_dir}"
        )
        out.print("next: pshnotify roster import ROSTER.csv")


@program_app.command("load")
def program_load(file: Path, now: NowOpt = None) -> None:
    """Validate a program file and store it (several programs can live side by side)."""
    from pshnotify.services.campaign.programs import register_program_file

    with handle_errors():
        rt = make_runtime(now)
        rt.require_schema()
        stored = register_program_file(rt.engine, file, rt.clock, rt.actor)
        out.print(f"stored program {stored.key}; use it with --program {stored.key}")


@program_app.command("list")
def program_list(as_json: JsonOpt = False) -> None:
    """List the programs in the database."""
    from pshnotify.services.campaign.programs import all_programs

    with handle_errors():
        rt = make_runtime(None)
        rt.require_schema()
        rows = [
            {
                "key": p.key,
                "name": p.program.program.name,
                "cycle": p.program.program.cycle,
                "waves": [w.key for w in p.program.waves],
            }
            for p in all_programs(rt.engine)
        ]
        if as_json:
            print_json(rows)
            return
        table = [
            [str(r["key"]), str(r["name"]), str(r["cycle"]), ", ".join(r["waves"])] for r in rows
        ]
        out.print(fitted_table(["key", "name", "cycle", "waves"], table, wrap=("name", "waves")))


@program_app.command("check")
def program_check(file: Path) -> None:
    """Validate a program file without storing it."""
    from pshnotify.domain.program import load_program

    with handle_errors():
        program, _ = load_program(file)
        out.print(
            f"{file}: valid; program {program.key}, {len(program.waves)} waves, "
            f"{len(program.eligibility)} eligibility rules"
        )


# -- roster --------------------------------------------------------------------------------------
@roster_app.command("import")
def roster_import(
    file: Path,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check and count; change nothing.")
    ] = False,
    merge: Annotated[
        bool, typer.Option("--merge", help="Add and update only; remove nobody.")
    ] = False,
    yes: Annotated[
        bool,
        typer.Option("--yes", "-y", help="Mark many people removed without asking."),
    ] = False,
    program: ProgramOpt = None,
    now: NowOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Import the roster CSV (the whole current roster unless --merge)."""
    from pshnotify.services.campaign.roster import ManyRemovalsError, import_roster, many_removals

    with handle_errors(action="" if dry_run else "roster.import", subject=str(file)):
        rt = make_runtime(now)
        stored = rt.program(program)

        def run(limit: Any) -> Any:
            with _progress(file, "reading roster") as advance:
                return import_roster(
                    rt.engine,
                    stored,
                    file,
                    rt.clock,
                    actor=rt.actor,
                    dry_run=dry_run,
                    merge=merge,
                    progress=advance,
                    message_id_domain=rt.settings.message_id_domain,
                    max_removed=limit,
                )

        try:  # many removals are asked about first, like a launch
            report = run(None if yes or dry_run else many_removals)
        except ManyRemovalsError as exc:
            if not sys.stdin.isatty():
                raise InputError(
                    [f"--yes: {exc}; no terminal to ask for confirmation"], hint=exc.hint
                ) from None
            typer.confirm(
                f"Mark {exc.removed} of the {exc.present} people on the roster removed?",
                abort=True,
            )
            report = run(None)
        for warning in report.warnings:
            err.print(label("warning:", "yellow", warning), soft_wrap=True)
        if as_json:
            print_json(report.as_dict())
            return
        verb = "would import" if dry_run else "imported"
        out.print(
            f"{verb} {report.rows} people from {file}: {report.added} new, "
            f"{report.updated} updated, {report.unchanged} unchanged, "
            f"{report.removed} removed"
        )
        for heading, counts in (("wave", report.by_wave), ("eligibility", report.by_reason)):
            rows = [[key, str(n)] for key, n in sorted(counts.items())]
            out.print(fitted_table([heading, "people"], rows, wrap=heading, right=["people"]))
        if dry_run:
            out.print("dry run: nothing was changed")
        else:
            out.print("next: pshnotify launch WAVE --dry-run")


@contextmanager
def _progress(file: Path, what: str) -> Iterator[Callable[[int], None] | None]:
    if not err.is_terminal:
        yield None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    try:
        total = sum(1 for _ in file.open("rb")) - 1
    except OSError:
        yield None
        return
    with Progress(
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task(visible(what), total=max(total, 1))
        yield lambda n: bar.advance(task, n)


# -- launch --------------------------------------------------------------------------------------
@app.command()
def launch(
    wave: str,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show who would get it.")] = False,
    listing: Annotated[
        bool, typer.Option("--list", help="With --dry-run: every member and why (or why not).")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    force: Annotated[
        bool,
        typer.Option("--force", help="Launch even before the window opens or after it closed."),
    ] = False,
    at: Annotated[
        str | None,
        typer.Option(
            "--at",
            help="Schedule the launch for this time (ISO-8601; without an offset, the "
            "program's zone), for example the opening morning.",
        ),
    ] = None,
    cancel: Annotated[
        bool, typer.Option("--cancel", help="Withdraw a scheduled launch that has not begun.")
    ] = False,
    program: ProgramOpt = None,
    now: NowOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Queue the launch email for every required member of WAVE (or schedule it with --at)."""
    from pshnotify.services.campaign.launch import (
        launch_wave,
        preview_launch,
        refuse_outside_window,
    )

    with handle_errors(action="" if dry_run else "wave.launch", subject=wave):
        rt = make_runtime(now)
        stored = rt.program(program)
        rehearsal_note(rt, now, stored.program.tz)
        if cancel or at is not None:
            _schedule(rt, stored, wave, at, cancel=cancel, force=force, as_json=as_json)
            return
        summary = preview_launch(rt.engine, stored, wave, rt.clock)
        if (dry_run and not (listing and as_json)) or not as_json:
            _show_launch(summary, as_json)
        if dry_run:
            if listing:
                _list_audience(stored, wave, rt, as_json)
            if not as_json:
                out.print("dry run: nothing was queued")
            return
        refuse_outside_window(summary, force)
        if not yes:
            if not sys.stdin.isatty():
                raise InputError(
                    ["--yes: no terminal to ask for confirmation"],
                    hint="pass --yes to launch without asking",
                )
            typer.confirm(f"Queue {summary.to_queue} launch emails for {wave}?", abort=True)
        done = launch_wave(
            rt.engine,
            stored,
            wave,
            rt.clock,
            actor=rt.actor,
            message_id_domain=rt.settings.message_id_domain,
            force=force,
        )
        if as_json:
            print_json(done.as_dict())
            return
        out.print(
            f"queued {done.queued} launch emails for {wave}, to go out from "
            f"{local_time(done.due_at, stored.program.tz)}"
        )
        out.print("next: pshnotify run --once (or keep `pshnotify run` running)")


def _list_audience(stored: Any, wave: str, rt: Any, as_json: bool) -> None:
    from pshnotify.services.campaign.launch import launch_audience

    people = launch_audience(rt.engine, stored, wave)
    if as_json:
        print_json({"wave": wave, "people": people})
        return
    rows = [[p["id"], p["email"], p["launch"]] for p in people]
    out.print(fitted_table(["id", "email", "launch email"], rows, wrap="launch email"))


def _launched(launched_at: str | None, launch_at: str | None, tz: Any) -> str:
    """The day it launched, or when it is scheduled to (`at 09-11 09:00`)."""
    if launched_at:
        return local_time(dt.datetime.fromisoformat(launched_at), tz)[:10]
    if launch_at:
        return "at " + local_time(dt.datetime.fromisoformat(launch_at), tz)[5:16]
    return "-"


def _schedule(
    rt: Any, stored: Any, wave: str, at: str | None, *, cancel: bool, force: bool, as_json: bool
) -> None:
    from pshnotify.domain.values import Instant, read
    from pshnotify.services.campaign.launch import cancel_launch, schedule_launch

    tz = stored.program.tz
    if cancel:
        if at is not None:
            raise InputError(["--cancel: give --at or --cancel, not both"])
        done = cancel_launch(rt.engine, stored, wave, rt.clock, actor=rt.actor)
        if as_json:
            print_json(done.as_dict())
        elif done.changed:
            out.print(f"withdrew the launch of {wave} scheduled for {local_time(done.at, tz)}")
        else:
            out.print(f"{wave} had no scheduled launch: nothing changed")
        return
    assert at is not None
    # A time without an offset is in the program's zone, as people mean it; an offset is kept.
    when = read("--at", lambda: Instant.parse(at, stored.program.reach, local_when_bare=True))
    done = schedule_launch(rt.engine, stored, wave, when, rt.clock, actor=rt.actor, force=force)
    if as_json:
        print_json(done.as_dict())
        return
    out.print(
        f"{wave} will launch at {local_time(when.at, tz)}: the launch emails go to its required "
        f"members then ({done.members} now; people added meanwhile included)"
    )
    out.print(
        f"next: keep `pshnotify run` running; `pshnotify launch {wave} --cancel` withdraws it"
    )


def _show_launch(s: Any, as_json: bool) -> None:
    if as_json:
        print_json(s.as_dict())
        return
    out.print(label(s.wave, "bold", f"- {s.title}: {s.opens} to {s.closes} (window {s.window})"))
    rows: list[list[str | Text]] = [
        ["members", str(s.members)],
        [Text("get the launch email now", "green"), str(s.to_queue)],
        ["already queued or sent", str(s.already_queued)],
        ["already complete", str(s.completed)],
        ["exempted by an operator", str(s.operator_exempt)],
    ]
    rows += [[f"not required: {reason}", str(n)] for reason, n in sorted(s.not_required.items())]
    out.print(fitted_table(["", "people"], rows, wrap="", right=["people"]))
    if s.window == "before":
        out.print(label("note:", "yellow", f"the window opens on {s.opens}"))


# -- preview / run / status ---------------------------------------------------------------------
@app.command()
def preview(
    kind: str,
    person: Annotated[str, typer.Option("--person", help="Person id or email.")],
    program: ProgramOpt = None,
    now: NowOpt = None,
    raw: Annotated[
        bool, typer.Option("--raw", help="Print the message's bytes as they go out (MIME).")
    ] = False,
) -> None:
    """Show an email as its recipient reads it (nothing is queued or sent)."""
    from pshnotify.services.reporting.preview import preview as build
    from pshnotify.services.reporting.preview import readable, would_not_get

    with handle_errors():
        rt = make_runtime(now)
        stored = rt.program(program)
        data = build(
            rt.engine,
            stored,
            rt.checked_templates(),
            rt.clock,
            kind=kind,
            person_ref=person,
            message_id_domain=rt.settings.message_id_domain,
            links=rt.request_links(),
        )
        if raw:
            sys.stdout.write(data.decode("utf-8", "replace").replace("\r\n", "\n"))
        else:
            sys.stdout.write(readable(data))
        why = would_not_get(rt.engine, stored, rt.clock, kind=kind, person_ref=person)
        if why:
            err.print(label("note:", "yellow", f"{person} would never get this email: {why}"))


@app.command()
def status(program: ProgramOpt = None, now: NowOpt = None, as_json: JsonOpt = False) -> None:
    """Per wave: people required / not required by reason / launched / completed; messages."""
    from pshnotify.services.reporting.status import program_status

    with handle_errors():
        rt = make_runtime(now)
        stored = rt.program(program)
        data = program_status(rt.engine, stored, rt.clock.now())
        if as_json:
            print_json(data)
            return
        p = data["program"]
        out.print(label(p["key"], "bold", f"- {p['name']} {p['cycle']} ({p['timezone']})"))
        if p.get("paused"):
            out.print(
                label(
                    "PAUSED:",
                    "bold red",
                    "nothing of this program is sent until `pshnotify resume`",
                )
            )
        tz = stored.program.tz
        columns = ["wave", "window", "launched", "req", "not req", "emailed", "done"]
        columns += ["queued", "delivered", "failed"]
        rows: list[list[str]] = []
        reasons: dict[str, dict[str, int]] = {}
        for key, w in data["waves"].items():
            ppl, msg = w["people"], w["messages"]
            reasons[key] = ppl["not_required"]
            launched_at = w["launched_at"]
            rows.append(
                [
                    f"{key} (paused)" if w.get("paused") else key,
                    f"{w['opens'][5:]}..{w['closes'][5:]}",
                    _launched(launched_at, w.get("launch_at"), tz),
                    str(ppl["required"]),
                    str(sum(ppl["not_required"].values())),
                    str(ppl["launched"]),
                    str(ppl["completed"]),
                    str(msg["queued"] + msg["deferred"] + msg["sending"]),
                    str(msg["delivered"]),
                    str(msg["failed"] + msg["unknown"]),
                ]
            )
        table = fitted_table(columns, rows, drop_first=("window", "not req", "launched"))
        out.print(table)
        d = data["delivery"]
        out.print(
            f"delivery: oldest due message {d['oldest_due_seconds']:.0f} s old; attempts "
            + (", ".join(f"{k} {v}" for k, v in d["attempts"].items()) or "none")
        )
        b = data["bounces"]
        if b["undeliverable"] or b["blocked"] or b["complaint"] or b["unrecognised"]:
            out.print(
                f"bounces: {b['undeliverable']} addresses undeliverable, {b['blocked']} messages "
                f"refused as spam or by policy (our mail, not the address), {b['complaint']} "
                f"complaints, {b['unrecognised']} unreadable (`pshnotify bounces unrecognised`)",
                highlight=False,
            )
        if data["completions"]["unmatched"]:
            out.print(
                f"unmatched completions: {data['completions']['unmatched']} "
                "(review with `pshnotify completions unmatched`)"
            )
        all_reasons = sorted({r for by in reasons.values() for r in by})
        if all_reasons:
            counts = [[r, *(str(reasons[w].get(r, 0)) for w in reasons)] for r in all_reasons]
            # many waves: the last ones are left out (and named) before a reason is cut
            waves = list(reversed(reasons))
            why = fitted_table(["not required", *reasons], counts, waves, right=list(reasons))
            out.print(why)
