"""`python -m bench.floor PROJECT OUT.zip`: the floor a layer build cannot go under here.

The wheels' download time plus writing the zip: each locked requirement's wheel for the target is
chosen on the index, downloaded in parallel as soon as it is chosen and hash-checked (the
engine's fetcher), and every member of every wheel is copied raw under python/ with the own
packages. Nothing is slimmed, checked or compiled, so the zip is bigger than a layer and would not
pass the builder's checks.
"""

from __future__ import annotations

import os
import sys
import tempfile
import zipfile
from pathlib import Path

from layer_builder import fetch, lock, project
from layer_builder.package import tree_entries
from layer_builder.target import Target
from layer_builder.zipwriter import raw_entries, write_zip


def main(argv: list[str]) -> int:
    source, out = Path(argv[0]), Path(argv[1])
    target = Target()
    locked = lock.read_lock(source, target, lock.IndexPolicy(environ={}))
    client = fetch.IndexClient(os.environ)
    with tempfile.TemporaryDirectory(prefix="bench-floor-") as tmp:
        wheels = Path(tmp) / "wheels"
        wheels.mkdir()
        # Each download starts as its file is chosen, as in the builder.
        with fetch.Downloads(
            lambda: client, lambda c: wheels / c.filename, lambda *a, **k: None, ""
        ) as downloads:
            chosen = fetch.resolve(
                locked, target, client, pool=downloads.pool, on_chosen=downloads.start
            ).chosen
            downloads.finish(chosen, "")
        entries = []
        for c in chosen:
            path = wheels / c.filename
            with zipfile.ZipFile(path) as zf:
                names = [i.filename for i in zf.infolist() if not i.is_dir()]
            # The floor copies; it does not hash: the entries' sha256 fields are not used here.
            entries += raw_entries(path, {n: "" for n in names}, prefix="python/")
        config = project.load_config(source, source.name)
        own = Path(tmp) / "own"
        own.mkdir()
        project.copy_code(project.detect_code(source, config), own)
        unique = {e.name: e for e in [*entries, *tree_entries(own)]}  # a name two wheels share
        write_zip(out, unique.values())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
