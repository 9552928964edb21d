"""Image readers, the prefetching frame source and NeXus/HDF5 output."""
