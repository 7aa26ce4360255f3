"""Filesystem locations, anchored at the repository root, and the offline switch.

papermill and nbval start kernels inside ``notebooks/`` (or ``build/``), so nothing
here depends on the current working directory. Each location can be redirected
with an environment variable (a relative value is taken from the repository root);
the test harness uses this to keep its data, results and figures out of the user's
folders.
"""

from __future__ import annotations

import errno
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO_ROOT: Path = Path(__file__).resolve().parents[__name__.count(".")]
"""The folder that holds the package (the checkout): found from this module's dotted name, so it does not
depend on where in the package tree this module sits."""


def _env_path(variable: str, default: Path) -> Path:
    """``$variable`` as an absolute path; a relative one is taken from the repository root, not the working
    directory, which differs between a shell (anywhere) and a notebook kernel (``notebooks/``)."""
    value = os.environ.get(variable)
    return (REPO_ROOT / Path(value).expanduser()).resolve() if value else default


def data_root() -> Path:
    """Where datasets are read from and downloaded to (``$ALVAE_DATA_ROOT``, default ``data/``)."""
    return _env_path("ALVAE_DATA_ROOT", REPO_ROOT / "data")


def results_root() -> Path:
    """Where AL results and cached VAEs go (``$ALVAE_RESULTS_ROOT``, default ``results/``)."""
    return _env_path("ALVAE_RESULTS_ROOT", REPO_ROOT / "results")


def figures_dir() -> Path:
    """Where figures are written (``$ALVAE_FIGURES_DIR``, default ``build/figures/``).

    The default keeps interactive runs away from the committed gallery
    (:func:`gallery_dir`), which only ``make figures`` rewrites.
    """
    return _env_path("ALVAE_FIGURES_DIR", REPO_ROOT / "build" / "figures")


def gallery_dir() -> Path:
    """The committed figures shown in the README (``figures/``), written by ``make figures``."""
    return REPO_ROOT / "figures"


def build_dir() -> Path:
    """Executed notebooks and other build products (``build/``)."""
    return REPO_ROOT / "build"


def offline() -> bool:
    """True when ``$ALVAE_OFFLINE`` is ``1``/``true``/``yes``: never try to download anything."""
    return os.environ.get("ALVAE_OFFLINE", "").strip().lower() in {"1", "true", "yes"}


class NoSpaceLeft(OSError):
    """A file could not be written because its device is full (or a quota is reached); names the file."""


_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))  # disk full, quota reached (no EDQUOT on Windows)
_TORCH_CUT_SHORT = ("unexpected pos", "file write failed")
"""How ``torch.save`` reports a write the device cut short: a RuntimeError from its zip writer (``[enforce fail
at inline_container.cc] . unexpected pos 384256 vs 384152``, ``PytorchStreamWriter failed writing file …: file
write failed``), not an OSError (pytorch/pytorch#156955)."""


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write; on success it replaces ``path`` atomically.

    Readers see the old file or the new one, never half of one; a failed write
    leaves nothing behind. The temporary name keeps the suffix (``np.savez``
    would otherwise append one) and is not made by ``mkstemp``, whose 0600 mode
    would survive the rename. Every file alvae stores is written here, so a full disk
    is reported in one place: :class:`NoSpaceLeft`, naming ``path``, whether the write
    failed with ENOSPC/EDQUOT or ``torch.save``'s own error for a write cut short.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:12]}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as error:
        if error.errno in _FULL and not isinstance(error, NoSpaceLeft):
            raise _no_space(path, error) from error
        raise
    except RuntimeError as error:
        if any(text in str(error) for text in _TORCH_CUT_SHORT):
            raise _no_space(path, error) from error
        raise
    finally:
        tmp.unlink(missing_ok=True)


def _no_space(path: Path, error: Exception) -> NoSpaceLeft:
    reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error).splitlines()[0]
    return NoSpaceLeft(errno.ENOSPC, f"no space left on device while writing {path} ({reason}); the file was not "
                                     "changed. Free space there (or point $ALVAE_RESULTS_ROOT or $ALVAE_FIGURES_DIR "
                                     "at storage with room) and rerun: completed steps stay stored", str(path))


def unwritable(folder: Path) -> OSError | None:
    """Why no file can be written in ``folder`` (created if missing), or None when one can: checked with a
    probe file, written and removed as every stored file is (:func:`atomic_path`). NoSpaceLeft propagates."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / ".alvae-writable") as probe:
            probe.touch()
        (folder / ".alvae-writable").unlink()
    except NoSpaceLeft:
        raise
    except OSError as error:
        return error
    return None
