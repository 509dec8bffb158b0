"""The memo of import verdicts: an import that passed is not run again while nothing it
depended on changed, so a lock with one pin bumped re-runs only the imports that pin reaches.

The sandbox's probe reports, per import, the layer files it loaded, opened or dlopen()ed, the
directories it listed, the names it looked for that the layer did not provide, and the earlier
imports whose modules it used (sandbox.ImportRecord). Each passing import is remembered as a
signed cache entry holding its dependencies by content: the wheels (sha256) and own code (content
hash) owning every file it touched or that provide a top-level name it looked inside, the
top-level names it found missing or outside the layer (they must stay absent), and the entries of
each directory it listed. A later check whose layer satisfies all of them takes the verdict of
that import from the memo; every other import runs in the sandbox.

Entries are scoped to the layer (name and team, target, interpreter, probe and runner sources,
the sandbox). The dependencies an entry records come from the probe, which runs the code under
check (the upload's, and its pins'), so they could be misreported. Whatever the records say, an
entry always depends on the wheels (or own code) that provide the module's own top-level name and
on every wheel that no import is asked for directly, and only imports that were asked for are
remembered. So a bump of a direct dependency re-runs that dependency's own import, a change to any
other wheel or to the own code re-runs every import that depends on it, and what a misreport can
still hide is one direct dependency from another's entry (the other's import is not re-run when
the first is bumped; the first's own import is). Entries are
written by the builder alone, signed; one that fails its signature is a miss. Both sandboxes
pass the records on: the local one and the check function (its answer is the whole verdict).
What the probe cannot see: a file only stat()ed, never opened, listed or mapped, in a wheel the
import otherwise did not touch.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import bytecode
from .cache import BuildCache
from .sandbox import ImportRecord

OWN = "(own)"


@functools.lru_cache(maxsize=1)
def probe_digest() -> str:
    """The code that decides a verdict: a changed probe or runner checks everything again."""
    here = Path(__file__).parent
    digest = hashlib.sha256()
    for name in ("import_probe.py", "pyc_warmer.py", "runner.py", "sandbox.py", "importmemo.py"):
        digest.update((here / name).read_bytes())
    return digest.hexdigest()


@dataclass
class LayerIndex:
    """Who owns each file of a layer: `dist@sha256` per wheel, `(own)@hash` for the own code."""

    owners: dict[str, str] = field(default_factory=dict)
    #: top-level name (package dir or module stem) → its owners
    tops: dict[str, set[str]] = field(default_factory=dict)
    children: dict[str, set[str]] = field(default_factory=dict)

    def add(self, path: str, owner: str) -> None:
        self.owners[path] = owner
        head, sep, _ = path.partition("/")
        self.tops.setdefault(head if sep else head.split(".")[0], set()).add(owner)
        parts = path.split("/")
        for depth in range(len(parts)):
            folder = "/".join(parts[:depth]) or "."
            if parts[depth] != "__pycache__":
                self.children.setdefault(folder, set()).add(parts[depth])

    def owner(self, path: str) -> str | None:
        if "__pycache__/" in path and path.endswith(".pyc"):
            path = bytecode.pyc_source(path)
        return self.owners.get(path)

    def listing(self, folder: str) -> str:
        return hashlib.sha256("\n".join(sorted(self.children.get(folder, ()))).encode()).hexdigest()


def layer_index(files: Iterable[tuple[str, str]]) -> LayerIndex:
    """From (layer-relative path, owner) pairs."""
    index = LayerIndex()
    for path, owner in files:
        index.add(path, owner)
    return index


def entry_name(scope: Mapping[str, object], module: str) -> str:
    text = json.dumps(
        {**scope, "probe": probe_digest(), "module": module}, sort_keys=True, default=repr
    )
    return "import-" + hashlib.sha256(text.encode()).hexdigest()


def _dependencies(record: ImportRecord, index: LayerIndex) -> dict | None:
    """What a passing import depended on, by content; None when it cannot be said."""
    owners: set[str] = set()
    absent = set()
    for path in record.touched:
        owner = index.owner(path)
        if owner is not None:
            owners.add(owner)
            continue
        if path == "?" or path.startswith("."):
            return None  # the probe could not tell: never remembered
        # Looked for and not there (an optional file, bytecode): whoever provides its
        # top-level directory decides whether it exists, or nobody may start to.
        head, sep, _ = path.partition("/")
        top = head if sep else head.split(".")[0]
        if top in index.tops:
            owners |= index.tops[top]
        else:
            absent.add(top)
    for name in record.absent:
        top = name.split(".")[0]
        if top in index.tops:  # looked inside a package of the layer: its owners decide
            owners |= index.tops[top]
        else:
            absent.add(top)
    return {
        "owners": sorted(owners),
        "absent": sorted(absent),
        "listed": {folder: index.listing(folder) for folder in record.listed},
    }


def _holds(deps: Mapping, index: LayerIndex, present: set[str]) -> bool:
    return (
        all(o in present for o in deps["owners"])
        and all(o in present for o in deps.get("also", ()))
        and not any(name in index.tops for name in deps["absent"])
        and all(index.listing(folder) == digest for folder, digest in deps["listed"].items())
    )


def _merge(into: dict, deps: Mapping) -> None:
    into["owners"] = sorted(set(into["owners"]) | set(deps["owners"]))
    into["absent"] = sorted(set(into["absent"]) | set(deps["absent"]))
    into["listed"] = {**into["listed"], **deps["listed"]}


@dataclass
class Split:
    """Which imports a memo proves (with the sources they loaded) and which must run."""

    proven: dict[str, list[str]] = field(default_factory=dict)
    run: list[str] = field(default_factory=list)
    #: For imports that must run: the distributions their last passing run touched (a hint
    #: for which wheels a smaller candidate needs).
    hints: set[str] = field(default_factory=set)


def split(
    cache: BuildCache, scope: Mapping[str, object], modules: Sequence[str], index: LayerIndex
) -> Split:
    present = set(index.owners.values())
    result = Split()
    for module in modules:
        memo = _load(cache, entry_name(scope, module))
        if memo is not None and _holds(memo["deps"], index, present):
            result.proven[module] = list(memo["loaded"])
            continue
        result.run.append(module)
        if memo is None:
            result.hints.add("*")  # never ran: no hint, the whole layer
        else:
            result.hints |= {o.split("@")[0] for o in memo["deps"]["owners"]}
    return result


def conclusive(records: Sequence[ImportRecord], partial: LayerIndex, full: LayerIndex) -> bool:
    """Whether imports run on part of the layer (`partial`) would do the same on all of it
    (`full`): every name they missed is missing from the whole layer too, and every directory
    they listed holds the same entries."""
    for record in records:
        if not record.ok:
            return False
        if any(
            name.split(".")[0] in full.tops and name.split(".")[0] not in partial.tops
            for name in record.absent
        ):
            return False
        if any(partial.listing(folder) != full.listing(folder) for folder in record.listed):
            return False
        if any(full.owner(path) != partial.owner(path) for path in record.touched):
            return False
    return True


def remember(
    cache: BuildCache,
    scope: Mapping[str, object],
    records: Sequence[ImportRecord],
    index: LayerIndex,
    *,
    ran: Iterable[str],
    always: Iterable[str] = (),
) -> int:
    """Store an entry for each passing import whose dependencies are known; returns how many.

    The records come from the probe, which runs the code under check, so they are not taken on
    their word alone: only imports that were asked for (`ran`) are remembered, each always
    depends on the owners of its own top-level name as the builder sees them (none: nothing is
    remembered), and on `always` (the caller passes the wheels no import is asked for directly,
    so a change to any of them checks everything again).
    """
    wanted, required = set(ran), set(always)
    by_module = {r.module: r for r in records if r.module in wanted}
    done: dict[str, dict | None] = {}

    def deps(module: str, seen: frozenset[str] = frozenset()) -> dict | None:
        if module in done:
            return done[module]
        record = by_module.get(module)
        found = None
        if record is not None and record.ok and module not in seen:
            found = _dependencies(record, index)
            for earlier in record.after:
                more = deps(earlier, seen | {module}) if found is not None else None
                found = None if more is None else found
                if found is not None:
                    _merge(found, more)  # type: ignore[arg-type]
        done[module] = found
        return found

    stored = 0
    for record in by_module.values():
        found = deps(record.module)
        own = index.tops.get(record.module.split(".")[0])
        if found is not None and own:
            found["owners"] = sorted(set(found["owners"]) | own)
            # Must stay the same too, but are no hint of what the import reaches (a re-run's
            # candidate holds only the wheels it reached last time).
            found["also"] = sorted(required - set(found["owners"]))
            payload = {"deps": found, "loaded": list(record.loaded)}
            cache.put(
                entry_name(scope, record.module),
                json.dumps(payload, sort_keys=True).encode(),
                local_only=True,
            )
            stored += 1
    return stored


def _load(cache: BuildCache, name: str) -> dict | None:
    payload = cache.get(name, local_only=True)
    if payload is None:
        return None
    try:
        memo = json.loads(payload)
        deps = memo["deps"]
        if not (
            isinstance(deps["owners"], list)
            and isinstance(deps["absent"], list)
            and isinstance(deps["listed"], dict)
            and isinstance(memo["loaded"], list)
        ):
            return None
        return memo
    except (ValueError, KeyError, TypeError):
        return None
