"""Symbol tables out of a shared object, as `strip --strip-unneeded` does, in pure Python.

The Lambda runtimes carry no binutils, and no kept Python library writes ELF (pyelftools only
reads; lief is a large native wheel), so this is ours. It does the one safe thing: drop the
non-allocated `.symtab` (with its string table) and `.debug*` sections that lie after every
segment. The dynamic loader reads only the program headers and the segments they map; section
headers serve linkers and debuggers (the ELFkickers sstrip notes,
https://trac.la-samhna.de/samhain/browser/trunk/docs/README.sstrip, which go further and drop
them). So a file whose bytes up to the end of its last segment are unchanged loads and links
exactly as before: `.dynsym` stays, and so do the section headers this keeps. What is lost is what a debugger or
profiler shows for functions the library does not export.

Anything unusual (sections between segments, indices that would shift under an allocated
section, a section that points at a removed one, unknown bytes after the segments) leaves the
file as it is: `strip_symbols` returns None.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

_MAGIC = b"\x7fELF"
_ET_DYN = 3
_SHT_SYMTAB, _SHT_STRTAB, _SHT_RELA, _SHT_NOBITS, _SHT_REL = 2, 3, 4, 8, 9
_SHF_ALLOC, _SHF_INFO_LINK = 0x2, 0x40
_SHN_LORESERVE = 0xFF00
_DEBUG = (b".debug", b".zdebug", b".rela.debug", b".rel.debug")


@dataclass(frozen=True)
class _Layout:
    order: str  # struct byte order
    header: struct.Struct
    program: struct.Struct
    section: struct.Struct


_LAYOUTS = {
    (cls, data): _Layout(
        order,
        struct.Struct(order + ("16sHHIQQQIHHHHHH" if cls == 2 else "16sHHIIIIIHHHHHH")),
        struct.Struct(order + ("IIQQQQQQ" if cls == 2 else "IIIIIIII")),
        struct.Struct(order + ("IIQQQQIIQQ" if cls == 2 else "IIIIIIIIII")),
    )
    for cls in (1, 2)
    for data, order in ((1, "<"), (2, ">"))
}


@dataclass(frozen=True)
class Stripped:
    """The stripped file as three pieces, in order: nothing is copied but the new tail."""

    header: bytes
    body: memoryview  # the original bytes from the end of the header to the last segment's end
    tail: bytes  # kept sections that lay after the segments, then the new section headers

    @property
    def size(self) -> int:
        return len(self.header) + len(self.body) + len(self.tail)

    def pieces(self) -> tuple[bytes | memoryview, ...]:
        return (self.header, self.body, self.tail)


def _layout(data: bytes | memoryview) -> tuple[_Layout, tuple] | None:
    if len(data) < 64 or bytes(data[:4]) != _MAGIC:
        return None
    layout = _LAYOUTS.get((data[4], data[5]))
    if layout is None or len(data) < layout.header.size:
        return None
    fields = layout.header.unpack_from(data)
    if fields[1] != _ET_DYN or fields[8] != layout.header.size:
        return None
    return layout, fields


def _segments_end(data: bytes | memoryview, layout: _Layout, fields: tuple) -> int | None:
    """Where the last byte any program header covers ends (the header tables included)."""
    phoff, phentsize, phnum = fields[5], fields[9], fields[10]
    table_end = phoff + phnum * phentsize
    if phentsize != layout.program.size or phnum in (0, 0xFFFF) or table_end > len(data):
        return None
    end = max(layout.header.size, table_end)
    for index in range(phnum):
        ph = layout.program.unpack_from(data, phoff + index * phentsize)
        offset, filesz = (ph[2], ph[5]) if layout.program.size == 56 else (ph[1], ph[4])
        end = max(end, offset + filesz)
    return end


def symbol_tail(head: bytes, file_size: int) -> int:
    """At most how many bytes stripping can free, from the first bytes of the file (its header
    and program headers): what lies after the last segment. 0 when that is not known."""
    parsed = _layout(head)
    if parsed is None:
        return 0
    layout, fields = parsed
    end = _segments_end(head, layout, fields)
    shoff = fields[6]
    if end is None or not end <= shoff <= file_size:
        return 0
    return file_size - end


def strip_symbols(data: bytes | memoryview) -> Stripped | None:
    """The file without its symbol table and debug sections, or None (nothing safe to drop)."""
    data = memoryview(data)
    parsed = _layout(data)
    if parsed is None:
        return None
    layout, fields = parsed
    load_end = _segments_end(data, layout, fields)
    shoff, shentsize, shnum, shstrndx = fields[6], fields[11], fields[12], fields[13]
    if (
        load_end is None
        or shentsize != layout.section.size
        or not 0 < shnum < _SHN_LORESERVE
        or not 0 < shstrndx < shnum
        or shoff < load_end
        or shoff + shnum * shentsize > len(data)
    ):
        return None
    sections = [list(layout.section.unpack_from(data, shoff + i * shentsize)) for i in range(shnum)]
    # Section fields: 0 name, 1 type, 2 flags, 3 addr, 4 offset, 5 size, 6 link, 7 info, 8 align.
    for s in sections:
        if s[1] != _SHT_NOBITS and s[4] + s[5] > len(data):
            return None
        if s[6] >= shnum or (_info_is_index(s) and s[7] >= shnum):
            return None
    names = sections[shstrndx]
    strtab = bytes(data[names[4] : names[4] + names[5]])

    def name(s: list) -> bytes:
        return strtab[s[0] : strtab.find(b"\0", s[0])]

    def points_at(s: list) -> set[int]:
        targets = {s[6]} if s[6] else set()
        if s[7] and _info_is_index(s):
            targets.add(s[7])
        return targets

    removed = {
        i
        for i, s in enumerate(sections)
        if i and (s[1] == _SHT_SYMTAB or name(s).startswith(_DEBUG))
    }
    removed |= {
        sections[i][6]
        for i in list(removed)
        if sections[i][1] == _SHT_SYMTAB
        and sections[sections[i][6]][1] == _SHT_STRTAB
        and sections[i][6] != shstrndx
    }
    if not removed or shstrndx in removed:
        return None
    kept = [i for i in range(shnum) if i not in removed]
    highest_alloc = max((i for i in kept if sections[i][2] & _SHF_ALLOC), default=0)
    for i in removed:
        s = sections[i]
        if s[2] & _SHF_ALLOC or s[1] == _SHT_NOBITS or s[4] < load_end or i < highest_alloc:
            return None
    if any(points_at(sections[i]) & removed for i in kept):
        return None
    # Bytes after the segments that no section and not the section headers hold must be padding.
    covered = [(s[4], s[4] + s[5]) for i, s in enumerate(sections) if i and s[1] != _SHT_NOBITS]
    covered.append((shoff, shoff + shnum * shentsize))
    position = load_end
    for start, end in sorted(c for c in covered if c[1] > load_end):
        if start < position:
            return None  # straddles the end of the segments, or overlaps another section
        if not _zeros(data[position:start]):
            return None
        position = end
    if not _zeros(data[position:]):
        return None

    new_index = {old: new for new, old in enumerate(kept)}
    tail = bytearray()
    headers = bytearray()
    for i in kept:
        s = sections[i]
        if i and s[4] >= load_end and s[1] != _SHT_NOBITS:
            padding = -(load_end + len(tail)) % max(1, s[8])
            if load_end + len(tail) + padding + s[5] >= len(data):
                return None  # an alignment that would make the file bigger, not smaller
            tail += bytes(padding)
            start = s[4]
            s[4] = load_end + len(tail)
            tail += data[start : start + s[5]]
        elif i and s[1] == _SHT_NOBITS and s[4] > load_end:
            s[4] = load_end + len(tail)
        if s[6]:
            s[6] = new_index[s[6]]
        if s[7] and _info_is_index(s):
            s[7] = new_index[s[7]]
        headers += layout.section.pack(*s)
    tail += bytes(-(load_end + len(tail)) % (8 if layout.section.size == 64 else 4))
    new_shoff = load_end + len(tail)
    tail += headers
    header = list(fields)
    header[6], header[12], header[13] = new_shoff, len(kept), new_index[shstrndx]
    result = Stripped(layout.header.pack(*header), data[layout.header.size : load_end], bytes(tail))
    return result if result.size < len(data) else None


def _info_is_index(s: list) -> bool:
    """sh_info names a section (relocations, SHF_INFO_LINK); in a symbol table it is a count."""
    return bool(s[2] & _SHF_INFO_LINK or s[1] in (_SHT_REL, _SHT_RELA))


def _zeros(view: memoryview) -> bool:
    """Only zero bytes (alignment padding), looked at a MiB at a time."""
    step = 1 << 20
    return all(not bytes(view[at : at + step]).strip(b"\0") for at in range(0, len(view), step))
