"""chargebox: a B2B mobile top-up service with an exact, auditable ledger.

The module map, in dependency order (each module imports only those above it),
is in README.md under "How it is built"; tests/test_architecture.py checks it
against the imports. The HTTP contract is docs/api.md.
"""

__version__ = "0.1.0"
