"""Data-home resolution, sha256-pinned downloads (pooch) and a safe tar extractor.

Dataset plugins name their files as :class:`RemoteFile` and fetch them with
:func:`fetch_file`; archives are unpacked with :func:`safe_extract`, which refuses members
that would land outside the target.
"""
from __future__ import annotations

import os
import shutil
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath


from ..errors import FacebenchError

ENV_VAR = "FACEBENCH_DATA"


@dataclass(frozen=True)
class RemoteFile:
    """A file we may download, pinned by its sha256."""

    filename: str
    url: str
    sha256: str


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


def fetch_file(remote: RemoteFile, directory, label: str = "file", hint: str = "") -> Path:
    """Download ``remote`` into ``directory`` with pooch, refusing a wrong sha256.

    A network failure names ``label`` (e.g. "LFW file") and ends with ``hint``: what the
    user can do offline."""
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
            f"{label} {remote.filename} is missing under {directory} and downloading it "
            f"from {remote.url} failed ({type(err).__name__})" + (f"; {hint}" if hint else "")
        ) from None
    return Path(got)


def make_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise FacebenchError(f"cannot create data folder {path}: {err.strerror or err}") from None


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
