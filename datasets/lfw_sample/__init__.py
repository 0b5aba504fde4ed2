"""The embedded LFW sample: 100 dev-test pairs that ship inside facebench (2.9 MB).

They are the seeded, balanced subset that ``--dataset lfw --protocol dev-test --pairs 100
--seed 0`` selects, the JPEGs copied byte for byte (``scripts/make_lfw_sample.py``), so every
recognizer's own aligner applies and a run here reproduces those 100 pairs of the full LFW.
Dev-test's people are in no shipped learned defense's training split. Every file is checked
against the sha256 in ``manifest.json`` before use.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from facebench.data import csv_pairs
from facebench.dataset import Dataset
from facebench.errors import FacebenchError
from facebench.registry import register_dataset

HERE = Path(__file__).resolve().parent


def verify(root: Path = HERE) -> dict:
    """The manifest, after checking every shipped file against its sha256."""
    try:
        manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
        files = dict(manifest["files"], **{"pairs.csv": manifest["pairs_csv_sha256"]})
    except (OSError, ValueError, KeyError) as exc:
        raise FacebenchError(f"the embedded LFW sample in {root} is incomplete ({exc}); "
                             f"reinstall facebench") from None
    for rel, want in files.items():
        try:
            got = hashlib.sha256((root / rel).read_bytes()).hexdigest()
        except OSError:
            got = "missing"
        if got != want:
            raise FacebenchError(f"embedded LFW sample file {rel} is {got[:12]}…, expected "
                                 f"sha256 {want[:12]}…; reinstall facebench")
    return manifest


@register_dataset("lfw-sample", "100 LFW dev-test pairs shipped with facebench (offline)",
                  default=True)
class LFWSample(Dataset):
    protocols = ("dev-test",)
    default_protocol = "dev-test"
    offline = True
    face_pick = "center"  # LFW frames, as in the lfw dataset
    no_face_fallback = True

    def pairs(self, protocol, **_):
        verify()
        pairs = csv_pairs(HERE / "pairs.csv", HERE)
        pairs.name = "lfw-sample"
        return pairs

    def held_out_protocol(self, protocol):
        return "dev-test"
