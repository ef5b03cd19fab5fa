"""chargebox: a B2B mobile top-up service with an exact, auditable ledger.

The module map, in dependency order (each module imports only those above it),
is in README.md under "How it is built"; tests/test_architecture.py checks it
against the imports. The HTTP contract is docs/api.md. `__version__` is the release's
one version: setup.py reads it, `chargebox --version` and GET /health answer it, and
CHANGELOG.md says what each release asks of an operator who upgrades.
"""

__version__ = "0.3.0"
