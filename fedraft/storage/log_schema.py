"""Facts about the log itself that the archive of signed entries does not carry (SPEC §4).

rejected_entries: u64 index -> u64 slot term || reason (UTF-8), for every entry apply rejected as a
whole (SPEC D10, docs/decisions/0001). An honest leader produces one when an entry it signed in one term
is appended in a later term (it lost and regained leadership while the entry waited in pysyncobj's
queue): the slot's term is not in the archive, so the export carries it, and `fedraft verify` can tell
such an entry from a tampered one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fedraft.storage.state import StateTxn

REJECTED = b"rejected_entries"
DBS: tuple[bytes, ...] = (REJECTED,)


def put_rejected(st: StateTxn, index: int, slot_term: int, reason: str) -> None:
    st.put(REJECTED, index.to_bytes(8, "big"), slot_term.to_bytes(8, "big") + reason.encode())


def rejected(st: StateTxn) -> Iterator[tuple[int, int, str]]:
    """(index, slot term, reason) of every entry rejected as a whole, in index order."""
    for key, value in st.items(REJECTED):
        yield int.from_bytes(key, "big"), int.from_bytes(value[:8], "big"), value[8:].decode(errors="replace")
