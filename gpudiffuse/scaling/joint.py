"""The joint fit: Gauss–Newton on :func:`.residuals.residuals`, compiled once per problem shape.

One :class:`JointProblem` per observation table: the device arrays, the reduced basis, the voxel
order and the solver (with its cached normal matrix) live across the outlier rounds, which only
change the weights (an argument of the compiled functions, never a constant baked into them).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from ..user_cache import cache_folder
from .gauss_newton import Solver, VoxelOrder, normal_matrix
from .model import Design, ScaleParams, effective
from .residuals import reduced_basis, scaling_data, split_values, stacked_penalty
from .row_chunks import chunked_evaluate, chunked_partials, chunked_value_and_grad, padded_length

__all__ = ["JointProblem", "enable_compilation_cache", "jax_device"]

_COMPILED = {}


def enable_compilation_cache(jax) -> None:
    """JAX's persistent compilation cache in the user's cache folder (XDG), so that a fit of the
    same shape in a later run loads its compiled code instead of compiling it again.
    GPUDIFFUSE_JAX_CACHE names another folder; an empty value turns the cache off."""
    folder = os.environ.get("GPUDIFFUSE_JAX_CACHE")
    if folder is None:
        folder = cache_folder("jax")
    if not folder or jax.config.jax_compilation_cache_dir == folder:
        return
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError:
        return  # an unwritable home: compile every time
    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)


def jax_device() -> str:
    """The device JAX computes on, e.g. 'cpu' or 'gpu (NVIDIA H200)'."""
    import jax  # noqa: PLC0415

    device = jax.devices()[0]
    return device.platform if device.platform == "cpu" else f"{device.platform} ({device.device_kind})"


def _compiled():
    """The jitted functions, created once per process (jax.jit caches the compilations per shape)."""
    if not _COMPILED:
        import jax  # noqa: PLC0415

        _COMPILED["value_and_grad"] = jax.jit(chunked_value_and_grad)
        _COMPILED["partials"] = jax.jit(chunked_partials)
        _COMPILED["evaluate"] = jax.jit(chunked_evaluate)
    return _COMPILED


class JointProblem:
    """A scaling problem set up for Gauss–Newton: ``fit`` runs one round from θ with given weights."""

    def __init__(self, design: Design, ops: dict, lam: dict, intensity, weight, group, n_groups: int, options):
        import jax  # noqa: PLC0415

        enable_compilation_cache(jax)
        self.design = design
        self.basis = reduced_basis(design, ops)
        q, target = stacked_penalty(design, ops, lam)
        self.penalty_gram = (q.T @ q).toarray()
        self.voxels = VoxelOrder.of(group, n_groups, self.basis.offset.size, design=design)
        with jax.enable_x64(True):
            data = scaling_data(design, self.basis, (q, target), intensity, np.sqrt(weight), group, n_groups,
                                share_weights=jax.devices()[0].platform == "cpu")
        t = self.basis.matrix
        self.evaluations = _Evaluations(data, design, self.voxels, self.penalty_gram, t)
        # estimated seconds on two cores: a step (JAX value and gradient) and an assembly
        # (JAX derivatives and the JᵀJ kernel, then the Schur sum)
        n = len(intensity)
        costs = (2e-7 * n, 5e-7 * n + self.voxels.seconds)
        self.solver = Solver(self.evaluations.value_and_grad, self.evaluations.assemble, options.step_tolerance,
                             options.gradient_tolerance, value_map=lambda step: t @ step, costs=costs,
                             sampled=self.voxels.fraction < 1)

    @property
    def data(self):
        return self.evaluations.data

    def theta_of(self, params: ScaleParams) -> np.ndarray:
        values = np.concatenate([np.asarray(x, np.float64) for x in effective(params, self.design)])
        return self.basis.theta(values)

    def params_of(self, theta) -> ScaleParams:
        return split_values(self.basis.values(theta), self.design)

    def _set_weights(self, weight, keep):
        """The problem's observation weights become ``weight`` (1/σ²) where ``keep``, 0 elsewhere.
        √weight is written straight into one padded buffer, and the old device buffer is released
        before the new one is made: no (N,) temporaries outlive the call. Unchanged weights (the
        residuals after a round) keep the device buffer and the Î kept from the round."""
        import jax  # noqa: PLC0415
        import jax.numpy as jnp  # noqa: PLC0415

        n = len(weight)
        sqrt_weight = np.zeros(padded_length(n))
        np.sqrt(weight, out=sqrt_weight[:n])
        sqrt_weight[:n] *= keep
        kept = self.evaluations
        if np.array_equal(np.asarray(kept.data.sqrt_weight), sqrt_weight):
            return
        kept.merged = []
        kept.data = dataclasses.replace(kept.data, sqrt_weight=None)
        with jax.enable_x64(True):
            kept.data = dataclasses.replace(kept.data, sqrt_weight=jnp.asarray(sqrt_weight))

    def fit(self, theta, weight, keep, max_iterations, report):
        self._set_weights(weight, keep)
        return self.solver.run(theta, max_iterations, report)

    def evaluate(self, theta, weight, keep):
        """(data χ², penalty, unweighted residuals (N,)) at θ with Î merged under ``weight`` where ``keep``."""
        import jax  # noqa: PLC0415

        self._set_weights(weight, keep)
        merged = self.evaluations.merged_at(np.asarray(theta, np.float64))
        with jax.enable_x64(True):
            chi2, penalty, r = _compiled()["evaluate"](np.asarray(theta, np.float64), self.data, merged)
            return float(chi2), float(penalty), np.asarray(r)[:self.data.n_rows]

    def uncertainties(self, theta, variance_scale: float) -> ScaleParams:
        """σ of every model value from the Gauss–Newton normal matrix: diag(T C Tᵀ), C = s·H⁻¹."""
        covariance = self.solver.covariance(theta, variance_scale)
        t = self.basis.matrix
        variance = np.asarray(t.multiply(t @ covariance).sum(axis=1)).ravel() if t.shape[1] else np.zeros(t.shape[0])
        return split_values(np.sqrt(np.maximum(variance, 0.0)), self.design)


class _Evaluations:
    """The device data of a problem and what the solver calls on it: the loss and gradient, and the
    normal matrix. Î per voxel from the last two loss evaluations is kept (under the current
    weights): the matrix is assembled, and the residuals taken, where the loss was just evaluated.
    Holds no reference to the solver, so that a finished problem is freed at once, not by the
    cycle collector (10⁷ rows: gigabytes of device buffers)."""

    def __init__(self, data, design, voxels, penalty_gram, basis_matrix):
        self.data, self.design, self.voxels = data, design, voxels
        self.penalty_gram, self.basis_matrix = penalty_gram, basis_matrix
        self.merged = []  # [(θ, Î at θ)]

    def value_and_grad(self, theta):
        import jax  # noqa: PLC0415

        theta = np.array(theta, np.float64)
        with jax.enable_x64(True):
            value, grad, merged = _compiled()["value_and_grad"](theta, self.data)
            self.merged = [*self.merged[-1:], (theta, merged)]
            return float(value), np.asarray(grad, dtype=np.float64)

    def merged_at(self, theta):
        """Î per voxel at θ: kept, or evaluated now."""
        for at, merged in self.merged:
            if np.array_equal(at, theta):
                return merged
        self.value_and_grad(theta)
        return self.merged[-1][1]

    def assemble(self, theta):
        """The θ-space normal matrix at θ."""
        import jax  # noqa: PLC0415

        merged = self.merged_at(theta)
        with jax.enable_x64(True):
            partials = np.asarray(_compiled()["partials"](np.asarray(theta, np.float64), self.data, merged))
        h = normal_matrix(partials, self.design, self.voxels, self.penalty_gram)
        t = self.basis_matrix
        return np.asarray((t.T @ (t.T @ h).T).T)
