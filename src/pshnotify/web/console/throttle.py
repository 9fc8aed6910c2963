"""Sign-in throttling for the console, on the HTTP side's one failure rule (web/throttle.py).

Two counts, each a `FailureThrottle`: failures per login *from one address* (5 in 15 minutes:
a password cannot be guessed at the speed of the server) and per address (30 in 15 minutes: an
office behind one NAT may mistype more; a guesser trying many logins is stopped too). Either
one over its limit refuses the sign-in from that address, the right password included, until
its oldest failure leaves the window. Counting a login per address, not per login alone,
means a guesser elsewhere cannot lock its owner out: the right password from the owner's own
address still works. The address is the connection's, or the one a trusted proxy names
(web/proxy.py): a forwarded header from anyone else changes nothing. In memory, per process.
A failure is one line in the log (tallied, as the HTTP side's are: a flood costs a line a
minute), naming the login and the address.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pshnotify.web.bounds import Tally
from pshnotify.web.throttle import FailureThrottle


@dataclass
class SignInThrottle:
    by_login: FailureThrottle = field(default_factory=lambda: FailureThrottle(5, 900.0))
    by_address: FailureThrottle = field(default_factory=lambda: FailureThrottle(30, 900.0))
    tally: Tally = field(default_factory=lambda: Tally("failed console sign-ins"))

    def retry_after(self, login: str, address: str) -> int | None:
        """Seconds until this login from this address may try again; None if it may now."""
        waits = [
            self.by_login.retry_after(_pair(login, address)),
            self.by_address.retry_after(address),
        ]
        found = [w for w in waits if w is not None]
        return max(found) if found else None

    def failed(self, login: str, address: str) -> None:
        self.by_login.failed(_pair(login, address), None)
        self.by_address.failed(address, None)
        self.tally.add(f"as {login!r} from {address}")

    def refused(self, login: str, address: str) -> None:
        self.tally.add(f"as {login!r} from {address}, refused: too many")


def _pair(login: str, address: str) -> str:
    return f"{address} as {login!r}"
