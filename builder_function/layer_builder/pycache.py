"""The bytecode step: which sources get bytecode, compiled per wheel and cached (signed).

Bytecode is kept in rank order (start-up modules first, then the shallowest) within the room
the headroom leaves. Each wheel's compiled bytecode is one cache entry, shared by every build
of that wheel when this machine's interpreter made it, by the team's builds only when the
sandbox did (`pyc_scope`). A source remembered as failing is one the compiler said fails, never
one it did not reach.

When every source fits whatever the order (a small layer, or one the strip step made room in),
the compile does not need the import check's start-up list, so it runs on a thread: beside the
check, or beside the strip step and before the check, which then imports the layer's bytecode.
"""

from __future__ import annotations

import hashlib
import io
import threading
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import bytecode, limits
from .cache import BuildCache
from .errors import UnsafeArchiveError
from .sandbox import Sandbox
from .target import Target
from .wheel import Member, Plan

#: A .pyc is about as big as its source (measured on the heavy fixture: 0.93×); used to choose
#: what to compile before its real size is known. What overflows after compiling is dropped.
PYC_PER_SOURCE_BYTE = 1.0
#: The cache entry of a wheel's bytecode that lists its sources that do not compile.
FAILED = "#failed"

Plans = list[tuple[Plan, Path]]


def choose(
    files: list[tuple[str, int]], startup: set[str], room: int, mode: str, known: Mapping[str, int]
) -> list[str]:
    """Sources whose bytecode is kept, in rank order, within `room` bytes (estimated)."""
    sizes = dict(files)
    ranked = bytecode.rank([s for s in sizes if s.endswith(".py")], startup)
    if mode == "all":
        return ranked
    chosen, used = [], 0
    for source in ranked:
        estimate = known.get(source) or int(sizes[source] * PYC_PER_SOURCE_BYTE)
        if used + estimate <= room:
            chosen.append(source)
            used += estimate
    return chosen


def whole_order(files: list[tuple[str, int]], room: int, mode: str) -> list[str] | None:
    """Every source, in rank order, when all of them are kept however they rank (always in mode
    "all"): then the start-up list changes nothing the compile needs. Else None."""
    chosen = choose(files, set(), room, mode, {})
    return chosen if len(chosen) == sum(1 for s, _ in files if s.endswith(".py")) else None


def trim(
    pycs: dict[str, bytes], order: list[str], room: int, mode: str, python_version: str
) -> dict[str, bytes]:
    """Keep compiled bytecode in rank order while its real size fits the room."""
    if mode == "all":
        return pycs
    kept, used = {}, 0
    for source in order:
        name = bytecode.pyc_name(source, python_version)
        if name in pycs and used + len(pycs[name]) <= room:
            kept[name] = pycs[name]
            used += len(pycs[name])
    return kept


@dataclass
class Compilation:
    """Bytecode for chosen sources, in three parts: `prepare` (the cache, on the build's
    thread), `run` (the compiler: a process of this machine's interpreter, or the sandbox; safe
    on another thread) and `finish` (the cache again, on the build's thread)."""

    target: Target
    sandbox: Sandbox
    python: str | None
    sources_zip: Path
    #: pyc cache entry → sources of that wheel to compile; entry → what it held.
    todo: dict[str, list[str]] = field(default_factory=dict)
    cached: dict[str, dict[str, Any]] = field(default_factory=dict)
    own: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    #: From the cache, then from the compiler.
    pycs: dict[str, bytes] = field(default_factory=dict)
    compiled: dict[str, bytes] = field(default_factory=dict)
    #: None: every source without a pyc counts as failing (a sandbox says only what compiled).
    refused: frozenset[str] | None = None
    stopped: bool = False
    error: BaseException | None = None
    thread: threading.Thread | None = None
    stop: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def prepare(
        cls,
        chosen: list[str],
        plans: Plans,
        own_tree: Path,
        cache: BuildCache,
        target: Target,
        sandbox: Sandbox,
        python: str | None,
        team_scope: str,
        work: Path,
    ) -> Compilation:
        owner: dict[str, tuple[Plan, Path]] = {}
        for plan, path in plans:
            for source in plan.sources:
                owner[source] = (plan, path)
        job = cls(target, sandbox, python, work / "sources.zip")
        wanted: dict[str, list[str]] = {}
        for source in chosen:
            if source in owner:
                wanted.setdefault(owner[source][1].name, []).append(source)
        scope = pyc_scope(python, team_scope)
        for wheel_name, sources in wanted.items():
            entry = pyc_entry(wheel_name, target, scope)
            have = unpack_pycs(cache.get(entry))
            job.cached[entry] = have
            need = [
                s
                for s in sources
                if bytecode.pyc_name(s, target.python_version) not in have
                and s not in have.get(FAILED, {})
            ]
            job.pycs.update(
                {n: d for n, d in have.items() if n != FAILED and bytecode.pyc_source(n) in sources}
            )
            if need:
                job.todo[entry] = need
        job.own = [s for s in chosen if s not in owner]
        job.files = _zip_sources(job.todo, owner, own_tree, job.own, job.sources_zip)
        return job

    def run(self, timeout: float | None, processes: int = 2) -> None:
        if not self.files:
            return
        if self.python is not None:
            result = bytecode.compile_sources(
                self.python,
                self.sources_zip,
                self.files,
                timeout=timeout,
                stop=self.stop,
                processes=processes,
            )
            self.compiled, self.refused, self.stopped = result.pycs, result.failed, result.stopped
        else:
            # A sandbox says only what compiled; what it keeps is the team's (pyc_scope).
            self.compiled = self.sandbox.compile(self.sources_zip, self.target, timeout)

    def start(self, timeout: float | None, processes: int) -> None:
        """run() on a thread; finish() waits for it and raises what it raised. Beside the import
        check it gets one CPU less than there are: on two, a second compiler took it from the
        check's unpacking and imports (native lock, cold: check 0.25-0.28 s with two, 0.19-0.23 s
        with one), and the check is what the build waits for."""

        def run() -> None:
            try:
                self.run(timeout, processes=max(1, processes))
            except BaseException as exc:
                self.error = exc

        self.thread = threading.Thread(target=run, name="compile", daemon=True)
        self.thread.start()

    def wait(self) -> None:
        if self.thread is not None:
            self.thread.join()

    def cancel(self) -> None:
        """The build failed: stop the compiler (within 0.1 s) and wait for the thread."""
        self.stop.set()
        self.wait()

    def finish(self, cache: BuildCache, warnings: list[str]) -> dict[str, bytes]:
        """Every chosen source's bytecode that compiled; the cache entries written."""
        self.wait()
        self.sources_zip.unlink(missing_ok=True)  # here: the build's thread also walks work/
        if self.error is not None:
            raise self.error
        if self.stopped:
            lost = len(self.files) - len(self.compiled) - len(self.refused or ())
            warnings.append(
                "The bytecode compiler stopped before its last source (one crashed it): "
                f"{lost} sources ship without bytecode in this build and are compiled again by "
                "the next one."
            )
        version = self.target.python_version
        for entry, need in self.todo.items():
            mine = {bytecode.pyc_name(s, version): s for s in need}
            fresh = {n: d for n, d in self.compiled.items() if n in mine}
            # Remembered as failing only when the compiler said so: a source it never reached (a
            # crash on another, shared by every build's cache of that wheel) is tried again.
            failed = {
                s: b""
                for s in need
                if bytecode.pyc_name(s, version) not in fresh
                and (self.refused is None or s in self.refused)
            }
            merged: dict[str, Any] = {**self.cached[entry], **fresh}
            merged[FAILED] = {**merged.get(FAILED, {}), **failed}
            cache.put(entry, pack_pycs(merged))
            self.pycs.update(fresh)
        self.pycs.update(
            {n: d for n, d in self.compiled.items() if bytecode.pyc_source(n) in self.own}
        )
        return self.pycs


def pyc_entry(wheel_name: str, target: Target, scope: str) -> str:
    """The cache entry of a wheel's bytecode: its sha256, what decides the bytes, and who may
    reuse it (pyc_scope)."""
    # The compile limits decide which sources fail, and failures are cached too.
    settings = (
        f"{target.python_version}-{bytecode.LAYER_PATH}-unchecked-"
        f"{limits.MAX_COMPILE_SOURCE_BYTES}-{limits.MAX_COMPILE_MEMORY_BYTES}"
    )
    digest = hashlib.sha256(settings.encode()).hexdigest()[:16]
    return f"pyc-{wheel_name.split('.')[0]}-{digest}{scoped(scope)}"


def pyc_scope(python: str | None, team_scope: str) -> str:
    """Bytecode compiled here by the target's interpreter (isolated, importing nothing) serves
    every build; bytecode the sandbox compiled serves only the request's cache scope."""
    return "" if python else team_scope


def scoped(scope: str) -> str:
    return f"-for-{hashlib.sha256(scope.encode()).hexdigest()[:16]}" if scope else ""


def cached_pycs(plans: Plans, cache: BuildCache, target: Target, scope: str) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for plan, path in plans:
        have = unpack_pycs(cache.get(pyc_entry(path.name, target, scope)))
        sources = plan.source_set
        found.update(
            {n: d for n, d in have.items() if n != FAILED and bytecode.pyc_source(n) in sources}
        )
    return found


def _zip_sources(
    todo: dict[str, list[str]],
    owner: dict[str, tuple[Plan, Path]],
    own_tree: Path,
    own: list[str],
    dest: Path,
) -> list[str]:
    """The sources to compile, in one zip (names relative to python/): each wheel's read at the
    offsets its plan located (size and CRC checked), then the own ones. Returns the names."""
    by_wheel: dict[Path, list[str]] = {}
    for need in todo.values():
        for source in need:
            by_wheel.setdefault(owner[source][1], []).append(source)
    names = []
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_STORED) as zf:
        for path, sources in by_wheel.items():
            plan = owner[sources[0]][0]
            members = {m.dest: m for m in plan.members}
            with open(path, "rb") as f:
                for source in sources:
                    m = members[source]
                    f.seek(m.data_offset)
                    zf.writestr(source, member_bytes(f.read(m.compress_size), m, plan))
                    names.append(source)
        for source in own:
            zf.write(own_tree / source, source)
    return sorted(names) + own


def member_bytes(raw: bytes, member: Member, plan: Plan) -> bytes:
    """A wheel member's bytes, never more than its planned size (a deflate stream may claim
    little and inflate to gigabytes), and only if its size and CRC are the planned ones."""
    data = raw
    if member.compress_type == zipfile.ZIP_DEFLATED:
        data = zlib.decompressobj(-15).decompress(raw, member.file_size + 1)
    if len(data) != member.file_size or zlib.crc32(data) != member.crc:
        raise UnsafeArchiveError(
            f"{plan.display_name or plan.name} {plan.version}: {member.dest} does not hold what "
            "the wheel's listing says (size or CRC): the wheel is damaged or built to mislead. "
            "Pin another version and run `pipenv lock`."
        )
    return data


def pack_pycs(pycs: dict) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        for name, data in sorted(pycs.items()):
            if name == FAILED:
                zf.writestr(FAILED, "\n".join(sorted(data)))
            else:
                zf.writestr(name, data)
    return buffer.getvalue()


def unpack_pycs(payload: bytes | None) -> dict:
    if not payload:
        return {}
    with zipfile.ZipFile(io.BytesIO(payload)) as zf:
        result: dict = {n: zf.read(n) for n in zf.namelist() if n != FAILED}
        if FAILED in zf.namelist():
            result[FAILED] = {s: b"" for s in zf.read(FAILED).decode().splitlines() if s}
    return result
