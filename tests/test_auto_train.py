"""`run --defense side` with no trained model trains the quick preset first (or fails cleanly)."""
import pytest

import facebench.trainable
import facebench.training
from facebench.errors import FacebenchError
from facebench.runner import build_defense


class Trained(Exception):
    pass


@pytest.fixture
def no_models(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEBENCH_MODELS", str(tmp_path / "models"))
    monkeypatch.setattr(facebench.trainable, "committed_dir", lambda d: None)
    calls = []

    def fake_train(name, **kwargs):
        calls.append((name, kwargs))
        raise Trained  # stop here: training itself is tested in test_side_mechanics

    monkeypatch.setattr(facebench.training, "train", fake_train)
    return calls


@pytest.mark.parametrize("name", ["side", "pin"])
def test_missing_model_trains_quick_preset(no_models, name):
    with pytest.raises(Trained):
        build_defense(name, {}, data_home="somewhere", protocol="dev-test", auto_train=True,
                      progress=False)
    assert no_models == [(name, {"preset": "quick", "data_home": "somewhere",
                                 "protocol": "dev-test", "progress": False})]


def test_without_auto_train_it_is_one_clear_error(no_models):
    with pytest.raises(FacebenchError, match="no trained side model found"):
        build_defense("side", {}, auto_train=False)
    assert no_models == []


def test_explicit_checkpoint_is_never_trained_over(no_models, tmp_path):
    with pytest.raises(FacebenchError, match="no trained side model found"):
        build_defense("side", {"checkpoint": str(tmp_path / "nope.pt")}, auto_train=True)
    assert no_models == []
