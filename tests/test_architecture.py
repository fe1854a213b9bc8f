"""The import rules of docs/architecture.md, checked on the real import graph (grimp reads every import,
including those inside functions and under TYPE_CHECKING): no cycles, and imports only point inward,
edges → core → stages → store."""

from __future__ import annotations

import grimp
import pytest

# Outermost first. A module belongs to the layer of the longest prefix naming it; `estafeta` itself (the
# domain modules and stages) is the catch-all between the core and the store.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("command line", ("estafeta.__main__", "estafeta.cli")),
    ("tools", ("estafeta.demo", "estafeta.bench", "estafeta.world", "estafeta.sandbox")),
    ("runners", ("estafeta.platform", "estafeta.delivery.processes")),
    ("edges", ("estafeta.api", "estafeta.web", "estafeta.smtp", "estafeta.smtp.server")),
    ("core", ("estafeta.core",)),
    ("stages", ("estafeta", "estafeta.smtp.credentials", "estafeta.smtp.limits")),
    ("store", ("estafeta.store",)),
]
# Edges parse input and render output through the core: they never reach the store, and the servers'
# edges never reach the platform that runs them (the command line starts it: `estafeta serve`).
FORBIDDEN_TO_EDGES = {
    "estafeta.api": ("estafeta.store", "estafeta.platform"),
    "estafeta.web": ("estafeta.store", "estafeta.platform"),
    "estafeta.smtp.server": ("estafeta.store", "estafeta.platform"),
    "estafeta.cli": ("estafeta.store",),
}


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def layer_of(module: str) -> int:
    best = max(
        (
            (len(prefix), rank)
            for rank, (_, prefixes) in enumerate(LAYERS)
            for prefix in prefixes
            if _within(module, prefix)
        ),
        default=None,
    )
    if best is None:
        raise AssertionError(f"{module} is in no layer")
    return best[1]


def imports(graph: grimp.ImportGraph) -> list[tuple[str, str]]:
    return sorted(
        (importer, imported)
        for importer in graph.modules
        for imported in graph.find_modules_directly_imported_by(importer)
    )


def cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Every group of modules that import each other, directly or not (Tarjan's strongly connected
    components of more than one module, or a module importing itself)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(start: str) -> None:
        nonlocal counter
        work = [(start, iter(sorted(graph.find_modules_directly_imported_by(start))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
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
                if len(component) > 1 or node in graph.find_modules_directly_imported_by(node):
                    found.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def outward_imports(graph: grimp.ImportGraph) -> list[str]:
    """Imports from an inner layer to an outer one."""
    return [
        f"{importer} ({LAYERS[layer_of(importer)][0]}) imports {imported} ({LAYERS[layer_of(imported)][0]})"
        for importer, imported in imports(graph)
        if layer_of(importer) > layer_of(imported)
    ]


def edges_past_the_core(graph: grimp.ImportGraph) -> list[str]:
    return [
        f"{importer} imports {imported}"
        for importer, imported in imports(graph)
        for edge, forbidden in FORBIDDEN_TO_EDGES.items()
        if _within(importer, edge) and any(_within(imported, f) for f in forbidden)
    ]


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("estafeta", exclude_type_checking_imports=False)


def test_no_module_imports_itself_through_others(graph: grimp.ImportGraph) -> None:
    assert cycles(graph) == []


def test_imports_point_inward(graph: grimp.ImportGraph) -> None:
    assert outward_imports(graph) == []


def test_edges_reach_the_store_only_through_the_core(graph: grimp.ImportGraph) -> None:
    assert edges_past_the_core(graph) == []


def test_the_rules_catch_what_they_forbid() -> None:
    graph = grimp.ImportGraph()
    for importer, imported in (
        ("estafeta.api.lists", "estafeta.store.audience"),  # a router at the store
        ("estafeta.api.app", "estafeta.platform"),  # a router at the platform
        ("estafeta.reputation", "estafeta.core"),  # a stage calling outward
        ("estafeta.accept", "estafeta.suppression"),  # fine on its own…
        ("estafeta.suppression", "estafeta.accept"),  # …but together a cycle
    ):
        graph.add_import(importer=importer, imported=imported)
    assert cycles(graph) == [["estafeta.accept", "estafeta.suppression"]]
    assert outward_imports(graph) == [
        "estafeta.api.app (edges) imports estafeta.platform (runners)",
        "estafeta.reputation (stages) imports estafeta.core (core)",
    ]
    assert edges_past_the_core(graph) == [
        "estafeta.api.app imports estafeta.platform",
        "estafeta.api.lists imports estafeta.store.audience",
    ]
