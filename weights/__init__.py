"""Committed learned-defense weights (``facebench.weights``): ``<defense>/model.pt`` in fp16
with the training manifest and log; see :mod:`facebench.trainable` for how they are made,
found and checked (and :mod:`facebench.defenses.eigen.committed` for SIDE's eigenbasis).

This package only carries data files; :func:`facebench.trainable.committed_dir` finds them.
"""
