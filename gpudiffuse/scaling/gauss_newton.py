"""Gauss–Newton / Levenberg–Marquardt on the pure residual of :mod:`.residuals` (DESIGN §10).

Choice: the *assembled* normal matrix, not matrix-free conjugate gradients. The scale model has a
few hundred to a few thousand parameters, while Î has one unknown per voxel. Î is eliminated per
voxel (variable projection: the Schur complement of its diagonal block), which leaves a dense
θ × θ matrix that a Cholesky factorisation solves exactly in milliseconds; CG on the same system
would need tens to hundreds of Jacobian products per step because the smoothness penalties make
it ill-conditioned. The per-observation derivatives come from JAX (forward-mode autodiff of the
model); the sparse chain rule through the interpolation and the per-voxel Schur complement are
summed by a compiled kernel (numba) in fixed partitions, so the result does not depend on the
thread count.

The problem is nearly linear, so the matrix changes little between iterations: it is reassembled
only when the last step converged slowly or was rejected (a chord / quasi-Newton step in between),
and carried into the next outlier round (warm start). Convergence: the Newton decrement
gᵀH⁻¹g ≤ ``gradient_tolerance`` × loss (the gradient norm in the metric of the problem), or the
largest change of a model value ≤ ``step_tolerance``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.linalg

logger = logging.getLogger(__name__)

__all__ = ["GaussNewtonResult", "Solver", "normal_matrix"]

def _kernels():
    from . import normal_kernels  # noqa: PLC0415  (numba is imported only when a matrix is assembled)

    return normal_kernels.assemble, normal_kernels.schur_rows, normal_kernels.mirror


@dataclass(frozen=True)
class VoxelOrder:
    """The voxels whose terms the normal matrix sums, their observations in voxel order, fixed
    partitions of them (balanced by rows; fixed by the problem, not by the thread count) and the
    way the Schur complement is summed.

    ``method`` is ``sparse`` (per voxel over the t_v model values its observations touch: Σ_v t_v²
    updates) or ``dense`` (blocks of dense rows B_v/√D_v multiplied by BLAS: n_voxels · n_values²
    operations, faster per operation), whichever is estimated cheaper once t_v is counted.

    When the sum is planned to take more than ``budget_s`` seconds (planned from the bounds
    t_v ≤ 15 m_v for a voxel seen m_v times, and the BLAS product, before t_v is counted), a
    fixed pseudo-random subset of ``fraction`` of the voxels is summed and scaled by 1/fraction:
    an unbiased estimate of the matrix (every voxel's term is positive semi-definite, so the
    estimate is too) whose relative error falls as 1/√(rows per parameter); the solver then takes
    quasi-Newton (chord) steps on the exact gradient."""

    order: np.ndarray
    starts: np.ndarray
    bounds: np.ndarray
    fraction: float
    method: str
    seconds: float = 0.0  # estimated time of the Schur sum
    # measured on the 2-core CI machine: scattered updates vs BLAS products
    SPARSE_RATE = 3e8          # planning: operations per second of the sparse sum, bound 15 m_v
    DENSE_RATE = 8e10          # planning: of the BLAS product
    SPARSE_UPDATE_RATE = 1.3e9  # measured (1M preset, 10⁶ and 10⁷ catalogue rows, 2 cores): t_v² updates/s
    DENSE_UPDATE_RATE = 2.5e10  # measured likewise: n_voxels · n_values² per second, rows built and multiplied

    @classmethod
    def of(cls, group: np.ndarray, n_groups: int, n_values: int, budget_s: float = 1.5,
           design=None) -> "VoxelOrder":
        """``design`` (:class:`.model.Design`): count each voxel's model values to choose the
        method; without it the planning bounds choose."""
        from .row_kernels import grouped_order  # noqa: PLC0415

        rows = np.bincount(group, minlength=n_groups)
        seconds = {"sparse": float(np.sum((15.0 * rows) ** 2)) / 2 / cls.SPARSE_RATE,
                   "dense": n_groups * float(n_values) ** 2 / cls.DENSE_RATE}
        method = min(seconds, key=seconds.get)
        fraction = min(1.0, budget_s / max(seconds[method], 1e-12))
        if fraction < 1.0:
            rank = np.random.default_rng(20261201).permutation(n_groups)
            chosen = rank < max(int(round(fraction * n_groups)), 1)
            fraction = float(chosen.sum() / n_groups)
            selected = chosen[group]
            order = np.flatnonzero(selected)[grouped_order(group[selected], n_groups)]
            rows = rows[chosen]
        else:
            order = grouped_order(group, n_groups)
            rows = rows[rows > 0]
        starts = np.concatenate([[0], np.cumsum(rows)]).astype(np.int64)
        n_voxels = len(rows)
        # one matrix per partition; memory ≤ ~256 MB of matrices
        n_parts = int(max(1, min(8, 2**28 // max(8 * n_values * n_values, 1))))
        bounds = np.searchsorted(starts, np.linspace(0, starts[-1], n_parts + 1)).astype(np.int64)
        bounds[0], bounds[-1] = 0, n_voxels
        # int32 row numbers: 10⁷ rows, 40 MB less at the fit's peak (the normal matrix's assembly)
        order = order.astype(np.int32 if len(group) < 2**31 else np.int64)
        seconds = fraction * seconds[method]
        if design is not None:
            from .normal_kernels import touched_columns  # noqa: PLC0415

            touched = touched_columns(order, starts, *_column_args(design), n_values).astype(np.float64)
            estimates = {"sparse": float(np.sum(touched**2)) / cls.SPARSE_UPDATE_RATE,
                         "dense": n_voxels * float(n_values) ** 2 / cls.DENSE_UPDATE_RATE}
            method = min(estimates, key=estimates.get)
            seconds = estimates[method]
            logger.debug("Schur sum over %d voxels (fraction %.3g): %s, estimated %s", n_voxels, fraction, method,
                         {k: round(v, 3) for k, v in estimates.items()})
        return cls(order, starts, np.maximum.accumulate(bounds), fraction, method, seconds)


def _column_args(design):
    """The design's arrays that give each observation's model values (:func:`.normal_kernels.row_columns`)."""
    return (design.b_node, design.b_offsets, design.c_node, design.c_offsets, design.a_node, design.a_offsets,
            design.region, design.value_edges)


def normal_matrix(partials, design, voxels: VoxelOrder, penalty_gram: np.ndarray) -> np.ndarray:
    """JᵀJ of the data term with Î eliminated, plus the penalties' QᵀQ, over the model values.

    partials : (≥ N, 5) ∂r_i/∂(a_i, b_i, c_i, d_i, Î) per observation row
    (:func:`.row_chunks.chunked_partials`)."""
    assemble, schur_rows, _mirror = _kernels()
    offsets = design.value_edges
    n_values = int(offsets[-1])
    partials = np.ascontiguousarray(partials, dtype=np.float64)
    rows = (design.b_node, design.b_offsets, design.wb, design.c_node, design.c_offsets, design.wc, design.a_node,
            design.a_offsets, design.wa, design.region, partials, offsets)
    sparse = voxels.method == "sparse"
    ascending = all(np.all(np.diff(np.asarray(off)) > 0) for off in (design.b_offsets, design.c_offsets, design.a_offsets))
    parts = assemble(voxels.order, voxels.starts, voxels.bounds, *rows, n_values, sparse, ascending)
    matrix = parts[0]
    for part in parts[1:]:
        matrix += part
    _mirror(matrix)
    if not sparse:  # Σ_v B_v B_vᵀ / D_v as products of dense blocks of rows (BLAS)
        n_voxels = len(voxels.starts) - 1
        block = max(1, int(2**21 // n_values))
        for first in range(0, n_voxels, block):
            b = np.zeros((min(block, n_voxels - first), n_values))
            schur_rows(voxels.order, voxels.starts, first, *rows, b)
            matrix -= b.T @ b
    if voxels.fraction != 1.0:
        matrix /= voxels.fraction
    matrix += penalty_gram
    return matrix


@dataclass
class GaussNewtonResult:
    theta: np.ndarray
    loss: float              # χ² + penalties at theta
    iterations: int
    converged: bool
    history: list            # loss at the start of each iteration
    reason: str


class Solver:
    """Levenberg–Marquardt steps with a cached normal matrix; one instance per problem (shape).

    value_and_grad(θ) → (½‖r‖², ∇); assemble(θ) → the θ-space normal matrix H ≈ JᵀJ.
    ``costs`` = (one iteration, one assembly) in any common unit, estimated from the problem's
    sizes (not measured, so that the path of the fit is deterministic): after a step the matrix is
    reassembled when the chord steps still needed would cost more than an assembly and two steps.
    The chord's rate of convergence is taken as the larger of the last ratio of Newton decrements
    and twice the largest relative change of a model value since the matrix was assembled (the
    Jacobian's entries are products of those values); with ``sampled`` (a matrix summed over a
    subset of voxels, whose error a new assembly does not remove) the latter only."""

    def __init__(self, value_and_grad, assemble, step_tolerance=1e-8, gradient_tolerance=1e-10,
                 value_map=lambda step: step, costs=(1.0, 3.0), sampled=False):
        self.value_and_grad = value_and_grad
        self.sampled = sampled
        self.assemble = assemble
        self.costs = costs
        self.step_tolerance = step_tolerance
        self.gradient_tolerance = gradient_tolerance
        self.value_map = value_map  # θ step → model-value step (relative-step test, distance since assembly)
        self.matrix = None
        self.matrix_theta = None
        self.assemblies = 0
        self._factor = None

    def _refresh(self, theta):
        self.matrix = self.assemble(theta)
        self.matrix_theta = np.array(theta)
        self.assemblies += 1

    def _factorised(self, damping):
        """The Cholesky factor of H + damping·diag(H) (+ a tiny floor), once per matrix and damping;
        None when it is not positive definite."""
        key = (self.assemblies, damping)
        if self._factor is None or self._factor[0] != key:
            h = self.matrix
            diag = np.diag(h).copy()
            floor = 1e-12 * max(float(np.mean(np.abs(diag))), 1e-300)  # keeps unreachable directions at rest
            try:
                self._factor = (key, scipy.linalg.cho_factor(h + np.diag(damping * diag + floor), lower=True,
                                                             check_finite=False))
            except np.linalg.LinAlgError:
                return None
        return self._factor[1]

    def _step(self, gradient, damping):
        factor = self._factorised(damping)
        return None if factor is None else -scipy.linalg.cho_solve(factor, gradient, check_finite=False)

    def run(self, theta, max_iterations, report=lambda loss: None) -> GaussNewtonResult:
        theta = np.array(theta, dtype=np.float64)
        value, gradient = self.value_and_grad(theta)
        history, damping, last_decrement, converged, reason = [], 0.0, None, False, "iteration limit"
        iteration = 0
        if theta.size == 0:
            return GaussNewtonResult(theta, 2 * value, 0, True, [2 * value], "no free parameters")
        if self.matrix is None:
            self._refresh(theta)
        while iteration < max_iterations:
            iteration += 1
            history.append(2 * value)
            report(2 * value)
            step = self._step(gradient, damping)
            if step is None:
                damping = max(10 * damping, 1e-6)
                continue
            decrement = -float(gradient @ step)
            if decrement <= self.gradient_tolerance * value:
                converged, reason = True, "gradient"
                break
            new_value, new_gradient = self.value_and_grad(theta + step)
            predicted = decrement - 0.5 * float(step @ (self.matrix @ step))
            if np.isfinite(new_value) and new_value < value:
                rho = (value - new_value) / max(predicted, 1e-300)
                theta = theta + step
                value, gradient = new_value, new_gradient
                damping = damping / 3 if rho > 0.75 else damping
                if damping < 1e-9:
                    damping = 0.0
                scale = max(1.0, float(np.max(np.abs(self.value_map(theta)))))
                if float(np.max(np.abs(self.value_map(step)))) <= self.step_tolerance * scale:
                    converged, reason = True, "step"
                    history.append(2 * value)
                    break
                distance = float(np.max(np.abs(self.value_map(theta - self.matrix_theta)))) / scale
                if rho < 0.5 or self._worth_refreshing(decrement, last_decrement, value, distance):
                    self._refresh(theta)
                    last_decrement = None
                else:
                    last_decrement = decrement
            else:
                if not np.array_equal(self.matrix_theta, theta):
                    self._refresh(theta)  # a stale matrix first, then damping
                else:
                    damping = max(4 * damping, 1e-4)
        logger.debug("Gauss-Newton: %d iterations, %d normal matrices so far, stopped on %s", iteration,
                     self.assemblies, reason)
        return GaussNewtonResult(theta, 2 * value, iteration, converged, history, reason)

    def _worth_refreshing(self, decrement, last_decrement, value, distance) -> bool:
        observed = 0.0 if last_decrement is None or self.sampled else decrement / max(last_decrement, 1e-300)
        rate = min(max(observed, 2 * distance, 1e-6), 0.99)
        target = self.gradient_tolerance * value
        if decrement <= target:
            return False
        remaining = np.log(target / decrement) / np.log(rate)
        iteration, assembly = self.costs
        return remaining * iteration > assembly + 2 * iteration

    def covariance(self, theta, scale=1.0):
        """scale × H⁻¹ from the last normal matrix (assembled at θ or within the last steps to it,
        which changes the uncertainties by far less than their own precision)."""
        if self.matrix is None:
            self._refresh(theta)
        factor = self._factorised(0.0)
        if factor is None:
            raise np.linalg.LinAlgError("the normal matrix is not positive definite")
        lower = factor[0]
        inverse, info = scipy.linalg.lapack.dpotri(lower, lower=1)  # H⁻¹ from its Cholesky factor
        if info != 0:
            raise np.linalg.LinAlgError(f"dpotri failed ({info})")
        inverse = np.tril(inverse)
        return scale * (inverse + np.tril(inverse, -1).T)
