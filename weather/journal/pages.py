"""
Table rows read straight from an SQLite file's pages, without its b-trees:
what a damaged journal still holds where SQLite cannot walk to it (a
damaged interior page hides every page below it, though they are whole).

The file format (https://www.sqlite.org/fileformat2.html): the file is pages
of one size.  A table's rows are the cells of its leaf pages (flag 13); a
cell is its payload's length, its rowid and the payload, whose part beyond
what fits in the page is on a chain of overflow pages; the payload is a
record: a header of serial types, then the values.  Pages on the free list
hold nothing live and are skipped, when page 1 can tell which they are.
The file is read as it is: a write-ahead log must have been copied into it
first (L{weather.journal.salvage} does so on a copy).

Why not SQLite's own: its recovery extension (C{.recover} in the sqlite3
shell, C{sqlite_dbpage}) is not in the library Python's sqlite3 module uses.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

MAGIC = b"SQLite format 3\x00"
HEADER_SIZE = 100
#: A table b-tree's leaf page.
LEAF_TABLE = 13
#: The sizes of the integers of serial types 1 to 6.
INTEGER_SIZES = (1, 2, 3, 4, 6, 8)


class Garbled(ValueError):
    """Bytes that are not what the format says they should be."""


@dataclass(frozen=True, slots=True)
class Row:
    """A table row found in a leaf page: its values in column order."""

    page: int
    rowid: int
    values: tuple


def page_size(header: bytes) -> int | None:
    """The page size an SQLite file's first 100 bytes give; None: not SQLite's."""
    if len(header) < HEADER_SIZE or not header.startswith(MAGIC):
        return None
    size = int.from_bytes(header[16:18], "big")
    size = 65536 if size == 1 else size
    if size < 512 or size & (size - 1):
        return None
    return size


def table_rows(f: BinaryIO, size: int) -> Iterator[Row]:
    """
    Every row of every table in the SQLite file C{f} of page size C{size}
    (all tables: the caller tells them apart by their values), in page
    order.  Pages and cells that do not read as the format says are passed
    over; the reader counts them (L{Pages.garbled}).
    """
    return Pages(f, size).rows()


class Pages:
    """The pages of one SQLite file."""

    def __init__(self, f: BinaryIO, size: int) -> None:
        self.f = f
        self.size = size
        f.seek(0, 2)
        self.count = f.tell() // size
        first = self.page(1) if self.count else b""
        valid = page_size(first[:HEADER_SIZE]) == size
        #: Bytes at the end of each page that belong to extensions, not cells.
        self.usable = size - (first[20] if valid else 0)
        self.first = first if valid else None
        #: Cells that could not be read.
        self.garbled = 0

    def page(self, number: int) -> bytes:
        self.f.seek((number - 1) * self.size)
        return self.f.read(self.size)

    def rows(self) -> Iterator[Row]:
        free = self.free_pages()
        for number in range(1, self.count + 1):
            if number not in free:
                yield from self.leaf_rows(number)

    def free_pages(self) -> set[int]:
        """
        The pages on the free list, as page 1 says; none if the list cannot
        be followed to the length page 1 gives it (a damaged list could
        name live pages).
        """
        if self.first is None:
            return set()
        trunk, total = _u32(self.first, 32), _u32(self.first, 36)
        free: set[int] = set()
        while trunk:
            if not 1 < trunk <= self.count or trunk in free:
                return set()
            free.add(trunk)
            page = self.page(trunk)
            leaves = _u32(page, 4)
            if leaves > self.usable // 4 - 2:
                return set()
            free.update(_u32(page, 8 + 4 * i) for i in range(leaves))
            trunk = _u32(page, 0)
        if len(free) != total or any(not 1 < n <= self.count for n in free):
            return set()
        return free

    def leaf_rows(self, number: int) -> Iterator[Row]:
        page = self.page(number)
        head = HEADER_SIZE if number == 1 else 0
        if page[head] != LEAF_TABLE:
            return
        cells = _u16(page, head + 3)
        pointers = head + 8
        if pointers + 2 * cells > self.usable:
            self.garbled += 1
            return
        for i in range(cells):
            at = _u16(page, pointers + 2 * i)
            try:
                if not pointers + 2 * cells <= at < self.usable:
                    raise Garbled(f"cell {i} at {at}")
                yield self._cell(number, page, at)
            except (Garbled, IndexError, struct.error, UnicodeDecodeError):
                self.garbled += 1

    def _cell(self, number: int, page: bytes, at: int) -> Row:
        length, at = varint(page, at)
        rowid, at = varint(page, at)
        if rowid >= 1 << 63:
            rowid -= 1 << 64
        return Row(number, rowid, record(self._payload(page, at, length)))

    def _payload(self, page: bytes, at: int, length: int) -> bytes:
        """C{length} bytes from C{at}, the rest from the overflow pages."""
        usable = self.usable
        most = usable - 35
        local = length
        if length > most:
            least = (usable - 12) * 32 // 255 - 23
            local = least + (length - least) % (usable - 4)
            if local > most:
                local = least
        if at + local > usable or length > self.count * usable:
            raise Garbled("payload beyond its page")
        parts = [page[at : at + local]]
        got = local
        following = _u32(page, at + local) if local < length else 0
        seen: set[int] = set()
        while got < length:
            if not 1 < following <= self.count or following in seen:
                raise Garbled("overflow chain")
            seen.add(following)
            overflow = self.page(following)
            take = min(usable - 4, length - got)
            parts.append(overflow[4 : 4 + take])
            got += take
            following = _u32(overflow, 0)
        return b"".join(parts)


def record(payload: bytes) -> tuple:
    """The values of an SQLite record (text as UTF-8, the journal's encoding)."""
    header_size, at = varint(payload, 0)
    if not at <= header_size <= len(payload):
        raise Garbled("record header")
    types = []
    while at < header_size:
        serial, at = varint(payload, at)
        types.append(serial)
    if at != header_size:
        raise Garbled("record header")
    values: list[object] = []
    for serial in types:
        value, at = _value(payload, at, serial)
        values.append(value)
    if at != len(payload):
        raise Garbled("record length")
    return tuple(values)


def _value(payload: bytes, at: int, serial: int) -> tuple[object, int]:
    if serial == 0:
        return None, at
    if serial in (8, 9):
        return serial - 8, at
    if serial in (10, 11):
        raise Garbled("reserved serial type")
    if serial <= 6:
        size = INTEGER_SIZES[serial - 1]
        value: object = int.from_bytes(_take(payload, at, size), "big", signed=True)
    elif serial == 7:
        size = 8
        value = struct.unpack(">d", _take(payload, at, size))[0]
    else:
        size = (serial - 12) // 2
        data = _take(payload, at, size)
        value = data if serial % 2 == 0 else data.decode("utf-8")
    return value, at + size


def _take(data: bytes, at: int, size: int) -> bytes:
    if at + size > len(data):
        raise Garbled("value beyond its record")
    return data[at : at + size]


def varint(data: bytes, at: int) -> tuple[int, int]:
    """SQLite's variable-length integer at C{at}, and where the next thing starts."""
    value = 0
    for i in range(8):
        byte = data[at + i]
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value, at + i + 1
    return (value << 8) | data[at + 8], at + 9


def _u16(data: bytes, at: int) -> int:
    return int.from_bytes(data[at : at + 2], "big")


def _u32(data: bytes, at: int) -> int:
    return int.from_bytes(data[at : at + 4], "big")
