"""a*: attacks through the fixed projection onto all top eigenfaces (SIDE, Sec. 4.3)."""
import pytest
import torch

import facebench
from facebench.attack import Attack
from facebench.defenses.eigen.faces import EigenBasis, compute_eigenbasis, rgb_to_face, save_atomic
from facebench.errors import FacebenchError
from facebench.fingerprint import file_sha256
from facebench.registry import ATTACKS
from facebench.threat import ThreatModel

SIZE = 112  # the defense's face size: no resampling between RGB input and gray face


def _random_basis(k: int, seed: int = 0) -> EigenBasis:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(SIZE * SIZE, k, generator=g, dtype=torch.float64))
    return EigenBasis(q.float(), torch.zeros(SIZE * SIZE), size=SIZE)


class Linear(torch.nn.Module):
    def __init__(self, dim=8, seed=1):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = torch.nn.Parameter(torch.randn(dim, 3 * SIZE * SIZE, generator=g) * 1e-2)

    def forward(self, x):
        return x.flatten(1) @ self.w.T


@pytest.fixture
def basis_file(tmp_path):
    path = tmp_path / "eigen.pt"
    save_atomic(_random_basis(12).to_dict(), path)
    return path


def _attack(basis_file, norm="l2", eps=1.0, **params):
    cls = ATTACKS.get("a-star")
    params = {"basis": str(basis_file), "n_components": 12, **params}
    return cls(ThreatModel(norm, eps), **params)


def test_perturbation_lives_in_the_super_antibody_subspace(basis_file):
    """FGM through P*: the gray part of δ is E Eᵀ(·), so projecting it again changes nothing."""
    attack = _attack(basis_file, base="fgsm")
    model = Linear()
    x = torch.rand(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2)) * 0.5 + 0.25
    gallery = torch.randn(3, 8)
    adv = attack(model, x, gallery, torch.tensor([True, False, True]), 0.3)
    delta_gray = rgb_to_face(adv) - rgb_to_face(x)  # linear: the gray image of δ (x2 scale)
    basis = attack.eigenbasis()
    inside = basis.project(delta_gray.flatten(1) + basis.mean).view_as(delta_gray)
    assert delta_gray.abs().max() > 1e-3  # it did move
    torch.testing.assert_close(inside, delta_gray, atol=1e-5, rtol=1e-4)


def test_plain_fgsm_leaves_the_subspace(basis_file):
    """The same check fails for an ordinary FGM step, so the test above can fail."""
    fgsm = ATTACKS.get("fgsm")(ThreatModel("l2", 1.0))
    basis = _attack(basis_file).eigenbasis()
    x = torch.full((1, 3, SIZE, SIZE), 0.5)
    adv = fgsm(Linear(), x, torch.randn(1, 8), torch.tensor([True]), 0.3)
    delta_gray = rgb_to_face(adv) - rgb_to_face(x)
    inside = basis.project(delta_gray.flatten(1) + basis.mean).view_as(delta_gray)
    assert (inside - delta_gray).abs().max() > 1e-3


def test_rows_name_the_base_attack_and_a_star(basis_file):
    attack = _attack(basis_file, base="deepfool", steps=3)
    # the base attack with the settings that differ from the defaults; a basis file of the
    # user's is named by its content, never by a path of their machine
    digest = file_sha256(basis_file)[:12]
    assert attack.row_attack == f"deepfool[steps=3,basis=sha256:{digest},n_components=12]"
    assert attack.knowledge == "a*"
    assert attack.inner.steps == 3
    assert str(basis_file) in repr(attack)  # the cache key names the basis file


@pytest.mark.parametrize("params, text", [
    ({"base": "cw"}, "base must be one of"),
    ({"n_components": 0}, "n_components"),
    ({"base": "fgsm", "steps": 3}, "no parameter 'steps'"),
])
def test_bad_parameters(basis_file, params, text):
    with pytest.raises(FacebenchError, match=text):
        _attack(basis_file, **params)


def test_missing_basis_and_too_few_components(tmp_path, basis_file):
    with pytest.raises(FacebenchError, match="no model or eigenbasis file"):
        _attack(tmp_path / "nowhere").eigenbasis()
    cls = ATTACKS.get("a-star")
    with pytest.raises(FacebenchError, match="only 12"):
        cls(ThreatModel("l2", 1.0), basis=str(basis_file)).eigenbasis()  # default 1500


def test_is_an_attack_with_defaults():
    cls = ATTACKS.get("a-star")
    assert issubclass(cls, Attack) and cls.defaults["n_components"] == 1500
    assert cls.defaults["base"] == "pgd" and cls.defaults["basis"] == "side"


@pytest.mark.lfw
def test_a_star_on_lfw_with_a_real_eigenbasis(shared_data, tmp_path, monkeypatch):
    """Eigenfaces of real dev-train crops; a* PGD rows on real dev-test pairs."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    from facebench.data import load_pairs, pair_images
    from facebench.data import aligner_for

    rec = facebench.load_recognizer()
    train = load_pairs("lfw", "dev-train", str(shared_data)).subset(20, 0)
    images, _, _ = pair_images(train, aligner_for("lfw", rec), progress=False)
    faces = rgb_to_face(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255)
    path = tmp_path / "eigen.pt"
    save_atomic(compute_eigenbasis(faces.flatten(1), 30).to_dict(), path)

    out = tmp_path / "runs.csv"
    df = facebench.run(protocol="dev-test", pairs=6, attack="a-star",
                       attack_params={"basis": str(path), "n_components": 30, "steps": 3},
                       dataset="lfw", data_home=str(shared_data), out=str(out), progress=False)
    attacked = df[df.attack != "none"]
    digest = file_sha256(path)[:12]
    assert set(attacked.attack) == {f"pgd[steps=3,basis=sha256:{digest},n_components=30]"}
    assert set(attacked.adaptive) == {"a*"}
    values = attacked.set_index("metric")["value"]
    assert values["mean_rel_l2"] <= 0.04 + 1e-5
    clean = df[df.attack == "none"].set_index("metric")["value"]
    assert values["eer"] >= clean["eer"]  # the attack never helps the recognizer
    with pytest.raises(FacebenchError, match="already adaptive"):
        facebench.run(protocol="dev-test", pairs=6, attack="a-star", adaptive=True,
                      attack_params={"basis": str(path), "n_components": 30},
                      dataset="lfw", data_home=str(shared_data), out=None, progress=False)


def test_minimal_eps_reaches_the_base_attack_and_keeps_a_star_labels(basis_file):
    from facebench.minimal_eps import wrap_minimal

    wrapped = wrap_minimal(_attack(basis_file, norm="l2", eps=4.0, base="fgsm"), search_steps=3)
    digest = file_sha256(basis_file)[:12]
    assert wrapped.knowledge == "a*"
    assert wrapped.row_attack == (f"fgsm[basis=sha256:{digest},n_components=12,"
                                  "search_steps=3,min-eps]")
    astar = wrapped.inner
    budgets = torch.tensor([0.5, 2.0])
    astar.threat = ThreatModel.per_sample("l2", budgets)
    x = torch.full((2, 3, SIZE, SIZE), 0.5)
    adv = astar(Linear(), x, torch.randn(2, 8), torch.tensor([True, False]), 0.3)
    sizes = (adv - x).flatten(1).norm(dim=1)
    assert torch.all(sizes <= budgets + 1e-4) and sizes[0] < 0.6  # each probe its own budget


def test_bind_takes_the_evaluated_models_basis(tmp_path, basis_file):
    from types import SimpleNamespace

    attack = _attack(basis_file)
    attack.params["basis"] = "side"
    model = tmp_path / "model.pt"  # beside basis_file's eigen.pt
    model.touch()
    attack.bind(defense=SimpleNamespace(checkpoint_path=str(model), defense_name="side"))
    assert attack.params["basis"] == str(model) and attack.eigenbasis().k == 12
    other = _attack(basis_file)  # an explicit basis is left alone
    other.bind(defense=SimpleNamespace(checkpoint_path="elsewhere", defense_name="side"))
    assert other.params["basis"] == str(basis_file)


def test_bind_reuses_a_loaded_basis_without_an_eigen_file(tmp_path):
    """Committed weights ship no eigen.pt: the attack takes the defense's (rebuilt) basis."""
    from types import SimpleNamespace

    model = tmp_path / "weights" / "model.pt"
    model.parent.mkdir()
    model.touch()
    basis = _random_basis(20, seed=3)
    attack = _attack(tmp_path / "unused", n_components=12)
    attack.params["basis"] = "side"
    attack.bind(defense=SimpleNamespace(checkpoint_path=str(model), defense_name="side",
                                        basis=basis))
    assert torch.equal(attack.eigenbasis().vectors, basis.vectors[:, :12])
    assert "model.pt" in repr(attack)  # the cache key names the model file it came from
