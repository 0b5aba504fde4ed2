"""Your own face pairs: a CSV ``path_a,path_b,same`` over a folder of aligned crops."""
from facebench.data import csv_pairs
from facebench.dataset import Dataset
from facebench.errors import FacebenchError
from facebench.registry import register_dataset


@register_dataset("pairs", "your own aligned crops: --pairs-file CSV (path_a,path_b,same) "
                  "[--image-root DIR]")
class UserPairs(Dataset):
    raw_frames = False
    offline = True

    def pairs(self, protocol, *, pairs_file=None, image_root=None, **_):
        if pairs_file is None:
            raise FacebenchError("dataset 'pairs' needs a CSV pairs file (--pairs-file)")
        return csv_pairs(pairs_file, image_root)
