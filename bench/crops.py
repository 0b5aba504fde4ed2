"""The crops a run scores: pairs whose photos a strict detecting aligner finds no face in
are left out (in one line), and the ``recognizer`` column names an alignment that is not
the dataset's default, so rows of other crops never share a table cell."""
from __future__ import annotations

import sys

from .errors import FacebenchError


def aligned_pairs(cfg, pairs, aligner):
    """(pairs, crops, idx_a, idx_b): with a strict detecting aligner (``--align detect`` on
    a user's photos), pairs holding a photo without a face are left out, in one line."""
    from .data import pair_images, pair_images_with_faces

    if getattr(aligner, "fallback", True):
        return (pairs, *pair_images(pairs, aligner, progress=cfg.progress))
    found = pair_images_with_faces(pairs, aligner, progress=cfg.progress)
    if found.no_face:
        shown = ", ".join(found.no_face[:3]) + (", ..." if len(found.no_face) > 3 else "")
        kept = found.pairs.same
        line = (f"align: no face found in {len(found.no_face)} of "
                f"{len(pairs.unique_paths())} images ({shown}); {found.excluded} of "
                f"{len(pairs)} pairs left out, {len(kept)} scored")
        if kept.all() or not kept.any():
            raise FacebenchError(f"{line}, which leaves no same and different pair to score")
        print(line, file=sys.stderr)
    return found.pairs, found.images, found.idx_a, found.idx_b


def row_recognizer(cfg, dataset, recognizer) -> str:
    """The ``recognizer`` column: the name, plus ``[align=NAME]`` when ``--align`` cut the
    images otherwise than this dataset does by default (rows of other crops never mix)."""
    if cfg.align in (None, "auto"):
        return cfg.recognizer
    from .data.align import aligner_name

    name = aligner_name(recognizer, cfg.align)
    return (cfg.recognizer if name == dataset.auto_aligner_name(recognizer)
            else f"{cfg.recognizer}[align={name}]")
