"""A downloaded model staged for the cache: the file as it came, or a package (a zipped folder, as
the SDK uploads one) extracted with its paths confined to the entry.
"""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path, PurePosixPath

import structlog

from agent.pipeline.models.records import ModelError, ModelSource, file_name_of

log = structlog.get_logger()

CONTENT = "content"  # in a cache entry: the file, or the extracted package
DOWNLOAD = "download"  # in a staging dir: the file as it came


def stage_content(stage: Path, source: ModelSource) -> str:
    """Move the download into ``stage/content`` (extracting a package); the file's name."""
    download = stage / DOWNLOAD
    if not source.package:
        name = file_name_of(source.uri)
        download.rename(stage / CONTENT / name)
        return name
    if zipfile.is_zipfile(download):
        _extract_zip(download, stage / CONTENT)
    elif tarfile.is_tarfile(download):
        _extract_tar(download, stage / CONTENT)
    else:
        raise ModelError("the model is tagged as a package but is not a zip or tar archive")
    download.unlink()
    return ""


def _extract_zip(archive: Path, dest: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        for member in zf.namelist():
            parts = PurePosixPath(member.replace("\\", "/")).parts
            if member.startswith(("/", "\\")) or ".." in parts or ":" in member:
                raise ModelError(f"unsafe path in the package: {member!r:.120}")
        zf.extractall(dest)


def _extract_tar(archive: Path, dest: Path) -> None:
    if not hasattr(tarfile, "data_filter"):
        raise ModelError("extracting a tar package safely needs Python >= 3.11.4")
    try:
        with tarfile.open(archive) as tf:
            tf.extractall(dest, filter="data")
    except tarfile.FilterError as exc:
        raise ModelError(f"unsafe member in the package: {exc}") from exc
    except tarfile.TarError as exc:
        raise ModelError(f"the package cannot be extracted: {exc}") from exc
