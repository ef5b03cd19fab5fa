"""The peewee models: tables with their CHECK, UNIQUE and foreign-key constraints.

No money moves here (that is `ledger`): saving a model never credits anyone,
and the triggers in `schema` refuse changes to decided requests and ledger rows.
The constraints are the database half of invariants I1-I5 (see README). The
models belong to no database: `schema.create` binds them to one for a moment.
"""

from __future__ import annotations

from peewee import (
    SQL,
    AutoField,
    BigIntegerField,
    CharField,
    Check,
    CompositeKey,
    ForeignKeyField,
    IntegerField,
    Model,
    TextField,
)

from chargebox.config import MAX_BALANCE

_INT = "typeof({0}) = 'integer'"


def _money(column: str, low: str) -> list:
    return [Check(f"{_INT.format(column)} AND {column} {low} AND {column} <= {MAX_BALANCE}")]


class BaseModel(Model):
    class Meta:
        legacy_table_names = False


class Seller(BaseModel):
    id = AutoField()
    name = TextField(constraints=[Check("length(name) BETWEEN 1 AND 200")])
    # I1 in the database: a balance is an integer in 0..10^15.
    balance = BigIntegerField(default=0, constraints=_money("balance", ">= 0"))
    created_at = TextField()
    # A suspended seller can neither sell nor ask for credit (a trigger refuses both too);
    # its books stay as they are: suspending never moves money.
    status = TextField(
        default="active",
        constraints=[SQL("DEFAULT 'active'"), Check("status IN ('active', 'suspended')")],
    )
    # Version 11: how many times its status changed, which only grows (a trigger): an
    # anchored suspension or reactivation tells a copy that lacks it (revocations.py).
    status_changes = BigIntegerField(
        default=0,
        constraints=[
            SQL("DEFAULT 0"),
            Check(_INT.format("status_changes") + " AND status_changes >= 0"),
        ],
    )


class SellerKey(BaseModel):
    """One of a seller's API keys (one per integration, by label): only its SHA-256 is
    kept. A revoked key stays revoked (a trigger); `last_used_at` is written at most
    once a minute per key (auth.py), so it says when the key was last used, to a minute."""

    id = AutoField()
    # The (seller, id) index below serves as its index too.
    seller = ForeignKeyField(Seller, column_name="seller_id", on_delete="RESTRICT", index=False)
    label = TextField(constraints=[Check("length(label) BETWEEN 1 AND 100")])
    key_hash = CharField(max_length=64, unique=True)
    created_at = TextField()
    revoked_at = TextField(null=True)
    last_used_at = TextField(null=True)

    class Meta:
        constraints = [Check("revoked_at IS NULL OR revoked_at >= created_at")]
        indexes = ((("seller", "id"), False),)


class CreditRequest(BaseModel):
    id = AutoField()
    # The composite (seller, id) or (seller, key) index below serves as its index too.
    seller = ForeignKeyField(Seller, column_name="seller_id", on_delete="RESTRICT", index=False)
    amount = BigIntegerField(constraints=_money("amount", "> 0"))
    status = TextField(
        default="pending", constraints=[Check("status IN ('pending', 'approved', 'rejected')")]
    )
    created_at = TextField()
    decided_at = TextField(null=True)

    class Meta:
        constraints = [Check("(status = 'pending') = (decided_at IS NULL)")]
        # (seller, status, id): the cap on a seller's pending requests counts only those,
        # and the admin's queue filtered by seller reads them in order.
        indexes = (
            (("status", "id"), False),
            (("seller", "id"), False),
            (("seller", "status", "id"), False),
        )


class Phone(BaseModel):
    id = AutoField()
    number = TextField(
        unique=True,
        constraints=[Check("number GLOB '09[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]'")],
    )
    total_charged = BigIntegerField(
        default=0, constraints=[Check(f"{_INT.format('total_charged')} AND total_charged >= 0")]
    )
    created_at = TextField()


class Sale(BaseModel):
    id = AutoField()
    # The composite (seller, id) or (seller, key) index below serves as its index too.
    seller = ForeignKeyField(Seller, column_name="seller_id", on_delete="RESTRICT", index=False)
    # The number itself, checked at COMMIT: the sale row is the guard, the phone comes after.
    phone = ForeignKeyField(
        Phone,
        field="number",
        column_name="phone",
        on_delete="RESTRICT",
        deferrable="INITIALLY DEFERRED",
    )
    amount = BigIntegerField(constraints=_money("amount", "> 0"))
    balance_after = BigIntegerField(constraints=_money("balance_after", ">= 0"))
    created_at = TextField()

    class Meta:
        indexes = ((("seller", "id"), False),)


class SaleBlock(BaseModel):
    """Schema version 7: the span of the stamps of the sales in one block of ids (the
    ids `block << BLOCK_BITS` up to the next block), which a search by time reads to find
    where a range's sales are (sale_search.py) instead of an index of every sale's stamp.
    A trigger on sale keeps it (schema.TRIGGERS); others keep it only ever widening, so
    every sale lies in its block's span. `slot`: 0 on SQLite; on PostgreSQL each server
    backend writes a row of its own (pg_backend_pid()), so no two batches wait for one."""

    block = BigIntegerField()
    slot = IntegerField()
    first_stamp = TextField()
    last_stamp = TextField()

    class Meta:
        primary_key = CompositeKey("block", "slot")
        without_rowid = True
        constraints = [Check("first_stamp <= last_stamp")]


class LedgerEntry(BaseModel):
    id = AutoField()
    # The composite (seller, id) or (seller, key) index below serves as its index too.
    seller = ForeignKeyField(Seller, column_name="seller_id", on_delete="RESTRICT", index=False)
    kind = TextField(constraints=[Check("kind IN ('credit', 'sale', 'adjustment', 'refund')")])
    amount = BigIntegerField(
        constraints=[
            Check(f"{_INT.format('amount')} AND amount != 0 AND abs(amount) <= {MAX_BALANCE}")
        ]
    )
    # I1 again, per entry: no entry may leave a balance below zero.
    balance_after = BigIntegerField(constraints=_money("balance_after", ">= 0"))
    # I4: UNIQUE links, so one request or one sale can never have two entries. The
    # request's is a partial index (below): nearly every entry has none, and a full one
    # would hold a NULL for each (9 bytes an entry).
    credit_request = ForeignKeyField(
        CreditRequest,
        column_name="credit_request_id",
        null=True,
        index=False,
        on_delete="RESTRICT",
    )
    sale = ForeignKeyField(
        Sale, column_name="sale_id", null=True, unique=True, on_delete="RESTRICT"
    )
    reason = TextField(null=True)
    created_at = TextField()
    # Schema version 3: a refund entry gives back the sale it names, whole; UNIQUE (the
    # partial index below), so a sale is refunded at most once (I4). Last, so that a
    # version-2 file's rows are this table's rows (migrations.py).
    refund_of = ForeignKeyField(
        Sale, column_name="refund_of", null=True, index=False, on_delete="RESTRICT", backref="+"
    )

    class Meta:
        constraints = [
            Check(
                "(kind = 'credit' AND amount > 0 AND credit_request_id IS NOT NULL"
                " AND sale_id IS NULL AND refund_of IS NULL)"
                " OR (kind = 'sale' AND amount < 0 AND sale_id IS NOT NULL"
                " AND credit_request_id IS NULL AND refund_of IS NULL)"
                " OR (kind = 'adjustment' AND reason IS NOT NULL"
                " AND credit_request_id IS NULL AND sale_id IS NULL AND refund_of IS NULL)"
                " OR (kind = 'refund' AND amount > 0 AND refund_of IS NOT NULL"
                " AND reason IS NOT NULL AND credit_request_id IS NULL AND sale_id IS NULL)"
            )
        ]
        indexes = ((("seller", "id"), False),)


LedgerEntry.add_index(
    LedgerEntry.index(
        LedgerEntry.credit_request, unique=True, where=LedgerEntry.credit_request.is_null(False)
    )
)
LedgerEntry.add_index(
    LedgerEntry.index(
        LedgerEntry.refund_of, unique=True, where=LedgerEntry.refund_of.is_null(False)
    )
)
# Schema version 5: a seller's entries by stamp, for a statement of a period
# (statements.py), which then reads the period, not the seller's whole ledger. The
# amount is in it (and the id, as in every SQLite index) so that those reads need no row.
LedgerEntry.add_index(LedgerEntry.seller, LedgerEntry.created_at, LedgerEntry.amount)


class LedgerSeal(BaseModel):
    """HMAC of one entry chained to its predecessor's seal (tamper evidence, ledger.py)."""

    entry = ForeignKeyField(
        LedgerEntry, column_name="entry_id", primary_key=True, on_delete="RESTRICT"
    )
    mac = CharField(max_length=64)


class SellerHead(BaseModel):
    """The sealed end of a seller's chain: its newest entry and how many there are."""

    seller = ForeignKeyField(
        Seller, column_name="seller_id", primary_key=True, on_delete="RESTRICT"
    )
    entry_id = BigIntegerField()
    entries = BigIntegerField()
    entry_mac = CharField(max_length=64)
    mac = CharField(max_length=64)


class AuditCheckpoint(BaseModel):
    """What a clean audit verified (checkpoints.py), sealed with the ledger key: every ledger
    entry it saw, up to `entry_id`, and every credit request up to `request_id`. The next
    audit starts from here; `chargebox audit --full` starts from nothing."""

    id = AutoField()
    entry_id = BigIntegerField()  # the newest ledger entry the audit saw
    entries = BigIntegerField()  # ledger entries verified, in all
    request_id = BigIntegerField()  # the newest credit request it checked
    full_at = TextField()  # when the full audit that this one continues ran
    created_at = TextField()
    mac = CharField(max_length=64)


class SellerCheckpoint(BaseModel):
    """One seller's verified chain as an audit checkpoint left it; sealed with the
    checkpoint's seal. Written only for sellers whose chain moved since the last one."""

    id = AutoField()
    checkpoint = ForeignKeyField(
        AuditCheckpoint, column_name="checkpoint_id", on_delete="RESTRICT", index=False
    )
    # The (seller, checkpoint) index below serves as its index too.
    seller = ForeignKeyField(Seller, column_name="seller_id", on_delete="RESTRICT", index=False)
    entry_id = BigIntegerField()  # its newest verified entry
    entries = BigIntegerField()
    entry_mac = CharField(max_length=64)
    balance = BigIntegerField()
    sale_id = BigIntegerField()  # its newest verified sale (0: none)
    sales = BigIntegerField()
    mac = CharField(max_length=64)

    class Meta:
        indexes = ((("seller", "checkpoint"), True),)


class KeyedOutcome(BaseModel):
    """The final outcome of one Idempotency-Key: what its first request made, or its
    refusal. Sales, adjustments and credit requests keep theirs in tables of this one
    shape (each adds the reference to what it made), which `idempotency` reads alike."""

    id = AutoField()
    # The composite (seller, key) index below serves as its index too.
    seller = ForeignKeyField(Seller, column_name="seller_id", on_delete="RESTRICT", index=False)
    key = TextField(constraints=[Check("length(key) BETWEEN 1 AND 255")])
    request_hash = CharField(max_length=64)
    error_code = TextField(null=True)
    error_message = TextField(null=True)
    created_at = TextField()

    class Meta:
        indexes = ((("seller", "key"), True),)


def _made_or_refused(column: str) -> list[Check]:
    return [Check(f"({column} IS NULL) != (error_code IS NULL)")]


class IdempotencyRecord(KeyedOutcome):
    """A seller's key on a sale: the sale, or the refusal (insufficient credit)."""

    sale = ForeignKeyField(Sale, column_name="sale_id", null=True, unique=True)

    class Meta:
        constraints = _made_or_refused("sale_id")


class AdjustmentRecord(KeyedOutcome):
    """The admin's key on one seller's money, an adjustment or a refund of one of its sales
    (one scope per seller): the ledger entry, or the refusal."""

    entry = ForeignKeyField(LedgerEntry, column_name="entry_id", null=True, unique=True)

    class Meta:
        constraints = _made_or_refused("entry_id")


class CreditRequestRecord(KeyedOutcome):
    """A seller's key on a credit request: the request it filed. A refusal is not final
    (the cap on pending requests frees up), so it is not kept: the error columns stay empty."""

    request = ForeignKeyField(
        CreditRequest, column_name="request_id", null=True, unique=True, on_delete="RESTRICT"
    )

    class Meta:
        constraints = _made_or_refused("request_id")


class WebSession(BaseModel):
    """A browser signed in to the web pages: only the SHA-256 of its cookie is kept.

    `credential_hash` is the hash of the key or token it signed in with; a session
    whose credential no longer matches (a new admin token) is not honoured.
    """

    id = AutoField()
    token_hash = CharField(max_length=64, unique=True)
    role = TextField(constraints=[Check("role IN ('admin', 'seller')")])
    seller = ForeignKeyField(Seller, column_name="seller_id", null=True, on_delete="RESTRICT")
    credential_hash = CharField(max_length=64)
    created_at = TextField()
    expires_at = TextField(index=True)

    class Meta:
        constraints = [Check("(role = 'seller') = (seller_id IS NOT NULL)")]


class AdminToken(BaseModel):
    """The admin token in force, as a SHA-256, once `chargebox rotate-admin-token` has run
    (before that, none: the configured token is the admin's). One row at most. Every
    request that presents an admin token is checked against it, so a rotation is in force
    on every server at once."""

    id = IntegerField(primary_key=True, constraints=[Check("id = 1")])
    token_hash = CharField(max_length=64)
    changed_at = TextField()


SellerKey.add_index(
    SellerKey.index(SellerKey.seller, SellerKey.label, unique=True,
                    where=SellerKey.revoked_at.is_null())
)  # fmt: skip
ALL_MODELS = (
    Seller,
    SellerKey,
    AdminToken,
    CreditRequest,
    Phone,
    Sale,
    SaleBlock,
    LedgerEntry,
    LedgerSeal,
    SellerHead,
    AuditCheckpoint,
    SellerCheckpoint,
    IdempotencyRecord,
    AdjustmentRecord,
    CreditRequestRecord,
    WebSession,
)
