/*
 * lfp.c - layer-wise feedback propagation (Weber et al. 2023; notes/lfp.md).
 *
 *   forward (training mode, every layer output cached)
 *   -> feedback at the outputs r = reward(o, y)            (soma_lfp_reward)
 *   -> top to bottom, per layer: R_in and the parameter feedback
 *      fb_W = |W| (.) sum_n a s^T, fb_b = |b| (.) sum_n s  (src/ops/relevance.c,
 *      the LRP rule chosen for the layer's kind: a composite)
 *   -> grad := -fb  -> [adaptive unit-wise clip] -> [global norm clip] -> optimizer.
 *
 * Sign convention: LFP maximises the feedback, the optimizers minimise, so
 * the grad store holds -fb and plain SGD does theta <- theta + lr fb (the
 * authors write .grad = -feedback the same way).  fb is summed over the
 * batch, not averaged (the authors' 1.0.0 code; their zennit-era code
 * divided by B).  For a ReLU net with eps = 0 and the softmax reward,
 * -fb = |theta| (.) dL/dtheta with L the cross-entropy summed over the batch
 * (notes sec. 3.3): test_lfp checks this against soma_net_backward.
 *
 * Layers: dense/conv by their rule, max pooling winner-takes-all, average
 * pooling by the pool rule, batchnorm as its per-channel affine map (epsilon),
 * activations, flatten and dropout pass R through (dropout: a dropped unit's
 * output is 0, so the layer above already gave it no relevance).
 * Optional, between layers: R entering a dense/conv/batchnorm layer is divided
 * by its max |R| over the batch (lfp_norm).  Spiking nets (Heaviside LIF, no
 * surrogate): lfp_snn.c, through time.
 */
#include "rule.h"
#include <math.h>
#include <string.h>

typedef struct lfp_state {
    float *probs;          /* (max_batch, C): loss monitoring */
    float *R[2];           /* relevance ping-pong, (max_batch, max layer size) */
    float *ws;             /* relevance kernels' scratch, the largest layer's */
    size_t ws_floats, r_floats;
    int    lowest;         /* the lowest layer with parameters */
    void  *snn;            /* spiking nets: LFP through time (lfp_snn.c) */
} lfp_state;

static soma_lrp_params layer_params(const soma_rule_config *c, soma_lrp_rule r)
{
    return (soma_lrp_params){ .rule = r, .eps = c->lfp_eps, .alpha = c->lfp_alpha,
                              .beta = c->lfp_beta };
}

soma_status soma_lfp_composite_from_name(soma_rule_config *c, const char *spec)
{
    if (!spec || !*spec) return soma__fail(SOMA_ERR_ARG, "empty LFP rule");
    if (!strchr(spec, '=')) {
        soma_lrp_rule r;
        soma_status st = soma_lrp_rule_from_name(&r, spec);
        if (st) return st;
        c->lfp_dense = c->lfp_conv = c->lfp_pool = r;
        return SOMA_OK;
    }
    /* dense=R,conv=R,pool=R */
    soma_lrp_rule d = c->lfp_dense, cv = c->lfp_conv, pl = c->lfp_pool;
    const char *p = spec;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        char item[64];
        if (len == 0 || len >= sizeof item)
            return soma__fail(SOMA_ERR_ARG, "LFP composite '%s': bad item at offset %d", spec,
                              (int)(p - spec));
        memcpy(item, p, len);
        item[len] = 0;
        char *eq = strchr(item, '=');
        if (!eq) return soma__fail(SOMA_ERR_ARG, "LFP composite '%s': '%s' is not kind=rule", spec, item);
        *eq = 0;
        soma_lrp_rule r;
        soma_status st = soma_lrp_rule_from_name(&r, eq + 1);
        if (st) return st;
        if (!strcmp(item, "dense")) d = r;
        else if (!strcmp(item, "conv")) cv = r;
        else if (!strcmp(item, "pool")) pl = r;
        else return soma__fail(SOMA_ERR_ARG, "LFP composite '%s': unknown layer kind '%s' "
                               "(valid: dense, conv, pool)", spec, item);
        p += len;
        if (*p == ',') p++;
    }
    c->lfp_dense = d; c->lfp_conv = cv; c->lfp_pool = pl;
    return SOMA_OK;
}

static soma_status check_config(const soma_rule_config *c)
{
    if ((unsigned)c->lfp_reward >= SOMA_LFP_REWARD_COUNT)
        return soma__fail(SOMA_ERR_ARG, "unknown LFP reward %d", (int)c->lfp_reward);
    if (!(c->lfp_agc >= 0) || !isfinite(c->lfp_agc))
        return soma__fail(SOMA_ERR_ARG, "--lfp-agc must be >= 0, got %g", c->lfp_agc);
    if (c->lfp_norm != 0 && c->lfp_norm != 1)
        return soma__fail(SOMA_ERR_ARG, "--lfp-norm must be 0 or 1, got %d", c->lfp_norm);
    const soma_lrp_rule rules[3] = { c->lfp_dense, c->lfp_conv, c->lfp_pool };
    const char *kinds[3] = { "dense", "conv", "pool" };
    for (int k = 0; k < 3; k++) {
        soma_lrp_params p = layer_params(c, rules[k]);
        soma_status st = soma_lrp_params_check(&p);
        if (st) return soma__fail(st, "LFP %s rule: %s", kinds[k], soma_last_error());
    }
    return SOMA_OK;
}

static void conv_shape(soma_conv_shape *cs, const soma_layer *l, int B)
{
    soma_conv_shape_init(cs, B, l->in_c, l->in_h, l->in_w, l->out_c, l->k, l->k, l->stride, l->pad);
}

static void pool_shape(soma_pool_shape *ps, const soma_layer *l, int B)
{
    soma_pool_shape_init(ps, B, l->in_c, l->in_h, l->in_w, l->k, l->stride);
}

static size_t layer_ws(const soma_rule *r, const soma_layer *l, int B, int threads)
{
    const soma_rule_config *c = &r->cfg;
    soma_lrp_params p;
    switch (l->kind) {
    case SOMA_LAYER_DENSE:
        p = layer_params(c, c->lfp_dense);
        return soma_dense_relevance_workspace(B, (int)l->in_size, l->out_c, &p);
    case SOMA_LAYER_CONV: {
        soma_conv_shape cs;
        conv_shape(&cs, l, B);
        p = layer_params(c, c->lfp_conv);
        return soma_conv2d_relevance_workspace(&cs, &p, threads);
    }
    case SOMA_LAYER_AVGPOOL: {
        soma_pool_shape ps;
        pool_shape(&ps, l, B);
        p = layer_params(c, c->lfp_pool);
        return soma_avgpool_relevance_workspace(&ps, &p);
    }
    default:
        return 0;
    }
}

static soma_status lfp_init(soma_rule *r, int max_batch)
{
    soma_net *net = r->net;
    soma_status st = check_config(&r->cfg);
    if (st) return st;
    lfp_state *s = soma__calloc(1, sizeof *s);
    if (!s) return SOMA_ERR_NOMEM;
    r->state = s;
    if (soma_net_is_spiking(net)) return soma__lfp_snn_init(r, max_batch, &s->snn);
    size_t maxsz = (size_t)soma_net_inputs(net), ws = 0;
    int threads = soma_get_threads();
    s->lowest = -1;
    for (int i = 0; i < net->n_layers; i++) {
        const soma_layer *l = &net->layers[i];
        if (l->kind == SOMA_LAYER_CELL)
            return soma__fail(SOMA_ERR_UNSUPPORTED, "rule lfp: layer %d is a neuron cell", i);
        if (l->w >= 0 && s->lowest < 0) s->lowest = i;
        if (l->out_size > maxsz) maxsz = l->out_size;
        size_t w = layer_ws(r, l, max_batch, threads);
        if (w > ws) ws = w;
    }
    s->r_floats = (size_t)max_batch * maxsz;
    s->ws_floats = ws;
    size_t C = (size_t)soma_net_outputs(net);
    s->probs = soma__malloc((size_t)max_batch * C * sizeof(float));
    s->R[0] = soma__malloc_aligned(s->r_floats * sizeof(float));
    s->R[1] = soma__malloc_aligned(s->r_floats * sizeof(float));
    s->ws = soma__malloc_aligned((ws ? ws : 1) * sizeof(float));
    if (!s->probs || !s->R[0] || !s->R[1] || !s->ws) return SOMA_ERR_NOMEM;
    return SOMA_OK;
}

static void lfp_release(soma_rule *r)
{
    lfp_state *s = r->state;
    if (!s) return;
    soma__lfp_snn_free(s->snn);
    soma__free(s->probs);
    soma__free_aligned(s->R[0]);
    soma__free_aligned(s->R[1]);
    soma__free_aligned(s->ws);
    soma__free(s);
}

/* R /= max |R| over the whole (batch x units) tensor, when that is > 0 */
static void normalise(float *R, size_t n)
{
    float m = 0.0f;
    for (size_t k = 0; k < n; k++) m = fmaxf(m, fabsf(R[k]));
    if (m > 0)
        for (size_t k = 0; k < n; k++) R[k] /= m;
}

/* Relevance through layer i: R_in (B, in_size) from R_out (B, out_size),
 * parameter feedback into the grad store (+=).  R_in NULL: not needed. */
static void layer_relevance(soma_rule *r, int i, float *R_in, float *R_out, const float *in, int B)
{
    lfp_state *s = r->state;
    soma_net *n = r->net;
    soma_layer *l = &n->layers[i];
    const soma_rule_config *c = &r->cfg;
    size_t count = (size_t)B * l->in_size;
    if (R_in) memset(R_in, 0, count * sizeof(float));
    if (c->lfp_norm && (l->kind == SOMA_LAYER_DENSE || l->kind == SOMA_LAYER_CONV ||
                        l->kind == SOMA_LAYER_BATCHNORM))
        normalise(R_out, (size_t)B * l->out_size);
    soma_lrp_params p;
    switch (l->kind) {
    case SOMA_LAYER_DENSE:
        p = layer_params(c, c->lfp_dense);
        soma_dense_relevance(R_in, soma__param_grad(n, l->w), soma__param_grad(n, l->b), s->ws, R_out,
                             l->out, in, soma__param_value(n, l->w), soma__param_value(n, l->b),
                             B, (int)l->in_size, l->out_c, &p);
        break;
    case SOMA_LAYER_CONV: {
        soma_conv_shape cs;
        conv_shape(&cs, l, B);
        p = layer_params(c, c->lfp_conv);
        soma_conv2d_relevance(R_in, soma__param_grad(n, l->w), soma__param_grad(n, l->b), s->ws, R_out,
                              l->out, in, soma__param_value(n, l->w), soma__param_value(n, l->b),
                              &cs, &p);
        break;
    }
    case SOMA_LAYER_MAXPOOL: {
        soma_pool_shape ps;
        pool_shape(&ps, l, B);
        if (R_in) soma_maxpool_relevance(R_in, R_out, l->idx, &ps);
        break;
    }
    case SOMA_LAYER_AVGPOOL: {
        soma_pool_shape ps;
        pool_shape(&ps, l, B);
        p = layer_params(c, c->lfp_pool);
        if (R_in) soma_avgpool_relevance(R_in, s->ws, R_out, l->out, in, &ps, &p);
        break;
    }
    case SOMA_LAYER_BATCHNORM:
        soma_batchnorm_relevance(R_in, soma__param_grad(n, l->w), soma__param_grad(n, l->b), R_out,
                                 l->out, in, l->bn.xhat, soma__param_value(n, l->w),
                                 soma__param_value(n, l->b), l->bn.invstd, B, l->out_c,
                                 l->out_h * l->out_w, c->lfp_eps);
        break;
    default: /* FLATTEN, ACT, DROPOUT: R passes unchanged */
        if (R_in) memcpy(R_in, R_out, count * sizeof(float));
        break;
    }
}

soma_status soma_lfp_feedback(soma_rule *r, const soma_batch *b, soma_rng *rng, float *R_in,
                              soma_step_stats *st)
{
    if (!r || !b) return soma__fail(SOMA_ERR_ARG, "soma_lfp_feedback: NULL rule or batch");
    if (r->ops != &soma__rule_lfp)
        return soma__fail(SOMA_ERR_ARG, "soma_lfp_feedback needs rule lfp, got '%s'", r->ops->name);
    if (b->n <= 0 || b->n > r->max_batch)
        return soma__fail(SOMA_ERR_ARG, "batch of %d samples outside 1..%d", b->n, r->max_batch);
    if (b->target)
        return soma__fail(SOMA_ERR_UNSUPPORTED, "rule lfp: regression targets are not supported "
                          "(the feedback functions need class labels)");
    lfp_state *s = r->state;
    soma_net *net = r->net;
    const int B = b->n, C = soma_net_outputs(net);
    for (int k = 0; k < B; k++)
        if (b->y[k] < 0 || b->y[k] >= C)
            return soma__fail(SOMA_ERR_ARG, "label %d of sample %d outside 0..%d", b->y[k], k, C - 1);
    if (s->snn) {
        if (R_in) return soma__fail(SOMA_ERR_UNSUPPORTED, "rule lfp: input relevance of a spiking net");
        return soma__lfp_snn_feedback(r, s->snn, b, rng, st);
    }
    const float *scores;
    soma_net_set_train(net, 1);
    soma_status e = soma_net_forward(net, b->x, B, rng, &scores);
    if (e) return e;
    soma_step_stats local = { 0 };
    if ((e = soma__loss_and_grad(NULL, s->probs, scores, b->y, B, C, r->cfg.loss, &local))) return e;
    float *R = s->R[0];
    int cur = 0;
    soma_lfp_reward(R, scores, b->y, B, C, r->cfg.lfp_reward);
    soma_net_zero_grad(net);
    int stop = R_in ? 0 : s->lowest;  /* below the lowest parameter nobody reads R */
    for (int i = net->n_layers - 1; i >= stop && i >= 0; i--) {
        const float *in = i > 0 ? net->layers[i - 1].out : b->x;
        float *Rd = i > 0 ? (i > stop ? s->R[!cur] : NULL) : R_in;
        layer_relevance(r, i, Rd, R, in, B);
        R = Rd;
        cur ^= 1;
    }
    /* the optimizers descend: hand them -fb */
    size_t np = soma_net_param_floats(net);
    float *g = soma_net_param_grads(net);
#pragma omp parallel for simd schedule(static) if (np >= 32768)
    for (size_t k = 0; k < np; k++) g[k] = -g[k];
    if (st) { st->loss += local.loss; st->correct += local.correct; st->n += local.n; }
    return SOMA_OK;
}

/* Unit-wise adaptive clipping (AGC; notes sec. 6): per dense/conv output
 * unit u, P_u = max(sqrt(|W_u|^2 + b_u^2), 1e-6); for the weight row and the
 * bias separately G = |g_u|; if G / P_u > lambda, g_u *= lambda P_u / G. */
static void agc(soma_net *n, float lambda)
{
    for (int i = 0; i < n->n_layers; i++) {
        soma_layer *l = &n->layers[i];
        if (l->kind != SOMA_LAYER_DENSE && l->kind != SOMA_LAYER_CONV) continue;
        const int U = l->out_c;
        const size_t row = n->params.p[l->w].n / (size_t)U;
        float *w = soma__param_value(n, l->w), *gw = soma__param_grad(n, l->w);
        float *b = soma__param_value(n, l->b), *gb = soma__param_grad(n, l->b);
        for (int u = 0; u < U; u++) {
            double pw = 0, gg = 0;
            for (size_t k = 0; k < row; k++) {
                pw += (double)w[u * row + k] * w[u * row + k];
                gg += (double)gw[u * row + k] * gw[u * row + k];
            }
            double P = sqrt(pw + (double)b[u] * b[u]);
            if (P < 1e-6) P = 1e-6;
            double G = sqrt(gg);
            if (G / P > lambda) {
                float f = (float)(lambda * P / G);
                for (size_t k = 0; k < row; k++) gw[u * row + k] *= f;
            }
            G = fabs(gb[u]);
            if (G / P > lambda) gb[u] *= (float)(lambda * P / G);
        }
    }
}

static soma_status lfp_train_batch(soma_rule *r, const soma_batch *b, float lr, soma_rng *rng,
                                   soma_step_stats *st)
{
    soma_step_stats local = { 0 };
    soma_status e = soma_lfp_feedback(r, b, rng, NULL, &local);
    if (e) return e;
    soma_net *net = r->net;
    size_t np = soma_net_param_floats(net);
    float *g = soma_net_param_grads(net);
    if (!soma__all_finite(g, np)) return soma__fail(SOMA_ERR_NUMERIC, "LFP feedback contains NaN or Inf");
    if (r->cfg.lfp_agc > 0) agc(net, r->cfg.lfp_agc);
    if (r->cfg.clip_norm > 0) soma__clip_norm(g, np, r->cfg.clip_norm);
    soma_optim_step(r->optim, soma_net_param_values(net), g, lr);
    if (st) { st->loss += local.loss; st->correct += local.correct; st->n += local.n; }
    return SOMA_OK;
}

static soma_status lfp_predict(soma_rule *r, const soma_batch *b, const float **scores,
                               soma_step_stats *st)
{
    lfp_state *s = r->state;
    if (s->snn) return soma__lfp_snn_predict(r, s->snn, b, scores, st);
    soma_net_set_train(r->net, 0);
    soma_status e = soma_net_forward(r->net, b->x, b->n, NULL, scores);
    if (e) return e;
    if (st) e = soma__loss_and_grad(NULL, s->probs, *scores, b->y, b->n,
                                    soma_net_outputs(r->net), r->cfg.loss, st);
    return e;
}

static void lfp_plan(const soma_rule *r, soma_mem_plan *p)
{
    const lfp_state *s = r->state;
    p->activations = r->net->act_bytes;
    if (s->snn) {
        p->activations += soma__lfp_snn_bytes(s->snn);
        return;
    }
    p->workspace = r->net->ws_floats * sizeof(float) +
                   (2 * s->r_floats + s->ws_floats) * sizeof(float) +
                   (size_t)r->max_batch * soma_net_outputs(r->net) * sizeof(float);
}

const soma_rule_ops soma__rule_lfp = {
    .name = "lfp",
    .about = "layer-wise feedback propagation (LRP rules; reward ascent)",
    .init = lfp_init,
    .train_batch = lfp_train_batch,
    .predict = lfp_predict,
    .plan = lfp_plan,
    .release = lfp_release,
};
