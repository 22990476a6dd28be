/*
 * sgd.c - stochastic gradient descent as torch.optim.SGD (1.13, single-tensor
 * path), including its two quirks:
 *   - the momentum buffer is a COPY of the first step's gradient (no
 *     dampening applied), torch's "buf is None" branch; soma has no None, so
 *     "first step" means the step counter reads 1 (o->t == 1);
 *   - Nesterov adds momentum*buf to the gradient, it does not look ahead.
 *
 *   d   = g + wd * w
 *   buf = d                              (first step)
 *       = momentum * buf + (1 - dampening) * d   (later)
 *   d   = d + momentum * buf  (nesterov)  or  buf
 *   w   = w - lr * d
 */
#include "optim.h"

static void sgd_defaults(soma_optim_config *c)
{
    c->momentum = 0.0f;
    c->dampening = 0.0f;
    c->nesterov = 0;
    c->weight_decay = 0.0f;
}

static soma_status sgd_check(const soma_optim_config *c)
{
    if (!(c->momentum >= 0.0f && c->momentum < 1.0f))
        return soma__fail(SOMA_ERR_ARG, "sgd: momentum must be in [0, 1), got %g", c->momentum);
    if (!(c->dampening >= 0.0f && c->dampening <= 1.0f))
        return soma__fail(SOMA_ERR_ARG, "sgd: dampening must be in [0, 1], got %g", c->dampening);
    if (c->nesterov != 0 && c->nesterov != 1)
        return soma__fail(SOMA_ERR_ARG, "sgd: nesterov must be 0 or 1, got %d", c->nesterov);
    if (c->nesterov && (c->momentum == 0.0f || c->dampening != 0.0f))
        return soma__fail(SOMA_ERR_ARG, "sgd: nesterov needs momentum > 0 and dampening 0, "
                          "got momentum %g, dampening %g", c->momentum, c->dampening);
    /* The Adam-family fields mean nothing here; refusing them catches a mistyped optimizer. */
    if (c->beta1 != 0.0f || c->beta2 != 0.0f)
        return soma__fail(SOMA_ERR_ARG, "sgd: beta1/beta2 are adam/adamax options, must be 0, "
                          "got %g/%g", c->beta1, c->beta2);
    if (c->eps != 0.0f)
        return soma__fail(SOMA_ERR_ARG, "sgd: eps is an adam/adamax option, must be 0, got %g",
                          c->eps);
    return SOMA_OK;
}

/* Plain SGD keeps no buffer, as torch keeps none when momentum == 0. */
static int sgd_state_count(const soma_optim_config *c) { return c->momentum != 0.0f; }

static void sgd_step(soma_optim *o, float *w_, const float *g_, float lr, size_t off, size_t n)
{
    float *restrict w = w_;
    const float *restrict g = g_;
    const float wd = o->cfg.weight_decay;

    if (o->n_state == 0) {
        SOMA__OPTIM_FOR(n)
        for (size_t i = 0; i < n; i++) w[i] -= lr * (g[i] + wd * w[i]);
        return;
    }

    float *restrict buf = o->state[0] + off;
    const float mom = o->cfg.momentum;
    const float keep = (float)(1.0 - o->dampening);   /* torch's alpha = 1 - dampening */
    /* update = a*d + c*buf: (1, mom) is Nesterov, (0, 1) is buf itself, both
     * exact in float; a blend instead of a branch keeps the loop vectorizable. */
    const float a = o->cfg.nesterov ? 1.0f : 0.0f, c = o->cfg.nesterov ? mom : 1.0f;
    if (o->t == 1) {
        SOMA__OPTIM_FOR(n)
        for (size_t i = 0; i < n; i++) {
            float d = g[i] + wd * w[i];
            buf[i] = d;
            w[i] -= lr * (a * d + c * d);
        }
    } else {
        SOMA__OPTIM_FOR(n)
        for (size_t i = 0; i < n; i++) {
            float d = g[i] + wd * w[i];
            float b = mom * buf[i] + keep * d;
            buf[i] = b;
            w[i] -= lr * (a * d + c * b);
        }
    }
}

const soma__optim_impl soma__optim_sgd = {
    .name = "sgd",
    .defaults = sgd_defaults,
    .check = sgd_check,
    .state_count = sgd_state_count,
    .state_names = {"momentum_buffer"},
    .step = sgd_step,
};
