"""Shared checks of the CC½ that the command line reports for a processed folder."""

import numpy as np

from gpudiffuse.experiment import read_experiment
from gpudiffuse.merge import merge
from gpudiffuse.steps.integrate import load_observations


def folder_cc_half(folder, ndiv=(3, 3, 3)):
    """CC½ per shell of merging the observation table of FOLDER/integrate.nxs directly, with the
    default merge settings: the independent expectation."""
    experiment = read_experiment(str(folder / "experiment.nxs"))
    crystal = experiment.sweeps[0].crystal
    table = load_observations(str(folder))
    return merge(table, experiment.space_group, ndiv, crystal.A.T @ crystal.A)[1]["cc_half"]


def printed_unscaled_cc_half(stdout, n_shells):
    """The 'unscaled' column of the CC½ table that ``gpudiffuse scale`` prints."""
    rows = stdout.split("unscaled    scaled\n")[1].splitlines()[:n_shells]
    return np.array([float(row.split()[1]) for row in rows])
