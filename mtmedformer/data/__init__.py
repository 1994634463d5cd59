"""Data layer: records, readers for the manifest and public layouts, synthetic data, datasets and splits."""
