"""``python -m tps`` is the same as the ``tps`` console script."""

from __future__ import annotations

import sys

from tps.cli import main

if __name__ == "__main__":
    sys.exit(main())
