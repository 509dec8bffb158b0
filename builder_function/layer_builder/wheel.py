"""Assemble step: what a wheel puts on /opt/python, read from its central directory.

An install of a wheel into a target directory (`pip`/`uv pip install --target`) is a mapping of
its members: `*.data/purelib/` and `*.data/platlib/` go to the root, `scripts`, `headers` and
`data` are not importable and have no place in a layer, and the installer writes `INSTALLER`
and a new `RECORD`. Done here from the member names, the layer zip gets each member's compressed
bytes as they are in the wheel (zipwriter copies them raw), so nothing is unpacked or deflated
again. Slimming is skipping members (slim.rule_for).

A wheel's plan (which member goes where, with its sha256 and size) depends only on the wheel's
bytes and the slimming settings, so the cache keeps it per wheel.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import re
import struct
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from email.parser import HeaderParser
from pathlib import Path

from . import elfstrip, limits, slim
from .errors import InputError, LockError, UnsafeArchiveError
from .unpack import check_zip_listing

INSTALLER = "layer-builder"
#: Files the installer writes itself, or that regenerating RECORD makes wrong.
REWRITTEN = frozenset(
    {"RECORD", "INSTALLER", "REQUESTED", "RECORD.jws", "RECORD.p7s", "direct_url.json"}
)
_LOCAL = struct.Struct("<IHHHHHIIIHH")
_LOCAL_SIG = 0x04034B50
_SHARED_OBJECT = re.compile(r"\.so(\.\d+)*$")
_DATA_DIR = re.compile(r"^[^/]+\.data/(purelib|platlib|scripts|headers|data)/(.+)$")
_FORBIDDEN = re.compile(r"[\x00-\x1f\\]|^[A-Za-z]:")


@dataclass(frozen=True)
class Member:
    """One shipped file: where it goes (relative to python/) and where its bytes are."""

    dest: str
    #: Offset of the member's data (after its local header) in the wheel, and how it is stored.
    data_offset: int
    compress_type: int
    compress_size: int
    file_size: int
    crc: int
    sha256: str
    executable: bool
    #: A file holding this member's bytes instead of the wheel (stripping.py made it).
    blob: str = ""


@dataclass
class Plan:
    """What one wheel contributes to a layer."""

    name: str  # canonical distribution name
    version: str
    dist_info: str
    members: list[Member] = field(default_factory=list)
    #: Written by the builder: INSTALLER, REQUESTED and RECORD (dest → bytes).
    generated: dict[str, bytes] = field(default_factory=dict)
    #: rule → [files, bytes] left out by slimming, or as scripts/headers/data.
    skipped: dict[str, list[int]] = field(default_factory=dict)
    top_level: list[str] = field(default_factory=list)
    #: Shared objects → ELF e_machine (None: not ELF), for the target check.
    machines: dict[str, int | None] = field(default_factory=dict)
    #: The distribution's own spelling (METADATA Name), for reports.
    display_name: str = ""
    #: Shared objects → bytes after their last segment: what stripping could free (elfstrip).
    tails: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> str:
        data = asdict(self)
        data["generated"] = {k: v.decode("utf-8") for k, v in self.generated.items()}
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Plan:
        data = json.loads(text)
        return cls(
            name=data["name"],
            version=data["version"],
            dist_info=data["dist_info"],
            members=[Member(**m) for m in data["members"]],
            generated={k: v.encode("utf-8") for k, v in data["generated"].items()},
            skipped=data["skipped"],
            top_level=data["top_level"],
            machines=data["machines"],
            display_name=data["display_name"],
            tails=data.get("tails", {}),
        )

    @property
    def sources(self) -> list[str]:
        """The .py files it ships (what bytecode is made from)."""
        return [m.dest for m in self.members if m.dest.endswith(".py")]

    @property
    def source_set(self) -> frozenset[str]:
        return frozenset(self.sources)

    def files(self) -> list[tuple[str, int]]:
        return [(m.dest, m.file_size) for m in self.members] + [
            (dest, len(data)) for dest, data in self.generated.items()
        ]


def refuse_overlaps(plans: Iterable[Plan]) -> None:
    """Two locked distributions that install the same file (alternatives such as jwt and PyJWT,
    or one wheel repackaging another): an installer lets the last one overwrite the first, so the
    layer's content would depend on the order. Refused, naming both."""
    owner: dict[str, Plan] = {}
    clashes: dict[tuple[str, str], list[str]] = {}
    for plan in plans:
        for dest, _ in plan.files():
            first = owner.setdefault(dest, plan)
            if first is not plan:
                clashes.setdefault(
                    (first.display_name or first.name, plan.display_name or plan.name), []
                ).append(dest)
    if clashes:
        (a, b), paths = next(iter(clashes.items()))
        more = f" (and {len(paths) - 1} more files)" if len(paths) > 1 else ""
        raise LockError(
            f"{a} and {b} both install {paths[0]}{more}: one would overwrite the other in the "
            f"layer. Keep only one of them in the Pipfile (or pin versions that do not overlap), "
            "then run `pipenv lock`."
        )


def record_hash(data: bytes | str) -> str:
    """RECORD's hash column for content (bytes) or a hex sha256 (str)."""
    digest = hashlib.sha256(data).digest() if isinstance(data, bytes) else bytes.fromhex(data)
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _safe(name: str, wheel: Path) -> str:
    parts = name.split("/")
    if (
        not name
        or name.startswith("/")
        or _FORBIDDEN.search(name)
        or ".." in parts
        or "." in parts
        or "" in parts[:-1]
    ):
        raise UnsafeArchiveError(
            f"{wheel.name} holds the member {name!r}, which would land outside the layer's python/ "
            "directory: the wheel is malformed; pin another version of it."
        )
    return name


def _dist_info(names: list[str], wheel: Path) -> str:
    found = sorted(
        {
            n.split("/", 1)[0]
            for n in names
            if n.split("/", 1)[0].endswith(".dist-info") and "/" in n
        }
    )
    if len(found) != 1:
        raise InputError(
            f"{wheel.name} has {len(found) or 'no'} .dist-info directories (a wheel "
            "has exactly one): the wheel is malformed; pin another version of it."
        )
    return found[0]


def _data_offset(f, info: zipfile.ZipInfo) -> int:
    f.seek(info.header_offset)
    header = _LOCAL.unpack(f.read(_LOCAL.size))
    if header[0] != _LOCAL_SIG:
        raise zipfile.BadZipFile(f"bad local header for {info.filename}")
    return info.header_offset + _LOCAL.size + header[9] + header[10]


def _recorded(zf: zipfile.ZipFile, dist_info: str) -> dict[str, tuple[str, int | None]]:
    """RECORD's sha256 (hex) and size per member name; rows without a sha256 are left out."""
    try:
        text = zf.read(f"{dist_info}/RECORD").decode("utf-8")
    except (KeyError, UnicodeDecodeError):
        return {}
    found = {}
    for row in csv.reader(io.StringIO(text)):
        if len(row) >= 2 and row[1].startswith("sha256="):
            try:
                digest = base64.urlsafe_b64decode(row[1][7:] + "=" * (-len(row[1][7:]) % 4)).hex()
                size = int(row[2]) if len(row) > 2 and row[2] else None
            except ValueError:
                continue
            if len(digest) == 64:
                found[row[0]] = (digest, size)
    return found


#: The start of a shared object read while planning: its ELF header and program headers.
_HEAD_BYTES = 4096


def _head(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    with zf.open(info) as member:
        return member.read(_HEAD_BYTES)


def _member_sha256(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> tuple[str, bytes]:
    """(sha256, first bytes) of a member. Reading to the end decompresses it and checks its
    CRC (zipfile raises on a mismatch)."""
    digest = hashlib.sha256()
    head = b""
    with zf.open(info) as member:
        for block in iter(lambda: member.read(1 << 20), b""):
            if not head:
                head = block[:_HEAD_BYTES]
            digest.update(block)
    return digest.hexdigest(), head


def _elf_machine(header: bytes) -> int | None:
    if len(header) < 20 or header[:4] != b"\x7fELF":
        return None
    return struct.unpack("<H" if header[5] == 1 else ">H", header[18:20])[0]


def _dest(name: str, dist_info: str) -> tuple[str | None, str | None]:
    """(destination relative to python/, skip rule) for a member name."""
    match = _DATA_DIR.match(name)
    if match and name.split("/", 1)[0] == dist_info.replace(".dist-info", ".data"):
        scheme, rest = match.groups()
        if scheme in ("purelib", "platlib"):
            return rest, None
        return None, f"{scheme} (not importable)"
    return name, None


_WHEEL_LISTING_FIX = (
    "no real wheel holds that many files: the wheel is malformed or hostile; "
    "pin another version of it"
)


def check_listings(wheels: list[tuple[Path, str]]) -> None:
    """Refuse, before any is parsed, wheels (path, filename on the index) that list more than
    limits.MAX_WHEEL_MEMBERS members each or limits.MAX_LAYER_WHEEL_MEMBERS together: planning
    keeps ~1.5 kB per member, and several wheels are planned at once."""
    counts = []
    for path, filename in wheels:
        try:
            counts.append(
                (
                    check_zip_listing(
                        path, limits.MAX_WHEEL_MEMBERS, _WHEEL_LISTING_FIX, name=filename
                    ),
                    filename,
                )
            )
        except zipfile.BadZipFile as exc:
            raise InputError(
                f"{filename} is not a readable wheel ({exc}): pin another version of it."
            ) from None
    total, cap = sum(n for n, _ in counts), limits.MAX_LAYER_WHEEL_MEMBERS
    if total > cap:
        largest = ", ".join(f"{name} ({n:,})" for n, name in sorted(counts, reverse=True)[:3])
        raise InputError(
            f"The locked wheels list {total:,} members together, past the limit of "
            f"{cap:,} for one layer; the largest: {largest}: drop or replace them."
        )


def plan(
    wheel: Path,
    *,
    python_version: str,
    slim_enabled: bool = True,
    extra_patterns: tuple[str, ...] = (),
    requested: bool = True,
    filename: str = "",
) -> Plan:
    """Read a (hash-verified) wheel and decide every member; hashes each shipped file once.

    `filename`: the wheel's name on the index, for messages (the cache names files by sha256).
    """
    shown = Path(filename or wheel.name)
    try:
        # A pinned wheel is what its author uploaded: its listing is checked as an upload's is,
        # before zipfile parses it whole (~1.5 kB of memory per member by the end of planning).
        check_zip_listing(wheel, limits.MAX_WHEEL_MEMBERS, _WHEEL_LISTING_FIX, name=shown.name)
        with zipfile.ZipFile(wheel) as zf, open(wheel, "rb") as raw:
            infos = [i for i in zf.infolist() if not i.is_dir()]
            names = [_safe(i.filename, shown) for i in infos]
            if len(set(names)) != len(names):
                raise UnsafeArchiveError(
                    f"{shown.name} holds a member twice: the wheel is malformed."
                )
            dist_info = _dist_info(names, shown)
            metadata = HeaderParser().parsestr(
                zf.read(f"{dist_info}/METADATA").decode("utf-8", "replace")
            )
            display = str(metadata.get("Name") or dist_info.split("-")[0])
            result = Plan(
                name=_canonical(display),
                display_name=display,
                version=str(metadata.get("Version") or dist_info[:-10].split("-")[-1]),
                dist_info=dist_info,
            )
            packages = _packages(names, dist_info)
            kept: list[tuple[zipfile.ZipInfo, str]] = []
            for info in infos:
                dest, rule = _dest(info.filename, dist_info)
                if (
                    dest is not None
                    and dest.split("/", 1)[0] == dist_info
                    and dest.count("/") == 1
                    and dest.rsplit("/", 1)[1] in REWRITTEN
                ):
                    continue
                if dest is not None and slim_enabled:
                    rule = slim.rule_for(
                        dest, python_version, extra_patterns, packages, distribution=result.name
                    )
                if rule is not None or dest is None:
                    entry = result.skipped.setdefault(rule or "not importable", [0, 0])
                    entry[0] += 1
                    entry[1] += info.file_size
                    continue
                if info.flag_bits & 0x1:
                    raise InputError(
                        f"{shown.name}:{info.filename} is encrypted: pin another version."
                    )
                kept.append((info, dest))
            dests = [dest for _, dest in kept]
            if len(set(dests)) != len(dests):
                twice = min(d for d, n in Counter(dests).items() if n > 1)
                raise UnsafeArchiveError(
                    f"{shown.name} installs {twice} twice (as a member and from its .data "
                    "directory): the wheel is malformed. Pin another version of it."
                )
            # The wheel's RECORD gives each member's sha256 without decompressing it: its bytes are
            # vouched for by the lock's sha256 of the whole wheel. Members it does not list (or
            # lists with another size) are hashed here; shared objects give their ELF header.
            recorded = _recorded(zf, dist_info)
            digests = []
            for info, dest in kept:
                known = recorded.get(info.filename)
                if known is not None and known[1] in (None, info.file_size):
                    head = _head(zf, info) if _SHARED_OBJECT.search(dest) else b""
                    digests.append((known[0], head))
                else:
                    digests.append(_member_sha256(zf, info))
            for (info, dest), (digest, head) in zip(kept, digests, strict=True):
                if _SHARED_OBJECT.search(dest):
                    result.machines[dest] = _elf_machine(head)
                    tail = elfstrip.symbol_tail(head, info.file_size)
                    if tail:
                        result.tails[dest] = tail
                result.members.append(
                    Member(
                        dest=dest,
                        data_offset=_data_offset(raw, info),
                        compress_type=info.compress_type,
                        compress_size=info.compress_size,
                        file_size=info.file_size,
                        crc=info.CRC,
                        sha256=digest,
                        executable=bool((info.external_attr >> 16) & 0o111),
                    )
                )
            top_level = (
                zf.read(f"{dist_info}/top_level.txt").decode("utf-8", "replace")
                if f"{dist_info}/top_level.txt" in zf.NameToInfo
                else ""
            )
    except (
        zipfile.BadZipFile,
        zlib.error,
        EOFError,
        KeyError,
        OSError,
        NotImplementedError,
    ) as exc:
        if isinstance(exc, OSError) and not isinstance(exc, zipfile.BadZipFile) and exc.errno:
            raise
        raise InputError(
            f"{shown.name} is not a readable wheel ({type(exc).__name__}: {exc}): "
            "pin another version of it."
        ) from None
    result.members.sort(key=lambda m: m.dest)
    result.top_level = _top_level(top_level, result.members, dist_info)
    generate(result, requested)
    return result


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _packages(names: list[str], dist_info: str) -> frozenset[str]:
    """Directories (destination paths) that are regular packages: they hold __init__.py."""
    found = set()
    for name in names:
        dest, _ = _dest(name, dist_info)
        if dest and dest.endswith("/__init__.py"):
            found.add(dest.rsplit("/", 1)[0])
    return frozenset(found)


def _top_level(text: str, members: list[Member], dist_info: str) -> list[str]:
    """Importable top-level names: top_level.txt when present, else from the shipped files."""
    names = [
        line.strip().replace("/", ".").split(".")[0] for line in text.splitlines() if line.strip()
    ]
    if not names:
        for m in members:
            head = m.dest.split("/", 1)[0]
            if head == dist_info or head.endswith((".dist-info", ".libs")) or head == "__pycache__":
                continue
            if "/" in m.dest or head.endswith(".py") or ".cpython-" in head or head.endswith(".so"):
                names.append(head.split(".")[0])
    return sorted(
        {n for n in names if n.isidentifier() and not n.startswith("_")}
        or {n for n in names if n.isidentifier()}
    )


def generate(result: Plan, requested: bool) -> None:
    """INSTALLER, REQUESTED (the lock asked for every distribution, as uv records it) and a
    RECORD listing every shipped file with its hash and size; RECORD itself has neither."""
    prefix = result.dist_info
    generated = {f"{prefix}/INSTALLER": f"{INSTALLER}\n".encode()}
    if requested:
        generated[f"{prefix}/REQUESTED"] = b""
    rows = [(m.dest, record_hash(m.sha256), str(m.file_size)) for m in result.members]
    rows += [(dest, record_hash(data), str(len(data))) for dest, data in generated.items()]
    rows.append((f"{prefix}/RECORD", "", ""))
    result.generated = generated | {f"{prefix}/RECORD": record_text(rows)}


def record_text(rows: list[tuple[str, str, str]]) -> bytes:
    # RECORD is CSV; a path holding a comma or quote is quoted as the csv module would.
    def cell(value: str) -> str:
        return (
            f'"{value.replace(chr(34), chr(34) * 2)}"' if any(c in value for c in ',"\n') else value
        )

    return "".join(f"{cell(p)},{h},{s}\n" for p, h, s in sorted(rows)).encode("utf-8")


def with_bytecode(plan_: Plan, pycs: dict[str, bytes]) -> bytes:
    """RECORD again, listing the bytecode shipped with the wheel's files (no hash, as pip)."""
    rows = [(m.dest, record_hash(m.sha256), str(m.file_size)) for m in plan_.members]
    rows += [
        (dest, record_hash(data), str(len(data)))
        for dest, data in plan_.generated.items()
        if not dest.endswith("/RECORD")
    ]
    rows += [(name, "", "") for name in pycs]
    rows.append((f"{plan_.dist_info}/RECORD", "", ""))
    return record_text(rows)
