"""Where each image came from: the source collections named by the release's metadata.

The current release ships ``<Class>.metadata.xlsx`` beside each class folder, with a row per
image (``FILE NAME``, ``FORMAT``, ``SIZE``, ``URL``); the URL names the collection it was taken
from (a Kaggle challenge, a GitHub repository, a hospital's site). Labels here follow sources, so a
split that keeps each source on one side, or holds whole sources out for testing, measures what a
model learned about lungs rather than about collections.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from covidxr.data.formats.layout import DatasetLayout
from covidxr.utils.errors import DatasetError

NAME_COLUMN, URL_COLUMN = "FILE NAME", "URL"


def source_of(url: str) -> str:
    """A collection's name from its URL: the host and the first two path parts."""
    parsed = urlparse(url.strip() if "://" in url else f"https://{url.strip()}")
    host = parsed.netloc.lower().removeprefix("www.")
    parts = [p for p in parsed.path.split("/") if p][:2]
    return "/".join([host, *parts]) or "unknown"


def metadata_file(layout: DatasetLayout, class_name: str) -> Path:
    folder = layout.classes[class_name].path
    return folder.parent / f"{folder.name}.metadata.xlsx"


def read_sources(layout: DatasetLayout, classes: list[str]) -> dict[str, str]:
    """The source of every image of ``classes``, keyed by its path relative to the root."""
    import openpyxl

    missing = [metadata_file(layout, c) for c in classes if not metadata_file(layout, c).is_file()]
    if missing:
        raise DatasetError(
            f"data.group_by=source and data.test_sources need the metadata the current release "
            f"ships beside each class folder; missing: {', '.join(map(str, missing))}. Use the "
            "current Kaggle release, or data.group_by=none."
        )
    sources: dict[str, str] = {}
    for name in classes:
        book = openpyxl.load_workbook(metadata_file(layout, name), read_only=True)
        rows = book.active.iter_rows(values_only=True)
        header = [str(h).strip().upper() if h is not None else "" for h in next(rows)]
        if NAME_COLUMN not in header or URL_COLUMN not in header:
            raise DatasetError(
                f"{metadata_file(layout, name)} has no {NAME_COLUMN!r} and {URL_COLUMN!r} columns "
                f"(found {header})."
            )
        by_stem = {
            str(row[header.index(NAME_COLUMN)]).strip().lower(): source_of(
                str(row[header.index(URL_COLUMN)] or "")
            )
            for row in rows
            if row[header.index(NAME_COLUMN)] is not None
        }
        book.close()
        for file in layout.classes[name].files:
            relative = file.relative_to(layout.root).as_posix()
            sources[relative] = by_stem.get(file.stem.lower(), "unknown")
    return sources


def write_metadata(folder: Path, class_name: str, files: list[Path], urls: list[str]) -> Path:
    """A ``<Class>.metadata.xlsx`` in the release's columns (synthetic data, tests)."""
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append([NAME_COLUMN, "FORMAT", "SIZE", URL_COLUMN])
    for file, url in zip(files, urls, strict=True):
        sheet.append([file.stem, "PNG", "64*64", url])
    path = folder / f"{class_name}.metadata.xlsx"
    book.save(path)
    return path
