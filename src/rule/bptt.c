/*
 * bptt.c - backpropagation through time: the baseline every online rule is
 * compared with.
 *
 *   reset state; for t = 0..T-1: x_t = encode(x, t); out_t = step(x_t)
 *   scores = reduce(out_0..out_{T-1})       (mean, last or sum)
 *   L = loss(scores, y);  dout_t = dL/dscores * dreduce/dout_t
 *   backward through all T steps (state gradients carried step to step,
 *   detached every `trunc` steps when truncated) -> optimizer step.
 *
 * Memory: the net keeps every layer's output and every cell's state for all
 * T steps (window T), plus the encoded inputs: O(T).  soma_rule_plan
 * reports the bytes, which is what `soma train --dry-run` prints.
 */
#include "rule.h"
#include <string.h>

typedef struct bptt_state {
    soma_encoder *enc;
    float  *xs;                 /* (T, B, step_size) encoded inputs; NULL for DIRECT */
    float  *scores, *dscores, *probs, *dstep;   /* (B, C) each */
    const float **dout;         /* (T) per-step gradient pointers */
    const float **outs;         /* (T) per-step outputs (valid: the window is T) */
    float  *deach;              /* REDUCE_EACH: (T, B, C) per-step loss gradients */
    size_t  xs_bytes;
} bptt_state;

static soma_status bptt_init(soma_rule *r, int max_batch)
{
    const soma_rule_config *c = &r->cfg;
    soma_net *net = r->net;
    if (!soma_net_is_spiking(net))
        return soma__fail(SOMA_ERR_ARG, "rule bptt needs a spiking net (give --neuron)");
    if (c->T <= 0) return soma__fail(SOMA_ERR_ARG, "--T must be > 0, got %d", c->T);
    if ((unsigned)c->reduce >= SOMA_REDUCE_COUNT) return soma__fail(SOMA_ERR_ARG, "unknown reduce %d", (int)c->reduce);
    if (c->trunc < 0) return soma__fail(SOMA_ERR_ARG, "--trunc must be >= 0, got %d", c->trunc);
    bptt_state *s = soma__calloc(1, sizeof *s);
    if (!s) return SOMA_ERR_NOMEM;
    r->state = s;
    int D = c->sample_size ? c->sample_size : soma_net_inputs(net);
    soma_status st = soma_encoder_new(&s->enc, c->encoding, D, c->T, c->enc_seed, c->gain > 0 ? c->gain : 1.0f);
    if (st) return st;
    int step = soma_encoder_step_size(s->enc);
    if (step != soma_net_inputs(net))
        return soma__fail(SOMA_ERR_SHAPE, "encoding %s gives %d value(s) per step, net '%s' takes %d",
                          soma_encoding_name(c->encoding), step, soma_net_spec(net), soma_net_inputs(net));
    if ((st = soma_net_prepare_time(net, max_batch, c->T))) return st;
    soma_net_set_static_input(net, c->encoding == SOMA_ENC_DIRECT);
    int C = soma_net_outputs(net);
    size_t bc = (size_t)max_batch * C;
    if (c->encoding != SOMA_ENC_DIRECT) {
        s->xs_bytes = (size_t)c->T * max_batch * step * sizeof(float);
        if (!(s->xs = soma__malloc_aligned(s->xs_bytes))) return SOMA_ERR_NOMEM;
    }
    s->scores = soma__malloc(bc * sizeof(float));
    s->dscores = soma__malloc(bc * sizeof(float));
    s->probs = soma__malloc(bc * sizeof(float));
    s->dstep = soma__malloc(bc * sizeof(float));
    s->dout = soma__calloc((size_t)c->T, sizeof *s->dout);
    s->outs = soma__calloc((size_t)c->T, sizeof *s->outs);
    if (!s->scores || !s->dscores || !s->probs || !s->dstep || !s->dout || !s->outs) return SOMA_ERR_NOMEM;
    if (c->reduce == SOMA_REDUCE_EACH && !(s->deach = soma__malloc((size_t)c->T * bc * sizeof(float))))
        return SOMA_ERR_NOMEM;
    return SOMA_OK;
}

static void bptt_release(soma_rule *r)
{
    bptt_state *s = r->state;
    if (!s) return;
    soma_encoder_free(s->enc);
    soma__free_aligned(s->xs);
    soma__free(s->scores);
    soma__free(s->dscores);
    soma__free(s->probs);
    soma__free(s->dstep);
    soma__free((void *)s->dout);
    soma__free((void *)s->outs);
    soma__free(s->deach);
    soma__free(s);
}

/* Runs the T steps and reduces the outputs into s->scores. */
static soma_status run_sequence(soma_rule *r, const soma_batch *b, soma_rng *rng)
{
    bptt_state *s = r->state;
    const soma_rule_config *c = &r->cfg;
    soma_net *net = r->net;
    int B = b->n, C = soma_net_outputs(net), step = soma_encoder_step_size(s->enc);
    size_t bc = (size_t)B * C;
    soma_status st = soma_net_reset_state(net, B, rng);
    if (st) return st;
    memset(s->scores, 0, bc * sizeof(float));
    for (int t = 0; t < c->T; t++) {
        const float *xt = soma__encode_input(s->enc, s->xs ? s->xs + (size_t)t * B * step : NULL, b, t, rng);
        const float *out;
        if ((st = soma_net_step(net, xt, B, &out))) return st;
        s->outs[t] = out;
        soma__reduce_add(c, s->scores, out, t, bc);
    }
    return SOMA_OK;
}

static soma_status bptt_train_batch(soma_rule *r, const soma_batch *b, float lr, soma_rng *rng,
                                    soma_step_stats *st)
{
    bptt_state *s = r->state;
    const soma_rule_config *c = &r->cfg;
    soma_net *net = r->net;
    int B = b->n, C = soma_net_outputs(net);
    soma_net_set_train(net, 1);
    soma_status e = run_sequence(r, b, rng);
    if (e) return e;
    soma_step_stats local = { 0 };
    size_t bc = (size_t)B * C;
    if (c->reduce == SOMA_REDUCE_EACH) {
        /* L = (1/T) sum_t loss(out_t, y); the reported loss is that mean,
         * the accuracy is that of the mean output */
        soma_step_stats acc = { 0 };
        double total = 0;
        for (int t = 0; t < c->T; t++) {
            soma_step_stats one = { 0 };
            float *d = s->deach + (size_t)t * bc;
            if ((e = soma__loss_and_grad_t(d, s->probs, s->outs[t], b->y, b->target, B, C, c->loss, &one))) return e;
            for (size_t i = 0; i < bc; i++) d[i] /= (float)c->T;
            total += one.loss;
            s->dout[t] = d;
        }
        if ((e = soma__loss_and_grad_t(NULL, s->probs, s->scores, b->y, b->target, B, C, c->loss, &acc))) return e;
        local.loss = total / c->T;
        local.correct = acc.correct;
        local.n = acc.n;
    } else {
        if ((e = soma__loss_and_grad_t(s->dscores, s->probs, s->scores, b->y, b->target, B, C, c->loss, &local)))
            return e;
        /* d scores / d out_t: 1/T (mean), 1 (sum), or only the last step */
        float w = c->reduce == SOMA_REDUCE_MEAN ? 1.0f / (float)c->T : 1.0f;
        for (size_t i = 0; i < bc; i++) s->dstep[i] = w * s->dscores[i];
        for (int t = 0; t < c->T; t++)
            s->dout[t] = c->reduce == SOMA_REDUCE_LAST && t != c->T - 1 ? NULL : s->dstep;
    }
    soma_net_zero_grad(net);
    if ((e = soma_net_backward_time(net, c->T, s->dout, B, c->trunc))) return e;
    size_t np = soma_net_param_floats(net);
    float *g = soma_net_param_grads(net);
    if (!soma__all_finite(g, np)) return soma__fail(SOMA_ERR_NUMERIC, "gradient contains NaN or Inf");
    if (c->clip_norm > 0) soma__clip_norm(g, np, c->clip_norm);
    soma_optim_step(r->optim, soma_net_param_values(net), g, lr);
    if (st) { st->loss += local.loss; st->correct += local.correct; st->n += local.n; }
    return SOMA_OK;
}

static soma_status bptt_predict(soma_rule *r, const soma_batch *b, const float **scores,
                                soma_step_stats *st)
{
    bptt_state *s = r->state;
    soma_net_set_train(r->net, 0);
    /* Poisson inputs in evaluation draw from a fixed stream, so a checkpoint
     * always scores the same */
    soma_rng rng;
    soma_rng_seed(&rng, SOMA__EVAL_SEED);
    soma_status e = run_sequence(r, b, &rng);
    if (e) return e;
    *scores = s->scores;
    if (st) e = soma__loss_and_grad_t(NULL, s->probs, s->scores, b->y, b->target, b->n, soma_net_outputs(r->net),
                                    r->cfg.loss, st);
    return e;
}

static void bptt_plan(const soma_rule *r, soma_mem_plan *p)
{
    const bptt_state *s = r->state;
    p->activations = r->net->act_bytes + (s ? s->xs_bytes : 0);
    p->workspace = r->net->ws_floats * sizeof(float) +
                   4 * (size_t)r->max_batch * soma_net_outputs(r->net) * sizeof(float);
}

const soma_rule_ops soma__rule_bptt = {
    .name = "bptt",
    .about = "backpropagation through time (full, or truncated with --trunc)",
    .init = bptt_init,
    .train_batch = bptt_train_batch,
    .predict = bptt_predict,
    .plan = bptt_plan,
    .release = bptt_release,
};
