// Common definitions for gpudiffuse kernels. Host builds (no nvcc) compile the same
// arithmetic as plain C++ so that CI can test it against the NumPy engine without a GPU.
#pragma once

#ifdef __CUDACC__
#define GD_HD __host__ __device__ __forceinline__
#else
#include <cmath>
#define GD_HD inline
#endif

#include <stdint.h>

// Round half to even, as NumPy's rint (the default IEEE rounding mode on host and device).
GD_HD double gd_rint(double x) { return rint(x); }
