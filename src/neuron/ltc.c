/*
 * ltc.c - the tau maps of the Liquid-Time-Constant neuron (see ltc.h),
 * forward and backward side by side.
 *
 *   h   = I W_I^T + x W_x^T + b          (B,N): dense on the concatenation [I, x]
 *   tau = sigmoid(k h)
 *
 * Backward, from dL/dtau:
 *   dz  = dtau tau (1 - tau)              z = k h
 *   dk += sum dz h        dh = k dz
 *   dW_I += dh^T I   dW_x += dh^T x   db += sum_b dh
 *   dI  += dh W_I    dx  += dh W_x
 *
 * Convolutional cells (cltcKxC) use h = conv(I + x) with no slope, or
 * h = BN(conv(I + x)) with the authors' batchnorm inside the map (below).
 */
#include "ltc.h"
#include "neuron.h"
#include <math.h>
#include <string.h>

/* sigmoid(z) = 1 / (1 + e^-z) = e^z / (1 + e^z), the form with e = e^-|z| <= 1:
 * no overflow, one division; branch-free so the loops vectorise. */
static inline float sigm(float z)
{
    const float e = soma__exp_nonpos(-fabsf(z));
    return (z >= 0.0f ? 1.0f : e) / (1.0f + e);
}

void soma__ltc_map_forward(float *h, const float *I, const float *x, const float *W,
                           const float *b, int B, int N)
{
    soma_gemm(0, 1, B, N, N, 1.0f, I, N, W, 2 * N, 0.0f, h, N);
    soma_gemm(0, 1, B, N, N, 1.0f, x, N, W + N, 2 * N, 1.0f, h, N);
    for (int i = 0; i < B; i++) {
        float *r = h + (size_t)i * N;
        for (int j = 0; j < N; j++) r[j] += b[j];
    }
}

SOMA_SIMD_CLONES
void soma__ltc_tau(float *restrict tau, const float *restrict h, float k, size_t n, int complement)
{
    if (complement) {
        _Pragma("omp simd")
        for (size_t j = 0; j < n; j++) tau[j] = 1.0f - sigm(k * h[j]);
    } else {
        _Pragma("omp simd")
        for (size_t j = 0; j < n; j++) tau[j] = sigm(k * h[j]);
    }
}

/* dk's sum in eight fixed lanes (index mod 8), added pairwise: the same bits
 * at every SIMD width */
SOMA_SIMD_CLONES
void soma__ltc_tau_backward(float *restrict dtau, const float *restrict h, float k, float *dk, size_t n)
{
    double lane[8] = { 0 };
    size_t j = 0;
    for (; j + 8 <= n; j += 8) {
        _Pragma("omp simd")
        for (int q = 0; q < 8; q++) {
            const float t = sigm(k * h[j + q]);
            const float dz = dtau[j + q] * t * (1.0f - t);
            lane[q] += (double)dz * h[j + q];
            dtau[j + q] = k * dz;            /* now dL/dh */
        }
    }
    for (int q = 0; j < n; j++, q++) {
        const float t = sigm(k * h[j]);
        const float dz = dtau[j] * t * (1.0f - t);
        lane[q] += (double)dz * h[j];
        dtau[j] = k * dz;
    }
    if (dk) *dk += (float)(((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7])));
}

void soma__ltc_map_backward(float *dI, float *dx, float *dW, float *db, float *dk, float *dtau,
                            const float *h, float k, const float *I, const float *x,
                            const float *W, int B, int N)
{
    soma__ltc_tau_backward(dtau, h, k, dk, (size_t)B * N);
    const float *dh = dtau;
    if (dW) {
        soma_gemm(1, 0, N, N, B, 1.0f, dh, N, I, N, 1.0f, dW, 2 * N);
        soma_gemm(1, 0, N, N, B, 1.0f, dh, N, x, N, 1.0f, dW + N, 2 * N);
    }
    if (db)
        for (int i = 0; i < B; i++) {
            const float *r = dh + (size_t)i * N;
            for (int j = 0; j < N; j++) db[j] += r[j];
        }
    if (dI) soma_gemm(0, 0, B, N, N, 1.0f, dh, N, W, 2 * N, 1.0f, dI, N);
    if (dx) soma_gemm(0, 0, B, N, N, 1.0f, dh, N, W + N, 2 * N, 1.0f, dx, N);
}

/* ---- convolutional cells: h = [BN](conv(I + x)), tau = sigmoid(h) ----------
 * Backward: dh = dtau tau (1 - tau);  with BN, its backward turns dh into
 * dL/d(conv output) (+ dgamma, dbeta);  conv backward gives dsum, dW, db;
 * dI += dsum, dx += dsum. */

static void add_sum(float *sum, const float *I, const float *x, size_t n)
{
    for (size_t j = 0; j < n; j++) sum[j] = I[j] + x[j];
}

void soma__ltc_conv_forward(float *h, float *sum, float *ws, const float *I, const float *x,
                            const float *W, const float *b, const soma__ltc_bn *bn,
                            const soma_conv_shape *cs)
{
    add_sum(sum, I, x, (size_t)cs->B * cs->C * cs->H * cs->W);
    soma_conv2d_forward(h, ws, sum, W, b, cs);
    if (bn) {
        /* h <- BN(h) in place (the kernel allows y == x); it writes the
         * cache through the pointers of a copy */
        soma_bn_cache c = bn->cache;
        soma_batchnorm_forward(h, &c, bn->run_mean, bn->run_var, h, bn->gamma, bn->beta, cs->B, cs->C,
                               cs->H * cs->W, bn->eps, bn->momentum, bn->train);
    }
}

void soma__ltc_conv_backward(float *dI, float *dx, float *dW, float *db, float *dtau, float *sum,
                             float *dsum, float *ws, const float *h, const float *I, const float *x,
                             const float *W, const soma__ltc_bn *bn, const soma_conv_shape *cs)
{
    const size_t n = (size_t)cs->B * cs->C * cs->H * cs->W;
    /* from tau = sigmoid(h) */
    soma__ltc_tau_backward(dtau, h, 1.0f, NULL, n);
    const float *dconv = dtau;
    if (bn) {
        /* from h = BN(conv): the kernel accumulates, so dh starts at 0 */
        memset(bn->dh, 0, n * sizeof(float));
        soma_batchnorm_backward(bn->dh, bn->dgamma, bn->dbeta, dtau, &bn->cache, bn->gamma, cs->B, cs->C,
                                cs->H * cs->W, bn->train);
        dconv = bn->dh;
    }
    /* from conv(sum), sum = I + x */
    add_sum(sum, I, x, n);
    memset(dsum, 0, n * sizeof(float));
    soma_conv2d_backward(dI || dx ? dsum : NULL, dW, db, ws, dconv, sum, W, cs);
    if (dI) for (size_t j = 0; j < n; j++) dI[j] += dsum[j];
    if (dx) for (size_t j = 0; j < n; j++) dx[j] += dsum[j];
}
