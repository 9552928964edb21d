"""The absolute scale (DESIGN §12): the unit-cell inventory (``inventory``), the theoretical
coherent and incoherent scattering per cell (``theory``) and the scale k from the sum rule
(``scale``); the step that writes absolute.nxs is ``steps.absolute``."""
