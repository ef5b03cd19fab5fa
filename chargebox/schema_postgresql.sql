-- chargebox's schema on PostgreSQL: the tables of models.py, and invariants I1-I5
-- enforced by PostgreSQL itself (CHECK, UNIQUE, PL/pgSQL triggers), as schema.py does
-- for SQLite. A write moves a balance first (the guarded UPDATE takes the seller's row
-- lock, which serialises that seller across every host), then writes its entries:
-- each entry continues its seller's chain (I3), the balance must be the newest entry's
-- at the end of each statement that makes entries, and at COMMIT (deferred, I2). Each
-- seller's entries are numbered (seq, UNIQUE per seller) under the seal chain.
-- Append-only tables refuse UPDATE, DELETE and TRUNCATE (row triggers do not see
-- TRUNCATE: statement triggers do).
-- Statements are separated by a line holding only "-- ;" (see schema.py).
-- Start-up and the audit compare each function's body, as it stands here, with the
-- database's (guards.postgresql_missing): change one only with a new schema version
-- (tests/test_migrations.py pins them).

CREATE TABLE schema_version (
    version integer PRIMARY KEY,
    applied_at text NOT NULL
);
-- ;
CREATE TABLE seller (
    id bigserial PRIMARY KEY,
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    balance bigint NOT NULL DEFAULT 0 CHECK (balance >= 0 AND balance <= 1000000000000000),
    created_at text NOT NULL,
    -- Version 2 (added by migrations.py to a version-1 database: the same definition).
    status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended'))
);
-- ;
CREATE TABLE credit_request (
    id bigserial PRIMARY KEY,
    seller_id bigint NOT NULL REFERENCES seller (id) ON DELETE RESTRICT,
    amount bigint NOT NULL CHECK (amount > 0 AND amount <= 1000000000000000),
    status text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'approved', 'rejected')),
    created_at text NOT NULL,
    decided_at text,
    CHECK ((status = 'pending') = (decided_at IS NULL))
);
-- ;
CREATE INDEX credit_request_status_id ON credit_request (status, id);
-- ;
CREATE INDEX credit_request_seller_id ON credit_request (seller_id, id);
-- ;
CREATE INDEX credit_request_seller_status_id ON credit_request (seller_id, status, id);
-- ;
CREATE TABLE phone (
    id bigserial PRIMARY KEY,
    number text NOT NULL UNIQUE CHECK (number ~ '^09[0-9]{9}$'),
    total_charged bigint NOT NULL DEFAULT 0 CHECK (total_charged >= 0),
    created_at text NOT NULL
);
-- ;
CREATE TABLE sale (
    id bigserial PRIMARY KEY,
    seller_id bigint NOT NULL REFERENCES seller (id) ON DELETE RESTRICT,
    -- Checked at COMMIT: the sale row is the guard, the phone's total comes after it.
    phone text NOT NULL REFERENCES phone (number) ON DELETE RESTRICT
        DEFERRABLE INITIALLY DEFERRED,
    amount bigint NOT NULL CHECK (amount > 0 AND amount <= 1000000000000000),
    balance_after bigint NOT NULL
        CHECK (balance_after >= 0 AND balance_after <= 1000000000000000),
    created_at text NOT NULL
);
-- ;
CREATE INDEX sale_seller_id ON sale (seller_id, id);
-- ;
CREATE TABLE ledger_entry (
    id bigserial PRIMARY KEY,
    seller_id bigint NOT NULL REFERENCES seller (id) ON DELETE RESTRICT,
    seq bigint NOT NULL CHECK (seq >= 1),
    kind text NOT NULL CHECK (kind IN ('credit', 'sale', 'adjustment')),
    amount bigint NOT NULL CHECK (amount <> 0 AND amount BETWEEN -1000000000000000 AND 1000000000000000),
    balance_after bigint NOT NULL
        CHECK (balance_after >= 0 AND balance_after <= 1000000000000000),
    credit_request_id bigint UNIQUE REFERENCES credit_request (id) ON DELETE RESTRICT,
    sale_id bigint UNIQUE REFERENCES sale (id) ON DELETE RESTRICT,
    reason text,
    created_at text NOT NULL,
    -- Version 3 adds refund_of and the kind 'refund' (ALTER TABLE at the end of this file).
    UNIQUE (seller_id, seq),
    CHECK (
        (kind = 'credit' AND amount > 0 AND credit_request_id IS NOT NULL AND sale_id IS NULL)
        OR (kind = 'sale' AND amount < 0 AND sale_id IS NOT NULL AND credit_request_id IS NULL)
        OR (kind = 'adjustment' AND reason IS NOT NULL
            AND credit_request_id IS NULL AND sale_id IS NULL)
    )
);
-- ;
CREATE TABLE ledger_seal (
    entry_id bigint PRIMARY KEY REFERENCES ledger_entry (id) ON DELETE RESTRICT,
    mac varchar(64) NOT NULL
);
-- ;
CREATE TABLE seller_head (
    seller_id bigint PRIMARY KEY REFERENCES seller (id) ON DELETE RESTRICT,
    entry_id bigint NOT NULL,
    entries bigint NOT NULL,
    entry_mac varchar(64) NOT NULL,
    mac varchar(64) NOT NULL
);
-- ;
CREATE TABLE idempotency_record (
    id bigserial PRIMARY KEY,
    seller_id bigint NOT NULL REFERENCES seller (id) ON DELETE RESTRICT,
    key text NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    request_hash varchar(64) NOT NULL,
    error_code text,
    error_message text,
    created_at text NOT NULL,
    sale_id bigint UNIQUE REFERENCES sale (id) ON DELETE RESTRICT,
    UNIQUE (seller_id, key),
    CHECK ((sale_id IS NULL) <> (error_code IS NULL))
);
-- ;
CREATE TABLE adjustment_record (
    id bigserial PRIMARY KEY,
    seller_id bigint NOT NULL REFERENCES seller (id) ON DELETE RESTRICT,
    key text NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    request_hash varchar(64) NOT NULL,
    error_code text,
    error_message text,
    created_at text NOT NULL,
    entry_id bigint UNIQUE REFERENCES ledger_entry (id) ON DELETE RESTRICT,
    UNIQUE (seller_id, key),
    CHECK ((entry_id IS NULL) <> (error_code IS NULL))
);
-- ;
CREATE TABLE credit_request_record (
    id bigserial PRIMARY KEY,
    seller_id bigint NOT NULL REFERENCES seller (id) ON DELETE RESTRICT,
    key text NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    request_hash varchar(64) NOT NULL,
    error_code text,
    error_message text,
    created_at text NOT NULL,
    request_id bigint UNIQUE REFERENCES credit_request (id) ON DELETE RESTRICT,
    UNIQUE (seller_id, key),
    CHECK ((request_id IS NULL) <> (error_code IS NULL))
);
-- ;
CREATE TABLE web_session (
    id bigserial PRIMARY KEY,
    token_hash varchar(64) NOT NULL UNIQUE,
    role text NOT NULL CHECK (role IN ('admin', 'seller')),
    seller_id bigint REFERENCES seller (id) ON DELETE RESTRICT,
    credential_hash varchar(64) NOT NULL,
    created_at text NOT NULL,
    expires_at text NOT NULL,
    CHECK ((role = 'seller') = (seller_id IS NOT NULL))
);
-- ;
CREATE INDEX web_session_expires_at ON web_session (expires_at);
-- ;
-- I5: refuse, with the reason the trigger names.
CREATE FUNCTION chargebox_refuse() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    RAISE EXCEPTION '%', TG_ARGV[0] USING ERRCODE = 'integrity_constraint_violation';
END;
$$;
-- ;
CREATE TRIGGER ledger_entry_no_update BEFORE UPDATE ON ledger_entry
    FOR EACH ROW EXECUTE FUNCTION chargebox_refuse('I5: ledger entries are never updated');
-- ;
CREATE TRIGGER ledger_entry_no_delete BEFORE DELETE ON ledger_entry
    FOR EACH ROW EXECUTE FUNCTION chargebox_refuse('I5: ledger entries are never deleted');
-- ;
CREATE TRIGGER ledger_entry_no_truncate BEFORE TRUNCATE ON ledger_entry
    FOR EACH STATEMENT EXECUTE FUNCTION chargebox_refuse('I5: ledger entries are never deleted');
-- ;
CREATE TRIGGER sale_no_update BEFORE UPDATE ON sale
    FOR EACH ROW EXECUTE FUNCTION chargebox_refuse('sales are never updated');
-- ;
CREATE TRIGGER sale_no_delete BEFORE DELETE ON sale
    FOR EACH ROW EXECUTE FUNCTION chargebox_refuse('sales are never deleted');
-- ;
CREATE TRIGGER sale_no_truncate BEFORE TRUNCATE ON sale
    FOR EACH STATEMENT EXECUTE FUNCTION chargebox_refuse('sales are never deleted');
-- ;
CREATE TRIGGER ledger_seal_no_update BEFORE UPDATE ON ledger_seal
    FOR EACH ROW EXECUTE FUNCTION chargebox_refuse('ledger seals are never updated');
-- ;
CREATE TRIGGER ledger_seal_no_delete BEFORE DELETE ON ledger_seal
    FOR EACH ROW EXECUTE FUNCTION chargebox_refuse('ledger seals are never deleted');
-- ;
CREATE TRIGGER ledger_seal_no_truncate BEFORE TRUNCATE ON ledger_seal
    FOR EACH STATEMENT EXECUTE FUNCTION chargebox_refuse('ledger seals are never deleted');
-- ;
CREATE TRIGGER idempotency_record_no_change BEFORE UPDATE OR DELETE ON idempotency_record
    FOR EACH ROW EXECUTE FUNCTION chargebox_refuse('idempotency outcomes are final');
-- ;
CREATE TRIGGER idempotency_record_no_truncate BEFORE TRUNCATE ON idempotency_record
    FOR EACH STATEMENT EXECUTE FUNCTION chargebox_refuse('idempotency outcomes are final');
-- ;
CREATE TRIGGER adjustment_record_no_change BEFORE UPDATE OR DELETE ON adjustment_record
    FOR EACH ROW EXECUTE FUNCTION chargebox_refuse('idempotency outcomes are final');
-- ;
CREATE TRIGGER adjustment_record_no_truncate BEFORE TRUNCATE ON adjustment_record
    FOR EACH STATEMENT EXECUTE FUNCTION chargebox_refuse('idempotency outcomes are final');
-- ;
CREATE TRIGGER credit_request_record_no_change BEFORE UPDATE OR DELETE ON credit_request_record
    FOR EACH ROW EXECUTE FUNCTION chargebox_refuse('idempotency outcomes are final');
-- ;
CREATE TRIGGER credit_request_record_no_truncate BEFORE TRUNCATE ON credit_request_record
    FOR EACH STATEMENT EXECUTE FUNCTION chargebox_refuse('idempotency outcomes are final');
-- ;
CREATE TRIGGER seller_no_delete BEFORE DELETE ON seller
    FOR EACH ROW EXECUTE FUNCTION chargebox_refuse('sellers are never deleted');
-- ;
CREATE TRIGGER seller_no_truncate BEFORE TRUNCATE ON seller
    FOR EACH STATEMENT EXECUTE FUNCTION chargebox_refuse('sellers are never deleted');
-- ;
CREATE TRIGGER credit_request_no_delete BEFORE DELETE ON credit_request
    FOR EACH ROW EXECUTE FUNCTION chargebox_refuse('credit requests are never deleted');
-- ;
CREATE TRIGGER credit_request_no_truncate BEFORE TRUNCATE ON credit_request
    FOR EACH STATEMENT EXECUTE FUNCTION chargebox_refuse('credit requests are never deleted');
-- ;
-- I4: a decided request never changes again, so it can never be approved twice.
CREATE FUNCTION chargebox_request_decided_is_final() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    IF NEW.seller_id IS DISTINCT FROM OLD.seller_id OR NEW.amount IS DISTINCT FROM OLD.amount
       OR NEW.created_at IS DISTINCT FROM OLD.created_at
       OR (OLD.status <> 'pending' AND (NEW.status IS DISTINCT FROM OLD.status
                                        OR NEW.decided_at IS DISTINCT FROM OLD.decided_at)) THEN
        RAISE EXCEPTION 'I4: a decided credit request is final'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END;
$$;
-- ;
CREATE TRIGGER credit_request_decided_is_final BEFORE UPDATE ON credit_request
    FOR EACH ROW EXECUTE FUNCTION chargebox_request_decided_is_final();
-- ;
CREATE FUNCTION chargebox_seller_starts_at_zero() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    IF NEW.balance <> 0 THEN
        RAISE EXCEPTION 'I2: a new seller starts with balance 0'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END;
$$;
-- ;
CREATE TRIGGER seller_starts_at_zero BEFORE INSERT ON seller
    FOR EACH ROW EXECUTE FUNCTION chargebox_seller_starts_at_zero();
-- ;
-- I2 + I3 + I4: each entry continues its seller's chain (seq and balance_after), lands on
-- the seller's balance (already moved by this transaction), and matches what it records.
CREATE FUNCTION chargebox_entry_continues_chain() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
DECLARE
    previous_seq bigint;
    previous_balance bigint;
    current_balance bigint;
BEGIN
    SELECT seq, balance_after INTO previous_seq, previous_balance FROM ledger_entry
        WHERE seller_id = NEW.seller_id ORDER BY seq DESC LIMIT 1;
    IF NEW.seq IS DISTINCT FROM COALESCE(previous_seq, 0) + 1 THEN
        RAISE EXCEPTION 'I3: seq must follow the seller''s previous entry'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF NEW.balance_after IS DISTINCT FROM COALESCE(previous_balance, 0) + NEW.amount THEN
        RAISE EXCEPTION 'I3: balance_after must equal the previous balance_after + amount'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    SELECT balance INTO current_balance FROM seller WHERE id = NEW.seller_id;
    IF NEW.balance_after IS DISTINCT FROM current_balance THEN
        RAISE EXCEPTION 'I2: balance_after must equal the seller''s balance, moved first'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF NEW.kind = 'credit' AND NOT EXISTS (
        SELECT 1 FROM credit_request WHERE id = NEW.credit_request_id
            AND seller_id = NEW.seller_id AND status = 'approved' AND amount = NEW.amount) THEN
        RAISE EXCEPTION 'I4: a credit entry needs its approved request'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF NEW.kind = 'sale' AND NOT EXISTS (
        SELECT 1 FROM sale WHERE id = NEW.sale_id AND seller_id = NEW.seller_id
            AND amount = -NEW.amount AND balance_after = NEW.balance_after) THEN
        RAISE EXCEPTION 'I4: a sale entry needs its sale'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END;
$$;
-- ;
CREATE TRIGGER ledger_entry_continues_chain BEFORE INSERT ON ledger_entry
    FOR EACH ROW EXECUTE FUNCTION chargebox_entry_continues_chain();
-- ;
-- I2 at COMMIT: a balance that moved must rest on its newest entry's balance_after.
CREATE FUNCTION chargebox_balance_follows_ledger() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
DECLARE
    now_balance bigint;
    newest bigint;
BEGIN
    SELECT balance INTO now_balance FROM seller WHERE id = NEW.id;
    SELECT balance_after INTO newest FROM ledger_entry
        WHERE seller_id = NEW.id ORDER BY seq DESC LIMIT 1;
    IF now_balance IS DISTINCT FROM COALESCE(newest, 0) THEN
        RAISE EXCEPTION 'I2: a balance may change only with its ledger entry'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NULL;
END;
$$;
-- ;
CREATE CONSTRAINT TRIGGER seller_balance_follows_ledger AFTER UPDATE OF balance ON seller
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (NEW.balance IS DISTINCT FROM OLD.balance)
    EXECUTE FUNCTION chargebox_balance_follows_ledger();
-- ;
-- Audit checkpoints (audit.py, checkpoints.py): what a clean audit verified, sealed with
-- the ledger key, so that the next audit starts from there. Append-only. Last in this
-- file: init-db adds them to a database made before them (schema.create_postgresql).
CREATE TABLE audit_checkpoint (
    id bigserial PRIMARY KEY,
    entry_id bigint NOT NULL,
    entries bigint NOT NULL,
    request_id bigint NOT NULL,
    full_at text NOT NULL,
    created_at text NOT NULL,
    mac varchar(64) NOT NULL
);
-- ;
CREATE TABLE seller_checkpoint (
    id bigserial PRIMARY KEY,
    checkpoint_id bigint NOT NULL REFERENCES audit_checkpoint (id) ON DELETE RESTRICT,
    seller_id bigint NOT NULL REFERENCES seller (id) ON DELETE RESTRICT,
    entry_id bigint NOT NULL,
    entries bigint NOT NULL,
    entry_mac varchar(64) NOT NULL,
    balance bigint NOT NULL,
    sale_id bigint NOT NULL,
    sales bigint NOT NULL,
    mac varchar(64) NOT NULL,
    UNIQUE (seller_id, checkpoint_id)
);
-- ;
CREATE TRIGGER audit_checkpoint_no_change BEFORE UPDATE OR DELETE ON audit_checkpoint
    FOR EACH ROW EXECUTE FUNCTION chargebox_refuse('audit checkpoints are never changed');
-- ;
CREATE TRIGGER audit_checkpoint_no_truncate BEFORE TRUNCATE ON audit_checkpoint
    FOR EACH STATEMENT EXECUTE FUNCTION chargebox_refuse('audit checkpoints are never deleted');
-- ;
CREATE TRIGGER seller_checkpoint_no_change BEFORE UPDATE OR DELETE ON seller_checkpoint
    FOR EACH ROW EXECUTE FUNCTION chargebox_refuse('audit checkpoints are never changed');
-- ;
CREATE TRIGGER seller_checkpoint_no_truncate BEFORE TRUNCATE ON seller_checkpoint
    FOR EACH STATEMENT EXECUTE FUNCTION chargebox_refuse('audit checkpoints are never deleted');
-- ;
-- VERSION 2: seller keys and suspension. Everything below this line is what
-- `chargebox migrate` adds to a version-1 database (migrations.py), besides the
-- seller's status column above and the move of each seller's one key into seller_key.
-- The admin token in force (its SHA-256) once `chargebox rotate-admin-token` has run.
CREATE TABLE admin_token (
    id integer PRIMARY KEY CHECK (id = 1),
    token_hash varchar(64) NOT NULL,
    changed_at text NOT NULL
);
-- ;
CREATE TABLE seller_key (
    id bigserial PRIMARY KEY,
    seller_id bigint NOT NULL REFERENCES seller (id) ON DELETE RESTRICT,
    label text NOT NULL CHECK (length(label) BETWEEN 1 AND 100),
    key_hash varchar(64) NOT NULL UNIQUE,
    created_at text NOT NULL,
    revoked_at text,
    last_used_at text,
    CHECK (revoked_at IS NULL OR revoked_at >= created_at)
);
-- ;
CREATE INDEX seller_key_seller_id_id ON seller_key (seller_id, id);
-- ;
CREATE UNIQUE INDEX seller_key_seller_id_label ON seller_key (seller_id, label)
    WHERE revoked_at IS NULL;
-- ;
CREATE TRIGGER seller_key_no_delete BEFORE DELETE ON seller_key
    FOR EACH ROW EXECUTE FUNCTION chargebox_refuse('seller keys are never deleted');
-- ;
CREATE TRIGGER seller_key_no_truncate BEFORE TRUNCATE ON seller_key
    FOR EACH STATEMENT EXECUTE FUNCTION chargebox_refuse('seller keys are never deleted');
-- ;
-- A key keeps what it was issued as; once revoked it stays revoked.
CREATE FUNCTION chargebox_key_revocation_is_final() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    IF NEW.seller_id IS DISTINCT FROM OLD.seller_id OR NEW.label IS DISTINCT FROM OLD.label
       OR NEW.key_hash IS DISTINCT FROM OLD.key_hash
       OR NEW.created_at IS DISTINCT FROM OLD.created_at
       OR (OLD.revoked_at IS NOT NULL AND NEW.revoked_at IS DISTINCT FROM OLD.revoked_at) THEN
        RAISE EXCEPTION 'a seller key never changes, and a revoked key stays revoked'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END;
$$;
-- ;
CREATE TRIGGER seller_key_revocation_is_final BEFORE UPDATE ON seller_key
    FOR EACH ROW EXECUTE FUNCTION chargebox_key_revocation_is_final();
-- ;
-- A suspended seller neither sells nor files credit requests (code refuses first; this
-- runs after the seller's row is held, so it sees a suspension committed before).
CREATE FUNCTION chargebox_needs_an_active_seller() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    IF (SELECT status FROM seller WHERE id = NEW.seller_id) IS DISTINCT FROM 'active' THEN
        RAISE EXCEPTION '%', TG_ARGV[0] USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END;
$$;
-- ;
CREATE TRIGGER sale_needs_an_active_seller BEFORE INSERT ON sale
    FOR EACH ROW EXECUTE FUNCTION chargebox_needs_an_active_seller('a suspended seller cannot sell');
-- ;
CREATE TRIGGER credit_request_needs_an_active_seller BEFORE INSERT ON credit_request
    FOR EACH ROW EXECUTE FUNCTION
        chargebox_needs_an_active_seller('a suspended seller cannot ask for credit');
-- ;
-- VERSION 3: refunds. A refund entry (kind 'refund') gives back the whole amount of the
-- sale it names in refund_of, UNIQUE: a sale is refunded at most once (I4). These
-- statements make a new database and migrate a version-2 one alike (migrations.py).
ALTER TABLE ledger_entry ADD COLUMN refund_of bigint UNIQUE
    REFERENCES sale (id) ON DELETE RESTRICT;
-- ;
ALTER TABLE ledger_entry DROP CONSTRAINT ledger_entry_kind_check,
    ADD CONSTRAINT ledger_entry_kind_check
        CHECK (kind IN ('credit', 'sale', 'adjustment', 'refund'));
-- ;
ALTER TABLE ledger_entry DROP CONSTRAINT ledger_entry_check,
    ADD CONSTRAINT ledger_entry_check CHECK (
        (kind = 'credit' AND amount > 0 AND credit_request_id IS NOT NULL AND sale_id IS NULL
            AND refund_of IS NULL)
        OR (kind = 'sale' AND amount < 0 AND sale_id IS NOT NULL AND credit_request_id IS NULL
            AND refund_of IS NULL)
        OR (kind = 'adjustment' AND reason IS NOT NULL
            AND credit_request_id IS NULL AND sale_id IS NULL AND refund_of IS NULL)
        OR (kind = 'refund' AND amount > 0 AND refund_of IS NOT NULL AND reason IS NOT NULL
            AND credit_request_id IS NULL AND sale_id IS NULL)
    );
-- ;
-- I4: a refund entry gives its sale's whole amount back to the sale's seller. The sale
-- itself stays as it was (sale_no_update).
CREATE FUNCTION chargebox_refund_matches_sale() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM sale WHERE id = NEW.refund_of
                   AND seller_id = NEW.seller_id AND amount = NEW.amount) THEN
        RAISE EXCEPTION 'I4: a refund entry needs its sale, whole'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END;
$$;
-- ;
CREATE TRIGGER ledger_entry_refund_matches_sale BEFORE INSERT ON ledger_entry
    FOR EACH ROW WHEN (NEW.kind = 'refund') EXECUTE FUNCTION chargebox_refund_matches_sale();
-- ;
-- Also in version 3 (of release 0.3.0): one statement may make several entries of a seller,
-- on one move of its balance (ledger.sell_together, a batch of one seller's sales). Each
-- entry still continues the chain when it is inserted (seq, and balance_after = the
-- previous entry's + amount, I3); that the balance rests on the seller's newest entry
-- (I2) is checked once each statement that inserts entries has run, for each of their
-- sellers, on the balance as that statement leaves it, instead of at each entry's insert
-- (entries that add up to nothing may now be made in one statement with no move; the
-- balance still equals the ledger's sum after every statement and at COMMIT).
CREATE OR REPLACE FUNCTION chargebox_entry_continues_chain() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
DECLARE
    previous_seq bigint;
    previous_balance bigint;
BEGIN
    SELECT seq, balance_after INTO previous_seq, previous_balance FROM ledger_entry
        WHERE seller_id = NEW.seller_id ORDER BY seq DESC LIMIT 1;
    IF NEW.seq IS DISTINCT FROM COALESCE(previous_seq, 0) + 1 THEN
        RAISE EXCEPTION 'I3: seq must follow the seller''s previous entry'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF NEW.balance_after IS DISTINCT FROM COALESCE(previous_balance, 0) + NEW.amount THEN
        RAISE EXCEPTION 'I3: balance_after must equal the previous balance_after + amount'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF NEW.kind = 'credit' AND NOT EXISTS (
        SELECT 1 FROM credit_request WHERE id = NEW.credit_request_id
            AND seller_id = NEW.seller_id AND status = 'approved' AND amount = NEW.amount) THEN
        RAISE EXCEPTION 'I4: a credit entry needs its approved request'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF NEW.kind = 'sale' AND NOT EXISTS (
        SELECT 1 FROM sale WHERE id = NEW.sale_id AND seller_id = NEW.seller_id
            AND amount = -NEW.amount AND balance_after = NEW.balance_after) THEN
        RAISE EXCEPTION 'I4: a sale entry needs its sale'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END;
$$;
-- ;
-- I2 at the end of each statement that inserts entries: every seller it gave an entry
-- has, as its balance, the balance_after of its newest entry (moved first, or in the
-- same statement).
CREATE FUNCTION chargebox_entries_land_on_balance() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM (SELECT DISTINCT seller_id FROM added) AS moved
            JOIN seller ON seller.id = moved.seller_id
        WHERE seller.balance IS DISTINCT FROM (
            SELECT balance_after FROM ledger_entry WHERE seller_id = moved.seller_id
                ORDER BY seq DESC LIMIT 1)) THEN
        RAISE EXCEPTION 'I2: balance_after must equal the seller''s balance, moved first'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NULL;
END;
$$;
-- ;
CREATE TRIGGER ledger_entry_lands_on_balance AFTER INSERT ON ledger_entry
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION chargebox_entries_land_on_balance();
-- ;
-- VERSION 4: a key's record is its seller's. An Idempotency-Key's outcome names a
-- sale, a ledger entry (an adjustment or a refund) or a credit request: that row is
-- the record's seller's own, never another seller's (code builds it so; this refuses
-- a forged one). These statements make a new database and migrate a version-3 one alike.
-- AFTER INSERT: a batch's records are made by the same statement as its sales, in a WITH
-- query that may run before theirs (sale_batches._TOGETHER); once the statement has run,
-- every row it made is there to be read.
CREATE FUNCTION chargebox_record_is_its_sellers() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
DECLARE
    owner bigint;
BEGIN
    IF TG_TABLE_NAME = 'idempotency_record' THEN
        SELECT seller_id INTO owner FROM sale WHERE id = NEW.sale_id;
    ELSIF TG_TABLE_NAME = 'adjustment_record' THEN
        SELECT seller_id INTO owner FROM ledger_entry WHERE id = NEW.entry_id;
    ELSE
        SELECT seller_id INTO owner FROM credit_request WHERE id = NEW.request_id;
    END IF;
    IF owner IS DISTINCT FROM NEW.seller_id THEN
        RAISE EXCEPTION 'a key''s record names a row of another seller'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NULL;
END;
$$;
-- ;
CREATE TRIGGER idempotency_record_is_its_sellers AFTER INSERT ON idempotency_record
    FOR EACH ROW WHEN (NEW.sale_id IS NOT NULL)
    EXECUTE FUNCTION chargebox_record_is_its_sellers();
-- ;
CREATE TRIGGER adjustment_record_is_its_sellers AFTER INSERT ON adjustment_record
    FOR EACH ROW WHEN (NEW.entry_id IS NOT NULL)
    EXECUTE FUNCTION chargebox_record_is_its_sellers();
-- ;
CREATE TRIGGER credit_request_record_is_its_sellers AFTER INSERT ON credit_request_record
    FOR EACH ROW WHEN (NEW.request_id IS NOT NULL)
    EXECUTE FUNCTION chargebox_record_is_its_sellers();
-- ;
-- VERSION 5: a seller's entries by stamp. A statement of a period (statements.py) reads
-- the period along it, not the seller's whole ledger; the seq and the amount are in it so
-- that those reads can be answered from the index.
CREATE INDEX ledger_entry_seller_created_at ON ledger_entry (seller_id, created_at)
    INCLUDE (seq, amount);
-- ;
-- (Version 5 also made an index of sales by stamp, sale_created_at, which version 7
-- replaced and drops: a database migrated past 7 in one go is spared making it.)
-- ;
-- VERSION 6: sales by number. A search of sales by phone (sale_search.py), everyone's or
-- a seller's, walks the number's sales in id order along it, not every sale; SQLite's
-- file has had the same index (models.Sale.phone) since version 1.
CREATE INDEX sale_phone_id ON sale (phone, id);
-- ;
-- VERSION 7: the span of the sales' stamps by block of ids (`id >> 10`, schema.BLOCK_BITS),
-- in place of the index of sales by stamp: a search by time reads the blocks to find
-- where a range's sales are (sale_search.py), not every stamp in the range. Each
-- statement that makes sales widens their blocks' spans, in a row of its server
-- backend's own (`slot`: a batch never waits for another's row), and a span only ever
-- widens, so every sale lies in its block's. These statements make a new database and
-- migrate a version-6 one alike (the old index dropped); migrate then makes the blocks
-- of the sales there (schema.SALE_BLOCKS_POSTGRESQL, as when it puts the trigger back).
CREATE TABLE sale_block (
    block bigint NOT NULL,
    slot integer NOT NULL,
    first_stamp text NOT NULL,
    last_stamp text NOT NULL,
    PRIMARY KEY (block, slot),
    CHECK (first_stamp <= last_stamp)
);
-- ;
CREATE FUNCTION chargebox_sales_widen_their_blocks() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO sale_block AS b (block, slot, first_stamp, last_stamp)
    SELECT id >> 10, pg_backend_pid(), min(created_at), max(created_at)
    FROM added GROUP BY id >> 10
    ON CONFLICT (block, slot) DO UPDATE
    SET first_stamp = least(b.first_stamp, excluded.first_stamp),
        last_stamp = greatest(b.last_stamp, excluded.last_stamp);
    RETURN NULL;
END;
$$;
-- ;
CREATE TRIGGER sale_widens_its_block AFTER INSERT ON sale
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION chargebox_sales_widen_their_blocks();
-- ;
CREATE FUNCTION chargebox_block_only_widens() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    IF NEW.block <> OLD.block OR NEW.slot <> OLD.slot
       OR NEW.first_stamp > OLD.first_stamp OR NEW.last_stamp < OLD.last_stamp THEN
        RAISE EXCEPTION 'a block of sales only ever widens'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END;
$$;
-- ;
CREATE TRIGGER sale_block_only_widens BEFORE UPDATE ON sale_block
    FOR EACH ROW EXECUTE FUNCTION chargebox_block_only_widens();
-- ;
CREATE TRIGGER sale_block_no_delete BEFORE DELETE ON sale_block
    FOR EACH ROW EXECUTE FUNCTION chargebox_refuse('a block of sales only ever widens');
-- ;
CREATE TRIGGER sale_block_no_truncate BEFORE TRUNCATE ON sale_block
    FOR EACH STATEMENT EXECUTE FUNCTION chargebox_refuse('a block of sales only ever widens');
-- ;
DROP INDEX IF EXISTS sale_created_at;
-- ;
-- VERSION 8: a seller key's row id is pinned too. A process that has read a key names it
-- by its row's id, seller and hash (auth.SellerKey), and a sale's write checks all three;
-- the id, which no grant lets the service change, now no one changes.
CREATE OR REPLACE FUNCTION chargebox_key_revocation_is_final() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    IF NEW.id IS DISTINCT FROM OLD.id
       OR NEW.seller_id IS DISTINCT FROM OLD.seller_id OR NEW.label IS DISTINCT FROM OLD.label
       OR NEW.key_hash IS DISTINCT FROM OLD.key_hash
       OR NEW.created_at IS DISTINCT FROM OLD.created_at
       OR (OLD.revoked_at IS NOT NULL AND NEW.revoked_at IS DISTINCT FROM OLD.revoked_at) THEN
        RAISE EXCEPTION 'a seller key never changes, and a revoked key stays revoked'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END;
$$;
-- ;
-- VERSION 9: an audit checkpoint is recorded once. Its seal binds neither its id nor its
-- place, so a copy of an older one inserted as the newest would verify, and undo a failed
-- full audit's mark (checkpoints.newest names such a copy).
CREATE OR REPLACE FUNCTION chargebox_checkpoint_is_new() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM audit_checkpoint WHERE mac = NEW.mac) THEN
        RAISE EXCEPTION 'an audit checkpoint is recorded once'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END;
$$;
-- ;
CREATE TRIGGER audit_checkpoint_is_new BEFORE INSERT ON audit_checkpoint
    FOR EACH ROW EXECUTE FUNCTION chargebox_checkpoint_is_new();
-- ;
-- VERSION 10: web sessions by holder. A sign-in ends its holder's oldest sessions past
-- auth.MAX_SESSIONS, and a suspension its seller's: each found along this index, not by
-- a read of every session; SQLite's file has had one (models.WebSession.seller) since
-- version 1. The admin's sessions are those with no seller (NULL sorts in it too).
CREATE INDEX web_session_seller_id ON web_session (seller_id, id);
-- ;
-- VERSION 11: each change of a seller's status is counted, and the count only grows, so
-- that an anchored suspension or reactivation tells a copy that lacks it from one changed
-- again since (revocations.py).
ALTER TABLE seller ADD COLUMN status_changes bigint NOT NULL DEFAULT 0
    CHECK (status_changes >= 0);
-- ;
CREATE FUNCTION chargebox_seller_status_is_counted() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    IF NEW.status_changes < OLD.status_changes
            + (NEW.status IS DISTINCT FROM OLD.status)::int THEN
        RAISE EXCEPTION 'a change of a seller''s status is counted'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END;
$$;
-- ;
CREATE TRIGGER seller_status_is_counted BEFORE UPDATE OF status, status_changes ON seller
    FOR EACH ROW EXECUTE FUNCTION chargebox_seller_status_is_counted();
