/*
 * bp.c - backpropagation: the baseline every other rule is compared with.
 *
 *   forward (caches every layer output) -> loss on the class scores
 *   -> backward (per-layer VJPs into the grad store) -> [clip] -> optimizer.
 *
 * Workspace: dscores and probs, (B, classes) each; everything else is the
 * net's own caches.
 */
#include "rule.h"
#include <string.h>

typedef struct bp_state {
    float *dscores, *probs;   /* (max_batch, C) */
} bp_state;

static soma_status bp_init(soma_rule *r, int max_batch)
{
    if (soma_net_is_spiking(r->net))
        return soma__fail(SOMA_ERR_ARG, "rule bp is for static nets; net '%s' has neuron cells "
                          "(use bptt)", soma_net_spec(r->net));
    bp_state *s = soma__calloc(1, sizeof *s);
    if (!s) return SOMA_ERR_NOMEM;
    r->state = s;
    size_t n = (size_t)max_batch * soma_net_outputs(r->net);
    s->dscores = soma__malloc(n * sizeof(float));
    s->probs = soma__malloc(n * sizeof(float));
    return s->dscores && s->probs ? SOMA_OK : SOMA_ERR_NOMEM;
}

static void bp_release(soma_rule *r)
{
    bp_state *s = r->state;
    if (!s) return;
    soma__free(s->dscores);
    soma__free(s->probs);
    soma__free(s);
}

static soma_status bp_train_batch(soma_rule *r, const soma_batch *b, float lr, soma_rng *rng,
                                  soma_step_stats *st)
{
    bp_state *s = r->state;
    soma_net *net = r->net;
    int C = soma_net_outputs(net);
    const float *scores;
    soma_net_set_train(net, 1);
    soma_status e = soma_net_forward(net, b->x, b->n, rng, &scores);
    if (e) return e;
    soma_step_stats local = { 0 };
    if ((e = soma__loss_and_grad_t(s->dscores, s->probs, scores, b->y, b->target, b->n, C, r->cfg.loss, &local)))
        return e;
    /* MQ scales whole matrices by one scalar: it cannot take a row at a time */
    if (net->fusable && b->n <= SOMA__FUSED_MAX_BATCH && r->cfg.clip_norm == 0 &&
        r->cfg.optim.kind != SOMA_OPTIM_MQ) {
        /* small batch: the gradient is formed row by row inside the update */
        if ((e = soma__net_fused_update(net, s->dscores, b->n, r->optim, lr))) return e;
        if (st) { st->loss += local.loss; st->correct += local.correct; st->n += local.n; }
        return SOMA_OK;
    }
    soma_net_zero_grad(net);
    if ((e = soma_net_backward(net, s->dscores, b->n, NULL))) return e;
    size_t np = soma_net_param_floats(net);
    float *g = soma_net_param_grads(net);
    if (!soma__all_finite(g, np)) return soma__fail(SOMA_ERR_NUMERIC, "gradient contains NaN or Inf");
    if (r->cfg.clip_norm > 0) soma__clip_norm(g, np, r->cfg.clip_norm);
    soma_optim_step(r->optim, soma_net_param_values(net), g, lr);
    if (st) { st->loss += local.loss; st->correct += local.correct; st->n += local.n; }
    return SOMA_OK;
}

static soma_status bp_predict(soma_rule *r, const soma_batch *b, const float **scores,
                              soma_step_stats *st)
{
    bp_state *s = r->state;
    soma_net_set_train(r->net, 0);
    soma_status e = soma_net_forward(r->net, b->x, b->n, NULL, scores);
    if (e) return e;
    if (st) e = soma__loss_and_grad_t(NULL, s->probs, *scores, b->y, b->target, b->n,
                                    soma_net_outputs(r->net), r->cfg.loss, st);
    return e;
}

static void bp_plan(const soma_rule *r, soma_mem_plan *p)
{
    p->activations = r->net->act_bytes;
    p->workspace = r->net->ws_floats * sizeof(float) +
                   2 * (size_t)r->max_batch * soma_net_outputs(r->net) * sizeof(float);
}

const soma_rule_ops soma__rule_bp = {
    .name = "bp",
    .about = "backpropagation (baseline)",
    .init = bp_init,
    .train_batch = bp_train_batch,
    .predict = bp_predict,
    .plan = bp_plan,
    .release = bp_release,
};
