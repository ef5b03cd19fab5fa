import gc

from chargebox import server
from chargebox.config import Config
from chargebox.connections import build_server, listen
from tests.support import new_seller, reconciled_balances


def test_a_started_server_answers_health_and_sells(fresh_server):
    admin = fresh_server.admin()
    assert admin.get("/health").json()["status"] == "ok"
    seller, key = new_seller(admin, "Ali", credit=10_000)
    sale = fresh_server.seller(key).post("/api/sales", {"phone": "09121234567", "amount": 3_000})
    assert sale.status_code == 201
    assert reconciled_balances(fresh_server.db_path) == {seller["id"]: 7_000}


def test_a_serving_process_keeps_its_start_up_objects_out_of_full_collections(tmp_path):
    """server.settle, run as each server process begins to serve (one or forked): what it
    made to start is frozen, so a full collection no longer walks it all (docs/performance.md)."""
    config = Config(db_path=tmp_path / "chargebox.db", port=0)
    waitress_server = build_server(lambda environ, start: [], config, listen(config))
    gc.unfreeze()
    try:
        # a parent that is not ours: it serves no request, drains and stops
        assert server._serve_one(waitress_server, lambda line: None, server._Stop(), parent=-1) == 0
        assert gc.get_freeze_count() > 1000
    finally:
        gc.unfreeze()
