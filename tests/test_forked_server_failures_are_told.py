"""A forked server that fails says why (found in review of issue 10, item 8).

server._Supervisor.start_child ran the child in `try: ... finally: os._exit(code)`:
os._exit ran while the exception was still unwinding, so nothing was printed. A
child that raised at start (or later, in its loop) died with status 1, and the
parent logged only "server process N exited 1 ... starting a replacement", again
and again with back-off, with no word anywhere on the cause. Now the child says
its error in one line (type, message, place; never a trace) before it exits.
"""

from __future__ import annotations

import logging
import os
import sys
import time

from chargebox import server
from chargebox.config import Config
from chargebox.connections import listen


def test_a_forked_server_that_raises_at_start_prints_its_error(tmp_path, monkeypatch, capfd):
    config = Config(db_path=tmp_path / "cb.db", admin_token="a" * 40, port=0, processes=2)
    listener = listen(config)

    def broken(*args, **kwargs):
        raise RuntimeError("the cause an operator needs to see")

    monkeypatch.setattr(server, "build_server", broken)
    # As `chargebox serve` logs (cli.main): to stderr, which the child shares.
    handler = logging.StreamHandler(sys.stderr)
    server.log.addHandler(handler)
    supervisor = server._Supervisor(config, [listener])
    try:
        supervisor.start_child(0)
        (pid,) = supervisor.started
        deadline = time.monotonic() + 10
        while not (done := os.waitpid(pid, os.WNOHANG))[0] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert done[0] == pid, "the child did not exit"
    finally:
        listener.close()
        server.log.removeHandler(handler)
    said = capfd.readouterr().err
    assert "RuntimeError: the cause an operator needs to see" in said
    assert "Traceback" not in said
