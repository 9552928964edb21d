"""``gpudiffuse demo``: simulate a dataset, process it and compare the map with the truth."""

from __future__ import annotations

import os

from .experiment import ImportParameters
from .integration import IntegrationParameters
from .pipeline import ProcessParameters, process
from .simulate import SimulationParameters, compare_with_truth, format_accuracy, load_model, simulate_dataset

__all__ = ["demo"]


def demo(outdir: str, params: SimulationParameters, device: str = "auto", progress: bool = True):
    """Simulate into OUTDIR/data, process into OUTDIR/processed, compare with the truth."""
    data = os.path.join(outdir, "data")
    if not os.path.exists(os.path.join(data, "truth.h5")):
        simulate_dataset(data, params, progress=progress)
    ndiv = (3, 3, 3)
    result = process(ProcessParameters(ImportParameters(xds=data), IntegrationParameters(ndiv=ndiv), device=device),
                     os.path.join(outdir, "processed"), overwrite=True, progress=progress)
    accuracy = compare_with_truth(result["merged"], load_model(data), ndiv)
    return result, format_accuracy(accuracy)
