"""Lock entries as `pipenv lock` writes them, from the real package index at run time: every file
of the release with its sha256 (the index's own listing, read with the engine's fetcher)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from layer_builder import fetch
from layer_builder.lock import IndexPolicy
from layer_builder.pipeline import BuildRequest, BuildResult, build
from layer_builder.target import Target
from lockfactory import make_project
from wheelhouse import write_code


def index_entry(name: str, version: str) -> dict[str, Any]:
    listed = fetch.IndexClient(os.environ).project_files(fetch.default_index(), name)
    hashes = sorted(f"sha256:{f.sha256}" for f in listed
                    if (nv := fetch._version_of(f.filename)) and str(nv[1]) == version and f.sha256)
    assert hashes, f"{name}=={version} has no files on the index"
    return {"version": f"=={version}", "hashes": hashes, "index": "pypi"}


def indexed_project(root: Path, pins: dict[str, str], code: dict[str, str]) -> Path:
    made = make_project(root, {name: index_entry(name, version) for name, version in pins.items()})
    write_code(made.root, code)
    return made.root


def build_for(source: Path, output: Path, target: Target, cache: Path,
              allow_sdist: frozenset[str] = frozenset()) -> BuildResult:
    # The lock's ${PIP_INDEX_URL} is unset here: the default index, as the CLI would use it.
    return build(BuildRequest(source=source, output=output, target=target, cache_dir=cache,
                              index=IndexPolicy(environ={}), allow_sdist=allow_sdist))
