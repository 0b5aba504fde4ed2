"""Tests for facebench.data: parsers, subsets, safe downloads/extraction, caches, and real LFW."""
from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import facebench.data as data
from facebench.data import download, images
from facebench.data.align import FixedCrop, ResizeOnly, get_aligner
from facebench.datasets.lfw import download as lfw_download
from facebench.datasets.lfw import (lfw_home_dir, lfw_pairs, lfw_people, parse_pairs_file,
                                    training_split)
from facebench.registry import ALIGNERS
from facebench.data.pairs import PairList
from facebench.data.pairs_csv import csv_pairs
from facebench.errors import FacebenchError



# ---------------------------------------------------------------- helpers

def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def write_jpeg(path: Path, size=(250, 250), seed=0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path, "JPEG")
    return path


TEN_FOLD = (
    "2\t2\n"
    "Al\t1\t2\nBo\t1\t3\n"
    "Al\t1\tBo\t2\nCy\t1\tDi\t1\n"
    "Cy\t1\t2\nDi\t2\t3\n"
    "Al\t2\tCy\t2\nBo\t1\tDi\t3\n"
)
DEV = "2\nAl\t1\t2\nBo\t1\t3\nAl\t1\tBo\t2\nCy\t1\tDi\t1\n"


def toy_pairs(n_same=40, n_diff=40, folds=4) -> PairList:
    n = n_same + n_diff
    return PairList(
        paths_a=[f"a{i}.jpg" for i in range(n)],
        paths_b=[f"b{i}.jpg" for i in range(n)],
        same=np.array([True] * n_same + [False] * n_diff),
        fold=np.arange(n) % folds,
        root=Path("."),
        name="toy",
    )


# ---------------------------------------------------------------- LFW parsing

def test_parse_ten_fold_and_dev_files(tmp_path):
    write(tmp_path / "pairs.txt", TEN_FOLD)
    write(tmp_path / "pairsDevTest.txt", DEV)
    pl = lfw_pairs(tmp_path, "10-fold")
    assert len(pl) == 8 and pl.name == "lfw/10-fold"
    assert pl.same.tolist() == [True, True, False, False] * 2
    assert pl.fold.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert pl.paths_a[0] == "lfw/Al/Al_0001.jpg" and pl.paths_b[0] == "lfw/Al/Al_0002.jpg"
    assert pl.paths_a[2] == "lfw/Al/Al_0001.jpg" and pl.paths_b[2] == "lfw/Bo/Bo_0002.jpg"
    dev = lfw_pairs(tmp_path, "dev-test")
    assert len(dev) == 4 and set(dev.fold.tolist()) == {0}
    assert dev.root == tmp_path


@pytest.mark.parametrize(
    "text, line, words",
    [
        ("2\nAl\t1\t2\nBo\t1\nAl\t1\tBo\t2\nCy\t1\tDi\t1\n", 3, "same-person"),
        ("2\nAl\t1\t2\nBo\t1\t3\nAl\t1\tBo\nCy\t1\tDi\t1\n", 4, "different-person"),
        ("2\nAl\t1\t2\nBo\tx\t3\nAl\t1\tBo\t2\nCy\t1\tDi\t1\n", 3, "positive integer"),
        ("2\nAl\t1\t2\nBo\t0\t3\nAl\t1\tBo\t2\nCy\t1\tDi\t1\n", 3, "positive integer"),
        ("two\nAl\t1\t2\n", 1, "header count"),
        ("1 2 3\nAl\t1\t2\n", 1, "header"),
    ],
)
def test_malformed_pairs_line_is_named(tmp_path, text, line, words):
    path = write(tmp_path / "pairsDevTest.txt", text)
    with pytest.raises(FacebenchError, match=rf"pairsDevTest.txt line {line}: .*{words}") as err:
        parse_pairs_file(path)
    assert "\n" not in str(err.value)


def test_pairs_count_mismatch_and_empty(tmp_path):
    with pytest.raises(FacebenchError, match="promises 4 pairs .* 3 lines"):
        parse_pairs_file(write(tmp_path / "pairs.txt", DEV.rsplit("Cy", 1)[0]))
    with pytest.raises(FacebenchError, match="empty"):
        parse_pairs_file(write(tmp_path / "p2.txt", "\n\n"))
    with pytest.raises(FacebenchError, match="not found"):
        parse_pairs_file(tmp_path / "nope.txt")


def test_unknown_protocol_and_dataset(tmp_path):
    with pytest.raises(FacebenchError, match="10-fold, dev-train, dev-test"):
        data.load_pairs("lfw", "view3", tmp_path)
    with pytest.raises(FacebenchError, match="choose from: lfw, lfw-sample, pairs"):
        data.load_pairs("celeba", "10-fold", tmp_path)
    with pytest.raises(FacebenchError, match="pairs file"):
        data.load_pairs("pairs", "10-fold", tmp_path)


def test_lfw_home_dir_accepts_parent_or_itself(tmp_path):
    (tmp_path / "lfw_home" / "lfw").mkdir(parents=True)
    assert lfw_home_dir(tmp_path) == tmp_path / "lfw_home"
    assert lfw_home_dir(tmp_path / "lfw_home") == tmp_path / "lfw_home"
    renamed = tmp_path / "mylfw"
    write(renamed / "pairs.txt", TEN_FOLD)
    assert lfw_home_dir(renamed) == renamed
    assert lfw_home_dir(tmp_path / "empty") == tmp_path / "empty" / "lfw_home"


def test_lfw_people_and_training_split(tmp_path):
    write(tmp_path / "pairsDevTest.txt", DEV)
    for name, count in [("Al", 2), ("Bo", 3), ("Cy", 1), ("Di", 1), ("Ed", 2), ("Fa", 1)]:
        for k in range(1, count + 1):
            write(tmp_path / "lfw" / name / f"{name}_{k:04d}.jpg", "x")
    people = lfw_people(tmp_path)
    assert people["Bo"] == [f"lfw/Bo/Bo_000{k}.jpg" for k in (1, 2, 3)]
    assert training_split(tmp_path, "dev-test") == [
        "lfw/Ed/Ed_0001.jpg", "lfw/Ed/Ed_0002.jpg", "lfw/Fa/Fa_0001.jpg"]


# ---------------------------------------------------------------- PairList

def test_subset_is_seeded_balanced_and_fold_spread():
    pl = toy_pairs()
    a, b = pl.subset(20, seed=3), pl.subset(20, seed=3)
    assert a.paths_a == b.paths_a
    assert pl.subset(20, seed=4).paths_a != a.paths_a
    assert len(a) == 20 and a.same.sum() == 10
    assert np.bincount(a.fold, minlength=4).tolist() == [5, 5, 5, 5]
    # kept fold labels and original order
    idx = [int(p[1:-4]) for p in a.paths_a]
    assert idx == sorted(idx) and a.fold.tolist() == [i % 4 for i in idx]
    odd = pl.subset(7, seed=0)
    assert len(odd) == 7 and odd.same.sum() == 3
    assert len(pl.subset(1000)) == len(pl)
    with pytest.raises(FacebenchError, match="at least 2"):
        pl.subset(1)


def test_subset_fills_when_one_class_is_short():
    pl = toy_pairs(n_same=3, n_diff=30)
    s = pl.subset(10, seed=0)
    assert len(s) == 10 and s.same.sum() == 3


def test_unique_paths_and_length_check():
    pl = PairList(["x", "y", "x"], ["y", "z", "w"], [1, 0, 1], [0, 0, 0], Path("."), "t")
    assert pl.unique_paths() == ["x", "y", "z", "w"]
    with pytest.raises(ValueError):
        PairList(["x"], [], [1], [0], Path("."), "bad")


# ---------------------------------------------------------------- safe extraction

def make_tar(path: Path, members) -> Path:
    """members: list of (TarInfo-kwargs dict, bytes or None)."""
    with tarfile.open(path, "w:gz") as tar:
        for info_kw, payload in members:
            info = tarfile.TarInfo(info_kw.pop("name"))
            for k, v in info_kw.items():
                setattr(info, k, v)
            if payload is not None:
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
            else:
                tar.addfile(info)
    return path


def test_safe_extract_good_archive(tmp_path):
    arc = make_tar(tmp_path / "ok.tgz", [
        ({"name": "lfw", "type": tarfile.DIRTYPE}, None),
        ({"name": "lfw/A/A_0001.jpg"}, b"jpeg"),
        ({"name": "lfw/link", "type": tarfile.SYMTYPE, "linkname": "A/A_0001.jpg"}, None),
        ({"name": "lfw/hard", "type": tarfile.LNKTYPE, "linkname": "lfw/A/A_0001.jpg"}, None),
    ])
    out = tmp_path / "out"
    download.safe_extract(arc, out)
    assert (out / "lfw/A/A_0001.jpg").read_bytes() == b"jpeg"
    assert (out / "lfw/link").read_bytes() == b"jpeg" and (out / "lfw/hard").read_bytes() == b"jpeg"


@pytest.mark.parametrize(
    "members, bad",
    [
        ([({"name": "../evil"}, b"x")], "../evil"),
        ([({"name": "a/../../evil"}, b"x")], "a/../../evil"),
        ([({"name": "/evil-abs"}, b"x")], "/evil-abs"),
        ([({"name": "esc", "type": tarfile.SYMTYPE, "linkname": "../../outside"}, None)], "esc"),
        ([({"name": "abs", "type": tarfile.SYMTYPE, "linkname": "/etc/passwd"}, None)], "abs"),
        ([({"name": "hl", "type": tarfile.LNKTYPE, "linkname": "../x"}, None)], "hl"),
        ([({"name": "dev", "type": tarfile.CHRTYPE}, None)], "dev"),
        ([({"name": "d", "type": tarfile.SYMTYPE, "linkname": ".."}, None),
          ({"name": "d/evil"}, b"x")], "d"),
        # a link that is harmless when written but escapes once a later link lands
        ([({"name": "l", "type": tarfile.SYMTYPE, "linkname": "d/.."}, None),
          ({"name": "d", "type": tarfile.SYMTYPE, "linkname": "."}, None)], "l"),
    ],
)
def test_safe_extract_refuses(tmp_path, members, bad):
    arc = make_tar(tmp_path / "bad.tgz", members)
    target = tmp_path / "deep" / "out"
    with pytest.raises(FacebenchError, match="refusing to extract archive member") as err:
        download.safe_extract(arc, target)
    assert repr(bad) in str(err.value)
    assert not (tmp_path / "deep" / "evil").exists() and not (tmp_path / "evil").exists()


# ---------------------------------------------------------------- downloads (offline)

def tiny_lfw_tgz(path: Path) -> Path:
    src = path.parent / "tgz-src"
    write_jpeg(src / "lfw" / "Al" / "Al_0001.jpg")
    with tarfile.open(path, "w:gz") as tar:
        tar.add(src / "lfw", arcname="lfw")
    shutil.rmtree(src)
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def local_server(monkeypatch):
    """Serve RemoteFiles from local paths: url 'local://<path>' copies that file."""
    served = []

    def downloader(url, output_file, pooch_obj):
        served.append(url)
        src = Path(url[len("local://"):])
        with open(src, "rb") as f, open(output_file, "wb") as out:
            shutil.copyfileobj(f, out)

    monkeypatch.setattr(download, "DOWNLOADER", downloader)
    return served


def serve(monkeypatch, src: Path, filename: str, digest: str | None = None):
    remote = download.RemoteFile(filename, f"local://{src}", digest or sha256(src))
    if filename == "lfw.tgz":
        monkeypatch.setattr(lfw_download, "LFW_ARCHIVE", remote)
    else:
        monkeypatch.setitem(lfw_download.PAIRS_FILES, filename, remote)


def test_ensure_lfw_downloads_and_extracts(tmp_path, monkeypatch, local_server):
    pairs = write(tmp_path / "src" / "pairsDevTest.txt", DEV)
    tgz = tiny_lfw_tgz(tmp_path / "src" / "lfw.tgz")
    serve(monkeypatch, pairs, "pairsDevTest.txt")
    serve(monkeypatch, tgz, "lfw.tgz")
    home = lfw_download.ensure_lfw(tmp_path / "data", "dev-test")
    assert home == tmp_path / "data" / "lfw_home"
    assert (home / "pairsDevTest.txt").read_text() == DEV
    assert (home / "lfw" / "Al" / "Al_0001.jpg").is_file()
    assert not (home / "lfw.tgz").exists()
    assert not [p for p in home.iterdir() if p.name.startswith(".lfw-extract")]
    assert len(local_server) == 2
    lfw_download.ensure_lfw(tmp_path / "data", "dev-test")  # present now: no new fetch
    assert len(local_server) == 2


def test_sha256_mismatch_is_rejected(tmp_path, monkeypatch, local_server):
    pairs = write(tmp_path / "src" / "pairs.txt", TEN_FOLD)
    serve(monkeypatch, pairs, "pairs.txt", digest="0" * 64)
    with pytest.raises(FacebenchError, match="sha256") as err:
        lfw_download.ensure_lfw(tmp_path / "data", "10-fold")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "data" / "lfw_home" / "pairs.txt").exists()


def test_offline_error_names_file_and_fix(tmp_path, monkeypatch):
    import requests

    def offline(url, output_file, pooch_obj):
        raise requests.exceptions.ConnectionError("no network")

    monkeypatch.setattr(download, "DOWNLOADER", offline)
    with pytest.raises(FacebenchError) as err:
        lfw_download.ensure_lfw(tmp_path, "dev-train")
    msg = str(err.value)
    assert "pairsDevTrain.txt" in msg and str(tmp_path / "lfw_home") in msg
    assert "FACEBENCH_DATA" in msg and "--data-home" in msg and "\n" not in msg


def test_download_disabled_names_missing_images(tmp_path):
    write(tmp_path / "lfw_home" / "pairs.txt", TEN_FOLD)
    with pytest.raises(FacebenchError, match=r"lfw/ .* missing under .*lfw_home.*FACEBENCH_DATA"):
        data.load_pairs("lfw", "10-fold", tmp_path, download=False)
    with pytest.raises(FacebenchError, match="pairsDevTest.txt is missing"):
        lfw_download.ensure_lfw(tmp_path, "dev-test", download=False)


def test_resolve_data_home_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEBENCH_DATA", str(tmp_path / "env"))
    assert download.resolve_data_home(tmp_path / "cli") == tmp_path / "cli"
    assert download.resolve_data_home() == tmp_path / "env"
    monkeypatch.delenv("FACEBENCH_DATA")
    monkeypatch.setenv("FACEBENCH_CACHE", str(tmp_path / "cache"))
    assert download.resolve_data_home() == tmp_path / "cache" / "data"
    monkeypatch.delenv("FACEBENCH_CACHE")
    default = download.resolve_data_home()
    assert default.name == "data" and "facebench" in str(default)


# ---------------------------------------------------------------- CSV dataset

def test_csv_pairs_parsing(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text("\ufeffpath_a,path_b,same,note\nx.jpg,y.jpg,1,a\n\nx.jpg,z.jpg,FALSE,\n"
                    "sub/q.jpg,y.jpg,true,\nz.jpg,y.jpg,0,\n", encoding="utf-8")
    pl = csv_pairs(path, tmp_path / "imgs")
    assert pl.same.tolist() == [True, False, True, False]
    assert pl.fold.tolist() == [0, 0, 0, 0] and pl.name == "pairs/mine"
    assert pl.resolve("x.jpg") == tmp_path / "imgs" / "x.jpg"
    assert pl.resolve("sub/q.jpg") == tmp_path / "imgs" / "sub" / "q.jpg"
    with pytest.raises(FacebenchError, match="is absolute"):
        pl.resolve("/abs/q.jpg")
    assert csv_pairs(path).root == tmp_path


@pytest.mark.parametrize(
    "text, match",
    [
        ("path_a,same\nx,1\n", "line 1: header lacks column.*path_b"),
        ("path_a,path_b,same\nx,y,1\nx,y,maybe\n", "line 3: 'same' must be"),
        ("path_a,path_b,same\nx,y\n", "line 2: expected 3 fields"),
        ("path_a,path_b,same\nx,,1\n", "line 2: empty image path"),
        ("", "is empty"),
        ("path_a,path_b,same\n", "no pairs"),
    ],
)
def test_csv_pairs_malformed(tmp_path, text, match):
    path = write(tmp_path / "p.csv", text)
    with pytest.raises(FacebenchError, match=match):
        csv_pairs(path, tmp_path)


# ---------------------------------------------------------------- images, aligners, cache

def test_load_image_errors_name_the_path(tmp_path):
    bad = tmp_path / "garbage.jpg"
    bad.write_bytes(b"not a jpeg at all" * 10)
    with pytest.raises(FacebenchError, match="garbage.jpg"):
        data.load_image(bad)
    good = write_jpeg(tmp_path / "good.jpg")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[:400])
    with pytest.raises(FacebenchError, match="truncated.jpg"):
        data.load_image(truncated)
    with pytest.raises(FacebenchError, match="not found.*missing.jpg"):
        data.load_image(tmp_path / "missing.jpg")
    img = data.load_image(good)
    assert img.dtype == np.uint8 and img.shape == (250, 250, 3)


def test_aligners():
    img = np.random.default_rng(0).integers(0, 256, (250, 250, 3), dtype=np.uint8)
    crop = FixedCrop((62.5, 72.25, 126.0, 126.0), (112, 96))(img)
    assert crop.dtype == np.uint8 and crop.shape == (112, 96, 3)
    exact = FixedCrop((10, 20, 30, 40), (40, 30))(img)  # same size: a plain crop
    assert np.array_equal(exact, img[20:60, 10:40])
    assert FixedCrop((0, 0, 10, 10)).key != FixedCrop((0, 0, 10, 11)).key
    assert set(ALIGNERS.names()) >= {"dlib-chip", "center", "resize"}
    assert get_aligner("dlib-chip", 150).out_size == (150, 150)
    assert ResizeOnly((64, 64))(img).shape == (64, 64, 3)

    class Rec:
        input_size, alignment = (112, 96), "center"
    assert data.aligner_for("lfw", Rec()).key == FixedCrop(data.align.CENTER_BOX, (112, 96)).key
    assert isinstance(data.aligner_for("pairs", Rec), ResizeOnly)
    with pytest.raises(FacebenchError, match="inside the 250x250"):
        FixedCrop((200, 0, 100, 100))
    with pytest.raises(FacebenchError, match="choose from"):
        get_aligner("mtcnn")
    with pytest.raises(FacebenchError, match="uint8"):
        ResizeOnly()(img.astype(np.float32))


def test_cache_hit_avoids_decoding(tmp_path, monkeypatch):
    root = tmp_path / "imgs"
    paths = [write_jpeg(root / f"{i}.jpg", size=(60, 50), seed=i).name for i in range(5)]
    calls = []
    real = images.load_image
    monkeypatch.setattr(images, "load_image", lambda p: (calls.append(p), real(p))[1])
    aligner = ResizeOnly((32, 32))
    cache = tmp_path / "cache"
    first = images.load_aligned(paths, aligner, cache, "pairs/toy", progress=False, root=root)
    assert first.shape == (5, 32, 32, 3) and first.dtype == np.uint8 and len(calls) == 5
    files = list(cache.iterdir())
    assert len(files) == 1 and files[0].suffix == ".npy"
    second = images.load_aligned(paths, aligner, cache, "pairs/toy", progress=False, root=root)
    assert len(calls) == 5 and np.array_equal(first, second)
    images.load_aligned(paths[:3], aligner, cache, "pairs/toy", progress=False, root=root)
    images.load_aligned(paths, ResizeOnly((16, 16)), cache, "pairs/toy", progress=False, root=root)
    assert len(calls) == 5 + 3 + 5 and len(list(cache.iterdir())) == 3
    files[0].write_bytes(b"half-written")  # damaged cache is rebuilt, not trusted
    again = images.load_aligned(paths, aligner, cache, "pairs/toy", progress=False, root=root)
    assert np.array_equal(again, first)


def test_pair_images_indexes_unique_crops(tmp_path):
    root = tmp_path / "imgs"
    for i, name in enumerate("xyz"):
        write_jpeg(root / f"{name}.jpg", size=(40, 40), seed=i)
    write(tmp_path / "p.csv", "path_a,path_b,same\nx.jpg,y.jpg,1\nx.jpg,z.jpg,0\nz.jpg,y.jpg,0\n")
    pl = data.load_pairs("pairs", pairs_file=tmp_path / "p.csv", image_root=root)
    aligner = get_aligner("resize", (24, 24))
    imgs, ia, ib = data.pair_images(pl, aligner, tmp_path / "cache", progress=False)
    assert imgs.shape == (3, 24, 24, 3)
    assert ia.tolist() == [0, 0, 1] and ib.tolist() == [2, 1, 2]  # order: x, z, y
    z = aligner(data.load_image(root / "z.jpg"))
    assert np.array_equal(imgs[1], z)


# ---------------------------------------------------------------- real LFW (shared data)

@pytest.fixture
def LFW_HOME(shared_data):
    return lfw_home_dir(shared_data)


@pytest.mark.lfw
def test_lfw_ten_fold_protocol(LFW_HOME):
    pl = data.load_pairs("lfw", "10-fold", LFW_HOME.parent, download=False)
    assert len(pl) == 6000
    for f in range(10):
        in_fold = pl.fold == f
        assert in_fold.sum() == 600 and pl.same[in_fold].sum() == 300


@pytest.mark.lfw
def test_lfw_dev_protocols(LFW_HOME):
    train = data.load_pairs("lfw", "dev-train", LFW_HOME, download=False)
    test = data.load_pairs("lfw", "dev-test", LFW_HOME, download=False)
    assert (len(train), int(train.same.sum())) == (2200, 1100)
    assert (len(test), int(test.same.sum())) == (1000, 500)
    assert all(test.resolve(p).is_file() for p in test.unique_paths())


@pytest.mark.lfw
def test_lfw_training_split_for_dev_test(LFW_HOME):
    split = training_split(LFW_HOME, "dev-test")
    people = {p.split("/")[1] for p in split}
    test = lfw_pairs(LFW_HOME, "dev-test")
    test_people = {p.split("/")[1] for p in test.paths_a + test.paths_b}
    assert not people & test_people
    # independent count: every person folder of lfw/ whose name is in no dev-test pair
    folders = {d.name: len(list(d.glob("*.jpg"))) for d in (LFW_HOME / "lfw").iterdir()
               if d.is_dir()}
    expected = {name: n for name, n in folders.items() if name not in test_people}
    assert len(folders) == 5749  # LFW's published person count
    assert (len(people), len(split)) == (len(expected), sum(expected.values())) == (4786, 10492)


@pytest.mark.lfw
def test_lfw_aligned_crops(tmp_path, LFW_HOME):
    from PIL import Image

    pl = data.load_pairs("lfw", "dev-test", LFW_HOME, download=False).subset(10, seed=0)
    aligner = get_aligner("dlib-chip", (112, 96))
    imgs, ia, ib = data.pair_images(pl, aligner, tmp_path, progress=False)
    assert imgs.dtype == np.uint8 and imgs.shape[1:] == (112, 96, 3)
    assert imgs.shape[0] == len(pl.unique_paths()) and len(ia) == len(ib) == 10
    assert imgs.std() > 10  # real faces, not blank
    # the crop is the documented (65, 74, 122) box of the 250x250 frame: cut it out with
    # numpy (integer box) and resize it, independently of FixedCrop's sub-pixel path
    frame = np.asarray(Image.open(pl.resolve(pl.unique_paths()[0])).convert("RGB"))
    assert frame.shape == (250, 250, 3)
    box = Image.fromarray(frame[74:74 + 122, 65:65 + 122]).resize((96, 112),
                                                                Image.Resampling.BILINEAR)
    diff = np.abs(np.asarray(box, dtype=np.int16) - imgs[0].astype(np.int16))
    assert diff.mean() < 1.0 and diff.max() <= 8
    shifted = frame[84:84 + 122, 75:75 + 122]  # a box 10 px off is clearly another crop
    off = np.asarray(Image.fromarray(shifted).resize((96, 112), Image.Resampling.BILINEAR))
    assert np.abs(off.astype(np.int16) - imgs[0].astype(np.int16)).mean() > 5
