"""`pshnotify requests`: what participants asked from their email's link, and the decisions."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer

from pshnotify.cli.common import (
    JsonOpt,
    NowOpt,
    ProgramOpt,
    app,
    fitted_table,
    handle_errors,
    local_time,
    make_runtime,
    out,
    print_json,
    rehearsal_note,
)

requests_app = typer.Typer(
    help="Participants' requests (more time, completed, not required, ...).", no_args_is_help=True
)
app.add_typer(requests_app, name="requests")

IdArg = Annotated[int, typer.Argument(help="The request's number (requests list shows it).")]


@requests_app.command("list")
def list_(
    state: Annotated[
        str | None, typer.Option("--state", help="pending, approved or declined.")
    ] = None,
    kind: Annotated[
        str | None,
        typer.Option(
            "--kind", help="more_time, completed, not_required, alternative or technical."
        ),
    ] = None,
    program: ProgramOpt = None,
    now: NowOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The requests, newest first."""
    from pshnotify.services.campaign.requests import list_requests

    with handle_errors({"state": "--state", "kind": "--kind"}):
        rt = make_runtime(now)
        stored = rt.program(program)
        rows = list_requests(rt.engine, stored, state=state, kind=kind)
        if as_json:
            print_json(rows)
            return
        rehearsal_note(rt, now, stored.program.tz)
        if not rows:
            out.print("no requests" + (f" {state}" if state else ""))
            return
        tz = stored.program.tz
        out.print(
            fitted_table(
                ["id", "person", "kind", "state", "filed", "asked"],
                [
                    [
                        str(r["id"]),
                        f"{r['person']} {r['name']}",
                        r["kind"],
                        r["state"],
                        local_time(dt.datetime.fromisoformat(r["filed_at"]), tz),
                        r["summary"],
                    ]
                    for r in rows
                ],
                drop_first=["filed"],
                wrap=["asked", "person"],
            )
        )


@requests_app.command()
def approve(
    request_id: IdArg,
    until: Annotated[
        str | None,
        typer.Option("--until", help="More time: grant this date instead of the one asked."),
    ] = None,
    note: Annotated[str | None, typer.Option("--note", help="Told to the person.")] = None,
    program: ProgramOpt = None,
    now: NowOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Grant a request; the person is told.

    More time extends the deadline, completed records the completion, not required exempts: the same commands as extend, complete and exempt.
    """  # noqa: E501 (one line a paragraph: Typer keeps a later paragraph's line breaks)
    from pshnotify.domain.values import Day, read
    from pshnotify.services.campaign.requests import approve as do_approve

    with handle_errors(
        {"until": "--until", "note": "--note", "ID": "ID"},
        action="request.approve",
        subject=str(request_id),
    ):
        rt = make_runtime(now)
        stored = rt.program(program)
        day = read("until", lambda: Day.parse(until, stored.program.reach)) if until else None
        done = do_approve(
            rt.engine,
            stored,
            request_id,
            rt.clock,
            actor=rt.actor,
            until=day,
            note=note,
            message_id_domain=rt.settings.message_id_domain,
        )
        if as_json:
            print_json(done)
            return
        did = (
            f"; deadline now {done['extended_until']}"
            if "extended_until" in done
            else "; completion recorded"
            if "completion" in done
            else "; exempt"
            if "exempt" in done
            else ""
        )
        out.print(f"request {request_id} ({done['kind']}, {done['person']}) approved{did}")
        out.print("the person gets an email with the decision")


@requests_app.command()
def decline(
    request_id: IdArg,
    note: Annotated[str, typer.Option("--note", help="Why; told to the person.")],
    program: ProgramOpt = None,
    now: NowOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Refuse a request, saying why; the person's reminders resume at once."""
    from pshnotify.services.campaign.requests import decline as do_decline

    with handle_errors(
        {"note": "--note", "ID": "ID"}, action="request.decline", subject=str(request_id)
    ):
        rt = make_runtime(now)
        stored = rt.program(program)
        done = do_decline(
            rt.engine,
            stored,
            request_id,
            rt.clock,
            actor=rt.actor,
            note=note,
            message_id_domain=rt.settings.message_id_domain,
        )
        if as_json:
            print_json(done)
            return
        out.print(f"request {request_id} ({done['kind']}, {done['person']}) declined")
        out.print("the person gets an email with the decision; their reminders resume")
