"""MLflow pyfunc entry of a segstudy model ("models from code": no pickled Python objects).

`mlflow.pyfunc.load_model("models:/<name>/<version>")` runs this file; `predict` takes one
channel-first image as a numpy array (already normalised like the study's data) and returns
the foreground probabilities. `segstudy predict` reads the same package without MLflow's loader.
"""

from __future__ import annotations

from pathlib import Path
import mlflow
import numpy as np


class SegstudyModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):  # noqa: ANN001 - MLflow validates untyped signatures only
        from study.serving.mlflow_model import PACKAGE_ARTIFACT
        from study.serving.package import load_package

        self.package = load_package(Path(context.artifacts[PACKAGE_ARTIFACT]))

    # np.ndarray is a hint MLflow accepts without inferring a schema: it then neither validates
    # nor warns that `predict` is untyped (once per logged model, in every study's output).
    def predict(self, context, model_input: np.ndarray, params: dict | None = None) -> np.ndarray:  # noqa: ANN001
        from study.serving.inference import probabilities

        return probabilities(self.package, np.asarray(model_input, dtype=np.float32))


mlflow.models.set_model(SegstudyModel())
