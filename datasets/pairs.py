"""Your own face pairs: a CSV ``path_a,path_b,same`` over a folder of aligned crops."""
from facebench.data import csv_pairs
from facebench.dataset import Dataset
from facebench.errors import FacebenchError
from facebench.registry import register_dataset


@register_dataset("pairs", "your own pairs: --pairs-file CSV (path_a,path_b,same) "
                  "[--image-root DIR]; aligned crops, or photos with --align detect")
class UserPairs(Dataset):
    """Crops are only resized unless ``--align`` says otherwise; with ``--align detect``
    each photo's largest face is found and aligned, and photos with none are reported and
    their pairs left out (a user's photo has no fixed geometry to fall back on)."""

    raw_frames = False
    offline = True
    face_pick = "largest"
    no_face_fallback = False

    def pairs(self, protocol, *, pairs_file=None, image_root=None, **_):
        if pairs_file is None:
            raise FacebenchError("dataset 'pairs' needs a CSV pairs file (--pairs-file)")
        return csv_pairs(pairs_file, image_root)
