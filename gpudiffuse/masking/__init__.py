"""Pixel masks, detector layouts and Bragg-peak masking."""
