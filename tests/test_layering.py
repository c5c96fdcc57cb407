"""The import contract of the package, read from the source (every import, also inside functions).

Layers, top to bottom; a module may import its own component and the layers below it, never
a layer above and never a sibling in its own layer::

    napari_ktal (public API) | napari_ktal.cli | napari_ktal._napari      the shells
    core.loop                                                              cycles, sessions, commands
    core.evaluation                                                        metrics, statistics, plots
    core.strategies | core.project | core.trust                            judging labels without a test set
    core.engine | core.simulate
    core.models | core.data
    core.recipe                                                            imports core.errors only
    core.progress | core.atomic | core.seeds
    core.errors

Besides: no import cycle between modules; nothing outside the plugin (``napari_ktal._napari``)
imports napari, Qt or their companions, since the plain ``napari-ktal`` installs none of them
(``ktal-cryo`` and ``import napari_ktal`` run without; tests/test_install.py runs them so); and Qt
only through ``qtpy``, so the user's binding is the one used.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest
from gui_packages import GUI_MODULES, QT_BINDINGS

PACKAGE = Path(__file__).resolve().parents[1] / "napari_ktal"

LAYERS: list[set[str]] = [
    {"napari_ktal", "napari_ktal.cli", "napari_ktal._napari"},
    {"napari_ktal.core.loop"},
    {"napari_ktal.core.evaluation"},
    {"napari_ktal.core.strategies", "napari_ktal.core.project", "napari_ktal.core.trust"},
    {"napari_ktal.core.engine", "napari_ktal.core.simulate"},
    {"napari_ktal.core.models", "napari_ktal.core.data"},
    {"napari_ktal.core.recipe"},
    {"napari_ktal.core.progress", "napari_ktal.core.atomic", "napari_ktal.core.seeds"},
    {"napari_ktal.core.errors"},
]
PLUGIN = "napari_ktal._napari"  # the only place GUI_MODULES may be imported: the [napari] extra's code


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(name: str, path: Path) -> tuple[set[str], set[str]]:
    """(modules of this package, top-level names of other packages) that ``name`` imports anywhere."""
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    ours, theirs = set(), set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # `from pkg import submodule` imports the submodule
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in MODULES else mod for a in node.names]
        else:
            continue
        for t in targets:
            if t == "napari_ktal" or t.startswith("napari_ktal."):
                ours.add(t)
            else:
                theirs.add(t.split(".")[0])
    return ours, theirs


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _component(module: str) -> tuple[str, int]:
    best = ("", -1)
    for level, layer in enumerate(LAYERS):
        for comp in layer:
            if (module == comp or module.startswith(comp + ".")) and len(comp) > len(best[0]):
                best = (comp, level)
    if best[1] < 0:
        raise AssertionError(f"{module} belongs to no layer: add it to LAYERS in {__file__}")
    return best


def test_every_module_has_a_layer():
    for name in MODULES:
        if name != "napari_ktal.core":
            _component(name)


def test_layers_point_one_way():
    wrong = []
    for name, (ours, _) in GRAPH.items():
        if name == "napari_ktal.core":
            continue
        comp, level = _component(name)
        for target in ours:
            if target == "napari_ktal.core":
                continue
            t_comp, t_level = _component(target)
            if t_comp != comp and t_level <= level:
                kind = "a layer above" if t_level < level else "a sibling of the same layer"
                wrong.append(f"{name} imports {target} ({kind})")
    assert not wrong, "\n".join(sorted(wrong))


def test_recipe_imports_only_errors():
    ours, _ = GRAPH["napari_ktal.core.recipe"]
    assert ours <= {"napari_ktal.core.errors"}, ours


def _in_plugin(name: str) -> bool:
    return name == PLUGIN or name.startswith(PLUGIN + ".")


def test_only_the_plugin_imports_napari_or_qt():
    checked = [name for name in GRAPH if not _in_plugin(name)]
    assert {"napari_ktal", "napari_ktal.cli", "napari_ktal.core.evaluation.plots"} <= set(checked)  # not vacuous
    wrong = [f"{name} imports {sorted(GRAPH[name][1] & GUI_MODULES)}" for name in checked
             if GRAPH[name][1] & GUI_MODULES]
    assert not wrong, "\n".join(wrong) + f"\nonly {PLUGIN} may: the plain package installs none of these"


def test_qt_only_through_qtpy():
    wrong = [f"{name} imports {sorted(theirs & QT_BINDINGS)}" for name, (_, theirs) in GRAPH.items()
             if theirs & QT_BINDINGS]
    assert not wrong, "\n".join(wrong)


def test_the_import_scan_sees_imports_inside_functions_and_relative_ones(tmp_path):
    path = tmp_path / "mod.py"
    path.write_text("import numpy as np\n"
                    "def view():\n    from napari.layers import Shapes\n    import qtpy.QtWidgets\n"
                    "class W:\n    def f(self):\n        from ..palette import class_color\n")
    ours, theirs = _imports("napari_ktal._napari.x", path)
    assert theirs == {"numpy", "napari", "qtpy"} and ours == {"napari_ktal.palette"}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, it = work[-1]
            advanced = False
            for nxt in it:
                if nxt not in graph:
                    continue
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == node:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def test_no_import_cycles():
    graph = {name: {t for t in ours if t != name} for name, (ours, _) in GRAPH.items()}
    assert not _cycles(graph), _cycles(graph)


def test_the_cycle_check_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("subpackage", ["data", "simulate", "models", "strategies", "engine", "project", "loop", "trust"])
def test_each_subpackage_names_its_public_surface(subpackage):
    init = PACKAGE / "core" / subpackage / "__init__.py"
    tree = ast.parse(init.read_text(encoding="utf-8"))
    assert ast.get_docstring(tree), f"{init} has no docstring"
    names = [n for n in tree.body if isinstance(n, ast.Assign) and any(
        isinstance(t, ast.Name) and t.id == "__all__" for t in n.targets)]
    assert names, f"{init} has no __all__"
    assert len(init.read_text(encoding="utf-8").splitlines()) <= 80, f"{init} is not short"


def test_components_are_what_the_docstring_says():
    members = defaultdict(list)
    for name in MODULES:
        if name != "napari_ktal.core":
            members[_component(name)[0]].append(name)
    assert set(members) == set().union(*LAYERS)
