/*
 * ltc.h - the liquid time-constant maps of the LTC neuron (internal).
 *
 * Yin, Corradi, Bohte 2023 (notes/fptt.md 2.1): a cell's per-step update
 * rate is a sigmoid of a dense map of the input current and one state:
 *
 *   h   = W [I_t, x_{t-1}] + b     W (N, 2N) = [W_I | W_x], row-major
 *   tau = sigmoid(k h)             k: a trainable scalar slope
 *
 * tau_m uses x = u (membrane), tau_adp uses x = eta (threshold trace), the
 * readout's tau_o uses x = o (its membrane).  The cell kernel then runs with
 * alpha_v = 1 - tau_m (input_scale: v = (1 - tau_m) u + tau_m I) and
 * rho_v = tau_adp.  net.c stores h per step and recomputes tau from it.
 */
#ifndef SOMA_LTC_H
#define SOMA_LTC_H

#include "soma_internal.h"

/* h(B,N) = I(B,N) W_I^T + x(B,N) W_x^T + b(N);  W (N, 2N). */
void soma__ltc_map_forward(float *h, const float *I, const float *x, const float *W,
                           const float *b, int B, int N);
/* tau(n) = sigmoid(k h), or 1 - sigmoid(k h) when complement. */
void soma__ltc_tau(float *tau, const float *h, float k, size_t n, int complement);
/* Backward of tau = sigmoid(k h(I, x)).  dtau (B,N) holds dL/dtau on entry
 * and dL/dh on return.  Accumulates dI (B,N), dx (B,N), dW (N,2N), db (N),
 * dk (1); any may be NULL. */
void soma__ltc_map_backward(float *dI, float *dx, float *dW, float *db, float *dk, float *dtau,
                            const float *h, float k, const float *I, const float *x,
                            const float *W, int B, int N);

/* dtau (n) holds dL/dtau of tau = sigmoid(k h) on entry and dL/dh on return;
 * *dk += sum dL/dz h when dk is non-NULL. */
void soma__ltc_tau_backward(float *dtau, const float *h, float k, float *dk, size_t n);

/* Convolutional cells (cltcKxC, notes/fptt.md 2.4): the map is a same-padding
 * conv of a sum, not a dense map of a concatenation, and has no slope:
 *   h = conv(I_t + x_{t-1}; W (C,C,K,K), b (C)),   tau = sigmoid(h)
 * or, with the authors' batchnorm inside the map (soma_cell_params.map_bn),
 *   h = BN(conv(I_t + x_{t-1})),   tau = sigmoid(h)
 * BN as BatchNorm2d over (B, H, W) per channel: the core kernels of
 * src/ops/batchnorm.c, batch statistics in training, running ones frozen. */
typedef struct soma__ltc_bn {
    const float *gamma, *beta;      /* (C) affine */
    float *dgamma, *dbeta;          /* (C) their gradients (backward) */
    float *run_mean, *run_var;      /* (C) this step's row of the running statistics */
    soma_bn_cache cache;            /* this step's mean, invstd (C) and xhat (B, C*H*W) */
    float *dh;                      /* backward scratch (B, C*H*W): dL/d(conv output) */
    float eps, momentum;
    int train;                      /* batch statistics (and running update) vs frozen */
} soma__ltc_bn;

/* h (B, C*H*W) <- conv(I + x) [then BN when bn is non-NULL; its cache is
 * written, and in training its running statistics are updated].
 * cs: the map's shape (B, C, H, W -> C, K, stride 1, pad (K-1)/2); sum (B,C*H*W)
 * and ws (soma_conv2d_workspace) are scratch. */
void soma__ltc_conv_forward(float *h, float *sum, float *ws, const float *I, const float *x,
                            const float *W, const float *b, const soma__ltc_bn *bn,
                            const soma_conv_shape *cs);
/* Backward of tau = sigmoid(h(I, x)): dtau as in soma__ltc_map_backward (dL/dh
 * on return, h the map's output: after the BN when there is one); accumulates
 * dI, dx (either may be NULL), dW, db, and bn's dgamma, dbeta.  sum and dsum
 * (B, C*H*W), bn->dh and ws are scratch.  bn: the forward's, NULL if none. */
void soma__ltc_conv_backward(float *dI, float *dx, float *dW, float *db, float *dtau, float *sum,
                             float *dsum, float *ws, const float *h, const float *I, const float *x,
                             const float *W, const soma__ltc_bn *bn, const soma_conv_shape *cs);

#endif
