"""The strip step in real builds: a hermetic wheel with a real shared object full of symbols."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import wheelhouse
from layer_builder import limits
from layer_builder.errors import LayerBuildError
from layer_builder.lock import IndexPolicy
from layer_builder.pipeline import BuildRequest, BuildResult, build
from layer_builder.target import Target
from lockfactory import make_project
from test_wheelhouse import HOST_ARCH, NO_NETWORK
from wheelhouse import MANY_C, Wheel, lock_entry, section_names, write_code

SO = "python/tinymany/libtiny.so"
APP = "import tinymany\n\ndef run():\n    return tinymany.tiny_add(2, 3)\n"
#: Sources enough to size Lambda's limit against in the tests below (about 20 KB); mostly comments,
#: so that the bytecode is smaller than the source, as the builder's estimate expects of real code.
BIG = "".join(f"# {'why this value ':.<60} {i}\nVALUE_{i} = {i}\n" for i in range(250))


@pytest.fixture(scope="module")
def house(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Wheel, bytes]:
    if not HOST_ARCH:
        pytest.skip(f"Lambda has no architecture for this machine ({os.uname().machine})")
    root = tmp_path_factory.mktemp("strip-house")
    library = wheelhouse.compile_shared_object(root / "cc", MANY_C)
    if library is None:
        pytest.skip("no C compiler (cc): the test wheel needs a real shared object with symbols")
    wheel = wheelhouse.write_wheel(root / "wheels", "tinymany", "1.0.0",
                                   f"cp313-cp313-manylinux_2_17_{os.uname().machine}",
                                   wheelhouse.native_files("tinymany", library))  # fmt: skip
    return wheelhouse.simple_index(root, [wheel]), wheel, library


def project(tmp_path: Path, wheel: Wheel, strip: str) -> Path:
    root = make_project(tmp_path / "proj", {"tinymany": lock_entry(wheel)}).root
    (root / "pyproject.toml").write_text(f'[tool.layer-builder]\nname = "many"\n{strip}\n')
    return write_code(root, {"manyapp/__init__.py": APP, "manyapp/big.py": BIG})


def local_build(simple: Path, source: Path, output: Path, cache_dir: Path | None) -> BuildResult:
    return build(BuildRequest(
        source=source, output=output, target=Target("python3.13", HOST_ARCH),
        index=IndexPolicy(override=simple.as_uri()), cache_dir=cache_dir,
        environ={**os.environ, **NO_NETWORK}))  # fmt: skip


def short_of_room(built: BuildResult) -> int:
    """A limit that fits the layer but leaves 4 KB less than its sources need for bytecode."""
    with zipfile.ZipFile(built.output) as zf:
        infos = [
            i for i in zf.infolist() if not i.filename.endswith((".pyc", ".layer-builder.json"))
        ]
    files = sum(i.file_size for i in infos)
    sources = sum(i.file_size for i in infos if i.filename.endswith(".py"))
    return files + limits.MANIFEST_ALLOWANCE + sources - 4096


def record_row(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"tinymany/libtiny.so,sha256={digest},{len(data)}"


def test_strip_true_ships_the_library_without_symbols_and_it_still_works(
    house, tmp_path: Path, cache_dir: Path
) -> None:
    simple, wheel, library = house
    result = local_build(simple, project(tmp_path, wheel, "strip = true"), tmp_path / "l.zip",
                         cache_dir)  # fmt: skip
    with zipfile.ZipFile(result.output) as zf:
        shipped = zf.read(SO)
        record = zf.read("python/tinymany-1.0.0.dist-info/RECORD").decode()
        zf.extractall(tmp_path / "opt")
    assert ".symtab" not in section_names(shipped) and ".symtab" in section_names(library)
    assert len(shipped) < len(library)
    assert record_row(shipped) in record.splitlines(), "RECORD lists the stripped file"
    report = result.report
    assert report.stripped == {"mode": "always", "files": 1, "reused": 0, "left_as_is": 0,
                               "freed_bytes": len(library) - len(shipped)}  # fmt: skip
    assert report.checks["imports"] == "ok: manyapp"  # the check loaded the stripped library
    done = subprocess.run(
        [sys.executable, "-S", "-I", "-c",
         "import sys; sys.path[:0] = [sys.argv[1]]; import manyapp; print(manyapp.run())",
         str(tmp_path / "opt" / "python")],
        env={"PATH": os.environ.get("PATH", ""), "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert (done.returncode, done.stdout.strip()) == (0, "5"), done.stderr


def test_a_second_build_reuses_the_stripped_file_and_a_tampered_one_is_made_again(
    house, tmp_path: Path, cache_dir: Path
) -> None:
    simple, wheel, _ = house
    source = project(tmp_path, wheel, "strip = true")
    first = local_build(simple, source, tmp_path / "one.zip", None)
    second = local_build(simple, source, tmp_path / "two.zip", cache_dir)
    (source / "manyapp" / "extra.py").write_text("X = 1\n")  # not the same build: no whole reuse
    third = local_build(simple, source, tmp_path / "three.zip", cache_dir)
    assert third.report.stripped["reused"] == 1
    blobs = list((cache_dir / "wheels").glob("*.strip"))
    assert len(blobs) == 1
    blob = blobs[0]
    blob.write_bytes(blob.read_bytes()[:-1] + bytes([blob.read_bytes()[-1] ^ 1]))
    (source / "manyapp" / "extra.py").write_text("X = 2\n")
    fourth = local_build(simple, source, tmp_path / "four.zip", cache_dir)
    assert fourth.report.stripped["reused"] == 0, (
        "a stripped file that fails its sha256 is not used"
    )
    shipped = {}
    for result in (first, second, third, fourth):
        with zipfile.ZipFile(result.output) as zf:
            shipped[result.output.name] = zf.read(SO)
    assert len(set(shipped.values())) == 1, "the same stripped bytes, cached or not"


def test_auto_strips_only_when_the_layer_needs_the_room(
    house, tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    simple, wheel, library = house
    source = project(tmp_path, wheel, 'strip = "auto"\nheadroom = 0')
    roomy = local_build(simple, source, tmp_path / "roomy.zip", cache_dir)
    with zipfile.ZipFile(roomy.output) as zf:
        assert zf.read(SO) == library, "with room to spare the wheel's bytes ship as they are"
    assert roomy.report.stripped["files"] == 0
    monkeypatch.setattr(limits, "MAX_UNZIPPED_BYTES", short_of_room(roomy))
    (source / "manyapp" / "extra.py").write_text("X = 1\n")
    squeezed = local_build(simple, source, tmp_path / "tight.zip", cache_dir)
    assert squeezed.report.stripped["files"] == 1
    assert squeezed.report.bytecode["dropped"] == 0, "the room went to bytecode"


def test_strip_false_never_strips_even_when_bytecode_is_short_of_room(
    house, tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    simple, wheel, library = house
    source = project(tmp_path, wheel, "strip = false\nheadroom = 0")
    roomy = local_build(simple, source, tmp_path / "roomy.zip", cache_dir)
    monkeypatch.setattr(limits, "MAX_UNZIPPED_BYTES", short_of_room(roomy))
    (source / "manyapp" / "extra.py").write_text("X = 1\n")
    result = local_build(simple, source, tmp_path / "never.zip", cache_dir)
    with zipfile.ZipFile(result.output) as zf:
        assert zf.read(SO) == library
    assert result.report.stripped["files"] == 0


def test_a_layer_the_check_refuses_leaves_no_zip_though_it_was_written_beside_the_check(
    house, tmp_path: Path, cache_dir: Path
) -> None:
    simple, wheel, _ = house
    source = project(tmp_path, wheel, "strip = true")
    (source / "manyapp" / "__init__.py").write_text("import tinymany\nimport not_in_the_layer\n")
    output = tmp_path / "out" / "refused.zip"
    with pytest.raises(LayerBuildError, match="not_in_the_layer"):
        local_build(simple, source, output, cache_dir)
    assert not output.parent.exists() or not list(output.parent.iterdir())
