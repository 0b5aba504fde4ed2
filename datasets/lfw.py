"""Labeled Faces in the Wild with its official protocols (downloaded with pooch, sha256-pinned)."""
from facebench.data import PROTOCOLS, ensure_lfw, lfw_pairs, resolve_data_home
from facebench.dataset import Dataset
from facebench.registry import register_dataset


@register_dataset("lfw", "Labeled Faces in the Wild: 10-fold (6000 pairs), dev-train, dev-test")
class LFW(Dataset):
    protocols = tuple(PROTOCOLS)
    default_protocol = "10-fold"

    def pairs(self, protocol, *, data_home=None, download=True, **_):
        home = ensure_lfw(resolve_data_home(data_home), protocol, download=download)
        return lfw_pairs(home, protocol)

    def held_out_protocol(self, protocol):
        return protocol
