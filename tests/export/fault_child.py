"""``python fault_child.py ARGS...``: the real ``bitconvert ARGS`` with every registry entry in the TINY block layout.

The fault-injection tests (test_faults.py) signal real export processes at
chosen moments; on the reduced layout (tests/conftest.py TINY, with the
entry's own classes so that its label file fits) an export takes seconds, not minutes.
"""

import sys

from conftest import TINY

from convert.cli.commands import main
from convert.model.architecture import Architecture
from convert.registry import ModelEntry

ModelEntry.architecture = property(lambda entry: Architecture(TINY.units, TINY.width, entry.classes))

if __name__ == "__main__":
    main(sys.argv[1:])
