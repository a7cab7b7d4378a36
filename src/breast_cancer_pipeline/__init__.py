"""Breast cancer pipeline: a reproducible, tracked Kedro pipeline for breast-image classifiers."""

__version__ = "0.1.0"
