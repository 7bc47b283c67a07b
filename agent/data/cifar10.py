"""CIFAR-10 (Krizhevsky, 2009) in its "python version": pickled batches in ``cifar-10-batches-py``.

CIFAR-10 cannot be installed from a package registry on the target machines, so the user supplies the
directory. Those files are pickles, and unpickling runs whatever callables the file names. They are
therefore read with :class:`RestrictedUnpickler`, which resolves only the few numpy constructors an
array needs; any other global, such as ``os.system``, fails with a :class:`~agent.errors.DataError`
before it can be called.

Each batch is a dict with ``data`` (``uint8`` array, one 3,072-byte row per image: 1,024 red, then
1,024 green, then 1,024 blue values, each plane row-major 32x32) and ``labels`` (0-9); ``batches.meta``
holds the class names under ``label_names``. The original files were written by Python 2, so keys and
strings come back as ``bytes``.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from agent.data.dataset import ImageDataset
from agent.errors import ConfigurationError, DataError

CIFAR10_DIRECTORY_NAME = "cifar-10-batches-py"
CIFAR10_TRAIN_FILES: tuple[str, ...] = tuple(f"data_batch_{number}" for number in range(1, 6))
CIFAR10_TEST_FILES: tuple[str, ...] = ("test_batch",)
CIFAR10_META_FILE = "batches.meta"
CIFAR10_CLASS_COUNT = 10
CIFAR10_IMAGE_SIZE = 32
CIFAR10_ROW_BYTES = 3 * CIFAR10_IMAGE_SIZE * CIFAR10_IMAGE_SIZE


def _numpy_pickle_globals() -> dict[tuple[str, str], Callable[..., Any]]:
    """The globals that pickled numpy arrays reference, keyed by every (module, name) spelling in use.

    numpy 2 renamed ``numpy.core`` to ``numpy._core``; files written before (CIFAR-10's among them) name
    the old module, files written since name the new one. The functions are taken from what numpy's own
    ``__reduce__`` returns, so the old name never has to be imported (that import is deprecated).
    """
    reconstruct = _constructor(np.zeros(1).__reduce__())
    from_buffer = _constructor(np.zeros(1).__reduce_ex__(5))
    scalar = _constructor(np.float64(0).__reduce__())
    allowed: dict[tuple[str, str], Callable[..., Any]] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        # Python 3 writes bytes this way under pickle protocols 0-2; it only encodes a str.
        ("_codecs", "encode"): _encode_latin1,
    }
    for core_module in ("numpy.core", "numpy._core"):
        allowed[(f"{core_module}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{core_module}.multiarray", "scalar")] = scalar
        allowed[(f"{core_module}.numeric", "_frombuffer")] = from_buffer
    return allowed


def _constructor(reduced: str | tuple[Any, ...]) -> Callable[..., Any]:
    """The callable a ``__reduce__`` result rebuilds its object with."""
    constructor: object = reduced[0] if isinstance(reduced, tuple) else None
    if not callable(constructor):
        raise TypeError(f"unexpected numpy __reduce__ result {reduced!r}")
    return constructor


def _encode_latin1(text: str, encoding: str = "latin1") -> bytes:
    """Stand-in for ``_codecs.encode`` that accepts only the latin-1 codec pickle itself uses."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode with codec {encoding!r} is not allowed")
    return text.encode("latin1")


_ALLOWED_GLOBALS = _numpy_pickle_globals()


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that builds plain containers and numpy arrays, and nothing else.

    ``find_class`` is the only way a pickle reaches a callable, so refusing every global not on the
    list makes loading an untrusted file safe from code execution.
    """

    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        return allowed


def read_pickle(path: Path) -> Any:
    """Unpickle one CIFAR-10 file with :class:`RestrictedUnpickler`.

    Raises:
        DataError: the file is missing or unreadable, names a forbidden global, or is not a valid
            pickle. The message names ``path``.
    """
    if not path.is_file():
        raise DataError(f"{path}: missing: no such file")
    try:
        with path.open("rb") as stream:
            return RestrictedUnpickler(stream, encoding="bytes").load()
    except pickle.UnpicklingError as exc:
        raise DataError(f"{path}: corrupt or unsafe pickle: {exc}") from exc
    except EOFError as exc:
        raise DataError(f"{path}: truncated: the pickle ends early") from exc
    except OSError as exc:
        raise DataError(f"{path}: unreadable ({exc})") from exc
    except Exception as exc:  # a damaged pickle can fail in many ways (struct, type, value, memory...)
        raise DataError(f"{path}: corrupt pickle ({type(exc).__name__}: {exc})") from exc


def _entry(batch: dict[Any, Any], key: str, path: Path) -> Any:
    """Look ``key`` up as bytes (Python 2 originals) or str (files re-saved by Python 3)."""
    for candidate in (key.encode("ascii"), key):
        if candidate in batch:
            return batch[candidate]
    raise DataError(f"{path}: no {key!r} entry; keys present: {sorted(map(str, batch))}")


def _read_batch(
    path: Path,
) -> tuple[np.ndarray[Any, np.dtype[np.uint8]], np.ndarray[Any, np.dtype[np.int64]]]:
    """Read one batch file and check its rows are 3,072 bytes and its labels match them in number."""
    batch = read_pickle(path)
    if not isinstance(batch, dict):
        raise DataError(f"{path}: expected a dict batch, got {type(batch).__name__}")
    data = _entry(batch, "data", path)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        raise DataError(f"{path}: 'data' must be a uint8 array, got {type(data).__name__}")
    if data.ndim != 2 or data.shape[1] != CIFAR10_ROW_BYTES:
        raise DataError(
            f"{path}: 'data' has shape {data.shape}; each row must hold {CIFAR10_ROW_BYTES} bytes "
            f"(3x{CIFAR10_IMAGE_SIZE}x{CIFAR10_IMAGE_SIZE})"
        )
    try:
        labels = np.asarray(_entry(batch, "labels", path), dtype=np.int64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise DataError(f"{path}: 'labels' are not integers ({exc})") from exc
    if labels.ndim != 1 or labels.shape[0] != data.shape[0]:
        raise DataError(f"{path}: {data.shape[0]} image rows but labels of shape {labels.shape}")
    if labels.size > 0 and (int(labels.min()) < 0 or int(labels.max()) >= CIFAR10_CLASS_COUNT):
        raise DataError(
            f"{path}: labels span [{int(labels.min())}, {int(labels.max())}], expected 0-"
            f"{CIFAR10_CLASS_COUNT - 1}"
        )
    return data, labels


def _read_class_names(path: Path) -> tuple[str, ...]:
    meta = read_pickle(path)
    if not isinstance(meta, dict):
        raise DataError(f"{path}: expected a dict, got {type(meta).__name__}")
    names = _entry(meta, "label_names", path)
    if not isinstance(names, list | tuple) or len(names) != CIFAR10_CLASS_COUNT:
        raise DataError(f"{path}: 'label_names' must list {CIFAR10_CLASS_COUNT} names, got {names!r:.200}")
    decoded: list[str] = []
    for name in names:
        if isinstance(name, bytes):
            decoded.append(name.decode("utf-8", errors="replace"))
        elif isinstance(name, str):
            decoded.append(name)
        else:
            raise DataError(f"{path}: class name {name!r:.100} is not a string")
    return tuple(decoded)


def resolve_cifar10_directory(path: str | Path) -> Path:
    """Accept either the ``cifar-10-batches-py`` directory itself or the directory that contains it."""
    directory = Path(path)
    nested = directory / CIFAR10_DIRECTORY_NAME
    if not (directory / CIFAR10_META_FILE).exists() and nested.is_dir():
        return nested
    return directory


def load_cifar10(path: str | Path, split: Literal["train", "test"] = "train") -> ImageDataset:
    """Load CIFAR-10's 50,000 training images (five batches) or its 10,000 test images.

    Returns:
        An :class:`ImageDataset` of ``uint8`` images shaped ``[N, 3, 32, 32]`` named ``"cifar10/<split>"``.

    Raises:
        ConfigurationError: ``split`` is neither ``"train"`` nor ``"test"``.
        DataError: a file is missing, corrupt, unsafe, or has rows that are not 3,072 bytes.
    """
    if split == "train":
        file_names = CIFAR10_TRAIN_FILES
    elif split == "test":
        file_names = CIFAR10_TEST_FILES
    else:
        raise ConfigurationError(f"cifar10: unknown split {split!r}; expected 'train' or 'test'")
    directory = resolve_cifar10_directory(path)
    classes = _read_class_names(directory / CIFAR10_META_FILE)
    batches = [_read_batch(directory / file_name) for file_name in file_names]
    data = np.concatenate([rows for rows, _ in batches])
    labels = np.concatenate([batch_labels for _, batch_labels in batches])
    images = data.reshape(-1, 3, CIFAR10_IMAGE_SIZE, CIFAR10_IMAGE_SIZE)
    return ImageDataset(
        images=torch.from_numpy(np.ascontiguousarray(images)),
        labels=torch.from_numpy(labels),
        classes=classes,
        name=f"cifar10/{split}",
    )
