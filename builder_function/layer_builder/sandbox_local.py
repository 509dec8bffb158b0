"""`LocalSandbox`: the `Sandbox` the CLI and the tests use, on this machine.

Each call runs the upload's code in subprocesses with an allow-listed environment (PATH, locale,
CA bundle, proxies: never credentials or index tokens), a private 0700 temp dir and HOME, under
runner.run_bounded's reaper so no process outlives the call. That keeps honest mistakes and
stray daemons out of the caller's way, but it is not a security boundary: the code runs as the
CLI's user, with the user's files and network. Do not build projects you do not trust with the
CLI; the builder service runs the same runner in a check function with no rights instead.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import stat
import tempfile
import time
import zipfile
from collections.abc import Mapping
from pathlib import Path

from . import bytecode, cgroups, limits, runner
from .errors import (
    ConfigurationError,
    LayerTooLargeError,
    SourceBuildError,
    UnsafeArchiveError,
)
from .extract import LayerZipError, LayerZipTooLarge, extract_entries, extract_layer
from .install import PASSTHROUGH_ENV
from .sandbox import Candidate, CheckSpec, Layer, Verdict
from .target import Target
from .zipwriter import entry_size

#: Also kept for finding interpreters (find_interpreter looks in pyenv); never passed to a run.
_DISCOVERY_ENV = ("PYENV_ROOT", "HOME")
#: A RAM-backed tmpfs, where one is mounted (Linux; never in Lambda, which mounts no /dev/shm).
#: A check unzips its whole candidate: the heavy bench fixture's 250 MB took 0.46 s there against
#: 0.9-1.1 s in /tmp on ext4, most of the difference the file system's system time.
RAM_DIR = Path("/dev/shm")
#: Used only with twice the candidate's size free there and in available memory, plus this.
RAM_MARGIN = 256 * 1024 * 1024


#: A check's work dir: `layer-check-<pid>-…`, so a later check can tell it was left behind.
CHECK_PREFIX = "layer-check-"
#: Older than the longest check (runner.IMPORT_CHECK_TIMEOUT) with room to spare.
STALE_CHECK_S = 3600


def _extract(layer: Layer, dest: Path) -> None:
    """Unpack the builder's own candidate (its names, sizes and CRCs are checked all the same)."""
    try:
        if isinstance(layer, Candidate):  # the builder's own entries: no zip in between
            extract_entries(layer.entries, dest)
        else:
            extract_layer(layer, dest)
    except LayerZipTooLarge as exc:
        raise LayerTooLargeError(
            f"For the import check, {exc} (the layer and the bytecode already cached for its "
            "wheels): slim or split the dependencies."
        ) from None
    except LayerZipError as exc:
        if isinstance(layer, Candidate):  # read straight from the wheels: one is not as listed
            raise UnsafeArchiveError(
                f"A wheel of the layer does not hold what its listing says ({exc}): it is "
                "damaged or built to mislead. Pin another version and run `pipenv lock`."
            ) from None
        raise ConfigurationError(f"{layer.name}: {exc}.") from None


def _unzipped_size(layer: Layer) -> int:
    if isinstance(layer, Candidate):
        return sum(entry_size(e) for e in layer.entries)
    try:
        with zipfile.ZipFile(layer) as zf:
            return sum(info.file_size for info in zf.infolist())
    except (OSError, zipfile.BadZipFile):
        return 0  # extract_layer says what is wrong with it


def ram_dir_for(size: int) -> Path | None:
    """RAM_DIR when it can take `size` bytes of files to run (writable, executable, with room
    in it and in available memory); else None (the temp dir)."""
    if size <= 0:
        return None
    try:
        fs = os.statvfs(RAM_DIR)
    except OSError:
        return None
    need = 2 * size + RAM_MARGIN
    if (
        fs.f_flag & (os.ST_NOEXEC | os.ST_RDONLY)  # shared objects must load from it
        or not os.access(RAM_DIR, os.W_OK | os.X_OK)
        or fs.f_bavail * fs.f_frsize < need
        or _available_memory() < need  # tmpfs pages are memory: never push the build to swap
    ):
        return None
    return RAM_DIR


def _available_memory(proc: Path = cgroups.PROC, root: Path = cgroups.ROOT) -> int:
    """MemAvailable, or less where this process's memory cgroup (v2, or v1's controller) or
    one above it has a limit: tmpfs pages count against it, and a CI job or container could be
    killed for them."""
    available = 0
    try:
        with open(proc / "meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return available
    for group, v2 in cgroups.groups("memory", proc, root):
        limit_file, usage_file = (
            ("memory.max", "memory.current")
            if v2
            else ("memory.limit_in_bytes", "memory.usage_in_bytes")
        )
        try:
            limit = (group / limit_file).read_text().strip()
            if limit != "max":
                available = min(available, int(limit) - int((group / usage_file).read_text()))
        except (OSError, ValueError):
            pass
    return available


def _sweep(folder: Path, now: float | None = None) -> None:
    """Remove this user's check dirs whose process is gone (killed before it could), once they
    are older than any check (a pid of another pid namespace sharing the folder looks gone)."""
    now = time.time() if now is None else now
    for leftover in folder.glob(f"{CHECK_PREFIX}*-*"):
        pid = leftover.name[len(CHECK_PREFIX) :].split("-", 1)[0]
        try:
            info = leftover.lstat()
            if (
                not re.fullmatch(r"[0-9]{1,7}", pid)
                or not stat.S_ISDIR(info.st_mode)  # never a link planted to point elsewhere
                or info.st_uid != os.getuid()
                or now - info.st_mtime < STALE_CHECK_S
            ):
                continue
            os.kill(int(pid), 0)
            continue  # alive
        except ProcessLookupError:
            pass
        except OSError:  # alive but another user's, or removed meanwhile
            continue
        with contextlib.suppress(OSError):  # another CLI may be removing it too
            _remove(leftover)


def _remove(tree: Path) -> None:
    """`tree` is a real directory (ours, or checked by _sweep); os.walk enters no link below it."""
    for dirpath, _, _ in os.walk(tree):  # top-down: each dir is writable before it is entered
        with contextlib.suppress(OSError):
            os.chmod(dirpath, stat.S_IRWXU)
    shutil.rmtree(tree, ignore_errors=True)


class LocalSandbox:
    """Runs checks, sdist builds and compiles as subprocesses of this process."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        source = os.environ if environ is None else environ
        self.environ = {k: source[k] for k in (*PASSTHROUGH_ENV, *_DISCOVERY_ENV) if k in source}
        #: A TMPDIR the user chose is where scratch files go, even when RAM would be faster.
        self.tmpdir_chosen = bool(source.get("TMPDIR"))

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

    def _workdir(self, prefix: str, unzipped: int = 0) -> Path:
        """A 0700 directory (other users cannot look in): in RAM when `unzipped` bytes fit,
        where what a killed check left (RAM until reboot) is swept first."""
        where = None if self.tmpdir_chosen else ram_dir_for(unzipped)
        if where is not None:
            _sweep(where)
        return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=where))

    def check(
        self, layer: Layer, spec: CheckSpec, target: Target, timeout: float | None
    ) -> Verdict:
        python = self._python(target)
        work = self._workdir(CHECK_PREFIX, _unzipped_size(layer))
        try:
            _extract(layer, work / "layer")
            python_dir = work / "layer" / limits.LAYER_PYTHON_DIR
            python_dir.mkdir(parents=True, exist_ok=True)
            runner.read_only(work / "layer")
            verdict = runner.run_check(
                python_dir, spec, python, timeout=timeout, environ=self.environ
            )
        finally:
            _remove(work)
        ran_on = f"{verdict.ran_on}, local subprocess".lstrip(", ")
        return dataclasses.replace(verdict, ran_on=ran_on)

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
        """compileall-like, running no code of the upload: straight from the zip of sources."""
        python = self._python(target)
        try:
            with zipfile.ZipFile(sources) as zf:
                files = sorted(n for n in zf.namelist() if n.endswith(".py"))
        except (OSError, zipfile.BadZipFile) as exc:
            raise ConfigurationError(f"{sources.name}: {exc}.") from None
        return bytecode.compile_sources(python, sources, files, timeout=timeout).pycs
