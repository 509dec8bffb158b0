"""Tiny wheels and a PEP 503 "simple" index on disk, for builds without any network.

Hermetic tests install from `file:///…/simple` built here; `lock_entry` gives the lock entries
(real sha256 of the wheels) that tests/lockfactory.py turns into a Pipfile + Pipfile.lock.
"""

from __future__ import annotations

import base64
import hashlib
import html
import shutil
import struct
import subprocess
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: A fixed timestamp keeps every wheel, and so every hash in a lock, the same from run to run.
_ZIP_TIME = (2020, 1, 1, 0, 0, 0)
#: A shared library with one function, loaded with ctypes (no Python headers needed).
TINY_C = "int tiny_add(int a, int b) { return a + b; }\n"
#: The same with many exported functions: a symbol table worth stripping (over 16 KB).
MANY_C = TINY_C + "".join(
    f"static int f{i}(int x) {{ return x * {i} + 1; }}\nint g{i}(int x) {{ return f{i}(x) - {i}; }}\n"
    for i in range(600)
)


@dataclass(frozen=True)
class Wheel:
    name: str
    version: str
    path: Path

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def write_wheel(dest: Path, name: str, version: str, tag: str, files: Mapping[str, bytes]) -> Wheel:
    """A wheel with METADATA, WHEEL and a RECORD that hashes every other member."""
    dist = name.replace("-", "_")
    dist_info = f"{dist}-{version}.dist-info"
    members = dict(files)
    members[f"{dist_info}/METADATA"] = (f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                                        "Summary: a test wheel\n").encode()
    members[f"{dist_info}/WHEEL"] = (f"Wheel-Version: 1.0\nGenerator: tests.wheelhouse\n"
                                     f"Root-Is-Purelib: {'true' if tag.endswith('-none-any') else 'false'}\n"
                                     f"Tag: {tag}\n").encode()
    record = "".join(f"{path},{_record_hash(data)},{len(data)}\n" for path, data in members.items())
    members[f"{dist_info}/RECORD"] = (record + f"{dist_info}/RECORD,,\n").encode()
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / f"{dist}-{version}-{tag}.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for member, data in members.items():
            info = zipfile.ZipInfo(member, _ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
    return Wheel(name, version, path)


def compile_shared_object(workdir: Path, source: str = TINY_C) -> bytes | None:
    """A real shared object for the host machine built with `cc -shared`, or None without cc."""
    cc = shutil.which("cc")
    if cc is None:
        return None
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "tiny.c").write_text(source)
    subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", str(workdir / "libtiny.so"),
                    str(workdir / "tiny.c")], check=True, capture_output=True)
    return (workdir / "libtiny.so").read_bytes()


def section_names(data: bytes) -> list[str]:
    """Section names of a 64-bit little-endian ELF file (what cc builds on the test machines)."""
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    headers = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    names = headers[shstrndx]
    table = data[names[4] : names[4] + names[5]]
    return [table[h[0] : table.index(b"\0", h[0])].decode() for h in headers]


def native_files(package: str, shared_object: bytes) -> dict[str, bytes]:
    """A package whose import loads its bundled libtiny.so and exposes tiny_add."""
    init = ("import ctypes, os\n"
            "_lib = ctypes.CDLL(os.path.join(os.path.dirname(__file__), 'libtiny.so'))\n"
            "def tiny_add(a, b):\n"
            "    return _lib.tiny_add(a, b)\n")
    return {f"{package}/__init__.py": init.encode(), f"{package}/libtiny.so": shared_object}


def simple_index(root: Path, wheels: list[Wheel]) -> Path:
    """PEP 503 layout: root/simple/<normalised name>/index.html linking each wheel with #sha256."""
    simple = root / "simple"
    by_name: dict[str, list[Wheel]] = {}
    for wheel in wheels:
        by_name.setdefault(wheel.name.lower().replace("_", "-"), []).append(wheel)
    for name, group in by_name.items():
        folder = simple / name
        folder.mkdir(parents=True, exist_ok=True)
        links = []
        for wheel in group:
            shutil.copyfile(wheel.path, folder / wheel.path.name)
            href = html.escape(f"{wheel.path.name}#sha256={wheel.sha256}")
            links.append(f'<a href="{href}">{html.escape(wheel.path.name)}</a><br/>')
        (folder / "index.html").write_text(
            f"<!DOCTYPE html>\n<html><body>\n{chr(10).join(links)}\n</body></html>\n")
    root_links = "".join(f'<a href="{n}/">{n}</a><br/>\n' for n in sorted(by_name))
    (simple / "index.html").write_text(f"<!DOCTYPE html>\n<html><body>\n{root_links}</body></html>\n")
    return simple


def lock_entry(*wheels: Wheel) -> dict[str, Any]:
    """The Pipfile.lock entry of one release made of these wheels (for lockfactory.make_project)."""
    versions = {w.version for w in wheels}
    assert len(versions) == 1, f"one release per entry, got {versions}"
    return {"version": f"=={versions.pop()}", "hashes": sorted(f"sha256:{w.sha256}" for w in wheels),
            "index": "pypi"}


def write_code(project: Path, code: Mapping[str, str]) -> Path:
    """The project's own files, e.g. {"app/__init__.py": "..."}."""
    for relative, text in code.items():
        path = project / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return project
