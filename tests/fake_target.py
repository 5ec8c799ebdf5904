"""A format the package does not have, for the orchestrator's tests: the classifier as a tf.saved_model under fake/.

It goes through the whole interface (prepare, write, check, card, finish,
labels, Kaggle) with real files and a real reload, and describes itself as
every target does, so an export through it proves that the orchestrator,
manifest, judge, labels and Kaggle code need nothing but the interface.
``SCALE`` != 1 makes its reloaded outputs wrong, as a broken converter would;
``CALLS`` records which hooks ran.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from convert.export.savedmodel import build_exportable
from convert.export.target import Artifact, ExportTarget, Run

SCALE = {"value": 1.0}
CALLS: list[str] = []
#: Kaggle Models' framework for what fits no other.
FRAMEWORK = "other"


class Prepared:
    def stop(self) -> None:
        CALLS.append("stop")


class FakeTarget(ExportTarget):
    name = "fake"
    summary = "test only: the classifier again, under fake/"
    kaggle_framework = FRAMEWORK

    def prepare(self, job, images):
        CALLS.append("prepare")
        return Prepared()

    def write(self, job):
        import tensorflow as tf

        root = build_exportable(job.net, "classification", job.input_range)
        tf.saved_model.save(root, str(job.export_dir / "fake" / "classification"))
        return [Artifact(self.name, "classification", "fake/classification", {"converter": "tf.saved_model"})]

    def check(self, job, artifacts, images, prepared=None):
        import tensorflow as tf

        assert isinstance(prepared, Prepared)

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

    def finish(self, job, artifacts, options):
        CALLS.append("finish")
        return [replace(a, facts={**a.facts, "finished": True}) for a in artifacts]

    def labels_path(self, artifact):
        return f"{artifact.path}.labels"

    def kaggle_usage(self, artifact):
        return ["import fake"], [f'outputs = fake.load("${{PATH}}/{artifact.path}")(images)']


TARGET = FakeTarget()
