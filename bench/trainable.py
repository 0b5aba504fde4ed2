"""The learned-defense contract: presets, ``fit``, and where a trained model is found.

A defense that learns mixes :class:`Trainable` into its ``Defense`` subclass and names its
presets and its training recipe (a :class:`facebench.trainer.Trainer`); then ``facebench
train NAME``, the runner's auto-training of the quick preset and the model lookup below work
for it with no edit to the core, which names no plugin.

A trained model is ``model.pt`` in a training folder: the default one is
``<models root>/<name>/<preset>/`` (see :mod:`facebench.paths`), and a copy may ship under
``weights/<name>/`` (the network in fp16, with the run's manifest, which records its sha256).
"""
from __future__ import annotations

import json
import shutil
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, Dict

from .errors import FacebenchError
from .fileio import load_torch_file, save_torch_atomic

MODEL_FILE = "model.pt"
MODEL_FORMAT = "facebench-purifier/1"  # the name predates other learned defenses; kept
MANIFEST = "manifest.json"
WEIGHTS_PACKAGE = "facebench.weights"
PRESET_ORDER = ("full", "medium", "quick")  # default runs, best first; the last is the fallback
# run-manifest entries that describe the training machine, not the model
_MACHINE_KEYS = (("data", "location"), ("files", "checkpoint"))


class NoModelError(FacebenchError):
    """No trained model where one was looked for (the runner may train the quick preset)."""


class Trainable:
    """Mixin of a learned ``Defense``: ``presets`` and ``trainer_class`` make it trainable."""

    #: preset name -> training settings; each holds ``batch_size``, ``checkpoint_every``,
    #: ``log_every`` and ``max_images`` (None: the whole training split)
    presets: ClassVar[Dict[str, Dict[str, Any]]] = {}
    #: the recipe: a :class:`facebench.trainer.Trainer` subclass
    trainer_class: ClassVar[type | None] = None

    @classmethod
    def fit(cls, *, preset: str = "quick", data_home=None, protocol: str = "dev-test",
            out_dir=None, seed: int = 0, progress: bool = True, max_steps: int | None = None,
            recognizer: Any = None, device: str = "cpu", resume: bool = True,
            download: bool = True, image_cache_dir=None, dataset: str | None = None,
            **options) -> Path:
        """Train with ``preset`` on ``dataset``'s training split for ``protocol`` (None: the
        dataset registered as the training default); the output folder.

        ``options`` override preset settings by name (unknown names are an error), or are
        the recipe's own ``fit_options`` (e.g. a cache folder). ``recognizer`` (a registered
        name or a module) is used frozen, and its aligner crops the training images.
        ``max_steps`` caps the *total* step count (a later call with a larger cap, or none,
        continues); an existing checkpoint is resumed unless ``resume=False``.
        """
        from .trainer import fit

        return fit(cls, preset=preset, data_home=data_home, protocol=protocol,
                   out_dir=out_dir, seed=seed, progress=progress, max_steps=max_steps,
                   recognizer=recognizer, device=device, resume=resume, download=download,
                   image_cache_dir=image_cache_dir, dataset=dataset, **options)

    @classmethod
    def find_model(cls, checkpoint=None) -> Path:
        return find_checkpoint(cls.registry_name, checkpoint)

    @classmethod
    def trained_protocol(cls, params) -> str | None:
        try:
            path = cls.find_model((params or {}).get("checkpoint"))
        except FacebenchError:
            return None  # no model yet: the run trains one for its own protocol
        try:
            info = json.loads((path.parent / MANIFEST).read_text(encoding="utf-8"))
            return info["data"]["protocol"]
        except (OSError, ValueError, KeyError, TypeError):
            return None  # a hand-made folder: the loaded model's meta is checked later

    @classmethod
    def export_manifest(cls, run_dir: Path, manifest: dict) -> None:
        """Hook: adapt a finished run's manifest for a committed copy, in place (drop what
        only the training machine has, record what is needed to rebuild it)."""


def is_trainable(obj) -> bool:
    return isinstance(obj, type) and issubclass(obj, Trainable) and bool(obj.presets)


def trainable_names() -> list[str]:
    """The registered defenses that ``facebench train`` accepts."""
    from .registry import DEFENSES

    return [name for name, cls in DEFENSES.items() if is_trainable(cls)]


def trainable(name: str) -> type:
    """The registered Trainable defense ``name``, or one error listing the trainable ones."""
    from .registry import DEFENSES

    cls = DEFENSES.get(name) if name in DEFENSES else None
    if not is_trainable(cls):
        raise FacebenchError(f"defense {name!r} has no training recipe; trainable: "
                             f"{', '.join(trainable_names())}")
    return cls


# --- where models are ------------------------------------------------------------------
def default_out_dir(name: str, preset: str) -> Path:
    """Where ``fit(out_dir=None)`` writes: ``<models root>/<name>/<preset>``."""
    from .paths import models_root

    return models_root() / name / preset


def committed_dir(name: str) -> Path | None:
    """``weights/<name>/`` of this installation when it holds a model, else None.

    Looks in the ``facebench.weights`` package, then beside the source tree (a checkout, or
    an editable install made before that package existed)."""
    roots = [Path(__file__).resolve().parent.parent / "weights"]
    try:
        roots.insert(0, Path(str(resources.files(WEIGHTS_PACKAGE))))
    except (ModuleNotFoundError, TypeError):
        pass
    for root in roots:
        if (root / name / MODEL_FILE).is_file():
            return root / name
    return None


def find_checkpoint(name: str, checkpoint=None, order=PRESET_ORDER) -> Path:
    """The model file of a trained defense ``name``.

    ``checkpoint`` may be a model file, a training output folder, a preset name (that
    default folder) or ``weights`` (the copy committed under ``weights/<name>/``). ``None``
    takes the first finished default run of ``order`` but the last, then the committed
    weights, then the default run of the last preset (the auto-trained one).
    """
    committed = committed_dir(name)
    if checkpoint is None:
        candidates = [default_out_dir(name, p) for p in order[:-1]]
        candidates += ([committed] if committed else []) + [default_out_dir(name, order[-1])]
    elif str(checkpoint) == "weights":
        if committed is None:
            raise NoModelError(f"this installation has no committed {name} weights")
        candidates = [committed]
    else:
        path = Path(str(checkpoint)).expanduser()
        if not path.exists() and str(checkpoint) in order:
            path = default_out_dir(name, str(checkpoint))
        candidates = [path]
    for path in candidates:
        if checkpoint is None and not _finished(path):
            continue  # a default run stopped early is used only when named explicitly
        if path.is_dir():
            path = path / MODEL_FILE
        if path.is_file():
            return path
    where = ", ".join(str(c) for c in candidates)
    raise NoModelError(
        f"no trained {name} model found (looked in {where}); train one with "
        f"`facebench train {name}` or pass --defense-param checkpoint=PATH")


def _finished(folder: Path) -> bool:
    """False for a training folder whose manifest says the schedule did not finish."""
    try:
        status = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))["status"]
    except (OSError, ValueError, KeyError, TypeError):
        return True  # no manifest to go by (a hand-made folder): trust the model file
    return status == "complete"


def load_model_file(path, defense: str) -> dict:
    """Read a model file written by the trainer, checking format and defense name."""
    path = Path(path)
    data = load_torch_file(path, "model")
    if not isinstance(data, dict) or data.get("format") != MODEL_FORMAT:
        raise FacebenchError(f"{path} is not a facebench purifier model file")
    if data.get("defense") != defense:
        raise FacebenchError(f"{path} holds a {data.get('defense')!r} model, not {defense!r}")
    return data


# --- committed weights ------------------------------------------------------------------
_VERIFIED: dict = {}


def verify_model_hash(model_path) -> None:
    """Refuse a committed model file whose sha256 differs from its manifest's record (a
    corrupt checkout, a bad LFS smudge, an edited file). Checked once per file and process."""
    import pooch

    path = Path(model_path)
    try:
        want = json.loads((path.parent / MANIFEST).read_text(encoding="utf-8"))["export"][
            "model_sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return  # not a committed export (a training folder): nothing recorded to check
    stat = path.stat()
    token = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if _VERIFIED.get(token) == want:
        return
    got = pooch.file_hash(str(path))
    if got != want:
        raise FacebenchError(f"{path} has sha256 {got[:16]}…, but its manifest records "
                             f"{want[:16]}…; the committed weights are corrupt (reinstall or "
                             f"`git checkout -- {path.parent.name}/{path.name}`)")
    _VERIFIED[token] = want


def export_weights(run_dir, dest, dtype=None) -> Path:
    """Copy the trained model of ``run_dir`` to ``dest`` in ``dtype`` (default fp16), with
    its manifest (machine paths removed) and training log. Refuses an unfinished run."""
    import pooch
    import torch

    dtype = torch.float16 if dtype is None else dtype
    run_dir, dest = Path(run_dir), Path(dest)
    try:
        manifest = json.loads((run_dir / MANIFEST).read_text(encoding="utf-8"))
        defense, status = manifest["defense"], manifest.get("status")
        manifest["data"]["image_list_sha256"]  # must be there
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FacebenchError(f"{run_dir} has no usable training manifest ({exc})") from None
    if status != "complete":
        raise FacebenchError(f"{run_dir} is a {status!r} training run; only finished runs "
                             f"are exported")
    try:
        trainable(defense).export_manifest(run_dir, manifest)
    except (KeyError, TypeError) as exc:
        raise FacebenchError(f"{run_dir} has no usable training manifest ({exc})") from None
    data = load_model_file(run_dir / MODEL_FILE, defense)
    state, kept = {}, []
    for key, value in data["state_dict"].items():
        small = value.to(dtype) if value.is_floating_point() else value
        if value.is_floating_point() and not torch.isfinite(small).all():
            small = value  # e.g. a BatchNorm running variance beyond fp16's 65504
            kept.append(key)
        state[key] = small
    data["state_dict"] = state
    data["meta"] = {**data.get("meta", {}), "dtype": str(dtype).replace("torch.", ""),
                    "kept_float32": kept}
    dest.mkdir(parents=True, exist_ok=True)
    save_torch_atomic(data, dest / MODEL_FILE)
    for section, key in _MACHINE_KEYS:
        manifest.get(section, {}).pop(key, None)
    manifest["export"] = {"dtype": data["meta"]["dtype"],
                          "model_sha256": pooch.file_hash(str(dest / MODEL_FILE))}
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n",
                                 encoding="utf-8")
    if (run_dir / "log.jsonl").is_file():
        shutil.copyfile(run_dir / "log.jsonl", dest / "log.jsonl")
    return dest
