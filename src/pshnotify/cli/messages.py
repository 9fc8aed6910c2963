"""Messages: list them with their replies, requeue chosen ones."""

from __future__ import annotations

from typing import Annotated

import typer

from pshnotify.cli.common import (
    JsonOpt,
    NowOpt,
    ProgramOpt,
    app,
    fitted_table,
    handle_errors,
    make_runtime,
    out,
    print_json,
)

messages_app = typer.Typer(help="Messages and their delivery state.", invoke_without_command=True)
app.add_typer(messages_app, name="messages")


@messages_app.callback()
def messages(
    ctx: typer.Context,
    state: Annotated[
        str | None,
        typer.Option(
            "--state",
            help="queued, sending, delivered, deferred, failed, bounced, skipped, cancelled "
            "or unknown; the stored names (claimed, sent, retry) work too.",
        ),
    ] = None,
    wave: Annotated[str | None, typer.Option("--wave")] = None,
    kind: Annotated[str | None, typer.Option("--kind")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1)] = 100,
    program: ProgramOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List messages with their state and the relay's last reply."""
    if ctx.invoked_subcommand is not None:
        return
    from pshnotify.services.delivery.messages import list_messages

    with handle_errors():
        rt = make_runtime(None)
        rows = list_messages(
            rt.engine, rt.program(program), state=state, wave=wave, kind=kind, limit=limit
        )
        if as_json:
            print_json(rows)
            return
        columns = ["id", "kind", "wave", "to", "state", "tries", "reply / reason"]
        table = fitted_table(
            columns,
            [
                [
                    str(r["id"]),
                    r["kind"],
                    r["wave_key"] or "-",
                    r["recipient_email"],
                    r["state"],
                    str(r["attempts"]),
                    f"{r['last_code'] or ''} {r['last_reply'] or ''}".strip() or r["reason"] or "",
                ]
                for r in rows
            ],
            drop_first=("wave", "tries", "kind"),
            wrap="reply / reason",
        )
        out.print(table)
        if len(rows) == limit:
            out.print(f"(first {limit}; use --limit for more)")


@messages_app.command("retry")
def retry(
    ids: Annotated[
        list[int] | None, typer.Option("--id", help="A message id (repeatable).")
    ] = None,
    state: Annotated[
        str | None,
        typer.Option(
            "--state",
            help="failed, unknown, cancelled, skipped or deferred (stored name retry works).",
        ),
    ] = None,
    wave: Annotated[str | None, typer.Option("--wave")] = None,
    program: ProgramOpt = None,
    now: NowOpt = None,
) -> None:
    """Queue chosen messages again (same Message-ID); audited."""
    from pshnotify.services.delivery.messages import retry_messages

    with handle_errors(action="messages.retry"):
        rt = make_runtime(now)
        n = retry_messages(
            rt.engine,
            rt.program(program),
            rt.clock,
            actor=rt.actor,
            ids=ids,
            state=state,
            wave=wave,
        )
        out.print(f"requeued {n} messages; they go out on the next pass")
