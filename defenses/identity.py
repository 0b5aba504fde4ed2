"""The no-op defense: the recognizer sees the images unchanged."""
from facebench.defense import Defense
from facebench.registry import register_defense


@register_defense("none")
class NoDefense(Defense):
    """No defense: images reach the recognizer unchanged (the baseline row)."""

    table_order = 0.0  # the baseline row comes first
