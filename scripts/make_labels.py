#!/usr/bin/env python
"""Regenerate convert/data/ilsvrc2012_wordnet_lemmas.txt from timm's ImageNet info files.

    .venv/bin/python scripts/make_labels.py [--check]

timm (Apache-2.0, https://github.com/huggingface/pytorch-image-models) ships
``timm/data/_info/imagenet_synsets.txt`` (the 1000 ILSVRC-2012 WordNet ids in
class order, one per line) and ``imagenet_synset_to_lemma.txt`` (``<wnid>\\t<lemmas>``
for every ImageNet synset). Line i of the output is the lemmas of class i,
the same facts and format as the BiT bucket's ``ilsvrc2012_wordnet_lemmas.txt``
(``tench, Tinca tinca``). The file carries no header (line count == classes);
its provenance and license are in convert/data/NOTICE. ``--check`` exits 1 when
the shipped file differs from what timm gives.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "convert" / "data" / "ilsvrc2012_wordnet_lemmas.txt"
CLASSES = 1000


def lemmas_from_timm() -> str:
    spec = importlib.util.find_spec("timm")  # located, not imported (importing timm imports torch)
    if spec is None or spec.origin is None:
        raise SystemExit("timm is not installed: pip install timm")
    info = Path(spec.origin).parent / "data" / "_info"
    synsets = (info / "imagenet_synsets.txt").read_text(encoding="utf-8").split()
    lemma_of = {}
    for line in (info / "imagenet_synset_to_lemma.txt").read_text(encoding="utf-8").splitlines():
        wnid, _, lemmas = line.partition("\t")
        lemma_of[wnid] = lemmas.strip()
    if len(synsets) != CLASSES or len(set(synsets)) != CLASSES:
        raise SystemExit(f"timm's imagenet_synsets.txt has {len(synsets)} ids ({len(set(synsets))} distinct), expected {CLASSES}")
    missing = [s for s in synsets if not lemma_of.get(s)]
    if missing:
        raise SystemExit(f"timm has no lemmas for {len(missing)} synsets, e.g. {missing[:3]}")
    return "".join(lemma_of[s] + "\n" for s in synsets)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare with the shipped file instead of writing it")
    args = parser.parse_args()
    text = lemmas_from_timm()
    if args.check:
        same = OUT.read_text(encoding="utf-8") == text
        print(f"{OUT}: {'up to date' if same else 'DIFFERS from timm'}", file=sys.stderr)
        return 0 if same else 1
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT} ({CLASSES} lines)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
