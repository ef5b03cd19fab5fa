"""Packaging for chargebox: `pip install -e .` (service), `.[test]` (suite)."""

from setuptools import find_packages, setup

setup(
    name="chargebox",
    version="0.1.0",
    description="B2B mobile top-up service with an exact, auditable ledger",
    python_requires=">=3.11",
    packages=find_packages(include=["chargebox", "chargebox.*", "stress", "stress.*"]),
    package_data={
        "chargebox": ["openapi.json", "schema_postgresql.sql", "web/views/*.tpl", "web/static/*"]
    },
    install_requires=[
        "peewee>=4.5,<5",
        "bottle>=0.13,<0.14",
        "waitress>=3.0,<4",
        "filelock>=3.12",
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
            "schemathesis>=4.0",
            # Drives Debian's Chromium (apt-get install chromium); its own browser download
            # is not used.
            "playwright>=1.50",
            # Talks to the throwaway PostgreSQL cluster of the tests (Debian's postgresql).
            "psycopg[binary]>=3.1",
        ],
        # `--db postgresql://...`: pip install -e ".[postgresql]"
        "postgresql": ["psycopg[binary]>=3.1"],
        "plot": ["matplotlib>=3.8"],
    },
    entry_points={"console_scripts": ["chargebox = chargebox.cli:main"]},
)
