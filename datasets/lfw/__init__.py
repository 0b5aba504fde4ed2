"""Labeled Faces in the Wild with its official protocols (downloaded with pooch, sha256-pinned).

``protocol`` parses the pair lists strictly; ``download`` finds or fetches the files. The
training split of a protocol is every image of the people in none of its pairs, so a learned
defense trained on it never sees a person it is evaluated on.
"""
from facebench.data.download import resolve_data_home
from facebench.dataset import Dataset, TrainingSplit
from facebench.registry import register_dataset

from .download import LFW_ARCHIVE, PAIRS_FILES, SEED_HINT, ensure_lfw
from .protocol import (IMAGE_DIR, PROTOCOLS, check_protocol, image_path, lfw_home_dir,
                       lfw_pairs, lfw_people, pair_people, parse_pairs_file, training_split)

__all__ = ["IMAGE_DIR", "LFW", "LFW_ARCHIVE", "PAIRS_FILES", "PROTOCOLS", "SEED_HINT",
           "check_protocol", "ensure_lfw", "image_path", "lfw_home_dir", "lfw_pairs",
           "lfw_people", "pair_people", "parse_pairs_file", "training_split"]


@register_dataset("lfw", "Labeled Faces in the Wild: 10-fold (6000 pairs), dev-train, dev-test",
                  default="train")
class LFW(Dataset):
    protocols = tuple(PROTOCOLS)
    default_protocol = "10-fold"
    # Viola-Jones centred each frame on its subject; a frame where the detector finds no
    # face still holds it there, so the fixed fallback geometry keeps every pair
    face_pick = "center"
    no_face_fallback = True

    def pairs(self, protocol, *, data_home=None, download=True, **_):
        home = ensure_lfw(resolve_data_home(data_home), self.check_protocol(protocol),
                          download=download)
        return lfw_pairs(home, protocol)

    def held_out_protocol(self, protocol):
        return protocol

    def training_split(self, protocol, *, data_home=None, download=True) -> TrainingSplit:
        protocol = self.check_protocol(protocol)
        home = ensure_lfw(resolve_data_home(data_home), protocol, download=download)
        return TrainingSplit(paths=training_split(home, protocol), root=home,
                             name=f"lfw:{protocol}", dataset="lfw", protocol=protocol,
                             description=f"images of people in no pair of {protocol}",
                             location={"lfw_home": str(home)})
