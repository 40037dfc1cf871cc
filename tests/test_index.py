"""Finding images in every release layout, subsets and deterministic stratified splits."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
from conftest import write_png

from covidxr.data.formats.classes import normalize_class_name
from covidxr.data.formats.layout import find_layout
from covidxr.data.splitting.index import build_index
from covidxr.data.splitting.spec import SplitSpec
from covidxr.data.splitting.splits import read_split_csv, select_files, stratified_split
from covidxr.utils.errors import ConfigError, DatasetError


def make_current(root: Path, counts: dict[str, int]) -> Path:
    """The current Kaggle layout, with the masks, spreadsheets and README it ships."""
    for name, n in counts.items():
        for i in range(1, n + 1):
            write_png(root / name / "images" / f"{name}-{i}.png", i)
            write_png(root / name / "masks" / f"{name}-{i}.png", 255)
        (root / f"{name}.metadata.xlsx").write_bytes(b"PK\x03\x04")
    (root / "README.md.txt").write_text("readme")
    return root


def make_flat(root: Path, counts: dict[str, int]) -> Path:
    for name, n in counts.items():
        for i in range(1, n + 1):
            write_png(root / name / f"{name}-{i}.png", i)
    return root


def make_2020(root: Path, counts: dict[str, int]) -> Path:
    for folder, n in counts.items():
        for i in range(1, n + 1):
            write_png(root / folder / f"{folder} ({i}).png", i)
    return root


@pytest.mark.parametrize(
    ("spelling", "canonical"),
    [
        ("COVID-19", "COVID"),
        ("covid", "COVID"),
        ("NORMAL", "Normal"),
        ("Lung_Opacity", "Lung_Opacity"),
        ("lung opacity", "Lung_Opacity"),
        ("Viral Pneumonia", "Viral Pneumonia"),
        ("VIRAL_PNEUMONIA", "Viral Pneumonia"),
        ("Tuberculosis", "Tuberculosis"),
    ],
)
def test_class_names_are_normalised(spelling: str, canonical: str) -> None:
    assert normalize_class_name(spelling) == canonical


def test_current_layout_ignores_masks_and_metadata(tmp_path: Path) -> None:
    root = make_current(tmp_path / "COVID-19_Radiography_Dataset", {"COVID": 3, "Normal": 5})
    layout = find_layout(root)
    assert layout.layout == "current"
    assert layout.counts() == {"COVID": 3, "Normal": 5}
    assert all("images" in f.parts for c in layout.classes.values() for f in c.files)


def test_root_may_be_the_folder_the_archive_was_unpacked_into(tmp_path: Path) -> None:
    make_current(tmp_path / "archive" / "COVID-19_Radiography_Dataset", {"COVID": 2, "Normal": 2})
    layout = find_layout(tmp_path)
    assert layout.root == tmp_path / "archive" / "COVID-19_Radiography_Dataset"


def test_flat_layout(tmp_path: Path) -> None:
    layout = find_layout(make_flat(tmp_path, {"COVID": 2, "Normal": 3, "Lung_Opacity": 1}))
    assert layout.layout == "flat"
    assert layout.counts() == {"COVID": 2, "Lung_Opacity": 1, "Normal": 3}


def test_2020_layout_normalises_folder_names(tmp_path: Path) -> None:
    root = make_2020(
        tmp_path / "COVID-19 Radiography Database",
        {"COVID-19": 2, "NORMAL": 4, "Viral Pneumonia": 3},
    )
    layout = find_layout(tmp_path)
    assert layout.layout == "2020"
    assert layout.root == root
    assert layout.counts() == {"COVID": 2, "Normal": 4, "Viral Pneumonia": 3}
    index = build_index(
        tmp_path, SplitSpec(classes=["COVID-19", "NORMAL", "Viral Pneumonia"], seed=1)
    )
    assert index.classes == ("COVID", "Normal", "Viral Pneumonia")
    labels = {s.class_name: s.label for v in index.splits.values() for s in v}
    assert labels == {"COVID": 0, "Normal": 1, "Viral Pneumonia": 2}


def test_files_sort_naturally(tmp_path: Path) -> None:
    layout = find_layout(make_flat(tmp_path, {"COVID": 12, "Normal": 1}))
    names = [f.name for f in layout.classes["COVID"].files]
    assert names[:3] == ["COVID-1.png", "COVID-2.png", "COVID-3.png"]
    assert names[-1] == "COVID-12.png"


def test_missing_root_names_path_layouts_and_source(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as err:
        build_index(tmp_path / "nope")
    message = str(err.value)
    assert str(tmp_path / "nope") in message
    assert "kaggle.com/datasets/tawsifurrahman/covid19-radiography-database" in message


def test_folder_without_classes_lists_expected_layouts(tmp_path: Path) -> None:
    (tmp_path / "cats").mkdir()
    with pytest.raises(DatasetError, match=r"<Class>/images/\*\.png"):
        find_layout(tmp_path)


def test_two_datasets_under_root_is_ambiguous(tmp_path: Path) -> None:
    make_flat(tmp_path / "a", {"COVID": 1, "Normal": 1})
    make_flat(tmp_path / "b", {"COVID": 1, "Normal": 1})
    with pytest.raises(DatasetError, match="Several datasets"):
        find_layout(tmp_path)


def test_missing_class_is_named(tmp_path: Path) -> None:
    make_flat(tmp_path, {"COVID": 2, "Normal": 2})
    with pytest.raises(DatasetError, match="'Lung_Opacity' is missing"):
        build_index(tmp_path, SplitSpec(classes=["COVID", "Normal", "Lung_Opacity"]))


def test_empty_class_is_named(tmp_path: Path) -> None:
    make_flat(tmp_path, {"COVID": 2})
    (tmp_path / "Normal" / "images").mkdir(parents=True)
    with pytest.raises(DatasetError, match="'Normal' has no images"):
        build_index(tmp_path, SplitSpec(classes=["COVID", "Normal"]))


@pytest.mark.parametrize(
    ("classes", "match"),
    [(["COVID"], "2 to 4"), (["COVID", "Cats"], "Unknown class"), (["COVID", "covid"], "twice")],
)
def test_bad_class_lists(tmp_path: Path, classes: list[str], match: str) -> None:
    make_flat(tmp_path, {"COVID": 2, "Normal": 2})
    with pytest.raises(DatasetError, match=match):
        build_index(tmp_path, SplitSpec(classes=classes))


def test_limit_per_class_is_deterministic_and_stable_when_files_are_added(tmp_path: Path) -> None:
    root = make_flat(tmp_path, {"COVID": 30, "Normal": 40})
    first = select_files(find_layout(root), ["COVID", "Normal"], limit_per_class=10, seed=3)
    again = select_files(find_layout(root), ["COVID", "Normal"], limit_per_class=10, seed=3)
    other_seed = select_files(find_layout(root), ["COVID", "Normal"], limit_per_class=10, seed=4)
    assert first == again
    assert first != other_seed
    assert [sum(s.label == k for s in first) for k in (0, 1)] == [10, 10]
    chosen = {s.path for s in first}
    # A new file either joins the subset in place of one file or leaves it unchanged.
    write_png(root / "COVID" / "COVID-31.png", 31)
    grown = {s.path for s in select_files(find_layout(root), ["COVID", "Normal"], 10, seed=3)}
    assert len(chosen - grown) <= 1


def test_balance_subsamples_to_the_smallest_class(tmp_path: Path) -> None:
    root = make_flat(tmp_path, {"COVID": 7, "Normal": 19})
    samples = select_files(find_layout(root), ["COVID", "Normal"], balance=True)
    assert [sum(s.label == k for s in samples) for k in (0, 1)] == [7, 7]
    limited = select_files(find_layout(root), ["COVID", "Normal"], 5, balance=True)
    assert len(limited) == 10


def test_split_is_deterministic_stratified_and_disjoint(phantoms: Path) -> None:
    classes = ["COVID", "Normal", "Lung_Opacity"]
    a = build_index(phantoms, SplitSpec(classes=classes, split_fractions=(0.5, 0.25, 0.25), seed=7))
    b = build_index(phantoms, SplitSpec(classes=classes, split_fractions=(0.5, 0.25, 0.25), seed=7))
    c = build_index(phantoms, SplitSpec(classes=classes, split_fractions=(0.5, 0.25, 0.25), seed=8))
    assert a.splits == b.splits
    assert a.splits != c.splits
    assert {k: a.class_counts(k) for k in a.splits} == {
        "train": [12, 12, 12],
        "val": [6, 6, 6],
        "test": [6, 6, 6],
    }
    paths = [s.path for v in a.splits.values() for s in v]
    assert len(paths) == len(set(paths)) == 72


def test_default_fractions_and_tiny_classes_keep_every_split(tmp_path: Path) -> None:
    root = make_flat(tmp_path, {"COVID": 5, "Normal": 100})
    index = build_index(root)
    assert index.class_counts("train") == [3, 80]
    assert index.class_counts("val") == [1, 10]
    assert index.class_counts("test") == [1, 10]


def test_bad_fractions_are_refused(phantoms: Path) -> None:
    with pytest.raises(ConfigError, match="split_fractions"):
        build_index(phantoms, SplitSpec(split_fractions=(0.8, 0.3, 0.1)))


def test_split_file_round_trip(phantoms: Path, tmp_path: Path) -> None:
    index = build_index(
        phantoms, SplitSpec(classes=["COVID", "Normal"], limit_per_class=10, seed=5)
    )
    path = index.write_split_csv(tmp_path / "run" / "split.csv")
    with path.open() as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["path", "label", "class", "split", "group"]
    assert len(rows) == 20
    assert not Path(rows[0]["path"]).is_absolute()
    assert (phantoms / rows[0]["path"]).is_file()
    reused = build_index(
        phantoms, SplitSpec(classes=["COVID", "Normal"], seed=999, split_file=path)
    )
    assert reused.splits == index.splits


def test_split_file_with_other_classes_is_refused(phantoms: Path, tmp_path: Path) -> None:
    path = build_index(phantoms, SplitSpec(classes=["COVID", "Normal"])).write_split_csv(
        tmp_path / "split.csv"
    )
    with pytest.raises(DatasetError, match=r"does not match data\.classes"):
        build_index(phantoms, SplitSpec(classes=["Normal", "COVID"], split_file=path))


def test_split_file_naming_missing_images_is_refused(tmp_path: Path) -> None:
    root = make_flat(tmp_path / "data", {"COVID": 4, "Normal": 4})
    path = build_index(root).write_split_csv(tmp_path / "split.csv")
    (root / "COVID" / "COVID-2.png").unlink()
    with pytest.raises(DatasetError, match=r"COVID/COVID-2\.png"):
        read_split_csv(path, root, ("COVID", "Normal"))


def test_split_file_listing_an_image_twice_is_refused(tmp_path: Path) -> None:
    root = make_flat(tmp_path / "data", {"COVID": 4, "Normal": 4})
    path = build_index(root).write_split_csv(tmp_path / "split.csv")
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines, lines[1].replace(",train", ",test")]) + "\n")
    with pytest.raises(DatasetError, match="more than once"):
        read_split_csv(path, root, ("COVID", "Normal"))


def test_stratified_split_of_nothing_is_empty() -> None:
    assert stratified_split([]) == {"train": [], "val": [], "test": []}


def test_label_fractions_are_nested_grouped_and_leave_val_and_test_alone(
    phantoms: Path, tmp_path: Path
) -> None:
    """data.train_fraction: per class, whole groups, the 25% subset inside the 50% one, the
    same validation and test images; a saved split gives back its subset."""
    from covidxr.data.splitting.splits import UNLABELED, Sample, labeled_subset

    spec = {"classes": ["COVID", "Normal"], "seed": 3}
    full = build_index(phantoms, SplitSpec(**spec))
    quarter = build_index(phantoms, SplitSpec(**spec, train_fraction=0.25))
    half = build_index(phantoms, SplitSpec(**spec, train_fraction=0.5))
    for part in (quarter, half):
        assert part.splits["val"] == full.splits["val"]
        assert part.splits["test"] == full.splits["test"]
        assert sorted(part.splits["train"] + part.splits[UNLABELED], key=str) == sorted(
            full.splits["train"], key=str
        )
    assert set(quarter.splits["train"]) < set(half.splits["train"])
    n = full.class_counts("train")[0]
    assert quarter.class_counts("train") == [math.ceil(n / 4)] * 2
    assert half.class_counts("train") == [math.ceil(n / 2)] * 2
    path = quarter.write_split_csv(tmp_path / "split.csv")
    again = build_index(phantoms, SplitSpec(**spec, split_file=path, train_fraction=0.25))
    assert again.splits == quarter.splits  # resume: not a quarter of a quarter
    assert build_index(phantoms, SplitSpec(**spec, split_file=path)).splits == quarter.splits
    images = build_index(phantoms, SplitSpec(**spec, train_images=n))
    assert images.class_counts("train") == [math.ceil(n / 2)] * 2

    pool = [Sample(f"{c}/{i}.png", c, "AB"[c], f"g{c}-{i // 4}") for c in (0, 1) for i in range(40)]
    labeled, unlabeled = labeled_subset(pool, 0.1, seed=1)
    groups = {s.group for s in labeled}
    assert len(labeled) == 8 and not groups & {s.group for s in unlabeled}  # whole groups


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"train_fraction": 0.0}, "train_fraction=0.0: give a share"),
        ({"train_fraction": 1.5}, "train_fraction=1.5: give a share"),
        ({"train_fraction": 0.5, "train_images": 10}, "both set"),
        ({"train_images": 1}, "train_images=1: give an integer of at least 2"),
    ],
)
def test_bad_label_fractions_are_one_line(options: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        SplitSpec(**options)


def test_more_training_images_than_the_split_holds_is_named(phantoms: Path) -> None:
    with pytest.raises(DatasetError, match="train_images=5000: the training split holds 40"):
        build_index(phantoms, SplitSpec(classes=["COVID", "Normal"], train_images=5000))
