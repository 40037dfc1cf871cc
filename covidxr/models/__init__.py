"""Model side: the ResNet50 backbone, classification heads, metrics and the LightningModule."""
