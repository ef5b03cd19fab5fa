"""Two app servers on two "hosts" (network namespaces) sharing one PostgreSQL over veth.

Each namespace has only its loopback and one end of a veth pair; PostgreSQL (a
cluster of this test's own) listens on the other ends. A server runs inside each
namespace, bound to that namespace's 127.0.0.1, with clients of its own there
(`ip netns exec`), so the two servers share nothing, not even a loopback: copies
of the same Idempotency-Keys sent to both at once must still sell once. Making
namespaces needs root: otherwise the test skips, saying so; under CI=true, root
that cannot make them fails it.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import subprocess
import sys

import psycopg
import pytest

from chargebox.cli import prepare
from chargebox.config import Config
from chargebox.services import Chargebox
from tests import pg_cluster
from tests.support import ADMIN_TOKEN, ROOT, cannot, cli_audit
from tests.test_postgresql_servers import AMOUNT, sell
from tests.test_postgresql_service import books

pytestmark = pytest.mark.parallel
CLIENTS_PER_HOST = 2
_RUNS = itertools.count(1)


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


@contextlib.contextmanager
def network_namespaces(count: int):
    """`count` namespaces, each joined to this one by a veth pair on a /24 of its own;
    yields [(name, this side's address, its side's address)]. Removed at the end."""
    made, run = [], next(_RUNS)
    try:
        for n in range(1, count + 1):
            # a run's own names: a namespace's veth outlives `ip netns del` for a moment
            prefix = f"cb{os.getpid()}r{run}"
            name, outside, inside = f"{prefix}h{n}", f"{prefix}o{n}", "eth0"
            # 198.18.0.0/15 is for benchmarks (RFC 2544): no real network uses it
            index = (os.getpid() * 16 + run * 2 + n - 1) % 512  # apart from another run's
            subnet = f"198.{18 + index // 256}.{index % 256}"
            ip("netns", "add", name)
            made.append((name, f"{subnet}.1", f"{subnet}.2"))
            ip("link", "add", outside, "type", "veth", "peer", "name", inside, "netns", name)
            ip("addr", "add", f"{subnet}.1/24", "dev", outside)
            ip("link", "set", outside, "up")
            ip("-n", name, "addr", "add", f"{subnet}.2/24", "dev", inside)
            ip("-n", name, "link", "set", inside, "up")
            ip("-n", name, "link", "set", "lo", "up")
        yield made
    finally:
        for name, _, _ in made:  # the veth pair goes with its namespace
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


@pytest.fixture
def hosts(postgresql_cluster):  # not used: it skips (or fails under CI) without PostgreSQL
    if os.geteuid() != 0:
        cannot("network namespaces need root (ip netns add)")
    try:
        with network_namespaces(2) as made:
            yield made
    except FileNotFoundError:
        cannot("no ip command: apt-get install iproute2 (CI's .ci/run does)")
    except subprocess.CalledProcessError as exc:
        cannot(f"cannot make network namespaces here: {exc.stderr.strip()}")


def funded_seller(config: Config, credit: int) -> tuple[int, str]:
    """A seller and its API key, credited in this process (no server here reaches it)."""
    service = Chargebox(prepare(config))
    try:
        seller, key = service.create_seller("two hosts")
        request = service.request_credit(seller["id"], credit).record
        service.approve_credit_request(request["id"])
    finally:
        service.close()
    return seller["id"], key


def test_copies_of_each_key_sent_to_servers_on_two_hosts_sell_once(hosts, tmp_path):
    with pg_cluster.running(also_on=tuple(outside for _, outside, _ in hosts)) as cluster:
        data = tmp_path / "data"
        made = pg_cluster.initialised(cluster, "hosts", data)
        config = Config(db_url=made.app_url, data_dir=data, admin_token=ADMIN_TOKEN)
        seller_id, key = funded_seller(config, 1_000_000)
        keys = [f"hosts-{n}" for n in range(60)]
        with contextlib.ExitStack() as stack:
            clients = []
            for name, outside, _ in hosts:
                there = made.app_url.replace("@127.0.0.1:", f"@{outside}:")
                log = tmp_path / f"{name}.log"
                url, _, _ = stack.enter_context(
                    pg_cluster.serving(there, data, log, ADMIN_TOKEN, within=name)
                )
                for _ in range(CLIENTS_PER_HOST):
                    clients.append(client_in(name, url, key, keys))
                    stack.callback(clients[-1].kill)  # by its PID, if it is still there
            for client in clients:  # a barrier across namespaces: each is ready, then go
                assert client.stdout.readline() == "ready\n"
            for client in clients:
                client.stdin.write("go\n")
                client.stdin.close()
            answers = [json.loads(client.stdout.read()) for client in clients]
            assert all(client.wait(timeout=60) == 0 for client in clients)
            sessions_from = app_sessions_from(cluster, made.app_role)
        by_key: dict[str, set] = {}
        for client in answers:
            for idempotency_key, status, sale in client:
                assert status == 201, (idempotency_key, status)
                by_key.setdefault(idempotency_key, set()).add(sale)
        assert all(len(sales) == 1 for sales in by_key.values()), "a key sold twice"
        assert sessions_from >= {inside for _, _, inside in hosts}, sessions_from
        assert books(made.app_url) == {seller_id: 1_000_000 - AMOUNT * len(keys)}
        assert cli_audit(made.app_url, data).returncode == 0


def client_in(namespace: str, url: str, key: str, keys: list[str]) -> subprocess.Popen:
    """A client process inside `namespace` (this file run as a program): it says ready,
    sells `keys` once told to go, and prints its answers as JSON."""
    command = ["ip", "netns", "exec", namespace, sys.executable, __file__, url, key, *keys]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(command, cwd=ROOT, env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip


def app_sessions_from(cluster: pg_cluster.Cluster, role: str) -> set[str]:
    """The addresses the app role's sessions come from, as PostgreSQL sees them."""
    with psycopg.connect(cluster.url(), autocommit=True) as admin:
        found = admin.execute(
            "SELECT DISTINCT host(client_addr) FROM pg_stat_activity WHERE usename = %s",
            (role,),
        ).fetchall()
    return {address for (address,) in found}


class _ToldToGo:
    def wait(self) -> None:
        print("ready", flush=True)
        sys.stdin.readline()


if __name__ == "__main__":  # a client inside a namespace: URL KEY IDEMPOTENCY-KEY...
    print(json.dumps(sell(sys.argv[1], sys.argv[2], sys.argv[3:], _ToldToGo())))
