"""The tree's own rules, checked on the source: no import cycles, router/ stays independent of
consumers/ (but for the CLI's lazy entry points and the console), handlers import neither
each other nor the runner, the carrier drivers and the emulators import nothing else of
ours, and no module grows past 600 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("router", "consumers", "emulators")
MAX_LINES = 600
HANDLERS = ("consumers.orders", "consumers.inventory", "consumers.shipping", "consumers.audit")
# package -> what its modules may import of ours (README, "Map of the tree")
MAY_IMPORT = {
    "router.verify": ("router.verify", "router.errors"),
    "router.mapping": ("router.mapping", "router.errors"),
    "router.broker": ("router.broker", "router.settings", "router.times", "router.terminal"),
    "consumers.store": ("consumers.store", "router.times"),
    # The console reads what the operators' commands read (the store, the trace, the broker)
    # and acts on subscriptions through the same code as the `subscriptions` commands.
    "router.console": ("router", "consumers.store", "consumers.trace",
                       "consumers.outbound.state", "consumers.outbound.subscriptions"),
    "consumers.outbound": ("consumers.outbound", "consumers.store", "consumers.errors",
                           "consumers.events", "router"),
    # A carrier driver is pure requests and answers behind one interface: the labels consumer
    # maps its errors to the runner's.
    "consumers.carriers": ("consumers.carriers",),
    # The write-back drivers: a caller hands them a session and settings; they keep nothing.
    "consumers.storefronts": ("consumers.storefronts", "consumers.errors"),
    # An emulator plays the provider: sharing our code would let our bug pass as its answer.
    "emulators": ("emulators",),
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {
    _module_name(path): path
    for package in PACKAGES
    for path in sorted((ROOT / package).rglob("*.py"))
}


def _imports(name: str) -> list[tuple[str, bool]]:
    """(imported module of ours, at module level?) for each import in module `name`; an
    import under `if TYPE_CHECKING:` is for annotations only and is left out."""
    path = MODULES[name]
    tree = ast.parse(path.read_text(), str(path))
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            nested = top and not isinstance(
                child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
            )
            if isinstance(child, ast.Import):
                found.extend((alias.name, top) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                for alias in child.names:
                    submodule = f"{child.module}.{alias.name}"
                    found.append((submodule if submodule in MODULES else child.module, top))
            visit(child, nested)

    visit(tree, True)
    return [(target, top) for target, top in found if target.split(".")[0] in PACKAGES]


GRAPH = {name: _imports(name) for name in MODULES}


def test_the_modules_are_found():
    """The walk sees the packages (a rule checked on nothing would pass)."""
    assert {"router.app", "router.verify", "router.broker.protocol", "consumers.runner",
            "consumers.outbound.fanout", "consumers.store", "consumers.carriers.easypost",
            "consumers.storefronts.shopify", "emulators.easypost", "emulators.shopify"
            } <= set(MODULES)


def test_no_import_cycles():
    """No module imports, directly or through others, a module that imports it."""
    edges = {name: {target for target, _ in imports if target in MODULES}
             for name, imports in GRAPH.items()}
    done: set[str] = set()

    def walk(name: str, path: list[str]) -> None:
        if name in path:
            cycle = path[path.index(name):] + [name]
            pytest.fail("import cycle: " + " -> ".join(cycle))
        if name in done:
            return
        for target in sorted(edges[name]):
            walk(target, [*path, name])
        done.add(name)

    for name in sorted(edges):
        walk(name, [])


def test_router_does_not_import_consumers():
    """router/ is the ingress and what both sides share: only the CLI reaches into consumers/,
    and only inside the commands that are theirs (orders, subscriptions, deliveries), lazily;
    and the console, an operators' process of its own (what it may import is ruled below)."""
    wrong = sorted(
        (name, target, top)
        for name, imports in GRAPH.items()
        if name.startswith("router") and not name.startswith("router.console")
        for target, top in imports if target.startswith("consumers")
        if name != "router.cli" or top
    )
    assert [] == wrong


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_each_package_imports_only_what_it_may(package):
    """The verification schemes and mappings stay pure, the broker client knows only its
    settings, the store knows nothing of the consumers, outbound nothing of the handlers."""
    allowed = MAY_IMPORT[package]
    wrong = sorted(
        (name, target)
        for name, imports in GRAPH.items() if name == package or name.startswith(package + ".")
        for target, _ in imports
        if not any(target == a or target.startswith(a + ".") for a in allowed)
    )
    assert [] == wrong


def test_handlers_import_neither_each_other_nor_the_runner():
    """A handler raises consumers.errors and uses the shared modules; never another handler's
    module, never the runner."""
    wrong = sorted(
        (name, target)
        for name in HANDLERS
        for target, _ in GRAPH[name]
        if target in HANDLERS or target == "consumers.runner"
    )
    assert [] == wrong


def test_no_module_over_600_lines():
    """Every module stays readable in one sitting."""
    long = {name: n for name, path in MODULES.items()
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert {} == long
