"""The reference worker: ``python -m convert.parity WORKDIR``."""

import sys

from . import _worker_main

sys.exit(_worker_main(sys.argv[1]))
