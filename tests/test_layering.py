"""The import layering of ``uae_augment/`` and ``recipes/``: dependencies point down, no cycles.

Every module is parsed with ``ast`` (nothing is imported) and its imports of
package-internal modules become edges of a module graph. The rules
(/work/shared/LAYOUT.md, "one idea per module, dependencies pointing down"):

(a) no module inside the package imports the package root (``uae_augment`` or a
    ``from .. import name`` that resolves to the root ``__init__``), except the
    root itself, the CLI and ``__main__``;
(b) no function-level import of a package-internal module, except the lazy
    imports listed in :data:`LAZY_FOR_STARTUP` (they keep ``uae-augment --help``
    and ``import uae_augment`` free of torch, torchvision and lightly);
(c) no ``from ... import *``;
(d) imports between layers point one way, down :data:`LAYERS`;
(e) no cycle between modules.

The checker itself is tested on small synthetic module sets.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "uae_augment"
ROOTS = (PACKAGE, "recipes")

LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"recipes"}),  # outside the package: users of its public API
    frozenset({"", "cli", "_cli_build", "__main__", "demo"}),  # "" is the package root, uae_augment/__init__.py
    frozenset(
        {"training", "adversarial_training"}
    ),  # adversarial_training: the deprecated shim of training.adversarial
    frozenset({"data", "evaluation", "models"}),
    frozenset({"attacks", "contrastive"}),
    frozenset({"criteria"}),
    frozenset({"mine", "views", "controls"}),
    frozenset(
        {
            "_seeding",
            "_heap",
            "_version",
            "_model_state",
            "_validation",
            "_progress",
            "_names",
            "plots",
            "devices",
            "statistics",
        }
    ),
)
"""Top to bottom; a module belongs to the layer of its first name below ``uae_augment``
(``uae_augment.mine.per_sample`` -> ``mine``). Modules may import their own layer and the ones below."""

ROOT_IMPORTERS = frozenset({PACKAGE, f"{PACKAGE}.cli", f"{PACKAGE}.__main__"})
"""Rule (a): the only package modules that may import the package root."""

LAZY_FOR_STARTUP: Mapping[tuple[str, str | None], str] = {
    (
        f"{PACKAGE}.cli",
        None,
    ): "`uae-augment --help` does not import torch (tests/test_cli_startup.py)",
    (
        f"{PACKAGE}._cli_build",
        None,
    ): "the CLI's model and attack builders, imported by `cli` at startup",
    (f"{PACKAGE}.demo", None): "`uae-augment demo --help` does not import torch",
    (
        f"{PACKAGE}.models",
        f"{PACKAGE}.models.simclr",
    ): "torchvision and lightly load on first use of SimCLR",
    (
        f"{PACKAGE}.models.registry",
        f"{PACKAGE}.models.simclr",
    ): "torchvision and lightly load on first use",
}
"""Rule (b)'s allow-list: (importer, imported) function-level imports that are for startup speed,
never to dodge a cycle. ``None`` allows every import of that importer (and of its submodules)."""

KNOWN_UNTIL_MERGE: frozenset[tuple[str, str]] = frozenset()
"""Edges exempt from every rule while a layout change is half merged; empty on main."""


@dataclass(frozen=True)
class Import:
    """One import of a package-internal module, as written in the importer's source."""

    importer: str
    imported: str
    line: int
    function_level: bool = False
    star: bool = False

    def where(self) -> str:
        return f"{self.importer} (line {self.line}) imports {self.imported}"


@dataclass(frozen=True)
class Module:
    """A module's source and whether it is a package ``__init__`` (relative imports resolve from it)."""

    source: str
    is_package: bool = False


# --------------------------------------------------------------------------- the graph


def discover(repo: Path = REPO, roots: Iterable[str] = ROOTS) -> dict[str, Module]:
    """Every module under ``roots`` by dotted name (``uae_augment/mine/__init__.py`` -> ``uae_augment.mine``)."""
    modules = {}
    for root in roots:
        for path in sorted((repo / root).rglob("*.py")):
            parts = path.relative_to(repo).with_suffix("").parts
            is_package = parts[-1] == "__init__"
            name = ".".join(parts[:-1] if is_package else parts)
            modules[name] = Module(path.read_text(encoding="utf-8"), is_package)
    return modules


def _is_internal(name: str) -> bool:
    return any(name == root or name.startswith(f"{root}.") for root in ROOTS)


def _known(name: str, modules: Mapping[str, Module]) -> str:
    """The longest prefix of ``name`` that is a module (``pkg.mod.Class`` -> ``pkg.mod``)."""
    while name not in modules and "." in name:
        name = name.rpartition(".")[0]
    return name


def _from_base(importer: str, node: ast.ImportFrom, modules: Mapping[str, Module]) -> str:
    """The module a ``from base import ...`` names, relative imports resolved against ``importer``."""
    if not node.level:
        return node.module or ""
    package = importer if modules[importer].is_package else importer.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def _targets(importer: str, node: ast.Import | ast.ImportFrom, modules: Mapping[str, Module]) -> list[tuple[str, bool]]:
    """(imported module, is a star import) for each name of one import statement."""
    if isinstance(node, ast.Import):
        return [(_known(alias.name, modules), False) for alias in node.names]
    base = _from_base(importer, node, modules)
    targets = []
    for alias in node.names:
        submodule = f"{base}.{alias.name}"  # `from . import views` imports the submodule, not the root
        targets.append((submodule if submodule in modules else _known(base, modules), alias.name == "*"))
    return targets


def imports_of(importer: str, modules: Mapping[str, Module]) -> list[Import]:
    """The package-internal imports of one module, marked when they sit inside a function."""
    found: list[Import] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                for imported, star in _targets(importer, child, modules):
                    if _is_internal(imported):
                        found.append(Import(importer, imported, child.lineno, in_function, star))
            visit(
                child,
                in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)),
            )

    visit(ast.parse(modules[importer].source), False)
    return found


def import_graph(modules: Mapping[str, Module], exempt: Iterable[tuple[str, str]] = ()) -> list[Import]:
    """Every internal import of ``modules``, without the ``exempt`` (importer, imported) edges."""
    skipped = set(exempt)
    return [
        edge
        for name in sorted(modules)
        for edge in imports_of(name, modules)
        if (edge.importer, edge.imported) not in skipped
    ]


# --------------------------------------------------------------------------- the rules


def layer_of(module: str) -> int | None:
    """Index of ``module``'s layer in :data:`LAYERS` (0 = top), None when it has none."""
    root, _, rest = module.partition(".")
    key = root if root != PACKAGE else rest.partition(".")[0]
    return next((depth for depth, layer in enumerate(LAYERS) if key in layer), None)


def root_imports(edges: Iterable[Import]) -> list[str]:
    """Rule (a)."""
    return [
        f"{edge.where()}: rule (a), no import of the package root from inside the package"
        for edge in edges
        if edge.imported == PACKAGE and edge.importer.startswith(f"{PACKAGE}.") and edge.importer not in ROOT_IMPORTERS
    ]


def _lazy_allowed(edge: Import, allowed: Mapping[tuple[str, str | None], str]) -> bool:
    for importer, imported in allowed:
        if (edge.importer == importer or edge.importer.startswith(f"{importer}.")) and imported in (
            None,
            edge.imported,
        ):
            return True
    return False


def function_level_imports(
    edges: Iterable[Import], allowed: Mapping[tuple[str, str | None], str] = LAZY_FOR_STARTUP
) -> list[str]:
    """Rule (b)."""
    return [
        f"{edge.where()}: rule (b), a function-level import of a package-internal module"
        " (import it at the top; lazy imports for startup speed go in LAZY_FOR_STARTUP, with the reason)"
        for edge in edges
        if edge.function_level and not _lazy_allowed(edge, allowed)
    ]


def star_imports(edges: Iterable[Import]) -> list[str]:
    """Rule (c)."""
    return [f"{edge.where()}: rule (c), no `from ... import *`" for edge in edges if edge.star]


def unlayered(modules: Iterable[str]) -> list[str]:
    """Modules that no layer holds: every module must have a place in :data:`LAYERS`."""
    return [f"{name}: has no layer in LAYERS; add its first name to one" for name in modules if layer_of(name) is None]


def upward_imports(edges: Iterable[Import]) -> list[str]:
    """Rule (d): an import from a lower layer into a higher one."""
    problems = []
    for edge in edges:
        below, above = layer_of(edge.importer), layer_of(edge.imported)
        if below is not None and above is not None and above < below:
            problems.append(
                f"{edge.where()}: rule (d), layer {below} {sorted(LAYERS[below])} imports"
                f" the higher layer {above} {sorted(LAYERS[above])}"
            )
    return problems


def cycles(edges: Iterable[Import]) -> list[str]:
    """Rule (e): one message per strongly connected group of modules, naming a cycle's edges."""
    graph: dict[str, dict[str, Import]] = {}
    for edge in edges:
        graph.setdefault(edge.importer, {}).setdefault(edge.imported, edge)
    problems = []
    for group in _strongly_connected(graph):
        if len(group) == 1 and next(iter(group)) not in graph.get(next(iter(group)), {}):
            continue
        path = _cycle_in(graph, group)
        steps = ", ".join(graph[a][b].where() for a, b in zip(path, path[1:]))
        problems.append(f"rule (e), an import cycle: {steps}")
    return problems


def _strongly_connected(graph: Mapping[str, Mapping[str, Import]]) -> list[set[str]]:
    """Tarjan's strongly connected components (recursive; the graphs here have ~100 nodes)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, {}):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            groups.append(group)

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return groups


def _cycle_in(graph: Mapping[str, Mapping[str, Import]], group: set[str]) -> list[str]:
    """A closed path start -> ... -> start inside one strongly connected group (breadth-first, shortest)."""
    start = min(group)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in sorted(graph.get(node, {})):
                if target == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start] if node != start else [start, start]
                if target in group and target not in previous:
                    previous[target] = node
                    following.append(target)
        frontier = following
    raise AssertionError(f"no cycle through {start} in {sorted(group)}")


def violations(modules: Mapping[str, Module], exempt: Iterable[tuple[str, str]] = ()) -> list[str]:
    """Every rule's failures for ``modules``."""
    edges = import_graph(modules, exempt)
    return [
        *unlayered(modules),
        *root_imports(edges),
        *function_level_imports(edges),
        *star_imports(edges),
        *upward_imports(edges),
        *cycles(edges),
    ]


# --------------------------------------------------------------------------- the repository


@pytest.fixture(scope="module")
def repository() -> dict[str, Module]:
    return discover()


@pytest.fixture(scope="module")
def edges(repository: dict[str, Module]) -> list[Import]:
    return import_graph(repository, KNOWN_UNTIL_MERGE)


def test_the_walk_finds_the_package_and_the_recipes(repository: dict[str, Module], edges: list[Import]) -> None:
    assert {
        PACKAGE,
        f"{PACKAGE}.mine.per_sample",
        f"{PACKAGE}.attacks._minmax_loop",
        "recipes.simclr",
    } <= set(repository)
    assert any(edge.importer == f"{PACKAGE}.criteria" and edge.imported == f"{PACKAGE}.mine" for edge in edges)


def test_every_module_has_a_layer(repository: dict[str, Module]) -> None:
    assert unlayered(repository) == []


@pytest.mark.parametrize(
    "rule",
    [root_imports, function_level_imports, star_imports, upward_imports, cycles],
    ids=lambda rule: rule.__name__,
)
def test_the_package_follows_the_rule(rule, edges: list[Import]) -> None:
    assert rule(edges) == []


def test_every_known_until_merge_edge_still_exists(repository: dict[str, Module]) -> None:
    """A fixed edge leaves the set, so the set cannot hide a new import of the same pair."""
    present = {(edge.importer, edge.imported) for edge in import_graph(repository)}
    assert KNOWN_UNTIL_MERGE <= present, sorted(KNOWN_UNTIL_MERGE - present)


def test_every_lazy_import_allowance_is_used(repository: dict[str, Module]) -> None:
    lazy = [edge for edge in import_graph(repository) if edge.function_level]
    unused = [key for key in LAZY_FOR_STARTUP if not any(_lazy_allowed(edge, {key: ""}) for edge in lazy)]
    assert unused == []


# --------------------------------------------------------------------------- the checker on synthetic graphs


def _package(**files: str) -> dict[str, Module]:
    """Synthetic modules: ``attacks__init__`` -> package ``uae_augment.attacks``, ``a__b`` -> ``uae_augment.a.b``."""
    modules = {PACKAGE: Module("", is_package=True)}
    for key, source in files.items():
        is_package = key.endswith("__init__")
        parts = [part for part in key.removesuffix("__init__").split("__") if part]
        modules[".".join([PACKAGE, *parts])] = Module(source, is_package)
    return modules


def test_a_back_edge_is_caught_with_both_modules_and_the_rule() -> None:
    modules = _package(
        criteria="from .attacks import MINEUAE\n",
        attacks__init__="from ..criteria import Criterion\n",
    )
    problems = upward_imports(import_graph(modules))
    assert problems == [
        "uae_augment.criteria (line 1) imports uae_augment.attacks: rule (d), layer 5 ['criteria'] imports"
        " the higher layer 4 ['attacks', 'contrastive']"
    ]


def test_a_cycle_is_caught_and_every_edge_of_it_is_named() -> None:
    modules = _package(
        attacks__init__="from . import base\n",
        attacks__base="import torch\nfrom .gradient import PGD\n",
        attacks__gradient="from .base import Attack\n",
    )
    (problem,) = cycles(import_graph(modules))
    assert problem == (
        "rule (e), an import cycle: uae_augment.attacks.base (line 2) imports uae_augment.attacks.gradient,"
        " uae_augment.attacks.gradient (line 1) imports uae_augment.attacks.base"
    )
    assert cycles(import_graph(_package(views="from . import views\n")))  # a module importing itself
    acyclic = _package(views="", criteria="from .views import x\n", mine="from .views import y\n")
    assert cycles(import_graph(acyclic)) == []


def test_root_star_and_function_level_imports_are_caught() -> None:
    modules = _package(
        views="from . import __version__\n",
        mine__per_sample="from .. import views\nfrom ..views import *\n",  # a submodule, not the root
        criteria="def f():\n    from .mine import per_sample\n    import torch\n",
        cli="from . import __version__\ndef main():\n    from .data import load_dataset\n",
    )
    edges = import_graph(modules)
    assert root_imports(edges) == [
        "uae_augment.views (line 1) imports uae_augment: rule (a), no import of the package root from inside the package"
    ]
    assert star_imports(edges) == [
        "uae_augment.mine.per_sample (line 2) imports uae_augment.views: rule (c), no `from ... import *`"
    ]
    assert [problem.partition(":")[0] for problem in function_level_imports(edges)] == [
        "uae_augment.criteria (line 2) imports uae_augment.mine.per_sample"  # the CLI's lazy import is allowed
    ]


def test_relative_imports_resolve_against_the_importers_package() -> None:
    modules = _package(
        data__init__="from .cache import UAECache\n",
        data__cache="from ..attacks.base import Attack\nfrom . import _items\nimport uae_augment.views as v\n",
        data___items="",
        attacks__init__="",
        attacks__base="",
    )
    assert [edge.imported for edge in import_graph(modules)] == [
        "uae_augment.data.cache",
        "uae_augment.attacks.base",
        "uae_augment.data._items",
        "uae_augment",  # `import uae_augment.views`, and no such module here: the longest known prefix
    ]


def test_exempt_edges_and_unlayered_modules() -> None:
    modules = _package(models__concrete="def fit_concrete():\n    from ..training import fit\n", training="")
    problems = violations(modules)
    assert len(problems) == 2 and all(
        "uae_augment.models.concrete (line 2) imports uae_augment.training" in p for p in problems
    )  # rules (b) and (d)
    assert violations(modules, {("uae_augment.models.concrete", "uae_augment.training")}) == []
    assert unlayered(["uae_augment.newthing.part", "recipes.simclr"]) == [
        "uae_augment.newthing.part: has no layer in LAYERS; add its first name to one"
    ]
