"""Using a trained model: its preprocessing, predictors (checkpoint, ONNX), export, Grad-CAM."""
