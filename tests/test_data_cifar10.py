"""CIFAR-10 reader on a tiny synthetic ``cifar-10-batches-py`` directory, including hostile pickles."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from agent.data import load_cifar10, load_dataset
from agent.data.cifar10 import CIFAR10_TEST_FILES, CIFAR10_TRAIN_FILES, read_pickle
from agent.errors import ConfigurationError, DataError

CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
ROWS_PER_BATCH = 4


def batch_rows(batch_number: int, rows: int = ROWS_PER_BATCH) -> np.ndarray:
    """Rows whose bytes encode where they came from, so order and layout can be checked after loading."""
    generator = np.random.default_rng(batch_number)
    data = generator.integers(0, 256, size=(rows, 3072), dtype=np.uint8)
    data[:, 0] = batch_number
    return data


def write_pickle(path: Path, content: Any, protocol: int = 2) -> None:
    path.write_bytes(pickle.dumps(content, protocol=protocol))


def write_cifar_directory(root: Path, protocol: int = 2) -> Path:
    """Write all seven files the way the originals are laid out (bytes keys, list labels)."""
    directory = root / "cifar-10-batches-py"
    directory.mkdir()
    names = [name.encode() for name in CLASS_NAMES]
    write_pickle(directory / "batches.meta", {b"label_names": names, b"num_cases_per_batch": 4}, protocol)
    for number, file_name in enumerate((*CIFAR10_TRAIN_FILES, *CIFAR10_TEST_FILES), start=1):
        batch = {
            b"batch_label": file_name.encode(),
            b"data": batch_rows(number),
            b"labels": [(number + row) % 10 for row in range(ROWS_PER_BATCH)],
            b"filenames": [f"{number}_{row}.png".encode() for row in range(ROWS_PER_BATCH)],
        }
        write_pickle(directory / file_name, batch, protocol)
    return directory


class RunsShellCommand:
    """Unpickling this would run a shell command: the classic pickle exploit."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (self.command,))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_train_split_concatenates_the_five_batches(tmp_path: Path, protocol: int) -> None:
    directory = write_cifar_directory(tmp_path, protocol)
    dataset = load_cifar10(directory, "train")
    assert dataset.images.shape == (5 * ROWS_PER_BATCH, 3, 32, 32)
    assert dataset.images.dtype == torch.uint8
    assert dataset.labels.dtype == torch.int64
    assert dataset.classes == tuple(CLASS_NAMES)
    assert dataset.name == "cifar10/train"
    # Batches in order 1..5, and labels kept with their rows.
    assert dataset.images[:, 0, 0, 0].tolist() == [number for number in range(1, 6) for _ in range(4)]
    assert dataset.labels[:4].tolist() == [1, 2, 3, 4]
    assert dataset.labels[-4:].tolist() == [5, 6, 7, 8]


def test_rows_are_red_then_green_then_blue_planes(tmp_path: Path) -> None:
    directory = write_cifar_directory(tmp_path)
    dataset = load_cifar10(directory, "test")
    rows = batch_rows(6)
    assert len(dataset) == ROWS_PER_BATCH
    for row in range(ROWS_PER_BATCH):
        assert np.array_equal(dataset.images[row, 0].numpy(), rows[row, :1024].reshape(32, 32))
        assert np.array_equal(dataset.images[row, 1].numpy(), rows[row, 1024:2048].reshape(32, 32))
        assert np.array_equal(dataset.images[row, 2].numpy(), rows[row, 2048:].reshape(32, 32))


def test_parent_of_the_batches_directory_is_accepted(tmp_path: Path) -> None:
    write_cifar_directory(tmp_path)
    assert len(load_cifar10(tmp_path, "test")) == ROWS_PER_BATCH


def test_pickle_naming_the_pre_numpy_2_module_loads(tmp_path: Path) -> None:
    """The real files (numpy 1) name ``numpy.core.multiarray``: they must load, and without a warning."""
    path = tmp_path / "batch"
    content = pickle.dumps({b"data": batch_rows(1)}, protocol=2).replace(b"numpy._core.", b"numpy.core.")
    assert b"cnumpy.core.multiarray" in content
    path.write_bytes(content)
    assert np.array_equal(read_pickle(path)[b"data"], batch_rows(1))


def test_shell_command_pickle_is_rejected_without_running(tmp_path: Path) -> None:
    directory = write_cifar_directory(tmp_path)
    marker = tmp_path / "pwned"
    batch = {b"data": RunsShellCommand(f"touch {marker}"), b"labels": [0]}
    write_pickle(directory / "test_batch", batch)
    with pytest.raises(DataError, match=r"refusing to load global (posix|os)\.system") as raised:
        load_cifar10(directory, "test")
    assert str(directory / "test_batch") in str(raised.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("module", "name"),
    [("numpy", "load"), ("builtins", "eval"), ("numpy.core.multiarray", "fromfile"), ("_codecs", "decode")],
)
def test_only_listed_globals_resolve_even_inside_numpy(tmp_path: Path, module: str, name: str) -> None:
    path = tmp_path / "batch"
    path.write_bytes(b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"q\x00.")
    with pytest.raises(DataError, match=f"refusing to load global {module}.{name}"):
        read_pickle(path)


def test_codecs_encode_allows_only_latin1(tmp_path: Path) -> None:
    """Protocol-2 pickles encode bytes with ``_codecs.encode(text, 'latin1')``; no other codec may run."""
    path = tmp_path / "batch"
    # _codecs.encode("eJw=", "base64")
    path.write_bytes(b"\x80\x02c_codecs\nencode\nX\x04\x00\x00\x00eJw=X\x06\x00\x00\x00base64\x86R.")
    with pytest.raises(DataError, match="codec 'base64' is not allowed"):
        read_pickle(path)


def test_rows_of_the_wrong_width_are_rejected(tmp_path: Path) -> None:
    directory = write_cifar_directory(tmp_path)
    write_pickle(directory / "data_batch_3", {b"data": np.zeros((4, 3000), np.uint8), b"labels": [0] * 4})
    with pytest.raises(DataError, match=r"shape \(4, 3000\); each row must hold 3072 bytes") as raised:
        load_cifar10(directory, "train")
    assert str(directory / "data_batch_3") in str(raised.value)


def test_label_count_must_match_rows(tmp_path: Path) -> None:
    directory = write_cifar_directory(tmp_path)
    write_pickle(directory / "test_batch", {b"data": batch_rows(6), b"labels": [0, 1, 2]})
    with pytest.raises(DataError, match=r"4 image rows but labels of shape \(3,\)"):
        load_cifar10(directory, "test")


def test_labels_outside_ten_classes_are_rejected(tmp_path: Path) -> None:
    directory = write_cifar_directory(tmp_path)
    write_pickle(directory / "test_batch", {b"data": batch_rows(6), b"labels": [0, 1, 2, 10]})
    with pytest.raises(DataError, match=r"labels span \[0, 10\]"):
        load_cifar10(directory, "test")


def test_non_uint8_data_is_rejected(tmp_path: Path) -> None:
    directory = write_cifar_directory(tmp_path)
    write_pickle(directory / "test_batch", {b"data": batch_rows(6).astype(np.float32), b"labels": [0] * 4})
    with pytest.raises(DataError, match="'data' must be a uint8 array"):
        load_cifar10(directory, "test")


def test_missing_batch_is_named(tmp_path: Path) -> None:
    directory = write_cifar_directory(tmp_path)
    (directory / "data_batch_5").unlink()
    with pytest.raises(DataError, match="missing") as raised:
        load_cifar10(directory, "train")
    assert str(directory / "data_batch_5") in str(raised.value)


def test_missing_meta_is_named(tmp_path: Path) -> None:
    directory = write_cifar_directory(tmp_path)
    (directory / "batches.meta").unlink()
    with pytest.raises(DataError, match=r"batches\.meta: missing"):
        load_cifar10(directory, "test")


def test_truncated_batch_is_named(tmp_path: Path) -> None:
    directory = write_cifar_directory(tmp_path)
    path = directory / "test_batch"
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])
    with pytest.raises(DataError) as raised:
        load_cifar10(directory, "test")
    assert str(path) in str(raised.value)


def test_garbage_file_is_named(tmp_path: Path) -> None:
    directory = write_cifar_directory(tmp_path)
    path = directory / "test_batch"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes())
    with pytest.raises(DataError) as raised:
        load_cifar10(directory, "test")
    assert str(path) in str(raised.value)


def test_meta_with_wrong_class_count_is_rejected(tmp_path: Path) -> None:
    directory = write_cifar_directory(tmp_path)
    write_pickle(directory / "batches.meta", {b"label_names": [b"cat", b"dog"]})
    with pytest.raises(DataError, match="'label_names' must list 10 names"):
        load_cifar10(directory, "test")


def test_registry_requires_a_path_and_applies_the_limit(tmp_path: Path) -> None:
    directory = write_cifar_directory(tmp_path)
    with pytest.raises(ConfigurationError, match="path"):
        load_dataset("cifar10", None, "train")
    limited = load_dataset("cifar10", directory, "train", limit=10)
    # The 20 training labels 1..8 occur 1, 2, 3, 4, 4, 3, 2, 1 times; half of each, with the two spare
    # places going to the lowest labels among those with a half left over (1 and 3).
    assert torch.bincount(limited.labels, minlength=10).tolist() == [0, 1, 1, 2, 2, 2, 1, 1, 0, 0]
