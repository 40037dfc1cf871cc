"""``covidxr-synth``: write synthetic chest X-ray phantoms in the database's current layout."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from covidxr.data.formats.classes import KNOWN_CLASSES
from covidxr.data.phantoms.synthetic import generate_phantoms


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="covidxr-synth",
        description="Write synthetic chest X-ray phantoms in the database's current layout.",
    )
    parser.add_argument("out", type=Path, help="output folder (created)")
    parser.add_argument("--per-class", type=int, default=100, help="images per class (100)")
    parser.add_argument(
        "--classes", nargs="+", default=["COVID", "Normal"], help=f"from {list(KNOWN_CLASSES)}"
    )
    parser.add_argument("--size", type=int, default=224, help="side in pixels (224)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    parser.add_argument(
        "--shortcut",
        action="store_true",
        help="burn a marker into the border of COVID images (a known shortcut, for audits)",
    )
    parser.add_argument(
        "--dicom",
        action="store_true",
        help="write 12-bit DICOM of made-up patients (2-4 X-rays each) and sites, with a "
        "labels.csv manifest (path,label,patient,site)",
    )
    args = parser.parse_args(argv)
    if args.per_class < 1 or args.size < 32:
        parser.error("--per-class must be >= 1 and --size >= 32")
    try:
        generate_phantoms(
            args.out,
            args.per_class,
            args.classes,
            args.size,
            args.seed,
            shortcut=args.shortcut,
            dicom=args.dicom,
        )
    except ValueError as exc:
        parser.error(str(exc))
    total = args.per_class * len(args.classes)
    marker = " with a COVID border marker" if args.shortcut else ""
    kind = "DICOM phantoms (and labels.csv)" if args.dicom else "phantoms"
    print(f"Wrote {total} {kind} ({', '.join(args.classes)}){marker} and masks to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
