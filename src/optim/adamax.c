/*
 * adamax.c - torch.optim.Adamax (1.13, single-tensor path): Adam with the
 * second moment replaced by an exponentially weighted infinity norm.
 *
 *   d  = g + wd * w
 *   m  = b1 m + (1 - b1) d
 *   u  = max(b2 u, |d| + eps)        (torch adds eps inside the max)
 *   w  = w - lr / (1 - b1^t) * m / u
 *
 * NaN propagates through the max as torch.amax does, so a bad gradient shows
 * up in the weights instead of being silently dropped by fmaxf.
 */
#include "optim.h"
#include <math.h>

static void adamax_defaults(soma_optim_config *c)
{
    c->lr = 2e-3f;
    c->beta1 = 0.9f;
    c->beta2 = 0.999f;
    c->eps = 1e-8f;
    c->weight_decay = 0.0f;
}

static int adamax_state_count(const soma_optim_config *c) { (void)c; return 2; }

SOMA_SIMD_CLONES
static void adamax_step(soma_optim *o, float *w_, const float *g_, float lr, size_t off, size_t n)
{
    float *restrict w = w_;
    const float *restrict g = g_;
    float *restrict m = o->state[0] + off;
    float *restrict u = o->state[1] + off;
    const float b1 = o->cfg.beta1, b2 = o->cfg.beta2, eps = o->cfg.eps;
    const float wd = o->cfg.weight_decay;
    /* scalars in double from the betas as written, rounded once (see adam.c) */
    const float c1 = (float)(1.0 - o->beta1);
    const float clr = (float)((double)lr / (1.0 - pow(o->beta1, (double)o->t)));

    SOMA__OPTIM_FOR(n)
    for (size_t i = 0; i < n; i++) {
        float d = g[i] + wd * w[i];
        float mi = b1 * m[i] + c1 * d;
        float a = b2 * u[i], b = fabsf(d) + eps;
        float ui = (a > b || a != a) ? a : b;
        m[i] = mi;
        u[i] = ui;
        w[i] -= clr * (mi / ui);
    }
}

const soma__optim_impl soma__optim_adamax = {
    .name = "adamax",
    .defaults = adamax_defaults,
    .check = soma__optim_check_betas,
    .state_count = adamax_state_count,
    .state_names = {"exp_avg", "exp_inf"},
    .step = adamax_step,
};
