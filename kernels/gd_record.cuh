// Field positions of the accumulator record (gpudiffuse/integration/record.py, FIELDS):
// integer fields [set][GD_I_*][voxel], float fields [set][GD_F_*][voxel]. A test checks these
// numbers against the Python schema; change both together.
#pragma once

enum GdIntField { GD_I_COUNTS = 0, GD_I_PIXELS = 1, GD_I_FRAME_SUM = 2, GD_I_OVERFLOW_COUNTS = 3 };
enum GdFloatField {
    GD_F_KT_SUM = 0,
    GD_F_D3S_SUM = 1,
    GD_F_IX_SUM = 2,
    GD_F_IY_SUM = 3,
    GD_F_S_SUM = 4,
    GD_F_BKG_SUM = 5,
    GD_F_BKG_VAR = 6
};
// accumulator sets
enum GdSet { GD_SET_DIFFUSE = 0, GD_SET_EXCLUDED = 1 };
// |s| bins of the per-frame isotropic profile (gpudiffuse.integration.pixels.PROFILE_BINS)
#define GD_PROFILE_BINS 64
