"""The floors of the house: imports in ``src/zscir`` run one way, without circles or shared private names.

The one owner of the import rules (docs/ARCHITECTURE.md, "Layers"). Every ``.py`` under ``src/zscir`` is
parsed with ``ast`` and *every* import statement counts: module level, inside functions and methods, under
``if TYPE_CHECKING:``, absolute and relative. A lazy import inside a function still makes the lower floor
depend on the higher one (it just fails later, when the function runs), so it is no excuse.

How an import becomes an edge of the module graph (precisely):

* ``import a.b.c`` -> module ``a.b.c``;
* ``from a.b import c`` -> module ``a.b.c`` when ``c`` is a module (a ``.py`` file or a package) of the
  tree, else module ``a.b`` (``c`` is then a name defined in ``a/b.py`` or ``a/b/__init__.py``);
  ``from a.b import *`` -> ``a.b``; relative imports are resolved against the importing module's package;
* the implicit import of parent packages that Python performs (``a`` and ``a.b`` before ``a.b.c``) is no
  edge: a package ``__init__`` that re-exports its submodules is the package's facade, imported *through*,
  not a circle. A submodule that takes a name from its own package's ``__init__`` (``from zscir.index import
  exact_topk`` inside ``zscir.index.build``) is an edge to the ``__init__``, and makes a circle with it when
  the ``__init__`` imports that submodule.

Modules imported by name at run time (``importlib.import_module`` over a table of names: the CLI's command
modules, the built-in methods) obey the layer order too: in a module that calls ``import_module``, every
string constant ``"zscir.…"`` counts as an import for the layer rule. They are no edges of the cycle graph:
a registry that imports its plug-ins by name while each plug-in imports the registry to register itself is
the plug-in pattern, not a load-order circle.

The layer of a module is its first component under ``zscir``; the package root ``zscir/__init__.py``
(``__version__`` only) is the bottom floor, because Python runs it before any other zscir module.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

#: the floors, bottom first. A module may import its own floor and any floor below it, never one above.
LAYERS = [
    "zscir",      # the package root: __version__, nothing else; Python runs it before every other module
    "cache",      # cache.py: where every cache lives ($ZSCIR_CACHE)
    "config_check",  # config_check.py: checks of config.json fields (ModelConfigError), used by every loader
    "extras",     # extras.py: the install line of an optional extra (always with -c constraints.txt)
    "progress",   # progress.py: library progress bars quiet unless asked
    "threads",    # threads.py: how many torch / FAISS threads a command uses
    "backbones",  # CLIP-like dual encoders behind one interface
    "data",       # sources, records, loaders, image decoding, the procedural world, real corpora
    "train",      # shared training utilities (distributed, precision) and the backbone trainers
    "methods",    # composers, their registry and their training stages
    "index",      # embedding stores, search, the folder indexer, Retriever
    "eval",       # metrics, benchmarks (CIRR / FashionIQ / CIRCO / world), the benchmark runner
    "viz",        # result grids, fused-space maps, sweeps
    "serve",      # the FastAPI app
    "demo",       # demo.py: `zscir demo`
    "cli",        # typer commands, the only place commands are registered
    "__main__",   # `python -m zscir`
]


@dataclass(frozen=True)
class Edge:
    """One imported zscir module: ``src`` imports ``dst`` at ``line`` (``names``: the names taken from it)."""

    src: str
    dst: str
    line: int
    names: tuple[str, ...] = ()


def module_files(src: Path, package: str) -> dict[str, Path]:
    """Module name -> file for every ``.py`` of ``package`` under ``src`` (``a/__init__.py`` is ``a``)."""
    out = {}
    for f in sorted((src / package).rglob("*.py")):
        parts = f.relative_to(src).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def _resolve_relative(module: str, is_package: bool, level: int, target: str | None) -> str:
    base = module.split(".") if is_package else module.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def _calls_import_module(tree: ast.AST) -> bool:
    return any(isinstance(n, ast.Call) and (isinstance(n.func, ast.Attribute) and n.func.attr == "import_module"
                                            or isinstance(n.func, ast.Name) and n.func.id == "import_module")
               for n in ast.walk(tree))


def import_edges(src: Path, package: str) -> tuple[dict[str, Path], list[Edge], list[Edge]]:
    """Every import of a ``package`` module by a ``package`` module, from every import statement anywhere;
    and, apart, the module names a module that calls ``import_module`` spells out as string constants."""
    files = module_files(src, package)
    edges, by_name = [], []
    for mod, f in files.items():
        is_package = f.name == "__init__.py"
        tree = ast.parse(f.read_text(encoding="utf-8"), filename=str(f))
        if _calls_import_module(tree):
            by_name += [Edge(mod, n.value, n.lineno) for n in ast.walk(tree) if isinstance(n, ast.Constant)
                        and isinstance(n.value, str) and n.value.startswith(package + ".")
                        and not n.value.endswith(".")
                        and n.value.replace(".", "").replace("_", "").isalnum()]
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                edges += [Edge(mod, a.name, node.lineno) for a in node.names
                          if a.name == package or a.name.startswith(package + ".")]
            elif isinstance(node, ast.ImportFrom):
                base = (_resolve_relative(mod, is_package, node.level, node.module) if node.level
                        else node.module or "")
                if base != package and not base.startswith(package + "."):
                    continue
                as_module = {a.name for a in node.names if f"{base}.{a.name}" in files}
                edges += [Edge(mod, f"{base}.{n}", node.lineno) for n in sorted(as_module)]
                rest = tuple(a.name for a in node.names if a.name not in as_module)
                if rest:
                    edges.append(Edge(mod, base, node.lineno, rest))
    return files, edges, by_name


def layer_of(module: str, layers: list[str]) -> str | None:
    parts = module.split(".")
    name = parts[0] if len(parts) == 1 else parts[1]
    return name if name in layers else None


def upward_imports(edges: list[Edge], layers: list[str]) -> list[str]:
    out = []
    for e in edges:
        a, b = layer_of(e.src, layers), layer_of(e.dst, layers)
        if a is not None and b is not None and layers.index(b) > layers.index(a):
            out.append(f"{e.src} (layer {a}) imports {e.dst} (layer {b}) at line {e.line}")
    return out


def import_cycles(modules: list[str], edges: list[Edge]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative), each sorted."""
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for e in edges:
        if e.src != e.dst and e.dst in graph:
            graph[e.src].add(e.dst)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    sccs = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, it = work[-1]
            nxt = next(it, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    comp.append(m)
                    if m == node:
                        break
                if len(comp) > 1:
                    sccs.append(sorted(comp))
    return sorted(sccs)


def private_imports(edges: list[Edge]) -> list[str]:
    """``from other import _name`` (dunder names such as ``__version__`` are public)."""
    return [f"{e.src} imports private {n} from {e.dst} at line {e.line}" for e in edges if e.src != e.dst
            for n in e.names if n.startswith("_") and not (n.startswith("__") and n.endswith("__"))]


def unknown_targets(files: dict[str, Path], edges: list[Edge]) -> list[str]:
    return [f"{e.src} imports {e.dst} at line {e.line}, which is no module of the tree" for e in edges
            if e.dst not in files]


@pytest.fixture(scope="module")
def zscir_graph():
    return import_edges(SRC, "zscir")


def test_every_module_sits_on_a_declared_layer(zscir_graph):
    files, _, _ = zscir_graph
    assert len(files) > 100  # the scan found the package
    assert [m for m in files if layer_of(m, LAYERS) is None] == []


def test_no_module_imports_a_higher_layer(zscir_graph):
    _, edges, by_name = zscir_graph
    bad = upward_imports(edges + by_name, LAYERS)
    if bad:
        pytest.fail("upward imports (order " + " -> ".join(LAYERS) + "):\n" + "\n".join(bad), pytrace=False)


def test_no_import_cycles(zscir_graph):
    files, edges, _ = zscir_graph
    cycles = import_cycles(list(files), edges)
    if cycles:
        pytest.fail("import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles), pytrace=False)


def test_no_private_name_is_imported_from_another_module(zscir_graph):
    _, edges, _ = zscir_graph
    bad = private_imports(edges)
    if bad:
        pytest.fail("private names imported across modules:\n" + "\n".join(bad), pytrace=False)


def test_every_zscir_import_names_a_module_of_the_tree(zscir_graph):
    files, edges, _ = zscir_graph
    bad = unknown_targets(files, edges)
    if bad:
        pytest.fail("\n".join(bad), pytrace=False)


def test_the_package_root_imports_nothing_of_zscir(zscir_graph):
    _, edges, _ = zscir_graph
    assert [e for e in edges if e.src == "zscir"] == []


def test_index_folder_writers_go_through_folder(zscir_graph):
    """folder.py is the one owner of an index folder's life cycle: build, merge and ann use it."""
    _, edges, _ = zscir_graph
    users = {e.src for e in edges if e.dst == "zscir.index.folder"}
    assert {"zscir.index.build", "zscir.index.ann", "zscir.index.merge"} <= users


# --- the checker itself must be able to fail: tiny packages with one planted fault each ---------------------

TOY_LAYERS = ["pkg", "low", "high"]

#: (files of the toy package, which check, the violation it must report)
PLANTED = {
    "absolute-module-level": ({"low/a.py": "from pkg.high.b import x\n", "high/b.py": "x = 1\n"},
                              "upward", "pkg.low.a (layer low) imports pkg.high.b (layer high) at line 1"),
    "plain-import": ({"low/a.py": "\n\nimport pkg.high.b\n", "high/b.py": ""},
                     "upward", "pkg.low.a (layer low) imports pkg.high.b (layer high) at line 3"),
    "inside-function": ({"low/a.py": "def f():\n    from pkg.high import b\n    return b\n", "high/b.py": ""},
                        "upward", "pkg.low.a (layer low) imports pkg.high.b (layer high) at line 2"),
    "inside-method-type-checking": ({"low/a.py": "from typing import TYPE_CHECKING\nclass C:\n    if TYPE_CHECKING:\n"
                                     "        from pkg.high.b import T\n", "high/b.py": "T = int\n"},
                                    "upward", "pkg.low.a (layer low) imports pkg.high.b (layer high) at line 4"),
    "relative-two-dots": ({"low/a.py": "from ..high.b import x\n", "high/b.py": "x = 1\n"},
                          "upward", "pkg.low.a (layer low) imports pkg.high.b (layer high) at line 1"),
    "relative-from-package-init": ({"low/__init__.py": "from ..high import b\n", "high/b.py": ""},
                                   "upward", "pkg.low (layer low) imports pkg.high.b (layer high) at line 1"),
    "name-from-higher-init": ({"low/a.py": "from pkg.high import thing\n", "high/__init__.py": "thing = 1\n"},
                              "upward", "pkg.low.a (layer low) imports pkg.high (layer high) at line 1"),
    "root-reaches-up": ({"__init__.py": "from pkg.low import a\n", "low/a.py": ""},
                        "upward", "pkg (layer pkg) imports pkg.low.a (layer low) at line 1"),
    "two-module-cycle": ({"low/a.py": "from pkg.low.b import y\nx = 1\n",
                          "low/b.py": "def g():\n    from pkg.low.a import x\n"}, "cycle", "pkg.low.a <-> pkg.low.b"),
    "three-module-cycle-relative": ({"low/a.py": "from . import b\n", "low/b.py": "from .c import z\n",
                                     "low/c.py": "from .a import q\n"},
                                    "cycle", "pkg.low.a <-> pkg.low.b <-> pkg.low.c"),
    "submodule-takes-from-own-init": ({"low/__init__.py": "from pkg.low.a import f\n",
                                       "low/a.py": "from pkg.low import helper\n"}, "cycle", "pkg.low <-> pkg.low.a"),
    "private-name": ({"low/a.py": "from pkg.low.b import _hidden\n", "low/b.py": "_hidden = 1\n"},
                     "private", "pkg.low.a imports private _hidden from pkg.low.b at line 1"),
    "private-name-relative": ({"high/a.py": "def f():\n    from ..low.b import ok, _h\n", "low/b.py": ""},
                              "private", "pkg.high.a imports private _h from pkg.low.b at line 2"),
    "stale-path": ({"low/a.py": "def f():\n    from pkg.low.gone import x\n"},
                   "unknown", "pkg.low.a imports pkg.low.gone at line 2, which is no module of the tree"),
    "by-name-upward": ({"low/a.py": "import importlib\nPLUGINS = (\n    'pkg.high.b',\n)\n"
                        "def load():\n    return [importlib.import_module(m) for m in PLUGINS]\n", "high/b.py": ""},
                       "upward", "pkg.low.a (layer low) imports pkg.high.b (layer high) at line 3"),
    "by-name-upward-optional-module": ({"low/a.py": "from importlib import import_module\n"
                                        "def load():\n    return import_module('pkg.high.absent')\n"},
                                       "upward",
                                       "pkg.low.a (layer low) imports pkg.high.absent (layer high) at line 3"),
}

#: toy packages the checker must pass: downward and same-floor imports, package facades, dunders
CLEAN = {
    "downward": {"high/a.py": "from pkg.low.b import x\nimport pkg.low.b\n", "low/b.py": "x = 1\n"},
    "facade-init-reexports": {"low/__init__.py": "from pkg.low.a import f\nfrom pkg.low.b import g\n",
                              "low/a.py": "from pkg.low.b import g\ndef f(): pass\n", "low/b.py": "def g(): pass\n"},
    "dunder-from-root": {"__init__.py": "__version__ = '1'\n", "high/a.py": "from ... import __version__\n"},
    "same-file-private": {"low/a.py": "_x = 1\ndef f():\n    from pkg.low.a import _x\n"},
    "foreign-packages": {"low/a.py": "import os\nfrom pathlib import Path\nimport pkgx.high\n"},
    "registry-loads-plugins-by-name": {"low/reg.py": "import importlib\nPLUGINS = ('pkg.low.plug',)\n"
                                       "def load():\n    for m in PLUGINS:\n        importlib.import_module(m)\n",
                                       "low/plug.py": "from pkg.low.reg import load\n"},
    "names-in-text-without-import-module": {"low/a.py": "HELP = 'pkg.high.b'\n", "high/b.py": ""},
}


def _toy(tmp_path: Path, files: dict[str, str]):
    for rel, text in {"__init__.py": "", "low/__init__.py": "", "high/__init__.py": "", **files}.items():
        p = tmp_path / "pkg" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
    files_, edges, by_name = import_edges(tmp_path, "pkg")
    return {"upward": upward_imports(edges + by_name, TOY_LAYERS),
            "cycle": [" <-> ".join(c) for c in import_cycles(list(files_), edges)],
            "private": private_imports(edges), "unknown": unknown_targets(files_, edges)}


@pytest.mark.parametrize("name", sorted(PLANTED))
def test_checker_reports_a_planted_fault(tmp_path, name):
    files, check, expected = PLANTED[name]
    found = _toy(tmp_path, files)
    assert found[check] == [expected]


@pytest.mark.parametrize("name", sorted(CLEAN))
def test_checker_passes_a_clean_package(tmp_path, name):
    assert _toy(tmp_path, CLEAN[name]) == {"upward": [], "cycle": [], "private": [], "unknown": []}
