/*
 * ep.c - equilibrium propagation over a layered leaky-integrator rate network
 * built on the net's conv and dense layers (docs/ep.md; notes: shared/notes/ep.md).
 *
 * States s_1..s_nd (pre-activation, kept in [0,1]), input clamped, rho = the
 * net's hidden activation (clamp01 = the papers' hard sigmoid).  One layer k
 * feeds s_k from below with layer_k(rho(s_{k-1})):
 *   dense k (weight W_k (n_k, n_{k-1}), bias b_k):  W_k rho(s_{k-1}) + b_k
 *   conv k (convKxC[sS][pP]mM, Laborieux et al. 2021's P_CNN layer; conv layers
 *     come first): maxpool(conv(rho(s_{k-1}); W_k) + b_k), s_k (O, PH, PW).
 * Below, "W_{k+1}^T rho(s_{k+1})" for a conv layer k+1 is the VJP of
 * rho(s_k) -> layer_{k+1}(rho(s_k)) against rho(s_{k+1}): the transposed conv
 * of the un-pooled cotangent, routed to the argmax of the current iterate
 * (recomputed every Euler step); the general variant's F_{k+1} is then a
 * kernel G_{k+1} shaped as W_{k+1} ("<i>.weight_fb"), whose feedback is the
 * VJP of maxpool(conv(.; G_{k+1})) (no bias) through its own argmax (VF_CNN).
 *
 *   general (Scellier, Goyal, Binas, Mesnard, Bengio 2018), untied weights:
 *     mu_k = W_k rho(s_{k-1}) + b_k + F_{k+1} rho(s_{k+1}) - s_k
 *     F_{k+1} (n_k, n_{k+1}) is a separate feedback matrix without bias,
 *     stored as "<i>.weight_fb" beside dense layer i = k+1's "<i>.weight".
 *   classic (Scellier & Bengio 2017), tied weights, Hopfield energy
 *     E = 1/2 sum |s_k|^2 - sum b_k.rho(s_k) - sum rho(s_k).W_k rho(s_{k-1}):
 *     mu_k = -dE/ds_k = rho'(s_k) (W_k rho(s_{k-1}) + b_k + W_{k+1}^T rho(s_{k+1})) - s_k
 *   nudging: mu^beta = mu - beta dC/ds, with
 *     mse output (cfg.loss mse): C = 1/2 |y - s_nd|^2, force beta (y - s_nd)
 *     ce readout (cfg.loss ce, Laborieux et al. 2021): dense layer L is a
 *       readout outside the dynamics, C = CE(softmax(W_L rho(s_nd) + b_L), y),
 *       force -beta rho'(s_nd) (W_L^T (softmax - onehot))
 *   Euler, synchronous (every layer from the previous iterate), clipped
 *   (paper eq. 59):  s <- clip(s + eps mu^beta(s), 0, 1)
 *
 * One batch: free phase (beta = 0) from zeros, or from the samples'
 * persistent particles, to s0; nudged phase(s) from s0 with +beta (and -beta
 * with symmetric nudging) to s+ (s-).  With D = (s+ - s0)/beta (one-sided,
 * beta signed under random sign) or (s+ - s-)/(2 beta) (symmetric):
 *   general (eq. 56, dW ~ dmu/dW(s0) . D):
 *     dW_k = mean_b D_k^T rho(s0_{k-1}),  db_k = mean_b D_k,
 *     dF_{k+1} = mean_b D_k^T rho(s0_{k+1})     (presynaptic at the FREE point)
 *     conv: dW_k, db_k = the conv's weight/bias gradient of D_k routed through the
 *     argmax at s0 against rho(s0_{k-1}); dG_{k+1} = the weight gradient of
 *     rho(s0_{k+1}) routed through conv_G(rho(s0_k))'s argmax against D_k
 *   classic (-dE/dW, contrastive Hebbian):
 *     dW_k = mean_b [rho(s+_k)^T rho(s+_{k-1}) - rho(s'_k)^T rho(s'_{k-1})] / beta'
 *     (s' = s0, beta' = beta one-sided; s' = s-, beta' = 2 beta symmetric)
 *     conv: each term is the weight gradient of rho(s_k), routed through that
 *     state's argmax, against rho(s_{k-1})
 *   ce readout: dW_L = -dCE/dW_L at s+ (the mean of s+ and s- symmetric).
 * The optimizer minimises, so the grad store gets -lr_k dW (lr_k the
 * per-layer factor; a feedback matrix F_{k+1} uses pair k+1's).
 * Prediction: the free fixed point's output (mse: s_nd; ce: the readout's
 * logits), relaxed from zeros for ep_eval_steps.
 */
#include "ep.h"
#include <math.h>
#include <string.h>

/* ---- names and defaults --------------------------------------------------- */

static const char *const variant_names[SOMA_EP_VARIANT_COUNT] = {
    [SOMA_EP_GENERAL] = "general", [SOMA_EP_CLASSIC] = "classic",
};
static const char *const fb_names[SOMA_EP_FB_COUNT] = {
    [SOMA_EP_FB_RANDOM] = "random", [SOMA_EP_FB_TRANSPOSE] = "transpose",
};

const char *soma_ep_variant_name(soma_ep_variant v)
{
    return (unsigned)v < SOMA_EP_VARIANT_COUNT ? variant_names[v] : "unknown";
}

soma_status soma_ep_variant_from_name(soma_ep_variant *out, const char *name)
{
    for (int i = 0; i < SOMA_EP_VARIANT_COUNT; i++)
        if (!strcmp(name, variant_names[i])) { *out = (soma_ep_variant)i; return SOMA_OK; }
    return soma__fail(SOMA_ERR_ARG, "unknown EP variant '%s' (valid: general, classic)", name);
}

const char *soma_ep_fb_init_name(soma_ep_fb_init f)
{
    return (unsigned)f < SOMA_EP_FB_COUNT ? fb_names[f] : "unknown";
}

soma_status soma_ep_fb_init_from_name(soma_ep_fb_init *out, const char *name)
{
    for (int i = 0; i < SOMA_EP_FB_COUNT; i++)
        if (!strcmp(name, fb_names[i])) { *out = (soma_ep_fb_init)i; return SOMA_OK; }
    return soma__fail(SOMA_ERR_ARG, "unknown EP feedback init '%s' (valid: random, transpose)", name);
}

void soma_ep_config_default(soma_rule_config *c)
{
    c->ep_variant = SOMA_EP_GENERAL;
    c->ep_beta = 1.0f;
    c->ep_free_steps = 100;
    c->ep_nudge_steps = 20;
    c->ep_eval_steps = 0;
    c->ep_eps = 0.5f;
    c->ep_symmetric = 0;
    c->ep_random_sign = 0;
    c->ep_particles = 0;
    c->ep_fb_init = SOMA_EP_FB_RANDOM;
    c->ep_n_lrs = 0;
    for (int i = 0; i < SOMA_EP_MAX_LAYERS; i++) c->ep_lrs[i] = 1.0f;
    c->ep_tol = 0.0f;
    c->ep_stop = 0.0f;
}

/* ---- configuration and network checks ------------------------------------ */

static soma_status check_config(const soma_rule_config *c, int L, const char *spec)
{
    if ((unsigned)c->ep_variant >= SOMA_EP_VARIANT_COUNT)
        return soma__fail(SOMA_ERR_ARG, "unknown EP variant %d", (int)c->ep_variant);
    if ((unsigned)c->ep_fb_init >= SOMA_EP_FB_COUNT)
        return soma__fail(SOMA_ERR_ARG, "unknown EP feedback init %d", (int)c->ep_fb_init);
    if (!(c->ep_eps > 0.0f && c->ep_eps < 1.0f))
        return soma__fail(SOMA_ERR_ARG, "EP step size eps must be in (0, 1), got %g (eps <= 0 "
                          "never moves; eps >= 1 overshoots the leak: unstable Euler)", c->ep_eps);
    if (!(c->ep_beta > 0.0f) || !isfinite(c->ep_beta))
        return soma__fail(SOMA_ERR_ARG, "EP beta must be > 0 and finite, got %g (beta = 0 makes "
                          "the nudged phase the free phase and the update 0/0; negative nudges: "
                          "random sign)", c->ep_beta);
    if (c->ep_free_steps < 1 || c->ep_nudge_steps < 1 || c->ep_eval_steps < 0)
        return soma__fail(SOMA_ERR_ARG, "EP steps must be >= 1 (free %d, nudged %d) and eval "
                          "steps >= 0 (got %d)", c->ep_free_steps, c->ep_nudge_steps, c->ep_eval_steps);
    if (c->ep_symmetric && c->ep_random_sign)
        return soma__fail(SOMA_ERR_ARG, "EP symmetric nudging and random sign exclude each other "
                          "(symmetric already uses +beta and -beta)");
    if (c->ep_n_lrs != 0 && c->ep_n_lrs != L)
        return soma__fail(SOMA_ERR_ARG, "EP needs %d per-layer learning rates (one per conv/dense "
                          "layer of '%s', input side first), got %d", L, spec, c->ep_n_lrs);
    for (int k = 0; k < c->ep_n_lrs; k++)
        if (!(c->ep_lrs[k] > 0.0f) || !isfinite(c->ep_lrs[k]))
            return soma__fail(SOMA_ERR_ARG, "EP per-layer learning rate %d must be > 0, got %g",
                              k + 1, c->ep_lrs[k]);
    if (c->ep_particles < 0) return soma__fail(SOMA_ERR_ARG, "EP particles must be >= 0, got %d", c->ep_particles);
    if (!(c->ep_tol >= 0.0f)) return soma__fail(SOMA_ERR_ARG, "EP tolerance must be >= 0, got %g", c->ep_tol);
    if (!(c->ep_stop >= 0.0f) || !isfinite(c->ep_stop))
        return soma__fail(SOMA_ERR_ARG, "EP stop residual (ep-stop) must be >= 0 and finite, got %g", c->ep_stop);
    return SOMA_OK;
}

/* Finds tensor `name` in the param (is_param) or buffer store, or adds it.
 * Returns its index (>= 0) and sets *created; < 0 is an error status. */
static int find_or_add(soma_net *n, int is_param, const char *name, int ndim, const int64_t *shape,
                       int *created)
{
    soma_store *s = is_param ? &n->params : &n->buffers;
    *created = 0;
    for (int i = 0; i < s->count; i++) {
        if (strcmp(s->p[i].name, name)) continue;
        int same = s->p[i].ndim == ndim;
        for (int d = 0; same && d < ndim; d++) same = s->p[i].shape[d] == shape[d];
        if (!same) return soma__fail(SOMA_ERR_SHAPE, "tensor '%s' exists with another shape", name);
        return i;
    }
    *created = 1;
    return soma__net_add_tensor(n, is_param, name, ndim, shape);
}

/* ---- conv layers ------------------------------------------------------------ */

/* Conv layer k (k <= nconv) is the Laborieux P_CNN layer
 *   layer_k(r) = maxpool(conv(r; W_k) + b_k)      r = rho(s_{k-1}) (B, C, H, W)
 * with state s_k (B, O, PH, PW) = n[k] units per sample.  Its shapes for batch B. */
static soma_status conv_shapes(const ep_state *e, const soma_net *net, int k, int B,
                               soma_conv_shape *cs, soma_pool_shape *ps)
{
    const soma_layer *l = &net->layers[e->layer[k]], *p = &net->layers[e->pool[k]];
    soma_status st = soma_conv_shape_init(cs, B, l->in_c, l->in_h, l->in_w, l->out_c, l->k, l->k,
                                          l->stride, l->pad);
    if (!st) st = soma_pool_shape_init(ps, B, cs->O, cs->OH, cs->OW, p->k, p->stride);
    return st;
}

/* out (B, n[k]) = maxpool(conv(in; w) + b) with its argmax in idx; b may be NULL
 * (a feedback kernel has no bias).  The un-pooled conv goes through e->z. */
static void conv_pool(soma_rule *r, int k, float *out, int32_t *idx, const float *in,
                      const float *w, const float *b, int B)
{
    ep_state *e = r->state;
    soma_conv_shape cs;
    soma_pool_shape ps;
    conv_shapes(e, r->net, k, B, &cs, &ps);
    soma_conv2d_forward(e->z, r->net->ws, in, w, b, &cs);
    soma_maxpool_forward(out, idx, e->z, &ps);
}

/* e->z (B, O, OH, OW) = scale * cot (B, n[k]) routed to the argmax idx, zero elsewhere:
 * the cotangent of maxpool's input (maxpool_backward of cot). */
static void unpool(soma_rule *r, int k, const float *cot, const int32_t *idx, float scale, int B)
{
    ep_state *e = r->state;
    soma_conv_shape cs;
    soma_pool_shape ps;
    conv_shapes(e, r->net, k, B, &cs, &ps);
    size_t m = (size_t)B * cs.O * cs.OH * cs.OW;
    memset(e->z, 0, m * sizeof(float));
    soma_maxpool_backward(e->z, cot, idx, &ps);
    if (scale != 1.0f) for (size_t i = 0; i < m; i++) e->z[i] *= scale;
}

/* dx (B, n[k-1]) += the VJP of r -> maxpool(conv(r; w) + b) against cot (B, n[k]) at the
 * argmax idx: the transposed conv of the un-pooled cotangent. */
static void conv_vjp(soma_rule *r, int k, float *dx, const float *cot, const int32_t *idx,
                     const float *w, int B)
{
    ep_state *e = r->state;
    soma_conv_shape cs;
    soma_pool_shape ps;
    conv_shapes(e, r->net, k, B, &cs, &ps);
    unpool(r, k, cot, idx, 1.0f, B);
    soma_conv2d_backward(dx, NULL, NULL, r->net->ws, e->z, NULL, w, &cs);
}

/* dw (and db unless NULL) += the weight (bias) gradient of <c, maxpool(conv(x; w) + b)>
 * with c = scale * cot (B, n[k]) at the argmax idx: the conv's weight gradient of the
 * un-pooled c against the input x (B, n[k-1]). */
static void conv_wgrad(soma_rule *r, int k, float *dw, float *db, const float *cot,
                       const int32_t *idx, float scale, const float *x, const float *w, int B)
{
    ep_state *e = r->state;
    soma_conv_shape cs;
    soma_pool_shape ps;
    conv_shapes(e, r->net, k, B, &cs, &ps);
    unpool(r, k, cot, idx, scale, B);
    soma_conv2d_backward(NULL, dw, db, r->net->ws, e->z, x, w, &cs);
}

/* ---- init / release -------------------------------------------------------- */

static void set_alloc(ep_set *st, float **p, const int *n, int nd, int B)
{
    for (int k = 1; k <= nd; k++) { st->s[k] = *p; *p += (size_t)B * n[k]; }
}

static soma_status ep_init(soma_rule *r, int max_batch)
{
    soma_net *net = r->net;
    const soma_rule_config *c = &r->cfg;
    if (soma_net_is_spiking(net))
        return soma__fail(SOMA_ERR_ARG, "rule ep is for rate nets; net '%s' has neuron cells",
                          soma_net_spec(net));
    if (net->act != SOMA_ACT_CLAMP01 && net->act != SOMA_ACT_SIGMOID &&
        net->act != SOMA_ACT_HARDSIGMOID && net->act != SOMA_ACT_TANH)
        return soma__fail(SOMA_ERR_ARG, "rule ep needs a bounded rho as the hidden activation: "
                          "--act clamp01 (the papers' hard sigmoid), sigmoid, hardsigmoid or tanh; "
                          "got %s", soma_act_name(net->act));
    ep_state *e = soma__calloc(1, sizeof *e);
    if (!e) return SOMA_ERR_NOMEM;
    r->state = e;
    e->particles = -1;
    const char *spec = soma_net_spec(net);
    for (int i = 0; i < net->n_layers; i++) {   /* kinds first: name the offending layer */
        soma_layer_kind k = net->layers[i].kind;
        if (k != SOMA_LAYER_ACT && k != SOMA_LAYER_FLATTEN && k != SOMA_LAYER_DENSE &&
            k != SOMA_LAYER_CONV && k != SOMA_LAYER_MAXPOOL)
            return soma__fail(SOMA_ERR_UNSUPPORTED, "rule ep runs over convKxC[sS][pP]mM and dense "
                              "layers; layer %d of '%s' is %s", i, spec, soma__layer_kind_name(k));
    }
    for (int i = 0; i < net->n_layers; i++) {
        const soma_layer *l = &net->layers[i];
        if (l->kind == SOMA_LAYER_ACT || l->kind == SOMA_LAYER_FLATTEN) continue;
        if (l->kind == SOMA_LAYER_MAXPOOL)
            return soma__fail(SOMA_ERR_UNSUPPORTED, "rule ep: layer %d of '%s' is max pooling "
                              "after the activation (a poolM token); EP's conv layer is "
                              "maxpool(conv + b) before rho: write convKxC[sS][pP]mM", i, spec);
        if (l->rec >= 0)
            return soma__fail(SOMA_ERR_UNSUPPORTED, "rule ep: layer %d has a recurrent weight", i);
        if (e->L == EP_MAXL)
            return soma__fail(SOMA_ERR_UNSUPPORTED, "rule ep takes at most %d conv/dense layers", EP_MAXL);
        int k = ++e->L;
        e->layer[k] = i;
        e->pool[k] = -1;
        e->w[k] = l->w;
        e->b[k] = l->b;
        if (l->kind == SOMA_LAYER_DENSE) {
            e->n[k] = l->out_c;
            continue;
        }
        if (e->nconv != k - 1)
            return soma__fail(SOMA_ERR_UNSUPPORTED, "rule ep: conv layer %d of '%s' follows a dense "
                              "layer (conv layers must come first)", i, spec);
        if (i + 1 >= net->n_layers || net->layers[i + 1].kind != SOMA_LAYER_MAXPOOL)
            return soma__fail(SOMA_ERR_UNSUPPORTED, "rule ep: conv layer %d of '%s' has no max pool "
                              "right after it; EP's conv layer is maxpool(conv + b) before rho "
                              "(Laborieux et al. 2021): write convKxC[sS][pP]mM", i, spec);
        e->nconv++;
        e->pool[k] = ++i;
        e->n[k] = (int)net->layers[i].out_size;
    }
    e->n[0] = soma_net_inputs(net);
    e->C = soma_net_outputs(net);
    e->ce = c->loss == SOMA_LOSS_CE;
    e->nd = e->ce ? e->L - 1 : e->L;
    if (e->nd < 1)
        return soma__fail(SOMA_ERR_ARG, "rule ep with the ce readout needs a hidden layer; '%s' "
                          "has %d dense layer (use --loss mse for a dynamical output)",
                          soma_net_spec(net), e->L);
    soma_status st = check_config(c, e->L, soma_net_spec(net));
    if (st) return st;
    for (int k = 1; k <= e->L; k++) e->lr[k] = c->ep_n_lrs ? c->ep_lrs[k - 1] : 1.0f;
    for (int k = 1; k <= e->nd; k++) e->S += (size_t)e->n[k];

    /* feedback weights for k = 2..nd: a dense layer's matrix F_k (n[k-1], n[k]); a
     * conv layer's kernel G_k, shaped as W_k (VF_CNN's backward kernel) */
    soma_rng rng;
    soma_rng_seed(&rng, net->opts.seed ^ 0x4550464242ull); /* "EPFBB": its own stream */
    for (int k = 0; k <= EP_MAXL; k++) e->fb[k] = -1;
    for (int k = 2; c->ep_variant == SOMA_EP_GENERAL && k <= e->nd; k++) {
        char name[48];
        snprintf(name, sizeof name, "%d.weight_fb", e->layer[k]);
        const soma_param *wp = &net->params.p[e->w[k]];
        int conv = e->pool[k] >= 0;
        int64_t shape[4] = { e->n[k - 1], e->n[k], 0, 0 };
        if (conv) memcpy(shape, wp->shape, sizeof shape);
        int created;
        int idx = find_or_add(net, 1, name, conv ? 4 : 2, shape, &created);
        if (idx < 0) return (soma_status)idx;
        e->fb[k] = idx;
        if (!created) continue;
        float *F = soma__param_value(net, idx);
        const float *W = soma__param_value(net, e->w[k]);   /* dense: (n[k], n[k-1]) */
        if (conv) {
            /* transpose: G = W (the transposed conv of the same kernel is W^T);
             * random: the fans of the forward kernel, as a Conv2d of W's shape */
            const soma_layer *l = &net->layers[e->layer[k]];
            size_t nw = net->params.p[idx].n;
            if (c->ep_fb_init == SOMA_EP_FB_TRANSPOSE) memcpy(F, W, nw * sizeof(float));
            else soma_init_fill(F, nw, l->in_c * l->k * l->k, l->out_c * l->k * l->k, net->init, &rng);
        } else if (c->ep_fb_init == SOMA_EP_FB_TRANSPOSE) {
            for (int i = 0; i < e->n[k - 1]; i++)
                for (int j = 0; j < e->n[k]; j++)
                    F[(size_t)i * e->n[k] + j] = W[(size_t)j * e->n[k - 1] + i];
        } else {
            soma_init_fill(F, (size_t)e->n[k - 1] * e->n[k], e->n[k], e->n[k - 1], net->init, &rng);
        }
    }
    if (c->ep_particles > 0) {
        int64_t shape[2] = { c->ep_particles, (int64_t)e->S };
        int created;
        int idx = find_or_add(net, 0, "ep.particles", 2, shape, &created);
        if (idx < 0) return (soma_status)idx;
        e->particles = idx;
    }

    /* conv layers: their shapes, and the scratch of the conv kernels (the net's
     * workspace, sized for every conv layer of the net, serves them all) */
    size_t zmax = 0;
    int maxn = 0;
    for (int k = 1; k <= e->nconv; k++) {
        soma_conv_shape cs;
        soma_pool_shape ps;
        if ((st = conv_shapes(e, net, k, max_batch, &cs, &ps))) return st;
        size_t z = (size_t)cs.O * cs.OH * cs.OW;
        if (z > zmax) zmax = z;
        if (e->n[k] > maxn) maxn = e->n[k];
        e->ints += (size_t)max_batch * e->n[k];
    }
    if (e->nconv && !net->ws)
        return soma__fail(SOMA_ERR_ARG, "rule ep: net '%s' has no conv workspace (not prepared)", spec);

    /* buffers: 12 state sets, rho(x), per-layer scratch, class-sized rows, the update
     * copy, the conv scratch */
    size_t pooled = (size_t)maxn;
    for (int k = 0; k <= e->L; k++) if (e->n[k] > maxn) maxn = e->n[k];
    size_t B = (size_t)max_batch;
    e->floats = 12 * B * e->S + B * e->n[0] + B * e->n[1] + 2 * B * maxn + 4 * B * e->C + net->params.total +
                B * zmax + B * pooled;
    float *p = soma__malloc_aligned(e->floats * sizeof(float));
    if (!p) return SOMA_ERR_NOMEM;
    memset(p, 0, e->floats * sizeof(float));
    e->block = p;
    ep_set *sets[] = { &e->cur, &e->nxt, &e->s0, &e->sp, &e->sm, &e->r0, &e->ra, &e->rb,
                       &e->rr, &e->tmp, &e->adj[0], &e->adj[1] };
    for (size_t i = 0; i < sizeof sets / sizeof *sets; i++) set_alloc(sets[i], &p, e->n, e->nd, max_batch);
    e->rx = p;     p += B * e->n[0];
    e->drive1 = p; p += B * e->n[1];
    e->drho = p;   p += B * maxn;
    e->g = p;      p += B * maxn;
    e->logits = p; p += B * e->C;
    e->probs = p;  p += B * e->C;
    e->dl = p;     p += B * e->C;
    e->onehot = p; p += B * e->C;
    e->gsave = p;  p += net->params.total;
    e->z = p;      p += B * zmax;
    e->pooled = p;
    if (e->nconv) {
        e->ints += B * pooled;   /* idxg */
        int32_t *q = soma__calloc(e->ints, sizeof(int32_t));
        if (!q) return SOMA_ERR_NOMEM;
        e->iblock = q;
        for (int k = 1; k <= e->nconv; k++) { e->idx[k] = q; q += B * e->n[k]; }
        e->idxg = q;
    }
    return SOMA_OK;
}

static void ep_release(soma_rule *r)
{
    ep_state *e = r->state;
    if (!e) return;
    soma__free_aligned(e->block);
    soma__free(e->iblock);
    soma__free(e);
}

static void ep_plan(const soma_rule *r, soma_mem_plan *p)
{
    const ep_state *e = r->state;
    size_t B = (size_t)r->max_batch;
    p->activations = 12 * B * e->S * sizeof(float);
    p->workspace = (e->floats - 12 * B * e->S) * sizeof(float) + e->ints * sizeof(int32_t);
}

/* ---- dynamics -------------------------------------------------------------- */

static void set_copy(const ep_state *e, ep_set *dst, const ep_set *src, int B)
{
    for (int k = 1; k <= e->nd; k++)
        if (dst->s[k] != src->s[k]) memcpy(dst->s[k], src->s[k], (size_t)B * e->n[k] * sizeof(float));
}

static void set_rho(const ep_state *e, ep_set *dst, const ep_set *src, int B, soma_act act)
{
    for (int k = 1; k <= e->nd; k++) soma_act_forward(dst->s[k], src->s[k], (size_t)B * e->n[k], act);
}

/* logits(B, C) = rho_nd W_L^T + b_L: the ce readout */
static void readout(soma_net *net, ep_state *e, const float *rho_nd, int B)
{
    int L = e->L, I = e->n[e->nd];
    soma_dense_forward(e->logits, rho_nd, soma__param_value(net, e->w[L]),
                       soma__param_value(net, e->b[L]), B, I, e->C);
}

/* One synchronous Euler step o <- clip(s + eps mu^beta(s), 0, 1).  Returns
 * the sum over units and samples of ((o - s) / eps)^2 (projected |mu|^2). */
/* out = layer_k(in): dense W_k in + b_k, or conv maxpool(conv(in; W_k) + b_k) with its
 * argmax into idx[k] */
static void drive(soma_rule *r, int k, float *out, const float *in, int B)
{
    ep_state *e = r->state;
    soma_net *net = r->net;
    const float *W = soma__param_value(net, e->w[k]), *bk = soma__param_value(net, e->b[k]);
    if (k <= e->nconv) conv_pool(r, k, out, e->idx[k], in, W, bk, B);
    else soma_dense_forward(out, in, W, bk, B, e->n[k - 1], e->n[k]);
}

static double ep_step(soma_rule *r, ep_set *o, const ep_set *s, int B, float beta)
{
    ep_state *e = r->state;
    soma_net *net = r->net;
    soma_act act = net->act;
    int classic = r->cfg.ep_variant == SOMA_EP_CLASSIC;
    float eps = r->cfg.ep_eps;
    double ss = 0;
    set_rho(e, &e->rr, s, B, act);
    /* pass 1, o = drive from below: layer_k(rho(s_{k-1})), dense W_k rho(s_{k-1}) + b_k or
     * conv maxpool(conv(rho(s_{k-1}); W_k) + b_k), whose argmax at this iterate goes to
     * idx[k] (recomputed every step: the feedback below routes through it); layer 1's
     * input is the clamped x, so its drive was formed once for the batch */
    memcpy(o->s[1], e->drive1, (size_t)B * e->n[1] * sizeof(float));
    for (int k = 2; k <= e->nd; k++) drive(r, k, o->s[k], e->rr.s[k - 1], B);
    /* pass 2: + feedback from above, the nudge, the clipped Euler step */
    for (int k = 1; k <= e->nd; k++) {
        int nk = e->n[k];
        float *a = o->s[k];
        const float *sk = s->s[k];
        size_t m = (size_t)B * nk;
        if (k < e->nd && k + 1 <= e->nconv) {
            if (classic) {
                /* VJP of rho(s_k) -> maxpool(conv_{k+1}(.) + b) against rho(s_{k+1}):
                 * the transposed conv through this iterate's argmax idx[k+1] */
                conv_vjp(r, k + 1, a, e->rr.s[k + 1], e->idx[k + 1],
                         soma__param_value(net, e->w[k + 1]), B);
            } else {
                /* the same with the feedback kernel G_{k+1}, through the argmax of its own
                 * maxpool(conv_G(rho(s_k))) at this iterate (VF_CNN) */
                const float *G = soma__param_value(net, e->fb[k + 1]);
                conv_pool(r, k + 1, e->pooled, e->idxg, e->rr.s[k], G, NULL, B);
                conv_vjp(r, k + 1, a, e->rr.s[k + 1], e->idxg, G, B);
            }
        } else if (k < e->nd) {
            int nn = e->n[k + 1];
            if (classic) /* W_{k+1}^T rho(s_{k+1}): W_{k+1} is (n[k+1], n[k]) */
                soma_gemm(0, 0, B, nk, nn, 1.0f, e->rr.s[k + 1], nn,
                          soma__param_value(net, e->w[k + 1]), nk, 1.0f, a, nk);
            else         /* F_{k+1} rho(s_{k+1}): F_{k+1} is (n[k], n[k+1]) */
                soma_gemm(0, 1, B, nk, nn, 1.0f, e->rr.s[k + 1], nn,
                          soma__param_value(net, e->fb[k + 1]), nn, 1.0f, a, nk);
        }
        int force_ce = k == e->nd && e->ce && beta != 0.0f;
        if (classic || force_ce) soma_act_deriv(e->drho, sk, e->rr.s[k], m, act);
        if (force_ce) {
            /* dC/d rho(s_nd) = (softmax - onehot) W_L, per sample */
            readout(net, e, e->rr.s[k], B);
            soma_softmax_forward(e->probs, e->logits, B, e->C);
            for (size_t i = 0; i < (size_t)B * e->C; i++) e->dl[i] = e->probs[i] - e->onehot[i];
            soma_gemm(0, 0, B, nk, e->C, 1.0f, e->dl, e->C, soma__param_value(net, e->w[e->L]), nk,
                      0.0f, e->g, nk);
            if (classic) for (size_t i = 0; i < m; i++) a[i] = e->drho[i] * (a[i] - beta * e->g[i]);
            else for (size_t i = 0; i < m; i++) a[i] -= beta * e->drho[i] * e->g[i];
        } else if (classic) {
            for (size_t i = 0; i < m; i++) a[i] *= e->drho[i];
        }
        if (k == e->nd && !e->ce && beta != 0.0f)   /* -beta dC/ds = beta (y - s) */
            for (size_t i = 0; i < m; i++) a[i] += beta * (e->onehot[i] - sk[i]);
        for (size_t i = 0; i < m; i++) {
            float v = sk[i] + eps * (a[i] - sk[i]);
            v = v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v);
            double d = ((double)v - sk[i]) / eps;
            ss += d * d;
            a[i] = v;
        }
    }
    return ss;
}

/* Relaxes `steps` steps with nudge beta from src (NULL: zeros) into dst;
 * returns the RMS projected |mu| of the last step. */
static double ep_relax(soma_rule *r, ep_set *dst, const ep_set *src, int B, int steps, float beta)
{
    ep_state *e = r->state;
    if (src) set_copy(e, &e->cur, src, B);
    else for (int k = 1; k <= e->nd; k++) memset(e->cur.s[k], 0, (size_t)B * e->n[k] * sizeof(float));
    double ss = 0, n = (double)B * (double)e->S;
    /* ep_stop: the step's own |mu| is the test, so stopping early costs nothing */
    double stop2 = (double)r->cfg.ep_stop * r->cfg.ep_stop * n;
    int t = 0;
    while (t < steps) {
        ss = ep_step(r, &e->nxt, &e->cur, B, beta);
        ep_set tmp = e->cur; e->cur = e->nxt; e->nxt = tmp;
        t++;
        if (ss < stop2) break;
    }
    e->last_steps = t;
    set_copy(e, dst, &e->cur, B);
    return sqrt(ss / n);
}

/* rho(x), its drive of layer 1 (the weights are fixed until the batch's
 * update) and the one-hot targets of batch b */
static void ep_batch_inputs(soma_rule *r, const soma_batch *b)
{
    ep_state *e = r->state;
    soma_act_forward(e->rx, b->x, (size_t)b->n * e->n[0], r->net->act);
    drive(r, 1, e->drive1, e->rx, b->n);
    memset(e->onehot, 0, (size_t)b->n * e->C * sizeof(float));
    for (int i = 0; i < b->n; i++) e->onehot[(size_t)i * e->C + b->y[i]] = 1.0f;
}

/* Class scores of a relaxed state set: the output state, or the readout. */
static const float *ep_scores(soma_rule *r, const ep_set *s, int B)
{
    ep_state *e = r->state;
    if (!e->ce) return s->s[e->nd];
    soma_act_forward(e->rr.s[e->nd], s->s[e->nd], (size_t)B * e->n[e->nd], r->net->act);
    readout(r->net, e, e->rr.s[e->nd], B);
    return e->logits;
}

/* ---- the update ------------------------------------------------------------- */

/* Writes -lr_k * (EP update) into the grad store (ce readout: its CE
 * gradient), from s0/sp (and sm when symmetric); beta signed.  unit_lr: every
 * per-layer factor 1 (soma_ep_grad_angle). */
static void ep_update(soma_rule *r, const int32_t *y, int B, float beta, int unit_lr)
{
    ep_state *e = r->state;
    soma_net *net = r->net;
    soma_act act = net->act;
    int sym = r->cfg.ep_symmetric, classic = r->cfg.ep_variant == SOMA_EP_CLASSIC;
    double inv = sym ? 1.0 / (2.0 * beta) : 1.0 / beta;
    const ep_set *A = &e->sp, *Bs = sym ? &e->sm : &e->s0;
    soma_net_zero_grad(net);
    set_rho(e, &e->r0, &e->s0, B, act);
    if (classic) { set_rho(e, &e->ra, A, B, act); set_rho(e, &e->rb, Bs, B, act); }
    for (int k = 1; k <= e->nd; k++) {
        int nk = e->n[k], np = e->n[k - 1];
        float lr = unit_lr ? 1.0f : e->lr[k];
        float *gW = soma__param_grad(net, e->w[k]), *gb = soma__param_grad(net, e->b[k]);
        size_t m = (size_t)B * nk;
        float *d = e->tmp.s[k];
        if (classic && k <= e->nconv) {
            /* -dE/dW_k = d/dW <rho(s_k), maxpool(conv(rho(s_{k-1})) + b)> at each end state,
             * through that state's own argmax */
            const ep_set *ends[2] = { &e->ra, &e->rb };
            float sc = (float)(-lr * inv / B);
            const float *W = soma__param_value(net, e->w[k]), *bk = soma__param_value(net, e->b[k]);
            for (int h = 0; h < 2; h++) {
                const float *pre = k == 1 ? e->rx : ends[h]->s[k - 1];
                conv_pool(r, k, e->pooled, e->idx[k], pre, W, bk, B);
                conv_wgrad(r, k, gW, gb, ends[h]->s[k], e->idx[k], h ? -sc : sc, pre, W, B);
            }
            continue;
        }
        if (classic) {
            const float *pa = k == 1 ? e->rx : e->ra.s[k - 1], *pb = k == 1 ? e->rx : e->rb.s[k - 1];
            float sc = (float)(-lr * inv / B);
            soma_gemm(1, 0, nk, np, B, sc, e->ra.s[k], nk, pa, np, 0.0f, gW, np);
            soma_gemm(1, 0, nk, np, B, -sc, e->rb.s[k], nk, pb, np, 1.0f, gW, np);
            for (size_t i = 0; i < m; i++) d[i] = e->ra.s[k][i] - e->rb.s[k][i];
            for (int j = 0; j < nk; j++) {
                double acc = 0;
                for (int i = 0; i < B; i++) acc += d[(size_t)i * nk + j];
                gb[j] = (float)(acc * sc);
            }
            continue;
        }
        for (size_t i = 0; i < m; i++) d[i] = (float)((A->s[k][i] - Bs->s[k][i]) * inv);
        const float *pre = k == 1 ? e->rx : e->r0.s[k - 1];
        if (k <= e->nconv) {
            /* dmu_k/dW . D_k at s0: D_k routed through the argmax of the free point */
            const float *W = soma__param_value(net, e->w[k]);
            conv_pool(r, k, e->pooled, e->idx[k], pre, W, soma__param_value(net, e->b[k]), B);
            conv_wgrad(r, k, gW, gb, d, e->idx[k], -lr / B, pre, W, B);
        } else {
            soma_gemm(1, 0, nk, np, B, -lr / B, d, nk, pre, np, 0.0f, gW, np);
            for (int j = 0; j < nk; j++) {
                double acc = 0;
                for (int i = 0; i < B; i++) acc += d[(size_t)i * nk + j];
                gb[j] = (float)(acc * -lr / B);
            }
        }
        if (k < e->nd && k + 1 <= e->nconv) {
            /* G_{k+1}: d/dG <D_k, VJP_G(rho(s0_k))[rho(s0_{k+1})]> = d/dG <maxpool(conv_G(D_k)),
             * rho(s0_{k+1})> at the argmax of conv_G(rho(s0_k)): the weight gradient of the
             * routed rho(s0_{k+1}) against the input D_k (postsynaptic layer k) */
            float lf = unit_lr ? 1.0f : e->lr[k + 1];
            const float *G = soma__param_value(net, e->fb[k + 1]);
            conv_pool(r, k + 1, e->pooled, e->idxg, e->r0.s[k], G, NULL, B);
            conv_wgrad(r, k + 1, soma__param_grad(net, e->fb[k + 1]), NULL, e->r0.s[k + 1], e->idxg,
                       -lf / B, d, G, B);
        } else if (k < e->nd) {   /* F_{k+1} (n[k], n[k+1]): postsynaptic layer k */
            int nn = e->n[k + 1];
            float lf = unit_lr ? 1.0f : e->lr[k + 1];
            soma_gemm(1, 0, nk, nn, B, -lf / B, d, nk, e->r0.s[k + 1], nn, 0.0f,
                      soma__param_grad(net, e->fb[k + 1]), nn);
        }
    }
    if (e->ce) {   /* readout: CE gradient at the nudged end state(s) */
        int L = e->L, I = e->n[e->nd];
        float lr = unit_lr ? 1.0f : e->lr[L];
        const ep_set *ends[2] = { &e->sp, &e->sm };
        float *rho = e->ra.s[e->nd];
        for (int h = 0; h < (sym ? 2 : 1); h++) {
            soma_act_forward(rho, ends[h]->s[e->nd], (size_t)B * I, act);
            readout(net, e, rho, B);
            soma_ce_forward(e->probs, e->logits, y, B, e->C);
            memset(e->dl, 0, (size_t)B * e->C * sizeof(float));
            soma_ce_backward(e->dl, e->probs, y, B, e->C, sym ? 0.5f * lr : lr);
            soma_dense_backward(NULL, soma__param_grad(net, e->w[L]), soma__param_grad(net, e->b[L]),
                                e->dl, rho, soma__param_value(net, e->w[L]), B, I, e->C);
        }
    }
}

/* ---- train / predict ------------------------------------------------------- */

static soma_status check_targets(const soma_rule *r, const soma_batch *b)
{
    if (b->target)
        return soma__fail(SOMA_ERR_UNSUPPORTED, "rule ep trains classifiers; regression targets "
                          "are not supported");
    /* the conv kernels use the net's workspace, one slice per thread */
    const ep_state *e = r->state;
    if (e->nconv && soma_get_threads() > r->net->ws_threads)
        return soma__fail(SOMA_ERR_ARG, "thread count raised to %d after the net was prepared for %d",
                          soma_get_threads(), r->net->ws_threads);
    return SOMA_OK;
}

/* Free phase into s0: from zeros, or from the samples' particles (stored back after). */
static soma_status ep_free_phase(soma_rule *r, const soma_batch *b, int steps, int use_particles,
                                 double *res)
{
    ep_state *e = r->state;
    int B = b->n;
    float *P = NULL;
    if (use_particles) {
        if (!b->index)
            return soma__fail(SOMA_ERR_ARG, "EP particles need the batch's dataset indices");
        for (int i = 0; i < B; i++)
            if (b->index[i] >= (uint32_t)r->cfg.ep_particles)
                return soma__fail(SOMA_ERR_ARG, "EP particle index %u outside 0..%d (ep_particles "
                                  "must cover the training set)", b->index[i], r->cfg.ep_particles - 1);
        P = r->net->buffers.value + r->net->buffers.p[e->particles].offset;
        for (int i = 0; i < B; i++) {
            const float *src = P + (size_t)b->index[i] * e->S;
            for (int k = 1; k <= e->nd; k++) {
                memcpy(e->s0.s[k] + (size_t)i * e->n[k], src, (size_t)e->n[k] * sizeof(float));
                src += e->n[k];
            }
        }
    }
    *res = ep_relax(r, &e->s0, P ? &e->s0 : NULL, B, steps, 0.0f);
    if (P) {
        for (int i = 0; i < B; i++) {
            float *dst = P + (size_t)b->index[i] * e->S;
            for (int k = 1; k <= e->nd; k++) {
                memcpy(dst, e->s0.s[k] + (size_t)i * e->n[k], (size_t)e->n[k] * sizeof(float));
                dst += e->n[k];
            }
        }
    }
    return SOMA_OK;
}

static soma_status ep_stats(soma_rule *r, const soma_batch *b, const float *scores, soma_step_stats *st)
{
    ep_state *e = r->state;
    return soma__loss_and_grad(NULL, e->probs, scores, b->y, b->n, e->C,
                               e->ce ? SOMA_LOSS_CE : SOMA_LOSS_MSE, st);
}

static soma_status ep_train_batch(soma_rule *r, const soma_batch *b, float lr, soma_rng *rng,
                                  soma_step_stats *st)
{
    ep_state *e = r->state;
    const soma_rule_config *c = &r->cfg;
    soma_status s = check_targets(r, b);
    if (s) return s;
    if (c->ep_random_sign && !rng)
        return soma__fail(SOMA_ERR_ARG, "EP random sign needs an rng");
    int B = b->n;
    ep_batch_inputs(r, b);
    double res0 = 0, res1;
    if ((s = ep_free_phase(r, b, c->ep_free_steps, c->ep_particles > 0, &res0))) return s;
    e->res_free = res0;
    e->steps_free += e->last_steps;
    e->batches++;
    e->sum_free += res0;
    if (res0 > e->max_free) e->max_free = res0;
    soma_step_stats local = { 0 };
    if ((s = ep_stats(r, b, ep_scores(r, &e->s0, B), &local))) return s;
    if (c->ep_tol > 0 && !(res0 <= c->ep_tol)) {
        e->unconverged++;
        return soma__fail(SOMA_ERR_NUMERIC, "EP free phase did not converge: RMS |mu| = %.3g > "
                          "tolerance %.3g after %d steps of eps %g (raise the free steps)",
                          res0, c->ep_tol, c->ep_free_steps, c->ep_eps);
    }
    float beta = c->ep_beta;
    if (c->ep_random_sign && (soma_rng_u32(rng) >> 31)) beta = -beta;
    e->beta_used = beta;
    res1 = ep_relax(r, &e->sp, &e->s0, B, c->ep_nudge_steps, beta);
    e->steps_nudge += e->last_steps;
    if (c->ep_symmetric) {
        double rm = ep_relax(r, &e->sm, &e->s0, B, c->ep_nudge_steps, -beta);
        if (rm > res1) res1 = rm;
        e->steps_nudge += e->last_steps;
    }
    e->res_nudge = res1;
    e->sum_nudge += res1;
    ep_update(r, b->y, B, beta, 0);
    size_t np = soma_net_param_floats(r->net);
    float *g = soma_net_param_grads(r->net);
    if (!soma__all_finite(g, np)) return soma__fail(SOMA_ERR_NUMERIC, "EP update contains NaN or Inf");
    if (c->clip_norm > 0) soma__clip_norm(g, np, c->clip_norm);
    soma_optim_step(r->optim, soma_net_param_values(r->net), g, lr);
    if (st) { st->loss += local.loss; st->correct += local.correct; st->n += local.n; }
    return SOMA_OK;
}

static soma_status ep_predict(soma_rule *r, const soma_batch *b, const float **scores,
                              soma_step_stats *st)
{
    ep_state *e = r->state;
    soma_status s = check_targets(r, b);
    if (s) return s;
    ep_batch_inputs(r, b);
    int steps = r->cfg.ep_eval_steps ? r->cfg.ep_eval_steps : r->cfg.ep_free_steps;
    ep_relax(r, &e->s0, NULL, b->n, steps, 0.0f);
    *scores = ep_scores(r, &e->s0, b->n);
    return st ? ep_stats(r, b, *scores, st) : SOMA_OK;
}

/* ---- diagnostics ----------------------------------------------------------- */

static soma_status check_ep(soma_rule *r)
{
    if (!r || r->ops != &soma__rule_ep)
        return soma__fail(SOMA_ERR_ARG, "rule is '%s', not 'ep'", r ? r->ops->name : "(null)");
    return SOMA_OK;
}

soma_status soma_ep_diagnostics(soma_rule *r, soma_ep_diag *d, int reset)
{
    soma_status s = check_ep(r);
    if (s) return s;
    ep_state *e = r->state;
    soma_net *net = r->net;
    memset(d, 0, sizeof *d);
    for (int k = 2; k <= e->nd; k++) {
        const float *W = soma__param_value(net, e->w[k]);        /* (n[k], n[k-1]) */
        int nk = e->n[k], np = e->n[k - 1];
        double tr = 0, nw2 = 0, nf2 = 0;
        if (k <= e->nconv) {                                      /* <W_k, G_k> (classic: |W_k|^2) */
            const float *G = e->fb[k] >= 0 ? soma__param_value(net, e->fb[k]) : W;
            size_t nw = net->params.p[e->w[k]].n;
            for (size_t i = 0; i < nw; i++) {
                tr += (double)W[i] * G[i];
                nw2 += (double)W[i] * W[i];
                nf2 += (double)G[i] * G[i];
            }
        } else if (e->fb[k] >= 0) {                                      /* tr(W_k F_k), F_k (n[k-1], n[k]) */
            const float *F = soma__param_value(net, e->fb[k]);
            for (int i = 0; i < nk; i++)
                for (int j = 0; j < np; j++) {
                    double w = W[(size_t)i * np + j], f = F[(size_t)j * nk + i];
                    tr += w * f;
                    nw2 += w * w;
                    nf2 += f * f;
                }
        } else {                                                  /* tied: tr(W W^T) */
            for (size_t i = 0; i < (size_t)nk * np; i++) tr += (double)W[i] * W[i];
            nw2 = nf2 = tr;
        }
        d->align_cos[d->pairs] = nw2 > 0 && nf2 > 0 ? tr / sqrt(nw2 * nf2) : 0;
        d->align[d->pairs++] = tr;
    }
    d->batches = e->batches;
    d->unconverged = e->unconverged;
    if (e->batches) {
        d->res_free = e->sum_free / e->batches;
        d->res_nudge = e->sum_nudge / e->batches;
        d->res_free_max = e->max_free;
        d->steps_free = (double)e->steps_free / e->batches;
        d->steps_nudge = (double)e->steps_nudge / (e->batches * (r->cfg.ep_symmetric ? 2.0 : 1.0));
    }
    if (reset) {
        e->batches = e->unconverged = e->steps_free = e->steps_nudge = 0;
        e->sum_free = e->sum_nudge = e->max_free = 0;
    }
    return SOMA_OK;
}

/* Adjoint of the free fixed point: w = J^-T dC/ds iterated as
 * w <- m (w + eps (J^T w - g)), m = 1 on units strictly inside (0,1).
 * J^T w, layer j:
 *   general: -w_j + rho'_j (w_{j+1} W_{j+1} + w_{j-1} F_j)
 *   classic: -w_j + rho'_j ((rho' w)_{j+1} W_{j+1} + (rho' w)_{j-1} W_j^T)   (rho'' taken 0:
 *            exact for clamp01) */
static double ep_adjoint(soma_rule *r, const int32_t *y, int B, int steps)
{
    ep_state *e = r->state;
    soma_net *net = r->net;
    soma_act act = net->act;
    int classic = r->cfg.ep_variant == SOMA_EP_CLASSIC;
    float eps = r->cfg.ep_eps;
    ep_set *g = &e->sp, *dr = &e->sm, *u = &e->ra;   /* free here: the nudged sets are not in use */
    set_rho(e, &e->r0, &e->s0, B, act);
    for (int k = 1; k <= e->nd; k++)
        soma_act_deriv(dr->s[k], e->s0.s[k], e->r0.s[k], (size_t)B * e->n[k], act);
    /* g = dC/ds at s0 (zero outside the last dynamical layer) */
    for (int k = 1; k < e->nd; k++) memset(g->s[k], 0, (size_t)B * e->n[k] * sizeof(float));
    int nd = e->nd, n = e->n[nd];
    size_t m = (size_t)B * n;
    if (e->ce) {
        readout(net, e, e->r0.s[nd], B);
        soma_softmax_forward(e->probs, e->logits, B, e->C);
        for (size_t i = 0; i < (size_t)B * e->C; i++) e->dl[i] = e->probs[i] - e->onehot[i];
        soma_gemm(0, 0, B, n, e->C, 1.0f, e->dl, e->C, soma__param_value(net, e->w[e->L]), n,
                  0.0f, g->s[nd], n);
        for (size_t i = 0; i < m; i++) g->s[nd][i] *= dr->s[nd][i];
    } else {
        for (size_t i = 0; i < m; i++) g->s[nd][i] = e->s0.s[nd][i] - e->onehot[i];
    }
    (void)y;
    ep_set *w = &e->adj[0], *wn = &e->adj[1];
    for (int k = 1; k <= nd; k++) memset(w->s[k], 0, (size_t)B * e->n[k] * sizeof(float));
    double ss = 0;
    for (int t = 0; t < steps; t++) {
        for (int k = 1; k <= nd; k++) {
            size_t mk = (size_t)B * e->n[k];
            for (size_t i = 0; i < mk; i++) u->s[k][i] = classic ? w->s[k][i] * dr->s[k][i] : w->s[k][i];
        }
        ss = 0;
        for (int j = 1; j <= nd; j++) {
            int nj = e->n[j];
            float *a = wn->s[j];
            size_t mj = (size_t)B * nj;
            memset(a, 0, mj * sizeof(float));
            if (j < nd) soma_gemm(0, 0, B, nj, e->n[j + 1], 1.0f, u->s[j + 1], e->n[j + 1],
                                  soma__param_value(net, e->w[j + 1]), nj, 0.0f, a, nj);
            if (j > 1) {
                if (classic) soma_gemm(0, 1, B, nj, e->n[j - 1], 1.0f, u->s[j - 1], e->n[j - 1],
                                       soma__param_value(net, e->w[j]), e->n[j - 1], 1.0f, a, nj);
                else soma_gemm(0, 0, B, nj, e->n[j - 1], 1.0f, u->s[j - 1], e->n[j - 1],
                               soma__param_value(net, e->fb[j]), nj, 1.0f, a, nj);
            }
            const float *sj = e->s0.s[j];
            for (size_t i = 0; i < mj; i++) {
                float inside = sj[i] > 0.0f && sj[i] < 1.0f;
                double dw = inside * (dr->s[j][i] * a[i] - w->s[j][i] - g->s[j][i]);
                ss += dw * dw;
                a[i] = (float)(w->s[j][i] + eps * dw);
            }
        }
        ep_set tmp = *w; *w = *wn; *wn = tmp;
    }
    return sqrt(ss / ((double)B * (double)e->S));
}

soma_status soma_ep_grad_angle(soma_rule *r, const soma_batch *b, double *degrees, double *rbp_res)
{
    soma_status s = check_ep(r);
    if (s) return s;
    ep_state *e = r->state;
    soma_net *net = r->net;
    if (b->n <= 0 || b->n > r->max_batch)
        return soma__fail(SOMA_ERR_ARG, "batch of %d samples outside 1..%d", b->n, r->max_batch);
    if (b->c * b->h * b->w != e->n[0])
        return soma__fail(SOMA_ERR_SHAPE, "batch samples have %d values, net expects %d",
                          b->c * b->h * b->w, e->n[0]);
    if ((s = check_targets(r, b))) return s;
    if (e->nconv)
        return soma__fail(SOMA_ERR_UNSUPPORTED, "soma_ep_grad_angle: recurrent backprop is "
                          "implemented for dense nets only; '%s' has conv layers",
                          soma_net_spec(net));
    for (int i = 0; i < b->n; i++)
        if (b->y[i] < 0 || b->y[i] >= e->C)
            return soma__fail(SOMA_ERR_ARG, "label %d of sample %d outside 0..%d", b->y[i], i, e->C - 1);
    const soma_rule_config *c = &r->cfg;
    int B = b->n;
    int steps = c->ep_eval_steps ? c->ep_eval_steps : c->ep_free_steps;
    ep_batch_inputs(r, b);
    ep_relax(r, &e->s0, NULL, B, steps, 0.0f);
    ep_relax(r, &e->sp, &e->s0, B, c->ep_nudge_steps, c->ep_beta);
    if (c->ep_symmetric) ep_relax(r, &e->sm, &e->s0, B, c->ep_nudge_steps, -c->ep_beta);
    ep_update(r, b->y, B, c->ep_beta, 1);
    size_t np = soma_net_param_floats(net);
    memcpy(e->gsave, soma_net_param_grads(net), np * sizeof(float));
    double res = ep_adjoint(r, b->y, B, 2 * steps);
    if (rbp_res) *rbp_res = res;
    /* true descent direction T into the grad store as -T (a gradient) */
    int classic = c->ep_variant == SOMA_EP_CLASSIC;
    ep_set *w = &e->adj[0], *dr = &e->sm, *u = &e->ra;
    soma_net_zero_grad(net);
    for (int k = 1; k <= e->nd; k++) {
        size_t mk = (size_t)B * e->n[k];
        for (size_t i = 0; i < mk; i++) u->s[k][i] = classic ? w->s[k][i] * dr->s[k][i] : w->s[k][i];
    }
    for (int k = 1; k <= e->nd; k++) {
        int nk = e->n[k], npv = e->n[k - 1];
        const float *pre = k == 1 ? e->rx : e->r0.s[k - 1];
        float *gW = soma__param_grad(net, e->w[k]), *gb = soma__param_grad(net, e->b[k]);
        soma_gemm(1, 0, nk, npv, B, -1.0f / B, u->s[k], nk, pre, npv, 0.0f, gW, npv);
        if (classic && k > 1)   /* W_k also carries rho(s_k) down to layer k-1 */
            soma_gemm(1, 0, nk, npv, B, -1.0f / B, e->r0.s[k], nk, u->s[k - 1], npv, 1.0f, gW, npv);
        for (int j = 0; j < nk; j++) {
            double acc = 0;
            for (int i = 0; i < B; i++) acc += u->s[k][(size_t)i * nk + j];
            gb[j] = (float)(-acc / B);
        }
        if (!classic && k < e->nd)
            soma_gemm(1, 0, nk, e->n[k + 1], B, -1.0f / B, u->s[k], nk, e->r0.s[k + 1], e->n[k + 1],
                      0.0f, soma__param_grad(net, e->fb[k + 1]), e->n[k + 1]);
    }
    if (e->ce) {   /* the readout's own CE gradient at s0 */
        int L = e->L, I = e->n[e->nd];
        readout(net, e, e->r0.s[e->nd], B);
        soma_ce_forward(e->probs, e->logits, b->y, B, e->C);
        memset(e->dl, 0, (size_t)B * e->C * sizeof(float));
        soma_ce_backward(e->dl, e->probs, b->y, B, e->C, 1.0f);
        soma_dense_backward(NULL, soma__param_grad(net, e->w[L]), soma__param_grad(net, e->b[L]),
                            e->dl, e->r0.s[e->nd], soma__param_value(net, e->w[L]), B, I, e->C);
    }
    const float *gt = soma_net_param_grads(net);
    double dot = 0, na = 0, nb = 0;
    for (size_t i = 0; i < np; i++) {
        dot += (double)e->gsave[i] * gt[i];
        na += (double)e->gsave[i] * e->gsave[i];
        nb += (double)gt[i] * gt[i];
    }
    if (!(na > 0 && nb > 0)) return soma__fail(SOMA_ERR_NUMERIC, "EP update or true gradient is zero");
    double cosv = dot / sqrt(na * nb);
    if (cosv > 1) cosv = 1;
    if (cosv < -1) cosv = -1;
    *degrees = acos(cosv) * 180.0 / 3.14159265358979323846;
    return SOMA_OK;
}

const soma_rule_ops soma__rule_ep = {
    .name = "ep",
    .about = "equilibrium propagation: general (untied) dynamics, classic EP, symmetric nudging",
    .init = ep_init,
    .train_batch = ep_train_batch,
    .predict = ep_predict,
    .plan = ep_plan,
    .release = ep_release,
};
