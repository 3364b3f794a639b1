"""Sweep directories: the layout (every file name), atomic I/O, the matrix type and the store."""

from forgetscope.store.io import atomic_path, write_json, write_npy, write_parquet
from forgetscope.store.layout import (
    AnalysisLayout,
    PilotLayout,
    PredictLayout,
    ScalingLayout,
    StudyLayout,
    SweepLayout,
)
from forgetscope.store.matrix import ForgettingMatrix
from forgetscope.store.schema import RunRecord
from forgetscope.store.sweep_store import SweepStore, load_forgetting, write_matrix_sweep

__all__ = ["AnalysisLayout", "ForgettingMatrix", "PilotLayout", "PredictLayout", "RunRecord", "ScalingLayout",
           "StudyLayout", "SweepLayout",
           "SweepStore", "atomic_path", "load_forgetting", "write_json", "write_matrix_sweep", "write_npy",
           "write_parquet"]
