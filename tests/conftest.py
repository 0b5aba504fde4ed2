"""Shared fixtures: data found the way users find it, and every test in its own folders.

LFW is looked up exactly as the CLI does (``$FACEBENCH_DATA``, then the user data folder),
once, before any test changes the environment. A test that needs the full LFW asks for the
``shared_data`` fixture (and carries the ``lfw`` marker): without LFW it is skipped on a
developer's machine and *fails* in CI (``CI=true``), where a silent skip would hide it.

Every test then runs with its own results, models, caches, HOME-style config and data folders
under ``tmp_path``; only the aligned-crop and eigenbasis caches are shared by the test session
(safe: they are keyed by content and code version), so the suite does not re-align LFW in
every test.
"""
import atexit
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from facebench.datasets.lfw import lfw_home_dir
from facebench.paths import data_root

FIXTURES = Path(__file__).resolve().parent / "fixtures"
DLIB_REFERENCE = FIXTURES / "dlib_reference.npz"
DLIB_REFERENCE_SHA256 = "3beb32e6bb594816936fa5925722d7ce944a74bd0daf601ecbc5b3bfa368b590"


def _find_lfw() -> Path | None:
    """The folder holding ``lfw_home/`` as a user's run would find it, or None."""
    root = data_root()
    home = lfw_home_dir(root)
    if (home / "pairsDevTest.txt").is_file() and (home / "lfw").is_dir():
        return home.parent if home.name == "lfw_home" else home
    return None


LFW_DATA = _find_lfw()
# Libraries the tests import may write into HOME at import time (ART creates ~/.art): give the
# whole test process a temporary HOME, found LFW first, removed at exit.
_TEST_HOME = tempfile.mkdtemp(prefix="facebench-tests-home-")
os.environ["HOME"] = _TEST_HOME
atexit.register(shutil.rmtree, _TEST_HOME, True)
SHARED_CACHES = ("aligned", "eigen", "quilting")
IN_CI = os.environ.get("CI", "").lower() == "true"
_LFW_TESTS: set[str] = set()


def need_data(what: str, hint: str) -> None:
    """Skip (a developer machine) or fail (CI) a test whose data is absent, in one line."""
    if IN_CI:
        pytest.fail(f"CI needs {what}, which is not here; {hint}", pytrace=False)
    pytest.skip(f"{what} not found; {hint}")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Folder holding ``lfw_home/`` (the full LFW); see the module docstring."""
    if LFW_DATA is None:
        need_data("the full LFW", "set FACEBENCH_DATA to a folder holding lfw_home/ (README, Data)")
    return LFW_DATA


@pytest.fixture(scope="session")
def dlib_reference() -> Path:
    """The committed compiled-dlib descriptors (tests/fixtures), checked by sha256."""
    digest = hashlib.sha256(DLIB_REFERENCE.read_bytes()).hexdigest()
    assert digest == DLIB_REFERENCE_SHA256, f"{DLIB_REFERENCE} is corrupt (sha256 {digest})"
    return DLIB_REFERENCE


@pytest.fixture(scope="session")
def _session_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("facebench-cache")


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch, _session_cache):
    """Every variable facebench reads for a default folder points into tmp folders."""
    home = tmp_path / "_home"
    for sub in ("results", "models", "config", "data", "state", "empty-data"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    # adversarial examples are per test (tests count how often an attack crafts); the costly
    # decode-and-align and eigenbasis caches are shared by the session
    cache = tmp_path / "_cache"
    cache.mkdir()
    for kind in SHARED_CACHES:
        (_session_cache / kind).mkdir(exist_ok=True)
        (cache / kind).symlink_to(_session_cache / kind, target_is_directory=True)
    monkeypatch.setenv("FACEBENCH_CACHE", str(cache))
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("FACEBENCH_RESULTS", str(home / "results" / "runs.csv"))
    monkeypatch.setenv("FACEBENCH_MODELS", str(home / "models"))
    monkeypatch.setenv("FACEBENCH_DATA", str(LFW_DATA or home / "empty-data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(_session_cache / "xdg"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / "state"))
    monkeypatch.setenv("MPLCONFIGDIR", str(home / "config"))
    yield


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: intra-op threads only add contention. For the modules (or tests) that
    ask for it, restored after; the rest of the suite uses the machine's threads."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def pytest_configure(config):
    """``FACEBENCH_TEST_SEED`` seeds numpy's global generator for the whole session: the suite
    must pass (and end) whatever state a library that draws from it finds there."""
    seed = os.environ.get("FACEBENCH_TEST_SEED")
    if seed:
        import numpy as np

        np.random.seed(int(seed))


def pytest_collection_modifyitems(config, items):
    """A test that asks for the full LFW is an ``lfw`` test, whether or not it says so."""
    for item in items:
        if "shared_data" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.lfw)
        if item.get_closest_marker("lfw") is not None:
            _LFW_TESTS.add(item.nodeid)


def pytest_terminal_summary(terminalreporter):
    """One line: how many tests needed the full LFW, and whether it was there."""
    reports = [r for key in ("passed", "failed", "skipped", "error")
               for r in terminalreporter.stats.get(key, [])
               if getattr(r, "when", "call") == "call" or r.outcome != "passed"]
    lfw = {r.nodeid for r in reports if r.nodeid in _LFW_TESTS}
    where = "found via FACEBENCH_DATA / the user data folder" if LFW_DATA else "NOT found"
    terminalreporter.write_line(f"facebench: {len(lfw)} tests use the full LFW ({where})")
