"""Synthetic BUSI-like breast-ultrasound demo dataset."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
