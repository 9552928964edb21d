"""Scaling models written in JAX, fitted by Gauss–Newton on JAX derivatives (DESIGN §10); optax
L-BFGS and the alternating baseline for comparison."""

from .fit import ScaleFit, apply_scales, component_values, fit_scales
from .model import ScaleOptions, ScaleParams, build_design

__all__ = ["ScaleFit", "ScaleOptions", "ScaleParams", "apply_scales", "build_design", "component_values", "fit_scales"]
