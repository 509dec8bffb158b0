"""What runs inside a sandbox: the import check of an extracted layer, and sdist builds.

Both run code from the upload (its own import-time code, the third-party code it pins, build
backends), so both go through `run_bounded`: a private empty working directory, an
allow-listed environment with no credentials, a private HOME/TMPDIR, and a supervisor process
(reaper.py) that kills every process of the run when it ends, however it was started.

The caller decides where this happens: `LocalSandbox` (the CLI and the tests) runs it as
subprocesses of the CLI; the check function (a Lambda function with no rights) calls the same
functions. Nothing here reads the process environment or keeps state: callers pass `environ`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import cgroups, import_probe, limits, reaper
from .errors import (
    ConfigurationError,
    ContainmentError,
    InputError,
    OutOfTimeError,
    SourceBuildError,
)
from .sandbox import CheckSpec, Dependency, ImportRecord, SandboxError, Verdict

#: CPUs it takes to compile bytecode beside the import check (pyc_warmer.py): on fewer, the
#: compiling child would take its time from the importer.
WARM_CPUS = 2
#: Longer than this at import is the project's fault (Lambda's init phase allows 10 s), not time.
IMPORT_CHECK_TIMEOUT = 120.0
#: After SIGTERM, how long the reaper gets to kill the run and report before it is killed too.
STOP_GRACE = 5.0
#: What the Lambda Python runtime provides itself; the check may use the caller's copies.
RUNTIME_PROVIDED = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six")
#: The environment Lambda gives every function, minus credentials and the Runtime API address
#: ("Defined runtime environment variables",
#: https://docs.aws.amazon.com/lambda/latest/dg/configuration-envvars.html#configuration-envvars-runtime).
#: In the check function the real values are passed in `environ`; elsewhere these stand in.
#: AWS_EXECUTION_ENV (AWS_Lambda_python3.13) is set by import_probe from the interpreter itself.
LAMBDA_ENVIRONMENT = {
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_LAMBDA_FUNCTION_NAME": "layer-import-check",
    "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
    "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
    "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/layer-import-check",
    "AWS_LAMBDA_LOG_STREAM_NAME": "import-check",
    "LAMBDA_RUNTIME_DIR": "/var/runtime",
    "LANG": "en_US.UTF-8",
    "TZ": ":UTC",
}
#: Modules the standard library dropped, and the version that dropped them (PEP 594, PEP 632,
#: "What's New" 3.10-3.13). A lock made for an older Python pins packages that still import them.
REMOVED_FROM_STDLIB = {
    **dict.fromkeys(("formatter", "parser", "symbol"), "3.10"),
    "binhex": "3.11",
    **dict.fromkeys(("distutils", "imp", "asynchat", "asyncore", "smtpd"), "3.12"),
    **dict.fromkeys(
        (
            "aifc",
            "audioop",
            "cgi",
            "cgitb",
            "chunk",
            "crypt",
            "imghdr",
            "mailcap",
            "msilib",
            "nis",
            "nntplib",
            "ossaudiodev",
            "pipes",
            "sndhdr",
            "spwd",
            "sunau",
            "telnetlib",
            "uu",
            "xdrlib",
            "lib2to3",
        ),
        "3.13",
    ),
}
_COMPILER_ERROR = re.compile(r"^.*?\S+:\d+(?::\d+)?: (?:fatal )?error: .+$", re.MULTILINE)


def out_of_time(step: str) -> OutOfTimeError:
    return OutOfTimeError(
        f"{step} did not finish in the time left: the build stopped before "
        "publishing anything. Retry, or give the builder a longer timeout."
    )


# --- running untrusted code -------------------------------------------------------------------


def _stop(proc: subprocess.Popen) -> None:
    """Ask the reaper to kill the run and exit; kill its group if it does not in STOP_GRACE."""
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=STOP_GRACE)
    except subprocess.TimeoutExpired:
        pass
    except ProcessLookupError:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run_bounded(
    cmd: Sequence[str],
    *,
    env: Mapping[str, str],
    timeout: float | None,
    input: str | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """subprocess.run under a reaper: no process of the run outlives it.

    Whatever the command starts (compileall's workers, a daemon forked by imported code, a
    setsid() grandchild) is killed when the command exits, on timeout and on Ctrl-C. Raises
    subprocess.TimeoutExpired (with the output so far), and ContainmentError when something the
    command started killed the reaper itself.
    """
    # Absolute: the run may start in another working directory.
    program = os.path.abspath(shutil.which(cmd[0], path=env.get("PATH")) or cmd[0])
    status_read, status_write = os.pipe()
    try:
        # A session of its own: the terminal's Ctrl-C reaches us, and we stop the run in order.
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", reaper.__file__, str(status_write), program, *cmd[1:]],
            env=dict(env),
            cwd=cwd,
            text=True,
            start_new_session=True,
            pass_fds=(status_write,),
            stdin=subprocess.DEVNULL if input is None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    except BaseException:
        os.close(status_read)
        raise
    finally:
        os.close(status_write)
    with proc, os.fdopen(status_read, "rb") as status_file:
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except BaseException as exc:
            _stop(proc)
            try:
                out, err = proc.communicate(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:  # something outside the run holds the pipes
                out, err = "", ""
            if isinstance(exc, subprocess.TimeoutExpired):
                raise subprocess.TimeoutExpired(cmd, exc.timeout, output=out, stderr=err) from None
            raise
        status = status_file.read().decode(errors="replace").split()
    if len(status) != 2 or not status[1].isdigit():
        _stop(proc)
        raise ContainmentError(
            f"A process started by `{Path(cmd[0]).name}` killed the supervisor of its run, so "
            "processes it started may have escaped: the build is refused. Do not kill or signal "
            "other processes at import time or in a build backend."
        )
    code = int(status[1])
    return subprocess.CompletedProcess(
        list(cmd), -code if status[0] == "signal" else code, out, err
    )


def allowed_environment(environ: Mapping[str, str], home: Path) -> dict[str, str]:
    """PATH, locale, CA bundle and proxies from `environ`; a private HOME and TMPDIR."""
    from .install import PASSTHROUGH_ENV  # lazily: install imports check, which imports us

    env = {k: environ[k] for k in PASSTHROUGH_ENV if k in environ}
    env.setdefault("PATH", "/usr/bin:/bin")
    env.update(HOME=str(home), TMPDIR=str(home))
    return env


# --- the import check ---------------------------------------------------------------------------


def read_only(tree: Path) -> None:
    """Files 0444, directories 0555, as /opt is in Lambda: code that writes next to itself at
    import fails in the check as it would in the function (except for root, which may write
    anyway: the check function does not run as root)."""
    for dirpath, _, filenames in os.walk(tree):
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), 0o444)
        os.chmod(dirpath, 0o555)


def runtime_provided_paths() -> list[Path]:
    """The caller's own copies of what the Lambda runtime provides: package dirs and modules."""
    paths = []
    for name in RUNTIME_PROVIDED:
        spec = importlib.util.find_spec(name)
        if spec and spec.origin:
            origin = Path(spec.origin)
            # By file name: six.py sets __path__ = [] and so looks like a package once imported.
            paths.append(origin.parent if origin.stem == "__init__" else origin)
    return paths


def runtime_shim(dest: Path, packages: Sequence[Path] | None = None) -> Path:
    """A directory holding links to the runtime-provided packages only.

    Their parent is the caller's whole site-packages: putting that on the path would let an
    import the layer cannot satisfy succeed here.
    """
    dest.mkdir()
    for path in runtime_provided_paths() if packages is None else packages:
        (dest / path.name).symlink_to(path, target_is_directory=path.is_dir())
    return dest


def lambda_environment(
    environ: Mapping[str, str], *, task_root: Path, home: Path
) -> dict[str, str]:
    """What the function's code sees in Lambda (no credentials), with a private HOME/TMPDIR."""
    env = allowed_environment(environ, home)
    env.update({k: environ.get(k, default) for k, default in LAMBDA_ENVIRONMENT.items()})
    env["LAMBDA_TASK_ROOT"] = str(task_root)  # the function's own code: not part of the check
    return env


@dataclass(frozen=True)
class _Import:
    module: str
    #: The direct dependency that installs it; None for the project's own code.
    dependency: Dependency | None = None
    #: From [tool.layer-builder] startup: only ranks bytecode, a failure is a warning.
    extra: bool = False


def _plan(spec: CheckSpec) -> list[_Import]:
    """Dependencies first: when one fails, the own code that imports it is not blamed too."""
    plan: dict[str, _Import] = {}
    for dep in spec.dependencies:
        for module in dep.modules:
            plan.setdefault(module, _Import(module, dep))
    for module in spec.own:
        plan.setdefault(module, _Import(module))
    for module in spec.startup:
        plan.setdefault(module, _Import(module, extra=True))
    return list(plan.values())


def _events(stdout: str) -> list[dict[str, Any]]:
    """The probe's JSON lines; anything else (or malformed) is ignored, never trusted."""
    events = []
    for line in stdout.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


def _in_progress(events: list[dict[str, Any]]) -> str | None:
    begun = [e["begin"] for e in events if isinstance(e.get("begin"), str)]
    finished = {e.get("module") for e in events if "ok" in e}
    return begun[-1] if begun and begun[-1] not in finished else None


def _how_it_ended(done: subprocess.CompletedProcess[str]) -> str:
    tail = [line for line in done.stderr.strip().splitlines() if line.strip()][-3:]
    how = (
        f"killed by signal {signal.Signals(-done.returncode).name}"
        if done.returncode < 0
        else f"exit {done.returncode}"
    )
    return f"the interpreter ended ({how})" + (f": {' / '.join(tail)}" if tail else "")


def run_check(
    python_dir: Path,
    spec: CheckSpec,
    python: str,
    *,
    timeout: float | None,
    environ: Mapping[str, str] | None = None,
    runtime_packages: Sequence[Path] | None = None,
    cpus: float | None = None,
) -> Verdict:
    """Import the project's own modules and each direct dependency's from an extracted layer.

    `python_dir` is the layer's python/ dir, `python` the target's interpreter, `timeout` the
    build's time left (None: no deadline): running out of it is OutOfTimeError (transient); an
    import check slower than IMPORT_CHECK_TIMEOUT with time to spare is InputError. `environ`
    gives PATH, locale, CA bundle, proxies and, in the check function, the real Lambda
    variables (nothing else is passed on); `runtime_packages` the copies of boto3 & co. to put
    behind the layer (default: the caller's own); `cpus` the processor time this process may
    use, in CPUs (default: the CPUs it may run on), which decides whether bytecode is compiled
    beside the imports.
    """
    plan = _plan(spec)
    if not plan:
        return Verdict(ok=True)
    limit = IMPORT_CHECK_TIMEOUT if timeout is None else min(timeout, IMPORT_CHECK_TIMEOUT)
    with tempfile.TemporaryDirectory(prefix="import-check-") as tmp:  # 0700
        work = Path(tmp)
        task_root, home = work / "task", work / "home"
        task_root.mkdir()
        home.mkdir()
        probe = _Probe(
            python=python,
            layer=Path(python_dir).resolve(),
            cwd=task_root,
            env=lambda_environment(
                {} if environ is None else environ, task_root=task_root, home=home
            ),
            extra_path=[str(runtime_shim(work / "runtime", runtime_packages))],
            deadline=time.monotonic() + limit,
            warm=str(work / "pyc")
            if (usable_cpus() if cpus is None else cpus) >= WARM_CPUS
            else None,
        )
        packages = list(dict.fromkeys(m for d in spec.dependencies for m in d.modules))
        try:
            # "3.13.1" is 3.13; "3" names no minor version, so it is no reason to skip anything.
            lock_minor = ".".join((spec.lock_python or "").split(".")[:2]) or None
            probe.run([item.module for item in plan], packages, lock_minor)
        except subprocess.TimeoutExpired as exc:
            slow = _in_progress(_events(exc.output or "")) or "the project"
            if timeout is not None and timeout <= IMPORT_CHECK_TIMEOUT:
                raise out_of_time(f"The import check of {slow}") from None
            if all(item.module in probe.results for item in plan):
                # Only the optional pass over the dependencies' submodules was cut short.
                probe.notes.append(
                    f"The import check stopped at {slow} after {limit:.0f} s; "
                    "the remaining submodules of the dependencies were not tried."
                )
            else:
                raise InputError(
                    f"Importing {slow} took over {limit:.0f} s: import-time work in "
                    "the project and its dependencies must be light."
                ) from None
    version = probe.interpreter["python"] or Path(python).name.removeprefix("python")
    refusals, warnings = classify(
        plan, probe.results, spec, version, probe.interpreter["machine"], probe.submodules
    )
    return Verdict(
        ok=not refusals,
        message="\n".join(refusals),
        warnings=tuple(warnings + probe.notes),
        startup=tuple(sorted(probe.startup)),
        ran_on=f"python{version} {probe.interpreter['machine']}".strip(),
        imports=tuple(_record(item.module, probe.results.get(item.module, {})) for item in plan),
    )


def lambda_cpus(environ: Mapping[str, str]) -> float | None:
    """A Lambda function's processor time, in CPUs, from its memory size (None: not known).
    Two vCPUs show at any size, but below 2 x MB_PER_VCPU their time is shared."""
    try:
        return int(environ["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"]) / limits.MB_PER_VCPU
    except (KeyError, ValueError):
        return None


def usable_cpus(proc: Path = cgroups.PROC, root: Path = cgroups.ROOT) -> float:
    """The CPUs this process may run on, or fewer where its cgroup (or one above it) has a CPU
    quota (a CI container on a big host: v2's cpu.max, v1's cfs quota)."""
    try:
        cpus: float = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    for group, v2 in cgroups.groups("cpu", proc, root):
        quota = _cpu_max(group) if v2 else _cfs_quota(group)
        if quota is not None:
            cpus = min(cpus, quota)
    return cpus


def _cpu_max(group: Path) -> float | None:
    try:
        quota, period = (group / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        return None


def _cfs_quota(group: Path) -> float | None:
    try:
        quota = int((group / "cpu.cfs_quota_us").read_text())
        return None if quota < 0 else quota / int((group / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None


def _record(module: str, event: Mapping[str, Any]) -> ImportRecord:
    """What one import depended on, from the probe's event (not ok when anything is off)."""
    fields = {}
    for key in ("touched", "listed", "absent", "after", "loaded"):
        value = event.get(key)
        fields[key] = (
            tuple(v for v in value if isinstance(v, str)) if isinstance(value, list) else ()
        )
    complete = all(isinstance(event.get(k), list) for k in ("touched", "listed", "absent", "after"))
    return ImportRecord(module=module, ok=event.get("ok") is True and complete, **fields)


@dataclass
class _Probe:
    """import_probe.py runs: again after a crash, without the module that ended the interpreter."""

    python: str
    layer: Path
    cwd: Path
    env: dict[str, str]
    extra_path: list[str]
    deadline: float
    #: Where pyc_warmer.py puts the bytecode it compiles beside the imports; None: no warmer.
    warm: str | None = None
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Results of the dependencies' submodules (which never rank bytecode).
    submodules: list[dict[str, Any]] = field(default_factory=list)
    startup: set[str] = field(default_factory=set)
    interpreter: dict[str, str] = field(default_factory=lambda: {"python": "", "machine": ""})
    notes: list[str] = field(default_factory=list)

    def run(self, modules: list[str], packages: list[str], lock_python: str | None) -> None:
        while True:
            task = {
                "layer": str(self.layer),
                "extra_path": self.extra_path,
                "modules": modules,
                "submodules_of": packages,
                "lock_python": lock_python,
                "warm": self.warm,
            }
            try:
                done = run_bounded(
                    [self.python, "-I", "-S", "-B", import_probe.__file__],
                    env=self.env,
                    input=json.dumps(task),
                    cwd=self.cwd,
                    timeout=max(self.deadline - time.monotonic(), 0.001),
                )
            except subprocess.TimeoutExpired as exc:
                self._record(_events(exc.output or ""))
                raise
            events = _events(done.stdout)
            self._record(events)
            if any(e.get("done") is True for e in events):
                return
            crashed = _in_progress(events)
            if crashed is None:
                raise SandboxError(
                    f"The import check could not run {self.python}: {_how_it_ended(done)}."
                )
            if crashed not in modules:  # in the submodule pass: record it, try no more of them
                self.notes.append(
                    f"Importing {crashed} (a submodule of a dependency) ended the "
                    f"interpreter: {_how_it_ended(done)}."
                )
                return
            # The module in progress ended the interpreter: record it, go on with the rest.
            self.results[crashed] = {
                "module": crashed,
                "ok": False,
                "error": {"kind": "crash", "last_line": _how_it_ended(done)},
            }
            modules = modules[modules.index(crashed) + 1 :]

    def _record(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            if isinstance(event.get("module"), str) and isinstance(event.get("ok"), bool):
                if isinstance(event.get("of"), str):
                    self.submodules.append(event)
                    continue
                self.results[event["module"]] = event
                loaded = event.get("loaded")
                self.startup.update(
                    p for p in (loaded if isinstance(loaded, list) else ()) if isinstance(p, str)
                )
            elif isinstance(event.get("python"), str) and isinstance(event.get("machine"), str):
                self.interpreter = {k: event[k] for k in self.interpreter}


# --- what a failed import means ----------------------------------------------------------------


def _relock_hint(lock_python: str | None, version: str) -> str | None:
    """lock.relock_hint's sentence when the lock names another Python than the target's."""
    from .lock import relock_hint  # lazily: the check function needs it only to explain a failure
    from .target import Target

    try:
        return relock_hint(lock_python, Target(f"python{version}"))
    except InputError:  # a Python no Lambda runtime has: nothing to compare with
        return None


def _removed_note(missing: str | None, version: str) -> str:
    top = (missing or "").split(".")[0]
    removed = REMOVED_FROM_STDLIB.get(top)
    if removed and _version(version) >= _version(removed):
        return f" (`{top}` was removed from the standard library in Python {removed})"
    return ""


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", text)[:2])


def _top(name: str | None) -> str:
    return (name or "").replace("\\", "/").split("/")[0].split(".")[0]


def _where(error: dict[str, Any]) -> str:
    file, line = error.get("file"), error.get("line")
    if not isinstance(file, str):
        return ""
    return f" ({file}:{line})" if isinstance(line, int) else f" ({file})"


def _dependency_refusal(
    dep: Dependency,
    error: dict[str, Any],
    spec: CheckSpec,
    version: str,
    machine: str,
    submodule: str = "",
) -> str:
    kind, missing = error.get("kind"), error.get("missing")
    head = (
        f"{dep.name} {dep.version} (in the Pipfile's [packages]) does not import under Python "
        f"{version}: {submodule + ': ' if submodule else ''}{error.get('last_line', '')}"
        f"{_removed_note(missing, version)}{_where(error)}."
    )
    hint = _relock_hint(spec.lock_python, version)
    if hint:
        return f"{head} That is the likely cause: {hint}"
    if kind == "shared_object":
        return (
            f"{head} A binary it ships does not load on {machine or 'the target'}: it was built "
            f"for another machine or a newer glibc. Pin a version of {dep.name} that ships a "
            "manylinux wheel for the target, then run `pipenv lock`."
        )
    if kind == "missing" and not _removed_note(missing, version):
        return (
            f"{head} A package it needs is missing from the lock: run `pipenv lock` so it is "
            "locked too, and upload the new Pipfile.lock."
        )
    return (
        f"{head} Pin a version of {dep.name} that supports Python {version} in the Pipfile, "
        "then run `pipenv lock`."
    )


def _own_outcome(
    item: _Import,
    error: dict[str, Any],
    spec: CheckSpec,
    version: str,
    machine: str,
    owners: Mapping[str, str],
) -> tuple[str | None, str | None]:
    """(refusal, warning) for one of the project's own modules that did not import."""
    kind, missing, last = error.get("kind"), error.get("missing"), error.get("last_line", "")
    own = {_top(m) for m in spec.own}
    where = _where(error)
    if kind == "missing" and _top(missing) not in own:
        removed = _removed_note(missing, version)
        fix = (
            "stop using it, or add a package that provides it to the Pipfile's [packages] and "
            "run `pipenv lock`"
            if removed
            else "add the package that provides it to the Pipfile's [packages] and run `pipenv lock`"
        )
        return (
            f"{item.module} imports `{missing}`, which the layer does not provide{removed}"
            f"{where}: {fix}."
        ), None
    if kind == "missing_name" and _top(missing) not in own:
        package = owners.get(_top(missing), _top(missing))
        return (
            f"{item.module} needs a name that the layer's {missing} does not have: {last}"
            f"{where}. Pin the version of {package} the code was written for in the Pipfile, "
            "then run `pipenv lock`."
        ), None
    if kind == "shared_object":
        package = owners.get(_top(error.get("file")), _top(error.get("file")) or item.module)
        return (
            f"Importing {item.module} loads a binary that does not load on "
            f"{machine or 'the target'}: {last}{where}. It was built for another machine or a "
            f"newer glibc: pin a version of {package} that ships a manylinux wheel for the "
            "target, then run `pipenv lock`."
        ), None
    if kind == "syntax":
        package = _top(error.get("file"))
        if package in own or not package:
            return (
                f"{item.module} is not valid Python {version}: {last}{where}. Fix the syntax, "
                "or build for the runtime it was written for."
            ), None
        return (
            f"{item.module} imports {owners.get(package, package)}, which is not valid Python "
            f"{version}: {last}{where}. Pin a version that supports Python {version}, then run "
            "`pipenv lock`."
        ), None
    if kind == "crash":
        return f"Importing {item.module}: {last}. Fix its import-time code.", None
    return None, (
        f"{item.module}: importing it raised {last}{where}. In Lambda this runs at every "
        "cold start: make sure the function's configuration provides what it needs."
    )


def classify(
    plan: Sequence[_Import],
    results: Mapping[str, dict[str, Any]],
    spec: CheckSpec,
    version: str,
    machine: str,
    submodules: Sequence[dict[str, Any]] = (),
) -> tuple[list[str], list[str]]:
    """Refusals (missing modules, binaries that do not load, syntax errors, direct dependencies
    that do not import) and warnings (anything else the project's own import-time code raised).

    Of the dependencies' submodules, only what says the package was made for an older Python
    refuses (a module the standard library dropped); a submodule that fails otherwise usually
    needs an optional extra nobody installed, and is not the layer's fault.
    """
    refusals: list[str] = []
    warnings: list[str] = []
    owners = {module: dep.name for dep in spec.dependencies for module in dep.modules}
    failed_deps: set[str] = set()
    broken: set[str] = set()  # top-level names of dependencies that did not import
    for item in plan:
        result = results.get(item.module)
        if result is None or result.get("ok") is not False:
            continue
        error: dict[str, Any] = result["error"] if isinstance(result.get("error"), dict) else {}
        if item.dependency is not None:
            broken.update(_top(m) for m in item.dependency.modules)
            if item.dependency.name not in failed_deps:
                failed_deps.add(item.dependency.name)
                refusals.append(_dependency_refusal(item.dependency, error, spec, version, machine))
            continue
        if _top(error.get("frame")) in broken:
            continue  # own code importing a dependency that failed: already refused above
        if item.extra:
            warnings.append(
                f"{item.module} (from [tool.layer-builder] startup) does not import: "
                f"{error.get('last_line', '')}{_where(error)}."
            )
            continue
        refusal, warning = _own_outcome(item, error, spec, version, machine, owners)
        refusals += [refusal] if refusal else []
        warnings += [warning] if warning else []
    by_module = {module: dep for dep in spec.dependencies for module in dep.modules}
    for result in submodules:
        dep = by_module.get(str(result.get("of")))
        error = result["error"] if isinstance(result.get("error"), dict) else {}
        if dep is None or result.get("ok") is not False or dep.name in failed_deps:
            continue
        if error.get("kind") == "missing" and _removed_note(error.get("missing"), version):
            failed_deps.add(dep.name)
            refusals.append(
                _dependency_refusal(
                    dep, error, spec, version, machine, submodule=str(result["module"])
                )
            )
        elif error.get("kind") == "syntax":
            warnings.append(
                f"{dep.name} {dep.version}: {result['module']} is not valid Python "
                f"{version}: {error.get('last_line', '')}{_where(error)}. If your code "
                f"imports it, pin a version that supports Python {version}."
            )
    return refusals, warnings


# --- operator-allowed source builds -----------------------------------------------------------


def first_compiler_error(log: str) -> str:
    """The first `file:line:col: error: ...` line of a build log, else its last line."""
    found = _COMPILER_ERROR.search(log)
    if found:
        return found.group(0).strip().lstrip("│|> ").strip()
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or ["no output"])[0 if errors else -1]


def _sdist_name(sdist: Path) -> str:
    from packaging.utils import InvalidSdistFilename, parse_sdist_filename

    try:
        name, version = parse_sdist_filename(sdist.name)
        return f"{name} {version}"
    except InvalidSdistFilename:
        return sdist.name


def build_sdist_wheel(
    sdist: Path,
    python: str,
    dest: Path,
    *,
    timeout: float | None,
    environ: Mapping[str, str] | None = None,
    name: str = "",
    version: str = "",
) -> Path:
    """A wheel for this machine from an operator-allowed, hash-verified sdist, built with uv.

    Build isolation, the installer's default index for build requirements and no index token
    (only PATH, locale, CA bundle and proxies pass from `environ`), a private HOME and uv cache,
    and the reaper. A failed build is SourceBuildError (permanent) carrying the whole log.
    `name` and `version` name the package in messages when the file is not named after it (a
    cache stores files by their sha256).
    """
    from .install import find_uv  # lazily: install imports check, which imports us

    uv = find_uv()
    what = f"{name} {version}".strip() or _sdist_name(Path(sdist))
    if uv is None:
        raise ConfigurationError(
            f"Building {what} from source needs uv, which is not installed with this builder."
        )
    with tempfile.TemporaryDirectory(prefix="sdist-build-") as tmp:
        work = Path(tmp)
        home, out = work / "home", work / "out"
        home.mkdir()
        source = Path(shutil.copy(sdist, work / Path(sdist).name))  # the build sees a private copy
        env = allowed_environment({} if environ is None else environ, home)
        # LC_ALL=C: compilers quote in plain ASCII, so the first error reads the same everywhere.
        env.update(
            UV_CACHE_DIR=str(home / "uv-cache"),
            UV_NO_PROGRESS="1",
            UV_PYTHON_DOWNLOADS="never",
            PYTHONDONTWRITEBYTECODE="1",
            LC_ALL="C",
        )
        cmd = [
            uv,
            "build",
            "--wheel",
            "--no-config",
            "--python",
            python,
            "--out-dir",
            str(out),
            str(source),
        ]
        try:
            done = run_bounded(cmd, env=env, timeout=timeout, cwd=work)
        except subprocess.TimeoutExpired:
            raise out_of_time(f"Building {what} from source") from None
        log = f"{done.stdout}\n{done.stderr}".strip()
        wheels = sorted(out.glob("*.whl")) if out.is_dir() else []
        if done.returncode != 0 or len(wheels) != 1:
            raise SourceBuildError(
                f"Building {what} from source failed: {first_compiler_error(log)}. Fix the "
                "package's source (or pin a version that ships a manylinux wheel for the target) "
                "and run `pipenv lock`; the full build log is in the build report (the CLI "
                "prints it with -v).",
                log=log,
            )
        Path(dest).mkdir(parents=True, exist_ok=True)
        return Path(shutil.move(wheels[0], Path(dest) / wheels[0].name))
