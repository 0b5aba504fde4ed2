"""One exception type for every user-facing problem.

The CLI turns a :class:`FacebenchError` into a single ``facebench: error: ...`` line and a
non-zero exit code, so messages must name the problem (file, option, value) on their own.
"""


class FacebenchError(Exception):
    """A problem with the user's input or environment, reported without a traceback."""
