"""The attacker's view: what a run's attack is given to craft against, in one place.

Each kind of attacker knowledge is a choice of target model, the gallery embeddings it
compares against, its decision threshold, and the label the ``adaptive`` column records:

| knowledge | target | gallery, threshold | label |
|---|---|---|---|
| grey-box (default) | the bare recognizer (or a fixed surrogate on it, e.g. a*) | bare | ``none`` or the attack's own (``a*``) |
| adaptive (``--adaptive``) | recognizer∘defense, with BPDA / EOT as the defense needs | defended | ``plain``, ``bpda``, ``eot``, ``bpda+eot`` |
| transfer (``--source``) | the source recognizer∘defense | the source's | ``transfer:<source>`` |
| query (decision-based attacks) | the deployed recognizer∘defense, queried | defended | ``query`` |
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

from . import metrics as M
from .adaptive import adaptive_target
from .embed import embed_images


@dataclass
class AttackerView:
    target: Any  # the model the attack differentiates or queries
    gallery_emb: torch.Tensor  # what it compares the probes against
    threshold: float  # its accept/reject threshold
    label: str  # the ``adaptive`` column
    greybox: bool  # examples independent of the defense (so they may be cached)
    #: transfer from a bare source: the examples are that recognizer's own grey-box ones
    #: (same crops, gallery, threshold and seed), so they share its cache entries
    examples_of: Optional[str] = None


def _threshold(emb: torch.Tensor, idx_a, idx_b, same: np.ndarray) -> float:
    return M.best_threshold(M.cosine_similarity(emb[idx_a], emb[idx_b]).numpy(), same)


def attacker_view(attack, *, adaptive: bool, eot_samples: Optional[int], source_label,
                  source, defense, defense_name: str, recognizer, defended, images, idx_a,
                  idx_b, same, clean_emb, clean_thr, batch_size: int, device,
                  progress: bool) -> AttackerView:
    """The :class:`AttackerView` of one run (``source``: (source model, its defense))."""
    if not attack.gradient_based:  # decision-based: queries the deployed system
        return AttackerView(defended, clean_emb, clean_thr, "query", False)
    if source is not None:  # transfer: the attacker knows only its own (defended) model
        src, src_defense = source
        target, _ = adaptive_target(src_defense, src, eot_samples)
        src_clean = src_defense.wrap(src).to(device).eval()
        emb = embed_images(src_clean, images, batch_size, device, "source", progress)
        # "recognizer[+defense][@photo]": the carry does not change what was crafted
        source_name, _, source_defense = str(source_label).split("@")[0].partition("+")
        return AttackerView(target, emb, _threshold(emb, idx_a, idx_b, same),
                            f"transfer:{source_label}", False,
                            examples_of=None if source_defense not in ("", "none")
                            else source_name)
    if adaptive:  # through the defense: plain gradients, BPDA and/or EOT as it needs
        target, label = adaptive_target(defense, recognizer, eot_samples)
        return AttackerView(target, clean_emb, clean_thr, label, False)
    # grey-box: crafted on the bare recognizer (or a fixed surrogate built on it, as a* is),
    # then the defense is applied. The attacker ignores the defense entirely, so it also
    # compares against bare gallery embeddings and the bare clean threshold; the examples
    # are then the same for every defense (and cached as such).
    label = getattr(attack, "knowledge", None) or "none"
    if defense_name == "none":
        return AttackerView(recognizer, clean_emb, clean_thr, label, True)
    bare = embed_images(recognizer, images, batch_size, device, "bare", progress)
    return AttackerView(recognizer, bare, _threshold(bare, idx_a, idx_b, same), label, True)
