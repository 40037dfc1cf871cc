"""Data side: find, split, decode, augment and load chest X-rays; synthetic phantoms."""
