"""Copy a finished training run into weights/<defense>/ (fp16 model, manifest, log).

    python scripts/export_weights.py RUN_DIR [DEST]

RUN_DIR is a `facebench train` output folder (e.g. the user data dir's models/side/medium);
DEST defaults to weights/<defense>/ of this checkout. The eigenbasis is not copied: loading
recomputes it from the LFW images the manifest names.
"""
import json
import sys
from pathlib import Path

from facebench.errors import FacebenchError
from facebench.trainable import export_weights

ROOT = Path(__file__).resolve().parents[1]

if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    run = Path(sys.argv[1])
    try:
        defense = json.loads((run / "manifest.json").read_text(encoding="utf-8"))["defense"]
    except (OSError, ValueError, KeyError) as exc:
        sys.exit(f"export_weights: error: {run} has no usable training manifest ({exc})")
    dest = Path(sys.argv[2]) if len(sys.argv) == 3 else ROOT / "weights" / defense
    try:
        out = export_weights(run, dest)
    except FacebenchError as exc:
        sys.exit(f"export_weights: error: {exc}")
    size = (out / "model.pt").stat().st_size / 2**20
    print(f"{defense}: {size:.1f} MB fp16 model written to {out}")
