"""Loading batches: the ``LightningDataModule``, transforms, seeded samplers, occlusion."""
