/*
 * lfp_snn.c - LFP through time for step-function spiking nets (notes/lfp.md
 * sec. 7): Heaviside LIF neurons trained without any surrogate gradient.
 *
 * Net: dense and conv layers, each followed by a LIF/IF cell (a max pool
 * may sit between the two, I_t = pool(conv(S_t)), or after the cell, on its
 * spikes), flatten between conv and dense; the output layer is a spiking
 * cell (--readout spike) whose spike counts are the prediction.  Both
 * orders are carried: convKxCmM is conv-pool-LIF (the seed's), convKxC-poolM
 * conv-LIF-pool.  Forward: T steps of the net (soma_net_step, direct
 * or any encoding), every step kept (window T: memory O(T), as BPTT; LFP
 * is not an online method).
 *
 * Reward (the rate-coded sequence reward, sec. 7.3): with N_c the output
 * spike count of class c, M_c = T - N_c and h = floor(T/2),
 *   r_{t,c} = (1 - sigmoid(N_c - h)) / T                 c = the label
 *   r_{t,c} = -S_{t,c} (1 - sigmoid(M_c - h)) / T        otherwise.
 *
 * Propagation, t = T-1 ... 0, top layer to the lowest dense/conv layer
 * (sec. 7.2, version A's explicit loop):
 *   cell:  F = feedback from above at t (r_t at the top) + carry
 *          [F /= max |F|]                                   (--lfp-norm)
 *          q = F / (D + 1e-6), D = |v_t|                   (version A)
 *                            or |u_{t-1}| + |v_t - u_{t-1}| (version B, --lfp-snn-denom 1)
 *          carry <- alpha u_{t-1} q                        (for step t-1)
 *   dense: fb_W += |W| (.) q^T x_t,  fb_b += |b| (.) sum_n q,
 *          F_below(t) = x_t (.) (q W)
 *   conv:  the same with the core's conv backward carrying q in place of
 *          dL/dy (the conv relevance of lfp.c / relevance.c, whose signal
 *          here is q, already divided by the membrane):
 *          fb_W += |W| (.) conv_bw(q, x_t), fb_b += |b| (.) sum q,
 *          F_below(t) = x_t (.) conv_bx(q, W)            (soma_conv2d_backward)
 *   max pool: winner takes all (soma_maxpool_relevance, step t's argmax)
 *   flatten: F passes.
 * with v_t the pre-reset membrane and u the post-reset one of soma's cell
 * (v_t = alpha u_{t-1} + I_t; the authors' snnTorch neuron applies the reset
 * one step later, so its numbers differ by that; soma's own dynamics are
 * what this follows).  With direct input the lowest dense/conv layer sees
 * the same x at every step, so its feedback is formed once from sum_t q_t
 * (exact: fb is linear in q for a fixed x).
 */
#include "rule.h"
#include <math.h>
#include <string.h>

typedef struct lfp_snn {
    soma_encoder *enc;
    float *xs;             /* (T, B, step) encoded inputs; NULL for direct */
    float *counts;         /* (B, C) output spike counts = scores */
    float *probs;          /* (B, C) */
    float *reward;         /* (B, C) the reward at one step */
    float *F[2], *carry[SOMA_LFP_SNN_MAX_CELLS][1]; /* feedback ping-pong; per-cell carries */
    float *qsum;           /* (B, outputs of the lowest dense/conv) sum_t q_t for direct input */
    size_t fsz, xs_bytes, carry_floats;
    int    lowest;         /* the lowest dense/conv layer */
} lfp_snn;

/* 1 if the dense/conv layer i feeds a cell, directly or through max pools */
static int feeds_cell(const soma_net *n, int i)
{
    int j = i + 1;
    while (j < n->n_layers && n->layers[j].kind == SOMA_LAYER_MAXPOOL) j++;
    return j < n->n_layers && n->layers[j].kind == SOMA_LAYER_CELL;
}

static void conv_shape(soma_conv_shape *cs, const soma_layer *l, int B)
{
    soma_conv_shape_init(cs, B, l->in_c, l->in_h, l->in_w, l->out_c, l->k, l->k, l->stride, l->pad);
}

static void pool_shape(soma_pool_shape *ps, const soma_layer *l, int B)
{
    soma_pool_shape_init(ps, B, l->in_c, l->in_h, l->in_w, l->k, l->stride);
}

static int cell_index(const soma_net *n, int layer)
{
    int k = 0;
    for (int i = 0; i < layer; i++) k += n->layers[i].kind == SOMA_LAYER_CELL;
    return k;
}

soma_status soma__lfp_snn_init(soma_rule *r, int max_batch, void **out)
{
    const soma_rule_config *c = &r->cfg;
    soma_net *net = r->net;
    *out = NULL;
    if (c->T <= 0)
        return soma__fail(SOMA_ERR_ARG, "rule lfp on a spiking net needs T > 0 time steps, got %d", c->T);
    for (int i = 0; i < net->n_layers; i++) {
        soma_layer_kind k = net->layers[i].kind;
        if (k != SOMA_LAYER_CELL && k != SOMA_LAYER_DENSE && k != SOMA_LAYER_CONV &&
            k != SOMA_LAYER_MAXPOOL && k != SOMA_LAYER_FLATTEN)
            return soma__fail(SOMA_ERR_UNSUPPORTED, "rule lfp on spiking nets: layer %d (%s) is not "
                              "served (LFP through time carries dense, conv, maxpool, flatten and "
                              "lif/if cell layers)", i, soma__layer_kind_name(k));
    }
    int cells = 0;
    for (int i = 0; i < net->n_layers; i++) {
        const soma_layer *l = &net->layers[i];
        if (l->kind == SOMA_LAYER_CELL) {
            if (l->cell.kind != SOMA_NEURON_LIF && l->cell.kind != SOMA_NEURON_IF)
                return soma__fail(SOMA_ERR_UNSUPPORTED, "rule lfp: layer %d is a %s cell; LFP through time "
                                  "serves lif/if cells with spiking output (--readout spike)", i,
                                  soma_neuron_name(l->cell.kind));
            if (l->ltc)
                return soma__fail(SOMA_ERR_UNSUPPORTED, "rule lfp: layer %d is a liquid-time-constant "
                                  "cell; LFP through time serves lif/if cells with fixed alpha", i);
            cells++;
        } else if (l->kind == SOMA_LAYER_DENSE || l->kind == SOMA_LAYER_CONV) {
            if (l->kind == SOMA_LAYER_DENSE && l->rec >= 0)
                return soma__fail(SOMA_ERR_UNSUPPORTED, "rule lfp: recurrent layer %d is not served", i);
            if (!feeds_cell(net, i))
                return soma__fail(SOMA_ERR_UNSUPPORTED, "rule lfp: %s layer %d must feed a cell "
                                  "(give --readout spike)", soma__layer_kind_name(l->kind), i);
        }
    }
    if (cells > SOMA_LFP_SNN_MAX_CELLS)
        return soma__fail(SOMA_ERR_UNSUPPORTED, "rule lfp: more than %d cell layers", SOMA_LFP_SNN_MAX_CELLS);
    if (c->lfp_snn_denom != 0 && c->lfp_snn_denom != 1)
        return soma__fail(SOMA_ERR_ARG, "--lfp-snn-denom must be 0 (|v_t|) or 1 (|u_t-1| + |v_t - u_t-1|), got %d",
                          c->lfp_snn_denom);
    lfp_snn *s = soma__calloc(1, sizeof *s);
    if (!s) return SOMA_ERR_NOMEM;
    *out = s;
    int D = c->sample_size ? c->sample_size : soma_net_inputs(net);
    soma_status st = soma_encoder_new(&s->enc, c->encoding, D, c->T, c->enc_seed, c->gain > 0 ? c->gain : 1.0f);
    if (st) return st;
    int step = soma_encoder_step_size(s->enc);
    if (step != soma_net_inputs(net))
        return soma__fail(SOMA_ERR_SHAPE, "encoding %s gives %d value(s) per step, net '%s' takes %d",
                          soma_encoding_name(c->encoding), step, soma_net_spec(net), soma_net_inputs(net));
    if ((st = soma_net_prepare_time(net, max_batch, c->T))) return st;
    soma_net_set_static_input(net, c->encoding == SOMA_ENC_DIRECT);
    size_t maxsz = (size_t)soma_net_inputs(net);
    s->lowest = -1;
    for (int i = 0; i < net->n_layers; i++) {
        const soma_layer *l = &net->layers[i];
        if (l->out_size > maxsz) maxsz = l->out_size;
        if ((l->kind == SOMA_LAYER_DENSE || l->kind == SOMA_LAYER_CONV) && s->lowest < 0) s->lowest = i;
    }
    if (s->lowest < 0)
        return soma__fail(SOMA_ERR_ARG, "rule lfp: net '%s' has no dense or conv layer", soma_net_spec(net));
    int C = soma_net_outputs(net);
    size_t bc = (size_t)max_batch * C;
    s->fsz = (size_t)max_batch * maxsz;
    s->counts = soma__malloc(bc * sizeof(float));
    s->probs = soma__malloc(bc * sizeof(float));
    s->reward = soma__malloc(bc * sizeof(float));
    s->F[0] = soma__malloc_aligned(s->fsz * sizeof(float));
    s->F[1] = soma__malloc_aligned(s->fsz * sizeof(float));
    s->qsum = soma__malloc_aligned((size_t)max_batch * net->layers[s->lowest].out_size * sizeof(float));
    s->carry_floats = (size_t)max_batch * net->layers[s->lowest].out_size;   /* qsum; the carries below */
    if (!s->counts || !s->probs || !s->reward || !s->F[0] || !s->F[1] || !s->qsum) return SOMA_ERR_NOMEM;
    for (int i = 0; i < net->n_layers; i++) {
        const soma_layer *l = &net->layers[i];
        if (l->kind != SOMA_LAYER_CELL) continue;
        if (!(s->carry[cell_index(net, i)][0] = soma__malloc_aligned((size_t)max_batch * l->out_size * sizeof(float))))
            return SOMA_ERR_NOMEM;
        s->carry_floats += (size_t)max_batch * l->out_size;
    }
    if (c->encoding != SOMA_ENC_DIRECT) {
        s->xs_bytes = (size_t)c->T * max_batch * step * sizeof(float);
        if (!(s->xs = soma__malloc_aligned(s->xs_bytes))) return SOMA_ERR_NOMEM;
    }
    return SOMA_OK;
}

void soma__lfp_snn_free(void *p)
{
    lfp_snn *s = p;
    if (!s) return;
    soma_encoder_free(s->enc);
    soma__free_aligned(s->xs);
    soma__free(s->counts);
    soma__free(s->probs);
    soma__free(s->reward);
    soma__free_aligned(s->F[0]);
    soma__free_aligned(s->F[1]);
    soma__free_aligned(s->qsum);
    for (int k = 0; k < SOMA_LFP_SNN_MAX_CELLS; k++) soma__free_aligned(s->carry[k][0]);
    soma__free(s);
}

size_t soma__lfp_snn_bytes(const void *p)
{
    const lfp_snn *s = p;
    return s ? s->xs_bytes + (2 * s->fsz + s->carry_floats) * sizeof(float) : 0;
}

/* Runs the T steps; counts = output spikes summed over time. */
static soma_status run(soma_rule *r, lfp_snn *s, const soma_batch *b, soma_rng *rng)
{
    soma_net *net = r->net;
    const int B = b->n, C = soma_net_outputs(net), step = soma_encoder_step_size(s->enc);
    soma_status st = soma_net_reset_state(net, B, rng);
    if (st) return st;
    memset(s->counts, 0, (size_t)B * C * sizeof(float));
    for (int t = 0; t < r->cfg.T; t++) {
        const float *out;
        const float *xt = soma__encode_input(s->enc, s->xs ? s->xs + (size_t)t * B * step : NULL, b, t, rng);
        if ((st = soma_net_step(net, xt, B, &out))) return st;
        for (int i = 0; i < B * C; i++) s->counts[i] += out[i];
    }
    return SOMA_OK;
}

static float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

static void normalise_max(float *F, size_t n)
{
    float m = 0;
    for (size_t k = 0; k < n; k++) m = fmaxf(m, fabsf(F[k]));
    if (m > 0) for (size_t k = 0; k < n; k++) F[k] /= m;
}

soma_status soma__lfp_snn_feedback(soma_rule *r, void *p, const soma_batch *b, soma_rng *rng,
                                   soma_step_stats *st)
{
    lfp_snn *s = p;
    soma_net *net = r->net;
    const soma_rule_config *c = &r->cfg;
    const int B = b->n, C = soma_net_outputs(net), T = c->T, h = T / 2;
    soma_net_set_train(net, 1);
    soma_status e = run(r, s, b, rng);
    if (e) return e;
    soma_step_stats local = { 0 };
    if ((e = soma__loss_and_grad(NULL, s->probs, s->counts, b->y, B, C, c->loss, &local))) return e;
    soma_net_zero_grad(net);
    for (int i = 0; i < net->n_layers; i++)
        if (net->layers[i].kind == SOMA_LAYER_CELL)
            memset(s->carry[cell_index(net, i)][0], 0, (size_t)B * net->layers[i].out_size * sizeof(float));
    const int direct = net->static_input;
    const soma_layer *low = &net->layers[s->lowest];
    if (direct) memset(s->qsum, 0, (size_t)B * low->out_size * sizeof(float));
    for (int t = T - 1; t >= 0; t--) {
        int slot = soma__slot_of(net, t), prev = soma__slot_of(net, t - 1);
        /* the reward at step t */
        const soma_layer *top = &net->layers[net->n_layers - 1];
        const float *S = soma__slot(net, top, top->out, slot);
        for (int n = 0; n < B; n++)
            for (int k = 0; k < C; k++) {
                float N = s->counts[(size_t)n * C + k];
                float v = k == b->y[n] ? 1.0f - sigmoidf(N - (float)h)
                                       : -S[(size_t)n * C + k] * (1.0f - sigmoidf((float)T - N - (float)h));
                s->reward[(size_t)n * C + k] = v / (float)T;
            }
        const float *F = s->reward;
        int cur = 0;
        for (int i = net->n_layers - 1; i >= s->lowest; i--) {
            soma_layer *l = &net->layers[i];
            size_t out_n = (size_t)B * l->out_size;
            if (l->kind == SOMA_LAYER_CELL) {
                float *q = s->F[cur], *carry = s->carry[cell_index(net, i)][0];
                for (size_t k = 0; k < out_n; k++) q[k] = F[k] + carry[k];
                if (c->lfp_norm) normalise_max(q, out_n);
                const float *v = soma__slot(net, l, l->cv, slot);
                const float *u_prev = soma__slot(net, l, l->cu, prev);
                const float alpha = l->cell.kind == SOMA_NEURON_IF ? 1.0f : l->cell.alpha;
                for (size_t k = 0; k < out_n; k++) {
                    float D = c->lfp_snn_denom ? fabsf(u_prev[k]) + fabsf(v[k] - u_prev[k]) : fabsf(v[k]);
                    q[k] /= D + 1e-6f;
                    carry[k] = alpha * u_prev[k] * q[k];
                }
                F = q;
                cur ^= 1;
            } else if (l->kind == SOMA_LAYER_DENSE) {
                const int I = (int)l->in_size, O = l->out_c;
                const float *x = i > 0 ? soma__slot(net, &net->layers[i - 1], net->layers[i - 1].out, slot)
                                       : net->xs[slot];
                float *below = i > s->lowest ? s->F[cur] : NULL;
                if (below) {
                    /* F_below = x (.) (q W) */
                    soma_gemm(0, 0, B, I, O, 1.0f, F, O, soma__param_value(net, l->w), I, 0.0f, below, I);
                    for (size_t k = 0; k < (size_t)B * I; k++) below[k] *= x[k];
                }
                if (direct && i == s->lowest) {
                    for (size_t k = 0; k < out_n; k++) s->qsum[k] += F[k];
                } else {
                    /* raw sums now, |W| (.) at the end (it is constant over t) */
                    soma_gemm(1, 0, O, I, B, 1.0f, F, O, x, I, 1.0f, soma__param_grad(net, l->w), I);
                    float *gb = soma__param_grad(net, l->b);
                    for (int n = 0; n < B; n++)
                        for (int o = 0; o < O; o++) gb[o] += F[(size_t)n * O + o];
                }
                if (below) { F = below; cur ^= 1; }
            } else if (l->kind == SOMA_LAYER_CONV) {
                const float *x = i > 0 ? soma__slot(net, &net->layers[i - 1], net->layers[i - 1].out, slot)
                                       : net->xs[slot];
                soma_conv_shape cs;
                conv_shape(&cs, l, B);
                float *below = i > s->lowest ? s->F[cur] : NULL;
                if (below) memset(below, 0, (size_t)B * l->in_size * sizeof(float));
                if (direct && i == s->lowest) {
                    for (size_t k = 0; k < out_n; k++) s->qsum[k] += F[k];
                } else {
                    /* the conv backward with q as dL/dy: below = conv_bx(q, W), raw
                     * sums conv_bw(q, x) and sum q (|W| (.) at the end) */
                    soma_conv2d_backward(below, soma__param_grad(net, l->w), soma__param_grad(net, l->b),
                                         net->ws, F, x, soma__param_value(net, l->w), &cs);
                }
                if (below) {
                    /* F_below = x (.) conv_bx(q, W) */
                    for (size_t k = 0; k < (size_t)B * l->in_size; k++) below[k] *= x[k];
                    F = below;
                    cur ^= 1;
                }
            } else if (l->kind == SOMA_LAYER_MAXPOOL) {
                /* winner takes all, with step t's argmax (the lowest layer has
                 * parameters, so a pool always has a layer below to feed) */
                soma_pool_shape ps;
                pool_shape(&ps, l, B);
                float *below = s->F[cur];
                memset(below, 0, (size_t)B * l->in_size * sizeof(float));
                soma_maxpool_relevance(below, F, soma__slot_idx(net, l, slot), &ps);
                F = below;
                cur ^= 1;
            }
            /* FLATTEN passes F through */
        }
    }
    if (direct && low->kind == SOMA_LAYER_DENSE) {
        const soma_layer *l = low;
        const int I = (int)l->in_size, O = l->out_c;
        int slot = soma__slot_of(net, T - 1);
        const float *x = s->lowest > 0 ? soma__slot(net, &net->layers[s->lowest - 1], net->layers[s->lowest - 1].out, slot)
                                       : net->xs[slot];
        soma_gemm(1, 0, O, I, B, 1.0f, s->qsum, O, x, I, 1.0f, soma__param_grad(net, l->w), I);
        float *gb = soma__param_grad(net, l->b);
        for (int n = 0; n < B; n++)
            for (int o = 0; o < O; o++) gb[o] += s->qsum[(size_t)n * O + o];
    } else if (direct) {
        /* the lowest conv, once on sum_t q_t: the same x at every step */
        const soma_layer *l = low;
        int slot = soma__slot_of(net, T - 1);
        const float *x = s->lowest > 0 ? soma__slot(net, &net->layers[s->lowest - 1], net->layers[s->lowest - 1].out, slot)
                                       : net->xs[slot];
        soma_conv_shape cs;
        conv_shape(&cs, l, B);
        soma_conv2d_backward(NULL, soma__param_grad(net, l->w), soma__param_grad(net, l->b), net->ws, s->qsum, x,
                             soma__param_value(net, l->w), &cs);
    }
    /* fb = |theta| (.) sums; the optimizers descend: grad = -fb */
    size_t np = soma_net_param_floats(net);
    float *g = soma_net_param_grads(net);
    const float *w = soma_net_param_values(net);
    for (size_t k = 0; k < np; k++) g[k] = -fabsf(w[k]) * g[k];
    if (st) { st->loss += local.loss; st->correct += local.correct; st->n += local.n; }
    return SOMA_OK;
}

soma_status soma__lfp_snn_predict(soma_rule *r, void *p, const soma_batch *b, const float **scores,
                                  soma_step_stats *st)
{
    lfp_snn *s = p;
    soma_net_set_train(r->net, 0);
    soma_rng rng;
    soma_rng_seed(&rng, SOMA__EVAL_SEED);
    soma_status e = run(r, s, b, &rng);
    if (e) return e;
    *scores = s->counts;
    if (st) e = soma__loss_and_grad(NULL, s->probs, s->counts, b->y, b->n, soma_net_outputs(r->net),
                                    r->cfg.loss, st);
    return e;
}
