"""The module map of STYLE.md, checked with `ast` so that it stays true."""

from __future__ import annotations

import ast
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


def test_only_config_and_cli_read_the_environment():
    for path in PACKAGE.rglob("*.py"):
        if path.stem not in ("config", "cli"):
            used = attributes_used(path)
            assert not {"os.environ", "os.getenv", "getenv"} & used, path


def test_the_ledger_never_opens_a_write_transaction_of_its_own():
    used = attributes_used(PACKAGE / "ledger.py")
    assert not {"db.write_tx", "write_tx", "atomic", "begin", "transaction"} & used
    assert "db.write_connection" in used  # it asserts one is open instead


def test_only_the_ledger_writes_balances_or_ledger_entries():
    for path in PACKAGE.rglob("*.py"):
        source = path.read_text()
        if path.stem not in ("ledger", "models", "db"):
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
