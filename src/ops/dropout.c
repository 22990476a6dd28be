/*
 * dropout.c - inverted dropout with an explicit mask.
 *
 * The mask holds 0 (dropped, probability p) or 1/(1-p) (kept), so the
 * expected activation is unchanged and evaluation needs no rescaling
 * (torch.nn.Dropout).  Drawing the mask apart from applying it lets a
 * recurrent net reuse one mask over all time steps (variational dropout)
 * and makes the backward pass the same multiply.
 */
#include "../soma_internal.h"

/* Below this many elements a parallel region costs more than it saves. */
enum { PAR_MIN = 1 << 15 };

/* mask(n) of 0 or 1/(1-p), p in [0,1).  Element i is kept when the i-th
 * uniform draw u in [0,1) has u >= p, which has probability 1 - p.  The
 * draws are sequential so a seed gives one mask whatever the thread count.
 * p == 0 writes all ones and draws nothing from rng. */
void soma_dropout_mask(float *mask, size_t n, float p, soma_rng *rng)
{
    if (p <= 0.0f) {
        for (size_t i = 0; i < n; i++) mask[i] = 1.0f;
        return;
    }
    const float keep = 1.0f / (1.0f - p);
    for (size_t i = 0; i < n; i++) mask[i] = soma_rng_uniform(rng) >= p ? keep : 0.0f;
}

/* y(n) = x(n) * mask(n); y may alias x. */
void soma_dropout_forward(float *y, const float *x, const float *mask, size_t n)
{
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) y[i] = x[i] * mask[i];
}

/* dx(n) += dy(n) * mask(n), the derivative of y = x * mask. */
void soma_dropout_backward(float *dx, const float *dy, const float *mask, size_t n)
{
    if (!dx) return;
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) dx[i] += dy[i] * mask[i];
}
