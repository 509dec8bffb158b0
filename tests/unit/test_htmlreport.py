"""The HTML picture's data and drawing, without a browser (tests/browser/ opens it in chromium)."""

from __future__ import annotations

import re

from layer_builder import htmlreport
from layer_builder.inspection import bytecode_coverage, layer_tree


def test_tree_groups_bytes_by_package_then_directory() -> None:
    owners = {"numpy": "numpy", "numpy.libs": "numpy", "numpy-2.1.dist-info": "numpy", "six.py": "six"}
    files = [("numpy/_core/a.so", 700), ("numpy/_core/b.py", 100), ("numpy/linalg/c.so", 150),
             ("numpy/__init__.py", 10), ("numpy.libs/libopenblas.so", 900),
             ("numpy-2.1.dist-info/RECORD", 5), ("six.py", 30), ("__pycache__/six.cpython-313.pyc", 20),
             ("stray/x.py", 3)]
    tree = layer_tree(files, owners)
    assert list(tree) == ["numpy", "six", "(other)"]
    assert tree["numpy"] == {"numpy.libs/": 900, "numpy/_core/": 800, "numpy/linalg/": 150,
                             "numpy/ (files)": 10, "numpy-2.1.dist-info/": 5}
    assert tree["six"] == {"six.py": 30, "__pycache__/": 20}
    assert sum(sum(d.values()) for d in tree.values()) == sum(s for _, s in files)


def test_bytecode_coverage_counts_modules_with_a_pyc() -> None:
    paths = ["a/__init__.py", "a/__pycache__/__init__.cpython-313.pyc", "a/m.py", "six.py",
             "__pycache__/six.cpython-313.pyc", "a/data.txt"]
    assert bytecode_coverage(paths) == {"modules": 3, "compiled": 2}


def _picture(tree: dict, **kwargs) -> str:
    total = sum(sum(d.values()) for d in tree.values())
    return htmlreport.render(htmlreport.Picture(title="t", tree=tree, zipped_bytes=total // 2,
                                                unzipped_bytes=total, files=3, **kwargs))


def _areas(page: str) -> dict[str, float]:
    boxes = re.findall(r'<g class="package" data-package="([^"]*)" data-bytes="\d+">'
                       r'<rect class="package-box" x="[\d.]+" y="[\d.]+" width="([\d.]+)" '
                       r'height="([\d.]+)"', page)
    return {name: float(w) * float(h) for name, w, h in boxes}


def test_box_areas_follow_bytes() -> None:
    page = _picture({"big": {"big/": 6000}, "mid": {"mid/": 3000}, "small": {"small/": 1000}})
    areas = _areas(page)
    total = htmlreport.WIDTH * htmlreport.HEIGHT
    for name, size in (("big", 6000), ("mid", 3000), ("small", 1000)):
        assert abs(areas[name] / total - size / 10000) < 0.01, areas


def test_many_packages_are_capped_and_still_ordered() -> None:
    tree = {f"p{i:03}": {f"p{i}/": 1000 - i} for i in range(100)}
    areas = _areas(_picture(tree))
    assert len(areas) == htmlreport.MAX_PACKAGES
    assert "(61 smaller packages)" in areas


def test_names_are_escaped_and_the_page_cannot_fetch_or_run_anything() -> None:
    page = _picture({'<script>alert("x")</script>': {"a/": 10}})
    assert "<script>" not in page and "&lt;script&gt;alert(&quot;x&quot;)" in page
    assert "default-src 'none'" in page
    assert not re.search(r"(src|href)=\"(https?:)?//", page)


def test_the_report_adds_slimming_headroom_and_bytecode_details() -> None:
    report = {"layer_name": "x", "slimmed": [{"rule": "tests", "files": 12, "bytes": 2_000_000}],
              "bytecode": {"mode": "auto", "kept": 10}, "warnings": ["careful"], "runtime": "python3.13",
              "arch": "arm64"}
    page = _picture({"a": {"a/": 100}}, report=report, headroom_bytes=10_000_000,
                    coverage={"modules": 4, "compiled": 3})
    assert "Slimming removed 2.0 MB" in page and "<td>tests</td>" in page
    assert "3 of 4 modules carry bytecode (75.0 %)" in page
    assert "the build keeps 10.0 MB as headroom" in page and "careful" in page
    assert "python3.13 arm64" in page
    assert "Stripping" not in page


def test_the_report_says_what_stripping_took_out() -> None:
    stripped = {"mode": "auto", "files": 16, "freed_bytes": 19_735_984, "reused": 0}
    for slimmed in ([], [{"rule": "tests", "files": 1, "bytes": 10}]):
        page = _picture({"a": {"a/": 100}}, report={"layer_name": "x", "slimmed": slimmed,
                                                     "stripped": stripped})
        assert "Stripping removed 19.7 MB of symbol tables from 16 shared objects" in page
        assert "(strip = auto)" in page
