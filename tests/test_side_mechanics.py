"""SIDE/PIN mechanics on tiny sizes: memory, affinity, REINFORCE, EMA, projection, eigenbasis,
inference determinism; plus a few real training steps on LFW training-split crops."""
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from facebench.defenses.eigen.antibody import (affinity, ema_update, log_likelihood,
                                               make_ema, pixel_term, reinforce_loss,
                                               sample_antibodies)
from facebench.defenses.eigen.faces import EigenBasis, compute_eigenbasis, project, rgb_to_face
from facebench.defenses.side.model import Memory, SIDEModel
from facebench.defenses.side.trainer import fgsm_siamese
from facebench.errors import FacebenchError



def _orthonormal(d, k, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, k, generator=g, dtype=torch.float64))
    return q.float()


def _tiny_side(k=8, seed=0):
    torch.manual_seed(seed)
    return SIDEModel(n_components=k, feat_dim=8, n_items=4, widths=[2, 2, 2, 2], image_size=16)


def _tiny_basis(k=8, seed=0):
    g = torch.Generator().manual_seed(seed + 1)
    return EigenBasis(_orthonormal(256, k, seed), torch.randn(256, generator=g) * 0.1, size=16)


# --- memory -------------------------------------------------------------------------------
def _memory(rule="code"):
    mem = Memory(n_items=4, dim=3, decay=0.999, update_rule=rule)
    mem.items.copy_(torch.tensor([[1.0, 0, 0], [0, 2.0, 0], [0, 0, 3.0], [-1.0, -1.0, 0]]))
    return mem


def test_memory_read_is_softmax_of_cosines_times_items():
    mem = _memory().eval()
    f = torch.tensor([[2.0, 1.0, 0.0]])
    items = mem.items.clone()
    cos = np.array([(items[i] @ f[0] / (items[i].norm() * f[0].norm())).item()
                    for i in range(4)])
    w = np.exp(cos) / np.exp(cos).sum()
    expected = (torch.from_numpy(w).float() @ items)
    out = mem(f)
    assert torch.allclose(out[0], expected, atol=1e-6)
    assert torch.equal(mem.items, items)  # eval mode: read only


def test_memory_update_code_rule_moves_assigned_and_shrinks_the_rest():
    mem = _memory("code").train()
    before = mem.items.clone()
    f = torch.tensor([[5.0, 0.1, 0.0], [3.0, -0.2, 0.0], [0.0, 0.0, 1.0]])  # -> items 0, 0, 2
    out = mem(f)
    after = mem.items
    assert torch.allclose(after[0], 0.999 * before[0] + 0.001 * f[:2].mean(0))
    assert torch.allclose(after[2], 0.999 * before[2] + 0.001 * f[2])
    for i in (1, 3):  # no sample: shrinks by the decay (the authors' code)
        assert torch.allclose(after[i], 0.999 * before[i])
    # the read of the same pass uses the updated items
    assert torch.allclose(out, mem.eval().read(f), atol=1e-6)


def test_memory_update_paper_rule_keeps_unassigned_items():
    mem = _memory("paper").train()
    before = mem.items.clone()
    f = torch.tensor([[0.0, 4.0, 0.1]])  # -> item 1
    mem(f)
    assert torch.allclose(mem.items[1], 0.999 * before[1] + 0.001 * f[0])
    for i in (0, 2, 3):
        assert torch.equal(mem.items[i], before[i])


def test_memory_excluded_from_optimizer_and_no_memory_ablation():
    model = _tiny_side()
    assert all(p is not model.memory.items for p in model.optimized_parameters())
    ablated = SIDEModel(n_components=8, feat_dim=8, n_items=4, widths=[2, 2, 2, 2],
                        image_size=16, use_memory=False).train()
    items = ablated.memory.items.clone()
    ablated(torch.randn(3, 1, 16, 16))
    assert torch.equal(ablated.memory.items, items)


def test_prior_starts_the_policy_at_a_top_k_projection():
    model = _tiny_side(k=8)
    model.init_prior(3, 8.0)
    p = model.eval()(torch.rand(5, 1, 16, 16) * 2 - 1)
    assert (p[:, :3] > 0.99).all() and (p[:, 3:] < 0.01).all()
    with pytest.raises(FacebenchError, match="prior_topk"):
        model.init_prior(9, 4.0)


def test_prior_is_checked_and_names_the_variant():
    from facebench.defenses.side import SIDE
    from facebench.defenses.side.trainer import PRESETS, check_config

    with pytest.raises(FacebenchError, match="prior_topk"):
        check_config({**PRESETS["warm"], "prior_topk": 2000})
    with pytest.raises(FacebenchError, match="prior_logit"):
        check_config({**PRESETS["warm"], "prior_logit": 0})
    assert SIDE.variant_defaults["prior_topk"] == 0 and PRESETS["warm"]["prior_topk"] == 500


# --- affinity and policy gradient ---------------------------------------------------------
def test_affinity_on_hand_computed_numbers():
    recon = torch.tensor([[[1.0, 2.0, 3.0, 4.0]]])  # 1 input, 1 clone, 4 pixels
    clean = torch.zeros(1, 4)
    assert torch.allclose(pixel_term(recon, clean, "mse"), torch.tensor([[7.5]]))
    assert torch.allclose(pixel_term(recon, clean, "l2"), torch.tensor([[math.sqrt(30.0)]]))
    s = affinity(torch.tensor([[0.5, 0.9]]), torch.tensor([[0.01, 0.02]]),
                 torch.tensor([[100, 50]]))
    assert torch.allclose(s, torch.tensor([[8 * 0.5 - 0.01 - 0.3, 8 * 0.9 - 0.02 - 0.15]]))


def test_log_likelihood_is_bernoulli_log_probability():
    p = torch.tensor([[0.2, 0.7, 0.5]])
    masks = torch.tensor([[[True, True, False], [False, False, True]]])
    expected = torch.tensor([[math.log(0.2 * 0.7 * 0.5), math.log(0.8 * 0.3 * 0.5)]])
    assert torch.allclose(log_likelihood(p, masks), expected, atol=1e-6)


@pytest.mark.parametrize("baseline", ["image", "batch"])
def test_reinforce_makes_above_mean_clone_more_likely(baseline):
    theta = nn.Parameter(torch.tensor([[0.3, -0.2, 0.1, 0.0, 0.5]]))
    masks = torch.tensor([[[1, 0, 1, 1, 0], [0, 1, 0, 1, 1]]], dtype=torch.bool)
    reward = torch.tensor([[2.0, -1.0]])  # clone 0 above the mean, clone 1 below
    opt = torch.optim.SGD([theta], lr=0.1)
    before = log_likelihood(torch.sigmoid(theta), masks).detach()
    loss = reinforce_loss(log_likelihood(torch.sigmoid(theta), masks), reward, baseline)
    opt.zero_grad()
    loss.backward()
    opt.step()
    after = log_likelihood(torch.sigmoid(theta), masks).detach()
    assert after[0, 0] > before[0, 0] and after[0, 1] < before[0, 1]


def test_sampling_respects_probabilities():
    p = torch.tensor([[0.0, 1.0, 0.5]])
    masks = sample_antibodies(p, 2000, torch.Generator().manual_seed(0))
    assert masks.shape == (1, 2000, 3)
    assert not masks[..., 0].any() and masks[..., 1].all()
    assert abs(masks[..., 2].float().mean().item() - 0.5) < 0.05


# --- EMA ----------------------------------------------------------------------------------
def test_ema_update_equation_and_buffers():
    online, ema = _tiny_side(seed=1), None
    ema = make_ema(online)
    assert not ema.training and not any(q.requires_grad for q in ema.parameters())
    with torch.no_grad():
        for q in online.parameters():
            q.add_(1.0)
        online.memory.items.add_(2.0)
        online.analyzer.fc[2].running_mean.add_(3.0)
    old = {k: v.clone() for k, v in ema.state_dict().items()}
    ema_update(ema, online, 0.9)
    name, q = next(iter(ema.named_parameters()))
    assert torch.allclose(q, 0.9 * old[name] + 0.1 * dict(online.named_parameters())[name])
    assert torch.allclose(ema.memory.items, 0.9 * old["memory.items"] + 0.1 * online.memory.items)
    assert torch.equal(ema.analyzer.fc[2].running_mean, online.analyzer.fc[2].running_mean)


# --- projection and eigenbasis ------------------------------------------------------------
def test_projection_idempotent_and_orthogonal():
    e, mu = _orthonormal(16, 5), torch.randn(16)
    x = torch.randn(3, 16)
    mask = torch.tensor([[1, 0, 1, 1, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], dtype=torch.bool)
    y = project(x, mask, e, mu)
    assert torch.allclose(project(y, mask, e, mu), y, atol=1e-5)
    for i in range(3):
        chosen = e[:, mask[i]]
        resid = x[i] - y[i]
        assert torch.allclose(chosen.T @ resid, torch.zeros(chosen.shape[1]), atol=1e-5)
        # what is kept lies in mu + span(chosen)
        assert torch.allclose(chosen @ (chosen.T @ (y[i] - mu)), y[i] - mu, atol=1e-5)
    assert torch.allclose(y[2], mu)  # empty antibody -> the mean face
    many = project(x, mask.unsqueeze(1).expand(3, 4, 5), e, mu)  # 4 clones per input
    assert many.shape == (3, 4, 16) and torch.allclose(many[:, 2], y, atol=1e-6)


@pytest.mark.parametrize("n", [10, 40])  # Gram path (N <= d) and scatter path (N > d)
def test_eigenbasis_matches_numpy_svd_up_to_sign(n):
    rng = np.random.default_rng(n)
    data = rng.normal(size=(n, 16)) * np.linspace(3, 0.5, 16)
    basis = compute_eigenbasis(torch.from_numpy(data), k=6, size=4)
    centred = data - data.mean(0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    ours = basis.vectors.double().numpy()
    for i in range(6):
        ref = vt[i]
        sign = np.sign(ref @ ours[:, i])
        assert np.allclose(ours[:, i], sign * ref, atol=1e-5)
        assert np.argmax(np.abs(ours[:, i])) == np.argmax(ours[:, i])  # sign convention
    assert np.allclose(basis.eigvals.numpy(), s[:6] ** 2, rtol=1e-8)
    assert np.allclose(basis.mean.numpy(), data.mean(0), atol=1e-6)
    with pytest.raises(FacebenchError):
        compute_eigenbasis(torch.from_numpy(data[:5]), k=6, size=4)  # rank 4 < K


def test_rgb_to_face_uses_luma_and_authors_range():
    x = torch.zeros(1, 3, 32, 32)
    x[:, 0] = 1.0  # pure red -> luma 0.299
    y = rgb_to_face(x, 16)
    assert y.shape == (1, 1, 16, 16) and torch.allclose(y, torch.full_like(y, 0.299 * 2 - 1))


# --- inference ----------------------------------------------------------------------------
def _defense(inference, seed=3):
    from facebench.defenses.side import SIDE

    return SIDE(model=_tiny_side(), basis=_tiny_basis(), inference=inference, seed=seed).eval()


def test_inference_sample_is_reproducible_for_a_fixed_seed():
    x = torch.rand(4, 3, 24, 24)
    a, b = _defense("sample"), _defense("sample")
    assert a.randomized and not a.differentiable
    out = a(x)
    assert out.shape == x.shape and torch.equal(out[:, 0], out[:, 2])  # gray replicated
    assert torch.equal(out, b(x))
    second = a(x)
    a.reset_rng()
    assert torch.equal(a(x), out)
    assert not torch.equal(second, out)  # the stream moves on between calls


def test_eot_draws_on_one_batch_run_the_analyzer_once_with_the_same_outputs():
    """EOT calls the purifier n times on one unchanged batch: only the antibody draw is
    random, so the analyzer runs once; the draws equal those of a purifier that recomputes,
    and an in-place change of the batch (an attack step) recomputes."""
    from facebench.adaptive import adaptive_target

    x = torch.rand(3, 3, 24, 24)
    cached, fresh = _defense("sample"), _defense("sample")
    calls = []
    cached.model.analyzer.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        got = [cached(x) for _ in range(4)]
        want = []
        for _ in range(4):
            fresh._last_input = None  # forget: recompute every time
            want.append(fresh(x))
    assert len(calls) == 1 and all(torch.equal(g, w) for g, w in zip(got, want))
    assert not torch.equal(got[0], got[1])  # still independent draws
    with torch.no_grad():
        x.add_(0.01)  # in place, as the attack step
        cached(x)
        cached(x.clone())  # other storage: other pixels as far as it can tell
    assert len(calls) == 3
    # through the real adaptive target (BPDA + EOT, gradients on): one analyzer pass per call
    target, label = adaptive_target(cached, nn.Flatten(), 8)
    assert label == "bpda+eot"
    probe = torch.rand(2, 3, 24, 24, requires_grad=True)
    target(probe).sum().backward()
    assert len(calls) == 4 and probe.grad is not None


def test_inference_threshold_is_deterministic_and_train_mode_is_ignored():
    x = torch.rand(2, 3, 24, 24)
    d = _defense("threshold")
    assert not d.randomized
    items = d.model.memory.items.clone()
    d.train()
    out = d(x)
    assert torch.equal(out, d(x)) and torch.equal(d.model.memory.items, items)


def test_fgsm_gradient_goes_through_the_projection_only():
    model, basis = make_ema(_tiny_side()), _tiny_basis()
    rec = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 4)).requires_grad_(False)
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    anchor = torch.nn.functional.normalize(torch.randn(2, 4), dim=1)
    adv, _ = fgsm_siamese(model, basis, rec, x, anchor, 0.04, torch.Generator().manual_seed(0))
    step = (adv - x).abs()
    assert torch.all((step < 1e-6) | ((step - 0.04).abs() < 1e-5))


# --- a few real training steps ------------------------------------------------------------
class TinyRecognizer(nn.Module):
    """Stand-in for dlib-resnet (too slow for a unit test): fixed random conv net."""

    input_size = (32, 32)
    embedding_dim = 8
    alignment = "dlib-chip"

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, 2)
        self.fc = nn.Linear(4, 8)
        with torch.no_grad():
            for q in self.parameters():
                q.copy_(torch.randn(q.shape, generator=g) * 0.5)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


TINY_SIDE = dict(max_images=8, face_size=16, n_components=4, widths=[4, 4, 4, 4], feat_dim=8,
                 n_items=4, k=3, batch_size=2, warmup_steps=2, ssat_steps=2,
                 checkpoint_every=1, log_every=1)


@pytest.mark.lfw
def test_side_trains_resumes_and_loads_on_lfw_crops(shared_data, tmp_path):
    from facebench.defenses.side import SIDE
    from facebench.training import train

    common = dict(data_home=shared_data, protocol="dev-test", seed=1, progress=False,
                  recognizer=TinyRecognizer(), download=False,
                  image_cache_dir=tmp_path / "crops", eigen_cache_dir=tmp_path / "eigen",
                  **TINY_SIDE)
    straight = train("side", "quick", out_dir=tmp_path / "a", **common)
    train("side", "quick", out_dir=tmp_path / "b", max_steps=3, **common)  # "interrupted"
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["status"] == "partial"
    resumed = train("side", "quick", out_dir=tmp_path / "b", **common)
    manifest = json.loads((resumed / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["steps_done"] == 4
    assert manifest["data"]["n_images"] == 8 and "adv_cos" in manifest["final_metrics"]
    steps = [json.loads(r)["step"] for r in (resumed / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    with pytest.raises(FacebenchError, match="other settings"):
        train("side", "quick", out_dir=tmp_path / "b", **{**common, "k": 2})
    sa = torch.load(straight / "model.pt", weights_only=True)["state_dict"]
    sb = torch.load(resumed / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.allclose(sa[k].float(), sb[k].float(), atol=1e-6) for k in sa)
    defense = SIDE(checkpoint=str(straight), inference="threshold")
    x = torch.rand(2, 3, 32, 32)
    out = defense(x)
    assert out.shape == x.shape and torch.isfinite(out).all()


@pytest.mark.lfw
def test_pin_trains_and_loads_on_lfw_crops(shared_data, tmp_path):
    from facebench.defenses.pin import PIN
    from facebench.training import train

    out = train("pin", "quick", data_home=shared_data, out_dir=tmp_path / "pin", seed=0,
                progress=False, recognizer=TinyRecognizer(), download=False,
                image_cache_dir=tmp_path / "crops", eigen_cache_dir=tmp_path / "eigen",
                max_images=8, face_size=16, n_components=4, widths=[4, 4, 4, 4],
                dae_widths=[4, 4, 4], feat_dim=8, k=3, batch_size=2, dae_steps=2,
                selector_steps=2, checkpoint_every=2, log_every=1)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["defense"] == "pin"
    assert manifest["steps_done"] == 4 and manifest["data"]["n_images"] == 8
    steps = [json.loads(r)["step"] for r in (out / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    # training moved the weights away from their seeded initialisation
    from facebench.defenses.pin.model import PINModel

    data = torch.load(out / "model.pt", weights_only=True)
    torch.manual_seed(0)
    fresh = PINModel(**data["config"]).state_dict()
    moved = [k for k, v in data["state_dict"].items()
             if v.is_floating_point() and not torch.equal(v.float(), fresh[k].float())]
    assert moved, "no weight changed during training"
    defense = PIN(checkpoint=str(out), seed=0)
    assert defense.randomized
    x = torch.rand(2, 3, 32, 32)
    y = defense(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert not torch.allclose(y, x)  # it purifies, it does not pass images through
