"""Build chargebox as one executable file: `python deploy/build.py [--output dist/chargebox]`.

The file is a shiv zipapp (PEP 441): chargebox and its dependencies, all pure Python,
behind a `#!/usr/bin/env python3` line, so it runs wherever a Python 3.11+ does.
On its first run it unpacks itself into $SHIV_ROOT (default ~/.shiv), once per build;
later runs start from there. The same tree and the same wheels make the same bytes. The
runtime package knows nothing of this: only the build lives here. Needs shiv
(`pip install -e ".[build]"`) and PyPI (or a mirror).
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent
# What the package is built from: the service, its packaging and its README. The stress
# harness and the tests stay out of the file.
SOURCES = ("chargebox", "setup.py", "setup.cfg", "README.md")
DEFAULT_OUTPUT = CHECKOUT / "dist" / "chargebox"
SHEBANG = "/usr/bin/env python3"


def build(output: Path = DEFAULT_OUTPUT, postgresql: bool = False, quiet: bool = True) -> Path:
    """Build the file at `output` (replaced if it exists) from this working tree.

    The tree is copied first, so that pip's build leaves no build/ or egg-info in it.
    With `postgresql`, psycopg's binary wheel goes in too: the file then runs only on
    the platform and the Python minor version it was built with.
    """
    output = output.resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="chargebox-build-") as scratch:
        source = Path(scratch) / "src"
        for name in SOURCES:
            origin = CHECKOUT / name
            if origin.is_dir():
                ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
                shutil.copytree(origin, source / name, ignore=ignore)
            else:
                source.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, source / name)
        target = f"{source}[postgresql]" if postgresql else str(source)
        site = Path(scratch) / "site-packages"
        quietly = ["--quiet"] if quiet else []
        pip = [sys.executable, "-m", "pip", "install", "--target", str(site), "--no-compile",
               "--no-cache-dir", "--disable-pip-version-check", *quietly, target]  # fmt: skip
        subprocess.run(pip, check=True, cwd=scratch)
        _forget_where_it_was_built(site)
        command = [
            sys.executable, "-m", "shiv",
            "--site-packages", str(site),
            "--console-script", "chargebox",
            "--output-file", str(output),
            "--python", SHEBANG,
            "--compressed",
            "--reproducible",  # with the above: same tree and wheels, same bytes
            "--compile-pyc",  # bytecode written once, at unpacking
        ]  # fmt: skip
        subprocess.run(command, check=True, cwd=scratch)
    return output


def _forget_where_it_was_built(site: Path) -> None:
    """pip records the temporary directory chargebox was installed from (direct_url.json,
    PEP 610); left in, every build would differ from the last. Removed, with its line."""
    for record in site.glob("*.dist-info/direct_url.json"):
        listing = record.with_name("RECORD")
        lines = listing.read_text().splitlines(keepends=True)
        kept = [line for line in lines if not line.startswith(f"{record.parent.name}/direct_url")]
        listing.write_text("".join(kept))
        record.unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--output", type=Path, default=DEFAULT_OUTPUT, help="the file to write (dist/chargebox)"
    )
    parser.add_argument(
        "--postgresql",
        action="store_true",
        help="include psycopg's binary wheel (--db postgresql://...); the file then needs the "
        "same platform and Python minor version as the build",
    )
    parser.add_argument("--verbose", action="store_true", help="show pip's output")
    args = parser.parse_args(argv)
    try:
        output = build(args.output, args.postgresql, quiet=not args.verbose)
    except subprocess.CalledProcessError as exc:
        print(f"build: shiv failed with exit status {exc.returncode}", file=sys.stderr)
        return 1
    digest = hashlib.sha256(output.read_bytes()).hexdigest()
    print(f"build: {output}: {output.stat().st_size:,} bytes, sha256 {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
