"""Geometry presets (JSON), installed as the package ``monai_gnerf.presets``."""
