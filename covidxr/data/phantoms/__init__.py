"""Synthetic chest X-ray phantoms (offline default data, DICOM phantoms, shortcut markers)."""
