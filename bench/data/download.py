"""Find or fetch LFW: data-home resolution, checksummed downloads and a safe tar extractor.

The files, URLs and sha256 sums are the ones scikit-learn's ``fetch_lfw_pairs`` uses, so an
existing scikit-learn cache (``~/scikit_learn_data/lfw_home``) can be pointed at directly.
"""
from __future__ import annotations

import os
import shutil
import stat
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath


from ..errors import FacebenchError
from .lfw import IMAGE_DIR, check_protocol, lfw_home_dir

ENV_VAR = "FACEBENCH_DATA"
SEED_HINT = (
    "copy an existing scikit-learn LFW cache (lfw_home/) there or set "
    f"{ENV_VAR} / --data-home to a folder that has one"
)


@dataclass(frozen=True)
class RemoteFile:
    """A file we may download, pinned by its sha256."""

    filename: str
    url: str
    sha256: str


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

# pooch downloader override (``None``: pooch picks HTTP); tests serve local files through it.
DOWNLOADER = None


def resolve_data_home(cli_value=None) -> Path:
    """``--data-home`` beats ``$FACEBENCH_DATA`` beats the per-user cache folder."""
    if cli_value:
        return Path(cli_value).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    from ..paths import data_root

    return data_root()


def fetch_file(remote: RemoteFile, directory) -> Path:
    """Download ``remote`` into ``directory`` with pooch, refusing a wrong sha256."""
    import pooch  # imported lazily: most runs never download

    directory = Path(directory)
    try:
        got = pooch.retrieve(
            url=remote.url,
            known_hash=f"sha256:{remote.sha256}",
            fname=remote.filename,
            path=directory,
            progressbar=True,
            downloader=DOWNLOADER,
        )
    except ValueError as err:  # pooch reports a hash mismatch as ValueError
        detail = str(err).strip().split(". ")[0] or "checksum mismatch"
        raise FacebenchError(
            f"downloaded {remote.filename} from {remote.url} failed its sha256 check "
            f"({detail}); not using it"
        ) from None
    except OSError as err:  # requests' network errors are OSErrors too
        raise FacebenchError(
            f"LFW file {remote.filename} is missing under {directory} and downloading it "
            f"from {remote.url} failed ({type(err).__name__}); {SEED_HINT}"
        ) from None
    return Path(got)


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
        _make_dir(home)
        fetch_file(PAIRS_FILES[fname], home)
    if not (home / IMAGE_DIR).is_dir():
        if not download:
            raise _missing(f"{IMAGE_DIR}/ (the image folder)", home)
        _make_dir(home)
        archive = fetch_file(LFW_ARCHIVE, home)
        _unpack_images(archive, home)
        archive.unlink()
    return home


def _make_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise FacebenchError(f"cannot create data folder {path}: {err.strerror or err}") from None


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


def _is_absolute(name: str) -> bool:
    return (
        PurePosixPath(name).is_absolute()
        or PureWindowsPath(name).is_absolute()
        or bool(PureWindowsPath(name).drive)
        or name.startswith(("/", "\\"))
    )


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _check_member(member: tarfile.TarInfo, root: Path) -> Path | None:
    """Where ``member`` may be written under ``root`` (None: the root itself); unsafe -> error."""
    name = member.name

    def refuse(why: str) -> FacebenchError:
        return FacebenchError(f"refusing to extract archive member {name!r}: {why}")

    if not name or _is_absolute(name):
        raise refuse("absolute path")
    if member.ischr() or member.isblk() or member.isfifo() or member.isdev():
        raise refuse("device or special file")
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        raise refuse("unsupported member type")
    pure = PurePosixPath(name)
    # resolve() follows links already written, so a chain of links cannot escape either
    parent = (root / pure.parent).resolve()
    if pure.name in ("", ".", ".."):  # "./", "a/..": only harmless as the root folder
        if member.isdir() and (root / pure).resolve() == root:
            return None
        raise refuse("path escapes the target folder")
    dest = parent / pure.name
    if not _inside(parent, root):
        raise refuse("path escapes the target folder")
    if member.issym() or member.islnk():
        link = member.linkname
        if not link or _is_absolute(link):
            raise refuse(f"link to absolute path {link!r}")
        base = parent if member.issym() else root
        if not _inside((base / link).resolve(), root):
            raise refuse(f"link target {link!r} escapes the target folder")
    return dest


def safe_extract(archive, target) -> None:
    """Extract a tar archive into ``target``, refusing escapes, absolute paths and devices.

    Written out member by member (no ``extractall``): regular files get mode 0644, folders
    0755, links must stay inside ``target`` (re-checked once all are written, since a later
    link can change where an earlier one points); the first unsafe member raises
    :class:`FacebenchError` naming it.
    """
    root = Path(target).resolve()
    root.mkdir(parents=True, exist_ok=True)
    try:
        tar = tarfile.open(archive, "r:*")
    except (OSError, tarfile.TarError) as err:
        raise FacebenchError(f"cannot open archive {archive}: {err}") from None
    links: list[tuple[str, Path]] = []
    with tar:
        try:
            for member in tar:
                dest = _extract_member(tar, member, root)
                if member.issym():
                    links.append((member.name, dest))
        except tarfile.TarError as err:
            raise FacebenchError(f"archive {archive} is corrupt: {err}") from None
    for name, dest in links:
        if not _inside(dest.resolve(), root):
            dest.unlink()
            raise FacebenchError(
                f"refusing to extract archive member {name!r}: link escapes the target folder"
            )


def _extract_member(tar: tarfile.TarFile, member: tarfile.TarInfo, root: Path) -> Path | None:
    dest = _check_member(member, root)
    if dest is None:
        return None
    if member.isdir():
        dest.mkdir(parents=True, exist_ok=True)
        os.chmod(dest, 0o755)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_symlink() or dest.exists():
        if dest.is_dir() and not dest.is_symlink():
            raise FacebenchError(
                f"refusing to extract archive member {member.name!r}: a folder is in the way"
            )
        dest.unlink()
    if member.issym():
        os.symlink(member.linkname, dest)
        return dest
    if member.islnk():
        source = (root / member.linkname).resolve()
        if not source.is_file():
            raise FacebenchError(
                f"refusing to extract archive member {member.name!r}: hard link target "
                f"{member.linkname!r} is not an extracted file"
            )
        shutil.copyfile(source, dest)
    else:
        stream = tar.extractfile(member)
        with stream, open(dest, "xb") as out:
            shutil.copyfileobj(stream, out)
    os.chmod(dest, stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IROTH)
    return dest
