"""The build: unpack → lock → install → package → check → report, with a dependency cache.

`build()` is the one entry point the CLI, the builder Lambda and the benchmarks share. It takes
explicit arguments, touches only its work directory, the cache and the output path, and either
produces a complete layer zip and report or raises a named error leaving no output behind.
"""

from __future__ import annotations

import errno
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from . import __version__, bytecode, check, limits, lock, project, slim, unpack
from .cache import DEPS_ZIP, STAGING_PREFIX, TREE, DependencyCache, RemoteCache, cache_key
from .errors import DiskFullError, InputError, OutOfTimeError
from .install import Installer
from .package import MANIFEST_NAME, content_hash, file_sha256, layer_entries, manifest, tree_entries
from .report import BuildReport, Timings, owners_from_dist_info, package_sizes
from .target import Target
from .zipwriter import raw_entries, write_zip

Progress = Callable[[str], None]
#: Top-level entries uv writes into --target that do not belong in a layer (scripts, its lock file).
NOT_IN_LAYER = ("bin", ".lock")
#: uv adds this to the dist-info of wheels from local paths (file:// indexes, find-links); it
#: holds the time uv cached the wheel, which would make every such layer differ.
UV_CACHE_INFO = "uv_cache.json"


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
    use_uv: bool = True


@dataclass(frozen=True)
class BuildResult:
    output: Path
    report: BuildReport


def _remaining(deadline: float | None, phase: str) -> float | None:
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise OutOfTimeError(f"No time left before {phase}: the build stopped before publishing "
                             "anything. Retry, or give the builder a longer timeout.")
    return left


def host_machine() -> str:
    """The machine this build runs on: target code runs (probe, import check) only when equal."""
    return os.uname().machine


def _source_root(request: BuildRequest, work: Path) -> tuple[Path, list[str]]:
    if request.source.is_dir():
        return request.source, []
    if not request.source.is_file():
        raise InputError(f"{request.source} does not exist: give a project directory, .zip or .tar.gz.")
    dest = work / "src"
    dest.mkdir()  # unpack() wants an existing, empty directory
    result = unpack.unpack(request.source, dest)
    return result.root, list(result.warnings)


def _drop_uv_cache_info(tree: Path) -> None:
    """Remove dist-info/uv_cache.json and its RECORD row, so equal wheels give equal layers."""
    for info in tree.glob(f"*.dist-info/{UV_CACHE_INFO}"):
        info.unlink()
        record = info.parent / "RECORD"
        if record.is_file():
            row = f"{info.parent.name}/{UV_CACHE_INFO},"
            lines = record.read_text(encoding="utf-8").splitlines(keepends=True)
            record.write_text("".join(line for line in lines if not line.startswith(row)),
                              encoding="utf-8")


def _dist_infos(tree: Path) -> list[tuple[str, str, str]]:
    found = []
    for dist_info in sorted(tree.glob("*.dist-info")):
        metadata, record = dist_info / "METADATA", dist_info / "RECORD"
        found.append((dist_info.name,
                      metadata.read_text(encoding="utf-8", errors="replace") if metadata.is_file() else "",
                      record.read_text(encoding="utf-8", errors="replace") if record.is_file() else ""))
    return found


def _build_dependencies(request: BuildRequest, locked: lock.LockedProject, config: project.ProjectConfig,
                        python: str | None, staging: Path, timings: Timings,
                        progress: Progress) -> dict:
    """Install, slim, compile and deflate the dependencies into staging/deps.zip."""
    tree = staging / TREE
    installer = Installer(cache_dir=Path(request.cache_dir or staging) / "uv",
                          home=staging / "home", python=python, environ=request.environ,
                          use_uv=request.use_uv)
    with timings.phase("install"):
        progress(f"Installing {len(locked.requirements)} locked packages with {installer.name}")
        installed = installer.install(locked, request.target, tree, allow_sdist=request.allow_sdist,
                                      timeout=_remaining(request.deadline, "install"),
                                      source_python=python)
        shutil.rmtree(staging / "home", ignore_errors=True)
        for name in NOT_IN_LAYER:
            if (tree / name).is_dir():
                shutil.rmtree(tree / name, ignore_errors=True)
            else:
                (tree / name).unlink(missing_ok=True)
        _drop_uv_cache_info(tree)
    removals = []
    if config.slim:
        with timings.phase("slim"):
            removals = slim.slim(tree, request.target.python_version, config.slim_exclude)
    with timings.phase("check_binaries"):
        binaries = check.check_binaries(check.tree_headers(tree), request.target)
    failed: list[str] = []
    coverage: dict = {"choice": "none", "kept": 0, "dropped": 0, "dropped_bytes": 0}
    if python and config.bytecode != "none":
        with timings.phase("bytecode"):
            progress("Compiling bytecode for the target Python")
            failed = bytecode.compile_tree(python, tree,
                                           timeout=_remaining(request.deadline, "compiling bytecode"))
            runnable = request.target.machine == host_machine()
            auto = config.bytecode == "auto"
            budget = limits.MAX_UNZIPPED_BYTES - limits.BYTECODE_BUDGET_RESERVE if auto else sys.maxsize
            limit = limits.MAX_UNZIPPED_BYTES - limits.OWN_CODE_MIN_RESERVE if auto else sys.maxsize

            def probe() -> set[Path] | None:
                if not runnable:
                    return None
                return bytecode.startup_sources(
                    python, tree, timeout=_remaining(request.deadline, "probing start-up imports"))

            coverage = bytecode.fit_budget(tree, budget, limit, probe)
    with timings.phase("compress"):
        _remaining(request.deadline, "compressing")
        written = write_zip(staging / DEPS_ZIP, tree_entries(tree))
    return {
        "installer": installed.installer,
        "warnings": list(installed.warnings),
        "built_from_source": list(installed.built_from_source),
        "slimmed": [{"rule": r.rule, "files": r.files, "bytes": r.bytes} for r in removals],
        "binaries_checked": binaries,
        "bytecode_coverage": coverage,
        "bytecode_failed": [str(Path(f).relative_to(tree)) for f in failed if f.startswith(str(tree))],
        "owners": owners_from_dist_info(_dist_infos(tree)),
        "sha256": {w.name: w.sha256 for w in written},
    }


def build(request: BuildRequest, progress: Progress = lambda message: None) -> BuildResult:
    target = request.target
    timings = Timings()
    work = Path(tempfile.mkdtemp(prefix="layer-build-"))
    partial = request.output.with_name(f".{request.output.name}.partial")
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
        warnings += [*config.warnings, *locked.warnings, *project.code_warnings(root, config, code)]
        python = bytecode.find_interpreter(target, request.environ)
        if python is None:
            warnings.append(f"No {target.runtime} interpreter on this machine: the layer ships without "
                            "bytecode and every cold start compiles its modules.")
        name = project.layer_name(config.name, request.layer_prefix)
        report = BuildReport(
            layer_name=name, layer_version=config.version, description=config.description,
            runtime=target.runtime, arch=target.arch, platform=target.uv_platform,
            builder_version=__version__, lock_hash=locked.lock_sha256,
            packages=[{"name": r.name, "version": r.version} for r in locked.requirements],
            skipped_by_marker=[{"name": n, "markers": m} for n, m in locked.skipped],
        )

        cache = DependencyCache(request.cache_dir, request.remote_cache)
        key = cache_key(locked, target, config, python, request.allow_sdist, host_machine=host_machine())
        deps = cache.lookup(key)
        warnings += cache.rejected
        report.dependency_cache = "off" if request.cache_dir is None else ("hit" if deps else "miss")
        if deps is None:
            staging = (request.cache_dir or work) / f"{STAGING_PREFIX}{os.getpid()}-{key[:12]}-{time.time_ns()}"
            staging.mkdir(parents=True)
            try:
                meta = _build_dependencies(request, locked, config, python, staging, timings, progress)
                deps = cache.store(key, staging, meta)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        else:
            progress("Dependencies unchanged: reusing the cached build")
        meta = deps.meta
        warnings += meta["warnings"]

        with timings.phase("package"):
            own_tree = work / "own"
            own_tree.mkdir()
            own_names = project.copy_code(code, own_tree)
            # python/six.py, python/six/ and python/six.cpython-313-….so all claim the name `six`.
            clash = sorted(set(own_names) & {Path(n).parts[1].split(".")[0] for n in meta["sha256"]})
            if clash:
                raise project.clash_error(clash, own_names)
            failed = []
            if python and config.bytecode != "none":
                failed = bytecode.compile_tree(
                    python, own_tree, timeout=_remaining(request.deadline, "compiling the project's bytecode"))
            failed += meta["bytecode_failed"]
        if failed:
            warnings.append(f"{len(failed)} source files do not compile for {target.runtime} and ship "
                            f"without bytecode, e.g. {failed[0]}.")
        own_entries = tree_entries(own_tree)
        deps_entries = raw_entries(deps.zip_path, meta["sha256"])

        with timings.phase("check"):
            owners = dict(meta["owners"]) | {n: f"{n} (own)" for n in own_names}
            files = [(e.name.split("/", 1)[1], e.file_size) for e in deps_entries]
            files += [(e.name.split("/", 1)[1], e.path.stat().st_size) for e in own_entries]
            sizes = package_sizes(files, owners)
            check.check_size(sum(size for _, size in files), sizes)
            check.check_binaries(check.tree_headers(own_tree), target)
            import_status = "skipped: no target interpreter"
            if python and target.machine == host_machine():
                check.check_imports(python, [own_tree, deps.tree()], own_names,
                                    timeout=_remaining(request.deadline, "the import check"))
                import_status = f"ok: {', '.join(own_names)}" if own_names else "no own packages"
            elif python:
                import_status = f"skipped: cannot run {target.machine} code on {host_machine()}"

        digest = content_hash(deps_entries, own_entries)
        report.content_hash = digest
        report.own_packages = own_names
        report.slimmed = meta["slimmed"]
        report.installer = meta["installer"]
        report.license = config.license
        report.built_from_source = meta["built_from_source"]
        report.bytecode = {"interpreter": f"CPython {target.python_version}" if python else None,
                           "mode": config.bytecode if python else "none",
                           "invalidation": "unchecked-hash", "failed": len(failed),
                           **meta.get("bytecode_coverage", {})}
        report.checks = {"binaries": f"{meta['binaries_checked']} shared objects for {target.machine}",
                         "imports": import_status, "size": "within limit"}
        manifest_path = work / MANIFEST_NAME
        manifest_path.write_text(manifest(report), encoding="utf-8")

        with timings.phase("zip"):
            _remaining(request.deadline, "writing the zip")
            progress("Writing the layer zip")
            request.output.parent.mkdir(parents=True, exist_ok=True)
            written = write_zip(partial, layer_entries(deps_entries, own_entries, manifest_path))
            os.replace(partial, request.output)
        report.files = len(written)
        report.unzipped_bytes = sum(w.file_size for w in written)
        report.zipped_bytes = request.output.stat().st_size
        report.zip_sha256 = file_sha256(request.output)
        report.publish_via_s3 = report.zipped_bytes > limits.MAX_DIRECT_UPLOAD_BYTES
        report.sizes = package_sizes([(w.name.split("/", 1)[1], w.file_size) for w in written], owners)
        report.warnings = list(dict.fromkeys(warnings))
        report.timings = timings.seconds
        return BuildResult(request.output, report)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise DiskFullError(f"The disk filled up during the build ({exc.filename or 'work dir'}): "
                                "give the builder more ephemeral storage.") from None
        raise
    finally:
        partial.unlink(missing_ok=True)
        shutil.rmtree(work, ignore_errors=True)
