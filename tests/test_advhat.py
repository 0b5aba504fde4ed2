"""AdvHat sticker: differentiable placement, TV, optimiser range, parameters, Table 6 layout,
the ProtocolAttack services it runs on, and (marked lfw) the whole protocol on real faces."""
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import facebench
from facebench.attacks.advhat import sticker as S
from facebench.attack import KINDS
from facebench.errors import FacebenchError
from facebench.protocol_attack import ProtocolAttack, ProtocolContext, clean_threshold
from facebench.registry import ATTACKS, LAYOUTS
from facebench.results import COLUMNS
from facebench.runner import RunConfig
from facebench.threat import ThreatModel


def _faces(n=2, size=32, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _sticker(h=6, w=10, seed=1):
    return torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed))


def test_flat_unrotated_sticker_lands_exactly_on_its_rectangle():
    faces, st = _faces(), _sticker()
    top, left = 4, 7
    place = S.Placement(cx=left + 5, cy=top + 3, height=6, width=10, bend=0.0, tilt=0.0)
    assert place.rectangle() == (4, 7, 10, 17)
    out = S.apply(st, faces, place)
    inside = out[:, :, top:top + 6, left:left + 10]
    assert torch.allclose(inside, st.expand_as(inside), atol=1e-6)
    outside = torch.ones(32, 32, dtype=torch.bool)
    outside[top:top + 6, left:left + 10] = False
    # up to float rounding of the sample positions at the edge
    assert torch.allclose(out[:, :, outside], faces[:, :, outside], atol=1e-5)


@pytest.mark.parametrize("bend,tilt,angle", [(0.0, 0.0, 0.0), (S.ADVHAT_BEND, S.ADVHAT_TILT, 3.0)])
def test_placement_gradients_reach_sticker_and_only_from_covered_pixels(bend, tilt, angle):
    faces = _faces()
    st = _sticker().requires_grad_(True)
    place = S.Placement(cx=16, cy=9, height=6, width=10, bend=bend, tilt=tilt, angle=angle)
    out = S.apply(st, faces, place)
    grid = S.sticker_grid(2, (32, 32), (6, 10), cx=16, cy=9, bend=bend, tilt=tilt, angle=angle)
    # a crop pixel is untouched when its sample lies a full sticker pixel beyond the edges
    far = (grid[..., 0].abs() >= 1 + 2 / 10) | (grid[..., 1].abs() >= 1 + 2 / 6)
    assert far.any() and (~far).any()
    (g_in,) = torch.autograd.grad(out[:, :, ~far[0]].sum(), st, retain_graph=True)
    (g_out,) = torch.autograd.grad(out[:, :, far[0]].sum(), st, retain_graph=True)
    assert torch.count_nonzero(g_out) == 0
    assert torch.equal(out[:, :, far[0]], faces[:, :, far[0]])
    assert (g_in.abs().sum(0) > 0).float().mean() == 1.0  # every sticker pixel is seen
    # finite-difference check of one sticker pixel's effect on the loss
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(2))
    (g,) = torch.autograd.grad((out * w).sum(), st)
    with torch.no_grad():
        bumped = st.detach().clone()
        bumped[1, 2, 4] += 1e-2
        num = ((S.apply(bumped, faces, place) - out) * w).sum() / 1e-2
    assert num.item() == pytest.approx(g[1, 2, 4].item(), rel=1e-3, abs=1e-4)


def test_bending_and_tilt_shrink_the_covered_area_symmetrically():
    faces = torch.zeros(1, 3, 40, 60)
    white = torch.ones(3, 8, 30)
    flat = S.apply(white, faces, S.Placement(cx=30, cy=20, height=8, width=30, bend=0, tilt=0))
    bent = S.apply(white, faces, S.Placement(cx=30, cy=20, height=8, width=30, bend=0.6, tilt=0))
    tilted = S.apply(white, faces, S.Placement(cx=30, cy=20, height=8, width=30, bend=0, tilt=30))
    assert flat[0, 0].sum().item() == pytest.approx(8 * 30, abs=1e-3)
    assert bent[0, 0].sum() < 0.95 * flat[0, 0].sum()  # the sides recede: narrower image
    assert torch.allclose(bent[0, 0], bent[0, 0].flip(-1), atol=1e-5)
    assert tilted[0, 0].sum().item() == pytest.approx(8 * 30 * math.cos(math.radians(30)), rel=0.02)


def test_arc_length_matches_numerical_integral():
    k, x = torch.tensor([0.05]), torch.tensor([12.0])
    t = torch.linspace(0, 12.0, 20001, dtype=torch.float64)
    numeric = torch.trapezoid(torch.sqrt(1 + (2 * 0.05 * t) ** 2), t)
    assert S._arc_length(x, k).item() == pytest.approx(numeric.item(), rel=1e-5)
    assert S._arc_length(-x, k).item() == pytest.approx(-numeric.item(), rel=1e-5)
    assert S._arc_length(x, torch.tensor([0.0])).item() == 12.0


def test_tv_loss_by_hand():
    s = torch.tensor([[[0.0, 1.0], [2.0, 4.0]]])
    # forward differences, 0 past the last row/column: (dv, dh) = (2,1) (3,0) (0,2) (0,0)
    expected = (math.sqrt(5) + 3 + 2 + 0) / 4
    assert S.tv_loss(s, eps=0.0).item() == pytest.approx(expected)
    assert S.tv_loss(torch.full((3, 5, 7), 0.3), eps=0.0).item() == 0.0


def test_sign_momentum_stays_in_unit_range_and_switches_stage():
    opt = S.SignMomentum(steps=10, step_size=0.4)
    x = torch.tensor([0.05, 0.5, 0.95])
    gen = torch.Generator().manual_seed(0)
    seen = []
    for _ in range(10):
        seen.append(opt.stage())
        x = opt.step(x, torch.randn(3, generator=gen) * 100)
        assert (x >= 0).all() and (x <= 1).all()
    assert seen == [1] * 6 + [2] * 4
    one = S.SignMomentum(steps=1, step_size=0.1, switch=1.0)
    assert torch.allclose(one.step(torch.tensor([0.5]), torch.tensor([3.0])), torch.tensor([0.4]))


class _Linear(nn.Module):
    """A tiny recognizer on 32×32 crops: one linear map."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 32 * 32, 8)
        torch.nn.init.normal_(self.fc.weight, generator=torch.Generator().manual_seed(3))

    def forward(self, x):
        return self.fc(x.flatten(1))


def test_training_raises_target_cosine_and_keeps_sticker_in_range():
    model = _Linear().requires_grad_(False)
    faces_u8 = (np.random.default_rng(0).random((12, 32, 32, 3)) * 255).astype(np.uint8)
    template = torch.nn.functional.normalize(torch.randn(1, 8), dim=1)
    attack = facebench.load_attack("advhat", steps=30, batch=4, step_size=20 / 255)
    place = attack.placement((32, 32))
    assert (place.height, place.width) == (6, 21)
    trained, train_cos = attack.train(model, faces_u8, template, place, progress=False)
    assert trained.shape == (3, 6, 21) and trained.min() >= 0 and trained.max() <= 1

    def cos(st):
        x = S.apply(st, torch.from_numpy(faces_u8).permute(0, 3, 1, 2).float() / 255, place)
        return torch.nn.functional.cosine_similarity(model(x), template.expand(12, -1)).mean()

    grey = attack.initial_sticker(place)
    assert torch.all(grey == 127 / 255)
    assert cos(trained) > cos(grey) + 0.05
    assert train_cos == pytest.approx(cos(trained).item(), abs=0.2)


def test_forehead_placement_scales_the_paper_sticker():
    place = S.forehead_placement((150, 150))
    assert (place.height, place.width) == (27, 96)
    top, left, bottom, right = place.rectangle()
    assert (left, right) == (27, 123) and top >= 0 and bottom <= 35  # above the brows


@pytest.mark.parametrize("params", [{"stepz": 3}, {"steps": -1}, {"init": "no-such-file.png"},
                                    {"step_size": 2.0}, {"tilt": 85}, {"target": ""},
                                    {"gallery_photos": 0}])
def test_bad_parameters_fail_with_one_line(params):
    with pytest.raises(FacebenchError) as err:
        facebench.load_attack("advhat", **params)
    assert "\n" not in str(err.value)


def test_advhat_refuses_the_pair_loop():
    attack = facebench.load_attack("advhat")
    with pytest.raises(FacebenchError, match="own protocol"):
        attack.perturb(None, torch.zeros(1, 3, 150, 150), torch.zeros(1, 128),
                       torch.tensor([False]), 0.5)
    assert "advhat" in ATTACKS.names()


def test_target_choice_and_errors():
    people = {"Ann": ["a1", "a2", "a3"], "Bob": ["b1", "b2", "b3"], "Cy": ["c1"],
              "Dee": ["d1", "d2"]}
    in_protocol = {"Bob": "b1", "Ann": "a1", "Cy": "c1"}
    auto = facebench.load_attack("advhat")
    assert auto._choose_target(people, in_protocol) == "Ann"  # most photos, then by name
    named = facebench.load_attack("advhat", target="Dee")  # outside the protocol is allowed
    assert named._choose_target(people, in_protocol) == "Dee"
    with pytest.raises(FacebenchError, match="did you mean 'Dee'"):
        facebench.load_attack("advhat", target="Dea")._choose_target(people, in_protocol)
    with pytest.raises(FacebenchError, match="one LFW photo"):
        facebench.load_attack("advhat", target="Cy")._choose_target(people, in_protocol)


def test_dodging_goal_is_refused_before_any_data(tmp_path):
    with pytest.raises(FacebenchError, match="impersonation"):
        facebench.run(dataset="lfw", protocol="dev-test", attack="advhat", goal="dodging",
                      data_home=str(tmp_path / "nothing"), download=False, out=None,
                      progress=False)



# --- attack kinds and the ProtocolAttack services ---------------------------------------
class _Toy(ProtocolAttack):
    """A protocol that emits one clean and one attacked row through the context."""

    datasets = ("lfw",)
    goals = ("impersonation",)

    def evaluate(self, ctx):
        ctx.start_rows(3, ctx.cfg.protocol)
        ctx.emit({"accuracy": 1.0}, 0.5)
        ctx.emit({"accuracy": 0.25}, 0.5, attack=self.name, goal="impersonation")


def _cfg(**kw):
    return RunConfig(**{"dataset": "lfw", "protocol": "dev-test", "goal": "impersonation",
                        "out": None, **kw})


def test_attack_kinds_follow_the_declared_flags():
    kinds = {n: facebench.load_attack(n).kind for n in ("pgd", "lots", "evolutionary", "advhat")}
    assert kinds == {"pgd": "bounded", "lots": "minimization", "evolutionary": "query",
                     "advhat": "protocol"}
    assert set(kinds.values()) == set(KINDS)
    assert isinstance(facebench.load_attack("advhat"), ProtocolAttack)
    assert not isinstance(facebench.load_attack("pgd"), ProtocolAttack)


def test_protocol_attack_runs_through_the_runner_signature_and_emits_rows():
    emitted, made = [], []

    class Rows:
        def make(self, metrics, wall_s, **columns):
            return [dict(columns, metric=k, value=v) for k, v in metrics.items()]

    def make_rows(n, protocol):
        made.append((n, protocol))
        return Rows()

    _Toy(ThreatModel("rel-l2", 0.01)).run_protocol(
        cfg=_cfg(), recognizer=None, defense=None, defended=None, device="cpu",
        make_rows=make_rows, emit=emitted.extend)
    assert made == [(3, "dev-test")]
    assert emitted == [{"metric": "accuracy", "value": 1.0},
                       {"attack": "_toy", "goal": "impersonation", "metric": "accuracy",
                        "value": 0.25}]


@pytest.mark.parametrize("cfg,match", [(dict(dataset="lfw-sample"), "--dataset lfw only"),
                                       (dict(source="dlib-resnet"), "--source"),
                                       (dict(goal="pair"), "--goal impersonation")])
def test_protocol_attack_refuses_what_it_does_not_declare(cfg, match):
    toy = _Toy(ThreatModel("rel-l2", 0.01))
    with pytest.raises(FacebenchError, match=match) as err:
        toy.run_protocol(cfg=_cfg(**cfg), recognizer=None, defense=None, defended=None,
                         device="cpu", make_rows=None, emit=None)
    assert "\n" not in str(err.value)
    with pytest.raises(FacebenchError, match="own protocol"):
        toy.perturb(None, None, None, None, 0.5)


def test_protocol_context_cache_is_grey_box_only(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEBENCH_CACHE", str(tmp_path))
    arr = np.arange(6, dtype=np.float32).reshape(1, 2, 3)

    def ctx(**kw):
        return ProtocolContext(cfg=_cfg(**kw), recognizer=None, defense=None, defended=None,
                               device="cpu", make_rows=None, emit=None)

    ctx(adaptive=True).cache_put("k", arr)
    assert ctx().cache_get("k", arr.shape) is None  # adaptive results are never stored
    ctx().cache_put("k", arr)
    assert np.array_equal(ctx().cache_get("k", arr.shape), arr)
    assert ctx().cache_get("k", (2, 3)) is None  # another shape is a miss
    assert ctx(adaptive=True).cache_get("k", arr.shape) is None
    assert ctx(adv_cache=False).cache_get("k", arr.shape) is None
    with pytest.raises(FacebenchError, match="start_rows"):
        ctx().emit({"accuracy": 1.0}, 0.0)
    assert ctx().artifacts_dir("advhat") is None
    assert ctx(out=str(tmp_path / "runs.csv")).artifacts_dir("advhat") == tmp_path / "advhat"


def test_clean_threshold_through_the_defended_system(monkeypatch):
    from facebench import data

    # four images on a line of angles; pairs (0,1) and (2,3) are genuine, (0,3) an impostor
    angles = torch.tensor([0.0, 0.2, 1.0, 1.1])
    images = np.zeros((4, 2, 2, 3), np.uint8)
    monkeypatch.setattr(data, "pair_images", lambda pairs, aligner, progress: (
        images, np.array([0, 2, 0]), np.array([1, 3, 3])))

    class Defended(nn.Module):
        def forward(self, x):
            a = angles[: x.shape[0]]
            return torch.stack([a.cos(), a.sin()], 1)

    class Pairs:
        same = [True, True, False]

    out = clean_threshold(Pairs(), None, Defended(), batch_size=8)
    assert out.n_pairs == 3 and out.tar == 1.0 and out.far == 0.0
    assert math.cos(1.1) < out.thr <= math.cos(0.2)


def test_sticker_cache_key_ignores_evaluation_only_parameters():
    cfg = _cfg()
    key = facebench.load_attack("advhat")._cache_key(cfg, "chip", ["t1"], ["a", "b"])
    assert key == facebench.load_attack("advhat", n_people=7, gallery_photos=1)._cache_key(
        cfg, "chip", ["t1"], ["a", "b"])
    assert key != facebench.load_attack("advhat", steps=7)._cache_key(cfg, "chip", ["t1"],
                                                                      ["a", "b"])
    assert key != facebench.load_attack("advhat")._cache_key(cfg, "chip", ["t1"], ["a"])
    assert len(key) == 24

def _rows(defense, run_id, when, clean, attacked, target="Someone"):
    base = dict(run_id=run_id, started_at=when, facebench_version="0", git_sha="x",
                dataset="lfw", protocol="dev-test", n_pairs=10, recognizer="dlib-resnet",
                defense=defense, seed=0, wall_s=1.0)
    rows = [dict(base, attack="none", threat_model="none", budget=0.0, goal="none",
                 adaptive="none", metric=m, value=v) for m, v in clean.items()]
    rows += [dict(base, attack="advhat", threat_model=f"sticker:{target}", budget=0.1152,
                  goal="impersonation", adaptive="none", metric=m, value=v)
             for m, v in attacked.items()]
    assert all(set(r) == set(COLUMNS) for r in rows)
    return rows


def test_table6_layout_takes_latest_run_per_defense():
    clean = {"threshold": 0.9, "tar_at_thr": 0.97, "accuracy": 0.99}
    rows = (_rows("none", "a", "2024-01-01", clean, {"accuracy": 0.1, "train_steps": 300})
            + _rows("none", "b", "2024-01-02", clean, {"accuracy": 0.3, "train_steps": 300})
            + _rows("jpeg", "c", "2024-01-01", {**clean, "threshold": 0.85},
                    {"accuracy": 0.6, "accuracy_grey_sticker": 0.95, "train_steps": 300}))
    df = pd.DataFrame(rows)[COLUMNS]
    md = LAYOUTS.get("table6")(df, metric="eer", filters={"adaptive": "none"}, source="r.csv")
    lines = [ln for ln in md.splitlines() if ln.startswith("| ")]
    assert lines[0].startswith("| Defense | Threshold | Clean TAR@thr")
    none_row, jpeg_row = lines[1], lines[2]  # DEFENSE_ORDER: none first
    assert none_row.startswith("| none | 0.9000 | 97.00% | 99.00% | – | 30.00% |")
    assert jpeg_row.startswith("| jpeg | 0.8500 |") and "60.00%" in jpeg_row
    assert "target Someone" in md
    with pytest.raises(FacebenchError, match="no advhat rows"):
        LAYOUTS.get("table6")(df[df.attack == "none"], metric="eer", filters={}, source="r.csv")


# --- integration: the whole protocol on a few real LFW faces ------------------------------
@pytest.mark.lfw
def test_advhat_protocol_on_lfw(shared_data, tmp_path, monkeypatch):
    out = tmp_path / "runs.csv"
    params = {"steps": 40, "n_people": 10, "batch": 8, "train_images": 60, "target_photos": 2,
              "gallery_photos": 2}
    df = facebench.run(protocol="dev-test", pairs=8, attack="advhat", attack_params=params,
                       dataset="lfw", data_home=str(shared_data), out=str(out), progress=False)
    saved = pd.read_csv(out)
    assert list(saved.columns) == COLUMNS and len(saved) == len(df)
    assert df["run_id"].nunique() == 1 and (df["n_pairs"] == 10).all()
    clean = df[df.attack == "none"].set_index("metric")["value"]
    adv = df[df.attack == "advhat"].set_index("metric")["value"]
    # clean: real genuine pairs pass the threshold, and other people's faces are rejected
    # as the target; the sticker moves faces towards the target and never helps the defender
    assert clean["tar_at_thr"] >= 0.75 and 0 < clean["threshold"] < 1
    assert clean["accuracy"] > 0.5  # most of them
    assert adv["mean_target_cos"] > clean["mean_target_cos"]
    assert adv["accuracy"] <= clean["accuracy"]
    assert adv["train_steps"] == 40
    row = df[df.attack == "advhat"].iloc[0]
    assert row["goal"] == "impersonation" and row["adaptive"] == "none"
    assert row["threat_model"] == "sticker:Donald_Rumsfeld"  # most photos in dev-test
    # the trained sticker pulls the faces towards the target more than a grey one
    assert adv["mean_target_cos"] > adv["mean_target_cos_grey_sticker"]
    pngs = sorted(p.name for p in (tmp_path / "advhat").glob("*.png"))
    assert pngs == ["faces_Donald_Rumsfeld_none_seed0.png",
                    "sticker_Donald_Rumsfeld_none_seed0.png"]
    from PIL import Image

    with Image.open(tmp_path / "advhat" / pngs[1]) as im:
        assert im.size == (96, 27)
    from facebench.report import render_table

    md = render_table(str(out), layout="table6", filters={"adaptive": "none"})
    assert "| none |" in md
