"""The reference worker: ``python -m convert.parity WORKDIR``."""

import sys

from .worker import worker_main

sys.exit(worker_main(sys.argv[1]))
