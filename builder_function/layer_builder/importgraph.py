"""A static start-up probe: the sources reached from named modules by their import statements.

Reads the import statements of each named module with `ast`, and of every module they import
that lies in the layer, running nothing: what executes at import is the module body, so imports
inside functions are skipped and those under `if TYPE_CHECKING:` too. It needs no interpreter
of the target and no sandbox, so it still ranks bytecode where no sandbox runs the target.
It cannot see imports made by computed names (`importlib.import_module(f"...{x}")`, lazy
`__getattr__` loaders, C extensions importing Python modules), which the runtime probe does.

Which probe ranks bytecode (issue 10 item 4), measured with bench/probe_study.py (2 shared cores,
medians, ratios only). Heavy fixture (pandas, numpy, pyarrow, pydantic, requests, pyyaml and an
own package; 17 top-levels imported):

| | sources | of the runtime probe's | extra | cost |
|---|---:|---:|---:|---:|
| runtime (the import check's Verdict.startup) | 460 | 460 | 0 | 4.6-6.1 s, the check itself |
| static (this module) | 444 | 435 (95 %) | 9 | 5.4-6.0 s more |

Cold import of those 17 top-levels within one byte budget (12.7 of 17.9 MB of bytecode, what
the runtime set needs, kept in bytecode.rank's order), two runs of 7 reps: no bytecode 1.00×,
shallowest modules first (no probe) 1.87-1.93×, runtime probe 3.84-4.15×, static probe
3.73-3.91×, all bytecode 3.86-3.90×: the probes are within 10 % of each other, both twice
as good as no probe. The mixed fixture (six, markupsafe, two own modules): both find the same 5
sources, the static one adds markupsafe/_native.py (a fallback never loaded); its imports take
0.02-0.1 s, all noise.

Chosen: the runtime probe. The import check must run the imports anyway (it exists to catch
missing dependencies and wrong binaries), so its list costs nothing more, while the graph costs
seconds of parsing per cold build and misses lazy imports (dateutil's `__getattr__` submodules
here). This module stays for where no sandbox can run the target's imports (no interpreter of
that version, another machine and no twin): there it ranks nearly as well as running them, twice as
well as no probe.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path


def _search_roots(python_dir: Path, version: tuple[int, int]) -> list[Path]:
    site = python_dir / "lib" / f"python{version[0]}.{version[1]}" / "site-packages"
    return [site, python_dir] if site.is_dir() else [python_dir]


def _find(name: str, roots: list[Path]) -> list[tuple[str, Path | None]]:
    """The chain of (module, source) that importing `name` executes: each parent package's
    __init__ first. None where the module is not Python source in the layer (a namespace
    package, an extension, the standard library)."""
    parts = name.split(".")
    for root in roots:
        if not ((root / parts[0]).is_dir() or (root / f"{parts[0]}.py").is_file()):
            continue
        chain: list[tuple[str, Path | None]] = []
        base = root
        for i, part in enumerate(parts):
            module = ".".join(parts[: i + 1])
            if (base / part / "__init__.py").is_file():
                chain.append((module, base / part / "__init__.py"))
            elif (base / f"{part}.py").is_file():
                chain.append((module, base / f"{part}.py"))
                if i != len(parts) - 1:  # a module has no submodules
                    break
            elif (base / part).is_dir():
                chain.append((module, None))  # namespace package
            else:
                break
            base = base / part
        return chain
    return []


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _executed(body: list[ast.stmt]) -> Iterable[ast.stmt]:
    """Statements that run when the module is imported: not function bodies, not typing-only."""
    for node in body:
        yield node
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _executed(node.orelse)
            continue
        for field in ("body", "orelse", "finalbody"):
            yield from _executed(getattr(node, field, None) or [])
        for handler in getattr(node, "handlers", None) or []:
            yield from _executed(handler.body)
        for case in getattr(node, "cases", None) or []:
            yield from _executed(case.body)


def _imports(module: str, source: Path) -> list[str]:
    """Module names the module's body imports (a `from x import y` may name submodule x.y)."""
    try:
        tree = ast.parse(source.read_bytes(), filename=str(source))
    except (SyntaxError, ValueError):
        return []
    package = module if source.name == "__init__.py" else module.rpartition(".")[0]
    names: list[str] = []
    for node in _executed(tree.body):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                if node.level - 1 >= len(parts):  # beyond the top-level package
                    continue
                base = ".".join(parts[: len(parts) - (node.level - 1)])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            if target:
                names.append(target)
                names += [f"{target}.{alias.name}" for alias in node.names if alias.name != "*"]
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            call = node.value
            func = call.func
            if (
                isinstance(func, ast.Attribute)
                and func.attr == "import_module"
                and call.args
                and isinstance(call.args[0], ast.Constant)
                and isinstance(call.args[0].value, str)
            ):
                names.append(call.args[0].value)
    return names


def static_startup(
    python_dir: Path, modules: Iterable[str], version: tuple[int, int] = (3, 13)
) -> set[str]:
    """Layer-relative sources (under python/) that importing `modules` would execute."""
    python_dir = Path(python_dir).resolve()
    roots = _search_roots(python_dir, version)
    found: dict[str, Path] = {}
    seen: set[str] = set()
    todo = list(modules)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for module, source in _find(name, roots):
            if source is None or module in found:
                continue
            found[module] = source
            todo += _imports(module, source)
    return {source.relative_to(python_dir).as_posix() for source in found.values()}
