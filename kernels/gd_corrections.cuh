// Per-pixel correction factors (gpudiffuse.corrections), for a pixel at lab position r (mm).
#pragma once
#include "gd_common.cuh"

struct GdCorrectionParams {
    double normal[3];        // panel normal (unit)
    double px, py;           // pixel size, mm
    double s0_hat[3];        // beam propagation (unit)
    double e1[3], e2[3];     // polarisation basis: e1 = unit(s0 x n_pol), e2 = s0 x e1
    double pol_fraction;     // p
    double mu_t;             // mu_sensor * thickness (0: no efficiency correction)
    double mu_air;           // 1/mm (0: none)
    double axis[3];          // rotation axis (unit), zeros for stills
    double inv_lambda3;      // 1/lambda^3
};

// Writes K = Omega*P*E*A and the swept-volume factor |m.(s0 x r_hat)|*Omega/lambda^3.
GD_HD void gd_corrections(const double* r, const GdCorrectionParams* c, double* k_out, double* swept_out) {
    double d = sqrt(r[0] * r[0] + r[1] * r[1] + r[2] * r[2]);
    double u[3] = {r[0] / d, r[1] / d, r[2] / d};
    double cos_w = fabs(u[0] * c->normal[0] + u[1] * c->normal[1] + u[2] * c->normal[2]);
    double omega = c->px * c->py * cos_w / (d * d);
    double a1 = u[0] * c->e1[0] + u[1] * c->e1[1] + u[2] * c->e1[2];
    double a2 = u[0] * c->e2[0] + u[1] * c->e2[1] + u[2] * c->e2[2];
    double pol = c->pol_fraction * (1.0 - a1 * a1) + (1.0 - c->pol_fraction) * (1.0 - a2 * a2);
    double eff = c->mu_t > 0 ? 1.0 - exp(-c->mu_t / cos_w) : 1.0;
    double air = exp(-c->mu_air * d);
    *k_out = omega * pol * eff * air;
    double x[3] = {c->s0_hat[1] * u[2] - c->s0_hat[2] * u[1], c->s0_hat[2] * u[0] - c->s0_hat[0] * u[2],
                   c->s0_hat[0] * u[1] - c->s0_hat[1] * u[0]};
    *swept_out = fabs(x[0] * c->axis[0] + x[1] * c->axis[1] + x[2] * c->axis[2]) * omega * c->inv_lambda3;
}
