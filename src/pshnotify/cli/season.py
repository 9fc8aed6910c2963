"""Season commands: run (the daemon, or one pass), plan, extend, exempt."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.text import Text

from pshnotify.cli.common import (
    Cell,
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

if TYPE_CHECKING:
    from pshnotify.runtime.wiring import Runtime


@app.command()
def run(
    once: Annotated[
        bool, typer.Option("--once", help="One pass at --now (or now), then exit.")
    ] = False,
    now: NowOpt = None,
    interval: Annotated[
        float, typer.Option("--interval", min=1, help="Seconds between passes.")
    ] = 30,
    log_format: Annotated[str, typer.Option("--log-format", help="text or json")] = "text",
    as_json: JsonOpt = False,
) -> None:
    """Run the daemon: queue what comes due and send it.

    What comes due: launches for late joiners, reminders, reports.

    `--once` does one pass; `--now T` without `--once` starts the clock at T.
    """  # (one line a paragraph: Typer keeps a later paragraph's line breaks as they are)
    from pshnotify.runtime import logs

    with handle_errors():
        if log_format not in ("text", "json"):
            raise InputError([f"--log-format: expected text or json, got {log_format!r}"])
        rt = make_runtime(now, moving=not once)
        # checks the program file and keeps the stored copy in step
        rehearsal_note(rt, now, rt.program(None).program.tz)
        if once:
            _once(rt, as_json)
            return
        log = logs.configure(log_format)
        _serve(rt, interval, log)


def _once(rt: Runtime, as_json: bool) -> None:
    import asyncio

    from pshnotify.domain.vocabulary import MessageWord
    from pshnotify.runtime.daemon import once
    from pshnotify.store.retry import DatabaseUnavailableError

    try:
        queued, sent = asyncio.run(once(rt, rt.nightly_jobs()))
    except DatabaseUnavailableError as exc:
        err.print(label("stopped:", "red", str(exc)), soft_wrap=True)
        err.print(label("next:", "yellow", exc.hint), soft_wrap=True)
        raise typer.Exit(1) from None
    # The states in the vocabulary's words ("delivered", "deferred"), not as stored.
    outcomes = dict(sorted((MessageWord.of(s).value, n) for s, n in sent.outcomes.items()))
    why = [{**w, "state": MessageWord.of(w["state"]).value} for w in sent.why()]
    if as_json:
        said = {**sent.as_dict(), "outcomes": outcomes}
        if why:
            said["why"] = why
        print_json({"at": rt.clock.now().isoformat(), "scheduled": queued.as_dict(), **said})
        if sent.problem or sent.all_failed:
            raise typer.Exit(1)
        return
    made = ", ".join(f"{n} {k}" for k, n in sorted(queued.queued.items())) or "nothing new"
    parts = ", ".join(f"{n} {s}" for s, n in outcomes.items()) or "nothing due"
    out.print(f"queued: {made}; outcomes: {parts}")
    for w in why:
        out.print(f"  {w['messages']} {w['state']}: {w['reply']}")
        if w["check"]:
            out.print(f"    check {w['check']}")
    paused = _paused(rt)
    if paused:
        out.print(f"paused: {paused}; nothing of it was queued or sent (`pshnotify resume`)")
    if sent.problem:
        err.print(label("stopped:", "red", sent.problem))
        raise typer.Exit(1)
    if sent.all_failed:
        err.print(label("failed:", "red", _all_failed(sent)))
        raise typer.Exit(1)


def _all_failed(sent: Any) -> str:
    tried = ", ".join(f"{n} {o}" for o, n in sorted(sent.attempts.items()))
    return (
        f"every attempt of this pass failed ({tried}); the relay accepted nothing. "
        "next: pshnotify messages --state deferred (the relay's replies)"
    )


def _paused(rt: Runtime) -> str:
    """What is paused in the program, in words ("" if nothing)."""
    from pshnotify.services.campaign.pause import paused_waves

    stored = rt.program(None)
    if stored.paused:
        return f"program {stored.key}"
    waves = paused_waves(rt.engine, stored)
    return ("wave " if len(waves) == 1 else "waves ") + ", ".join(waves) if waves else ""


def _serve(rt: Runtime, interval: float, log: Any) -> None:
    import asyncio

    from pshnotify.runtime.daemon import Daemon
    from pshnotify.store.db import display_url

    programs = rt.program_keys()
    log.info(
        "pshnotify daemon starting: one pass every %ss (queue what is due, then send it)",
        interval,
        extra={
            "programs": programs,
            "database": display_url(rt.settings.database_url),
            "smtp": f"{rt.settings.smtp_host}:{rt.settings.smtp_port}",
            "tls": rt.settings.smtp_tls,
            "clock": rt.clock.now().isoformat(),
            "worker": rt.worker,
            "http": rt.http_summary(),
        },
    )
    daemon = Daemon(rt, interval, log, rt.nightly_jobs())
    asyncio.run(daemon.serve(rt.http_tasks(daemon.stop)))


@app.command()
def plan(
    wave: Annotated[str | None, typer.Option("--wave", help="Only this wave.")] = None,
    program: ProgramOpt = None,
    now: NowOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The timeline of what will go out, per day and kind, from what is known now."""
    from pshnotify.services.reporting.plan import KINDS, build_plan

    with handle_errors():
        rt = make_runtime(now)
        stored = rt.program(program)
        if wave is not None and wave not in {w.key for w in stored.program.waves}:
            raise InputError(
                [f"--wave: unknown wave {wave!r}"],
                hint=f"waves: {', '.join(w.key for w in stored.program.waves)}",
            )
        data = build_plan(rt.engine, stored, rt.clock, wave)
        if as_json:
            print_json(data)
            return
        kinds = [k for k in KINDS if data["totals"].get(k)]
        # People in other zones than the program's: each day says how many go to which zone.
        several = len({z for day in data["days"] for z in day["zones"]}) > 1
        rows: list[list[Cell]] = []
        for day in data["days"]:
            when = dt.date.fromisoformat(day["date"]).strftime("%a %Y-%m-%d")
            zones = [_zone_counts(day["zones"])] if several else []
            rows.append([when, *(str(day.get(k, "")) for k in kinds), *zones])
        rows.append(
            [
                Text("total", "bold"),
                *(str(data["totals"][k]) for k in kinds),
                *([""] if several else []),
            ]
        )
        since = local_time(dt.datetime.fromisoformat(data["now"]), stored.program.tz)
        out.print(label(f"plan for {data['program']}", "bold", f"from {since}"))
        table = fitted_table(
            ["date", *kinds, *(["by zone"] if several else [])], rows, wrap="by zone", right=kinds
        )
        out.print(table)
        closed = [
            f"{key} (closed {stored.program.wave(key).closes.isoformat()})"
            for key in data["closed_unlaunched"]
        ]
        if closed:
            out.print(
                label(
                    "note:",
                    "yellow",
                    f"never launched, window over: {', '.join(closed)}; nothing is planned "
                    "for them, as `launch` refuses them (unless --force)",
                ),
                highlight=False,
            )
        for key, at in data.get("scheduled_launches", {}).items():
            when = local_time(dt.datetime.fromisoformat(at), stored.program.tz)
            out.print(f"{key}: launch scheduled for {when} (`launch {key} --cancel` withdraws it)")
        for held in data.get("paused", []):
            until = local_time(dt.datetime.fromisoformat(held["until"]), stored.program.tz)
            n = held["reminders"]
            out.print(
                f"{held['person']}: {n} reminder{'s' if n != 1 else ''} paused, "
                f"{held['reason']} (until {until} at most; `pshnotify requests list`)"
            )


def _zone_counts(zones: dict[str, int]) -> str:
    """'New York 40, Singapore 2': a zone's place, as its IANA name ends."""
    return ", ".join(f"{z.rsplit('/', 1)[-1].replace('_', ' ')} {n}" for z, n in zones.items())


@app.command()
def extend(
    person: Annotated[str, typer.Argument(help="Person id or email.")],
    until: Annotated[str, typer.Option("--until", help="New deadline, YYYY-MM-DD (inclusive).")],
    note: Annotated[str | None, typer.Option("--note")] = None,
    program: ProgramOpt = None,
    now: NowOpt = None,
) -> None:
    """Give one person a later deadline; their reminders follow it."""
    from pshnotify.domain.values import Day, read
    from pshnotify.services.campaign.adjust import extend as do_extend

    with handle_errors(
        {"until": "--until", "person": "PERSON"}, action="person.extend", subject=person
    ):
        rt = make_runtime(now)
        stored = rt.program(program)
        day = read("until", lambda: Day.parse(until, stored.program.reach))
        done = do_extend(
            rt.engine,
            stored,
            person,
            day,
            rt.clock,
            actor=rt.actor,
            note=note,
            message_id_domain=rt.settings.message_id_domain,
        )
        told = (
            "; a confirmation with the updated calendar event is queued"
            if done.detail["confirmation_queued"]
            else ""
        )
        out.print(
            f"{done.person} ({done.wave}): deadline {_last_minute(stored, done.detail['previous'])}"
            f" -> {_last_minute(stored, done.detail['until'])}{told}"
        )


def _last_minute(stored: Any, day: str) -> str:
    """A deadline as people read it: its last minute in the program's zone (2023-10-20 23:59
    EDT); the deadline passes at the midnight after it."""
    program = stored.program
    end = program.closes_at(dt.date.fromisoformat(day)) - dt.timedelta(minutes=1)
    return local_time(end, program.tz)


@app.command()
def exempt(
    person: Annotated[str, typer.Argument(help="Person id or email.")],
    reason: Annotated[str, typer.Option("--reason", help="Shown in reports.")],
    program: ProgramOpt = None,
    now: NowOpt = None,
) -> None:
    """Exempt one person; their pending messages are cancelled (kept, with the reason)."""
    from pshnotify.services.campaign.adjust import exempt as do_exempt

    with handle_errors(action="person.exempt", subject=person):
        rt = make_runtime(now)
        done = do_exempt(rt.engine, rt.program(program), person, reason, rt.clock, actor=rt.actor)
        if done.detail.get("changed") is False:
            out.print(f"{done.person} ({done.wave}) was already exempt ({reason}): nothing changed")
            return
        out.print(
            f"{done.person} ({done.wave}): exempt ({done.detail['reason']}); "
            f"{done.detail['cancelled_messages']} unsent messages cancelled"
        )


WaveArg = Annotated[str | None, typer.Argument(help="A wave key; none: the whole program.")]


def _pause(wave: str | None, program: str | None, now: str | None, paused: bool) -> Any:
    from pshnotify.services.campaign.pause import set_paused

    with handle_errors(action="pause" if paused else "resume", subject=wave):
        rt = make_runtime(now)
        return set_paused(rt.engine, rt.program(program), wave, paused, rt.clock, actor=rt.actor)


@app.command()
def pause(wave: WaveArg = None, program: ProgramOpt = None, now: NowOpt = None) -> None:
    """Stop sending a wave (or the program); messages in flight finish. Audited."""
    done = _pause(wave, program, now, True)
    if not done.changed:
        out.print(f"{done.what} was already paused: nothing changed")
        return
    out.print(f"paused {done.what}: nothing more of it is sent until `pshnotify resume`")


@app.command()
def resume(wave: WaveArg = None, program: ProgramOpt = None, now: NowOpt = None) -> None:
    """Send again; what came due meanwhile goes out under the catch-up rules. Audited."""
    done = _pause(wave, program, now, False)
    if not done.changed:
        out.print(f"{done.what} was not paused: nothing changed")
        return
    out.print(f"resumed {done.what}")
