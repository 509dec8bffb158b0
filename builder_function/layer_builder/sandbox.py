"""Where the upload's code runs: the import check, the start-up probe and operator-allowed
source builds. Never in the process that holds the builder's rights.

The builder (and the CLI) only talk to a `Sandbox`:

- `check()` imports the project's own packages and its direct dependencies from a candidate
  layer under the target's interpreter, and returns a `Verdict`: pass or fail with a message,
  warnings, and the sources loaded at start-up (which bytecode to keep first). Nothing it
  returns becomes part of the layer: the builder assembles and hashes the zip itself.
- `build_sdist()` builds a wheel from an operator-allowed source distribution, without the
  index token.
- `compile()` turns sources into `unchecked-hash` bytecode for the target's Python, running no
  code of the upload (compileall only); used where the builder lacks that interpreter.

Implementations: `LocalSandbox` (the CLI: subprocesses with an allow-listed environment) and
the service's check-function adapter (a separate Lambda function with no rights; see
`check_function/`). A verdict crosses a trust boundary, so `Verdict.from_json` parses it
strictly and caps every field.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .errors import TransientError
from .target import Target
from .zipwriter import Entry, write_zip

#: Caps on what a verdict may carry (it comes from a sandbox that ran hostile code).
MAX_VERDICT_BYTES = 4 * 1024 * 1024
MAX_MESSAGE_CHARS = 4000
MAX_WARNINGS = 50
MAX_STARTUP_PATHS = 100_000


class SandboxError(TransientError):
    """The sandbox could not be reached or answered nonsense: retry (never a pass)."""

    kind = "sandbox_error"


@dataclass(frozen=True)
class Dependency:
    """A direct dependency (the Pipfile's [packages]) and the top-level modules it installs."""

    name: str
    version: str
    modules: tuple[str, ...]


@dataclass(frozen=True)
class CheckSpec:
    """What the check imports, and what it needs to explain a failure."""

    #: The project's own top-level packages and modules.
    own: tuple[str, ...]
    #: Direct dependencies, imported too: consumers import them, and a lock made for another
    #: Python can pin versions that no longer import (botocore 1.24 on 3.13: no `cgi`).
    dependencies: tuple[Dependency, ...] = ()
    #: Extra module names from `[tool.layer-builder] startup`.
    startup: tuple[str, ...] = ()
    #: The lock's `_meta.requires.python_version`, for the relock hint.
    lock_python: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CheckSpec:
        return cls(
            own=tuple(data["own"]),
            dependencies=tuple(
                Dependency(d["name"], d["version"], tuple(d["modules"]))
                for d in data.get("dependencies", [])
            ),
            startup=tuple(data.get("startup", [])),
            lock_python=data.get("lock_python"),
        )


@dataclass(frozen=True)
class ImportRecord:
    """One import of the check and what it depended on (paths relative to python/), so that
    its verdict can be remembered for as long as those stay the same (importmemo.py)."""

    module: str
    ok: bool
    #: Layer files it loaded, opened or dlopen()ed; directories it listed.
    touched: tuple[str, ...] = ()
    listed: tuple[str, ...] = ()
    #: Names it looked for that the layer did not provide (not found, or found outside it).
    absent: tuple[str, ...] = ()
    #: Earlier imports of the same run whose modules it used.
    after: tuple[str, ...] = ()
    #: The layer's .py files it loaded first (the start-up probe's share of this import).
    loaded: tuple[str, ...] = ()


@dataclass(frozen=True)
class Verdict:
    ok: bool
    #: Why the layer is refused: names the module or package and what to do.
    message: str = ""
    #: E.g. the project's own import-time code raised something other than a missing module.
    warnings: tuple[str, ...] = field(default=())
    #: Layer-relative POSIX paths (under python/) of the sources loaded by the imports.
    startup: tuple[str, ...] = field(default=())
    #: Where it ran, for the report: "python3.13 x86_64, local subprocess" or a function name.
    ran_on: str = ""
    #: Per import, what it depended on; empty from a sandbox that does not say (nothing is
    #: remembered then).
    imports: tuple[ImportRecord, ...] = field(default=())

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Verdict:
        """Parse a verdict from a sandbox; anything malformed is a SandboxError, never a pass."""
        if len(text) > MAX_VERDICT_BYTES:
            raise SandboxError(f"The sandbox's verdict is larger than {MAX_VERDICT_BYTES:,} bytes.")
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise SandboxError(f"The sandbox's verdict is not JSON: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("ok"), bool):
            raise SandboxError("The sandbox's verdict has no boolean `ok`.")

        def strings(key: str, cap: int) -> tuple[str, ...]:
            value = data.get(key, [])
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise SandboxError(f"The sandbox's verdict has a malformed `{key}`.")
            return tuple(value[:cap])

        message, ran_on = data.get("message", ""), data.get("ran_on", "")
        if not isinstance(message, str) or not isinstance(ran_on, str):
            raise SandboxError("The sandbox's verdict has a malformed `message` or `ran_on`.")
        startup = strings("startup", MAX_STARTUP_PATHS)
        if any(p.startswith("/") or ".." in p.split("/") for p in startup):
            raise SandboxError("The sandbox's verdict names start-up paths outside the layer.")
        return cls(
            ok=data["ok"],
            message=message[:MAX_MESSAGE_CHARS],
            warnings=tuple(w[:MAX_MESSAGE_CHARS] for w in strings("warnings", MAX_WARNINGS)),
            startup=startup,
            ran_on=ran_on[:200],
            imports=_records(data.get("imports", [])),
        )


def _records(value: Any) -> tuple[ImportRecord, ...]:
    """Verdict.imports from JSON, as strictly as the rest: malformed is a SandboxError."""
    if not isinstance(value, list) or len(value) > MAX_WARNINGS * 20:
        raise SandboxError("The sandbox's verdict has a malformed `imports`.")
    records, total = [], 0
    for item in value:
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("module"), str)
            or not isinstance(item.get("ok"), bool)
        ):
            raise SandboxError("The sandbox's verdict has a malformed `imports`.")
        fields = {}
        for key in ("touched", "listed", "absent", "after", "loaded"):
            strings = item.get(key, [])
            if not isinstance(strings, list) or not all(isinstance(v, str) for v in strings):
                raise SandboxError(f"The sandbox's verdict has a malformed `imports.{key}`.")
            if key in ("touched", "listed", "loaded") and any(
                p.startswith("/") or ".." in p.split("/") for p in strings
            ):
                raise SandboxError("The sandbox's verdict names paths outside the layer.")
            total += len(strings)
            fields[key] = tuple(strings)
        records.append(ImportRecord(module=item["module"], ok=item["ok"], **fields))
    if total > MAX_STARTUP_PATHS:
        raise SandboxError("The sandbox's verdict has too many `imports` paths.")
    return tuple(records)


class Candidate:
    """The layer a check imports, as the builder's zip entries. A sandbox on this machine
    unpacks them straight from the wheels (`extract.extract_entries`); one elsewhere takes a
    zip, which `zip()` writes once into `scratch` (the build's work dir removes it)."""

    def __init__(self, entries: Sequence[Entry], scratch: Path, name: str = "candidate") -> None:
        self.entries = entries
        self._path = scratch / f"{name}.zip"
        self._written = False

    def zip(self) -> Path:
        if not self._written:
            write_zip(self._path, self.entries)
            self._written = True
        return self._path

    def discard(self) -> None:
        self._path.unlink(missing_ok=True)


#: What a check is given: a Candidate, or a zip of python/... already on disk.
Layer = Candidate | Path


class Sandbox(Protocol):
    def native(self, target: Target) -> bool:
        """Whether check() runs on the target's own interpreter and machine. When it does not
        (an arm64 layer on an x86_64 laptop), the pipeline checks a twin of the layer built
        from the same lock for a machine it can run, and says so in the report."""

    def check(
        self, layer: Layer, spec: CheckSpec, target: Target, timeout: float | None
    ) -> Verdict:
        """Import spec's modules from the layer (a Candidate, or a zip of python/...) on the
        target."""

    def build_sdist(
        self,
        sdist: Path,
        name: str,
        version: str,
        target: Target,
        dest: Path,
        timeout: float | None,
    ) -> Path:
        """Build a wheel for the target from a hash-verified sdist; returns the wheel's path."""

    def compile(self, sources: Path, target: Target, timeout: float | None) -> dict[str, bytes]:
        """Bytecode for a zip of sources (names relative to python/): returns the layer-relative
        name of each .pyc (`pkg/__pycache__/mod.cpython-313.pyc`) → its bytes, `unchecked-hash`,
        with source paths under /opt/python. Sources that do not compile are left out."""
