"""chargebox: a B2B mobile top-up service with an exact, auditable ledger.

Module map (dependencies point down): config, errors, money, phones (leaves) ->
db -> models -> ledger, seals -> auth, idempotency, services -> web, cli. See README.md.
"""

__version__ = "0.1.0"
