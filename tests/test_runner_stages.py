"""The runner's stages one by one, on the embedded sample (few pairs)."""
import numpy as np
import pytest
import torch

import facebench.runner as R
from facebench.results import read_runs


@pytest.fixture(scope="module")
def staged():
    cfg = R.RunConfig(attack="fgsm", pairs=6, out=None, progress=False)
    plan = R.validate(cfg)
    cfg = R.replace(cfg, protocol=plan.protocol)
    return cfg, plan, R.load_evaluation(cfg, plan)


def test_validate_resolves_before_loading_anything():
    plan = R.validate(R.RunConfig(attack="pgd", out=None))
    assert plan.protocol == "dev-test" and plan.threat.norm == "rel-l2"
    assert plan.threat.eps == 0.04 and plan.attack.steps == 40
    assert R.validate(R.RunConfig(attack="none", out=None)).attack is None


def test_load_evaluation_indexes_every_pair(staged):
    _, _, ev = staged
    assert len(ev.same) == 6 and ev.same.sum() == 3
    assert ev.images.dtype == np.uint8 and ev.images.shape[1:] == (150, 150, 3)
    assert len(ev.images) == len(ev.pairs.unique_paths())
    for i, (a, b) in enumerate(zip(ev.pairs.paths_a, ev.pairs.paths_b)):
        assert ev.pairs.unique_paths()[ev.idx_a[i]] == a
        assert ev.pairs.unique_paths()[ev.idx_b[i]] == b


def test_clean_stage_writes_its_rows_at_once(staged, tmp_path):
    cfg, _, ev = staged
    out = tmp_path / "runs.csv"
    clean = R.clean_stage(R.replace(cfg, out=str(out)), ev)
    assert clean.emb.shape == (len(ev.images), 128)
    assert clean.scores[ev.same].mean() > clean.scores[~ev.same].mean()
    assert set(read_runs(out)["metric"]) >= {"eer", "roc_auc", "acc_at_clean_thr"}


@pytest.mark.parametrize("overrides,label,greybox", [
    ({}, "none", True),
    ({"adaptive": True, "defense": "jpeg"}, "bpda", False),
    ({"adaptive": True, "defense": "tvm", "eot_samples": 2}, "bpda+eot[eot_samples=2]", False),
    ({"adaptive": True, "defense": "tvm"}, "bpda+eot", False),
    ({"source": "dlib-resnet+median"}, "transfer:dlib-resnet+median", False),
])
def test_attacker_view_per_knowledge(staged, overrides, label, greybox):
    cfg, plan, ev = staged
    cfg = R.replace(cfg, **overrides)
    plan = R.validate(cfg)
    ev = R.load_evaluation(cfg, plan)
    clean = R.clean_stage(cfg, ev)
    view = R.attacker_view(
        plan.attack, adaptive=cfg.adaptive, eot_samples=cfg.eot_samples,
        source_label=cfg.source, source=ev.source, defense=ev.defense,
        defense_name=cfg.defense, recognizer=ev.recognizer, defended=ev.defended,
        images=ev.images, idx_a=ev.idx_a, idx_b=ev.idx_b, same=ev.same, clean_emb=clean.emb,
        clean_thr=clean.thr, batch_size=cfg.batch_size, device=plan.device, progress=False)
    assert view.label == label and view.greybox is greybox
    assert view.gallery_emb.shape == clean.emb.shape and -1 < view.threshold < 1


def test_craft_stage_attacks_only_the_goal_probes(staged):
    cfg, plan, ev = staged
    cfg = R.replace(cfg, goal="dodging")
    clean = R.clean_stage(cfg, ev)
    view = R.AttackerView(ev.recognizer, clean.emb, clean.thr, "none", False)
    attacked, dodge = R.attacked_mask("dodging", torch.from_numpy(ev.same))
    res = R.craft_stage(cfg, plan, ev, clean, view, attacked.numpy(), dodge.numpy())
    untouched = ~attacked.numpy()
    assert np.array_equal(res.scores[untouched], clean.scores[untouched])
    assert (res.scores[attacked.numpy()] < clean.scores[attacked.numpy()]).all()
    assert len(res.rel) == attacked.sum() and (res.rel <= 0.04 + 1e-4).all()
    rows = R.attacked_rows(cfg, plan, ev, clean, view, res, 1.0)
    assert {r["metric"] for r in rows} >= {"asr", "mean_linf", "mean_rel_l2", "eer"}
