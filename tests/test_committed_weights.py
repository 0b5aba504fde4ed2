"""Committed weights: fp16 export of a finished run, the lookup order, and loading them with
the eigenbasis recomputed from LFW instead of shipped."""
import json

import pooch
import pytest
import torch

from facebench import trainable
from facebench.defenses.eigen import committed
from facebench.defenses.eigen.faces import EigenBasis, save_atomic
from facebench.defenses.side.model import SIDEModel
from facebench.errors import FacebenchError
from facebench.trainable import MODEL_FORMAT, NoModelError, find_checkpoint

TINY = dict(n_components=6, feat_dim=8, n_items=4, widths=[4, 4, 4, 4], image_size=16)


def _real_pairs(shared_data, n):
    """``n`` dev-test pairs as float NCHW tensors (first images, second images, same)."""
    from facebench.data import aligner_for, load_pairs, pair_images
    from facebench.runner import load_recognizer

    pl = load_pairs("lfw", "dev-test", str(shared_data)).subset(n, 0)
    images, ia, ib = pair_images(pl, aligner_for("lfw", load_recognizer()), progress=False)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    return x[ia], x[ib], torch.from_numpy(pl.same)


def _fake_run(folder, status="complete", seed=0):
    """A training folder as the trainer leaves it, with a tiny SIDE network."""
    torch.manual_seed(seed)
    model = SIDEModel(**TINY)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
        model.generator[1].running_var.fill_(0.7)
        model.generator[1].running_var[0] = 1e5  # beyond fp16: stays float32
    folder.mkdir(parents=True)
    torch.save({"format": MODEL_FORMAT, "defense": "side", "config": dict(model.config),
                "state_dict": model.state_dict(), "meta": {"protocol": "dev-test"}},
               folder / "model.pt")
    manifest = {"defense": "side", "status": status, "recognizer": "dlib-resnet",
                "data": {"location": {"lfw_home": "/somewhere/lfw_home"}, "protocol": "dev-test",
                         "image_list_sha256": "ab" * 32},
                "eigen": {"K": 6, "face_size": 16, "cache_file": "/somewhere/eigen.pt"},
                "files": {"model": "model.pt", "eigen": "eigen.pt",
                          "checkpoint": "checkpoint.pt"}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    ev = torch.linspace(3.0, 1.0, 6, dtype=torch.float64)
    save_atomic(EigenBasis(torch.eye(256)[:, :6], torch.zeros(256), ev, 16).to_dict(),
                folder / "eigen.pt")
    (folder / "log.jsonl").write_text('{"step": 1}\n')
    return model.eval()


def test_export_halves_the_weights_and_drops_machine_paths(tmp_path, one_thread):
    model = _fake_run(tmp_path / "run")
    dest = trainable.export_weights(tmp_path / "run", tmp_path / "weights" / "side")
    data = torch.load(dest / "model.pt", weights_only=True)
    floats = [v for k, v in data["state_dict"].items()
              if v.is_floating_point() and k != "generator.1.running_var"]
    assert floats and all(v.dtype == torch.float16 for v in floats)
    assert data["meta"] == {"protocol": "dev-test", "dtype": "float16",
                            "kept_float32": ["generator.1.running_var"]}
    assert data["state_dict"]["generator.1.running_var"].dtype == torch.float32
    text = (dest / "manifest.json").read_text()
    assert "/somewhere" not in text and "checkpoint.pt" not in text
    manifest = json.loads(text)
    assert manifest["eigen"]["fingerprint"]["top_eigvals"][:2] == pytest.approx([3.0, 2.6])
    assert manifest["export"]["model_sha256"] == pooch.file_hash(str(dest / "model.pt"))
    assert (dest / "log.jsonl").read_text() == '{"step": 1}\n'
    # the fp16 copy loaded into the fp32 network gives nearly the same selection probabilities
    restored = SIDEModel(**data["config"])
    restored.load_state_dict(data["state_dict"])
    x = torch.rand(5, 1, 16, 16) * 2 - 1
    with torch.no_grad():
        p32, p16 = model(x), restored.eval()(x)
    assert p16.dtype == torch.float32
    assert (p32 - p16).abs().max() < 5e-3
    assert not torch.equal(p32, p16)  # it really went through fp16


def test_export_refuses_unfinished_runs(tmp_path):
    _fake_run(tmp_path / "run", status="partial")
    with pytest.raises(FacebenchError, match="'partial' training run"):
        trainable.export_weights(tmp_path / "run", tmp_path / "out")


def test_lookup_order_prefers_longer_user_runs_then_committed(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEBENCH_MODELS", str(tmp_path / "user"))
    committed = tmp_path / "weights" / "side"
    monkeypatch.setattr(trainable, "committed_dir", lambda d: None)
    with pytest.raises(NoModelError, match="no committed side weights"):
        find_checkpoint("side", "weights")
    _fake_run(committed)
    monkeypatch.setattr(trainable, "committed_dir",
                        lambda d: committed if d == "side" else None)
    assert find_checkpoint("side") == committed / "model.pt"
    assert find_checkpoint("side", "weights") == committed / "model.pt"
    _fake_run(tmp_path / "user" / "side" / "quick")
    assert find_checkpoint("side") == committed / "model.pt"  # quick ranks below committed
    _fake_run(tmp_path / "user" / "side" / "medium", status="partial")
    assert find_checkpoint("side") == committed / "model.pt"  # unfinished runs are skipped
    medium = tmp_path / "user" / "side" / "medium"
    assert find_checkpoint("side", str(medium)) == medium / "model.pt"  # unless named
    manifest = json.loads((medium / "manifest.json").read_text())
    (medium / "manifest.json").write_text(json.dumps({**manifest, "status": "complete"}))
    assert find_checkpoint("side") == medium / "model.pt"
    with pytest.raises(NoModelError):
        find_checkpoint("pin")


@pytest.mark.lfw
def test_committed_format_rebuilds_its_basis_from_lfw(shared_data, tmp_path, monkeypatch,
                                                      one_thread):
    """Train a few steps on real crops, export, and load the export with no eigen.pt: the
    recomputed basis spans the trained one, SIDE purifies real faces, and a training split
    that differs from the recorded one is refused."""
    from facebench.defenses.side import SIDE
    from facebench.defenses.eigen.faces import load_basis_file
    from facebench.training import train

    monkeypatch.setattr("facebench.defenses.eigen.faces.default_eigen_dir",
                        lambda: tmp_path / "eigen")
    run = train("side", "quick", data_home=shared_data, out_dir=tmp_path / "run", seed=0,
                progress=False, download=False, max_images=8, face_size=16, n_components=6,
                widths=[4, 4, 4, 4], feat_dim=8, n_items=4, k=3, batch_size=2,
                warmup_steps=1, ssat_steps=1, checkpoint_every=2, log_every=1)
    dest = trainable.export_weights(run, tmp_path / "weights" / "side")
    assert not (dest / "eigen.pt").exists()
    rebuilt = committed.rebuild_basis(dest, shared_data, progress=False,
                                              eigen_cache_dir=tmp_path / "eigen2")
    trained = load_basis_file(run / "eigen.pt")
    # same subspace: eigenvectors agree up to sign
    cos = (rebuilt.vectors * trained.vectors).sum(0).abs()
    assert torch.allclose(cos, torch.ones_like(cos), atol=1e-4)

    defense = SIDE(checkpoint=str(dest), data_home=shared_data, inference="threshold")
    x, _, _ = _real_pairs(shared_data, 2)
    out = defense(x)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert (out - x).abs().mean() > 1e-3  # gray projection changes the colour image

    manifest = json.loads((dest / "manifest.json").read_text())
    good = json.dumps(manifest)
    manifest["eigen"]["fingerprint"]["eigval_sum"] *= 1.01
    (dest / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(FacebenchError, match="does not match the one it was trained with"):
        committed.rebuild_basis(dest, shared_data, progress=False)
    manifest = json.loads(good)
    manifest["data"]["image_list_sha256"] = "0" * 64
    (dest / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(FacebenchError, match="training split here differs"):
        SIDE(checkpoint=str(dest), data_home=shared_data)


@pytest.mark.lfw
@pytest.mark.timeout(900)
def test_committed_side_weights_load_and_keep_genuine_pairs(shared_data):
    """The shipped SIDE model loads on a fresh machine (basis rebuilt from LFW) and purified
    genuine dev-test pairs still score above impostor pairs (ROC AUC 0.975 on these 200
    pairs for the committed side[warm,prior_topk=500], 0.77 for the side[cpu] before it;
    chance is 0.5)."""
    from facebench.defenses.side import SIDE
    from facebench.metrics import roc_auc
    from facebench.runner import load_recognizer

    assert trainable.committed_dir("side") is not None, "committed weights lost"
    defense = SIDE(checkpoint="weights", data_home=shared_data)
    assert defense.checkpoint_path == str(trainable.committed_dir("side") / "model.pt")
    assert defense.meta["protocol"] == "dev-test" and defense.meta["dtype"] == "float16"
    assert defense.row_name == "side[warm,prior_topk=500]"
    rec = load_recognizer("dlib-resnet")
    xa, xb, same = _real_pairs(shared_data, 200)
    with torch.no_grad():
        a = torch.nn.functional.normalize(rec(defense(xa)), dim=1)
        b = torch.nn.functional.normalize(rec(defense(xb)), dim=1)
    assert roc_auc((a * b).sum(1).numpy(), same.numpy()) > 0.9
