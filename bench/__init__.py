"""facebench: adversarial robustness of face recognition, measured on real face pairs.

The API mirrors the CLI: ``load_recognizer``, ``load_defense``, ``load_attack``, ``run``.
"""
__version__ = "0.1.0"


def __getattr__(name):
    # Lazy: `import facebench` stays cheap, and registries load only when asked for.
    if name in ("load_recognizer", "load_defense", "load_attack", "run"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'facebench' has no attribute {name!r}")
