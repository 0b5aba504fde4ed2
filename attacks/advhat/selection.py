"""Who AdvHat evaluates, who it impersonates, and whose photos train the sticker.

Kept apart from the optimiser: these choices are the protocol (SIDE Table 6) — one photo each
of the protocol's people, the target's photos split between attacker and gallery, training
faces from people outside the protocol.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List

import numpy as np

from facebench.errors import FacebenchError


def person(path: str) -> str:
    return Path(path).parent.name


@dataclass(frozen=True)
class Selection:
    target: str
    eval_paths: List[str]  # one photo per evaluated person
    target_paths: List[str]  # the attacker's photos of the target
    gallery_paths: List[str]  # the target's photos enrolled in the system (disjoint)
    train_paths: List[str]  # training-split faces the sticker is optimised on


def select(attack, home, protocol: str, full_pairs, seed: int) -> Selection:
    """The protocol's faces for ``attack`` (its target, n_people, *_photos, train_images)."""
    from facebench.datasets.lfw import lfw_people, training_split
    from facebench.trainer import evenly_spaced

    people = lfw_people(home)
    first_photo = {}
    for path in full_pairs.unique_paths():  # each evaluation person's first photo
        first_photo.setdefault(person(path), path)
    target = attack._choose_target(people, first_photo)
    eval_names = sorted(n for n in first_photo if n != target)
    if not eval_names:
        raise FacebenchError(f"protocol {protocol!r} has nobody to evaluate besides "
                             f"the target {target!r}")
    if attack.n_people < len(eval_names):
        pick = np.random.default_rng(seed).choice(len(eval_names), attack.n_people,
                                                  replace=False)
        eval_names = [eval_names[i] for i in sorted(pick)]
    train_paths = evenly_spaced([p for p in training_split(home, protocol)
                                 if person(p) != target], attack.train_images)
    if not train_paths:
        raise FacebenchError(f"the training split of {protocol!r} has no images")
    return Selection(
        target=target, eval_paths=[first_photo[n] for n in eval_names],
        target_paths=evenly_spaced(people[target][0::2], attack.target_photos),
        gallery_paths=evenly_spaced(people[target][1::2], attack.gallery_photos),
        train_paths=train_paths)
