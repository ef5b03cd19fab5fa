"""No trace reaches a log: what a library logs of an exception, and what waitress's event
loop does with an exception its handlers raised, are one line each, with the exception's
type, an OSError's errno name, what caused it and where it was raised, never its text
(a path, a query, a value) nor its frames.

(A real server's statement cut short by its database is tests/test_postgresql_lost_peers.py.)
"""

from __future__ import annotations

import errno
import logging

import bottle
import psycopg

from chargebox import connections
from chargebox.errors import NoTraces, Unavailable, closed_after_an_error
from chargebox.pg_driver import translated
from chargebox.web.errors import internal_error

SECRET = "cbk_live_0123456789abcdef"  # what an exception's text might carry


def logged(caplog, logger: logging.Logger, raising) -> logging.LogRecord:
    with caplog.at_level(logging.INFO):
        try:
            raising()
        except Exception:
            logger.exception("Exception while serving /api/statements")
    (record,) = [r for r in caplog.records if r.name == logger.name]
    return record


def test_an_exception_logged_with_its_trace_is_one_line_naming_its_type_and_errno(caplog):
    logger = logging.getLogger("chargebox.tests.no-traces")
    logger.addFilter(NoTraces())

    def too_many_files():
        raise OSError(errno.EMFILE, f"Too many open files: {SECRET}")

    record = logged(caplog, logger, too_many_files)
    said = caplog.text
    assert record.exc_info is None and "Traceback" not in said and SECRET not in said
    assert record.getMessage().startswith(
        "Exception while serving /api/statements: OSError EMFILE at "
    )
    raised = too_many_files.__code__.co_firstlineno + 1
    assert record.getMessage().endswith(f"test_log_lines.py:{raised}")


def test_a_database_error_names_what_caused_it(caplog):
    logger = logging.getLogger("chargebox.tests.no-traces-cause")
    logger.addFilter(NoTraces())

    def read_only():
        with translated():
            raise psycopg.errors.ReadOnlySqlTransaction(f"cannot execute UPDATE {SECRET}")

    record = logged(caplog, logger, read_only)
    assert " Unavailable from ReadOnlySqlTransaction at " in record.getMessage()
    assert SECRET not in caplog.text and "Traceback" not in caplog.text


class _Dispatcher:
    closed = False

    def handle_close(self) -> None:
        self.closed = True


def test_a_connection_whose_handler_raised_is_closed_and_said_in_one_line(caplog):
    dispatcher = _Dispatcher()
    with caplog.at_level(logging.INFO):
        try:
            raise Unavailable(f"lost {SECRET}")
        except Unavailable:
            closed_after_an_error(dispatcher)
    assert dispatcher.closed
    (line,) = caplog.messages
    assert line.startswith("closing _Dispatcher after an unexpected error: Unavailable at ")
    assert SECRET not in caplog.text and "Traceback" not in caplog.text


def test_waitress_event_loop_errors_go_through_the_one_line_handler():
    assert connections._Channel.handle_error is closed_after_an_error
    assert connections.Server.handle_error is closed_after_an_error


def test_a_500s_line_names_the_request_and_the_error_in_one_line(caplog):
    bottle.request.bind({"REQUEST_METHOD": "POST", "PATH_INFO": "/api/sales",
                         "HTTP_X_REQUEST_ID": "support-42"})  # fmt: skip
    with caplog.at_level(logging.INFO):
        try:
            with translated():
                raise psycopg.errors.DataCorrupted(f"bad page {SECRET}")
        except Unavailable as exc:
            raise AssertionError("not a 503") from exc
        except Exception as exc:
            answer = internal_error(exc)
    assert answer.status_code == 500 and "support-42" in answer.body.decode()
    (line,) = caplog.messages
    assert line.startswith("request support-42 POST /api/sales failed: DataCorrupted at ")
    assert SECRET not in caplog.text and "Traceback" not in caplog.text
