"""Breast cancer pipeline: a reproducible, tracked Kedro pipeline for breast-image classifiers."""

from breast_cancer_pipeline.telemetry import keep_usage_data_local

__version__ = "0.1.0"

# Before any tool that could send usage data is imported by the project's code.
keep_usage_data_local()
