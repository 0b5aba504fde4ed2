"""Shared fixtures: where the read-only shared data lives, and an isolated cache."""
import os
from pathlib import Path

import pytest

SHARED = Path(os.environ.get("FACEBENCH_SHARED",
                             Path(__file__).resolve().parents[1].parent / "shared"))
LFW_HOME = SHARED / "data"


@pytest.fixture
def shared_data():
    """Folder holding lfw_home/ (the shared LFW copy); skips when it is absent."""
    if not (LFW_HOME / "lfw_home" / "pairsDevTest.txt").exists():
        pytest.skip(f"shared LFW data not found under {LFW_HOME}")
    return LFW_HOME


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: intra-op threads only add contention on a busy machine."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
