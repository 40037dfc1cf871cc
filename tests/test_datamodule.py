"""The DataModule's batches, samplers, split file and augmentation configs."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from covidxr.data.loading.datamodule import RadiographyDataModule, SyntheticDataModule
from covidxr.data.loading.transforms import NormalizeToRGB, build_transform
from covidxr.data.phantoms.synthetic import MANIFEST
from covidxr.utils.config import load_augmentations
from covidxr.utils.errors import DatasetError
from covidxr.weights.registry import IMAGENET_MEAN, IMAGENET_STD

CLASSES = ("COVID", "Normal", "Lung_Opacity", "Viral Pneumonia")


def check_raw_batch(images: torch.Tensor, labels: torch.Tensor, size: int, classes: int) -> None:
    assert images.dtype == torch.uint8
    assert images.shape[1:] == (1, size, size)
    assert labels.dtype == torch.int64
    assert int(labels.min()) >= 0 and int(labels.max()) < classes
    assert int(images.max()) > int(images.min())  # real content, not a constant


def check_normalised(images: torch.Tensor, size: int, mean, std) -> None:
    assert images.dtype == torch.float32
    assert images.shape[1:] == (3, size, size)
    for c in range(3):  # the 0..255 range mapped through this channel's mean/std
        low, high = (0 - mean[c]) / std[c], (1 - mean[c]) / std[c]
        assert low - 1e-5 <= float(images[:, c].min()) <= float(images[:, c].max()) <= high + 1e-5


@pytest.mark.parametrize("num_classes", [2, 3, 4])
def test_batches_from_synthetic_data(phantoms: Path, tmp_path: Path, num_classes: int) -> None:
    dm = RadiographyDataModule(
        phantoms,
        classes=CLASSES[:num_classes],
        image_size=48,
        batch_size=8,
        output_dir=tmp_path,
        train_augmentations=load_augmentations("strong"),
    )
    dm.setup("fit")
    for split, loader in zip(
        ("train", "val", "test"),
        (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()),
        strict=True,
    ):
        images, labels, indices = next(iter(loader))
        check_raw_batch(images, labels, 48, num_classes)
        # each image carries its position in the split: the record of predictions places it
        samples = dm.datasets[split].samples
        assert labels.tolist() == [samples[i].label for i in indices.tolist()]
        if split != "train":
            assert indices.tolist() == list(range(len(indices)))
        normalised = NormalizeToRGB(IMAGENET_MEAN, IMAGENET_STD)(images)
        check_normalised(normalised, 48, IMAGENET_MEAN, IMAGENET_STD)
    assert dm.num_classes == num_classes
    assert (tmp_path / "split.csv").is_file()


def test_batches_from_the_real_database(real_data: Path) -> None:
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    dm = RadiographyDataModule(real_data, image_size=64, batch_size=16, limit_per_class=40)
    dm.setup("fit")
    images, labels, _ = next(iter(dm.train_dataloader()))
    check_raw_batch(images, labels, 64, 2)
    check_normalised(NormalizeToRGB(mean, std)(images), 64, mean, std)
    assert dm.class_counts == [32, 32]


def test_normalisation_matches_albumentations_per_image() -> None:
    import albumentations as A

    grey = (np.random.default_rng(0).random((1, 1, 16, 16)) * 255).astype(np.uint8)
    ours = NormalizeToRGB(IMAGENET_MEAN, IMAGENET_STD)(torch.from_numpy(grey))[0].numpy()
    reference = A.Compose([A.ToRGB(), A.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    expected = reference(image=grey[0, 0])["image"].transpose(2, 0, 1)
    np.testing.assert_allclose(ours, expected, atol=1e-5)


def test_normalisation_refuses_float_input() -> None:
    with pytest.raises(ValueError, match="uint8 grey"):
        NormalizeToRGB(IMAGENET_MEAN, IMAGENET_STD)(torch.zeros(1, 3, 4, 4))


@pytest.mark.parametrize("name", ["none", "default", "strong"])
def test_augment_configs_build_and_keep_shape(name: str) -> None:
    transform = build_transform(40, load_augmentations(name))
    image = (np.random.default_rng(1).random((57, 61)) * 255).astype(np.uint8)
    out = transform(image=image)["image"]
    assert out.shape == (1, 40, 40) and out.dtype == torch.uint8


def test_unknown_augment_config_lists_choices() -> None:
    with pytest.raises(ValueError, match="default"):
        load_augmentations("extreme")


def test_augmentation_changes_training_images_only(phantoms: Path) -> None:
    dm = RadiographyDataModule(
        phantoms, image_size=32, train_augmentations=load_augmentations("strong")
    )
    dm.setup("fit")
    train, val = dm.datasets["train"], dm.datasets["val"]
    torch.manual_seed(0)
    assert any(not torch.equal(train[0][0], train[0][0]) for _ in range(5))
    assert torch.equal(val[0][0], val[0][0])


def test_weighted_sampler_balances_batches(tmp_path: Path) -> None:
    from covidxr.data.phantoms.synthetic import generate_phantoms

    root = generate_phantoms(tmp_path / "d", per_class=40, size=32)
    # Make the training set imbalanced 10:40 through a saved split.
    dm = RadiographyDataModule(root, image_size=32, output_dir=tmp_path)
    dm.setup()
    split = tmp_path / "split.csv"
    rows = list(csv.DictReader(split.open()))
    kept = [r for r in rows if r["class"] == "Normal" or int(r["path"].split("-")[-1][:-4]) <= 12]
    with split.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(kept)
    dm = RadiographyDataModule(
        root, image_size=32, batch_size=500, split_file=split, weighted_sampler=True
    )
    dm.setup()
    counts = dm.class_counts
    assert counts[0] < counts[1] / 2
    weights = dm.class_weights()
    assert weights[0] > weights[1]
    loader = dm.train_dataloader()
    drawn = torch.cat([labels for _ in range(20) for _, labels, _ in loader])
    assert len(drawn) == 20 * sum(counts)
    assert abs(float(drawn.float().mean()) - 0.5) < 0.08  # unweighted: 32/42 = 0.76


def test_loaders_need_setup(phantoms: Path) -> None:
    dm = RadiographyDataModule(phantoms)
    with pytest.raises(RuntimeError, match="setup"):
        dm.train_dataloader()


def test_empty_split_is_a_clear_error(phantoms: Path) -> None:
    dm = RadiographyDataModule(phantoms, split_fractions=(1.0, 0.0, 0.0))
    dm.setup()
    with pytest.raises(ValueError, match=r"val split .* is empty"):
        dm.val_dataloader()


def test_synthetic_module_generates_once_and_protects_other_folders(tmp_path: Path) -> None:
    root = tmp_path / "phantoms"
    dm = SyntheticDataModule(root, per_class=6, phantom_size=40, image_size=32)
    dm.setup()
    first = (root / "COVID" / "images" / "COVID-1.png").stat().st_mtime_ns
    SyntheticDataModule(root, per_class=6, phantom_size=40, image_size=32).setup()
    assert (root / "COVID" / "images" / "COVID-1.png").stat().st_mtime_ns == first
    SyntheticDataModule(root, per_class=7, phantom_size=40).setup()  # other settings: replaced
    assert len(list((root / "Normal" / "images").glob("*.png"))) == 7
    other = tmp_path / "mine"
    (other / "notes.txt").parent.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(DatasetError, match="refusing"):
        SyntheticDataModule(other, per_class=2).setup()
    assert (other / "notes.txt").read_text() == "keep me"
    assert (root / MANIFEST).is_file()


def test_lung_masks_of_another_size_are_resized_nearest(tmp_path: Path) -> None:
    """A mask stays a mask when resized: occluded pixels are exactly the nearest-neighbour
    resize's (a bilinear resize would blur its edges into a different outline)."""
    import cv2

    from covidxr.data.loading.occlusion import Occluder

    mask = np.zeros((5, 7), np.uint8)
    mask[1:4, 2:6] = 255
    mask[2, 3] = 0
    path = tmp_path / "COVID" / "masks" / "COVID-1.png"
    path.parent.mkdir(parents=True)
    assert cv2.imwrite(str(path), mask)
    image = np.full((13, 17), 200, np.uint8)
    occluded = Occluder("lungs", root=tmp_path)(image, "COVID/images/COVID-1.png")
    nearest = cv2.resize(mask, (17, 13), interpolation=cv2.INTER_NEAREST) > 127
    assert np.array_equal(occluded == 0, nearest)


def test_a_broken_lung_mask_is_named_before_training(tmp_path: Path) -> None:
    from covidxr.data.phantoms.synthetic import generate_phantoms

    root = generate_phantoms(tmp_path / "d", per_class=6, classes=("COVID", "Normal"), size=32)
    mask = root / "Normal" / "masks" / "Normal-3.png"
    mask.write_bytes(mask.read_bytes()[:30])
    dm = RadiographyDataModule(root, image_size=32, occlude="lungs")
    with pytest.raises(DatasetError, match=r"1 lung mask\(s\) cannot be read: .*Normal-3\.png"):
        dm.setup("fit")
    mask.unlink()
    with pytest.raises(DatasetError, match="have none"):
        RadiographyDataModule(root, image_size=32, occlude="lungs").setup("fit")


def test_a_label_fraction_trains_on_its_subset_and_records_the_rest(
    phantoms: Path, tmp_path: Path
) -> None:
    import csv

    dm = RadiographyDataModule(
        phantoms, image_size=32, batch_size=4, output_dir=tmp_path, train_fraction=0.25
    )
    dm.setup("fit")
    rows = list(csv.DictReader((tmp_path / "split.csv").open()))
    train = [r for r in rows if r["split"] == "train"]
    assert len(dm.datasets["train"]) == len(train) and train
    assert sum(r["split"] == "unlabeled" for r in rows) == 3 * len(train)
