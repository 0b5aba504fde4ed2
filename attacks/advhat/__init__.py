"""AdvHat (Komkov & Petiushko 2019): one printed sticker on the forehead impersonates a target.

SIDE's Table 6 uses it as a *physical* attack: a universal sticker, unbounded in intensity, is
optimised so that anyone wearing it matches one target identity; a defense scores the share
of stickered faces it still rejects. The attack therefore has its own protocol instead of the
pair loop (a :class:`facebench.protocol_attack.ProtocolAttack`): threshold from the protocol's
clean pairs, one photo each of up to ``n_people`` evaluation people, one sticker trained on
people outside the protocol. The sticker geometry (bend, lean-back, EOT, TV) is ``sticker``.
"""
from . import table6  # noqa: F401  (registers the `table6` layout)
from .attack import AdvHat

__all__ = ["AdvHat"]
