"""Scaling models written in JAX and fitted with optax (DESIGN §10)."""

from .fit import ScaleFit, apply_scales, component_values, fit_scales
from .model import ScaleOptions, ScaleParams, build_design

__all__ = ["ScaleFit", "ScaleOptions", "ScaleParams", "apply_scales", "build_design", "component_values", "fit_scales"]
