"""Fashion-MNIST reader: the real installed files, and every way a copy of them can be broken."""

from __future__ import annotations

import gzip
import shutil
import struct
from pathlib import Path

import pytest
import torch

from agent.data import FASHION_MNIST_CLASSES, ImageDataset, load_dataset, load_fashion_mnist, read_idx_file
from agent.data.fashion_mnist import DEFAULT_FASHION_MNIST_DIRECTORY, IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC
from agent.errors import ConfigurationError, DataError

TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
TEST_LABELS = "t10k-labels-idx1-ubyte.gz"


@pytest.fixture(scope="module")
def train_set() -> ImageDataset:
    return load_fashion_mnist(DEFAULT_FASHION_MNIST_DIRECTORY, "train")


@pytest.fixture(scope="module")
def test_set() -> ImageDataset:
    return load_fashion_mnist(DEFAULT_FASHION_MNIST_DIRECTORY, "test")


def write_idx(path: Path, magic: int, dimensions: tuple[int, ...], payload: bytes) -> None:
    """Write a gzipped idx file whose header says ``dimensions`` whatever the payload's length."""
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", size) for size in dimensions)
    path.write_bytes(gzip.compress(header + payload))


def write_tiny_test_split(directory: Path, image_count: int = 3, label_count: int = 3) -> None:
    images = bytes(image_count * 28 * 28)
    write_idx(directory / TEST_IMAGES, IDX_IMAGES_MAGIC, (image_count, 28, 28), images)
    write_idx(directory / TEST_LABELS, IDX_LABELS_MAGIC, (label_count,), bytes(range(label_count)))


def copy_real_test_split(directory: Path) -> None:
    for name in (TEST_IMAGES, TEST_LABELS):
        shutil.copyfile(DEFAULT_FASHION_MNIST_DIRECTORY / name, directory / name)


# Real files ----------------------------------------------------------------------------------------


def test_train_split_has_60000_grey_28x28_images(train_set: ImageDataset) -> None:
    assert len(train_set) == 60_000
    assert train_set.images.shape == (60_000, 1, 28, 28)
    assert train_set.images.dtype == torch.uint8
    assert train_set.labels.dtype == torch.int64
    assert train_set.classes == FASHION_MNIST_CLASSES
    assert len(train_set.classes) == 10
    assert train_set.name == "fashion-mnist/train"


def test_test_split_has_10000_images(test_set: ImageDataset) -> None:
    assert test_set.images.shape == (10_000, 1, 28, 28)
    assert test_set.labels.shape == (10_000,)


def test_every_class_is_equally_represented(train_set: ImageDataset, test_set: ImageDataset) -> None:
    """Fashion-MNIST is balanced: 6,000 training and 1,000 test images per class, labels 0-9."""
    assert torch.bincount(train_set.labels, minlength=10).tolist() == [6000] * 10
    assert torch.bincount(test_set.labels, minlength=10).tolist() == [1000] * 10


def test_mean_pixel_matches_the_published_statistic(train_set: ImageDataset, test_set: ImageDataset) -> None:
    """The usual normalisation constant (mean 0.2860 of 255) holds, so rows and columns are not shuffled."""
    train_mean = train_set.images.double().mean().item()
    assert train_mean == pytest.approx(72.9404, abs=1e-3)
    assert train_mean / 255 == pytest.approx(0.2860, abs=1e-4)
    assert test_set.images.double().mean().item() == pytest.approx(73.1466, abs=1e-3)


def test_images_are_upright_not_transposed(train_set: ImageDataset) -> None:
    """Trousers (class 1) are tall and narrow; a reader that swapped rows and columns would make them wide.

    On the average trouser image every one of the 28 rows is bright somewhere, but only about 12 columns are.
    """
    trousers = train_set.images[train_set.labels == 1].double().mean(dim=0)[0]
    bright_rows = int((trousers.mean(dim=1) > 20).sum())
    bright_columns = int((trousers.mean(dim=0) > 20).sum())
    assert bright_rows >= 26
    assert bright_columns <= 16


def test_registry_default_path_loads_the_installed_package() -> None:
    dataset = load_dataset("fashion-mnist", None, "test", limit=50)
    assert len(dataset) == 50
    assert torch.bincount(dataset.labels, minlength=10).tolist() == [5] * 10


# Broken copies -------------------------------------------------------------------------------------


def test_a_real_copy_loads(tmp_path: Path) -> None:
    copy_real_test_split(tmp_path)
    assert len(load_fashion_mnist(tmp_path, "test")) == 10_000


def test_missing_file_is_named(tmp_path: Path) -> None:
    copy_real_test_split(tmp_path)
    (tmp_path / TEST_LABELS).unlink()
    with pytest.raises(DataError, match="missing") as raised:
        load_fashion_mnist(tmp_path, "test")
    assert str(tmp_path / TEST_LABELS) in str(raised.value)


@pytest.mark.parametrize("name", [TEST_IMAGES, TEST_LABELS])
def test_truncated_gzip_copy_is_named(tmp_path: Path, name: str) -> None:
    copy_real_test_split(tmp_path)
    content = (tmp_path / name).read_bytes()
    (tmp_path / name).write_bytes(content[: len(content) // 2])
    with pytest.raises(DataError, match="truncated") as raised:
        load_fashion_mnist(tmp_path, "test")
    assert str(tmp_path / name) in str(raised.value)


def test_corrupt_gzip_copy_is_named(tmp_path: Path) -> None:
    copy_real_test_split(tmp_path)
    path = tmp_path / TEST_LABELS
    content = bytearray(path.read_bytes())
    for position in range(100, 200):  # inside the deflate stream, past the 10-byte gzip header
        content[position] ^= 0xFF
    path.write_bytes(bytes(content))
    with pytest.raises(DataError, match="corrupt") as raised:
        load_fashion_mnist(tmp_path, "test")
    assert str(path) in str(raised.value)


def test_file_that_is_not_gzip_is_named(tmp_path: Path) -> None:
    copy_real_test_split(tmp_path)
    path = tmp_path / TEST_IMAGES
    path.write_bytes(gzip.decompress(path.read_bytes()))  # an uncompressed idx file under a .gz name
    with pytest.raises(DataError, match="not a valid gzip") as raised:
        load_fashion_mnist(tmp_path, "test")
    assert str(path) in str(raised.value)


def test_payload_shorter_than_header_dimensions_is_truncated(tmp_path: Path) -> None:
    write_tiny_test_split(tmp_path)
    write_idx(tmp_path / TEST_IMAGES, IDX_IMAGES_MAGIC, (3, 28, 28), bytes(3 * 28 * 28 - 1))
    with pytest.raises(DataError, match=r"truncated.*2351 bytes follow") as raised:
        load_fashion_mnist(tmp_path, "test")
    assert str(tmp_path / TEST_IMAGES) in str(raised.value)


def test_file_shorter_than_its_header_is_truncated(tmp_path: Path) -> None:
    path = tmp_path / TEST_IMAGES
    path.write_bytes(gzip.compress(struct.pack(">II", IDX_IMAGES_MAGIC, 3)))
    with pytest.raises(DataError, match=r"truncated.*header alone needs 16"):
        read_idx_file(path, IDX_IMAGES_MAGIC)


def test_extra_bytes_after_the_payload_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / TEST_LABELS
    write_idx(path, IDX_LABELS_MAGIC, (3,), bytes(4))
    with pytest.raises(DataError, match="1 unexpected bytes"):
        read_idx_file(path, IDX_LABELS_MAGIC)


def test_wrong_magic_is_named(tmp_path: Path) -> None:
    write_tiny_test_split(tmp_path)
    # A labels file put where the images file belongs.
    write_idx(tmp_path / TEST_IMAGES, IDX_LABELS_MAGIC, (3,), bytes(3))
    with pytest.raises(DataError, match="wrong magic number 0x00000801, expected 0x00000803") as raised:
        load_fashion_mnist(tmp_path, "test")
    assert str(tmp_path / TEST_IMAGES) in str(raised.value)


def test_image_and_label_counts_must_agree(tmp_path: Path) -> None:
    write_tiny_test_split(tmp_path, image_count=3, label_count=2)
    with pytest.raises(DataError, match=r"holds 3 images but .* holds 2 labels") as raised:
        load_fashion_mnist(tmp_path, "test")
    assert str(tmp_path / TEST_LABELS) in str(raised.value)


def test_wrong_image_size_is_rejected(tmp_path: Path) -> None:
    write_tiny_test_split(tmp_path)
    write_idx(tmp_path / TEST_IMAGES, IDX_IMAGES_MAGIC, (3, 32, 32), bytes(3 * 32 * 32))
    with pytest.raises(DataError, match="32x32"):
        load_fashion_mnist(tmp_path, "test")


def test_label_outside_the_ten_classes_is_rejected(tmp_path: Path) -> None:
    write_tiny_test_split(tmp_path)
    write_idx(tmp_path / TEST_LABELS, IDX_LABELS_MAGIC, (3,), bytes([0, 10, 1]))
    with pytest.raises(DataError, match="label 10 is outside 0-9"):
        load_fashion_mnist(tmp_path, "test")


def test_tiny_valid_split_round_trips_pixels_and_labels(tmp_path: Path) -> None:
    pixels = bytes(value % 256 for value in range(2 * 28 * 28))
    write_idx(tmp_path / TEST_IMAGES, IDX_IMAGES_MAGIC, (2, 28, 28), pixels)
    write_idx(tmp_path / TEST_LABELS, IDX_LABELS_MAGIC, (2,), bytes([9, 4]))
    dataset = load_fashion_mnist(tmp_path, "test")
    assert dataset.labels.tolist() == [9, 4]
    # Row-major: the second pixel of the first row is byte 1, the first pixel of the second row byte 28.
    assert dataset.images[0, 0, 0, 1].item() == 1
    assert dataset.images[0, 0, 1, 0].item() == 28
    assert dataset.images[1, 0, 0, 0].item() == (28 * 28) % 256


def test_unknown_split_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="unknown split 'validation'"):
        load_fashion_mnist(DEFAULT_FASHION_MNIST_DIRECTORY, "validation")  # type: ignore[arg-type]
