/*
 * adam.c - torch.optim.Adam (1.13, single-tensor path, amsgrad off): L2 weight
 * decay added to the gradient (not AdamW's decoupled decay).
 *
 *   d  = g + wd * w
 *   m  = b1 m + (1 - b1) d
 *   v  = b2 v + (1 - b2) d^2
 *   w  = w - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
 *
 * As in torch, the scalars are formed in double from the betas as written
 * (o->beta1, o->beta2: 0.999, not 0.999f) and rounded to float once, where a
 * tensor kernel would: the multipliers b1, b2, (1 - b1), (1 - b2), the step
 * size lr / (1 - b1^t) and sqrt(1 - b2^t).  The loop itself runs in float.
 */
#include "optim.h"
#include <math.h>

static void adam_defaults(soma_optim_config *c)
{
    c->beta1 = 0.9f;
    c->beta2 = 0.999f;
    c->eps = 1e-8f;
    c->weight_decay = 0.0f;
}

static int adam_state_count(const soma_optim_config *c) { (void)c; return 2; }

SOMA_SIMD_CLONES
static void adam_step(soma_optim *o, float *w_, const float *g_, float lr, size_t off, size_t n)
{
    float *restrict w = w_;
    const float *restrict g = g_;
    float *restrict m = o->state[0] + off;
    float *restrict v = o->state[1] + off;
    const float b1 = o->cfg.beta1, b2 = o->cfg.beta2, eps = o->cfg.eps;
    const float wd = o->cfg.weight_decay;
    const float c1 = (float)(1.0 - o->beta1), c2 = (float)(1.0 - o->beta2);
    const double t = (double)o->t;
    const float step_size = (float)((double)lr / (1.0 - pow(o->beta1, t)));
    const float bc2_sqrt = (float)sqrt(1.0 - pow(o->beta2, t));

    SOMA__OPTIM_FOR(n)
    for (size_t i = 0; i < n; i++) {
        float d = g[i] + wd * w[i];
        float mi = b1 * m[i] + c1 * d;
        float vi = b2 * v[i] + c2 * (d * d);
        m[i] = mi;
        v[i] = vi;
        w[i] -= step_size * (mi / (sqrtf(vi) / bc2_sqrt + eps));
    }
}

const soma__optim_impl soma__optim_adam = {
    .name = "adam",
    .defaults = adam_defaults,
    .check = soma__optim_check_betas,
    .state_count = adam_state_count,
    .state_names = {"exp_avg", "exp_avg_sq"},
    .step = adam_step,
};
