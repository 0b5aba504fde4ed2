"""Caches never serve results made from other images or other code; bad inputs fail in one line.

Regression tests for: grey-box examples reused across image roots, aligned crops served after
images changed in place, pairs-CSV paths escaping the image root, and oversized or broken
images giving tracebacks or being decoded.
"""
from __future__ import annotations

import importlib
import os
import struct
import sys
import textwrap
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import facebench
import facebench.data as data
from facebench import adv_cache, fingerprint
from facebench.data import images
from facebench.data.align import ResizeOnly
from facebench.data.pairs import PairList
from facebench.data.pairs_csv import csv_pairs
from facebench.errors import FacebenchError


# ---------------------------------------------------------------- helpers

def write_jpeg(path: Path, size=(40, 40), seed=0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path, "JPEG")
    return path


def write_png(path: Path, size=(40, 40), seed=0) -> Path:
    """Uncompressed PNG: its length depends on the size only, never on the pixels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(
        path, "PNG", compress_level=0)
    return path


def png_header(path: Path, width: int, height: int) -> Path:
    """A PNG that declares ``width`` x ``height`` but holds almost no data: a tiny bomb."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body)))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


def make_module(tmp_path, monkeypatch, name: str, source: str):
    """Import ``source`` as module ``name`` from a real file (inspect needs one)."""
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module(name)
    monkeypatch.setitem(sys.modules, name, module)  # dropped again after the test
    return module


def load(paths, root, cache, aligner=None, **kw):
    return images.load_aligned(paths, aligner or ResizeOnly((16, 16)), cache, "pairs/t",
                               progress=False, root=root, **kw)


def count_decodes(monkeypatch) -> list:
    calls = []
    real = images.load_image
    monkeypatch.setattr(images, "load_image", lambda p: (calls.append(p), real(p))[1])
    return calls


def key_args(**over):
    base = dict(recognizer="dlib", pairs_name="pairs/p", paths_a=["x.jpg"], paths_b=["y.jpg"],
                aligner_key="resize-16x16-bilinear", attack="pgd(eps=0.04)", goal="dodging",
                seed=0, selected=[0], images_digest="0" * 32)
    return {**base, **over}


# ---------------------------------------------------------------- 1. grey-box example cache

def test_images_digest_names_the_exact_pixels():
    a = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    d = fingerprint.images_digest(a)
    assert d == fingerprint.images_digest(a.copy()) and len(d) == 32
    b = a.copy()
    b[1, 2, 3, 0] ^= 1
    assert fingerprint.images_digest(b) != d
    assert fingerprint.images_digest(a.reshape(3, 8, 24, 1)) != d  # same bytes, other shape
    flipped = a[:, ::-1]
    assert fingerprint.images_digest(flipped) == fingerprint.images_digest(flipped.copy())


def test_adv_key_differs_for_same_csv_over_another_image_root(tmp_path):
    # the reported bug: the same pairs CSV over img/ then img2/ (same names, other faces)
    csv = tmp_path / "p.csv"
    csv.write_text("path_a,path_b,same\nx.jpg,y.jpg,1\n", encoding="utf-8")
    keys = []
    for k, folder in enumerate(["img", "img2", "img"]):
        for j, name in enumerate("xy"):
            if not (tmp_path / folder / f"{name}.jpg").exists():
                write_jpeg(tmp_path / folder / f"{name}.jpg", seed=10 * k + j)
        pl = data.load_pairs("pairs", pairs_file=csv, image_root=tmp_path / folder)
        stack, _, _ = data.pair_images(pl, ResizeOnly((16, 16)), tmp_path / "crops",
                                       progress=False)
        keys.append(adv_cache.cache_key(**key_args(
            pairs_name=pl.name, paths_a=pl.paths_a, paths_b=pl.paths_b,
            images_digest=fingerprint.images_digest(stack))))
    assert keys[0] != keys[1] and keys[0] == keys[2]


def test_adv_key_requires_an_images_digest():
    args = key_args()
    del args["images_digest"]
    with pytest.raises(TypeError):
        adv_cache.cache_key(**args)


def test_adv_key_code_version_covers_attack_inner_and_recognizer(tmp_path, monkeypatch):
    src = "class {cls}:\n    def __repr__(self):\n        return 'same-repr'\n"
    rec_a = make_module(tmp_path, monkeypatch, "fbtest_rec_a", src.format(cls="Rec"))
    rec_b = make_module(tmp_path, monkeypatch, "fbtest_rec_b", src.format(cls="Rec") + "# b\n")
    atk_a = make_module(tmp_path, monkeypatch, "fbtest_atk_a", src.format(cls="Atk"))
    atk_b = make_module(tmp_path, monkeypatch, "fbtest_atk_b", src.format(cls="Atk") + "# b\n")
    wrap = make_module(tmp_path, monkeypatch, "fbtest_wrap", src.format(cls="Wrap"))

    def key(attack, rec=None):
        return adv_cache.cache_key(**key_args(attack=attack, recognizer_module=rec))

    assert key(atk_a.Atk()) != key(atk_b.Atk())  # same repr, edited attack module
    assert key(atk_a.Atk(), rec_a.Rec) != key(atk_a.Atk(), rec_b.Rec)
    assert key(atk_a.Atk(), rec_a.Rec) == key(atk_a.Atk(), rec_a.Rec())  # class or instance
    assert key(atk_a.Atk(), rec_a.Rec) != key(atk_a.Atk())
    w_a, w_b = wrap.Wrap(), wrap.Wrap()
    w_a.inner, w_b.inner = atk_a.Atk(), atk_b.Atk()
    assert key(w_a) != key(w_b)  # a wrapper depends on the attack it drives
    before = key(atk_a.Atk())
    monkeypatch.setattr(facebench, "__version__", "999.0")
    assert key(atk_a.Atk()) != before
    assert fingerprint.code_version(atk_a.Atk).startswith("999.0+")


def test_code_version_follows_helpers_the_attack_module_imports():
    # bim.py runs _iterative.ascend: an edit there must change bim's cached examples too;
    # facebench.params (the Attack base's parameter mixin) checks the values it runs with
    bim = facebench.load_attack("bim", norm="linf", eps=0.03)
    assert fingerprint.defining_modules(bim) == [
        "facebench.attack", "facebench.attacks._iterative", "facebench.attacks.bim",
        "facebench.params"]
    assert fingerprint.defining_modules(None, "not a module", 3) == []


# ---------------------------------------------------------------- 2. aligned-crop cache

def test_crop_cache_rebuilds_after_images_are_overwritten(tmp_path):
    root, cache = tmp_path / "img", tmp_path / "crops"
    paths = [write_jpeg(root / f"{i}.jpg", seed=i).name for i in range(4)]
    first = load(paths, root, cache)
    write_jpeg(root / "1.jpg", seed=99)  # other face, same name
    second = load(paths, root, cache)
    fresh = load(paths, root, None)
    assert np.array_equal(second, fresh) and not np.array_equal(second[1], first[1])
    assert np.array_equal(second[[0, 2, 3]], first[[0, 2, 3]])
    assert len(list(cache.iterdir())) == 1  # one file, rewritten atomically


def test_crop_cache_sees_same_size_edit_with_old_mtime(tmp_path):
    root, cache = tmp_path / "img", tmp_path / "crops"
    path = write_png(root / "a.png", seed=0)
    st = path.stat()
    first = load(["a.png"], root, cache)
    write_png(path, seed=1)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
    second = load(["a.png"], root, cache)
    assert np.array_equal(second, load(["a.png"], root, None))
    assert not np.array_equal(second, first)


def test_crop_cache_touch_keeps_crops_without_decoding(tmp_path, monkeypatch):
    root, cache = tmp_path / "img", tmp_path / "crops"
    paths = [write_jpeg(root / f"{i}.jpg", seed=i).name for i in range(3)]
    first = load(paths, root, cache)
    calls = count_decodes(monkeypatch)
    os.utime(root / "2.jpg", ns=(1, 10**18))  # a copy without -p: new mtime, same bytes
    assert np.array_equal(load(paths, root, cache), first)
    assert np.array_equal(load(paths, root, cache), first)
    assert calls == []


def test_crop_cache_without_its_file_index_is_not_trusted(tmp_path):
    root, cache = tmp_path / "img", tmp_path / "crops"
    paths = [write_jpeg(root / f"{i}.jpg", seed=i).name for i in range(2)]
    first = load(paths, root, cache)
    (target,) = cache.iterdir()
    np.save(target, np.zeros_like(first), allow_pickle=False)  # an old-format cache file
    assert np.array_equal(load(paths, root, cache), first)


def test_crop_cache_key_covers_the_aligner_code(tmp_path, monkeypatch):
    # an aligner edited without bumping its key must not get the old crops
    twin = make_module(tmp_path, monkeypatch, "fbtest_twin_aligner", """
        import numpy as np
        from facebench.data.align import ResizeOnly

        class Twin(ResizeOnly):
            def __call__(self, img):
                return np.ascontiguousarray(super().__call__(img)[::-1])
    """)
    root, cache = tmp_path / "img", tmp_path / "crops"
    paths = [write_jpeg(root / "0.jpg").name]
    plain = load(paths, root, cache, ResizeOnly((16, 16)))
    aligner = twin.Twin((16, 16))
    assert aligner.key == ResizeOnly((16, 16)).key
    assert np.array_equal(load(paths, root, cache, aligner), plain[:, ::-1])


@pytest.mark.lfw
def test_lfw_warm_crop_cache_decodes_nothing(shared_data, tmp_path, monkeypatch):
    pl = data.load_pairs("lfw", "dev-test", data_home=shared_data, download=False)
    pl = pl.subset(20, seed=0)
    aligner = data.get_aligner("dlib-chip")
    cold, ia, ib = data.pair_images(pl, aligner, tmp_path, progress=False)
    calls = count_decodes(monkeypatch)
    warm, ja, jb = data.pair_images(pl, aligner, tmp_path, progress=False)
    assert calls == [] and np.array_equal(cold, warm)
    assert np.array_equal(ia, ja) and np.array_equal(ib, jb)


# ---------------------------------------------------------------- 3. paths outside the root

@pytest.mark.parametrize("bad, why", [
    ("/etc/x.jpg", "absolute"),
    ("../x.jpg", "outside"),
    ("a/../../x.jpg", "outside"),
    ("..", "outside"),
    ("a\0b.jpg", "NUL"),
])
@pytest.mark.parametrize("column", [0, 1])
def test_csv_refuses_paths_outside_the_image_root(tmp_path, bad, why, column):
    row = ["ok.jpg", "ok2.jpg"]
    row[column] = bad
    csv = tmp_path / "p.csv"
    csv.write_text(f"path_a,path_b,same\nq.jpg,r.jpg,0\n{row[0]},{row[1]},1\n",
                   encoding="utf-8")
    with pytest.raises(FacebenchError, match=f"p.csv line 3: .*{why}") as err:
        csv_pairs(csv, tmp_path)
    assert "\n" not in str(err.value)


def test_csv_accepts_relative_paths_that_stay_inside(tmp_path):
    csv = tmp_path / "p.csv"
    csv.write_text("path_a,path_b,same\na/../b.jpg,./c.jpg,1\n..d.jpg,e/f..jpg,0\n",
                   encoding="utf-8")
    pl = csv_pairs(csv, tmp_path / "img")
    assert pl.paths_a == ["a/../b.jpg", "..d.jpg"]
    assert pl.resolve("..d.jpg") == tmp_path / "img" / "..d.jpg"


def test_pairlist_resolve_refuses_absolute_and_escaping_paths(tmp_path):
    pl = PairList(["x.jpg"], ["y.jpg"], [True], [0], root=tmp_path, name="pairs/p")
    assert pl.resolve("sub/x.jpg") == tmp_path / "sub" / "x.jpg"
    for bad in ("/abs/x.jpg", "../x.jpg"):
        with pytest.raises(FacebenchError, match="image root"):
            pl.resolve(bad)


def test_load_aligned_refuses_paths_outside_its_root(tmp_path):
    write_jpeg(tmp_path / "outside.jpg")
    (tmp_path / "img").mkdir()
    for bad in ("../outside.jpg", str(tmp_path / "outside.jpg")):
        with pytest.raises(FacebenchError, match="image root"):
            load([bad], tmp_path / "img", tmp_path / "crops")


# ---------------------------------------------------------------- 4. huge and broken images

@pytest.mark.parametrize("width, height", [(8000, 8000), (10000, 10000), (20000, 20000)])
def test_huge_image_is_refused_before_decoding(tmp_path, width, height):
    # 64 MP: above facebench's limit; 100 MP: PIL warns; 400 MP: PIL raises its bomb error
    path = png_header(tmp_path / "bomb.png", width, height)
    assert path.stat().st_size < 1000
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with pytest.raises(FacebenchError, match=r"bomb.png .*above facebench's limit of "
                                                 r"50 MP; downscale it") as err:
            images.load_image(path)
    msg = str(err.value)
    assert "\n" not in msg and f"{width * height // 10**6} MP" in msg
    if width * height <= 2 * Image.MAX_IMAGE_PIXELS:  # PIL let us read the header
        assert f"{width}x{height} pixels" in msg


def test_huge_file_is_refused_before_opening(tmp_path, monkeypatch):
    path = tmp_path / "big.jpg"
    write_jpeg(path)
    os.truncate(path, 100 * 10**6 + 1)  # sparse: nothing written
    monkeypatch.setattr(images.Image, "open", lambda *a, **k: pytest.fail("opened"))
    with pytest.raises(FacebenchError, match=r"big.jpg is 100 MB on disk, above "
                                             r"facebench's limit of 100 MB"):
        images.load_image(path)


@pytest.mark.parametrize("kind, words", [
    ("missing", "not found"), ("empty", "empty"), ("corrupt", "cannot decode")])
def test_bad_image_is_one_line_naming_the_path_as_written(tmp_path, kind, words):
    root = tmp_path / "img"
    good = write_jpeg(root / "sub" / "good.jpg")
    bad = root / "sub" / f"{kind}.jpg"
    if kind == "empty":
        bad.write_bytes(b"")
    elif kind == "corrupt":
        bad.write_bytes(good.read_bytes()[:300])
    with pytest.raises(FacebenchError, match=words) as err:
        images.load_image(bad)
    assert "\n" not in str(err.value) and str(bad) in str(err.value)
    rel = f"sub/{kind}.jpg"
    with pytest.raises(FacebenchError) as err:
        load(["sub/good.jpg", rel], root, tmp_path / "crops")
    msg = str(err.value)
    assert "\n" not in msg and words in msg
    assert f" {rel} (in image root {root})" in msg and str(bad) not in msg
