"""`pshnotify web`: the console and the completion endpoints, without sending anything."""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING, Annotated

import typer

from pshnotify.cli.common import NowOpt, app, err, handle_errors, make_runtime, rehearsal_note
from pshnotify.domain.errors import InputError

if TYPE_CHECKING:
    from pshnotify.runtime.wiring import Runtime


@app.command()
def web(
    now: NowOpt = None,
    log_format: Annotated[str, typer.Option("--log-format", help="text or json")] = "text",
) -> None:
    """Serve the web console and the completion endpoints, sending nothing.

    For a host of its own, on PSHNOTIFY_HTTP_HOST/_PORT; `pshnotify run` queues and sends.

    `--now T` starts its clock at T, as `run --now` does, for rehearsals.

    SIGTERM/SIGINT stop it.
    """  # (one line a paragraph: Typer keeps a later paragraph's line breaks as they are)
    import asyncio

    from pshnotify.runtime import logs

    with handle_errors():
        if log_format not in ("text", "json"):
            raise InputError([f"--log-format: expected text or json, got {log_format!r}"])
        rt = make_runtime(now, moving=True)
        rt.program(None)  # checks the database and the program file before listening
        rehearsal_note(rt, now)
        logs.configure(log_format)
        try:
            asyncio.run(_serve(rt))
        except OSError as exc:
            s = rt.settings
            raise InputError(
                [f"PSHNOTIFY_HTTP_PORT: cannot listen on {s.http_host}:{s.http_port}: {exc}"],
                hint="choose a free port",
            ) from None


async def _serve(rt: Runtime) -> None:
    import asyncio

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def listening(host: str, port: int) -> None:
        err.print(f"console: http://{host}:{port}/ (sending nothing; `pshnotify run` sends)")

    tasks = rt.http_tasks(stop, on_listening=listening)
    if not tasks:
        raise InputError(["PSHNOTIFY_CONSOLE: the console is off and so is every endpoint"])
    await asyncio.gather(*tasks)
