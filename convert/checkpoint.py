"""The strict reader for official BiT ``.npz`` checkpoints.

An ``.npz`` is a zip of ``.npy`` members. This reader

* never unpickles: object arrays are refused from their header alone;
* reads every member's header first and checks name, shape, dtype and the
  member's byte size against the architecture, so a file that cannot fit is
  refused before gigabytes of data are read;
* then reads the data and refuses NaN and Inf;
* reports every problem at once (missing, unexpected, wrong shape, wrong
  dtype, duplicate, truncated, non-finite), never just the first.

The authors' loaders leave a truncated file's layers at random init without
a word; here the same file is an error that names each missing key.
"""

from __future__ import annotations

import contextlib
import functools
import os
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import CheckpointError
from .fsutil import open_regular
from .model.architecture import STANDARD_UNITS, Architecture, checkpoint_layout, format_shape, infer_architecture, normalise_key

#: Largest .npy header we parse (numpy's own default guard).
_MAX_HEADER = 10_000
#: How many problems the one-line error spells out before "and N more".
_SUMMARY_LIMIT = 6


@dataclass(frozen=True)
class ArrayInfo:
    """What a member's .npy header declares, read without touching its data."""

    key: str  # normalised checkpoint key
    member: str  # zip member name
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    data_offset: int  # header length in bytes
    member_size: int  # uncompressed size of the member

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


@dataclass(frozen=True)
class Problem:
    """One finding of the reader. ``kind``: missing, unexpected, shape, dtype, object, duplicate, truncated, nonfinite or layout."""

    kind: str
    key: str
    detail: str

    def __str__(self) -> str:
        return self.detail

    def as_dict(self) -> dict:
        return {"kind": self.kind, "key": self.key, "detail": self.detail}


@dataclass
class Checkpoint:
    """A validated checkpoint: every array of ``architecture``, float32, finite."""

    path: Path
    architecture: Architecture
    arrays: dict[str, np.ndarray] = field(repr=False)  # or Deferred ones (open_deferred)

    @property
    def parameters(self) -> int:
        return int(sum(np.prod(a.shape, dtype=np.int64) for a in self.arrays.values()))


class Deferred:
    """An array made when numpy asks for it (``np.asarray(d, dtype)``), not before; its shape is known now.

    :func:`open_deferred` gives one per checkpoint array, read from the file at each use, and
    :func:`convert.model.mapping.flax_params` keeps them deferred (``then``): the JAX reference's
    worker reads each unit's weights as it runs instead of holding the whole checkpoint.
    """

    def __init__(self, make: Callable[[], np.ndarray], shape: tuple[int, ...]):
        self._make, self.shape = make, tuple(shape)

    def then(self, fn: Callable[[np.ndarray], np.ndarray], shape: tuple[int, ...]) -> Deferred:
        """``fn`` of this array, deferred too (``shape``: what ``fn`` returns)."""
        return Deferred(lambda: fn(self._make()), shape)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return np.asarray(self._make(), dtype)


@dataclass
class Inspection:
    """Result of :func:`inspect_checkpoint`: what the file is and what is wrong with it."""

    path: Path
    architecture: Architecture | None
    infos: dict[str, ArrayInfo]
    problems: list[Problem]
    #: When checked against a given architecture and refused: the other official
    #: architecture the file is, exactly (every key, shape and dtype fit it), else None.
    actual: Architecture | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def parameters(self) -> int:
        return int(sum(np.prod(i.shape, dtype=np.int64) for i in self.infos.values()))


@contextlib.contextmanager
def _open_zip(path: Path) -> Iterator[zipfile.ZipFile]:
    """The checkpoint as a zip; only a regular file is opened (a FIFO or /dev/zero would never end)."""
    with open_regular(path, CheckpointError) as f:
        try:
            zf = zipfile.ZipFile(f)
        except zipfile.BadZipFile as exc:
            raise CheckpointError(
                f"{path}: not a readable .npz (zip) file ({exc}); a truncated download? re-fetch it with `bitconvert fetch --force`"
            ) from exc
        except OSError as exc:
            raise CheckpointError(f"{path}: cannot read: {exc.strerror}") from exc
        with zf:
            yield zf


def _read_header(zf: zipfile.ZipFile, member: zipfile.ZipInfo):
    with zf.open(member) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f, max_header_size=_MAX_HEADER)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f, max_header_size=_MAX_HEADER)
        else:  # pragma: no cover - numpy only writes 1.0-3.0
            raise ValueError(f"unsupported .npy version {version}")
        # Bytes consumed so far are the header; ZipExtFile.tell() counts them.
        return tuple(int(d) for d in shape), bool(fortran), dtype, f.tell()


def read_headers(path: Path) -> tuple[dict[str, ArrayInfo], list[Problem]]:
    """Parse every member's .npy header (no data is read)."""
    problems: list[Problem] = []
    infos: dict[str, ArrayInfo] = {}
    with _open_zip(path) as zf:
        for member in zf.infolist():
            if member.is_dir():
                continue
            name = member.filename
            raw_key = name[:-4] if name.endswith(".npy") else name
            key = normalise_key(raw_key)
            try:
                shape, fortran, dtype, offset = _read_header(zf, member)
            except (ValueError, SyntaxError, EOFError, zipfile.BadZipFile) as exc:
                problems.append(Problem("truncated", key, f"unreadable member {name}: {exc}"))
                continue
            if key in infos:
                problems.append(Problem("duplicate", key, f"duplicate {key} (members {infos[key].member} and {name})"))
                continue
            infos[key] = ArrayInfo(key, name, shape, dtype, fortran, offset, member.file_size)
    return infos, problems


def _nearest_standard(units: tuple[int, ...]) -> tuple[int, ...] | None:
    """Smallest official layout that has at least ``units`` units in every block."""
    for depth in sorted(STANDARD_UNITS):
        cand = STANDARD_UNITS[depth]
        if all(c >= u for c, u in zip(cand, units, strict=True)):
            return cand
    return None


def check_headers(infos: dict[str, ArrayInfo], arch: Architecture) -> list[Problem]:
    """Compare declared names, shapes, dtypes and sizes with ``arch``'s layout."""
    problems: list[Problem] = []
    layout = checkpoint_layout(arch)
    for key, shape in layout.items():
        if key not in infos:
            problems.append(Problem("missing", key, f"missing {key} (expected float32 {format_shape(shape)})"))
    for key, info in infos.items():
        if key not in layout:
            problems.append(Problem("unexpected", key, f"unexpected {key} {info.dtype} {format_shape(info.shape)}"))
            continue
        if info.dtype.hasobject:
            problems.append(Problem("object", key, f"object array {key} refused (loading it would need unpickling)"))
            continue
        if info.shape != layout[key]:
            problems.append(
                Problem("shape", key, f"wrong shape {key}: got {format_shape(info.shape)}, expected {format_shape(layout[key])}")
            )
        if not (info.dtype.kind == "f" and info.dtype.itemsize == 4):
            problems.append(Problem("dtype", key, f"wrong dtype {key}: got {info.dtype}, expected float32"))
        elif info.member_size != info.data_offset + info.nbytes:
            problems.append(
                Problem(
                    "truncated",
                    key,
                    f"bad size {key}: header declares {info.nbytes} data bytes, member holds {info.member_size - info.data_offset}",
                )
            )
    return problems


def _choose_architecture(
    infos: dict[str, ArrayInfo], arch: Architecture | None, allow_nonstandard: bool
) -> tuple[Architecture | None, list[Problem]]:
    if arch is not None:
        return arch, []
    try:
        inferred = infer_architecture({k: i.shape for k, i in infos.items()})
    except ValueError as exc:
        return None, [Problem("layout", "", f"does not look like a BiT checkpoint: {exc}")]
    # A layout of the registry's own (an entry's ``depth:`` as units per block) is as known as an official one.
    if inferred.is_standard or allow_nonstandard or registry_matches(inferred):
        return inferred, []
    nearest = _nearest_standard(inferred.units)
    if nearest is None:
        return inferred, [Problem("layout", "", f"block layout {inferred.units} matches no official depth")]
    # A unit missing at the end of a block: check against the nearest official
    # layout so each missing key is named.
    return Architecture(nearest, inferred.width, inferred.classes), []


def inspect_checkpoint(
    path: str | os.PathLike,
    arch: Architecture | None = None,
    allow_nonstandard: bool = False,
    read_data: bool = True,
) -> Inspection:
    """Report what the file is and every problem found.

    Headers are checked first; the data (NaN/Inf, unreadable bytes) only when
    the headers are clean and ``read_data`` is set, one array at a time.
    Raises :class:`CheckpointError` only when the file cannot be opened at all.
    """
    path = Path(path)
    infos, problems = read_headers(path)
    chosen, layout_problems = _choose_architecture(infos, arch, allow_nonstandard)
    problems += layout_problems
    if chosen is not None:
        problems += check_headers(infos, chosen)
    actual = _actual_architecture(infos) if arch is not None and problems else None
    inspection = Inspection(path, chosen, infos, problems, actual if actual != arch else None)
    if read_data and not problems:
        for _key, _arr, problem in _iter_data(inspection):
            if problem:
                problems.append(problem)
    return inspection


def _actual_architecture(infos: dict[str, ArrayInfo]) -> Architecture | None:
    """The official architecture whose layout the headers fit exactly, if any."""
    try:
        inferred = infer_architecture({k: i.shape for k, i in infos.items()})
    except ValueError:
        return None
    if not inferred.is_standard or check_headers(infos, inferred):
        return None
    return inferred


def registry_matches(arch: Architecture) -> list[str]:
    """Registry ids whose checkpoints have ``arch`` (depth, width and head size)."""
    from .errors import RegistryError
    from .registry import load_registry

    try:
        entries = load_registry().entries
    except RegistryError:
        return []
    return [e.id for e in entries if e.architecture == arch]


def describe_mismatch(
    path: Path, expected: Architecture, actual: Architecture, problems: list[Problem], listed: str | None = None
) -> str:
    """One line for a valid checkpoint of another architecture: what it is, which ids it fits, then the count.

    ``listed``: where the problems are listed, when the caller prints them (else `bitconvert inspect` lists them)."""
    ids = registry_matches(actual)
    shown = ", ".join(ids[:6]) + (f" and {len(ids) - 6} more" if len(ids) > 6 else "")
    fits = f"it fits {shown}" if ids else "no registry entry has that architecture"
    return (
        f"{path}: this is a valid {actual.name} checkpoint with a {actual.classes}-class head ({fits}), "
        f"not the {expected.name} with {expected.classes} classes expected: "
        f"{len(problems)} layout problem{'s' if len(problems) != 1 else ''} against {expected.name} "
        f"({listed or f'`bitconvert inspect {path}` lists them'})"
    )


def summarise(
    path: Path,
    arch: Architecture | None,
    problems: list[Problem],
    actual: Architecture | None = None,
    listed: str | None = None,
) -> str:
    """One line naming the offending keys and what was expected (or, for another architecture's file, what it is).

    ``listed``: where every problem is listed, when the caller prints them (`bitconvert inspect` itself)."""
    if actual is not None and arch is not None:
        return describe_mismatch(path, arch, actual, problems, listed)
    what = f"a valid {arch.name} checkpoint" if arch else "a valid BiT checkpoint"
    shown = "; ".join(str(p) for p in problems[:_SUMMARY_LIMIT])
    more = len(problems) - _SUMMARY_LIMIT
    tail = f"; and {more} more ({listed or f'see `bitconvert inspect {path}`'})" if more > 0 else ""
    return f"{path}: not {what}: {len(problems)} problem{'s' if len(problems) != 1 else ''}: {shown}{tail}"


def _read_member(zf: zipfile.ZipFile, info: ArrayInfo) -> np.ndarray:
    with zf.open(info.member) as f:
        arr = np.lib.format.read_array(f, allow_pickle=False, max_header_size=_MAX_HEADER)
    if arr.dtype != np.float32:  # other-endian float32: normalise to native
        arr = arr.astype(np.float32)
    return np.ascontiguousarray(arr)


def _iter_data(inspection: Inspection):
    """Yield (key, array or None, problem or None) in layout order."""
    with _open_zip(inspection.path) as zf:
        for key in checkpoint_layout(inspection.architecture):
            yield key, *_checked_member(zf, inspection.infos[key])


def _checked_member(zf: zipfile.ZipFile, info: ArrayInfo) -> tuple[np.ndarray | None, Problem | None]:
    """One array's data and what is wrong with it (unreadable: no array; NaN or Inf), if anything."""
    key = info.key
    try:
        arr = _read_member(zf, info)
    except (ValueError, EOFError, zipfile.BadZipFile, OSError) as exc:
        return None, Problem("truncated", key, f"unreadable data for {key}: {exc}")
    finite = np.isfinite(arr)
    if finite.all():
        return arr, None
    nan = int(np.isnan(arr).sum())
    inf = int(arr.size - finite.sum() - nan)
    return arr, Problem("nonfinite", key, f"non-finite values in {key}: {nan} NaN, {inf} Inf")


def open_deferred(path: str | os.PathLike, arch: Architecture) -> Checkpoint:
    """The checkpoint at ``path`` with every array :class:`Deferred`: the headers checked now, each array's
    data read and checked (float32, finite) when it is used, as :func:`load_checkpoint` would.

    For a process that reads a file another one has loaded and checked already (the JAX
    reference's worker): it never holds more than the arrays in use.
    """
    inspection = inspect_checkpoint(path, arch, read_data=False)
    if inspection.problems:
        raise CheckpointError(summarise(inspection.path, inspection.architecture, inspection.problems), inspection.problems)
    arrays = {
        key: Deferred(functools.partial(_read_checked, inspection.path, inspection.infos[key]), inspection.infos[key].shape)
        for key in checkpoint_layout(inspection.architecture)
    }
    return Checkpoint(inspection.path, inspection.architecture, arrays)


def _read_checked(path: Path, info: ArrayInfo) -> np.ndarray:
    """One array's data, refused as :func:`load_checkpoint` refuses it (the file may have changed since)."""
    with _open_zip(path) as zf:
        arr, problem = _checked_member(zf, info)
    if problem:
        raise CheckpointError(summarise(path, None, [problem]), [problem])
    return arr


def load_checkpoint(path: str | os.PathLike, arch: Architecture | None = None, allow_nonstandard: bool = False) -> Checkpoint:
    """Validate and load a checkpoint; raise :class:`CheckpointError` listing all problems.

    With ``arch`` the file must match it exactly; without, the architecture is
    inferred from the shapes (official layouts only unless ``allow_nonstandard``).
    Nothing is returned unless every array is present, float32 and finite.
    """
    inspection = inspect_checkpoint(path, arch, allow_nonstandard, read_data=False)
    if inspection.problems:
        message = summarise(inspection.path, inspection.architecture, inspection.problems, inspection.actual)
        raise CheckpointError(message, inspection.problems)
    arrays: dict[str, np.ndarray] = {}
    problems: list[Problem] = []
    for key, arr, problem in _iter_data(inspection):
        if problem:
            problems.append(problem)
        else:
            arrays[key] = arr
    if problems:
        raise CheckpointError(summarise(inspection.path, inspection.architecture, problems), problems)
    return Checkpoint(inspection.path, inspection.architecture, arrays)
