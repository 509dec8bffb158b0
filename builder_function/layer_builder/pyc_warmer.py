"""Bytecode compiled beside the import check, on a second CPU, for modules it will load late.

A cold layer ships few .pyc (the size limit decides), so the import check spends most of its time
compiling: on the heavy fixture `import pandas, pyarrow, numpy, ...` took 1.25 s without bytecode
and 0.37 s with all of it, in one interpreter, while a second CPU sat idle. Here a forked child
compiles layer modules into a private directory and the importer loads them from there:

- The child lists the modules the check will import, depth first as the importer meets them,
  from their top-level import statements (a regular expression: parsing is what costs).
- It compiles that list from the end while the importer works from the start, so the two meet
  in the middle instead of racing for the same module. On the heavy fixture's layer (2 CPUs):
  the check 1.24-1.32 s without the child, 0.86-0.94 s with it (`python -m bench.warm_study`,
  1.34-1.45x over three runs). A
  prototype that compiled what the module being imported names, first come first served, only
  reached 0.91-0.98 s: it kept colliding with the importer. The true import order, from the
  end, reached 0.76 s; no static list knows it (lazy and conditional imports).
- The importer reports each layer module whose bytecode it looks for and the layer lacks: the
  child skips those. That side, and the fork, are import_probe's `Warmer`, which reads the
  child's bytecode only where the layer's own `__pycache__` has none; this file is read in the
  child only, off the importer's path.

The verdict must be the one a check without the child gives. So the child runs no code of the
layer (the layer is off its `sys.path` before it imports anything), leaves every module whose
compile warns to the importer (a layer that turned warnings into errors fails there as it would),
and stays until the importer is done (it is a grandchild: no child of the importer's comes or
goes). One difference is left: the child compiles at a shallow stack, so on 3.10-3.12 a module
within ~2 % of the compiler's nesting limit may load from its bytecode where the importer's own
compile would raise RecursionError (found in review; not seen in real code).

Started only where two CPUs are free (runner decides): on one, the child would slow the check.
Everything stays inside the sandbox, and what it writes serves this one check (the layer's
bytecode is compiled by the builder). Standard library only, Python 3.10 syntax: it runs in the
probe, under every supported target runtime.
"""

import marshal
import os
import re
import struct
import sys
import warnings
from importlib.util import MAGIC_NUMBER

#: Bigger sources are left to the importer: a generated giant would hold the child up, and
#: compiling one can take hundreds of bytes of memory per byte (limits.MAX_COMPILE_MEMORY_BYTES).
MAX_SOURCE_BYTES = 1 << 20
#: Import statements at the start of a line (text is searched with a newline in front): module
#: level, so they run at import. Indented ones may sit in a function; they are left out. No two
#: neighbouring parts match the same characters, and a parenthesis is followed so far only, so
#: crafted text costs linear time (16,000 dots after `from` took 1.1 s with overlapping parts).
_IMPORT = re.compile(
    rb"\n(?:from[ \t]+([\w.]+)[ \t]+import[ \t]+(\([^)]{0,8192}\)|[^\n#;]*)|import[ \t]+([^\n#;]+))"
)


def serve(layer, prefix, read, modules, warm_path):
    """The child's whole life (import_probe forked it): compile until all is done or killed."""
    _Child(layer, prefix, read, modules, warm_path).serve()


class _Child:
    def __init__(self, layer, prefix, read, modules, warm_path):
        self.layer, self.prefix, self.read, self.warm_path = layer, prefix, read, warm_path
        os.set_blocking(read, False)
        site = os.path.join(layer, "lib", "python{}.{}".format(*sys.version_info[:2]))
        site = os.path.join(site, "site-packages")
        self.roots = ([site] if os.path.isdir(site) else []) + [layer]
        #: Every source of the layer (one walk: cheaper than a stat per imported name).
        self.sources = {
            os.path.join(d, f) for d, _, fs in os.walk(layer) for f in fs if f.endswith(".py")
        }
        self.found = {}
        #: Sources the importer began: its own to compile.
        self.begun = set()
        self.made = set()
        self.todo = self._order([f for name in modules for f in self._files(name)])

    def serve(self):
        """Until the list is done or the importer is (the pipe's end)."""
        pending = b""
        while self.todo:
            try:
                data = os.read(self.read, 1 << 16)
                if not data:
                    return
            except BlockingIOError:
                data = b""
            if data:
                *lines, pending = (pending + data).split(b"\n")
                self.begun.update(os.fsdecode(line) for line in lines)
            source = self.todo.pop()  # from the end: the importer works from the start
            if source not in self.begun:
                self._compile(source)

    def _order(self, seeds):
        """Depth first, as the importer meets them: each source, then what it imports."""
        order, seen, todo = [], set(), list(reversed(seeds))
        while todo:
            source = todo.pop()
            if source in seen:
                continue
            seen.add(source)
            order.append(source)
            try:
                with open(source, "rb") as f:
                    text = f.read(MAX_SOURCE_BYTES)
            except OSError:
                continue
            todo += reversed(self._imported_files(source, text))
        return order

    def _imported_files(self, source, text):
        module = self._module(source)
        package = module if source.endswith("__init__.py") else module.rpartition(".")[0]
        files = []
        for dotted, names, plain in _IMPORT.findall(b"\n" + text):
            base = dotted.lstrip(b".")
            dots = len(dotted) - len(base)
            if plain:
                for name in plain.decode("latin-1").replace("\\", " ").split(","):
                    words = name.split()
                    if words:
                        files += self._files(words[0])
                continue
            base = base.decode("latin-1")
            if dots:
                parts = package.split(".")
                if dots - 1 >= len(parts):
                    continue
                anchor = ".".join(parts[: len(parts) - (dots - 1)])
                base = anchor + "." + base if base else anchor
            if not base:
                continue
            files += self._files(base)
            for name in names.decode("latin-1").strip("()").replace("\\", " ").split(","):
                words = name.split()
                if words and words[0] != "*":
                    files += self._files(base + "." + words[0])
        return files

    def _module(self, source):
        for root in self.roots:
            if source.startswith(root + os.sep):
                relative = source[len(root) + 1 : -3].split(os.sep)
                if relative[-1] == "__init__":
                    relative.pop()
                return ".".join(relative)
        return ""

    def _files(self, name):
        """The sources importing `name` runs, parents first (only those in the layer)."""
        found = self.found.get(name)
        if found is None:
            found = self.found[name] = self._find(name.split("."))
        return found

    def _find(self, parts):
        for root in self.roots:
            base, files = root, []
            for part in parts:
                if not part.isidentifier():
                    break
                package = base + os.sep + part + os.sep + "__init__.py"
                if package in self.sources:
                    files.append(package)
                    base = base + os.sep + part
                    continue
                if base + os.sep + part + ".py" in self.sources:
                    files.append(base + os.sep + part + ".py")
                break
            if files:
                return files
        return []

    def _compile(self, source):
        target = self.warm_path(self.prefix, source)
        try:
            stat = os.stat(source)
            if stat.st_size > MAX_SOURCE_BYTES or os.path.exists(
                os.path.join(os.path.dirname(source), "__pycache__", os.path.basename(target))
            ):
                return  # too big to hold the importer up, or the layer ships its bytecode
            with open(source, "rb") as f, warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                code = compile(f.read(), source, "exec", dont_inherit=True)
        except (OSError, SyntaxError, ValueError, MemoryError, RecursionError):
            return  # the importer compiles it and reports what is wrong
        if caught:
            return  # its warnings are the importer's to raise (as errors, if the layer says so)
        # A timestamp .pyc, as the importer would write it (PEP 552: flags 0, mtime, size).
        header = struct.pack("<III", 0, int(stat.st_mtime) & 0xFFFFFFFF, stat.st_size & 0xFFFFFFFF)
        directory = os.path.dirname(target)
        try:
            if directory not in self.made:
                os.makedirs(directory, exist_ok=True)
                self.made.add(directory)
            partial = target + ".partial"
            with open(partial, "wb") as f:
                f.write(MAGIC_NUMBER + header + marshal.dumps(code))
            os.replace(partial, target)  # the importer sees a whole file or none
        except OSError:
            pass
