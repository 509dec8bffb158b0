"""Hermetic builds: tiny wheels made here, served as a file:// PEP 503 index, no network at all.

The installer gets proxies on a closed loopback port, so any attempt to reach a real index fails
the build instead of passing quietly.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import wheelhouse
from layer_builder.errors import InputError, NoWheelError, TargetMismatchError
from layer_builder.lock import IndexPolicy
from layer_builder.pipeline import BuildRequest, BuildResult, build
from layer_builder.target import ARCH_MACHINE, ELF_MACHINE, Target
from lockfactory import make_project
from wheelhouse import Wheel, lock_entry, write_code

HOST_ARCH = {machine: arch for arch, machine in ARCH_MACHINE.items()}.get(os.uname().machine, "")
OTHER_ARCH = {"x86_64": "arm64", "arm64": "x86_64"}.get(HOST_ARCH, "")
NO_NETWORK = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
              "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
              "NO_PROXY": "", "no_proxy": ""}
APP = ("import tinypure, tinynative\n\n"
       "def run():\n"
       "    return tinypure.double(tinynative.tiny_add(2, 3))\n")


@dataclass(frozen=True)
class House:
    simple: Path
    pure: Wheel
    native: Wheel  # host machine .so, tagged for the host machine
    liar: Wheel  # host machine .so, tagged for the other machine


@pytest.fixture(scope="module")
def house(tmp_path_factory: pytest.TempPathFactory) -> House:
    if not HOST_ARCH:
        pytest.skip(f"Lambda has no architecture for this machine ({os.uname().machine})")
    root = tmp_path_factory.mktemp("wheelhouse")
    shared_object = wheelhouse.compile_shared_object(root / "cc")
    if shared_object is None:
        pytest.skip("no C compiler (cc): the native test wheels need a real shared object")
    host, other = ARCH_MACHINE[HOST_ARCH], ARCH_MACHINE[OTHER_ARCH]
    wheels = root / "wheels"
    pure = wheelhouse.write_wheel(wheels, "tinypure", "1.0.0", "py3-none-any",
                                  {"tinypure.py": b"def double(x):\n    return 2 * x\n"})
    native = wheelhouse.write_wheel(wheels, "tinynative", "1.0.0",
                                    f"cp313-cp313-manylinux_2_17_{host}",
                                    wheelhouse.native_files("tinynative", shared_object))
    liar = wheelhouse.write_wheel(wheels, "tinyliar", "1.0.0", f"cp313-cp313-manylinux_2_17_{other}",
                                  wheelhouse.native_files("tinyliar", shared_object))
    return House(wheelhouse.simple_index(root, [pure, native, liar]), pure, native, liar)


def local_build(house: House, project: Path, output: Path, arch: str = "",
                cache_dir: Path | None = None) -> BuildResult:
    return build(BuildRequest(
        source=project, output=output, target=Target("python3.13", arch or HOST_ARCH),
        index=IndexPolicy(override=house.simple.as_uri()), cache_dir=cache_dir,
        environ={**os.environ, **NO_NETWORK}))


@pytest.fixture
def app_project(house: House, tmp_path: Path) -> Path:
    project = make_project(tmp_path / "hermetic", {"tinypure": lock_entry(house.pure),
                                                   "tinynative": lock_entry(house.native)})
    return write_code(project.root, {"hermeticapp/__init__.py": APP})


def test_uv_installs_from_a_file_index_into_a_working_layer(
        house: House, app_project: Path, tmp_path: Path, cache_dir: Path) -> None:
    result = local_build(house, app_project, tmp_path / "layer.zip", cache_dir=cache_dir)
    with zipfile.ZipFile(result.output) as zf:
        names = set(zf.namelist())
        so_header = zf.read("python/tinynative/libtiny.so")[:20]
        zf.extractall(tmp_path / "opt")
    assert {"python/tinypure.py", "python/__pycache__/tinypure.cpython-313.pyc",
            "python/tinynative/__init__.py", "python/tinynative/libtiny.so",
            "python/tinypure-1.0.0.dist-info/RECORD", "python/tinynative-1.0.0.dist-info/METADATA",
            "python/hermeticapp/__init__.py"} <= names
    assert so_header[:4] == b"\x7fELF"
    assert int.from_bytes(so_header[18:20], "little") == ELF_MACHINE[HOST_ARCH]
    report = result.report
    assert report.packages == [{"name": "tinynative", "version": "1.0.0"},
                               {"name": "tinypure", "version": "1.0.0"}]
    assert report.checks["binaries"] == f"1 shared objects for {ARCH_MACHINE[HOST_ARCH]}"
    assert report.checks["imports"] == "ok: hermeticapp"
    assert list(report.sizes)[:1] == ["tinynative"]  # the .so is the bulk of the layer
    # The layer works on its own: the own package loads the bundled library through ctypes.
    done = subprocess.run(
        [sys.executable, "-S", "-I", "-c",
         "import sys; sys.path[:0] = [sys.argv[1]]; import hermeticapp; print(hermeticapp.run())",
         str(tmp_path / "opt" / "python")],
        env={"PATH": os.environ.get("PATH", ""), "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True, text=True, timeout=60, check=False)
    assert (done.returncode, done.stdout.strip()) == (0, "10"), done.stderr


def test_builds_from_a_file_index_are_byte_identical(house: House, app_project: Path,
                                                      tmp_path: Path) -> None:
    # No caches: each install is fresh, so nothing uv records about its own cache may leak in.
    one = local_build(house, app_project, tmp_path / "one.zip")
    two = local_build(house, app_project, tmp_path / "two.zip")
    assert one.output.read_bytes() == two.output.read_bytes()
    with zipfile.ZipFile(one.output) as zf:
        assert not [n for n in zf.namelist() if n.endswith("uv_cache.json")]
        record = zf.read("python/tinypure-1.0.0.dist-info/RECORD").decode()
    assert "uv_cache.json" not in record


def test_wheel_tagged_for_the_target_with_a_foreign_so_is_refused(
        house: House, tmp_path: Path, cache_dir: Path) -> None:
    project = make_project(tmp_path / "liar", {"tinyliar": lock_entry(house.liar)}).root
    output = tmp_path / "out" / "liar.zip"
    with pytest.raises(TargetMismatchError) as refused:
        local_build(house, project, output, arch=OTHER_ARCH, cache_dir=cache_dir)
    host, other = ARCH_MACHINE[HOST_ARCH], ARCH_MACHINE[OTHER_ARCH]
    assert f"not built for {other}: tinyliar/libtiny.so ({host})" in str(refused.value)
    assert not output.parent.exists() or not list(output.parent.iterdir())
    assert not list(cache_dir.rglob("*.part")), "nothing partial stays for a refused build"


def test_package_without_a_wheel_for_the_target_is_refused(house: House, app_project: Path,
                                                           tmp_path: Path, cache_dir: Path) -> None:
    with pytest.raises(NoWheelError) as refused:
        local_build(house, app_project, tmp_path / "x.zip", arch=OTHER_ARCH, cache_dir=cache_dir)
    assert "tinynative==1.0.0" in str(refused.value)
    assert "tinypure" not in str(refused.value)


def test_own_module_named_like_a_dependency_module_is_refused(house: House, tmp_path: Path,
                                                              cache_dir: Path) -> None:
    project = make_project(tmp_path / "clash", {"tinypure": lock_entry(house.pure)}).root
    write_code(project, {"tinypure.py": "def double(x):\n    return x\n"})
    with pytest.raises(InputError) as refused:
        local_build(house, project, tmp_path / "clash.zip", cache_dir=cache_dir)
    assert "own tinypure clashes with a dependency" in str(refused.value)


def test_a_lock_sharing_wheels_with_an_earlier_build_downloads_only_the_new_ones(
        house: House, tmp_path: Path, cache_dir: Path) -> None:
    first = make_project(tmp_path / "first", {"tinypure": lock_entry(house.pure)}).root
    one = local_build(house, first, tmp_path / "one.zip", cache_dir=cache_dir)
    assert one.report.dependency_cache == "miss" and one.report.downloaded_bytes > 0
    # Another team's lock: the same tinypure wheel plus a new one.
    second = make_project(tmp_path / "second", {"tinypure": lock_entry(house.pure),
                                                "tinynative": lock_entry(house.native)}).root
    two = local_build(house, second, tmp_path / "two.zip", cache_dir=cache_dir)
    assert two.report.dependency_cache == "partial: 1 of 2 wheels cached"
    assert two.report.downloaded_bytes == house.native.path.stat().st_size
    again = local_build(house, second, tmp_path / "again.zip", cache_dir=cache_dir)
    assert again.report.dependency_cache == "hit" and again.report.downloaded_bytes == 0
    assert again.output.read_bytes() == two.output.read_bytes()
