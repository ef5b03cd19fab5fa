"""What deploy/ and CHANGELOG.md promise an operator, checked as far as this machine allows.

The systemd unit goes through `systemd-analyze verify` (the unit exactly as shipped, in
a scratch root holding the system's own units and an executable at its ExecStart path;
verify checks that the program is there, not what it does) and `systemd-analyze
security` (its exposure score); its hardening and stop settings are read from the file.
It is not started: systemd is not PID 1 here, so no test sees the sandbox around a
running chargebox. The Dockerfile cannot be built here (no registry of base images):
its required lines are read, nothing more. The changelog's newest entry is this code's.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import chargebox
from chargebox import schema
from chargebox.server import GRACE_SECONDS
from tests.support import ROOT, cannot, running_server, wait_until

UNIT = ROOT / "deploy" / "chargebox.service"
BACKUP = ROOT / "deploy" / "chargebox-backup.service"
UNITS = (UNIT, BACKUP, ROOT / "deploy" / "chargebox-backup.timer")
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
CHANGELOG = ROOT / "CHANGELOG.md"
SYSTEM_UNITS = next(
    (path for path in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system"))
     if path.is_dir()),
    None,
)  # fmt: skip


def settings(text: str) -> dict[str, list[str]]:
    """Each `Key=value` of a unit file, every value a repeated key was given, in order."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None or SYSTEM_UNITS is None:
        if os.environ.get("CI"):
            pytest.fail("systemd-analyze is missing: .ci/run installs Debian's systemd")
        pytest.skip("no systemd-analyze here (apt-get install systemd)")
    return found


def logrotate() -> str:
    found = shutil.which("logrotate") or shutil.which("logrotate", path="/usr/sbin:/sbin")
    if found is None:
        cannot("no logrotate here: apt-get install logrotate (CI's .ci/run does)")
    return found


def scratch_root(tmp_path: Path, units: dict[str, str]) -> Path:
    """A root with the system's units, the units as given ({name: text}), and an executable
    at the path of each program they run."""
    root = tmp_path / "root"
    shutil.copytree(SYSTEM_UNITS, root / "usr" / "lib" / "systemd" / "system", symlinks=True)
    (root / "etc" / "systemd" / "system").mkdir(parents=True)
    for name, text in units.items():
        (root / "etc" / "systemd" / "system" / name).write_text(text)
        unit = settings(text)
        for command in [*unit.get("ExecStartPre", ()), *unit.get("ExecStart", ()),
                        *unit.get("ExecStartPost", ())]:  # fmt: skip
            program = root / command.lstrip("@-:+!").split()[0].lstrip("/")
            program.parent.mkdir(parents=True, exist_ok=True)
            program.write_text("#!/bin/sh\nexit 0\n")  # verify looks for it; it runs nothing
            program.chmod(0o755)
    return root


def shipped() -> dict[str, str]:
    return {path.name: path.read_text() for path in UNITS}


def verify(root: Path, names) -> subprocess.CompletedProcess:
    return subprocess.run(
        [systemd_analyze(), "verify", f"--root={root}", *names],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_systemd_analyze_verify_finds_nothing_to_say_about_the_units(tmp_path):
    checked = verify(scratch_root(tmp_path, shipped()), shipped())
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout + checked.stderr == "", checked.stdout + checked.stderr


def test_the_same_check_would_catch_a_mistyped_setting(tmp_path):
    """So that the test above can fail: a key systemd does not know is reported."""
    units = shipped()
    units["chargebox.service"] = UNIT.read_text().replace("ProtectSystem=", "ProtectSytem=")
    checked = verify(scratch_root(tmp_path, units), units)
    assert "Unknown key" in checked.stdout + checked.stderr


@pytest.mark.parametrize("name", ["chargebox.service", "chargebox-backup.service"])
def test_systemd_rates_each_services_exposure_ok(tmp_path, name):
    root = scratch_root(tmp_path, shipped())
    rated = subprocess.run(
        [systemd_analyze(), "security", "--offline=true", f"--root={root}", name],
        capture_output=True,
        text=True,
        timeout=60,
    )
    level = re.search(rf"exposure level for {re.escape(name)}: ([\d.]+) (\w+)", rated.stdout)
    assert level, rated.stdout[-2000:] + rated.stderr
    print(f"\nsystemd-analyze security {name}: exposure {level.group(1)} {level.group(2)}")
    assert float(level.group(1)) <= 2.0 and level.group(2) == "OK"


def test_the_unit_runs_as_its_own_user_writing_only_its_data_directory():
    unit = settings(UNIT.read_text())
    data = "/var/lib/chargebox"
    assert unit["User"] == ["chargebox"] and unit["Group"] == ["chargebox"]
    assert unit["StateDirectory"] == ["chargebox"] and unit["StateDirectoryMode"] == ["0700"]
    assert unit["ReadWritePaths"] == [data]
    assert unit["Environment"][0] == f"CHARGEBOX_DB={data}/chargebox.db"
    shiv_root = unit["Environment"][1].removeprefix("SHIV_ROOT=")
    assert not shiv_root.startswith(data), "the service could rewrite its own code"
    for key, value in {
        "ProtectSystem": "strict",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "ProtectHome": "yes",
        "CapabilityBoundingSet": "",
        "UMask": "0077",
    }.items():
        assert unit[key] == [value], key
    assert unit["ExecStart"][0].split()[1:] == ["serve", "--host", "127.0.0.1", "--port", "8080"]
    # Unpacks as root, readable by the service whatever the unit's UMask.
    assert unit["ExecStartPre"] == [
        "+/bin/sh -c 'umask 022 && exec /usr/local/bin/chargebox --version'"
    ]


def test_the_unit_stops_with_sigterm_and_waits_longer_than_the_drain():
    unit = settings(UNIT.read_text())
    assert unit["KillSignal"] == ["SIGTERM"] and unit["KillMode"] == ["mixed"]
    assert int(unit["TimeoutStopSec"][0]) > GRACE_SECONDS + 2  # the parent's wait, and more
    assert unit["Restart"] == ["on-failure"]
    assert unit["RestartPreventExitStatus"] == ["2"]  # a start-up mistake is not retried
    assert int(unit["LimitNOFILE"][0]) > 10_000  # the default connection budget


def test_the_nightly_backup_runs_as_the_service_with_its_setup_and_writes_only_two_places():
    unit, backup = settings(UNIT.read_text()), settings(BACKUP.read_text())
    timer = settings(UNITS[2].read_text())
    for key in ("User", "Group", "Environment", "EnvironmentFile", "ExecStartPre", "UMask",
                "ProtectSystem", "NoNewPrivileges", "PrivateTmp", "SystemCallFilter"):  # fmt: skip
        assert backup[key] == unit[key], key
    assert backup["Type"] == ["oneshot"]
    assert backup["ReadWritePaths"] == ["/var/lib/chargebox /var/lib/chargebox-backups"]
    assert backup["ExecStart"] == [
        "/usr/local/bin/chargebox backup /var/lib/chargebox-backups --keep 14",
        "/usr/local/bin/chargebox audit --full",
    ]
    assert timer["Persistent"] == ["true"] and timer["OnCalendar"] == ["*-*-* 03:00:00"]
    assert timer["WantedBy"] == ["timers.target"]


def test_the_dockerfile_runs_the_single_file_as_a_user_with_its_data_in_a_volume():
    text = DOCKERFILE.read_text()
    lines = [line.strip() for line in text.splitlines()]
    assert re.search(r"^ *(RUN|&&) python deploy/build\.py --output /out/chargebox$", text, re.M)
    assert "COPY --from=build /out/chargebox /usr/local/bin/chargebox" in lines
    users = [line for line in lines if line.startswith("USER ")]
    assert users == ["USER chargebox"]
    assert lines.index("USER chargebox") < lines.index('ENTRYPOINT ["chargebox"]')
    assert "VOLUME /var/lib/chargebox" in lines
    assert "STOPSIGNAL SIGTERM" in lines
    health = text.split("HEALTHCHECK", 1)[1].split("\n\n", 1)[0]
    assert "http://127.0.0.1:8080/health" in health and "CMD" in health
    assert 'CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]' in lines


def test_the_changelogs_newest_entry_is_this_release_and_names_its_schema():
    entries = re.findall(r"^## (\S+)", CHANGELOG.read_text(), re.MULTILINE)
    assert entries[0] == chargebox.__version__
    newest = CHANGELOG.read_text().split(f"\n## {entries[0]}", 1)[1].split("\n## ", 1)[0]
    assert f"Schema version {schema.VERSION}" in newest
    assert "chargebox migrate" in newest


LOGROTATE = ROOT / "deploy" / "chargebox.logrotate"


def test_the_shipped_logrotate_config_rotates_a_serving_access_log_losing_no_line(tmp_path):
    """deploy/chargebox.logrotate as shipped (only its path and user moved here), run by logrotate
    (Debian's package; .ci/run installs it) twice under a serving chargebox: each request's
    line is in exactly one file, the live one gets the newest, and only a file no longer
    written to is compressed."""
    log = tmp_path / "log" / "access.log"
    log.parent.mkdir(mode=0o750)
    config = tmp_path / "chargebox.logrotate"
    shipped = LOGROTATE.read_text()
    assert shipped.count("/var/log/chargebox/access.log {") == 1
    assert shipped.count("    su chargebox chargebox\n") == 1  # here root's: no such user
    here = shipped.replace("/var/log/chargebox/access.log", str(log))
    config.write_text(here.replace("su chargebox chargebox", "su root root"))
    config.chmod(0o644)  # logrotate ignores a config others may write
    unit = settings(UNIT.read_text())
    assert unit["LogsDirectory"] == ["chargebox"] and unit["LogsDirectoryMode"] == ["0750"]
    sent: list[str] = []

    def logged() -> str:
        lines = ""
        for kept in log.parent.iterdir():
            with gzip.open(kept, "rt") if kept.suffix == ".gz" else kept.open() as read:
                lines += read.read()
        return lines

    def rotate() -> None:
        done = subprocess.run(
            [logrotate(), "--force", "--state", str(tmp_path / "state"), str(config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr

    with running_server(tmp_path / "c.db", env={"CHARGEBOX_ACCESS_LOG": str(log)}) as server:
        admin = server.admin()

        def send(count: int) -> None:
            for _ in range(count):
                sent.append(admin.get("/health").headers["X-Request-Id"])

        send(5)
        wait_until(lambda: sent[-1] in log.read_text(), "the first lines")
        for _ in range(2):
            rotate()  # access.log -> access.log.1; then .1 -> .2.gz
            send(1)
            # Sent until one lands in the new file: the server reopens within a second.
            wait_until(lambda: send(1) or (log.exists() and sent[-1] in log.read_text()),
                       "a line in the new file")  # fmt: skip
        admin.close()
    names = sorted(f.name for f in log.parent.iterdir())
    assert names == ["access.log", "access.log.1", "access.log.2.gz"], names
    everything = logged()
    assert all(everything.count(f"id={ident} ") == 1 for ident in sent)
    with gzip.open(f"{log}.2.gz", "rt") as oldest:
        assert sent[0] in oldest.read() and sent[-1] in log.read_text()
