"""Data side, one sub-package per job: ``formats`` reads files (PNG/JPEG/TIFF, DICOM, class
folders, manifests, source metadata), ``splitting`` forms splits and groups (near-duplicates,
patients, sites, folds, the leakage audit), ``loading`` turns a split into batches (the
``LightningDataModule``, transforms, samplers, occlusion), ``phantoms`` makes synthetic X-rays.
Imports go ``formats`` <- ``splitting``, ``phantoms`` <- ``loading``."""
