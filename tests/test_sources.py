"""Source-aware splits from the release's metadata: sources kept apart, or held out for testing."""

from __future__ import annotations

from pathlib import Path

import pytest

from covidxr.data.formats.layout import find_layout
from covidxr.data.formats.sources import read_sources, source_of
from covidxr.data.phantoms.synthetic import generate_phantoms
from covidxr.data.splitting.index import build_index
from covidxr.data.splitting.spec import SplitSpec
from covidxr.utils.errors import DatasetError


@pytest.fixture(scope="module")
def with_sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Phantoms with the release's metadata files: two made-up collections per class."""
    return generate_phantoms(tmp_path_factory.mktemp("sources") / "data", per_class=20, size=64)


@pytest.mark.parametrize(
    ("url", "source"),
    [
        (
            "https://github.com/ieee8023/covid-chestxray-dataset",
            "github.com/ieee8023/covid-chestxray-dataset",
        ),
        (
            "https://www.kaggle.com/c/rsna-pneumonia-detection-challenge/data",
            "kaggle.com/c/rsna-pneumonia-detection-challenge",
        ),
        (
            "https://sirm.org/category/senza-categoria/covid-19/",
            "sirm.org/category/senza-categoria",
        ),
        (
            "bimcv.cipf.es/bimcv-projects/bimcv-covid19/#1590",
            "bimcv.cipf.es/bimcv-projects/bimcv-covid19",
        ),
    ],
)
def test_a_source_is_the_collection_its_url_names(url: str, source: str) -> None:
    assert source_of(url) == source


def test_group_by_source_keeps_each_collection_in_one_split(with_sources: Path) -> None:
    index = build_index(with_sources, SplitSpec(split_fractions=(0.5, 0.5, 0.0), group_by="source"))
    sources = read_sources(find_layout(with_sources), ["COVID", "Normal"])
    seen: dict[str, set[str]] = {}
    for split, samples in index.splits.items():
        for s in samples:
            seen.setdefault(sources[s.path], set()).add(split)
    assert len(seen) == 4 and all(len(splits) == 1 for splits in seen.values())
    assert index.splits["train"] and index.splits["val"]


def test_held_out_sources_are_the_test_split(with_sources: Path) -> None:
    held = "example.org/covid-collection-1"
    index = build_index(with_sources, SplitSpec(test_sources=[held]))
    assert len(index.splits["test"]) == 10
    assert all(
        int(s.path.split("-")[-1].removesuffix(".png")) % 2 == 0 for s in index.splits["test"]
    )
    assert len(index.splits["train"]) + len(index.splits["val"]) == 30
    with pytest.raises(DatasetError, match="covid-collection-9"):
        build_index(with_sources, SplitSpec(test_sources=["example.org/covid-collection-9"]))


def test_without_metadata_the_error_names_the_missing_file(
    with_sources: Path, tmp_path: Path
) -> None:
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(with_sources, copy)
    (copy / "Normal.metadata.xlsx").unlink()
    with pytest.raises(DatasetError, match=r"missing: .*Normal\.metadata\.xlsx"):
        build_index(copy, SplitSpec(group_by="source"))
