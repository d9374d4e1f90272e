"""Download raw dataset files into a cache directory, with checksum verification.

A file is downloaded to a temporary name next to its destination and renamed into place
only once complete and verified, so an interrupted download never leaves a file that looks
finished. A file already in the cache is reused when its checksum is right.

Checksums: where the publisher's checksum is known (GroupLens publishes the md5 of its
MovieLens zips) it is passed in and checked. For the other files (Amazon review dumps) no
published checksum exists, so the sha256 is recorded on first download in a sidecar
``<file>.sha256`` and every later use is verified against it (trust on first use): a file
that changes afterwards, locally or upstream, is reported instead of being used silently.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import urllib.error
import urllib.request
from pathlib import Path

from bench.errors import UserError

TIMEOUT_S = 60


class DownloadError(UserError):
    """The file could not be fetched (no network, HTTP error, incomplete transfer)."""

    def __init__(self, url: str, reason: str, dest_dir: Path):
        super().__init__(f"cannot download {url} ({reason}); put the files in {dest_dir} or pass --data-dir")
        self.url = url
        self.reason = reason


def file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of a file's bytes (``"sha256"`` or ``"md5"``)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _expected(path: Path, sha256: str | None, md5: str | None) -> list[tuple[str, str]]:
    """The (algorithm, digest) pairs ``path`` must match: given checksums, else the recorded sha256."""
    expected = [(name, value.lower()) for name, value in (("sha256", sha256), ("md5", md5)) if value]
    if not expected and _sidecar(path).is_file():
        expected.append(("sha256", _sidecar(path).read_text().strip()))
    return expected


def _mismatch(file: Path, name: str, expected: list[tuple[str, str]]) -> str | None:
    """A description of the first checksum ``file`` fails, or None when all match."""
    for algorithm, value in expected:
        got = file_digest(file, algorithm)
        if got != value:
            return f"{name}: checksum mismatch (expected {algorithm} {value}, got {got})"
    return None


def fetch(
    url: str, dest_dir: Path, sha256: str | None = None, md5: str | None = None, allow_download: bool = True
) -> Path:
    """Return ``dest_dir/<file name of url>``, downloading it unless a verified copy is there.

    A cached copy that fails its checksum is downloaded again; a download that fails it is
    a ``UserError`` naming the file and both checksums. Without network, or when a download
    is needed but ``allow_download`` is False: ``DownloadError``.
    """
    dest_dir = Path(dest_dir)
    path = dest_dir / url.rstrip("/").rsplit("/", 1)[-1]
    expected = _expected(path, sha256, md5)
    if path.is_file() and _mismatch(path, path.name, expected) is None:
        if not expected:  # placed here by hand: its first use records it
            _sidecar(path).write_text(file_digest(path, "sha256") + "\n")
        return path
    if not allow_download:
        raise DownloadError(url, "downloading is off and no verified copy is cached", dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    print(f"downloading {url} -> {path}", file=sys.stderr)
    try:
        _download(url, tmp)
        problem = _mismatch(tmp, path.name, expected)
        if problem:
            raise UserError(
                f"{problem}; the download from {url} is corrupt or changed upstream"
                + (f" (delete {_sidecar(path)} if you trust the new file)" if not (sha256 or md5) else "")
            )
        os.replace(tmp, path)
        if not expected:
            _sidecar(path).write_text(file_digest(path, "sha256") + "\n")
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _download(url: str, target: Path) -> None:
    """Stream ``url`` into ``target``; any network failure is a DownloadError."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response, open(target, "wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)
            length = response.headers.get("Content-Length")
    except urllib.error.HTTPError as exc:
        raise DownloadError(url, f"HTTP {exc.code} {exc.reason}", target.parent) from None
    except urllib.error.URLError as exc:
        raise DownloadError(url, str(exc.reason), target.parent) from None
    except (OSError, TimeoutError) as exc:
        raise DownloadError(url, str(exc) or exc.__class__.__name__, target.parent) from None
    if length is not None and target.stat().st_size != int(length):
        raise DownloadError(url, f"incomplete: got {target.stat().st_size} of {length} bytes", target.parent)
