"""The dataset contract: where pairs come from, and what the recognizer's aligner sees.

A dataset plugin is one file (or folder) in ``datasets/`` with ``@register_dataset("name")``
on a :class:`Dataset` subclass. The runner asks it for a :class:`~facebench.data.PairList`
and for the protocol whose people a learned defense must have been trained without; it never
tests a dataset's name.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from .errors import FacebenchError


@dataclass
class TrainingSplit:
    """Images a learned defense may train on: people disjoint from ``protocol``'s pairs.

    ``paths`` are relative to ``root``; ``name`` identifies the list in cache keys;
    ``location`` is where it was found on this machine (recorded, never compared)."""

    paths: List[str]
    root: Path
    name: str
    dataset: str
    protocol: Optional[str]
    description: str
    location: Dict[str, str] = field(default_factory=dict)


class Dataset:
    """Base class. Subclasses set the class attributes and implement :meth:`pairs`."""

    #: named protocols ("10-fold", "dev-test", ...); empty when the dataset has none
    protocols: Tuple[str, ...] = ()
    #: used when the user names no protocol and no learned defense asks for another
    default_protocol: Optional[str] = None
    #: True: images are photos the recognizer's own aligner crops (LFW frames);
    #: False: already-aligned crops that are only resized to the recognizer's input
    raw_frames: bool = True
    #: True when it needs no download (ships with facebench or is the user's own files)
    offline: bool = False
    #: for detecting aligners (``--align detect``): which face of a photo is the subject
    #: ("center" for frames centred on their subject, "largest" for everyday photos) and
    #: whether a photo with no face found is cut by the aligner's fixed fallback geometry
    #: (True) or reported and its pairs excluded (False)
    face_pick: str = "largest"
    no_face_fallback: bool = False

    def check_protocol(self, protocol: Optional[str]) -> Optional[str]:
        """``protocol`` validated (None: the default), before any data is touched."""
        name = getattr(self, "registry_name", type(self).__name__)
        if not self.protocols:
            return None
        if protocol is None:
            return self.default_protocol
        if protocol not in self.protocols:
            raise FacebenchError(f"dataset {name!r} has no protocol {protocol!r}; choose from: "
                                 f"{', '.join(self.protocols)}")
        return protocol

    def pairs(self, protocol: Optional[str], *, data_home=None, pairs_file=None,
              image_root=None, download: bool = True):
        """The :class:`~facebench.data.PairList` of ``protocol``."""
        raise NotImplementedError

    def training_split(self, protocol: Optional[str], *, data_home=None,
                       download: bool = True) -> TrainingSplit:
        """The images a learned defense evaluated on ``protocol`` may train on."""
        name = getattr(self, "registry_name", type(self).__name__)
        raise FacebenchError(f"dataset {name!r} has no training split; train on a dataset "
                             f"that has one (`facebench list` marks them)")

    def held_out_protocol(self, protocol: Optional[str]) -> Optional[str]:
        """The LFW protocol whose people these pairs are drawn from, so a learned defense
        trained without that protocol's people may be evaluated here; None: not LFW."""
        return None

    def aligner(self, recognizer, align: Optional[str] = None):
        """The crop ``recognizer`` gets from this dataset's images. ``align`` None or
        ``"auto"``: its declared geometry on raw photos, a plain resize of crops that are
        already aligned; ``"detect"``, ``"fixed"`` or an aligner's name: that geometry
        (``--align``), with this dataset's face pick and no-face rule."""
        from .data.align import ResizeOnly, chosen_aligner, recognizer_aligner

        if align not in (None, "auto"):
            return chosen_aligner(recognizer, align, pick=self.face_pick,
                                  fallback=self.no_face_fallback)
        if self.raw_frames:
            return recognizer_aligner(recognizer)
        return ResizeOnly(getattr(recognizer, "input_size", (150, 150)))

    def auto_aligner_name(self, recognizer) -> str:
        """The registered aligner ``--align auto`` uses for ``recognizer`` here."""
        return getattr(recognizer, "alignment", "center") if self.raw_frames else "resize"

    def row_protocol(self, protocol: Optional[str], pairs_file=None) -> str:
        """What the ``protocol`` column of this run's rows says."""
        if protocol is not None:
            return protocol
        return Path(pairs_file).name if pairs_file else "all"


def load_dataset(name: str) -> Dataset:
    """The registered dataset ``name`` (one clear error, with a did-you-mean, otherwise)."""
    from .registry import DATASETS

    return DATASETS.get(name)()
