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
 * Convolutional cells (cltcKxC) use h = conv(I + x) with no slope (below).
 */
#include "ltc.h"
#include <math.h>
#include <string.h>

/* only ever exponentiate a non-positive number: no overflow */
static inline float sigm(float z)
{
    if (z >= 0.0f) return 1.0f / (1.0f + expf(-z));
    const float e = expf(z);
    return e / (1.0f + e);
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

void soma__ltc_tau(float *tau, const float *h, float k, size_t n, int complement)
{
    if (complement)
        for (size_t j = 0; j < n; j++) tau[j] = 1.0f - sigm(k * h[j]);
    else
        for (size_t j = 0; j < n; j++) tau[j] = sigm(k * h[j]);
}

void soma__ltc_tau_backward(float *dtau, const float *h, float k, float *dk, size_t n)
{
    double sk = 0;
    for (size_t j = 0; j < n; j++) {
        const float t = sigm(k * h[j]);
        const float dz = dtau[j] * t * (1.0f - t);
        sk += (double)dz * h[j];
        dtau[j] = k * dz;            /* now dL/dh */
    }
    if (dk) *dk += (float)sk;
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

/* ---- convolutional cells: h = conv(I + x), tau = sigmoid(h) ---------------
 * Backward: dh = dtau tau (1 - tau);  conv backward gives dsum, dW, db;
 * dI += dsum, dx += dsum. */

static void add_sum(float *sum, const float *I, const float *x, size_t n)
{
    for (size_t j = 0; j < n; j++) sum[j] = I[j] + x[j];
}

void soma__ltc_conv_forward(float *h, float *sum, float *ws, const float *I, const float *x,
                            const float *W, const float *b, const soma_conv_shape *cs)
{
    add_sum(sum, I, x, (size_t)cs->B * cs->C * cs->H * cs->W);
    soma_conv2d_forward(h, ws, sum, W, b, cs);
}

void soma__ltc_conv_backward(float *dI, float *dx, float *dW, float *db, float *dtau, float *sum,
                             float *dsum, float *ws, const float *h, const float *I, const float *x,
                             const float *W, const soma_conv_shape *cs)
{
    const size_t n = (size_t)cs->B * cs->C * cs->H * cs->W;
    soma__ltc_tau_backward(dtau, h, 1.0f, NULL, n);
    add_sum(sum, I, x, n);
    memset(dsum, 0, n * sizeof(float));
    soma_conv2d_backward(dI || dx ? dsum : NULL, dW, db, ws, dtau, sum, W, cs);
    if (dI) for (size_t j = 0; j < n; j++) dI[j] += dsum[j];
    if (dx) for (size_t j = 0; j < n; j++) dx[j] += dsum[j];
}
