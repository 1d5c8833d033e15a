"""``python -m fastbn.bench``: the ``fastbn-bench`` command (and each peer's worker)."""
import sys

from ._cli import main

sys.exit(main())
