/*
 * mq.c - MQ, "Matrix Update eQualization" (Alonso, Krichmar & Neftci 2023;
 * as coded in the authors' IL.py, shared/notes/pc.md section 2.4).
 *
 * One scalar v per parameter group (a weight matrix pooled with its bias),
 * so the state is O(number of matrices), not O(parameters):
 *
 *   N    = the step counter, already incremented for this step (1 first)
 *   step = lr / (v + r) + lr_min          (v from BEFORE this step; r = eps)
 *   w   -= step * g                       (over the group)
 *   rho  = min(N / (N + 1), rho_max)
 *   v    = rho v + (1 - rho) mean_group |g|
 *
 * v starts at the configured lr (soma_optim_set_groups), so the first step
 * is about lr / lr = 1 plus lr_min: a plain SGD step of rate ~1, as in the
 * authors' code.  Early on rho = N/(N+1) makes v the running arithmetic mean
 * of the mean |g| seen so far (with the initial value), later an EMA with
 * rate rho_max: Adam's bias correction without a per-weight second moment.
 * The effective step lr / mean|g| makes every matrix's mean absolute update
 * about lr, hence "update equalization"; lr_min is an SGD floor.
 */
#include "optim.h"
#include <math.h>

#define MQ_BLOCK 1024

static void mq_defaults(soma_optim_config *c)
{
    c->eps = 1e-6f;
    c->lr_min = 1e-3f;
    c->rho_max = 0.9999f;
}

static soma_status mq_check(const soma_optim_config *c)
{
    if (!(c->eps > 0.0f) || isinf(c->eps))
        return soma__fail(SOMA_ERR_ARG, "mq: eps (r) must be > 0 and finite, got %g", c->eps);
    if (!(c->lr_min >= 0.0f) || isinf(c->lr_min))
        return soma__fail(SOMA_ERR_ARG, "mq: lr_min must be >= 0 and finite, got %g", c->lr_min);
    if (!(c->rho_max >= 0.0f && c->rho_max < 1.0f))
        return soma__fail(SOMA_ERR_ARG, "mq: rho_max must be in [0, 1), got %g", c->rho_max);
    if (c->momentum != 0.0f || c->dampening != 0.0f || c->nesterov != 0)
        return soma__fail(SOMA_ERR_ARG, "mq: momentum/dampening/nesterov are sgd options, must be 0");
    if (c->beta1 != 0.0f || c->beta2 != 0.0f)
        return soma__fail(SOMA_ERR_ARG, "mq: beta1/beta2 are adam/adamax options, must be 0, "
                          "got %g/%g", c->beta1, c->beta2);
    if (c->weight_decay != 0.0f)
        return soma__fail(SOMA_ERR_ARG, "mq: weight_decay is not part of MQ, must be 0, got %g",
                          c->weight_decay);
    return SOMA_OK;
}

static int mq_state_count(const soma_optim_config *c) { (void)c; return 0; }

/* Never called: soma_optim_step dispatches to mq_group_step, and
 * soma__optim_range refuses group kinds. */
static void mq_step_unused(soma_optim *o, float *w, const float *g, float lr, size_t off, size_t n)
{
    (void)o; (void)w; (void)g; (void)lr; (void)off; (void)n;
}

static void mq_group_step(soma_optim *o, float *w, const float *g, float lr)
{
    const double N = (double)o->t;
    double rho = N / (N + 1.0);
    if (rho > soma__optim_decimal(o->cfg.rho_max)) rho = soma__optim_decimal(o->cfg.rho_max);
    for (int k = 0; k < o->n_groups; k++) {
        float *restrict wk = w + o->g_off[k];
        const float *restrict gk = g + o->g_off[k];
        size_t n = o->g_len[k];
        float v = o->g_state[k];
        const float step = (float)((double)lr / ((double)v + o->cfg.eps) + o->cfg.lr_min);
        /* One pass: the update and mean |g|, summed in float over blocks (a
         * vectorised loop) and the blocks in double, in a fixed order, so the
         * result does not depend on the thread count. */
        double s = 0;
        for (size_t b0 = 0; b0 < n; b0 += MQ_BLOCK) {
            const size_t b1 = n - b0 < MQ_BLOCK ? n : b0 + MQ_BLOCK;
            float part = 0.0f;
            _Pragma("omp simd reduction(+:part)")
            for (size_t i = b0; i < b1; i++) {
                wk[i] -= step * gk[i];
                part += fabsf(gk[i]);
            }
            s += part;
        }
        o->g_state[k] = (float)(rho * v + (1.0 - rho) * (s / (double)n));
    }
}

const soma__optim_impl soma__optim_mq = {
    .name = "mq",
    .defaults = mq_defaults,
    .check = mq_check,
    .state_count = mq_state_count,
    .state_names = {NULL},
    .step = mq_step_unused,
    .group_state = 1,
    .group_state_name = "mq_v",
    .group_step = mq_group_step,
};
