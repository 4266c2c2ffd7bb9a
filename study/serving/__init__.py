"""Confirmed models as self-contained packages: written by the trial, logged and registered in
MLflow by the driver, applied to new images by `segstudy predict`."""

from study.serving.package import ModelPackage, Preprocessing, load_package, write_package

__all__ = ["ModelPackage", "Preprocessing", "load_package", "write_package"]
