/*
 * batchnorm.c - batch normalisation over x(B,C,S), per channel c, as
 * torch.nn.BatchNorm1d (S = 1, or a sequence) and BatchNorm2d (S = H*W).
 *
 * Training (train != 0), with n = B*S values per channel:
 *   mean = sum x / n,   var = sum (x - mean)^2 / n          (biased)
 *   xhat = (x - mean) / sqrt(var + eps),   y = gamma xhat + beta
 *   run_mean = (1 - m) run_mean + m mean
 *   run_var  = (1 - m) run_var  + m var * n / (n - 1)       (unbiased)
 * which is PyTorch's convention (momentum 0.1 means 10% new).  PyTorch
 * refuses n == 1 in training; callers must too: here n == 1 would feed the
 * biased variance (0) to run_var.
 *
 * Frozen (train == 0): mean and var are run_mean and run_var, y is an affine
 * map of x, and the backward pass is that map's transpose: dx = gamma
 * invstd dy.  In training the statistics depend on x, giving
 *   dx = gamma invstd (dy - mean(dy) - xhat mean(dy xhat))
 * with means over the n values of the channel.
 *
 * Channel sums are taken in double, each channel on one thread in a fixed
 * order, so results do not depend on the thread count.
 */
#include "../soma_internal.h"
#include <math.h>

/* Below this many elements a parallel region costs more than it saves. */
enum { PAR_MIN = 1 << 15 };

/* One run of S values of a channel: h = (x - m) is, y = g h + bt (xhat
 * keeps h when not NULL).  y may be x itself, element for element, which is
 * what the simd pragma (no dependence between iterations) allows. */
SOMA_SIMD_CLONES
static void bn_affine_run(float *y, float *xhat, const float *x, int S, float m, float is, float g, float bt)
{
    if (xhat) {
        _Pragma("omp simd")
        for (int s = 0; s < S; s++) {
            const float h = (x[s] - m) * is;
            xhat[s] = h;
            y[s] = g * h + bt;
        }
    } else {
        _Pragma("omp simd")
        for (int s = 0; s < S; s++) y[s] = g * ((x[s] - m) * is) + bt;
    }
}

/* x(B,C,S) -> y(B,C,S).  cache receives mean(C), invstd(C) and xhat(B,C,S)
 * for the backward pass; cache, or any of its buffers, may be NULL when no
 * backward pass follows.  run_mean/run_var(C): updated in training (may
 * both be NULL there: no update), read when frozen (required).
 * gamma/beta(C) may be NULL, meaning 1 and 0.  y may alias x. */
void soma_batchnorm_forward(float *y, soma_bn_cache *cache, float *run_mean,
                            float *run_var, const float *x, const float *gamma,
                            const float *beta, int B, int C, int S, float eps,
                            float momentum, int train)
{
    const size_t n = (size_t)B * S, cstride = (size_t)C * S;
#pragma omp parallel for schedule(static) if (n * C >= PAR_MIN)
    for (int c = 0; c < C; c++) {
        const float *xc = x + (size_t)c * S;
        double mean, var;
        if (train) {
            double sum = 0.0;
            for (int b = 0; b < B; b++)
                for (int s = 0; s < S; s++) sum += xc[b * cstride + s];
            mean = sum / (double)n;
            /* two passes: no cancellation when |mean| >> std */
            double ss = 0.0;
            for (int b = 0; b < B; b++)
                for (int s = 0; s < S; s++) {
                    double d = xc[b * cstride + s] - mean;
                    ss += d * d;
                }
            var = ss / (double)n;
            if (run_mean && run_var) {
                double unbiased = n > 1 ? ss / (double)(n - 1) : var;
                run_mean[c] = (1.0f - momentum) * run_mean[c] + momentum * (float)mean;
                run_var[c] = (1.0f - momentum) * run_var[c] + momentum * (float)unbiased;
            }
        } else {
            mean = run_mean[c];
            var = run_var[c];
        }
        const float m = (float)mean, is = (float)(1.0 / sqrt(var + (double)eps));
        const float g = gamma ? gamma[c] : 1.0f, bt = beta ? beta[c] : 0.0f;
        if (cache && cache->mean) cache->mean[c] = m;
        if (cache && cache->invstd) cache->invstd[c] = is;
        float *xhat = (cache && cache->xhat) ? cache->xhat + (size_t)c * S : NULL;
        float *yc = y + (size_t)c * S;
        for (int b = 0; b < B; b++)
            bn_affine_run(yc + b * cstride, xhat ? xhat + b * cstride : NULL, xc + b * cstride, S, m, is, g, bt);
    }
}

/* dy(B,C,S), cache from the forward pass with the same train flag ->
 * dx(B,C,S) += ..., dgamma(C) += sum dy xhat, dbeta(C) += sum dy.
 * NULL outputs are skipped.  Needs cache->invstd for dx, cache->xhat for
 * dgamma and for dx in training.  gamma NULL means 1. */
void soma_batchnorm_backward(float *dx, float *dgamma, float *dbeta,
                             const float *dy, const soma_bn_cache *cache,
                             const float *gamma, int B, int C, int S, int train)
{
    const size_t n = (size_t)B * S, cstride = (size_t)C * S;
#pragma omp parallel for schedule(static) if (n * C >= PAR_MIN)
    for (int c = 0; c < C; c++) {
        const float *dyc = dy + (size_t)c * S;
        const float *xhat = cache->xhat ? cache->xhat + (size_t)c * S : NULL;
        double sdy = 0.0, sdyx = 0.0;
        /* from y = gamma xhat + beta */
        if (dbeta || (dx && train))
            for (int b = 0; b < B; b++)
                for (int s = 0; s < S; s++) sdy += dyc[b * cstride + s];
        if (dgamma || (dx && train))
            for (int b = 0; b < B; b++)
                for (int s = 0; s < S; s++) {
                    size_t at = b * cstride + s;
                    sdyx += (double)dyc[at] * xhat[at];
                }
        if (dbeta) dbeta[c] += (float)sdy;
        if (dgamma) dgamma[c] += (float)sdyx;
        if (!dx) continue;
        const float k = (gamma ? gamma[c] : 1.0f) * cache->invstd[c];
        float *dxc = dx + (size_t)c * S;
        if (train) {
            /* from xhat = (x - mean(x)) invstd(x): the batch statistics'
             * share of the gradient removes dy's mean and its xhat part */
            const float mdy = (float)(sdy / (double)n), mdyx = (float)(sdyx / (double)n);
            for (int b = 0; b < B; b++)
                for (int s = 0; s < S; s++) {
                    size_t at = b * cstride + s;
                    dxc[at] += k * (dyc[at] - mdy - xhat[at] * mdyx);
                }
        } else {
            /* from y = gamma (x - run_mean) invstd + beta */
            for (int b = 0; b < B; b++)
                for (int s = 0; s < S; s++) dxc[b * cstride + s] += k * dyc[b * cstride + s];
        }
    }
}
