"""The project's own settings, layer naming and own code.

A project configures the builder in `pyproject.toml` under `[tool.layer-builder]`:

    name = "aws-emr-launcher"        # layer name (Lambda's rules apply)
    description = "..."
    packages = ["emrlauncher"]       # own top-level packages/modules; detected when absent
    slim = true                      # safe slimming of dependencies
    slim_exclude = ["*.md"]          # extra patterns to leave out of dependencies
    bytecode = "auto"                # auto | all | none
    strip = "auto"                   # symbol tables out of shared objects: auto | true | false
    license = "MIT"
    targets = ["python3.13/x86_64", "python3.12/arm64"]   # else the builder's default targets
    headroom = "10MB"                # room left under Lambda's unzipped limit (or an int of bytes)
    startup = ["app.handler"]        # modules the functions import at start-up

Without a name, it comes from `[project]` metadata, `setup.cfg`, then the archive's file name.
Sizes are binary: 1 KB = 1,024 bytes and 1 MB = 1,048,576 bytes, as in limits.py.
"""

from __future__ import annotations

import configparser
import json
import keyword
import os
import re
import shutil
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from . import limits
from .errors import ProjectError
from .target import ARCH_MACHINE, RUNTIME_GLIBC, Target
from .unpack import strip_archive_suffix

CONFIG_TABLE = "layer-builder"
#: Top-level folders that hold tooling, tests or documents, never the project's runtime code.
NOT_CODE_DIRS = frozenset(
    {
        "tests",
        "test",
        "testing",
        "docs",
        "doc",
        "examples",
        "example",
        "samples",
        "scripts",
        "script",
        "bin",
        "build",
        "dist",
        "bench",
        "benchmarks",
        "tools",
        "ci",
        "site",
        "htmlcov",
        "venv",
        "env",
        "node_modules",
        "__pycache__",
        "typings",
        "infra",
        "infrastructure",
        "cdk",
        "deploy",
        "deployment",
        "terraform",
        "notebooks",
    }
)
#: Top-level modules that are tools' entry points. Only these: a folder `scripts/` is tooling,
#: but a module `script.py` (or `tools.py`) is something a handler may import, so it is code.
NOT_CODE_MODULES = frozenset(
    {
        "setup",
        "conftest",
        "noxfile",
        "tasks",
        "fabfile",
        "manage",
        "dodo",
        "pavement",
        "test",
        "tests",
    }
)
_TEST_MODULE = re.compile(r"test_.*|.*_test", re.I)
#: A folder holding one of these is a project of its own (a path dependency), not a namespace
#: package of this one.
_PROJECT_FILES = ("setup.py", "setup.cfg", "pyproject.toml", "Pipfile")
#: Folder and archive names that say nothing about the project: never a layer's name.
GENERIC_NAMES = frozenset(
    {
        "lambda",
        "lambdas",
        "function",
        "functions",
        "src",
        "source",
        "code",
        "python",
        "layer",
        "layers",
        "package",
        "upload",
        "archive",
    }
)
_NAME_VERSION = re.compile(
    r"^(?P<name>.+?)[-_](?P<version>v?\d+(?:\.\d+)*(?:[._+-]?[a-z0-9]+)*)$", re.I
)
_INVALID_NAME_CHARS = re.compile(r"[^a-zA-Z0-9_-]+")
BYTECODE_MODES = ("auto", "all", "none")
_SIZE = re.compile(r"(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>[KMG]i?B|B)?", re.I)
_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3}


@dataclass(frozen=True)
class ProjectConfig:
    name: str
    version: str
    description: str
    packages: tuple[str, ...] | None = None
    slim: bool = True
    slim_exclude: tuple[str, ...] = ()
    bytecode: str = "auto"
    license: str = ""
    warnings: tuple[str, ...] = field(default=())
    #: `targets = ["python3.13/x86_64", ...]`; None: the builder's default targets.
    targets: tuple[Target, ...] | None = None
    #: Bytes left free under Lambda's unzipped limit for the function and other layers.
    headroom: int = limits.DEFAULT_HEADROOM
    #: Modules the consumers import at start-up (dotted names), for the start-up probe.
    startup: tuple[str, ...] = ()
    #: Symbol tables out of shared objects: "auto" (when the room is needed), "always", "never".
    strip: str = "auto"


def layer_name(raw: str, prefix: str = "") -> str:
    """A name Lambda accepts: [a-zA-Z0-9-_]+, at most 140 characters."""
    cleaned = _INVALID_NAME_CHARS.sub("-", raw).strip("-_")
    if not cleaned:
        raise ProjectError(
            f"Cannot derive a layer name from {raw!r}: set `name` under [tool.{CONFIG_TABLE}] "
            "in pyproject.toml."
        )
    name = (_INVALID_NAME_CHARS.sub("-", prefix) + cleaned)[: limits.MAX_LAYER_NAME_LENGTH]
    return name


def target_layer_name(base: str, target: Target, primary: Target) -> str:
    """The layer name for one of a project's targets: its first target keeps `base`, every other
    one is `<base>-py312-arm64` (runtime digits, architecture), within Lambda's 140 characters."""
    if target == primary:
        return base
    suffix = f"-py{target.python_version.replace('.', '')}-{target.arch}"
    return base[: limits.MAX_LAYER_NAME_LENGTH - len(suffix)] + suffix


def _generic(name: str) -> bool:
    cleaned = _INVALID_NAME_CHARS.sub("-", name).strip("-_").lower()
    return not cleaned or cleaned in GENERIC_NAMES or keyword.iskeyword(cleaned)


def _meaningful(*names: str, source_name: str) -> str:
    """The first name that says something about the project, or a refusal saying what to write."""
    found = next((n for n in names if not _generic(n)), None)
    if found is None:
        raise ProjectError(
            f"The layer would be named {names[0]!r} after the folder or archive "
            f"{source_name!r}, which names no project: name it in pyproject.toml, "
            f'[tool.{CONFIG_TABLE}] name = "my-service" (or [project] name), or upload an '
            "archive named after the project (my-service-1.0.0.zip)."
        )
    return found


def directory_name(path: Path) -> str:
    """A project directory's name for naming its layer: `…/serpapi-lambda/lambda` gives
    `serpapi-lambda`, since a folder called `lambda` names no project."""
    resolved = Path(path).resolve()
    return next(
        (p.name for p in (resolved, *resolved.parents) if p.name and not _generic(p.name)),
        resolved.name,
    )


def split_archive_name(filename: str) -> tuple[str, str]:
    """`aws-emr-launcher-0.1.0.zip` → ("aws-emr-launcher", "0.1.0"); no version → ""."""
    stem = strip_archive_suffix(filename)
    match = _NAME_VERSION.match(stem)
    if match:
        return match["name"], match["version"].lstrip("vV")
    return stem, ""


#: What to do about each project file past limits.MAX_PROJECT_FILE_BYTES.
_FILE_FIX = {
    "Pipfile.lock": "re-create it with `pipenv lock` and upload it with the Pipfile",
    "Pipfile": "keep only the packages and settings in it, then run `pipenv lock`",
}


def read_project_file(path: Path) -> str:
    """The text of a Pipfile, Pipfile.lock, pyproject.toml or setup.cfg, which the builder parses
    whole: its size is checked first (a parser takes up to ~25 bytes of memory per byte)."""
    size, cap = path.stat().st_size, limits.MAX_PROJECT_FILE_BYTES
    if size > cap:
        fix = _FILE_FIX.get(path.name, "keep only the project's settings in it")
        raise ProjectError(
            f"{path.name} is {size:,} bytes, past the limit of {cap:,} bytes for a "
            f"project file (real ones are well under 1 MB): {fix}."
        )
    return path.read_text(encoding="utf-8")


def _read_toml(path: Path) -> dict:
    try:
        return tomllib.loads(read_project_file(path))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ProjectError(f"{path.name} is not valid TOML: {exc}") from None


def _setup_cfg_metadata(root: Path) -> dict[str, str]:
    path = root / "setup.cfg"
    if not path.is_file():
        return {}
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(read_project_file(path))
    except (configparser.Error, UnicodeDecodeError):
        return {}
    return dict(parser["metadata"]) if parser.has_section("metadata") else {}


def _str_list(value: object, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ProjectError(
            f"[tool.{CONFIG_TABLE}] {key} must be a list of strings in pyproject.toml."
        )
    return tuple(value)


def _targets(value: object) -> tuple[Target, ...] | None:
    key = f"[tool.{CONFIG_TABLE}] targets"
    example = 'targets = ["python3.13/x86_64", "python3.12/arm64"]'
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise ProjectError(f"{key} in pyproject.toml must be a non-empty list such as {example}.")
    found: list[Target] = []
    for item in value:
        runtime, _, arch = item.partition("/") if isinstance(item, str) else ("", "", "")
        if runtime not in RUNTIME_GLIBC or arch not in ARCH_MACHINE:
            raise ProjectError(
                f"{key} entry {item!r} in pyproject.toml is not a target: write runtime/architecture "
                f"with a runtime among {', '.join(RUNTIME_GLIBC)} and an architecture among "
                f"{', '.join(ARCH_MACHINE)}, e.g. {example}."
            )
        target = Target(runtime, arch)
        if target in found:
            raise ProjectError(f"{key} entry {item!r} in pyproject.toml is listed twice: keep one.")
        found.append(target)
    return tuple(found)


def parse_size(value: object, key: str = "headroom") -> int:
    """Bytes from an int or a string such as "10MB", "512KB", "1.5 GiB" (binary units)."""
    match = _SIZE.fullmatch(value.strip()) if isinstance(value, str) else None
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif match:
        size = int(float(match["number"]) * _UNITS[(match["unit"] or "").upper()[:1]])
    else:
        size = -1
    if not 0 <= size < limits.MAX_UNZIPPED_BYTES:
        raise ProjectError(
            f"[tool.{CONFIG_TABLE}] {key} = {value!r} in pyproject.toml is not a size below "
            f"Lambda's {limits.MAX_UNZIPPED_BYTES:,}-byte limit: write bytes (10485760) or a "
            'string such as "10MB" or "512KB".'
        )
    return size


def _startup(value: object) -> tuple[str, ...]:
    modules = _str_list(value, "startup")
    for module in modules:
        parts = module.split(".")
        if not all(p.isidentifier() and not keyword.iskeyword(p) for p in parts):
            raise ProjectError(
                f"[tool.{CONFIG_TABLE}] startup entry {module!r} in pyproject.toml is not a module "
                'name: write dotted module names such as startup = ["app.handler"].'
            )
    return modules


def _with_version(description: str, version: str) -> str:
    """The description, ending with the version unless it names it, within Lambda's cap."""
    limit = limits.MAX_DESCRIPTION_LENGTH
    if not version or re.search(rf"\bversion:? v?{re.escape(version)}(?!\.?\w)", description, re.I):
        return description[:limit]
    suffix = f"Version: {version}"[:limit]
    # Cut the text, not the suffix: a long description must not lose the version.
    head = description[: max(0, limit - len(suffix) - 1)].rstrip()
    return f"{head} {suffix}" if head else suffix


def _table(data: dict, key: str, label: str) -> dict:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ProjectError(f"{label} in pyproject.toml must be a table, not {value!r}.")
    return value


def load_config(root: Path, source_name: str) -> ProjectConfig:
    """Read the project's settings; `source_name` is the archive or directory name."""
    pyproject = _read_toml(root / "pyproject.toml") if (root / "pyproject.toml").is_file() else {}
    tools = _table(pyproject, "tool", "[tool]")
    tool = _table(tools, CONFIG_TABLE, f"[tool.{CONFIG_TABLE}]")
    project = _table(pyproject, "project", "[project]")
    setup_cfg = _setup_cfg_metadata(root)
    archive_name, archive_version = split_archive_name(source_name)

    raw_name = (
        tool.get("name")
        or project.get("name")
        or setup_cfg.get("name")
        or _meaningful(archive_name, root.name, source_name=source_name)
    )
    version = str(project.get("version") or setup_cfg.get("version") or archive_version or "")
    description = (
        tool.get("description") or project.get("description") or setup_cfg.get("description") or ""
    )
    for key, value in (("name", raw_name), ("description", description)):
        if not isinstance(value, str):
            raise ProjectError(f"`{key}` in pyproject.toml must be a string, not {value!r}.")
    description = _with_version(description, version)

    packages = _str_list(tool["packages"], "packages") if "packages" in tool else None
    bytecode = tool.get("bytecode", "auto")
    if bytecode not in BYTECODE_MODES:
        raise ProjectError(
            f"[tool.{CONFIG_TABLE}] bytecode must be one of {', '.join(BYTECODE_MODES)}."
        )
    slim = tool.get("slim", True)
    if not isinstance(slim, bool):
        raise ProjectError(f"[tool.{CONFIG_TABLE}] slim must be true or false in pyproject.toml.")
    strip = _strip_mode(tool.get("strip", "auto"))
    if strip is None:
        raise ProjectError(
            f'[tool.{CONFIG_TABLE}] strip must be "auto", true or false in pyproject.toml.'
        )
    return ProjectConfig(
        name=layer_name(raw_name),
        version=version,
        description=description,
        packages=packages,
        slim=slim,
        slim_exclude=_str_list(tool.get("slim_exclude", []), "slim_exclude"),
        bytecode=bytecode,
        license=str(tool.get("license") or "")[: limits.MAX_LICENSE_INFO_LENGTH],
        targets=_targets(tool.get("targets")),
        headroom=parse_size(tool["headroom"]) if "headroom" in tool else limits.DEFAULT_HEADROOM,
        startup=_startup(tool.get("startup", [])),
        strip=strip,
    )


def _strip_mode(value: object) -> str | None:
    if isinstance(value, bool):
        return "always" if value else "never"
    return "auto" if value == "auto" else None


def _importable(name: str) -> bool:
    return name.isidentifier() and not keyword.iskeyword(name)


def _is_code_dir(path: Path) -> bool:
    """A package, or a namespace package: a folder of .py files without `__init__.py` that is no
    project of its own."""
    name = path.name
    if not _importable(name) or name.startswith("_") or name.lower() in NOT_CODE_DIRS:
        return False
    if (path / "__init__.py").is_file():
        return True
    if any((path / f).exists() for f in _PROJECT_FILES):
        return False
    return any(
        p.suffix == ".py" and p.is_file() or (p / "__init__.py").is_file()
        for p in path.iterdir()
        if not p.is_symlink()
    )


def _is_code_module(path: Path) -> bool:
    stem = path.stem
    return (
        path.suffix == ".py"
        and _importable(stem)
        and not stem.startswith("_")
        and stem.lower() not in NOT_CODE_MODULES
        and not _TEST_MODULE.fullmatch(stem)
    )


def _code_root(root: Path) -> Path:
    """A `src/` folder without `__init__.py` is a src-layout: its packages and modules are the
    top level. With `__init__.py`, `src` is a package itself (`from src.api import …`)."""
    src = root / "src"
    if (
        src.is_dir()
        and not src.is_symlink()
        and not (src / "__init__.py").exists()
        and any(
            not p.is_symlink() and (_is_code_dir(p) if p.is_dir() else _is_code_module(p))
            for p in src.iterdir()
        )
    ):
        return src
    return root


def _top_level(root: Path, skip: frozenset[str] = frozenset()) -> list[Path]:
    base = _code_root(root)
    return [
        entry
        for entry in sorted(base.iterdir())
        if entry.name not in skip
        and not entry.is_symlink()  # never follow a link out
        and (_is_code_dir(entry) if entry.is_dir() else _is_code_module(entry))
    ]


def detect_code(root: Path, config: ProjectConfig, local_paths: tuple[str, ...] = ()) -> list[Path]:
    """The project's own top-level packages and modules.

    `local_paths`: the lock's path entries inside the project (lock.LockedProject.local_paths);
    "." is the project itself, any other folder is a project of its own whose code is taken.
    """
    local = [root / p for p in local_paths if p not in ("", ".")]
    skip = frozenset(Path(p).parts[0] for p in local_paths if p not in ("", "."))
    if config.packages is None:
        found = _top_level(root, skip) + [p for d in local for p in _top_level(d)]
        return list(dict.fromkeys(found))
    bases = list(dict.fromkeys([_code_root(root), root, *(_code_root(d) for d in local)]))
    found = []
    for name in config.packages:
        candidates = [c for base in bases for c in (base / name, base / f"{name}.py")]
        match = next((c for c in candidates if c.exists() and not c.is_symlink()), None)
        if match is None or not _importable(name):
            detected = [p.stem for p in _top_level(root, skip)]
            raise ProjectError(
                f"Package {name!r} named in [tool.{CONFIG_TABLE}] packages is not "
                + (
                    "an importable name"
                    if not _importable(name)
                    else "a directory or module at the project root"
                    + (" or in src/" if bases[0] != root else "")
                )
                + f": fix the name or remove it from the list in pyproject.toml, e.g. packages = "
                f"{json.dumps(detected or ['mypackage'])}."
            )
        found.append(match)
    return found


def code_warnings(root: Path, config: ProjectConfig, found: list[Path]) -> list[str]:
    """A warning when no own code was found although the project holds Python files (tests
    aside): where they are, and what to write."""
    if found or config.packages is not None:
        return []
    left_out = sorted(
        p.relative_to(root).as_posix()
        for pattern in ("*.py", "*/*.py")
        for p in root.glob(pattern)
        if not p.name.startswith(".")
        and not _TEST_MODULE.fullmatch(p.stem)
        and p.stem.lower() not in NOT_CODE_MODULES
        and p.relative_to(root).parts[0].lower() not in NOT_CODE_DIRS
    )
    if not left_out:
        return []
    tops = dict.fromkeys(Path(p).parts[0].removesuffix(".py") for p in left_out)
    named = [t for t in tops if _importable(t)]
    fix = (
        f'list them in pyproject.toml: [tool.{CONFIG_TABLE}] packages = ["{named[0]}"]'
        if named
        else f"{', '.join(f'{t}/' for t in tops)} is not an importable name: rename the folder "
        f"(e.g. handlers/) and list it in pyproject.toml: [tool.{CONFIG_TABLE}] packages = "
        '["handlers"]'
    )
    return [
        f"No own code found in the project (Python files such as {', '.join(left_out[:3])} were "
        f"left out): the layer holds only the dependencies. If they are your code, {fix}."
    ]


def clash_error(clash: list[str], own: list[str]) -> ProjectError:
    """The project's own top-level names that a dependency also installs."""
    keep = [n for n in own if n not in clash]
    return ProjectError(
        f"The project's own {', '.join(clash)} clashes with a dependency of the same name in the "
        "lock: both would land in the layer's python/ folder. If it is not your runtime code (a copy of the "
        "dependency, a test helper), leave it out in pyproject.toml: "
        f"[tool.{CONFIG_TABLE}] packages = {json.dumps(keep)}; if it is, rename it."
    )


_IGNORED_IN_CODE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", ".*", "tests", "test")


def _ignore_or_refuse_links(directory: str, names: list[str]) -> set[str]:
    """Leave out what never belongs in a layer; refuse links, which could pull in any file."""
    for name in names:
        if os.path.islink(os.path.join(directory, name)):
            raise ProjectError(
                f"{os.path.join(directory, name)} is a symbolic link: the layer takes the project's "
                "own files only. Replace the link with the file or directory itself."
            )
    return _IGNORED_IN_CODE(directory, names)


def copy_code(paths: list[Path], dest: Path) -> list[str]:
    """Copy own packages/modules into dest; returns their top-level names."""
    names = []
    for path in paths:
        if path.is_dir():
            shutil.copytree(path, dest / path.name, ignore=_ignore_or_refuse_links, symlinks=True)
            names.append(path.name)
        else:
            shutil.copyfile(path, dest / path.name)
            names.append(path.stem)
    return names
