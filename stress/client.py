"""A small keep-alive JSON client over `http.client`, one connection per worker.

The harness measures the server, so the client must be cheap: `requests` costs
several hundred microseconds of Python per call, `http.client` a fraction of
that. A broken connection is reopened once; the caller sees the rest.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.parse
from dataclasses import dataclass


@dataclass
class Reply:
    status: int
    body: dict
    headers: dict
    seconds: float

    @property
    def replayed(self) -> bool:
        return self.headers.get("idempotent-replayed") == "true"


class Client:
    def __init__(self, url: str, token: str | None = None, timeout: float = 60) -> None:
        parts = urllib.parse.urlsplit(url)
        self.host, self.port = parts.hostname, parts.port or 80
        self.timeout = timeout
        self.headers = {"Content-Type": "application/json", "Connection": "keep-alive"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        return self._conn

    def request(
        self, method: str, path: str, body: dict | None = None, headers: dict | None = None
    ) -> Reply:
        payload = None if body is None else json.dumps(body).encode()
        all_headers = {**self.headers, **(headers or {})}
        for attempt in (1, 2):
            started = time.perf_counter()
            try:
                conn = self._connection()
                conn.request(method, path, payload, all_headers)
                response = conn.getresponse()
                raw = response.read()
            except (ConnectionError, http.client.HTTPException):
                self.close()
                if attempt == 2 or method != "GET":
                    raise
                continue
            seconds = time.perf_counter() - started
            if response.getheader("Connection", "").lower() == "close":
                self.close()
            return Reply(
                response.status,
                json.loads(raw) if raw else {},
                {k.lower(): v for k, v in response.getheaders()},
                seconds,
            )
        raise AssertionError("unreachable")

    def get(self, path: str) -> Reply:
        return self.request("GET", path)

    def post(self, path: str, body: dict | None = None, headers: dict | None = None) -> Reply:
        return self.request("POST", path, body, headers)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
