"""The build: unpack → lock → install (fetch wheels, plan members) → check → bytecode → zip.

`build()` is the one entry point the CLI, the builder Lambda and the benchmarks share. It takes
explicit arguments, touches only its work directory, the cache and the output path, and either
produces a complete layer zip and report or raises a named error leaving no output behind.

The layer is assembled from the wheels themselves: each member's compressed bytes are copied
into the zip, so nothing is unpacked or deflated again. Uploaded code runs only in the sandbox
(`request.sandbox`): it imports a candidate layer (with the bytecode already cached for its
wheels) and answers which sources load at start-up; bytecode is then compiled for what is kept,
per wheel and cached (pycache.py; beside the check when every source fits whatever the order),
and the final zip written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import inspect
import os
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import plette
from packaging.utils import canonicalize_name

from . import (
    __version__,
    buildmemo,
    bytecode,
    check,
    fetch,
    importmemo,
    limits,
    lock,
    project,
    pycache,
    runner,
    stripping,
    unpack,
)
from .cache import BuildCache, RemoteCache, load_or_create_key
from .errors import (
    DiskFullError,
    InputError,
    LayerBuildError,
    NoWheelError,
    OutOfTimeError,
    TargetMismatchError,
)
from .install import FETCHER, Installed, Settings, install
from .package import MANIFEST_NAME, PREFIX, content_hash, manifest, tree_entries
from .report import BuildReport, Timings, owners_from_plans, package_sizes
from .sandbox import Candidate, CheckSpec, Dependency, Sandbox, Verdict
from .sandbox_local import LocalSandbox
from .target import ARCH_MACHINE, Target
from .wheel import Plan, refuse_overlaps, with_bytecode
from .zipwriter import (
    DataEntry,
    Entry,
    FileEntry,
    RawEntry,
    Written,
    entry_size,
    write_zip_hashed,
)

Progress = Callable[..., None]


@dataclass(frozen=True)
class BuildRequest:
    source: Path
    output: Path
    target: Target = field(default_factory=Target)
    index: lock.IndexPolicy = field(default_factory=lock.IndexPolicy)
    allow_sdist: frozenset[str] = frozenset()
    layer_prefix: str = ""
    #: The upload's file name when `source` is a temporary copy (naming uses it).
    source_name: str = ""
    cache_dir: Path | None = None
    #: A shared second cache level (the Lambda's artifact bucket); needs cache_dir.
    remote_cache: RemoteCache | None = None
    #: time.monotonic() by which the build must have finished, or None.
    deadline: float | None = None
    environ: Mapping[str, str] | None = None
    #: Where uploaded code runs (import check, start-up probe, source builds, foreign bytecode).
    #: None: sandbox_local.LocalSandbox (subprocesses of this process: the CLI's and tests').
    sandbox: Sandbox | None = None
    #: HMAC key for derived cache entries; None: a key file in cache_dir (made on first use).
    signing_key: bytes | None = None
    #: Who may reuse what the sandbox made (verdicts, bytecode it compiled, wheels it built from
    #: sdists): the service passes the team. The sandbox also runs uploads' code, so its output
    #: is trusted only by the team whose upload it ran beside; entries this process makes from
    #: verified wheels alone (downloads, bytecode of a local interpreter) serve everyone.
    cache_scope: str = ""


@dataclass(frozen=True)
class BuildResult:
    output: Path
    report: BuildReport


def _remaining(deadline: float | None, phase: str) -> float | None:
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise OutOfTimeError(
            f"No time left before {phase}: the build stopped before publishing "
            "anything. Retry, or give the builder a longer timeout."
        )
    return left


def host_machine() -> str:
    return os.uname().machine


def _zip_progress(progress: Progress, entries: list[Entry]) -> Callable[[Written], None]:
    """ "Writing the layer zip" with the unzipped bytes written so far, of all of them."""
    total = sum(entry_size(e) for e in entries)
    done = [0]
    progress("Writing the layer zip", done=0, total=total, unit="B")

    def on_written(written: Written) -> None:
        done[0] += written.file_size
        progress("Writing the layer zip", done=done[0], total=total, unit="B")

    return on_written


def _reporter(progress: Progress) -> Progress:
    """The contract's progress(message, done=, total=, unit=), also for a one-argument callback."""
    try:
        params = inspect.signature(progress).parameters
        rich = "done" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())
    except (TypeError, ValueError):
        rich = False
    if rich:
        return progress
    last: list[str] = []

    def plain(message: str, **_: object) -> None:
        if not last or last[-1] != message:  # byte counts are for callbacks that show them
            last.append(message)
            progress(message)

    return plain


def _source_root(request: BuildRequest, work: Path) -> tuple[Path, list[str]]:
    if request.source.is_dir():
        return request.source, []
    if not request.source.is_file():
        raise InputError(
            f"{request.source} does not exist: give a project directory, .zip or .tar.gz."
        )
    dest = work / "src"
    dest.mkdir()  # unpack() wants an existing, empty directory
    result = unpack.unpack(request.source, dest)
    return result.root, list(result.warnings)


def _direct_dependencies(root: Path) -> list[str]:
    """The Pipfile's [packages]: what consumer functions import (lock.read_lock checked it)."""
    try:
        with (root / lock.PIPFILE).open(encoding="utf-8") as f:
            packages = plette.Pipfile.load(f).get("packages") or {}
    except Exception:  # read_lock refused a bad Pipfile already; never fail here
        return []
    return sorted(canonicalize_name(name) for name in packages)


def _dependency_entries(plans: list[tuple[Plan, Path]]) -> list[Entry]:
    entries: list[Entry] = []
    for plan, path in plans:
        entries += [
            RawEntry(
                PREFIX + m.dest,
                Path(m.blob) if m.blob else path,
                m.data_offset,
                m.compress_size,
                m.file_size,
                m.crc,
                m.sha256,
                m.executable,
                m.compress_type,
            )
            for m in plan.members
        ]
        entries += [DataEntry(PREFIX + dest, data) for dest, data in plan.generated.items()]
    return entries


def _own_entries(own_tree: Path) -> list[FileEntry]:
    return tree_entries(own_tree)


@dataclass
class _Layer:
    """Everything that goes into one target's zip, before bytecode."""

    installed: Installed
    own_tree: Path
    own_names: list[str]
    #: Only these distributions' wheels (a smaller candidate for the import check); None: all.
    only: frozenset[str] | None = None

    @property
    def plans(self) -> list[tuple[Plan, Path]]:
        if self.only is None:
            return self.installed.plans
        return [(plan, path) for plan, path in self.installed.plans if plan.name in self.only]

    def index(self) -> importmemo.LayerIndex:
        """Who owns each file: the memo of import verdicts keys on it."""
        own = f"{importmemo.OWN}@{content_hash(_own_entries(self.own_tree))}"
        files = [(e.name[len(PREFIX) :], own) for e in _own_entries(self.own_tree)]
        for plan, path in self.plans:
            owner = _owner(plan, path)
            # A stripped file is not the wheel's: its verdicts are not the unstripped file's.
            files += [
                (m.dest, f"{owner}+{m.sha256[:16]}" if m.blob else owner) for m in plan.members
            ]
            files += [(d, owner) for d in plan.generated]
        return importmemo.layer_index(files)

    def entries(self, pycs: dict[str, bytes] | None = None) -> list[Entry]:
        pycs = pycs or {}
        entries = _dependency_entries(self.plans) + list(_own_entries(self.own_tree))
        if pycs:
            records = {}
            for plan, _ in self.plans:
                sources = plan.source_set  # a property that builds the set: once per plan
                mine = {n: b"" for n in pycs if bytecode.pyc_source(n) in sources}
                if mine:
                    records[PREFIX + f"{plan.dist_info}/RECORD"] = with_bytecode(plan, mine)
            entries = [
                DataEntry(e.name, records[e.name]) if e.name in records else e for e in entries
            ]
            entries += [DataEntry(PREFIX + name, data) for name, data in sorted(pycs.items())]
        return entries

    def files(self) -> list[tuple[str, int]]:
        files = [f for plan, _ in self.plans for f in plan.files()]
        files += [
            (e.name[len(PREFIX) :], e.path.stat().st_size) for e in _own_entries(self.own_tree)
        ]
        return files


def _signing_key(request: BuildRequest) -> bytes:
    if request.signing_key is not None:
        return request.signing_key
    if request.cache_dir is not None:
        return load_or_create_key(request.cache_dir)
    return secrets.token_bytes(32)  # no cache to share: derived entries live for this build only


def _install(
    request: BuildRequest,
    target: Target,
    locked: lock.LockedProject,
    config: project.ProjectConfig,
    cache: BuildCache,
    sandbox: Sandbox,
    progress: Progress,
    work: Path,
) -> Installed:
    environ = os.environ if request.environ is None else request.environ

    def build_sdist(sdist: Path, chosen: fetch.Chosen) -> Path:
        what = f"{chosen.requirement.name}=={chosen.requirement.version}"
        if not sandbox.native(target):  # refused before any build code runs
            host, pin = (
                host_machine(),
                f"or pin a version that ships manylinux wheels for {target.machine}",
            )
            if host != target.machine:
                raise NoWheelError(
                    f"No wheel of {what} for {target.describe()}, and a source build on this {host} "
                    f"machine makes {host} binaries, not {target.machine}: build on "
                    f"{target.machine} (e.g. the builder Lambda with Architecture={target.arch}), {pin}."
                )
            raise NoWheelError(
                f"No wheel of {what} for {target.describe()}, and building from source needs a "
                f"Python {target.python_version} interpreter, which was not found (PATH, pyenv): "
                f"install one, {pin}."
            )
        progress(f"Building {what} from source")
        return sandbox.build_sdist(
            sdist,
            chosen.requirement.name,
            chosen.requirement.version,
            target,
            work / "built",
            _remaining(request.deadline, "a source build"),
        )

    return install(
        locked,
        target,
        cache,
        Settings(target.python_version, config.slim, config.slim_exclude),
        client_factory=lambda: fetch.IndexClient(
            environ, indexes={r.index for r in locked.requirements if r.index}
        ),
        allow_sdist=request.allow_sdist,
        build_sdist=build_sdist,
        built_scope=pycache.scoped(request.cache_scope),
        progress=progress,
    )


def _check(
    request: BuildRequest,
    target: Target,
    layer: _Layer,
    spec: CheckSpec,
    sandbox: Sandbox,
    cache: BuildCache,
    work: Path,
    name: str,
    scope: dict | None = None,
) -> Verdict:
    """The sandbox's verdict on a candidate layer, remembered per content.

    The candidate carries the bytecode already cached for its wheels (signed entries of earlier
    builds), so after a small change the check imports from .pyc instead of compiling in memory;
    which bytecode ships is decided after the verdict. With `scope`, each passing import is
    remembered by what it depended on (importmemo) and only imports whose dependencies changed
    run again, on a candidate of the wheels they reached when that is conclusive.
    """
    # The verdict depends on the sources, not on which of their exact compiles ride along.
    digest = content_hash(layer.entries())
    key = hashlib.sha256(f"{digest}|{spec.to_json()}|{target}".encode()).hexdigest()
    entry = f"verdict-{key}{pycache.scoped(request.cache_scope)}"
    remembered = cache.get(entry)
    if remembered is not None:
        try:
            return Verdict.from_json(remembered)
        except LayerBuildError:
            pass
    modules = [item.module for item in runner._plan(spec)]
    lock_minor = ".".join((spec.lock_python or "").split(".")[:2])
    if scope is not None and cache.persistent and lock_minor == target.python_version:
        scope = {**scope, "target": str(target), "spec": spec.to_json()["lock_python"]}
        index = layer.index()
        parts = importmemo.split(cache, scope, modules, index)
    else:
        scope, index, parts = None, None, importmemo.Split(run=modules, hints={"*"})
    verdict = Verdict(ok=True, ran_on="")
    if parts.run:
        verdict = _run_check(
            request,
            target,
            layer,
            _subspec(spec, parts.run),
            parts,
            sandbox,
            cache,
            work,
            name,
            index,
        )
        if verdict.ok and scope is not None:
            direct = {dep.name for dep in spec.dependencies}
            transitive = {
                _owner(plan, path) for plan, path in layer.plans if plan.name not in direct
            }
            importmemo.remember(
                cache,
                scope,
                verdict.imports,
                index,  # type: ignore[arg-type]
                ran=parts.run,
                always=transitive,
            )
    if verdict.ok and parts.proven:
        loaded = {p for paths in parts.proven.values() for p in paths}
        note = (
            f"{len(parts.proven)} of {len(modules)} imports proven by the memo of earlier checks "
            "(same files)"
        )
        verdict = dataclasses.replace(
            verdict,
            startup=tuple(sorted(set(verdict.startup) | loaded)),
            ran_on="; ".join(filter(None, (verdict.ran_on, note))),
        )
    if verdict.ok:  # a refusal is not remembered: the project will change
        cache.put(entry, dataclasses.replace(verdict, imports=()).to_json().encode())
    return verdict


def _run_check(
    request: BuildRequest,
    target: Target,
    layer: _Layer,
    spec: CheckSpec,
    parts: importmemo.Split,
    sandbox: Sandbox,
    cache: BuildCache,
    work: Path,
    name: str,
    index: importmemo.LayerIndex | None,
) -> Verdict:
    """The imports the memo does not prove, in the sandbox: first on the wheels they reached
    last time (when the memo knows them), kept only when that says what the whole layer would."""
    pyc_scope = pycache.pyc_scope(
        bytecode.find_interpreter(target, request.environ), request.cache_scope
    )
    if index is not None and "*" not in parts.hints:
        part = dataclasses.replace(layer, only=frozenset(parts.hints))
        candidate = Candidate(
            part.entries(pycache.cached_pycs(part.plans, cache, target, pyc_scope)),
            work,
            f"part-{name}",
        )
        try:
            verdict = sandbox.check(
                candidate, spec, target, _remaining(request.deadline, "the import check")
            )
        finally:
            candidate.discard()
        if (
            verdict.ok
            and len(verdict.imports) == len(runner._plan(spec))
            and importmemo.conclusive(verdict.imports, part.index(), index)
        ):
            return verdict
    candidate = Candidate(
        layer.entries(pycache.cached_pycs(layer.plans, cache, target, pyc_scope)),
        work,
        f"candidate-{name}",
    )
    try:
        return sandbox.check(
            candidate, spec, target, _remaining(request.deadline, "the import check")
        )
    finally:
        candidate.discard()


def _subspec(spec: CheckSpec, modules: list[str]) -> CheckSpec:
    """The check of only these modules (the others are proven by the memo)."""
    run = set(modules)
    deps = tuple(
        Dependency(d.name, d.version, tuple(m for m in d.modules if m in run))
        for d in spec.dependencies
        if run & set(d.modules)
    )
    return CheckSpec(
        own=tuple(m for m in spec.own if m in run),
        dependencies=deps,
        startup=tuple(m for m in spec.startup if m in run),
        lock_python=spec.lock_python,
    )


def _spec(
    layer: _Layer, direct: list[str], config: project.ProjectConfig, locked: lock.LockedProject
) -> CheckSpec:
    by_name = {plan.name: plan for plan, _ in layer.plans}
    deps = tuple(
        Dependency(n, by_name[n].version, tuple(by_name[n].top_level))
        for n in direct
        if n in by_name and by_name[n].top_level
    )
    return CheckSpec(
        own=tuple(layer.own_names),
        dependencies=deps,
        startup=tuple(getattr(config, "startup", ()) or ()),
        lock_python=locked.python_version,
    )


def _owner(plan: Plan, path: Path) -> str:
    """A wheel's label in the import memo: its distribution and its file's name (the sha256)."""
    return f"{plan.name}@{path.name.split('.')[0]}"


def _twin_target(target: Target) -> Target | None:
    arch = {machine: arch for arch, machine in ARCH_MACHINE.items()}.get(host_machine())
    return Target(target.runtime, arch) if arch and arch != target.arch else None


def _peak(work: Path, cache: BuildCache, start_cache: int, peak: list[int]) -> None:
    used = sum(p.stat().st_size for p in work.rglob("*") if p.is_file() and not p.is_symlink())
    peak[0] = max(peak[0], used + max(0, cache.size() - start_cache))


def build(request: BuildRequest, progress: Progress = lambda message, **_: None) -> BuildResult:
    progress = _reporter(progress)
    target = request.target
    timings = Timings()
    work = Path(tempfile.mkdtemp(prefix="layer-build-"))
    partial = request.output.with_name(f".{request.output.name}.partial")
    cache: BuildCache | None = None
    early: pycache.Compilation | None = None
    zipping: _ZipJob | None = None
    try:
        with timings.phase("unpack"):
            # resolve(): "." has no name of its own, the directory it points at has.
            source_name = request.source_name or request.source.resolve().name
            progress(f"Reading {source_name}")
            root, warnings = _source_root(request, work)
        with timings.phase("lock"):
            config = project.load_config(root, source_name)
            locked = lock.read_lock(root, target, request.index)
            code = project.detect_code(root, config, tuple(p for _, p in locked.local_paths))
            direct = _direct_dependencies(root)
        warnings += [*config.warnings, *locked.warnings, *project.code_warnings(root, config, code)]
        headroom = getattr(config, "headroom", limits.DEFAULT_HEADROOM)
        name = project.layer_name(config.name, request.layer_prefix)
        report = BuildReport(
            layer_name=name,
            layer_version=config.version,
            description=config.description,
            runtime=target.runtime,
            arch=target.arch,
            platform=target.platform,
            builder_version=__version__,
            lock_hash=locked.lock_sha256,
            packages=[{"name": r.name, "version": r.version} for r in locked.requirements],
            skipped_by_marker=[{"name": n, "markers": m} for n, m in locked.skipped],
            headroom=headroom,
            installer=FETCHER,
        )
        cache = BuildCache(
            request.cache_dir, _signing_key(request), request.remote_cache, scratch=work
        )
        start_cache, peak = cache.size(), [0]
        sandbox = request.sandbox or LocalSandbox(request.environ)
        own_tree = work / "own"
        own_tree.mkdir()
        own_names = project.copy_code(code, own_tree)
        python = bytecode.find_interpreter(target, request.environ)
        memo = None
        if cache.persistent:
            memo = buildmemo.key(
                _memo_inputs(
                    request, target, locked, config, direct, name, warnings, sandbox, python
                ),
                own_tree,
            )
            request.output.parent.mkdir(parents=True, exist_ok=True)
            started = time.perf_counter()
            reused = buildmemo.reuse(cache, memo, partial)
            if reused is not None:
                timings.seconds["reuse"] = round(time.perf_counter() - started, 3)
                progress("Reusing the layer of an identical earlier build")
                os.replace(partial, request.output)
                reused.reused = (
                    "an identical earlier build (same lock, settings, own code, target "
                    "and engine): its zip, sha256 checked, and its report"
                )
                reused.dependency_cache, reused.downloaded_bytes, reused.peak_tmp_bytes = (
                    "hit",
                    0,
                    0,
                )
                reused.warnings = list(dict.fromkeys(reused.warnings + cache.warnings))
                reused.timings = timings.seconds
                return BuildResult(request.output, reused)

        with timings.phase("install"):
            installed = _install(request, target, locked, config, cache, sandbox, progress, work)
        warnings += installed.warnings
        _peak(work, cache, start_cache, peak)

        with timings.phase("package"):
            layer = _Layer(installed, own_tree, own_names)
            tops = {
                dest.split("/", 1)[0].split(".")[0]
                for plan, _ in layer.plans
                for dest, _ in plan.files()
            }
            clash = sorted(set(own_names) & tops)
            if clash:
                raise project.clash_error(clash, own_names)
            refuse_overlaps(p for p, _ in layer.plans)
            owners = owners_from_plans([p for p, _ in layer.plans]) | {
                n: f"{n} (own)" for n in own_names
            }
            binaries = check.check_machines(
                [
                    (dest, machine)
                    for plan, _ in layer.plans
                    for dest, machine in plan.machines.items()
                ],
                target,
            )
            files = layer.files()
            need = _strip_need(config, installed.plans, files, headroom)

        def compilation(chosen: list[str]) -> pycache.Compilation:
            return pycache.Compilation.prepare(
                chosen, layer.plans, own_tree, cache, target, sandbox, python,
                request.cache_scope, work,
            )  # fmt: skip

        whole = None
        if config.bytecode != "none" and python is not None:
            # What stripping will free at most counts: the compile needs only the sources.
            freed = 0 if need == 0 else stripping.estimate(installed.plans)
            whole = pycache.whole_order(files, _room(files, headroom) + freed, config.bytecode)
        strips = need != 0
        if whole is not None:
            # Every source is kept whatever the check says starts first: compiled beside the
            # check, on all CPUs but one; or, when there is stripping to do, beside that, on all
            # of them, and finished before the check, which then imports the layer's bytecode.
            # Native lock, cold: 0.53-0.59 s beside the check, 0.64-0.67 s before it.
            with timings.phase("bytecode"):
                early = compilation(whole)
                cpus = int(bytecode.usable_cpus())
                early.start(
                    _remaining(request.deadline, "compiling bytecode"), cpus if strips else cpus - 1
                )
        with timings.phase("strip"):
            stripped = _strip(installed, need, cache, progress)
            files = layer.files()
        sizes = package_sizes(files, owners)
        unzipped = sum(size for _, size in files)
        check.check_size(unzipped, sizes, headroom=headroom)
        room = _room(files, headroom)
        precompiled: dict[str, bytes] | None = None
        if early is not None and strips:
            with timings.phase("bytecode"):
                progress("Compiling bytecode for the target Python")
                precompiled = early.finish(cache, warnings)
                early = None  # finished: nothing left to stop (a Ctrl-C in finish() stops it)
        if precompiled is not None and sum(map(len, precompiled.values())) <= room:
            # Every .pyc ships whatever the check finds (they all fit), so the zip is known and
            # written beside the check, which then imports on one CPU.
            _remaining(request.deadline, "writing the zip")
            ready = layer.entries(precompiled)
            report.content_hash = content_hash(ready)
            report.own_packages = own_names
            report.bytecode = {"mode": config.bytecode}
            request.output.parent.mkdir(parents=True, exist_ok=True)
            zipping = _ZipJob(partial, ready, manifest(report), work, progress)
        with timings.phase("check"):
            spec = _spec(layer, direct, config, locked)
            # Import verdicts are remembered per layer: one project's checks prove only its own.
            scope = {
                "layer": name,
                "team": request.cache_scope,
                "python": python,
                "runtime": _runtime_stamp(),
                "sandbox": [type(sandbox).__module__, type(sandbox).__qualname__],
            }
            progress("Checking that the layer imports")
            checked_on, verdict = target, None
            if sandbox.native(target):
                verdict = _check(
                    request, target, layer, spec, sandbox, cache, work, target.short, scope
                )
            elif (twin := _twin_target(target)) is not None:
                progress(f"Checking a {twin.arch} twin of the layer (same versions)")
                twin_installed = _install(
                    request, twin, locked, config, cache, sandbox, progress, work
                )
                twin_layer = _Layer(twin_installed, own_tree, own_names)
                checked_on = twin
                if sandbox.native(twin):
                    verdict = _check(
                        request, twin, twin_layer, spec, sandbox, cache, work, twin.short, scope
                    )
        if verdict is None:
            import_status = (
                f"skipped: no sandbox runs {target.runtime} on {target.machine} "
                f"or on this {host_machine()} machine"
            )
            warnings.append(
                f"The import check did not run: {import_status.removeprefix('skipped: ')}."
            )
        elif not verdict.ok:
            raise TargetMismatchError(verdict.message)
        else:
            where = (
                ""
                if checked_on == target
                else (
                    f" on a {checked_on.arch} twin of the layer (same locked versions; one rule for "
                    "both architectures)"
                )
            )
            if verdict.ran_on == "skipped":
                import_status = "skipped: " + (
                    verdict.warnings[0] if verdict.warnings else "no interpreter"
                )
            else:
                import_status = (
                    f"ok: {', '.join(own_names)}" if own_names else "ok: no own packages"
                ) + where
            warnings += list(verdict.warnings)
        startup = set(verdict.startup) if verdict is not None else set()
        _peak(work, cache, start_cache, peak)

        pycs: dict[str, bytes] = {}
        failed: list[str] = []
        coverage: dict = {"choice": "none", "kept": 0, "dropped": 0, "dropped_bytes": 0}
        can_compile = python is not None or sandbox.native(target)
        if config.bytecode != "none" and not can_compile:
            warnings.append(
                f"No {target.runtime} interpreter here or in the sandbox: the layer ships "
                "without bytecode and every cold start compiles its modules."
            )
        elif config.bytecode != "none":
            with timings.phase("bytecode"):
                progress("Compiling bytecode for the target Python")
                order = pycache.choose(files, startup, room, config.bytecode, {})
                # Only what is kept is compiled. Compiling every start-up module too (so that a
                # later check imports from .pyc) was measured on the heavy lock: +7 s cold, and
                # the check after a one-pin bump did not get faster (unzipping the candidate
                # dominated it then), so it is not done.
                if precompiled is None:
                    job = early or compilation(order)
                    if early is None:
                        job.run(_remaining(request.deadline, "compiling bytecode"))
                    compiled = job.finish(cache, warnings)
                    early = None  # finished: nothing left to stop (a Ctrl-C in finish() stops it)
                else:
                    compiled = precompiled
                pycs = pycache.trim(compiled, order, room, config.bytecode, target.python_version)
                failed = [
                    s for s in order if bytecode.pyc_name(s, target.python_version) not in compiled
                ]
                sources = [s for s, _ in files if s.endswith(".py")]
                coverage = {
                    "choice": "start-up modules first" if startup else "shallowest modules first",
                    "kept": len(pycs),
                    "dropped": len(sources) - len(pycs),
                    "dropped_bytes": sum(len(d) for n, d in compiled.items() if n not in pycs),
                    "startup_sources": len(startup),
                    "startup_kept": sum(1 for n in pycs if bytecode.pyc_source(n) in startup),
                }

        entries = layer.entries(pycs)
        digest = content_hash(entries)
        report.content_hash = digest
        report.own_packages = own_names
        report.slimmed = _slimmed(layer.plans)
        report.stripped = stripped.summary(config.strip)
        report.license = config.license
        report.built_from_source = installed.built_from_source
        report.wheels = installed.wheels
        cached = len(layer.plans) - installed.downloaded_files
        report.dependency_cache = (
            "off"
            if request.cache_dir is None
            else "hit"
            if cached == len(layer.plans)
            else "miss"
            if cached == 0
            else f"partial: {cached} of {len(layer.plans)} wheels cached"
        )
        report.downloaded_bytes = installed.downloaded_bytes
        report.bytecode = {
            "interpreter": f"CPython {target.python_version}" if can_compile else None,
            "mode": config.bytecode if can_compile else "none",
            "invalidation": "unchecked-hash",
            "failed": len(failed),
            **coverage,
        }
        report.checks = {
            "binaries": f"{binaries} shared objects for {target.machine}",
            "imports": import_status,
            "size": "within limit, headroom kept",
            "sandbox": verdict.ran_on if verdict is not None else "",
        }
        warnings += bytecode.failure_warnings(failed, dict(files), target.runtime)
        manifest_path = work / MANIFEST_NAME
        manifest_path.write_text(manifest(report), encoding="utf-8")

        with timings.phase("zip"):
            _remaining(request.deadline, "writing the zip")
            request.output.parent.mkdir(parents=True, exist_ok=True)
            zip_entries = [*entries, FileEntry(PREFIX + MANIFEST_NAME, manifest_path)]
            done = zipping.result() if zipping is not None else None
            zipping = None
            if done is not None and done[0] == manifest_path.read_text(encoding="utf-8"):
                written, zip_sha256 = done[1]
            else:  # none was written beside the check, or (a guard) not this one
                written, zip_sha256 = write_zip_hashed(
                    partial, zip_entries, on_written=_zip_progress(progress, zip_entries)
                )
            _peak(work, cache, start_cache, peak)
            os.replace(partial, request.output)
        report.files = len(written)
        report.unzipped_bytes = sum(w.file_size for w in written)
        report.room_left_bytes = limits.MAX_UNZIPPED_BYTES - report.unzipped_bytes
        report.zipped_bytes = request.output.stat().st_size
        report.zip_sha256 = zip_sha256
        report.publish_via_s3 = report.zipped_bytes > limits.MAX_DIRECT_UPLOAD_BYTES
        report.sizes = package_sizes(
            [(w.name.split("/", 1)[1], w.file_size) for w in written], owners
        )
        report.warnings = list(dict.fromkeys(warnings + cache.warnings))
        report.peak_tmp_bytes = peak[0]
        report.timings = timings.seconds
        if memo is not None:
            with contextlib.suppress(OSError):  # the layer is built; only its reuse is lost
                # Without this build's cache warnings: a later reuse reports its own.
                kept = [w for w in report.warnings if w not in cache.warnings]
                copied = buildmemo.remember(
                    cache, memo, request.output, dataclasses.replace(report, warnings=kept)
                )
                # The zip it keeps counts when it is a copy (a hard link adds nothing).
                peak[0] += copied
                report.peak_tmp_bytes = peak[0]
        return BuildResult(request.output, report)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise DiskFullError(
                f"The disk filled up during the build ({exc.filename or 'work dir'}): "
                "give the builder more ephemeral storage."
            ) from None
        raise
    finally:
        if early is not None:  # the build failed meanwhile: its compiler is stopped
            early.cancel()
        if zipping is not None:  # the check refused the layer: its zip is finished, then removed
            zipping.wait()
        partial.unlink(missing_ok=True)
        if cache is not None:
            cache.close()
        shutil.rmtree(work, ignore_errors=True)


class _ZipJob:
    """write_zip_hashed on a thread, and the manifest it wrote; result() raises what it raised."""

    def __init__(
        self,
        partial: Path,
        entries: list[Entry],
        manifest_text: str,
        work: Path,
        progress: Progress,
    ) -> None:
        self.manifest_text = manifest_text
        path = work / f"early-{MANIFEST_NAME}"
        path.write_text(manifest_text, encoding="utf-8")
        self.entries = [*entries, FileEntry(PREFIX + MANIFEST_NAME, path)]
        self.outcome: tuple[list[Written], str] | BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(partial, progress), daemon=True)
        self.thread.start()

    def _run(self, partial: Path, progress: Progress) -> None:
        try:
            on_written = _zip_progress(progress, self.entries)
            self.outcome = write_zip_hashed(partial, self.entries, on_written=on_written)
        except BaseException as exc:
            self.outcome = exc

    def wait(self) -> None:
        self.thread.join()

    def result(self) -> tuple[str, tuple[list[Written], str]]:
        self.wait()
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        assert self.outcome is not None
        return self.manifest_text, self.outcome


def _room(files: list[tuple[str, int]], headroom: int) -> int:
    """What Lambda's limit leaves for bytecode once the headroom and the manifest are kept."""
    unzipped = sum(size for _, size in files)
    return limits.MAX_UNZIPPED_BYTES - headroom - unzipped - limits.MANIFEST_ALLOWANCE


def _strip_need(
    config: project.ProjectConfig,
    plans: list[tuple[Plan, Path]],
    files: list[tuple[str, int]],
    headroom: int,
) -> int | None:
    """Bytes the strip step must free (None: all it can). In "auto", the room the layer needs to
    fit with its headroom and all its bytecode (pycache.whole_order); nothing when no stripping
    would make the layer fit (the size check then says why). In "never", nothing."""
    if config.strip == "always":
        return None
    if config.strip == "never" or not stripping.candidates(plans):
        return 0
    sources = sum(size for name, size in files if name.endswith(".py"))
    pycs = 0 if config.bytecode == "none" else int(sources * pycache.PYC_PER_SOURCE_BYTE)
    unzipped = sum(size for _, size in files)
    if unzipped - stripping.estimate(plans) + headroom > limits.MAX_UNZIPPED_BYTES:
        return 0
    return max(0, pycs - _room(files, headroom))


def _strip(
    installed: Installed, need: int | None, cache: BuildCache, progress: Progress
) -> stripping.Outcome:
    if need == 0:
        return stripping.Outcome(installed.plans)
    progress("Stripping symbol tables from shared objects" + (" to make room" if need else ""))
    outcome = stripping.strip(installed.plans, need, cache, threads=int(bytecode.usable_cpus()))
    installed.plans = outcome.plans
    return outcome


def _runtime_stamp() -> list[tuple[str, int]]:
    """The copies of boto3 & co. a local check puts behind the layer, by path and change time."""
    stamps = []
    for path in runner.runtime_provided_paths():
        try:
            stamps.append((str(path), path.stat().st_mtime_ns))
        except OSError:
            stamps.append((str(path), 0))
    return stamps


def _memo_inputs(
    request: BuildRequest,
    target: Target,
    locked: lock.LockedProject,
    config: project.ProjectConfig,
    direct: list[str],
    name: str,
    warnings: list[str],
    sandbox: Sandbox,
    python: str | None,
) -> dict:
    """Everything besides the own code and the engine that decides the zip and its report."""
    return {
        "target": [target.runtime, target.arch, target.platform],
        "lock": [dataclasses.astuple(r) for r in locked.requirements],
        "lock_meta": [
            locked.lock_sha256,
            locked.python_version,
            locked.skipped,
            locked.local_paths,
        ],
        # Not the source's name or path: the config and layer name derived from it are here.
        "direct": direct,
        "config": dataclasses.asdict(config),
        "name": name,
        "prefix": request.layer_prefix,
        "allow_sdist": sorted(request.allow_sdist),
        "index": repr(request.index),
        "cache_scope": request.cache_scope,
        "warnings": warnings,
        "python": python,
        "limits": {k: v for k, v in vars(limits).items() if k.isupper()},
        "sandbox": [type(sandbox).__module__, type(sandbox).__qualname__, sandbox.native(target)],
    }


def _slimmed(plans: list[tuple[Plan, Path]]) -> list[dict]:
    totals: dict[str, list[int]] = {}
    for plan, _ in plans:
        for rule, (count, size) in plan.skipped.items():
            entry = totals.setdefault(rule, [0, 0])
            entry[0] += count
            entry[1] += size
    return [
        {"rule": rule, "files": count, "bytes": size}
        for rule, (count, size) in sorted(totals.items())
    ]
