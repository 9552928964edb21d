"""Blocks of wedges on a 2-worker Dask LocalCluster equal the single-process run (DESIGN §15)."""

import numpy as np
import pytest

from gpudiffuse.experiment import ImportParameters
from gpudiffuse.integration import IntegrationParameters
from gpudiffuse.backend import resolve_device
from gpudiffuse.experiment import import_experiment
from gpudiffuse.steps.integrate import EngineChoice, IntegrateParameters, _integrate
from gpudiffuse.steps.limits import resolve_dmin
from gpudiffuse.masking.peaks import PeakParameters, find_peaks

pytest.importorskip("distributed")


def test_dask_blocks_equal_one_process(tiny_dataset):
    experiment = import_experiment(ImportParameters(xds=str(tiny_dataset)))
    dmin = resolve_dmin(experiment, None)
    search = find_peaks(experiment, PeakParameters(), dmin, progress=False)
    integration = IntegrationParameters(ndiv=(3, 3, 3), wedge_degrees=1.0)
    backend = resolve_device("cpu")
    tables = {}
    for name, extra in (("single", {}), ("dask", {"dask_workers": 2})):
        execution = EngineChoice(device="cpu", **extra).execution(backend)
        tables[name] = _integrate(experiment, search, dmin, IntegrateParameters(integration), execution, progress=False)
    for table in ("diffuse", "excluded"):
        a, b = getattr(tables["single"], table), getattr(tables["dask"], table)
        assert set(a) == set(b) and len(a["H"]) > 1000
        for key in a:
            if a[key].dtype.kind in "iu":
                np.testing.assert_array_equal(a[key], b[key], err_msg=key)
            else:
                np.testing.assert_allclose(a[key], b[key], rtol=1e-12, atol=0, err_msg=key)
    assert tables["single"].zingers == tables["dask"].zingers
