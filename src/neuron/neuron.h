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
