"""Reading files: image formats (one decoder for PNG/JPEG/TIFF and DICOM), dataset layouts,
label manifests, source metadata, class names. A new format is a reader here."""
