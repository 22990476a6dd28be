/*
 * neuron.h - internals of src/neuron shared with the cell kernel's tests.
 *
 * The cell kernel (cell.c) treats its spike nonlinearity as a small table of
 * two entries: the production Heaviside step, whose backward uses the
 * surrogate in soma_cell_params.surr, and a smooth sigmoid(k x) whose
 * backward is its exact derivative k s (1 - s).  The public
 * soma_cell_forward/backward always use the step; the sigmoid exists so that
 * tests can check every path of the backward, the spike paths included,
 * against finite differences of a forward that is actually differentiable,
 * while running exactly the same kernel code.  Nothing outside tests uses it.
 */
#ifndef SOMA_NEURON_H
#define SOMA_NEURON_H

#include "soma_internal.h"
#include <stdint.h>
#include <string.h>

/* exp(x) for x <= 0 in plain float arithmetic, so the tau loops vectorise
 * (libm's expf is a call per element: 12 % of an FPTT step at K = 1 on the
 * S-MNIST net, bench/bench_fptt.c; this runs 4-wide under -march=x86-64-v2).
 * Cephes' expf: x = n ln2 + r with n = round(x log2 e) by the 1.5 * 2^23
 * trick (no float -> int conversion), ln2 in two parts (Cody-Waite) so r is
 * exact, |r| <= ln2/2; e^r = 1 + r + r^2 P(r), P of degree 5; 2^n then goes
 * into the exponent bits.  Below -87 (e^-87 = 1.6e-38, just above FLT_MIN) x
 * is raised to -87, so nothing goes subnormal; NaN stays NaN (the comparison
 * is false for it and it propagates through the polynomial).  Error: 8.1e-8
 * relative (1.4 ulp) on [-87, 0] against exp in double, sampled; the sigmoid
 * below is within 1.8e-7 relative of the exact one, as libm's expf gives.
 * tests/test_fptt.c (tau_sigmoid) bounds it and its backward.  Also the
 * multi-Gaussian surrogate's three Gaussians (surrogate.c; libm's expf was
 * ~3 % of an FPTT step there). */
static inline __attribute__((always_inline)) float soma__exp_nonpos(float x)
{
    const float shift = 12582912.0f;               /* 1.5 * 2^23 */
    x = x < -87.0f ? -87.0f : x;
    const float t = x * 1.44269504088896341f + shift;
    const float n = t - shift;                     /* round(x log2 e), exact */
    const float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    uint32_t ti, pi;
    memcpy(&ti, &t, sizeof ti);
    memcpy(&pi, &p, sizeof pi);
    pi += ti << 23;                                /* the low bits of t hold n (two's complement) */
    memcpy(&p, &pi, sizeof p);
    return p;
}

typedef enum soma__spike_fn {
    SOMA__SPIKE_STEP = 0,  /* s = H(x) = [x > 0]; ds/dx = the surrogate p->surr */
    SOMA__SPIKE_SIGMOID,   /* s = 1 / (1 + e^{-k x}); ds/dx = k s (1 - s) exactly */
    SOMA__SPIKE_COUNT
} soma__spike_fn;

typedef struct soma__spike {
    soma__spike_fn fn;
    float k;               /* SIGMOID steepness (> 0); unused by STEP */
} soma__spike;

/* soma_cell_forward / soma_cell_backward with the spike function chosen by
 * sp (the public functions pass {SOMA__SPIKE_STEP}). */
void soma__cell_forward_spike(soma_cell_state *next, soma_cell_cache *cache,
                              const soma_cell_state *prev, const float *I,
                              const float *alpha_v, const float *rho_v,
                              const soma_cell_params *p, const soma__spike *sp, size_t n);
void soma__cell_backward_spike(soma_cell_state *dprev, float *dI, float *dalpha, float *drho,
                               const soma_cell_state *dnext, const soma_cell_cache *cache,
                               const soma_cell_state *prev, const float *I,
                               const float *alpha_v, const float *rho_v,
                               const soma_cell_params *p, const soma__spike *sp, size_t n);

/* g(n) = surrogate derivative at x(n), written (not accumulated); the kind
 * is dispatched once, each kind a plain loop.  Bit-identical to calling
 * soma_surrogate_grad element by element. */
void soma__surrogate_grad_n(float *g, const float *x, size_t n, const soma_surrogate *s);

#endif
