"""What SIDE and PIN share: eigenfaces, antibodies, the purifier base and its training.

A library package for the ``side`` and ``pin`` plugins; it registers nothing itself (the
defense registry imports it like any other package of ``facebench.defenses``).
"""
