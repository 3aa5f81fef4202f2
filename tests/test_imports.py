"""The package's import graph (docs/architecture.md#layers): no cycles, and every layer imports only below it.

Every ``import`` and ``from ... import`` statement of ``trgnet_fast`` counts, also those inside functions (a lazy
import is still a dependency). The graph is read from the sources with ``ast``, so nothing is imported here.
"""
from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "trgnet_fast"


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, pathlib.Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(name: str, modules) -> str | None:
    """The deepest package module that ``name`` names (``a.b.c`` -> ``a.b`` when c is not a module)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: pathlib.Path, modules) -> set[str]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            names = [f"{base}.{alias.name}" for alias in node.names] or [base]
        else:
            continue
        for name in names:
            if name.split(".")[0] == "trgnet_fast":
                target = _resolve(name, modules)
                if target and target != module:
                    found.add(target)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: _imports(m, p, modules) for m, p in modules.items()}


def _cycles(graph) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], [0]

    def visit(root):
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = counter[0]
                counter[0] += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def test_the_graph_is_read(graph):
    """The reader finds known edges (a broken reader would pass the cycle test vacuously)."""
    assert "trgnet_fast.ops.linear_attention.validation" in graph["trgnet_fast.ops.linear_attention.triton_kernels"]
    assert "trgnet_fast.ops.registry" in graph["trgnet_fast.parity"]
    # function-level imports count
    assert "trgnet_fast.ops.linear_attention.triton_kernels" in graph["trgnet_fast.ops.linear_attention"]


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles(graph):
    cycles = _cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


OP_PACKAGES = sorted(m.rpartition(".")[0] for m in _modules() if m.startswith("trgnet_fast.ops.")
                     and m.endswith(".spec") and m != "trgnet_fast.ops.spec")
# the parts of an op below its public function: they never import the op's package (its dispatch), its registry
# entry or the registry
KERNEL_LAYER = ("reference", "validation", "autograd", "triton_kernels")
# modules below every op: they import no op
BOTTOM = ("trgnet_fast._native", "trgnet_fast.backend", "trgnet_fast.ops.spec", "trgnet_fast.ops._checks",
          "trgnet_fast.ops._autograd", "trgnet_fast.ops._precision")


def test_every_op_has_the_same_layout():
    modules = _modules()
    assert OP_PACKAGES, "no op packages found"
    for package in OP_PACKAGES:
        missing = [part for part in (*KERNEL_LAYER, "spec") if f"{package}.{part}" not in modules]
        assert not missing, f"{package}: missing {missing}"


@pytest.mark.parametrize("package", OP_PACKAGES)
def test_kernels_never_import_the_layer_above(graph, package):
    above = {package, f"{package}.spec", "trgnet_fast.ops.registry"}
    for part in KERNEL_LAYER:
        wrong = graph[f"{package}.{part}"] & above
        assert not wrong, f"{package}.{part} imports {sorted(wrong)}"


def test_bottom_modules_import_no_op(graph):
    for module in BOTTOM:
        wrong = {m for m in graph[module] if any(m == p or m.startswith(p + ".") for p in OP_PACKAGES)}
        wrong |= graph[module] & {"trgnet_fast.ops.registry"}
        assert not wrong, f"{module} imports {sorted(wrong)}"


def _imports_of_package(graph, package: str) -> set[str]:
    return {dep for m, deps in graph.items() if m == package or m.startswith(package + ".") for dep in deps}


def test_text_never_imports_training(graph):
    """training/ uses text/ (descriptions -> encoder -> graphs), never the other way round."""
    wrong = {m for m in _imports_of_package(graph, "trgnet_fast.text") if m.startswith("trgnet_fast.training")}
    assert not wrong, f"trgnet_fast.text imports {sorted(wrong)}"


def test_skeleton_layouts_import_nothing_of_the_package(graph):
    assert graph["trgnet_fast.skeletons"] == set()
