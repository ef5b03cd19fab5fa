"""What the process-based demos share: gathering their workers' reports safely.

Kept apart from the registry in `__init__` so that importing a demo stays cheap.
"""

from __future__ import annotations

import queue
import time


def collect_reports(processes: list, results, timeout: float) -> list[dict]:
    """Every worker's report; if one dies instead of reporting, stop them all and say so."""
    reports: list[dict] = []
    deadline = time.monotonic() + timeout
    try:
        while len(reports) < len(processes):
            try:
                reports.append(results.get(timeout=0.2))
            except queue.Empty:
                failed = [p.exitcode for p in processes if p.exitcode not in (None, 0)]
                if failed or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"worker processes failed (exit codes {failed}) or timed out; a script"
                        " that runs this demo under spawn needs `if __name__ == '__main__':`"
                    ) from None
    finally:
        for process in processes:
            if len(reports) < len(processes):
                process.terminate()  # only our own children, and only after a failure
            process.join(timeout=10)
    return reports
