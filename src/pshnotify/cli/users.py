"""Console users: add, list, remove."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from pshnotify.cli.common import (
    JsonOpt,
    app,
    err,
    fitted_table,
    handle_errors,
    label,
    make_runtime,
    out,
    print_json,
)
from pshnotify.domain.errors import InputError

user_app = typer.Typer(help="Users of the web console.", no_args_is_help=True)
app.add_typer(user_app, name="user")


@user_app.command("add")
def user_add(
    login: Annotated[str, typer.Argument(help="The sign-in name.")],
    role: Annotated[str, typer.Option("--role", help="operator (acts) or viewer (reads).")],
    department: Annotated[
        list[str] | None,
        typer.Option("--department", help="A viewer's department (repeat for several)."),
    ] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
) -> None:
    """Add a console user; the password is read from standard input, never an argument."""
    from pshnotify.services.access.users import add_user, departments_nobody_is_in

    with handle_errors(action="user.add", subject=login):
        if not password_stdin:
            raise InputError(
                ["--password-stdin: the password is read from standard input"],
                hint="echo or pipe it: `pshnotify user add LOGIN --role R --password-stdin`",
            )
        password = sys.stdin.readline().rstrip("\r\n")
        rt = make_runtime(None)
        rt.require_schema()
        unknown = departments_nobody_is_in(rt.engine, department or [])
        user = add_user(
            rt.engine,
            login,
            role=role,
            departments=department or [],
            password=password,
            clock=rt.clock,
            actor=rt.actor,
        )
        for name, close in unknown.items():
            closest = f"; closest: {'; '.join(close)}" if close else ""
            err.print(
                label("warning:", "yellow", f"nobody on the roster is in {name!r}{closest}"),
                highlight=False,
            )
        if unknown:
            err.print(f"  ({user.login} sees no one there until a roster import brings someone)")
        scope = ", ".join(user.departments) if user.departments else "every department"
        out.print(f"added {user.role} {user.login} ({scope})", highlight=False)
        out.print("next: sign in at the console's /login", highlight=False)


@user_app.command("list")
def user_list(as_json: JsonOpt = False) -> None:
    """List the console users."""
    from pshnotify.services.access.users import list_users

    with handle_errors():
        rt = make_runtime(None)
        rt.require_schema()
        found = list_users(rt.engine)
        if as_json:
            print_json([u.as_dict() for u in found])
            return
        rows = [[u.login, u.role, ", ".join(u.departments) or "(all)"] for u in found]
        out.print(fitted_table(["login", "role", "departments"], rows, wrap="departments"))


@user_app.command("remove")
def user_remove(login: Annotated[str, typer.Argument(help="The sign-in name.")]) -> None:
    """Remove a console user; their sessions end at their next request."""
    from pshnotify.services.access.users import remove_user

    with handle_errors(action="user.remove", subject=login):
        rt = make_runtime(None)
        rt.require_schema()
        remove_user(rt.engine, login, clock=rt.clock, actor=rt.actor)
        out.print(f"removed {login}", highlight=False)
