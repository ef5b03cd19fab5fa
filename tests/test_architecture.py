"""The module map of the README ("How it is built"), checked with `ast` so that it stays true."""

from __future__ import annotations

import ast
import graphlib
import re
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "chargebox"
LEAVES = {"config", "errors", "money", "phones", "text"}


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def modules() -> dict[str, set[str]]:
    return {
        str(path.relative_to(PACKAGE).with_suffix("")).replace("/", "."): imports_of(path)
        for path in PACKAGE.rglob("*.py")
    }


def ours(names: set[str]) -> set[str]:
    return {name.split(".")[1] for name in names if name.startswith("chargebox.")}


def test_leaves_import_only_other_leaves():
    for name, imported in modules().items():
        if name in LEAVES:
            assert ours(imported) <= LEAVES, name


def test_web_never_touches_sql_or_the_ledger():
    for name, imported in modules().items():
        if name.startswith("web"):
            assert not ours(imported) & {"db", "models", "ledger"}, name
            assert "peewee" not in imported and "sqlite3" not in imported, name


README = PACKAGE.parent / "README.md"


def import_graph() -> dict[str, set[str]]:
    """Each entry of the module map and the entries it imports: a module of the package,
    or `web` for the whole web/ package (its modules may import each other)."""
    graph: dict[str, set[str]] = {}
    for name, imported in modules().items():
        entry = name.split(".")[0]
        if entry != "__init__":
            graph.setdefault(entry, set()).update(ours(imported) - {entry})
    return {entry: uses & graph.keys() for entry, uses in graph.items()}


def readme_map() -> list[str]:
    """The package's entries in the indented map under the README's "How it is built"."""
    section = README.read_text("utf-8").split("\n## How it is built\n", 1)[1]
    section = section.split("\n## ", 1)[0]
    return re.findall(r"^ {6}(\w+)(?:\.py|/) ", section, re.MULTILINE)


def an_order(graph: dict[str, set[str]], preferred: list[str]) -> list[str]:
    """An order in which each entry comes after all it imports, as close to `preferred`
    as the graph allows (an entry missing from it comes just before the first that needs it)."""
    rank = {name: index for index, name in enumerate(preferred)}
    sorter = graphlib.TopologicalSorter(graph)
    sorter.prepare()
    order: list[str] = []
    ready: list[str] = []
    while sorter.is_active():
        ready = sorted(
            [*ready, *sorter.get_ready()], key=lambda name: (rank.get(name, len(rank)), name)
        )
        order.append(ready.pop(0))
        sorter.done(order[-1])
    return order


def test_no_module_imports_one_that_imports_it_back():
    list(graphlib.TopologicalSorter(import_graph()).static_order())  # CycleError names it


def test_the_readme_maps_every_module_below_the_modules_it_imports():
    """Dependencies point down the README's list: leaves first, each module after all it
    imports. The order is checked against the import graph, not against a fixed list."""
    graph, listed = import_graph(), readme_map()
    one_order = ", ".join(an_order(graph, listed))
    assert len(listed) == len(set(listed)), f"the README lists a module twice: {listed}"
    assert set(listed) == set(graph), (
        f"the README's map lacks {sorted(set(graph) - set(listed))} and lists "
        f"{sorted(set(listed) - set(graph))}, which do not exist; an order that works: {one_order}"
    )
    place = {name: index for index, name in enumerate(listed)}
    upward = [
        f"{name} imports {used}, listed below it"
        for name in listed
        for used in sorted(graph[name])
        if place[used] > place[name]
    ]
    assert not upward, f"{'; '.join(upward)}; an order that works: {one_order}"


def attributes_used(path: Path) -> set[str]:
    """Every `name.attr` and bare name the module's code refers to (not its text)."""
    used: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            used.add(f"{node.value.id}.{node.attr}")
        elif isinstance(node, ast.Attribute):
            used.add(node.attr)
        elif isinstance(node, ast.Name):
            used.add(node.id)
    return used


def test_services_and_ledger_know_nothing_of_http():
    for name in ("services", "ledger", "auth", "models", "db"):
        assert "bottle" not in imports_of(PACKAGE / f"{name}.py"), name


def test_only_config_reads_the_environment():
    for path in PACKAGE.rglob("*.py"):
        if path.stem != "config":
            used = attributes_used(path)
            assert not {"os.environ", "os.getenv", "getenv"} & used, path


def test_the_ledger_never_opens_a_write_transaction_of_its_own():
    for name in ("ledger", "sale_batches"):  # the money module and its batch half
        used = attributes_used(PACKAGE / f"{name}.py")
        assert not {"database.write", "database.transaction", "atomic", "begin"} & used, name
        assert "Write" in used, name  # it is handed the open write instead


def test_only_the_ledger_writes_balances_or_ledger_entries():
    for path in PACKAGE.rglob("*.py"):
        source = path.read_text()
        if path.stem not in ("ledger", "sale_batches", "models", "db"):
            assert "INSERT INTO ledger_entry" not in source, path
            assert "SET balance" not in source, path


def test_modules_stay_small_and_open_with_a_docstring():
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        assert ast.get_docstring(tree), f"{path} has no module docstring"
        assert len(path.read_text().splitlines()) <= 400, path


def test_ruff_finds_no_lint_and_no_unformatted_file():
    root = PACKAGE.parent
    for command in (["check", "--quiet", "."], ["format", "--check", "--quiet", "."]):
        result = subprocess.run(
            [sys.executable, "-m", "ruff", *command],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stdout + result.stderr
