"""Find or fetch LFW under a data home, in scikit-learn's cache layout.

The files, URLs and sha256 sums are the ones scikit-learn's ``fetch_lfw_pairs`` uses, so an
existing scikit-learn cache (``~/scikit_learn_data/lfw_home``) can be pointed at directly.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from facebench.data.download import ENV_VAR, RemoteFile, fetch_file, make_dir, safe_extract
from facebench.errors import FacebenchError

from .protocol import IMAGE_DIR, check_protocol, lfw_home_dir

SEED_HINT = (
    "copy an existing scikit-learn LFW cache (lfw_home/) there or set "
    f"{ENV_VAR} / --data-home to a folder that has one"
)

# Same mirrors and checksums as scikit-learn's sklearn/datasets/_lfw.py.
LFW_ARCHIVE = RemoteFile(
    "lfw.tgz",
    "https://ndownloader.figshare.com/files/5976018",
    "055f7d9c632d7370e6fb4afc7468d40f970c34a80d4c6f50ffec63f5a8d536c0",
)
PAIRS_FILES = {
    "pairsDevTrain.txt": RemoteFile(
        "pairsDevTrain.txt",
        "https://ndownloader.figshare.com/files/5976012",
        "1d454dada7dfeca0e7eab6f65dc4e97a6312d44cf142207be28d688be92aabfa",
    ),
    "pairsDevTest.txt": RemoteFile(
        "pairsDevTest.txt",
        "https://ndownloader.figshare.com/files/5976009",
        "7cb06600ea8b2814ac26e946201cdb304296262aad67d046a16a7ec85d0ff87c",
    ),
    "pairs.txt": RemoteFile(
        "pairs.txt",
        "https://ndownloader.figshare.com/files/5976006",
        "ea42330c62c92989f9d7c03237ed5d591365e89b3e649747777b70e692dc1592",
    ),
}


def _missing(what: str, directory: Path) -> FacebenchError:
    return FacebenchError(
        f"LFW file {what} is missing under {directory} and downloads are disabled; {SEED_HINT}"
    )


def ensure_lfw(data_home, protocol: str = "10-fold", download: bool = True) -> Path:
    """Make sure ``protocol``'s pairs file and the images exist; return ``lfw_home``."""
    fname = check_protocol(protocol)
    home = lfw_home_dir(data_home)
    if not (home / fname).is_file():
        if not download:
            raise _missing(fname, home)
        make_dir(home)
        fetch_file(PAIRS_FILES[fname], home, "LFW file", SEED_HINT)
    if not (home / IMAGE_DIR).is_dir():
        if not download:
            raise _missing(f"{IMAGE_DIR}/ (the image folder)", home)
        make_dir(home)
        archive = fetch_file(LFW_ARCHIVE, home, "LFW file", SEED_HINT)
        _unpack_images(archive, home)
        archive.unlink()
    return home


def _unpack_images(archive: Path, home: Path) -> None:
    """Extract into a scratch folder and move ``lfw/`` in last, so a crash leaves no half set."""
    scratch = Path(tempfile.mkdtemp(prefix=".lfw-extract-", dir=home))
    try:
        safe_extract(archive, scratch)
        if not (scratch / IMAGE_DIR).is_dir():
            raise FacebenchError(f"{archive.name} has no top-level {IMAGE_DIR}/ folder")
        os.replace(scratch / IMAGE_DIR, home / IMAGE_DIR)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
