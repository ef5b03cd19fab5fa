from tests.support import new_seller, reconciled_balances


def test_a_started_server_answers_health_and_sells(fresh_server):
    admin = fresh_server.admin()
    assert admin.get("/health").json()["status"] == "ok"
    seller, key = new_seller(admin, "Ali", credit=10_000)
    sale = fresh_server.seller(key).post("/api/sales", {"phone": "09121234567", "amount": 3_000})
    assert sale.status_code == 201
    assert reconciled_balances(fresh_server.db_path) == {seller["id"]: 7_000}
