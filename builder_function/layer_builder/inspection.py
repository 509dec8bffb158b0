"""`inspect`: the size breakdown and target check of any existing layer zip, ours or not."""

from __future__ import annotations

import json
import zipfile
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path

from . import check, limits
from .errors import InputError, LayerBuildError
from .package import MANIFEST_NAME
from .report import owner_of, owners_from_dist_info, package_sizes, path_parts
from .target import Target

#: What reading a member of someone else's zip can raise: encrypted (RuntimeError), an unknown
#: compression method (NotImplementedError), corrupt data (zlib.error, BadZipFile, EOFError).
_UNREADABLE = (RuntimeError, NotImplementedError, zlib.error, zipfile.BadZipFile, EOFError, OSError)


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, size: int = -1) -> bytes | None:
    """The member's first `size` bytes (all when -1), or None when it cannot be read."""
    try:
        with zf.open(info) as member:
            return member.read(size)
    except _UNREADABLE:
        return None


def _read_manifest(zf: zipfile.ZipFile, name: str) -> dict:
    """The manifest of a layer this builder made; {} for any other layer."""
    try:
        data = json.loads(_read_member(zf, zf.getinfo(name)) or b"")
    except (KeyError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def layer_tree(
    files: Iterable[tuple[str, int]], owners: Mapping[str, str]
) -> dict[str, dict[str, int]]:
    """Package → where in it → bytes, largest first.

    "Where" is the package's top-level directory one level down (`numpy/_core/`, `numpy.libs/`),
    since most packages have one top-level directory: `numpy/ (files)` for the modules directly
    in it, `six.py` for a top-level module, and metadata directories whole (`*.dist-info/`).
    """
    tree: dict[str, dict[str, int]] = {}
    for path, size in files:
        parts = path_parts(path)
        if len(parts) == 1:
            top = parts[0]
        elif parts[0].endswith((".dist-info", ".libs")) or parts[0] == "__pycache__":
            top = f"{parts[0]}/"
        elif len(parts) == 2:
            top = f"{parts[0]}/ (files)"
        else:
            top = f"{parts[0]}/{parts[1]}/"
        entries = tree.setdefault(owner_of(path, owners), {})
        entries[top] = entries.get(top, 0) + size
    ordered = {
        pkg: dict(sorted(d.items(), key=lambda kv: (-kv[1], kv[0]))) for pkg, d in tree.items()
    }
    return dict(sorted(ordered.items(), key=lambda kv: (-sum(kv[1].values()), kv[0])))


def bytecode_coverage(paths: Iterable[str]) -> dict[str, int]:
    """How many .py modules have a .pyc for some CPython beside them (in __pycache__)."""
    names = set(paths)
    compiled_stems = set()
    for name in names:  # string operations: a layer has thousands of names
        folder, _, file = name.rpartition("/")
        if file.endswith(".pyc") and (folder == "__pycache__" or folder.endswith("/__pycache__")):
            parent = folder[: -len("__pycache__")].rstrip("/")
            stem = file.split(".", 1)[0]
            compiled_stems.add(f"{parent}/{stem}" if parent else stem)
    modules = [n for n in names if n.endswith(".py")]
    compiled = sum(1 for n in modules if n[:-3] in compiled_stems)
    return {"modules": len(modules), "compiled": compiled}


def inspect_zip(path: Path, target: Target | None = None) -> dict:
    """Size breakdown and target check of any existing layer zip."""
    try:
        zf = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise InputError(f"{path} is not a readable zip: {exc}") from None
    unreadable: list[str] = []
    with zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
        prefix = f"{limits.LAYER_PYTHON_DIR}/"
        outside = [i.filename for i in infos if not i.filename.startswith(prefix)]
        rel = {
            i.filename: i.filename[len(prefix) :] for i in infos if i.filename.startswith(prefix)
        }
        dist_infos: dict[str, dict[str, str]] = {}
        for info in infos:
            parts = rel.get(info.filename, "").split("/")
            if (
                len(parts) == 2
                and parts[0].endswith(".dist-info")
                and parts[1] in ("METADATA", "RECORD")
            ):
                data = _read_member(zf, info)
                if data is None:
                    unreadable.append(info.filename)
                else:
                    dist_infos.setdefault(parts[0], {})[parts[1]] = data.decode("utf-8", "replace")
        owners = owners_from_dist_info(
            (d, v.get("METADATA", ""), v.get("RECORD", "")) for d, v in sorted(dist_infos.items())
        )
        manifest_data = _read_manifest(zf, prefix + MANIFEST_NAME)
        own = manifest_data.get("own_packages")
        owners |= (
            {n: f"{n} (own)" for n in own if isinstance(n, str)} if isinstance(own, list) else {}
        )
        files = [(rel[i.filename], i.file_size) for i in infos if i.filename in rel]
        sizes = package_sizes(files, owners)
        shared, broken = [], []
        for info in infos:
            if check.is_shared_object(info.filename):
                header = _read_member(zf, info, 20)
                if header is None:
                    broken.append(info.filename)
                else:
                    shared.append((info.filename, header))
    machines: dict[str, int] = {}
    for _name, header in shared:
        machine = check.machine_name(check.elf_machine(header))
        machines[machine] = machines.get(machine, 0) + 1
    if broken:
        machines["unreadable"] = len(broken)
    unzipped = sum(i.file_size for i in infos)
    result = {
        "path": str(path),
        "files": len(infos),
        "zipped_bytes": path.stat().st_size,
        "unzipped_bytes": unzipped,
        "limit_bytes": limits.MAX_UNZIPPED_BYTES,
        "fits": unzipped <= limits.MAX_UNZIPPED_BYTES,
        "publish_via_s3": path.stat().st_size > limits.MAX_DIRECT_UPLOAD_BYTES,
        "outside_python_dir": outside[:20],
        "binaries": machines,
        "sizes": sizes,
        "manifest": manifest_data,
        "unreadable": sorted(unreadable + broken)[:20],
        "tree": layer_tree(files, owners),
        "bytecode": bytecode_coverage(rel.values()),
    }
    if broken:
        # No machine can load a shared object that cannot be read, so this fails for any target.
        shown = ", ".join(broken[:5]) + (f" and {len(broken) - 5} more" if len(broken) > 5 else "")
        result["target_ok"], result["target_check"] = (
            False,
            (
                f"{len(broken)} shared objects cannot be read (encrypted or corrupt): {shown}. "
                "Rebuild the layer zip without encryption."
            ),
        )
    elif target is not None:
        try:
            check.check_binaries(shared, target)
            result["target_ok"], result["target_check"] = True, f"ok for {target.machine}"
        except LayerBuildError as exc:
            result["target_ok"], result["target_check"] = False, str(exc)
    return result
