"""An address as it travels: the domain in its IDNA (punycode) form, and whether the local
part needs SMTPUTF8 (RFC 6531) because it is not ASCII.

`ann@bücher.de` goes out as `ann@xn--bcher-kva.de`, which every relay and mailbox accepts;
`jörg@bücher.de` can only go out through a relay that offers SMTPUTF8, with the headers in
UTF-8 (RFC 6532).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import idna


class AddressError(ValueError):
    """The address cannot be put on the wire (a domain IDNA cannot encode)."""


@dataclass(frozen=True)
class WireAddress:
    address: str
    smtputf8: bool  # the local part is not ASCII


def wire_address(address: str) -> WireAddress:
    if address.isascii():  # nearly every address: nothing to do
        return WireAddress(address, False)
    return _converted(address)


@lru_cache(maxsize=4096)
def _converted(address: str) -> WireAddress:
    local, at, domain = address.rpartition("@")
    if not at:
        raise AddressError(f"{address!r} has no domain")
    try:
        ascii_domain = domain if domain.isascii() else idna.encode(domain, uts46=True).decode()
    except idna.IDNAError as exc:
        raise AddressError(f"the domain of {address!r} has no IDNA form: {exc}") from None
    return WireAddress(f"{local}@{ascii_domain}", not local.isascii())


def mailbox_key(address: str) -> str:
    """The mailbox an address reaches, for counting recipients: `victim+1@x` and
    `Victim+2@X` are one mailbox (sub-addressing, RFC 5233), lower-cased."""
    local, _, domain = address.strip().lower().rpartition("@")
    return f"{local.partition('+')[0] or local}@{domain}"


NEEDS_SMTPUTF8 = (
    "the address's local part is not ASCII and the relay does not offer SMTPUTF8, which "
    "delivering it requires; ask the relay's administrators to enable SMTPUTF8, or correct "
    "the address in the roster"
)
