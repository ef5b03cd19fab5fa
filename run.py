"""Start chargebox: `python run.py [--host 127.0.0.1] [--port 8080] [--db data/chargebox.db]`.

A thin call into `chargebox.cli`; `chargebox serve --help` lists every option.
"""

import sys

from chargebox.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
