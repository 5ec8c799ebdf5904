"""A second export target for the orchestrator's tests: the classifier as a tf.saved_model under fake/.

It goes through the whole interface (write, check, card) with real files and a
real reload; ``SCALE`` != 1 makes its reloaded outputs wrong, as a broken
converter would.
"""

from __future__ import annotations

import numpy as np

from convert.export.savedmodel import build_exportable
from convert.export.target import Artifact, Run

SCALE = {"value": 1.0}


class FakeTarget:
    name = "fake"
    summary = "test only: the classifier again, under fake/"

    def write(self, job):
        import tensorflow as tf

        root = build_exportable(job.net, "classification", job.input_range)
        tf.saved_model.save(root, str(job.export_dir / "fake" / "classification"))
        return [Artifact(self.name, "classification", "fake/classification", {"converter": "tf.saved_model"})]

    def check(self, job, artifacts, images, prepared=None):
        import tensorflow as tf

        def wait():
            runs = []
            for a in artifacts:
                out = tf.saved_model.load(str(job.export_dir / a.path))(tf.constant(images)).numpy()
                runs.append(Run(a, "tensorflow", out * np.float32(SCALE["value"]), 0.5, {"runtime_version": tf.__version__}))
            return runs

        return wait

    def card(self, job, artifact, figures):
        rel = figures["tensorflow"].relative_l2_error if figures else None
        return f"# fake {artifact.variant}\n\nrelative L2 error {rel}\n"


TARGET = FakeTarget()
