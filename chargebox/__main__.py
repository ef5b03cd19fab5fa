"""`python -m chargebox ...`: the `chargebox` command, for a shell without the installed script."""

import sys

from chargebox.cli import main

if __name__ == "__main__":
    sys.exit(main())
