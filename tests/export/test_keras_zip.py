"""convert.export.keras_zip: the same model saved twice, in two processes, is the same bytes, and still loads."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from convert.export.keras_zip import DATE_SAVED, ZIP_EPOCH, stable_ids

ROOT = Path(__file__).resolve().parent.parent.parent
#: Saves the TINY classifier as Keras writes it, then made reproducible; loads it back and runs both.
SAVE = """
import sys
import numpy as np
import keras
from conftest import TINY
from convert.model.keras_model import build_keras_models
from convert.synthetic import synthetic_arrays
from convert.export.keras_zip import make_reproducible
model, _ = build_keras_models(TINY, synthetic_arrays(TINY, seed=3))
model.save(sys.argv[1] + ".as-saved.keras")
model.save(sys.argv[1])
make_reproducible(sys.argv[1])
x = np.random.default_rng(0).uniform(0, 1, (1, 40, 40, 3)).astype("float32")
again = keras.saving.load_model(sys.argv[1])
print(float(np.abs(np.asarray(again(x)) - np.asarray(model(x))).max()))
"""


def _save(path: Path) -> float:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]), "KERAS_BACKEND": "tensorflow"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    proc = subprocess.run([sys.executable, "-c", SAVE, str(path)], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return float(proc.stdout.split()[-1])


def test_two_saves_in_two_processes_are_the_same_bytes_and_load(tmp_path):
    paths = [tmp_path / "a.keras", tmp_path / "b.keras"]
    for p in paths:
        assert _save(p) == 0.0  # the rewritten file loads and computes what the model computed
    as_saved = [Path(f"{p}.as-saved.keras").read_bytes() for p in paths]
    assert as_saved[0] != as_saved[1]  # what Keras writes differs from save to save...
    digests = {hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}
    assert len(digests) == 1  # ...what the export keeps does not
    with zipfile.ZipFile(paths[0]) as z:
        assert all(i.date_time == ZIP_EPOCH for i in z.infolist())
        assert json.loads(z.read("metadata.json"))["date_saved"] == DATE_SAVED
        with zipfile.ZipFile(f"{paths[0]}.as-saved.keras") as original:
            assert [i.filename for i in z.infolist()] == [i.filename for i in original.infolist()]
            assert z.read("model.weights.h5") == original.read("model.weights.h5")


def test_shared_ids_are_renumbered_consistently():
    config = (
        b'{"a": {"shared_object_id": 140597658204240}, "b": {"shared_object_id": 9}, "c": {"shared_object_id": 140597658204240}}'
    )
    assert stable_ids(config) == b'{"a": {"shared_object_id": 1}, "b": {"shared_object_id": 2}, "c": {"shared_object_id": 1}}'
