"""The chargebox stress harness and the threads-vs-processes lessons: `python -m stress`.

It talks HTTP to a real server process (or, for the in-process demos, uses
SQLite and Python directly); it never reaches into `chargebox.web`.
"""
