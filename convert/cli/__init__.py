"""The ``bitconvert`` command line (console script ``bitconvert = convert.cli:main``).

``commands`` holds the group and the small commands, ``export`` the export command,
``options`` the shared click options, ``quiet`` the framework start-up filter,
``inspect_report`` the checkpoint report.
"""

from .commands import cli, main

__all__ = ["cli", "main"]
