"""convert.imports.import_without: a first import that sees some packages as not installed, and only that import."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from convert.imports import import_without

HEAVY = """
try:
    import {optional}
    HAS_OPTIONAL = True
except ImportError:
    HAS_OPTIONAL = False
{extra}
"""


@pytest.fixture
def packages(tmp_path, monkeypatch):
    """Writes modules ``heavy_<tag>`` (which imports ``optional_<tag>`` if it can) and ``optional_<tag>``."""
    monkeypatch.syspath_prepend(str(tmp_path))
    made = []

    def make(tag: str, extra: str = "") -> tuple[str, str]:
        heavy, optional = f"heavy_{tag}", f"optional_{tag}"
        (tmp_path / f"{optional}.py").write_text("VALUE = 1\n")
        (tmp_path / f"{heavy}.py").write_text(HEAVY.format(optional=optional, extra=extra))
        made.extend((heavy, optional))
        return heavy, optional

    yield make
    for name in made:
        sys.modules.pop(name, None)


def test_the_first_import_sees_the_package_as_missing_and_later_imports_find_it(packages):
    heavy, optional = packages("a")
    module = import_without(heavy, (optional,))
    assert module.HAS_OPTIONAL is False
    assert optional not in sys.modules  # the marker is gone again
    assert __import__(optional).VALUE == 1


def test_a_package_imported_already_is_not_hidden(packages):
    heavy, optional = packages("b")
    __import__(optional)
    assert import_without(heavy, (optional,)).HAS_OPTIONAL is True


def test_a_module_imported_already_is_returned_as_it_is(packages):
    heavy, optional = packages("c")
    first = __import__(heavy)
    assert first.HAS_OPTIONAL is True
    assert import_without(heavy, (optional,)) is first


def test_a_failing_import_leaves_nothing_hidden(packages):
    heavy, optional = packages("d", extra="raise RuntimeError('broken')")
    with pytest.raises(RuntimeError, match="broken"):
        import_without(heavy, (optional,))
    assert optional not in sys.modules
    assert __import__(optional).VALUE == 1


def test_tensorflow_imported_without_jax_works_and_jax_imports_afterwards():
    """The real use (docs/performance.md, "Session 27"): TensorFlow imports JAX whenever it is installed."""
    code = textwrap.dedent(
        """
        import sys
        from convert.imports import import_without
        tf = import_without("tensorflow")
        assert "jax" not in sys.modules, "TensorFlow imported JAX"
        assert float(tf.reduce_sum(tf.ones([3]))) == 3.0
        import jax.numpy as jnp
        assert float(jnp.sum(jnp.ones(3))) == 3.0
        print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok"
