"""Committed purifier weights (``facebench.weights``): ``<defense>/model.pt`` in fp16 with the
training manifest and log; see :mod:`facebench.committed_weights` for how they are made and loaded.

This package only carries data files; :func:`facebench.committed_weights.committed_dir` finds them.
"""
