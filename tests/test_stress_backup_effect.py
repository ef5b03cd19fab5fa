"""`python -m stress.backup_effect`: the harness behind docs/performance.md's backup table.

A tiny run (a 2,000-entry history, 1 s phases, one round) for correctness only: every
phase is measured, every backup succeeds, the copies and the file audit clean, and
it exits 0. What a backup costs is measured in docs/performance.md, never here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.support import ROOT
from tests.test_stress_history import generated

pytestmark = [pytest.mark.sqlite_only, pytest.mark.timeout(300)]


def test_a_tiny_backup_effect_run_measures_every_phase_and_audits_clean(tmp_path):
    if shutil.which("wrk") is None:
        if os.environ.get("CI"):
            pytest.fail("wrk is not installed (apt-get install wrk)")
        pytest.skip("wrk is not installed (apt-get install wrk)")
    path, _ = generated(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "stress.backup_effect", "--db", str(path), "--seconds", "1",
         "--rounds", "1", "--sellers", "2"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
        timeout=240,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    for phase in ("'no backup'", "'backup api'", "'vacuum into'"):
        assert f"'phase': {phase}" in result.stdout
    assert result.stdout.count(": exit 0, audit: books reconcile") == 3, result.stdout
    assert "server exit 0" in result.stdout
