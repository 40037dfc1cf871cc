"""Pretrained weights: the registry (one entry of data per weight), the cache, format adapters."""
