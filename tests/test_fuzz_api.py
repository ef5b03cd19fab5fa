"""Fuzzing the served OpenAPI document with schemathesis, as the admin and as a seller.

A real server process runs on a fresh database with two funded sellers. The
schema is loaded from the server's own `GET /openapi.json`, and schemathesis
generates valid and invalid requests for every operation (its examples,
coverage and fuzzing phases), once with the admin token and once with a
seller's API key as the `bearerAuth` credentials; its negative cases also drop
or garble the Authorization header. Every answer goes through schemathesis's
checks: no 5xx, a documented status, content type, body schema and headers,
invalid data refused, auth enforced, ... Around every call the database file is
read through a separate read-only sqlite3 connection: an answer of 400 or more
must leave every table as it was. After the run the books add up, re-added
from the file and by `GET /api/audit`.

`from_url` leaves out the operation that serves the document itself, so
`GET /openapi.json` is fuzzed the same way from the same served document,
loaded with `from_dict`.

The summary tests at the end read what the fuzz tests recorded, so run the
module as a whole (pytest runs a module's tests in file order). The run is
random; set CHARGEBOX_FUZZ_SEED to the seed a run printed to replay it, and
CHARGEBOX_FUZZ_EXAMPLES to fuzz deeper than CI does.
"""

from __future__ import annotations

import collections
import json
import os
import random
from pathlib import Path

import hypothesis
import hypothesis.strategies as st
import pytest
import requests
import schemathesis
from schemathesis.specs.openapi.checks import positive_data_acceptance

import chargebox
from tests.support import ADMIN_TOKEN, Api, db_snapshot, reconciled_balances

DOC = json.loads((Path(chargebox.__file__).parent / "openapi.json").read_text("utf-8"))
METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
OPERATIONS = {
    f"{method.upper()} {path}": operation
    for path, item in DOC["paths"].items()
    for method, operation in item.items()
    if method in METHODS
}
ROLES = ("admin", "seller")
# Fuzzing-phase examples per operation and role: the module runs in well under a minute.
# CHARGEBOX_FUZZ_EXAMPLES=500 fuzzes deeper, for a run by hand.
MAX_EXAMPLES = int(os.environ.get("CHARGEBOX_FUZZ_EXAMPLES") or 40)
SEED = int(os.environ.get("CHARGEBOX_FUZZ_SEED") or random.getrandbits(64))

# Not run: `positive_data_acceptance` expects every schema-valid request to succeed, but some
# rules are documented only in words and answered with a documented 422: a phone is any string
# of up to 64 characters in the schema yet must be an Iranian mobile number; names and reasons
# must not hold control characters. Every other check of schemathesis runs.
EXCLUDED_CHECKS = [positive_data_acceptance]

# The schema can only say that a phone is a string of up to 64 characters, so random ones are
# all 422s. About half of the string phones generated in bodies become a valid spelling of a
# random mobile number, so that sales, idempotent replays and refusals for credit are fuzzed too.
PHONE_FIELDS = {"POST /api/sales": "phone", "POST /api/phones": "number"}
DIGITS = (
    "0123456789",
    "\u06f0\u06f1\u06f2\u06f3\u06f4\u06f5\u06f6\u06f7\u06f8\u06f9",
    "\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669",
)


def spell_mobile(prefix: str, number: int, digits: str, separator: str) -> str:
    text = f"9{number:09d}".translate(str.maketrans("0123456789", digits))
    return prefix + separator.join((text[:3], text[3:6], text[6:]))


MOBILES = st.builds(
    spell_mobile,
    st.sampled_from(("0", "+98", "0098", "98", "")),
    st.integers(0, 10**9 - 1),
    st.sampled_from(DIGITS),
    st.sampled_from(("", " ", "-")),
)


def flatmap_body(context, body):
    """A schemathesis hook: maybe swap a generated string phone for a valid mobile number."""
    field = PHONE_FIELDS.get(context.operation.label)
    phone = body.get(field) if field and isinstance(body, dict) else None
    if not isinstance(phone, str) or len(phone) > 64:  # a negative case keeps its bad phone
        return st.just(body)
    return st.one_of(st.just(body), MOBILES.map(lambda mobile: {**body, field: mobile}))


# The seller whose key is the seller role's credentials (the first one made). The admin's
# fuzzing may suspend any other seller and revoke or rotate any other key, but not this one's:
# the seller role's run would then meet nothing but 401 and 403.
FUZZED_SELLER = 1
_CREDENTIAL_CHANGES = ("/suspend", "/revoke", "/rotate")


def filter_path_parameters(context, path_parameters):
    """A schemathesis hook: keep the fuzzed seller's credentials working (see above)."""
    if not path_parameters or not context.operation.label.endswith(_CREDENTIAL_CHANGES):
        return True
    try:
        return int(path_parameters.get("id")) != FUZZED_SELLER
    except (TypeError, ValueError):  # a negative case's garbled id reaches nobody
        return True


# What the fuzz tests saw, for the summary tests: (role, operation) -> Counter of statuses;
# an answer to a method the operation does not have (a coverage probe) counts as "405 PUT".
SEEN: dict[tuple[str, str], collections.Counter] = collections.defaultdict(collections.Counter)
REFUSALS_CHECKED = collections.Counter()


def rightful_roles(label: str) -> set[str]:
    """Who may call an operation, read from its documented security and summary."""
    operation = OPERATIONS[label]
    if operation.get("security") == []:
        return {"anyone"}
    summary = operation["summary"]
    if summary.endswith("(admin)"):
        return {"admin"}
    if summary.endswith("(seller)"):
        return {"seller"}
    if "(admin: " in summary and "; seller: " in summary:
        return {"admin", "seller"}
    raise AssertionError(f"{label}: the summary {summary!r} does not say who may call it")


def changes(before: dict, after: dict) -> dict:
    return {key: (before.get(key), after[key]) for key in after if before.get(key) != after[key]}


# docs/api.md: a sale or an adjustment refused with 409 (insufficient_credit,
# balance_limit_exceeded) keeps its Idempotency-Key's outcome, as one new record here.
OUTCOME_RECORDS = {
    "POST /api/sales": "idempotency_record",
    "POST /api/sellers/{id}/adjustments": "adjustment_record",
}


def final_refusal(label: str, status: int, sent_key: bool, changed: dict) -> bool:
    """Whether a refusal's changes are its key's outcome: one new record, nothing else."""
    table = OUTCOME_RECORDS.get(label)
    if table is None or status != 409 or not sent_key or set(changed) != {table}:
        return False
    (count_before, _), (count_after, _) = changed[table]
    return count_after == count_before + 1


def exercise(case, db_path: Path, role: str) -> None:
    """One generated request: call, check everything, and prove a refusal recorded nothing."""
    before = db_snapshot(db_path)
    response = case.call(timeout=30)
    after = db_snapshot(db_path)
    label, status = case.operation.label, response.status_code
    sent = response.request.method
    # The coverage phase also probes methods the path does not document (405, with Allow).
    SEEN[role, label][status if sent == case.operation.method.upper() else f"{status} {sent}"] += 1
    case.validate_response(response, excluded_checks=EXCLUDED_CHECKS)
    assert status < 500, f"{label} answered {status}: {response.text[:300]}"
    if status >= 400:
        REFUSALS_CHECKED[role] += 1
        changed = changes(before, after)
        sent_key = "Idempotency-Key" in response.request.headers
        assert not changed or final_refusal(label, status, sent_key, changed), (
            f"{label} answered {status} {response.text[:300]} but the database changed: "
            f"{changed}\nReproduce with: {case.as_curl_command()}"
        )


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory, new_server):
    with new_server(tmp_path_factory.mktemp("fuzz")) as process:
        yield process


@pytest.fixture(scope="module")
def tokens(fuzz_server) -> dict[str, str]:
    """Bearer tokens by role, for two sellers holding 10^10 toman each and some records."""
    admin = fuzz_server.admin()
    keys = []
    for name in ("fuzzed seller", "other seller"):
        created = admin.post("/api/sellers", {"name": name})
        assert created.status_code == 201, created.text
        keys.append(created.json()["api_key"])
        assert len(keys) > 1 or created.json()["id"] == FUZZED_SELLER
    sellers = [Api(fuzz_server.url, key) for key in keys]
    # Pending requests first: the small ids the fuzzer favours find some to approve or reject.
    for seller in sellers * 3:
        assert seller.post("/api/credit-requests", {"amount": 5000}).status_code == 201
    for seller in sellers * 10:
        request = seller.post("/api/credit-requests", {"amount": 1_000_000_000})
        assert request.status_code == 201, request.text
        approved = admin.post(f"/api/credit-requests/{request.json()['id']}/approve")
        assert approved.status_code == 200, approved.text
    # Not the document's example number, which the fuzzer then registers first (201).
    for seller in sellers:
        assert (
            seller.post("/api/sales", {"phone": "09351234567", "amount": 1000}).status_code == 201
        )
    for api in [admin, *sellers]:
        api.close()
    return {"admin": ADMIN_TOKEN, "seller": keys[0]}


@pytest.fixture(scope="module", params=ROLES)
def role(request) -> str:
    return request.param


def fuzz_config(token: str, **options) -> schemathesis.Config:
    settings = {"auth": {"openapi": {"bearerAuth": {"bearer": token}}}, "seed": SEED, **options}
    return schemathesis.Config.from_dict(settings)


@pytest.fixture(scope="module")
def served_schema(fuzz_server, tokens, role):
    """The document as served, with the role's token as the `bearerAuth` credentials."""
    print(f"fuzz seed: {SEED} (CHARGEBOX_FUZZ_SEED replays it)")
    loaded = schemathesis.openapi.from_url(
        fuzz_server.url + "/openapi.json", config=fuzz_config(tokens[role])
    )
    loaded.hook(flatmap_body)
    loaded.hook(filter_path_parameters)
    return loaded


@pytest.fixture(scope="module")
def served_document_schema(fuzz_server, tokens, role):
    """The same served document, loaded so that its own operation is not left out."""
    served = requests.get(fuzz_server.url + "/openapi.json", timeout=30)
    assert served.status_code == 200, served.text
    config = fuzz_config(tokens[role], **{"base-url": fuzz_server.url})
    return schemathesis.openapi.from_dict(served.json(), config=config)


SETTINGS = hypothesis.settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(hypothesis.HealthCheck),
)
schema = schemathesis.pytest.from_fixture("served_schema")
document_schema = schemathesis.pytest.from_fixture("served_document_schema").include(
    path="/openapi.json"
)


# Every operation of a role runs inside this one test (a subtest each), with a snapshot of
# every table around each call: on PostgreSQL, on a busy 2-core box, the admin's run of 28
# operations (GET /api/statements and the sale search's parameters among them) passed 300 s.
@pytest.mark.timeout(900)
@SETTINGS
@schema.parametrize()
def test_every_operation_passes_every_check_and_its_refusals_record_nothing(
    case, fuzz_server, role
):
    exercise(case, fuzz_server.db_path, role)


@SETTINGS
@document_schema.parametrize()
def test_the_document_operation_passes_every_check_too(case, fuzz_server, role):
    exercise(case, fuzz_server.db_path, role)


def test_every_documented_operation_was_fuzzed_with_both_credentials():
    total = sum(sum(statuses.values()) for statuses in SEEN.values())
    print(f"\nfuzz cases: {total}; refusals checked: {dict(REFUSALS_CHECKED)}; seed: {SEED}")
    for role, label in sorted(SEEN):
        seen = SEEN[role, label]
        print(f"  {role:6} {label:40} {dict(sorted(seen.items(), key=str))}")
    for label, operation in sorted(OPERATIONS.items()):
        answered = {key for role in ROLES for key in SEEN[role, label] if isinstance(key, int)}
        unseen = sorted(set(map(int, operation["responses"])) - answered)
        print(f"  documented, never answered: {label:40} {unseen}")
    assert set(SEEN) == {(role, label) for role in ROLES for label in OPERATIONS}, (
        f"not fuzzed: {sorted({(r, o) for r in ROLES for o in OPERATIONS} - set(SEEN))}; "
        "run the whole module"
    )


def test_every_operation_was_reached_past_authentication_by_its_rightful_caller():
    assert SEEN, "no fuzz case ran; run the whole module"
    stuck = {
        (role, label): dict(SEEN[role, label])
        for label in OPERATIONS
        for role in ROLES
        if rightful_roles(label) & {role, "anyone"}
        if not {key for key in SEEN[role, label] if isinstance(key, int)} - {401, 403}
    }
    assert not stuck, f"never got past 401/403: {stuck}"


def test_no_fuzz_case_succeeded_on_an_operation_not_meant_for_its_caller():
    assert SEEN, "no fuzz case ran; run the whole module"
    wrong = {
        (role, label): dict(SEEN[role, label])
        for label in OPERATIONS
        for role in ROLES
        if not rightful_roles(label) & {role, "anyone"}
        if any(str(key).startswith("2") for key in SEEN[role, label])
    }
    assert not wrong, f"succeeded for the wrong caller: {wrong}"


def test_after_fuzzing_the_books_add_up_in_the_file_and_in_the_audit(fuzz_server):
    assert SEEN, "no fuzz case ran; run the whole module"
    balances = reconciled_balances(fuzz_server.db_path)
    admin = fuzz_server.admin()
    report = admin.get("/api/audit")
    admin.close()
    assert report.status_code == 200, report.text
    audit = report.json()
    assert audit["consistent"] is True, audit["problems"]
    assert {row["seller_id"]: row["balance"] for row in audit["sellers"]} == balances
    assert all(
        row["consistent"] and row["balance"] == row["ledger_sum"] for row in audit["sellers"]
    )
