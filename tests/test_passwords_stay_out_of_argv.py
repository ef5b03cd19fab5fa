"""A PostgreSQL password never needs to be on a command line, and the README never puts one there.

On a command line a password is seen by every user of the host (`ps`) and kept in
the shell's history. The README's examples give URLs without one; this checks that
they stay so, and that what they rely on works: chargebox, given a URL without a
password, connects with the one in libpq's passfile (`PGPASSFILE`, `~/.pgpass`).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.support import ROOT

# scheme://user:password@ : a URL that carries a password
WITH_PASSWORD = re.compile(r"postgres(?:ql)?://[^\s@/:]+:[^\s@/]+@")


def test_no_postgresql_url_in_the_docs_carries_a_password():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    found = [
        f"{page.name}:{number}: {line.strip()}"
        for page in pages
        for number, line in enumerate(page.read_text("utf-8").splitlines(), 1)
        if WITH_PASSWORD.search(line)
    ]
    assert found == []


@pytest.mark.postgresql_only
def test_a_url_without_its_password_connects_with_the_passfile(config, tmp_path):
    scheme, rest = config.db_url.split("://", 1)
    user_info, _, where = rest.rpartition("@")
    user, _, password = user_info.partition(":")
    assert password, "the test database's URL has a password to move"
    bare = f"{scheme}://{user}@{where}"
    passfile = tmp_path / "pgpass"
    escaped = password.replace("\\", "\\\\").replace(":", "\\:")
    passfile.write_text(f"*:*:*:{user}:{escaped}\n")
    passfile.chmod(0o600)
    environ = {k: v for k, v in os.environ.items()
               if not k.startswith(("CHARGEBOX_", "PG"))}  # fmt: skip

    def audit(**env: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "chargebox.cli", "audit", "--db", bare,
             "--data-dir", str(config.data_dir)],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
            env={**environ, "HOME": str(tmp_path), **env},
        )  # fmt: skip

    assert audit().returncode == 2  # no password anywhere: refused in one line
    with_file = audit(PGPASSFILE=str(passfile))
    assert with_file.returncode == 0, with_file.stderr
    assert password not in with_file.stderr + with_file.stdout
