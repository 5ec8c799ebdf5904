"""Keep TensorFlow's and JAX's own start-up chatter off stderr.

On a machine without a GPU, ``import tensorflow`` prints, before its logging is
set up and whatever ``TF_CPP_MIN_LOG_LEVEL`` says, lines such as::

    WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
    I0000 00:00:1796117757.542140   11573 port.cc:153] oneDNN custom operations are on. ...
    I0000 00:00:1796117757.548497   11573 cudart_stub.cc:31] Could not find cuda drivers on your machine, ...

and its first op logs ``failed call to cuInit`` at ERROR level; JAX without
``JAX_PLATFORMS`` probes for CUDA and logs the same. Two measures, both set up
by :func:`prepare` before either framework is imported:

1. the environment: ``TF_CPP_MIN_LOG_LEVEL=3`` (only fatal native logs after
   start-up) and ``JAX_PLATFORMS=cpu``, each only when the user has not set it
   (so ``TF_CPP_MIN_LOG_LEVEL=0`` still shows everything); the Python loggers
   ``absl`` and ``tensorflow`` at ERROR. ``TF_ENABLE_ONEDNN_OPTS`` is left
   alone: turning oneDNN off would silence its line but change the numerics;
2. an import hook: while ``tensorflow`` or ``jax`` is first imported, file
   descriptor 2 goes to a temporary file; afterwards every line of it that is
   not a native log line (glog format, or the two lines above) is written to
   the real stderr, so a genuine warning or error still shows.

The hook only wraps those two imports; nothing else of stderr is touched, so
progress bars keep their terminal. Child processes (the JAX reference worker)
inherit the environment.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import logging
import os
import sys

from ..nativelog import NATIVE_LINE, keep_lines, native_stderr_filtered

#: Top-level modules whose first import is wrapped.
FRAMEWORKS = ("tensorflow", "jax")
__all__ = ["NATIVE_LINE", "FRAMEWORKS", "configure_environment", "keep_lines", "native_stderr_filtered", "prepare"]
ENVIRONMENT = {"TF_CPP_MIN_LOG_LEVEL": "3", "JAX_PLATFORMS": "cpu"}


def configure_environment(environ=os.environ) -> dict[str, str]:
    """Set :data:`ENVIRONMENT` where the user has not; returns what was set."""
    done = {}
    for key, value in ENVIRONMENT.items():
        if key not in environ:
            environ[key] = value
            done[key] = value
    for name in ("absl", "tensorflow"):
        logging.getLogger(name).setLevel(logging.ERROR)
    return done


class _FilteringLoader(importlib.abc.Loader):
    """The real loader of a framework's top-level module, its ``exec_module`` run with stderr filtered."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        module.__loader__ = self._loader
        with native_stderr_filtered():
            self._loader.exec_module(module)

    def __getattr__(self, name):  # resources, get_code, ...: the real loader's
        return getattr(self._loader, name)


class _FrameworkFinder(importlib.abc.MetaPathFinder):
    def __init__(self):
        self._busy = False

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in FRAMEWORKS or self._busy:
            return None
        self._busy = True  # the real spec, from the finders after this one
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._busy = False
        if spec is not None and spec.loader is not None:
            spec.loader = _FilteringLoader(spec.loader)
        return spec


def install_import_filter() -> None:
    """Wrap the first import of each framework (idempotent; no effect on one already imported)."""
    if not any(isinstance(f, _FrameworkFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _FrameworkFinder())


def prepare() -> None:
    """Before TensorFlow or JAX is imported: the environment and the import filter (see the module docstring)."""
    configure_environment()
    install_import_filter()
