"""`LocalSandbox`: the `Sandbox` the CLI and the tests use, on this machine.

Each call runs the upload's code in subprocesses with an allow-listed environment (PATH, locale,
CA bundle, proxies: never credentials or index tokens), a private 0700 temp dir and HOME, under
runner.run_bounded's reaper so no process outlives the call. That keeps honest mistakes and
stray daemons out of the caller's way, but it is not a security boundary: the code runs as the
CLI's user, with the user's files and network. Do not build projects you do not trust with the
CLI; the builder service runs the same runner in a check function with no rights instead.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import threading
import zipfile
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import bytecode, limits, runner
from .errors import ConfigurationError, SourceBuildError
from .install import PASSTHROUGH_ENV
from .sandbox import CheckSpec, Verdict
from .target import Target

#: Also kept for finding interpreters (find_interpreter looks in pyenv); never passed to a run.
_DISCOVERY_ENV = ("PYENV_ROOT", "HOME")


#: Threads inflating the candidate layer: zlib and file writes release the GIL, and unzipping
#: 250 MB was two thirds of a cold check (2.1 of 3.4 s on the heavy bench fixture).
EXTRACT_WORKERS = min(8, (os.cpu_count() or 1) + 2)
#: Members up to this size are inflated in one call; larger ones stream (bounded memory).
WHOLE_MEMBER_BYTES = 4 * 1024 * 1024


def _extract(archive: Path, dest: Path) -> None:
    """Unzip the builder's own zip (names are checked all the same: nothing lands outside),
    members in parallel, each thread with a handle of its own."""
    root = dest.resolve()
    with zipfile.ZipFile(archive) as zf:
        members = zf.infolist()
    files = []
    for member in members:
        target = (root / member.filename).resolve()
        if root not in target.parents and target != root:
            raise ConfigurationError(
                f"{archive.name} holds a path outside its root: {member.filename!r}."
            )
        if member.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            files.append((member, target))
    local = threading.local()

    def one(item: tuple[zipfile.ZipInfo, Path]) -> None:
        member, target = item
        if not hasattr(local, "zf"):
            local.zf = zipfile.ZipFile(archive)
            handles.append(local.zf)
        if member.file_size <= WHOLE_MEMBER_BYTES:
            target.write_bytes(local.zf.read(member))
            return
        with local.zf.open(member) as src, open(target, "wb") as out:
            shutil.copyfileobj(src, out, 1024 * 1024)

    handles: list[zipfile.ZipFile] = []
    files.sort(key=lambda item: -item[0].compress_size)  # the largest first: no long tail
    try:
        with ThreadPoolExecutor(EXTRACT_WORKERS) as pool:
            for _ in pool.map(one, files):
                pass
    finally:
        for handle in handles:
            handle.close()


def _remove(tree: Path) -> None:
    for dirpath, _, _ in os.walk(tree):  # top-down: each dir is writable before it is entered
        os.chmod(dirpath, stat.S_IRWXU)
    shutil.rmtree(tree, ignore_errors=True)


class LocalSandbox:
    """Runs checks, sdist builds and compiles as subprocesses of this process."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        source = os.environ if environ is None else environ
        self.environ = {k: source[k] for k in (*PASSTHROUGH_ENV, *_DISCOVERY_ENV) if k in source}

    def _python(self, target: Target) -> str:
        python = bytecode.find_interpreter(target, self.environ)
        if python is None:
            raise ConfigurationError(
                f"No Python {target.python_version} interpreter on this machine (PATH, pyenv): "
                f"install one (e.g. `pyenv install {target.python_version}`) to check "
                f"{target.runtime} layers."
            )
        return python

    def native(self, target: Target) -> bool:
        return (
            target.machine == os.uname().machine
            and bytecode.find_interpreter(target, self.environ) is not None
        )

    def _workdir(self, prefix: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=prefix))  # 0700: other users cannot look in

    def check(
        self, layer_zip: Path, spec: CheckSpec, target: Target, timeout: float | None
    ) -> Verdict:
        python = self._python(target)
        work = self._workdir("layer-check-")
        try:
            _extract(layer_zip, work / "layer")
            python_dir = work / "layer" / limits.LAYER_PYTHON_DIR
            python_dir.mkdir(parents=True, exist_ok=True)
            runner.read_only(work / "layer")
            verdict = runner.run_check(
                python_dir, spec, python, timeout=timeout, environ=self.environ
            )
        finally:
            _remove(work)
        ran_on = f"{verdict.ran_on}, local subprocess".lstrip(", ")
        return Verdict(
            ok=verdict.ok,
            message=verdict.message,
            warnings=verdict.warnings,
            startup=verdict.startup,
            ran_on=ran_on,
            imports=verdict.imports,
        )

    def build_sdist(
        self,
        sdist: Path,
        name: str,
        version: str,
        target: Target,
        dest: Path,
        timeout: float | None,
    ) -> Path:
        if target.machine != os.uname().machine:
            raise ConfigurationError(
                f"Building {name} {version} from source here makes {os.uname().machine} binaries, "
                f"not {target.machine}: build on {target.machine}."
            )
        wheel = runner.build_sdist_wheel(
            sdist,
            self._python(target),
            dest,
            timeout=timeout,
            environ=self.environ,
            name=name,
            version=version,
        )
        built = wheel.name.split("-")
        if (
            len(built) < 2
            or built[0].lower() != name.replace("-", "_").lower()
            or built[1] != version
        ):
            wheel.unlink(missing_ok=True)
            raise SourceBuildError(
                f"Building {name} {version} from source made {wheel.name}, "
                "another name or version: check the sdist.",
                log="",
            )
        return wheel

    def compile(self, sources: Path, target: Target, timeout: float | None) -> dict[str, bytes]:
        python = self._python(target)
        work = self._workdir("layer-compile-")
        try:
            root = work / "src"
            _extract(sources, root)
            files = sorted(
                p.relative_to(root).as_posix() for p in root.rglob("*.py") if p.is_file()
            )
            return bytecode.compile_sources(python, root, files, timeout=timeout)
        finally:
            _remove(work)
