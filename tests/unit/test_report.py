"""layer_builder.report: who owns which bytes, human sizes, and the JSON report."""

from __future__ import annotations

import json

import pytest

from layer_builder import limits
from layer_builder.report import (
    UNOWNED,
    BuildReport,
    Timings,
    human,
    owners_from_dist_info,
    package_sizes,
)

SIX = ("six-1.17.0.dist-info", "Metadata-Version: 2.1\nName: six\nVersion: 1.17.0\n\nLong text\n",
       "six.py,sha256=abc,34549\n"
       "__pycache__/six.cpython-313.pyc,,\n"
       "six-1.17.0.dist-info/METADATA,sha256=def,1658\n"
       "six-1.17.0.dist-info/RECORD,,\n")
MARKUPSAFE = ("MarkupSafe-3.0.3.dist-info", "Metadata-Version: 2.1\nName: MarkupSafe\nVersion: 3.0.3\n",
              "markupsafe/__init__.py,sha256=a,100\n"
              "markupsafe/_speedups.cpython-313-x86_64-linux-gnu.so,sha256=b,200\n"
              '"markupsafe/odd,name.txt",sha256=c,3\n'
              "MarkupSafe-3.0.3.dist-info/RECORD,,\n")
NUMPY = ("numpy-2.3.0.dist-info", "Name: numpy\n",
         "numpy/__init__.py,,\nnumpy.libs/libscipy_openblas64_.so,,\n../../bin/f2py,,\n\n")
NAMELESS = ("some_dist-1.0.dist-info", "Metadata-Version: 2.1\n", "some_mod.py,,\n")
GOOGLE_A = ("googleapis_common_protos-1.0.dist-info", "Name: googleapis-common-protos\n", "google/api/a.py,,\n")
GOOGLE_B = ("protobuf-5.0.dist-info", "Name: protobuf\n", "google/protobuf/b.py,,\n")


def test_owners_from_dist_info():
    owners = owners_from_dist_info([SIX, MARKUPSAFE, NUMPY, NAMELESS])
    assert owners["six.py"] == "six"
    assert owners["six-1.17.0.dist-info"] == "six"
    assert owners["markupsafe"] == "MarkupSafe"
    assert owners["MarkupSafe-3.0.3.dist-info"] == "MarkupSafe"
    assert owners["numpy"] == owners["numpy.libs"] == "numpy"
    assert owners["some_mod.py"] == owners["some_dist-1.0.dist-info"] == "some_dist"
    assert not [k for k in owners if k.startswith("..") or k == "bin"]  # scripts outside the tree


def test_shared_namespace_goes_to_the_first_distribution():
    assert owners_from_dist_info([GOOGLE_A, GOOGLE_B])["google"] == "googleapis-common-protos"
    assert owners_from_dist_info([])  == {}


def test_package_sizes_attribute_every_file():
    owners = owners_from_dist_info([SIX, MARKUPSAFE]) | {"app": "app (own)", "helpers": "helpers (own)"}
    files = [
        ("six.py", 34_549),
        ("__pycache__/six.cpython-313.pyc", 30_000),  # a top-level module's bytecode
        ("six-1.17.0.dist-info/METADATA", 1_658),
        ("markupsafe/__init__.py", 100),
        ("markupsafe/__pycache__/__init__.cpython-313.pyc", 90),
        ("markupsafe/_speedups.cpython-313-x86_64-linux-gnu.so", 200),
        ("app/__init__.py", 10),
        ("app/__pycache__/__init__.cpython-313.pyc", 20),
        ("helpers.py", 5),
        ("__pycache__/helpers.cpython-313.pyc", 7),
        (".layer-builder.json", 400),
        ("__pycache__/stray.cpython-313.pyc", 3),
    ]
    sizes = package_sizes(files, owners)
    assert sizes == {"six": 66_207, UNOWNED: 403, "MarkupSafe": 390, "app (own)": 30,
                     "helpers (own)": 12}
    assert list(sizes) == ["six", UNOWNED, "MarkupSafe", "app (own)", "helpers (own)"]
    assert sum(sizes.values()) == sum(size for _, size in files)


def test_package_sizes_ties_sort_by_name():
    assert list(package_sizes([("b/x", 5), ("a/x", 5), ("c/x", 9)], {"a": "a", "b": "b", "c": "c"})) == [
        "c", "a", "b"]


@pytest.mark.parametrize(("size", "text"), [
    (0, "0 B"), (999, "999 B"), (1000, "1.0 KB"), (1536, "1.5 KB"), (999_949, "999.9 KB"),
    (999_999, "1.0 MB"), (1_000_000, "1.0 MB"), (limits.MAX_UNZIPPED_BYTES, "262.1 MB"),
    (limits.MAX_DIRECT_UPLOAD_BYTES, "52.4 MB"), (3_500_000_000, "3.5 GB"), (5e12, "5000.0 GB"),
])
def test_human(size, text):
    assert human(size) == text


def test_timings_accumulate(monkeypatch):
    clock = iter([10.0, 11.5, 20.0, 20.25])
    monkeypatch.setattr("layer_builder.report.time.perf_counter", lambda: next(clock))
    timings = Timings()
    with timings.phase("install"):
        pass
    with pytest.raises(RuntimeError), timings.phase("install"):
        raise RuntimeError("a failed phase is still timed")
    assert timings.seconds == {"install": 1.75}


def test_build_report_json_and_top_packages():
    report = BuildReport(layer_name="l", layer_version="1.0", description="d", runtime="python3.13",
                         arch="arm64", platform="aarch64-manylinux_2_34", builder_version="0.1.0",
                         sizes={f"p{i}": 100 - i for i in range(15)})
    data = json.loads(report.to_json())
    assert data["layer_name"] == "l" and data["limit_bytes"] == limits.MAX_UNZIPPED_BYTES
    assert data == report.to_dict()
    assert report.top_packages() == [(f"p{i}", 100 - i) for i in range(limits.TOP_PACKAGES_SHOWN)]
    assert report.top_packages(2) == [("p0", 100), ("p1", 99)]
