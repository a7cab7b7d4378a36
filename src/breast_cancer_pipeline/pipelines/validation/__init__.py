"""The data gate: Great Expectations checks on the image manifest before anything learns from it."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
