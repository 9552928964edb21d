"""The absolute scale (DESIGN §12): the unit-cell inventory (``inventory``) and the theoretical
coherent and incoherent scattering per cell (``theory``). The scale step itself is not written yet."""
