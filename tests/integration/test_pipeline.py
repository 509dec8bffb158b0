"""pipeline.build end to end with real installs of the mixed fixture (six, markupsafe, colorama).

Each architecture is built once per module into a fresh dependency cache that shares the
session's uv download cache; the tests then read the zips it produced.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import marshal
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import layer_builder
import pytest
from layer_builder import limits
from layer_builder.errors import LayerTooLargeError
from layer_builder.pipeline import BuildRequest, BuildResult, build
from layer_builder.target import Target

pytestmark = pytest.mark.network

MANIFEST = "python/.layer-builder.json"
EM_X86_64, EM_AARCH64 = 62, 183
E_MACHINE = {"x86_64": EM_X86_64, "arm64": EM_AARCH64}
MIXED = Path(__file__).parents[1] / "fixtures" / "projects" / "mixed"
LOCKED = [{"name": "markupsafe", "version": "3.0.3"}, {"name": "six", "version": "1.17.0"}]


@dataclass(frozen=True)
class Built:
    arch: str
    project: Path
    cache: Path
    result: BuildResult

    @property
    def zip(self) -> Path:
        return self.result.output


def copy_mixed(where: Path) -> Path:
    return Path(shutil.copytree(MIXED, where / "mixed"))


def build_mixed(arch: str, tmp_path_factory: pytest.TempPathFactory,
                make_cache_dir: Callable[[Path], Path]) -> Built:
    base = tmp_path_factory.mktemp(f"built-{arch}")
    project = copy_mixed(base)
    cache = make_cache_dir(base / "cache")
    result = build(BuildRequest(source=project, output=base / "out" / f"mixed-{arch}.zip",
                                target=Target("python3.13", arch), cache_dir=cache))
    return Built(arch, project, cache, result)


@pytest.fixture(scope="module")
def x86(tmp_path_factory: pytest.TempPathFactory, make_cache_dir: Callable[[Path], Path]) -> Built:
    return build_mixed("x86_64", tmp_path_factory, make_cache_dir)


@pytest.fixture(scope="module")
def arm64(tmp_path_factory: pytest.TempPathFactory, make_cache_dir: Callable[[Path], Path]) -> Built:
    return build_mixed("arm64", tmp_path_factory, make_cache_dir)


@pytest.fixture(params=["x86_64", "arm64"])
def built(request: pytest.FixtureRequest) -> Built:
    return request.getfixturevalue("x86" if request.param == "x86_64" else "arm64")


def elf_machine(header: bytes) -> int:
    assert header[:4] == b"\x7fELF", "not an ELF file"
    return struct.unpack("<H" if header[5] == 1 else ">H", header[18:20])[0]


def test_every_entry_is_under_python_and_nothing_installer_specific_ships(built: Built) -> None:
    with zipfile.ZipFile(built.zip) as zf:
        names = zf.namelist()
        assert zf.testzip() is None
    assert names and all(n.startswith("python/") and not n.endswith("/") for n in names)
    assert names == sorted(names) and len(set(names)) == len(names)
    # uv's --target leaves its lock file and scripts behind; neither belongs on /opt/python.
    assert not {"python/.lock"} & set(names)
    assert not [n for n in names if n.startswith("python/bin/") or n.endswith("/uv_cache.json")]
    assert built.result.report.files == len(names)


def test_manifest_describes_the_layer(built: Built) -> None:
    report = built.result.report
    with zipfile.ZipFile(built.zip) as zf:
        manifest = json.loads(zf.read(MANIFEST))
        contents = {i.filename: (zf.read(i), (i.external_attr >> 16) & 0o111 != 0)
                    for i in zf.infolist() if i.filename != MANIFEST}
    assert manifest["layer"] == "mixed"
    assert manifest["version"] == ""  # a directory named `mixed` carries no version
    assert manifest["runtime"] == "python3.13"
    assert manifest["architecture"] == built.arch
    assert manifest["platform"] == Target("python3.13", built.arch).uv_platform
    assert manifest["builder_version"] == layer_builder.__version__
    assert manifest["packages"] == LOCKED
    assert manifest["own_packages"] == ["mixedpkg", "mixedutil"]
    assert manifest["lock_hash"] == json.loads(
        (built.project / "Pipfile.lock").read_text())["_meta"]["hash"]["sha256"]
    # The content hash covers every other entry's name, mode and bytes.
    lines = sorted(f"{name}\0{int(exe)}\0{hashlib.sha256(data).hexdigest()}"
                   for name, (data, exe) in contents.items())
    assert manifest["content_hash"] == hashlib.sha256("\n".join(lines).encode()).hexdigest()
    assert manifest["content_hash"] == report.content_hash


def test_colorama_is_skipped_by_its_marker(built: Built) -> None:
    report = built.result.report
    assert report.skipped_by_marker == [{"name": "colorama", "markers": "sys_platform == 'win32'"}]
    assert report.packages == LOCKED
    with zipfile.ZipFile(built.zip) as zf:
        assert not [n for n in zf.namelist() if "colorama" in n.lower()]


def test_shared_objects_are_all_for_the_target_machine(built: Built) -> None:
    with zipfile.ZipFile(built.zip) as zf:
        shared = {n: elf_machine(zf.open(n).read(20)) for n in zf.namelist() if ".so" in n}
    assert shared, "markupsafe ships a native speedups module"
    assert set(shared.values()) == {E_MACHINE[built.arch]}, shared
    machine = Target(arch=built.arch).machine
    assert all(f"-{machine}-linux-gnu.so" in n for n in shared), shared
    assert built.result.report.checks["binaries"] == f"{len(shared)} shared objects for {machine}"


def test_bytecode_is_unchecked_hash_for_313_with_layer_paths(built: Built) -> None:
    with zipfile.ZipFile(built.zip) as zf:
        names = set(zf.namelist())
        pycs = sorted(n for n in names if n.endswith(".pyc"))
        sources = sorted(n for n in names if n.endswith(".py"))
        assert len(pycs) == len(sources), "every shipped .py has its .pyc"
        for name in pycs:
            data = zf.read(name)
            assert name.endswith(".cpython-313.pyc"), name
            assert data[:4] == importlib.util.MAGIC_NUMBER, name  # the venv is 3.13, like the target
            assert int.from_bytes(data[4:8], "little") == 1, f"{name}: not unchecked-hash"
            directory, pyc = name.rsplit("/__pycache__/", 1)
            source = f"{directory}/{pyc.split('.')[0]}.py"
            assert source in names, name
            assert data[8:16] == importlib.util.source_hash(zf.read(source)), f"{name} is stale"
            code = marshal.loads(data[16:])
            assert code.co_filename == f"/opt/{source}", (name, code.co_filename)
    assert built.result.report.bytecode["invalidation"] == "unchecked-hash"


def test_x86_64_layer_imports_under_python_313_from_its_bytecode(x86: Built, tmp_path: Path) -> None:
    if os.uname().machine != "x86_64":
        pytest.skip("x86_64 code does not run on this machine")
    with zipfile.ZipFile(x86.zip) as zf:
        zf.extractall(tmp_path)
    python_dir = tmp_path / "python"
    before = sorted(python_dir.rglob("*"))
    # Sources are only a fallback: unchecked-hash pycs are loaded without reading them, as on /opt.
    (python_dir / "mixedpkg" / "greet.py").write_text("def greet(name):\n    return 'from source'\n")
    code = ("import sys; sys.path[:0] = [sys.argv[1]]; import mixedpkg, markupsafe._speedups as s; "
            "print(mixedpkg.greet('<b>')); print(s.__file__); print(sys.version_info[:2])")
    done = subprocess.run([sys.executable, "-S", "-I", "-c", code, str(python_dir)],
                          env={"PATH": os.environ.get("PATH", ""), "PYTHONDONTWRITEBYTECODE": "1"},
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    greeting, speedups, version = done.stdout.splitlines()[-3:]
    assert greeting == "Hello, &lt;b&gt;!"
    assert speedups.startswith(str(python_dir)), speedups
    assert version == "(3, 13)"
    assert sorted(python_dir.rglob("*")) == before, "the import wrote next to the layer"
    assert x86.result.report.checks["imports"] == "ok: mixedpkg, mixedutil"


def test_arm64_is_checked_on_a_twin_built_for_this_machine(arm64: Built) -> None:
    if os.uname().machine == "aarch64":
        pytest.skip("this machine runs the arm64 import check itself")
    # One rule for both architectures (issue 13 item 2): the same versions, for x86_64.
    assert arm64.result.report.checks["imports"] == (
        "ok: mixedpkg, mixedutil on a x86_64 twin of the layer (same locked versions; one rule "
        "for both architectures)")


def test_builds_are_byte_identical_with_and_without_cache(x86: Built, tmp_path: Path) -> None:
    built = x86
    assert built.result.report.dependency_cache == "miss"
    target = Target("python3.13", built.arch)
    hit = build(BuildRequest(source=built.project, output=tmp_path / "hit.zip", target=target,
                             cache_dir=built.cache))
    assert hit.report.dependency_cache == "hit"
    assert hit.output.read_bytes() == built.zip.read_bytes()
    first, second = (build(BuildRequest(source=built.project, output=tmp_path / f"{n}.zip",
                                        target=target)) for n in ("one", "two"))
    assert first.report.dependency_cache == "off"
    assert first.output.read_bytes() == second.output.read_bytes() == built.zip.read_bytes()
    assert {first.report.content_hash, hit.report.content_hash} == {built.result.report.content_hash}


def test_too_large_layer_is_refused_naming_the_biggest_package(
        x86: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built = x86
    work = tmp_path / "tmp"
    work.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(work))
    monkeypatch.setattr(limits, "MAX_UNZIPPED_BYTES", built.result.report.unzipped_bytes // 2)
    output = tmp_path / "out" / "big.zip"
    with pytest.raises(LayerTooLargeError) as refused:
        build(BuildRequest(source=built.project, output=output, target=Target(arch="x86_64"),
                           cache_dir=built.cache))
    message = str(refused.value)
    biggest = next(iter(built.result.report.sizes))
    assert biggest == "MarkupSafe"
    assert f"Biggest: {biggest} " in message
    assert f"limit of {limits.MAX_UNZIPPED_BYTES:,} bytes" in message
    assert not output.exists() and not list(output.parent.glob("*"))
    assert not list(work.iterdir()), "the work directory was left behind"
    assert not list(built.cache.glob(".staging-*"))


def test_the_layer_is_what_an_install_of_the_same_lock_gives(x86: Built, tmp_path: Path) -> None:
    """Same files as `uv pip install --target` (less what slimming reports and installer
    leftovers), same bytes, importable, and importlib.metadata reads every distribution."""
    from layer_builder.install import find_uv, installer_environment
    from layer_builder.slim import rule_for

    lock_data = json.loads((x86.project / "Pipfile.lock").read_text())
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("".join(
        f"{name}{entry['version']} " + " ".join(f"--hash={h}" for h in entry["hashes"]) + "\n"
        for name, entry in lock_data["default"].items() if name != "colorama"))
    target_dir = tmp_path / "uv-target"
    done = subprocess.run(
        [find_uv(), "pip", "install", "--no-config", "--quiet", "--target", str(target_dir),
         "--python", sys.executable, "--python-version", "3.13", "--python-platform",
         Target("python3.13", "x86_64").uv_platform, "--require-hashes", "--no-deps",
         "--only-binary", ":all:", "-r", str(requirements)],
        env=installer_environment(os.environ, tmp_path / "home", tmp_path / "uv-cache"),
        capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    installed = {p.relative_to(target_dir).as_posix(): p.read_bytes()
                 for p in target_dir.rglob("*") if p.is_file()}
    slimmed = {n for n in installed if rule_for(n, "3.13", packages=frozenset({"markupsafe"}))}
    assert slimmed == {"markupsafe/_speedups.c", "markupsafe/_speedups.pyi"}
    expected = {n for n in installed if n not in slimmed and n != ".lock"}
    with zipfile.ZipFile(x86.zip) as zf:
        layer = {n.removeprefix("python/"): zf.read(n) for n in zf.namelist()}
    own = {n for n in layer if n.startswith(("mixedpkg/", "mixedutil.py", "__pycache__/mixedutil",
                                             ".layer-builder.json"))}
    deps = {n for n in layer if n not in own and "__pycache__/" not in n}
    assert deps == expected
    rewritten = {"INSTALLER", "RECORD", "REQUESTED"}
    for name in expected:
        if name.rsplit("/", 1)[-1] not in rewritten:
            assert layer[name] == installed[name], f"{name} differs from the installed file"
    with zipfile.ZipFile(x86.zip) as zf:
        zf.extractall(tmp_path / "opt")
    code = ("import importlib.metadata as m, sys; sys.path[:0] = [sys.argv[1]]; import six, markupsafe;"
            "print(sorted((d.metadata['Name'], d.version, len(d.files)) for d in "
            "m.distributions(path=[sys.argv[1]])))")
    for where in (tmp_path / "opt" / "python", target_dir):
        ran = subprocess.run([sys.executable, "-S", "-I", "-c", code, str(where)],
                             capture_output=True, text=True, timeout=60, check=False)
        assert ran.returncode == 0, ran.stderr
        if where == target_dir:
            assert ran.stdout.startswith("[('MarkupSafe', '3.0.3', ") and "('six', '1.17.0', " in ran.stdout
        else:
            ours = ran.stdout
    assert ours.startswith("[('MarkupSafe', '3.0.3', ") and "('six', '1.17.0', " in ours
