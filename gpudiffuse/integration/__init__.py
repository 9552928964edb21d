"""The streaming integration pass (DESIGN §8, §14, §15): accumulator record, driver, engines
(``numpy``, ``cpu``, ``cuda``) and parallel blocks."""

from .driver import integrate_sweep, sweep_context
from .engines import available_engines, engine_class
from .pixels import (DEFAULT_WEDGE_DEGREES, PROFILE_BINS, IntegrationParameters, PixelTable, frame_list,
                     prepare_pixels, profile_edges, wedge_numbers)
from .record import FIELDS, AccumulatorRecord, IntegrationResult

__all__ = ["integrate_sweep", "sweep_context", "available_engines", "engine_class", "IntegrationParameters",
           "PixelTable", "prepare_pixels", "profile_edges", "frame_list", "wedge_numbers", "PROFILE_BINS",
           "DEFAULT_WEDGE_DEGREES", "FIELDS", "AccumulatorRecord", "IntegrationResult"]
