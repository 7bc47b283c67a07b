"""Image-folder reader on folders of small images drawn with Pillow, and its registry splits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from agent.data import load_dataset, load_image_folder
from agent.errors import ConfigurationError, DataError

RED = (255, 0, 0)
BLUE = (0, 0, 255)


def save_solid(
    path: Path, color: tuple[int, int, int], size: tuple[int, int] = (40, 30), mode: str = "RGB"
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).convert(mode).save(path)


@pytest.fixture
def two_class_folder(tmp_path: Path) -> Path:
    """``zebra`` holds red images, ``apple`` blue ones: labels follow sorted names, not creation order."""
    root = tmp_path / "photos"
    save_solid(root / "zebra" / "b.png", RED, size=(64, 48))
    save_solid(root / "zebra" / "a.jpg", RED, size=(20, 50))
    save_solid(root / "zebra" / "nested" / "c.bmp", RED)
    save_solid(root / "apple" / "x.png", BLUE, mode="P")
    save_solid(root / "apple" / "y.png", BLUE, mode="L")
    (root / "apple" / "notes.txt").write_text("not an image, ignored")
    (root / "stray.png").write_bytes(b"files directly under the root are ignored")
    return root


def test_labels_follow_sorted_class_folder_names(two_class_folder: Path) -> None:
    dataset = load_image_folder(two_class_folder, image_size=16)
    assert dataset.classes == ("apple", "zebra")
    assert dataset.labels.tolist() == [0, 0, 1, 1, 1]
    assert dataset.name == "image-folder:photos"


def test_rgb_images_are_resized_to_the_square(two_class_folder: Path) -> None:
    dataset = load_image_folder(two_class_folder, image_size=16, color_mode="rgb")
    assert dataset.images.shape == (5, 3, 16, 16)
    assert dataset.images.dtype == torch.uint8
    red = dataset.images[dataset.labels == 1].int()
    # JPEG shifts solid colours a little; the channel order must still be R, G, B.
    assert red[:, 0].min() >= 240
    assert red[:, 1:].max() <= 15
    blue = dataset.images[0].int()  # x.png, a palette image
    assert blue[2].min() >= 250
    assert blue[:2].max() <= 5


def test_grey_mode_gives_one_channel(two_class_folder: Path) -> None:
    dataset = load_image_folder(two_class_folder, image_size=8, color_mode="grey")
    assert dataset.images.shape == (5, 1, 8, 8)
    # Pillow's luma of pure red is 0.299 * 255 = 76.
    assert abs(int(dataset.images[-1, 0, 4, 4]) - 76) <= 3


def test_transparent_and_alpha_images_load(tmp_path: Path) -> None:
    """Alpha is dropped; palette transparency given as bytes would make Pillow warn (an error in tests)."""
    root = tmp_path / "root"
    (root / "only").mkdir(parents=True)
    Image.new("RGBA", (10, 10), (10, 200, 30, 0)).save(root / "only" / "alpha.png")
    palette = Image.new("RGB", (10, 10), (1, 2, 3)).convert("P")
    palette.save(root / "only" / "palette.png", transparency=bytes([0, 128, 255]))
    dataset = load_image_folder(root, image_size=4)
    assert dataset.images.shape == (2, 3, 4, 4)
    assert dataset.images[0, :, 0, 0].tolist() == [10, 200, 30]


def test_aspect_ratio_is_kept_by_centre_cropping(tmp_path: Path) -> None:
    """A wide image, left half black and right half white, crops to its middle: half black, half white."""
    root = tmp_path / "root"
    (root / "only").mkdir(parents=True)
    image = Image.new("L", (40, 10), 0)
    image.paste(255, (20, 0, 40, 10))
    image.save(root / "only" / "wide.png")
    pixels = load_image_folder(root, image_size=10, color_mode="grey").images[0, 0]
    assert pixels[:, 0].max() <= 10  # left edge of the crop is black, not squashed
    assert pixels[:, -1].min() >= 245


def test_unreadable_image_is_named(two_class_folder: Path) -> None:
    broken = two_class_folder / "apple" / "broken.png"
    broken.write_bytes(b"this is not a png")
    with pytest.raises(DataError, match="unreadable image") as raised:
        load_image_folder(two_class_folder)
    assert str(broken) in str(raised.value)


def test_truncated_image_is_named(two_class_folder: Path) -> None:
    truncated = two_class_folder / "zebra" / "b.png"
    content = truncated.read_bytes()
    truncated.write_bytes(content[: len(content) // 2])
    with pytest.raises(DataError, match="unreadable image") as raised:
        load_image_folder(two_class_folder)
    assert str(truncated) in str(raised.value)


def test_empty_root_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no class sub-folders"):
        load_image_folder(tmp_path)


def test_missing_root_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="missing"):
        load_image_folder(tmp_path / "absent")


def test_class_folder_without_images_is_named(two_class_folder: Path) -> None:
    empty = two_class_folder / "mango"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    with pytest.raises(DataError, match="empty class folder") as raised:
        load_image_folder(two_class_folder)
    assert str(empty) in str(raised.value)


@pytest.mark.parametrize("image_size", [0, -3, 2.5, True])
def test_bad_image_size_is_a_configuration_error(two_class_folder: Path, image_size: object) -> None:
    with pytest.raises(ConfigurationError, match="image_size"):
        load_image_folder(two_class_folder, image_size=image_size)  # type: ignore[arg-type]


def test_unknown_color_mode_is_a_configuration_error(two_class_folder: Path) -> None:
    with pytest.raises(ConfigurationError, match="color_mode"):
        load_image_folder(two_class_folder, color_mode="cmyk")  # type: ignore[arg-type]


# Registry: the held-out split ------------------------------------------------------------------


@pytest.fixture
def ten_per_class_folder(tmp_path: Path) -> Path:
    root = tmp_path / "ten"
    for class_name, color in (("blue", BLUE), ("red", RED)):
        for number in range(10):
            save_solid(
                root / class_name / f"{number:02d}.png", (color[0], number * 20, color[2]), size=(8, 8)
            )
    return root


def pixel_keys(images: torch.Tensor) -> set[tuple[int, ...]]:
    """Each image here is identified by its (red, green, blue) colour."""
    return {tuple(image[:, 0, 0].tolist()) for image in images}


def test_registry_holds_out_a_stratified_disjoint_test_split(ten_per_class_folder: Path) -> None:
    train = load_dataset("image-folder", ten_per_class_folder, "train", image_size=4, test_fraction=0.3)
    test = load_dataset("image-folder", ten_per_class_folder, "test", image_size=4, test_fraction=0.3)
    assert torch.bincount(train.labels).tolist() == [7, 7]
    assert torch.bincount(test.labels).tolist() == [3, 3]
    assert pixel_keys(train.images).isdisjoint(pixel_keys(test.images))
    assert len(pixel_keys(train.images) | pixel_keys(test.images)) == 20


def test_registry_split_is_deterministic_and_seeded(ten_per_class_folder: Path) -> None:
    first = load_dataset("image-folder", ten_per_class_folder, "test", image_size=4, split_seed=1)
    again = load_dataset("image-folder", ten_per_class_folder, "test", image_size=4, split_seed=1)
    other = load_dataset("image-folder", ten_per_class_folder, "test", image_size=4, split_seed=2)
    assert torch.equal(first.images, again.images)
    assert pixel_keys(first.images) != pixel_keys(other.images)


def test_registry_passes_color_mode_and_limit(ten_per_class_folder: Path) -> None:
    dataset = load_dataset(
        "image-folder", ten_per_class_folder, "train", limit=4, image_size=6, color_mode="grey"
    )
    assert dataset.images.shape == (4, 1, 6, 6)
    assert torch.bincount(dataset.labels).tolist() == [2, 2]


def test_registry_rejects_unknown_options_names_and_splits(ten_per_class_folder: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"unknown option.*resolution.*accepted: image_size"):
        load_dataset("image-folder", ten_per_class_folder, "train", resolution=32)
    with pytest.raises(ConfigurationError, match="fashion-mnist, cifar10, image-folder"):
        load_dataset("imagenet", ten_per_class_folder, "train")
    with pytest.raises(ConfigurationError, match="unknown split"):
        load_dataset("image-folder", ten_per_class_folder, "validation")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="test_fraction"):
        load_dataset("image-folder", ten_per_class_folder, "test", test_fraction=1.5)
    with pytest.raises(ConfigurationError, match="path"):
        load_dataset("image-folder", None, "test")
    with pytest.raises(ConfigurationError, match="unknown option"):
        load_dataset("fashion-mnist", None, "test", image_size=32)
