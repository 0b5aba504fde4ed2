"""The clean-embedding cache (issue 13): a hit is the computation, anything else misses.

Toy recognizer and defenses keep the unit tests at milliseconds; one test runs the real
runner twice on the shipped sample and checks the second clean stage is served from the
cache with identical rows.
"""
from __future__ import annotations

import importlib
import sys

import numpy as np
import pytest
import torch
from torch import nn

import facebench
from facebench import clean_cache as C
from facebench.defense import Defense


class ToyRecognizer(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3 * 8 * 8, 5, bias=False)
        torch.nn.init.normal_(self.proj.weight, generator=torch.Generator().manual_seed(1))

    def forward(self, x):
        return self.proj(x.flatten(1))


class Brighten(Defense):
    def __init__(self, amount: float = 0.1):
        super().__init__()
        self.amount = amount

    def forward(self, x):
        return (x + self.amount).clamp(0, 1)


class Noisy(Defense):
    """Randomized: private generator when seeded, torch's global RNG otherwise."""

    randomized = True

    def __init__(self, seed=None):
        super().__init__()
        self.seed = seed
        self._gen = None if seed is None else torch.Generator().manual_seed(seed)

    def forward(self, x):
        return x + 0.01 * torch.rand(x.shape, generator=self._gen)


class SneakyGlobal(Defense):
    """Declares nothing, yet draws from torch's global RNG."""

    def forward(self, x):
        return x + 0.01 * torch.rand(x.shape)


def images(seed=0, n=6):
    return np.random.default_rng(seed).integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)


class Counter:
    """An embed function that counts its calls (a hit must not call it)."""

    def __init__(self):
        self.calls = 0

    def __call__(self, model, imgs, batch_size, device, desc, progress):
        from facebench.embed import embed_images

        self.calls += 1
        return embed_images(model, imgs, batch_size, device, desc, progress)


def run(defense, imgs, tmp_path, counter=None, **over):
    rec = over.pop("recognizer", None) or ToyRecognizer()
    args = dict(batch_size=4, device="cpu", recognizer_name="toy", defense_name="toy-def",
                defense_params={}, defense=defense, folder=tmp_path, embed=counter)
    args.update(over)
    return C.embed_clean(defense.wrap(rec).eval(), imgs, **args)


def test_hit_returns_identical_embeddings_without_computing(tmp_path):
    counter, imgs = Counter(), images()
    first, cached_1 = run(Brighten(), imgs, tmp_path, counter)
    second, cached_2 = run(Brighten(), imgs, tmp_path, counter)
    assert (cached_1, cached_2, counter.calls) == (False, True, 1)
    assert torch.equal(first, second) and second.dtype == torch.float32
    assert len(list(tmp_path.glob("*.npz"))) == 1


def test_changed_crops_defense_params_weights_or_code_miss(tmp_path, monkeypatch):
    counter, imgs = Counter(), images()
    run(Brighten(), imgs, tmp_path, counter)
    one_pixel = imgs.copy()
    one_pixel[2, 3, 4, 1] ^= 1
    run(Brighten(), one_pixel, tmp_path, counter)                       # crops
    run(Brighten(amount=0.2), imgs, tmp_path, counter)                  # a defense setting
    run(Brighten(), imgs, tmp_path, counter, defense_params={"amount": 0.1})  # given params
    rec = ToyRecognizer()
    with torch.no_grad():
        rec.proj.weight[0, 0] += 1e-3
    run(Brighten(), imgs, tmp_path, counter, recognizer=rec)            # weights
    run(Brighten(), imgs, tmp_path, counter, batch_size=2)              # batching
    assert counter.calls == 6
    run(Brighten(), imgs, tmp_path, counter)                            # all back: a hit
    assert counter.calls == 6
    # an edit of the code that ran: another source text of the same class name and content
    real = C.code_version
    monkeypatch.setattr(C, "code_version", lambda *objs: real(*objs) + "-edited")
    run(Brighten(), imgs, tmp_path, counter)
    assert counter.calls == 7


def test_code_version_covers_the_defense_module(tmp_path, monkeypatch):
    """Two modules with the same defense class, one edited: their keys differ."""
    src = ("import torch\nfrom facebench.defense import Defense\n"
           "class Shift(Defense):\n    def forward(self, x):\n        return x * 0.5\n")
    keys = []
    for name, extra in (("fbtest_clean_a", ""), ("fbtest_clean_b", "# edited\n")):
        (tmp_path / f"{name}.py").write_text(src + extra, encoding="utf-8")
        monkeypatch.syspath_prepend(str(tmp_path))
        module = importlib.import_module(name)
        defended = module.Shift().wrap(ToyRecognizer())
        keys.append(C.cache_key(defended=defended, images=images(), recognizer_name="toy",
                                defense_name="shift", defense=defended.defense,
                                batch_size=4, device="cpu"))
        sys.modules.pop(name)
    assert keys[0] != keys[1]


@pytest.mark.parametrize("damage", [b"", b"not a zip file", None])
def test_corrupt_file_is_recomputed_never_fatal(tmp_path, damage):
    counter, imgs = Counter(), images()
    first, _ = run(Brighten(), imgs, tmp_path, counter)
    (path,) = tmp_path.glob("*.npz")
    if damage is None:  # a valid npz of the wrong shape under the right name
        key = path.stem
        np.savez(path, key=np.array(key), emb=np.zeros((2, 5), np.float32))
    else:
        path.write_bytes(damage)
    again, cached = run(Brighten(), imgs, tmp_path, counter)
    assert not cached and counter.calls == 2 and torch.equal(first, again)
    _, cached = run(Brighten(), imgs, tmp_path, counter)  # rewritten whole: a hit again
    assert cached and counter.calls == 2


def test_unseeded_randomized_defense_is_never_cached(tmp_path):
    counter, imgs = Counter(), images()
    for _ in range(2):
        _, cached = run(Noisy(seed=None), imgs, tmp_path, counter)
        assert not cached
    assert counter.calls == 2 and not list(tmp_path.glob("*.npz"))


def test_undeclared_global_draws_are_not_stored(tmp_path):
    counter, imgs = Counter(), images()
    run(SneakyGlobal(), imgs, tmp_path, counter)
    run(SneakyGlobal(), imgs, tmp_path, counter)
    assert counter.calls == 2 and not list(tmp_path.glob("*.npz"))


def test_seeded_randomized_defense_hit_continues_the_draws(tmp_path):
    """A hit restores the private generator to where the computation left it, so later
    draws (the attacked probes) are those of an uncached run."""
    counter, imgs = Counter(), images()
    uncached, warm = Noisy(seed=3), Noisy(seed=3)
    first, c1 = run(uncached, imgs, tmp_path, counter)
    second, c2 = run(warm, imgs, tmp_path, counter)
    assert (c1, c2, counter.calls) == (False, True, 1) and torch.equal(first, second)
    x = torch.zeros(2, 3, 8, 8)
    assert torch.equal(uncached(x), warm(x))
    other, c3 = run(Noisy(seed=4), imgs, tmp_path, counter)  # another seed: another key
    assert not c3 and not torch.equal(other, first)


def test_switch_turns_the_cache_off(tmp_path, monkeypatch):
    monkeypatch.setenv(C.ENV_SWITCH, "0")
    counter = Counter()
    for _ in range(2):
        run(Brighten(), images(), tmp_path, counter)
    assert counter.calls == 2 and not list(tmp_path.glob("*.npz"))


def test_second_run_serves_the_clean_stage_from_the_cache(monkeypatch):
    """The real runner on the shipped sample: the second clean stage embeds nothing and
    writes the same rows."""
    import facebench.runner as runner

    counter = Counter()
    monkeypatch.setattr(runner, "embed_images", counter)
    cfg = dict(attack="none", pairs=6, out=None, progress=False)
    first = facebench.run(**cfg)
    second = facebench.run(**cfg)
    assert counter.calls == 1
    cols = ["metric", "value"]
    assert first[cols].reset_index(drop=True).equals(second[cols].reset_index(drop=True))
