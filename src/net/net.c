/*
 * net.c - network construction, parameter store, forward and backward.
 *
 * Layers run in nn.Sequential order, so parameter names equal PyTorch's
 * state_dict names for the same Sequential ("0.weight", "3.running_mean").
 * Memory: params, grads and buffers are one block each; per-batch caches
 * are planned for max_batch in soma_net_prepare and never reallocated.
 */
#include "net.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

soma_status soma__spec_parse(soma_layer **layers, int *n_layers, const char *spec,
                             const soma_net_options *o);
int soma__spec_has_ltc(const char *spec);

static const char *const layer_names[SOMA_LAYER_COUNT] = {
    [SOMA_LAYER_DENSE] = "dense",     [SOMA_LAYER_CONV] = "conv",
    [SOMA_LAYER_MAXPOOL] = "maxpool", [SOMA_LAYER_AVGPOOL] = "avgpool",
    [SOMA_LAYER_FLATTEN] = "flatten", [SOMA_LAYER_ACT] = "act",
    [SOMA_LAYER_DROPOUT] = "dropout", [SOMA_LAYER_BATCHNORM] = "batchnorm",
    [SOMA_LAYER_CELL] = "cell",
};

const char *soma__layer_kind_name(soma_layer_kind k)
{
    return (unsigned)k < SOMA_LAYER_COUNT && layer_names[k] ? layer_names[k] : "?";
}

void soma_net_options_default(soma_net_options *o)
{
    memset(o, 0, sizeof *o);
    o->in_c = 1; o->in_h = 28; o->in_w = 28;
    o->act = SOMA_ACT_RELU;
    o->init = SOMA_INIT_TORCH;
    o->bn_gamma = 1.0f;
    soma_cell_params_default(&o->cell, SOMA_NEURON_LIF);
    soma_cell_params_default(&o->readout_cell, SOMA_NEURON_LI);
    o->readout = SOMA_READOUT_LI;
    /* the FPTT paper's LTC neuron (notes/fptt.md 2.1): theta = 0.1 + 1.8 eta,
     * u = (1 - tau_m) u + tau_m I, hard reset, multi-Gaussian surrogate */
    soma_cell_params_default(&o->ltc, SOMA_NEURON_ALIF);
    o->ltc.threshold = 0.1f;
    o->ltc.beta_a = 1.8f;
    o->ltc.reset = SOMA_RESET_ZERO;
    o->ltc.input_scale = 1;
    o->ltc.alpha = 0.5f;   /* unused: per element */
    o->ltc.rho = 0.5f;     /* unused: per element */
    soma_surrogate_default(&o->ltc.surr, SOMA_SURR_MULTIGAUSS);
}

static const char *const state_init_names[SOMA_STATE_COUNT] = { "zero", "uniform" };

const char *soma_state_init_name(soma_state_init k)
{
    return (unsigned)k < SOMA_STATE_COUNT ? state_init_names[k] : "?";
}

soma_status soma_state_init_from_name(soma_state_init *out, const char *name)
{
    for (int i = 0; i < SOMA_STATE_COUNT; i++)
        if (!strcmp(name, state_init_names[i])) { *out = (soma_state_init)i; return SOMA_OK; }
    return soma__fail(SOMA_ERR_ARG, "unknown initial state '%s' (valid: zero, uniform)", name);
}

/* ---- stores ------------------------------------------------------------ */

static int store_add(soma_store *s, int *cap, const char *name, int ndim, const int64_t *shape)
{
    if (s->count == *cap) {
        int nc = *cap ? 2 * *cap : 16;
        soma_param *p = soma__realloc(s->p, (size_t)nc * sizeof *p);
        if (!p) return -1;
        s->p = p;
        *cap = nc;
    }
    soma_param *p = &s->p[s->count];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->ndim = ndim;
    p->n = 1;
    for (int i = 0; i < SOMA_MAX_DIMS; i++) {
        p->shape[i] = i < ndim ? shape[i] : 1;
        if (i < ndim) p->n *= (size_t)shape[i];
    }
    p->offset = s->total;
    s->total += p->n;
    return s->count++;
}

static soma_status store_alloc(soma_store *s, int with_grad)
{
    s->cap = s->total;
    s->value = soma__malloc_aligned((s->total ? s->total : 1) * sizeof(float));
    if (!s->value) return SOMA_ERR_NOMEM;
    memset(s->value, 0, s->total * sizeof(float));
    if (with_grad) {
        s->grad = soma__malloc_aligned((s->total ? s->total : 1) * sizeof(float));
        if (!s->grad) return SOMA_ERR_NOMEM;
        memset(s->grad, 0, s->total * sizeof(float));
    }
    return SOMA_OK;
}

static void store_free(soma_store *s)
{
    soma__free(s->p);
    soma__free_aligned(s->value);
    soma__free_aligned(s->grad);
}

/* Reallocates the store's arrays to cap floats, keeping the first `keep`. */
static soma_status store_grow(soma_store *s, int is_param, size_t cap, size_t keep)
{
    float *v = soma__malloc_aligned((cap ? cap : 1) * sizeof(float));
    float *g = is_param ? soma__malloc_aligned((cap ? cap : 1) * sizeof(float)) : NULL;
    if (!v || (is_param && !g)) {
        soma__free_aligned(v);
        soma__free_aligned(g);
        return SOMA_ERR_NOMEM;
    }
    memcpy(v, s->value, keep * sizeof(float));
    soma__free_aligned(s->value);
    s->value = v;
    if (is_param) {
        memcpy(g, s->grad, keep * sizeof(float));
        soma__free_aligned(s->grad);
        s->grad = g;
    }
    s->cap = cap;
    return SOMA_OK;
}

soma_status soma__net_reserve(soma_net *n, int is_param, size_t floats)
{
    soma_store *s = is_param ? &n->params : &n->buffers;
    if (s->total + floats <= s->cap) return SOMA_OK;
    return store_grow(s, is_param, s->total + floats, s->total);
}

/* Adds a named tensor to the parameter store (is_param) or the buffer store
 * after construction: a rule's own weights (EP's feedback matrices) or
 * per-parameter state (FPTT's running average).  The flat arrays are
 * reallocated, so pointers taken earlier are invalid afterwards: rules add
 * everything in init, before the optimizer is created, and keep indices.
 * New values start at 0.  Returns the tensor's index in its store, or a
 * negative status. */
int soma__net_add_tensor(soma_net *n, int is_param, const char *name, int ndim,
                         const int64_t *shape)
{
    soma_store *s = is_param ? &n->params : &n->buffers;
    for (int i = 0; i < s->count; i++)
        if (!strcmp(s->p[i].name, name))
            return soma__fail(SOMA_ERR_ARG, "tensor '%s' already exists", name);
    int cap = s->count; /* store_add doubles when full */
    size_t old = s->total;
    int idx = store_add(s, &cap, name, ndim, shape);
    if (idx < 0) return SOMA_ERR_NOMEM;
    if (s->total > s->cap) {
        /* grow by half at least, so a run of additions reallocates rarely */
        size_t want = s->cap + s->cap / 2;
        soma_status st = store_grow(s, is_param, want > s->total ? want : s->total, old);
        if (st) { s->count--; s->total = old; return st; }
    }
    memset(s->value + old, 0, (s->total - old) * sizeof(float));
    if (is_param) memset(s->grad + old, 0, (s->total - old) * sizeof(float));
    return idx;
}

/* ---- construction -------------------------------------------------------- */

static soma_status create_params(soma_net *n)
{
    int pcap = 0, bcap = 0;
    char name[48];
    for (int i = 0; i < n->n_layers; i++) {
        soma_layer *l = &n->layers[i];
        if (l->kind == SOMA_LAYER_DENSE) {
            int64_t ws[2] = { l->out_c, (int64_t)l->in_size }, bs[1] = { l->out_c };
            snprintf(name, sizeof name, "%d.weight", i);
            l->w = store_add(&n->params, &pcap, name, 2, ws);
            snprintf(name, sizeof name, "%d.bias", i);
            l->b = store_add(&n->params, &pcap, name, 1, bs);
            int want_rec = l->rec == 1; /* spec.c's flag */
            l->rec = -1;
            if (want_rec) {
                int64_t rs[2] = { l->out_c, l->out_c };
                snprintf(name, sizeof name, "%d.weight_rec", i);
                if ((l->rec = store_add(&n->params, &pcap, name, 2, rs)) < 0) return SOMA_ERR_NOMEM;
            }
        } else if (l->kind == SOMA_LAYER_CONV) {
            int64_t ws[4] = { l->out_c, l->in_c, l->k, l->k }, bs[1] = { l->out_c };
            snprintf(name, sizeof name, "%d.weight", i);
            l->w = store_add(&n->params, &pcap, name, 4, ws);
            snprintf(name, sizeof name, "%d.bias", i);
            l->b = store_add(&n->params, &pcap, name, 1, bs);
        } else if (l->kind == SOMA_LAYER_CELL && l->ltc) {
            /* tau maps: dense on [I_t, state_{t-1}] and a scalar slope; a
             * conv cell (ltc 2): a KxK conv C -> C of I_t + state_{t-1}, no slope */
            int conv = l->ltc == 2;
            int64_t ws[4] = { l->out_c, conv ? l->out_c : 2 * (int64_t)l->out_c, l->k, l->k };
            int64_t bs[1] = { l->out_c }, ks[1] = { 1 };
            int alif = l->cell.kind == SOMA_NEURON_ALIF;
            for (int m = 0; m < 1 + alif; m++) {
                const char *tn = m ? "tau_adp" : "tau_m";
                int *idx[3] = { m ? &l->ta_w : &l->tm_w, m ? &l->ta_b : &l->tm_b, m ? &l->ta_k : &l->tm_k };
                snprintf(name, sizeof name, "%d.%s.weight", i, tn);
                *idx[0] = store_add(&n->params, &pcap, name, conv ? 4 : 2, ws);
                snprintf(name, sizeof name, "%d.%s.bias", i, tn);
                *idx[1] = store_add(&n->params, &pcap, name, 1, bs);
                if (!conv) {
                    snprintf(name, sizeof name, "%d.%s.k", i, tn);
                    *idx[2] = store_add(&n->params, &pcap, name, 1, ks);
                }
                if (*idx[0] < 0 || *idx[1] < 0 || (!conv && *idx[2] < 0)) return SOMA_ERR_NOMEM;
                if (conv && l->cell.map_bn > 0) {
                    /* the map's BN: one affine, running statistics shared or per step */
                    int64_t rs[2] = { l->cell.map_bn, l->out_c };
                    int rd = l->cell.map_bn > 1 ? 2 : 1;
                    snprintf(name, sizeof name, "%d.%s.bn.weight", i, tn);
                    l->mbn_w[m] = store_add(&n->params, &pcap, name, 1, bs);
                    snprintf(name, sizeof name, "%d.%s.bn.bias", i, tn);
                    l->mbn_b[m] = store_add(&n->params, &pcap, name, 1, bs);
                    snprintf(name, sizeof name, "%d.%s.bn.running_mean", i, tn);
                    l->mbn_rm[m] = store_add(&n->buffers, &bcap, name, rd, rd == 2 ? rs : bs);
                    snprintf(name, sizeof name, "%d.%s.bn.running_var", i, tn);
                    l->mbn_rv[m] = store_add(&n->buffers, &bcap, name, rd, rd == 2 ? rs : bs);
                    if (l->mbn_w[m] < 0 || l->mbn_b[m] < 0 || l->mbn_rm[m] < 0 || l->mbn_rv[m] < 0)
                        return SOMA_ERR_NOMEM;
                }
            }
            continue;
        } else if (l->kind == SOMA_LAYER_BATCHNORM) {
            /* one affine; running statistics per time step with bnN; sbn: the
             * recurrent current's own, "<i>.rec.*" */
            int64_t cs[1] = { l->out_c }, rs[2] = { l->bn_steps, l->out_c };
            int rd = l->bn_steps ? 2 : 1;
            for (int m = 0; m < 1 + l->bn_sep; m++) {
                const char *q = m ? "rec." : "";
                int ix[4];
                const char *nm[4] = { "weight", "bias", "running_mean", "running_var" };
                for (int k = 0; k < 4; k++) {
                    snprintf(name, sizeof name, "%d.%s%s", i, q, nm[k]);
                    ix[k] = k < 2 ? store_add(&n->params, &pcap, name, 1, cs)
                                  : store_add(&n->buffers, &bcap, name, rd, l->bn_steps ? rs : cs);
                }
                *(m ? &l->w2 : &l->w) = ix[0];
                *(m ? &l->b2 : &l->b) = ix[1];
                *(m ? &l->run_mean2 : &l->run_mean) = ix[2];
                *(m ? &l->run_var2 : &l->run_var) = ix[3];
                if (m && (ix[0] < 0 || ix[1] < 0 || ix[2] < 0 || ix[3] < 0)) return SOMA_ERR_NOMEM;
            }
        } else {
            continue;
        }
        if (l->w < 0 || l->b < 0) return SOMA_ERR_NOMEM;
        if (l->kind == SOMA_LAYER_BATCHNORM && (l->run_mean < 0 || l->run_var < 0))
            return SOMA_ERR_NOMEM;
    }
    soma_status st = store_alloc(&n->params, 1);
    if (!st) st = store_alloc(&n->buffers, 0);
    return st;
}

/* Initialises parameters: weights by the chosen scheme, biases as PyTorch's
 * default (U(-1/sqrt(fan_in), +1/sqrt(fan_in))) for every scheme except the
 * non-torch ones, which start biases at 0 as is customary with them.  The
 * "unit" scheme (the IDE authors') keeps the readout at PyTorch's default,
 * as their classifier is a plain nn.Linear. */
static void init_params(soma_net *n, uint64_t seed)
{
    soma_rng rng;
    soma_rng_seed(&rng, seed);
    int readout = -1;   /* the last dense/conv layer: "unit" leaves it to torch */
    for (int i = 0; i < n->n_layers; i++)
        if (n->layers[i].kind == SOMA_LAYER_DENSE || n->layers[i].kind == SOMA_LAYER_CONV) readout = i;
    for (int i = 0; i < n->n_layers; i++) {
        soma_layer *l = &n->layers[i];
        if (l->kind == SOMA_LAYER_DENSE || l->kind == SOMA_LAYER_CONV) {
            int k2 = l->kind == SOMA_LAYER_CONV ? l->k * l->k : 1;
            int fan_in = (int)(l->kind == SOMA_LAYER_CONV ? (size_t)l->in_c * k2 : l->in_size);
            int fan_out = l->out_c * k2;
            soma_init kind = n->init == SOMA_INIT_UNIT && i == readout ? SOMA_INIT_TORCH : n->init;
            soma_param *w = &n->params.p[l->w], *b = &n->params.p[l->b];
            soma_init_fill(n->params.value + w->offset, w->n, fan_in, fan_out, kind, &rng);
            float *bv = n->params.value + b->offset;
            float bound = 1.0f / sqrtf((float)fan_in);
            for (size_t j = 0; j < b->n; j++)
                bv[j] = kind == SOMA_INIT_TORCH ? (2.0f * soma_rng_uniform(&rng) - 1.0f) * bound : 0.0f;
            if (l->rec >= 0) /* recurrent weights: same scheme, fan = units */
                soma_init_fill(soma__param_value(n, l->rec), n->params.p[l->rec].n, l->out_c,
                               l->out_c, kind, &rng);
        } else if (l->kind == SOMA_LAYER_CELL && l->ltc) {
            /* as the authors' code: Xavier-normal W (fans 2N in, N out), b = 0, k = 1;
             * conv maps: PyTorch's Conv2d default (the net's init scheme, as conv layers) */
            int w3[2][3] = { { l->tm_w, l->tm_b, l->tm_k }, { l->ta_w, l->ta_b, l->ta_k } };
            for (int m = 0; m < 2; m++) {
                if (w3[m][0] < 0) continue;
                if (l->ltc == 2) {
                    int fan_in = l->out_c * l->k * l->k;
                    soma_init_fill(soma__param_value(n, w3[m][0]), n->params.p[w3[m][0]].n, fan_in, fan_in,
                                   n->init, &rng);
                    float *bv = soma__param_value(n, w3[m][1]), bound = 1.0f / sqrtf((float)fan_in);
                    for (int j = 0; j < l->out_c; j++)
                        bv[j] = n->init == SOMA_INIT_TORCH ? (2.0f * soma_rng_uniform(&rng) - 1.0f) * bound : 0.0f;
                    if (l->mbn_w[m] >= 0) {
                        /* the map BN as BatchNorm2d's defaults (the authors' BN1/BN2):
                         * gamma 1, beta 0, running mean 0, var 1; no draws, so the
                         * other parameters are those of the net without it */
                        float *g = soma__param_value(n, l->mbn_w[m]), *be = soma__param_value(n, l->mbn_b[m]);
                        for (int j = 0; j < l->out_c; j++) { g[j] = 1; be[j] = 0; }
                        float *rv = soma__buffer_value(n, l->mbn_rv[m]);
                        for (size_t j = 0; j < n->buffers.p[l->mbn_rv[m]].n; j++) rv[j] = 1;
                    }
                    continue;
                }
                soma_init_fill(soma__param_value(n, w3[m][0]), n->params.p[w3[m][0]].n, 2 * l->out_c,
                               l->out_c, SOMA_INIT_XAVIER_NORMAL, &rng);
                memset(soma__param_value(n, w3[m][1]), 0, (size_t)l->out_c * sizeof(float));
                soma__param_value(n, w3[m][2])[0] = 1.0f;
            }
        } else if (l->kind == SOMA_LAYER_BATCHNORM) {
            for (int m = 0; m < 1 + l->bn_sep; m++) {   /* sbn: the recurrent part's too */
                float *g = soma__param_value(n, m ? l->w2 : l->w), *bb = soma__param_value(n, m ? l->b2 : l->b);
                int v = m ? l->run_var2 : l->run_var;
                float *rv = n->buffers.value + n->buffers.p[v].offset;
                for (int c = 0; c < l->out_c; c++) { g[c] = n->opts.bn_gamma; bb[c] = 0; }
                for (size_t c = 0; c < n->buffers.p[v].n; c++) rv[c] = 1;
            }
        }
    }
}

soma_status soma_net_new(soma_net **out, const char *spec, const soma_net_options *o)
{
    *out = NULL;
    soma_net_options def;
    if (!o) { soma_net_options_default(&def); o = &def; }
    if (o->in_c <= 0 || o->in_h <= 0 || o->in_w <= 0)
        return soma__fail(SOMA_ERR_ARG, "input shape must be positive, got %dx%dx%d",
                          o->in_c, o->in_h, o->in_w);
    if ((unsigned)o->act >= SOMA_ACT_COUNT) return soma__fail(SOMA_ERR_ARG, "unknown activation %d", (int)o->act);
    if ((unsigned)o->init >= SOMA_INIT_COUNT) return soma__fail(SOMA_ERR_ARG, "unknown init %d", (int)o->init);
    if (!isfinite(o->bn_gamma))
        return soma__fail(SOMA_ERR_ARG, "--bn-gamma must be finite, got %g", (double)o->bn_gamma);
    if ((unsigned)o->cell.init >= SOMA_STATE_COUNT || (unsigned)o->ltc.init >= SOMA_STATE_COUNT ||
        (unsigned)o->readout_cell.init >= SOMA_STATE_COUNT)
        return soma__fail(SOMA_ERR_ARG, "unknown initial cell state (valid: zero, uniform)");
    soma_net_options ltc_o;
    if (!o->spiking && spec && soma__spec_has_ltc(spec)) {
        /* an LTC layer is a cell: the net steps through time */
        ltc_o = *o;
        ltc_o.spiking = 1;
        o = &ltc_o;
    }
    if (o->cell.map_bn || o->readout_cell.map_bn)
        return soma__fail(SOMA_ERR_ARG, "map_bn (batchnorm inside the tau maps) is a setting of the LTC "
                          "cells (soma_net_options.ltc), not of %s", o->cell.map_bn ? "cell" : "readout_cell");
    if (o->ltc.map_bn < 0)
        return soma__fail(SOMA_ERR_ARG, "ltc.map_bn (--ltc-map-bn) must be 0 (off), 1 (shared running "
                          "statistics) or N > 1 (per step), got %d", o->ltc.map_bn);
    if (o->spiking && spec && soma__spec_has_ltc(spec)) {
        soma_status e = soma_cell_params_check(&o->ltc);
        if (e) return e;
        if (o->ltc.kind != SOMA_NEURON_ALIF && o->ltc.kind != SOMA_NEURON_LIF)
            return soma__fail(SOMA_ERR_ARG, "LTC cells are alif (adaptive threshold) or lif (fixed "
                              "threshold), not %s", soma_neuron_name(o->ltc.kind));
    }
    if (o->spiking) {
        soma_status e;
        if ((e = soma_cell_params_check(&o->cell)) ||
            (o->readout == SOMA_READOUT_LI && (e = soma_cell_params_check(&o->readout_cell))))
            return e;
        if ((unsigned)o->readout >= SOMA_READOUT_COUNT)
            return soma__fail(SOMA_ERR_ARG, "unknown readout %d", (int)o->readout);
        if (o->cell.kind == SOMA_NEURON_LI)
            return soma__fail(SOMA_ERR_ARG, "hidden cells must spike (lif, if, alif), not li");
    }
    soma_net *n = soma__calloc(1, sizeof *n);
    if (!n) return SOMA_ERR_NOMEM;
    n->in_c = o->in_c; n->in_h = o->in_h; n->in_w = o->in_w;
    n->act = o->act;
    n->init = o->init;
    n->spiking = o->spiking;
    n->opts = *o;
    n->slots = 1;
    soma_status st = SOMA_ERR_NOMEM;
    if (!(n->spec = soma__strdup(spec ? spec : ""))) goto fail;
    if ((st = soma__spec_parse(&n->layers, &n->n_layers, spec, o))) goto fail;
    if (o->ltc.map_bn) {
        int conv = 0;
        for (int i = 0; i < n->n_layers; i++) conv |= n->layers[i].kind == SOMA_LAYER_CELL && n->layers[i].ltc == 2;
        if (!conv) {
            st = soma__fail(SOMA_ERR_ARG, "ltc.map_bn %d (--ltc-map-bn): net '%s' has no cltcKxC layer (the "
                            "batchnorm inside the tau maps is the conv LTC cells'; the dense maps have none)",
                            o->ltc.map_bn, spec);
            goto fail;
        }
    }
    /* batchnorm in a temporal net updates its statistics every step: not prefix */
    while (n->prefix < n->n_layers && n->layers[n->prefix].kind != SOMA_LAYER_CELL &&
           n->layers[n->prefix].rec != 1 &&  /* spec.c's flag: recurrent dense */
           !(n->spiking && n->layers[n->prefix].kind == SOMA_LAYER_BATCHNORM))
        n->prefix++;
    if ((st = create_params(n))) goto fail;
    init_params(n, o->seed);
    *out = n;
    return SOMA_OK;
fail:
    soma_net_free(n);
    return st;
}

static void free_caches(soma_net *n)
{
    for (int i = 0; i < n->n_layers; i++) {
        soma_layer *l = &n->layers[i];
        soma__free_aligned(l->out);
        soma__free(l->idx);
        soma__free_aligned(l->mask);
        soma__free(l->bn.mean);
        soma__free(l->bn.invstd);
        soma__free_aligned(l->bn.xhat);
        soma__free(l->bn2.mean);
        soma__free(l->bn2.invstd);
        soma__free_aligned(l->bn2.xhat);
        memset(&l->bn2, 0, sizeof l->bn2);
        soma__free_aligned(l->rout);
        soma__free_aligned(l->grec);
        l->rout = l->grec = NULL;
        soma__free_aligned(l->cu);
        soma__free_aligned(l->ca);
        soma__free_aligned(l->cv);
        soma__free_aligned(l->cth);
        soma__free_aligned(l->delta);
        l->delta = NULL;
        soma__free_aligned(l->chm);
        soma__free_aligned(l->cha);
        soma__free_aligned(l->lsc);
        l->chm = l->cha = l->lsc = NULL;
        for (int m = 0; m < 2; m++) {
            soma__free(l->mbn[m].mean);
            soma__free(l->mbn[m].invstd);
            soma__free_aligned(l->mbn[m].xhat);
            memset(&l->mbn[m], 0, sizeof l->mbn[m]);
        }
        for (int k = 0; k < 2; k++) {
            soma__free_aligned(l->gu[k]);
            soma__free_aligned(l->ga[k]);
            soma__free_aligned(l->gs[k]);
            l->gu[k] = l->ga[k] = l->gs[k] = NULL;
        }
        l->out = NULL; l->idx = NULL; l->mask = NULL;
        l->cu = l->ca = l->cv = l->cth = NULL;
        memset(&l->bn, 0, sizeof l->bn);
    }
    soma__free_aligned(n->dbuf[0]);
    soma__free_aligned(n->dbuf[1]);
    soma__free_aligned(n->ws);
    soma__free(n->xs);
    soma__free_aligned(n->rowbuf);
    soma__free_aligned(n->psum);
    n->rowbuf = NULL;
    n->psum = NULL;
    n->dbuf[0] = n->dbuf[1] = n->ws = NULL;
    n->xs = NULL;
    n->max_batch = 0;
}

void soma_net_free(soma_net *n)
{
    if (!n) return;
    if (n->layers) free_caches(n);
    soma__free(n->layers);
    store_free(&n->params);
    store_free(&n->buffers);
    soma__free(n->spec);
    soma__free(n);
}

/* Allocates one zeroed block and counts it. */
static float *plan_alloc(size_t floats, size_t *bytes)
{
    float *p = soma__malloc_aligned(floats * sizeof(float));
    if (p) {
        memset(p, 0, floats * sizeof(float));
        *bytes += floats * sizeof(float);
    }
    return p;
}

/* Caches for batches of up to B samples, `slots` copies of every per-step
 * buffer (1 for a static net; window + 1 for a temporal one). */
static soma_status prepare_slots(soma_net *n, int B, int slots)
{
    free_caches(n);
    size_t maxsz = (size_t)n->in_c * n->in_h * n->in_w, ws = 0, bytes = 0;
    int threads = soma_get_threads();
    n->max_batch = B; /* soma__slot strides by it */
    n->slots = slots;
    for (int i = 0; i < n->n_layers; i++) {
        soma_layer *l = &n->layers[i];
        size_t one = (size_t)B * l->out_size, sz = one * slots;
        if (l->out_size > maxsz) maxsz = l->out_size;
        if (l->in_size > maxsz) maxsz = l->in_size;
        if (!(l->out = plan_alloc(sz, &bytes))) goto nomem;
        if (l->kind == SOMA_LAYER_MAXPOOL) {
            if (!(l->idx = soma__malloc(sz * sizeof(int32_t)))) goto nomem;
            bytes += sz * sizeof(int32_t);
        } else if (l->kind == SOMA_LAYER_DROPOUT) {
            if (!(l->mask = plan_alloc(one, &bytes))) goto nomem;
        } else if (l->kind == SOMA_LAYER_BATCHNORM) {
            /* per slot: the batch statistics and xhat of each step */
            l->bn.mean = soma__malloc((size_t)slots * l->out_c * sizeof(float));
            l->bn.invstd = soma__malloc((size_t)slots * l->out_c * sizeof(float));
            l->bn.xhat = plan_alloc(sz, &bytes);
            if (!l->bn.mean || !l->bn.invstd || !l->bn.xhat) goto nomem;
            bytes += 2 * (size_t)slots * l->out_c * sizeof(float);
            if (l->bn_sep) {
                l->bn2.mean = soma__malloc((size_t)slots * l->out_c * sizeof(float));
                l->bn2.invstd = soma__malloc((size_t)slots * l->out_c * sizeof(float));
                l->bn2.xhat = plan_alloc(sz, &bytes);
                if (!l->bn2.mean || !l->bn2.invstd || !l->bn2.xhat) goto nomem;
                bytes += 2 * (size_t)slots * l->out_c * sizeof(float);
            }
        } else if (l->kind == SOMA_LAYER_DENSE && l->rec_sep) {
            if (!(l->rout = plan_alloc(sz, &bytes)) || !(l->grec = plan_alloc(one, &bytes))) goto nomem;
        } else if (l->kind == SOMA_LAYER_CONV) {
            soma_conv_shape cs;
            soma_conv_shape_init(&cs, B, l->in_c, l->in_h, l->in_w, l->out_c, l->k, l->k,
                                 l->stride, l->pad);
            size_t w = soma_conv2d_workspace(&cs, threads);
            if (w > ws) ws = w;
        } else if (l->kind == SOMA_LAYER_CELL) {
            int alif = l->cell.kind == SOMA_NEURON_ALIF, li = l->cell.kind == SOMA_NEURON_LI;
            /* LI: the membrane is the output; cu is one slot of spike scratch */
            if (!(l->cu = plan_alloc(li ? one : sz, &bytes)) || !(l->cv = plan_alloc(sz, &bytes))) goto nomem;
            if (alif && (!(l->ca = plan_alloc(sz, &bytes)) || !(l->cth = plan_alloc(sz, &bytes)))) goto nomem;
            for (int k = 0; k < 2; k++) {
                if (!(l->gu[k] = plan_alloc(one, &bytes)) || !(l->gs[k] = plan_alloc(one, &bytes)))
                    goto nomem;
                if (alif && !(l->ga[k] = plan_alloc(one, &bytes))) goto nomem;
            }
            /* scratch: alpha, rho, dalpha, drho (+ a conv cell's sum and dsum,
             * + with the map BN the gradient of its input) */
            int mbn = l->ltc == 2 && l->cell.map_bn > 0;
            if (l->ltc && (!(l->chm = plan_alloc(sz, &bytes)) ||
                           !(l->lsc = plan_alloc((l->ltc == 2 ? 6 + mbn : 4) * one, &bytes))))
                goto nomem;
            for (int m = 0; m < 2 && mbn; m++) {
                /* the map BN's cache per slot: batch statistics and xhat of each step */
                if (l->mbn_w[m] < 0) continue;
                l->mbn[m].mean = soma__malloc((size_t)slots * l->out_c * sizeof(float));
                l->mbn[m].invstd = soma__malloc((size_t)slots * l->out_c * sizeof(float));
                l->mbn[m].xhat = plan_alloc(sz, &bytes);
                if (!l->mbn[m].mean || !l->mbn[m].invstd || !l->mbn[m].xhat) goto nomem;
                bytes += 2 * (size_t)slots * l->out_c * sizeof(float);
            }
            if (l->ltc == 2) {
                soma_conv_shape cs;
                soma_conv_shape_init(&cs, B, l->out_c, l->out_h, l->out_w, l->out_c, l->k, l->k, 1, l->pad);
                size_t w = soma_conv2d_workspace(&cs, threads);
                if (w > ws) ws = w;
            }
            if (l->ltc && l->ta_w >= 0 && !(l->cha = plan_alloc(sz, &bytes))) goto nomem;
        }
    }
    if (n->spiking && n->prefix > 0 &&
        !(n->psum = plan_alloc((size_t)B * n->layers[n->prefix - 1].out_size, &bytes)))
        goto nomem;
    n->fusable = !n->spiking;
    size_t maxin = 0;
    for (int i = 0; i < n->n_layers; i++) {
        soma_layer *l = &n->layers[i];
        if (l->kind != SOMA_LAYER_DENSE && l->kind != SOMA_LAYER_FLATTEN &&
            l->kind != SOMA_LAYER_ACT && l->kind != SOMA_LAYER_DROPOUT)
            n->fusable = 0;
        if (l->kind == SOMA_LAYER_DENSE && l->in_size > maxin) maxin = l->in_size;
    }
    if (n->fusable && B <= SOMA__FUSED_MAX_BATCH) {
        for (int i = 0; i < n->n_layers; i++) {
            soma_layer *l = &n->layers[i];
            if (l->kind == SOMA_LAYER_DENSE && !(l->delta = plan_alloc((size_t)B * l->out_size, &bytes)))
                goto nomem;
        }
        /* a row of weights, or a layer's biases, per thread */
        size_t maxout = 0;
        for (int i = 0; i < n->n_layers; i++)
            if (n->layers[i].kind == SOMA_LAYER_DENSE && n->layers[i].out_size > maxout)
                maxout = n->layers[i].out_size;
        n->rowbuf_stride = maxin > maxout ? maxin : maxout;
        if (!(n->rowbuf = plan_alloc((size_t)threads * n->rowbuf_stride, &bytes))) goto nomem;
    } else {
        n->fusable = 0;
    }
    for (int k = 0; k < 2; k++)
        if (!(n->dbuf[k] = plan_alloc((size_t)B * maxsz, &bytes))) goto nomem;
    if (ws && !(n->ws = soma__malloc_aligned(ws * sizeof(float)))) goto nomem;
    if (!(n->xs = soma__calloc((size_t)slots, sizeof *n->xs))) goto nomem;
    n->ws_floats = ws;
    n->ws_threads = threads;
    n->act_bytes = bytes;
    return SOMA_OK;
nomem:
    free_caches(n);
    return SOMA_ERR_NOMEM;
}

soma_status soma_net_prepare(soma_net *n, int B)
{
    if (B <= 0) return soma__fail(SOMA_ERR_ARG, "batch must be > 0, got %d", B);
    if (n->max_batch >= B && n->slots == 1) return SOMA_OK;
    return prepare_slots(n, B, 1);
}

soma_status soma_net_prepare_time(soma_net *n, int B, int window)
{
    if (B <= 0) return soma__fail(SOMA_ERR_ARG, "batch must be > 0, got %d", B);
    if (window <= 0) return soma__fail(SOMA_ERR_ARG, "time window must be > 0, got %d", window);
    if (!n->spiking) return soma__fail(SOMA_ERR_ARG, "net '%s' has no neuron cells; use soma_net_forward", n->spec);
    if (n->max_batch >= B && n->slots == window + 1) return SOMA_OK;
    return prepare_slots(n, B, window + 1);
}

void soma_net_set_train(soma_net *n, int train) { n->train = train; }

/* ---- one layer, forward and backward ------------------------------------- */

static void conv_shape(soma_conv_shape *cs, const soma_layer *l, int B)
{
    soma_conv_shape_init(cs, B, l->in_c, l->in_h, l->in_w, l->out_c, l->k, l->k, l->stride, l->pad);
}

/* The tau maps of a conv LTC cell: C -> C, KxK, stride 1, same padding. */
static void ltc_conv_shape(soma_conv_shape *cs, const soma_layer *l, int B)
{
    soma_conv_shape_init(cs, B, l->out_c, l->out_h, l->out_w, l->out_c, l->k, l->k, 1, l->pad);
}

/* The BN inside tau map m (0 tau_m, 1 tau_adp) of a conv LTC cell at step
 * `slot`: this step's running-statistics row (map_bn N > 1: row min(t, N - 1)
 * of the step being run forward, n->t) and cache.  NULL without a map BN. */
static soma__ltc_bn *map_bn(soma__ltc_bn *bn, soma_net *n, const soma_layer *l, int m, int slot, int B)
{
    if (l->mbn_w[m] < 0) return NULL;
    const int C = l->out_c, steps = l->cell.map_bn > 1 ? l->cell.map_bn : 0;
    size_t row = steps ? (size_t)(n->t < steps ? n->t : steps - 1) * C : 0;
    bn->gamma = soma__param_value(n, l->mbn_w[m]);
    bn->beta = soma__param_value(n, l->mbn_b[m]);
    bn->dgamma = soma__param_grad(n, l->mbn_w[m]);
    bn->dbeta = soma__param_grad(n, l->mbn_b[m]);
    bn->run_mean = soma__buffer_value(n, l->mbn_rm[m]) + row;
    bn->run_var = soma__buffer_value(n, l->mbn_rv[m]) + row;
    bn->cache.mean = l->mbn[m].mean + (size_t)slot * C;
    bn->cache.invstd = l->mbn[m].invstd + (size_t)slot * C;
    bn->cache.xhat = soma__slot(n, l, l->mbn[m].xhat, slot);
    bn->dh = l->lsc + 6 * (size_t)B * l->out_size;
    bn->eps = l->eps;
    bn->momentum = l->momentum;
    bn->train = n->train;
    return bn;
}

/* A batchnorm layer's cache of one slot (slot 0: l->bn itself). */
static void bn_cache(soma_bn_cache *bc, const soma_net *n, const soma_layer *l, const soma_bn_cache *c,
                     int slot)
{
    bc->mean = c->mean + (size_t)slot * l->out_c;
    bc->invstd = c->invstd + (size_t)slot * l->out_c;
    bc->xhat = soma__slot(n, l, c->xhat, slot);
}

static void pool_shape(soma_pool_shape *ps, const soma_layer *l, int B)
{
    soma_pool_shape_init(ps, B, l->in_c, l->in_h, l->in_w, l->k, l->stride);
}

/* A spiking cell's output is its spikes; a leaky-integrator readout's is
 * its membrane (its spike slot is scratch that stays 0). */
static void cell_state(soma_cell_state *st, const soma_net *n, const soma_layer *l, int slot)
{
    int li = l->cell.kind == SOMA_NEURON_LI;
    st->u = soma__slot(n, l, li ? l->out : l->cu, slot);
    st->a = l->ca ? soma__slot(n, l, l->ca, slot) : NULL;
    st->s = li ? l->cu : soma__slot(n, l, l->out, slot);
}

/* Layer i of step `slot` (prev: the slot of the step before, temporal only).
 * in: the layer's input (B, in_size). */
static soma_status layer_forward(soma_net *n, int i, const float *in, int slot, int prev, int B,
                                 soma_rng *rng)
{
    soma_layer *l = &n->layers[i];
    float *out = soma__slot(n, l, l->out, slot);
    size_t count = (size_t)B * l->out_size;
    switch (l->kind) {
    case SOMA_LAYER_DENSE:
        soma_dense_forward(out, in, soma__param_value(n, l->w), soma__param_value(n, l->b),
                           B, (int)l->in_size, l->out_c);
        if (l->rec >= 0) {
            /* + s_{t-1} R^T: the cell this layer feeds, one step back (sbn: apart, in rout) */
            const soma_layer *src = &n->layers[l->rec_src];
            float *ro = l->rec_sep ? soma__slot(n, l, l->rout, slot) : out;
            soma_gemm(0, 1, B, l->out_c, l->out_c, 1.0f, soma__slot(n, src, src->out, prev),
                      l->out_c, soma__param_value(n, l->rec), l->out_c, l->rec_sep ? 0.0f : 1.0f, ro, l->out_c);
        }
        break;
    case SOMA_LAYER_CONV: {
        soma_conv_shape cs;
        conv_shape(&cs, l, B);
        soma_conv2d_forward(out, n->ws, in, soma__param_value(n, l->w), soma__param_value(n, l->b), &cs);
        break;
    }
    case SOMA_LAYER_MAXPOOL: {
        soma_pool_shape ps;
        pool_shape(&ps, l, B);
        soma_maxpool_forward(out, soma__slot_idx(n, l, slot), in, &ps);
        break;
    }
    case SOMA_LAYER_AVGPOOL: {
        soma_pool_shape ps;
        pool_shape(&ps, l, B);
        soma_avgpool_forward(out, in, &ps);
        break;
    }
    case SOMA_LAYER_FLATTEN:
        memcpy(out, in, count * sizeof(float));
        break;
    case SOMA_LAYER_ACT:
        soma_act_forward(out, in, count, l->act);
        break;
    case SOMA_LAYER_DROPOUT:
        if (n->train && l->p > 0) {
            if (!n->spiking) { /* static: a fresh mask per batch */
                if (!rng) return soma__fail(SOMA_ERR_ARG, "dropout in training mode needs an rng");
                soma_dropout_mask(l->mask, count, l->p, rng);
            }
            soma_dropout_forward(out, in, l->mask, count);
        } else {
            memcpy(out, in, count * sizeof(float));
        }
        break;
    case SOMA_LAYER_BATCHNORM: {
        /* bnN: the statistics row of this step (the last one from step N on) */
        size_t row = l->bn_steps ? (size_t)(n->t < l->bn_steps ? n->t : l->bn_steps - 1) * l->out_c : 0;
        float *rm = n->buffers.value + n->buffers.p[l->run_mean].offset + row;
        float *rv = n->buffers.value + n->buffers.p[l->run_var].offset + row;
        soma_bn_cache bc;
        bn_cache(&bc, n, l, &l->bn, slot);
        if (n->train && B < 2 && l->out_h * l->out_w == 1)
            return soma__fail(SOMA_ERR_ARG, "batchnorm in training needs more than 1 value per channel (batch %d)", B);
        soma_batchnorm_forward(out, &bc, rm, rv, in, soma__param_value(n, l->w),
                               soma__param_value(n, l->b), B, l->out_c, l->out_h * l->out_w,
                               l->eps, l->momentum, n->train);
        if (l->bn_sep) {   /* + BN_rec(R s_{t-1}) of the dense layer before */
            const soma_layer *dl = &n->layers[i - 1];
            float *rec = dl->grec;   /* scratch here: backward refills it */
            bn_cache(&bc, n, l, &l->bn2, slot);
            soma_batchnorm_forward(rec, &bc, n->buffers.value + n->buffers.p[l->run_mean2].offset + row,
                                   n->buffers.value + n->buffers.p[l->run_var2].offset + row,
                                   soma__slot(n, dl, dl->rout, slot), soma__param_value(n, l->w2),
                                   soma__param_value(n, l->b2), B, l->out_c, 1, l->eps, l->momentum, n->train);
            for (size_t k = 0; k < count; k++) out[k] += rec[k];
        }
        break;
    }
    case SOMA_LAYER_CELL: {
        soma_cell_state ps, ns;
        cell_state(&ps, n, l, prev);
        cell_state(&ns, n, l, slot);
        soma_cell_cache cc = { soma__slot(n, l, l->cv, slot), l->cth ? soma__slot(n, l, l->cth, slot) : NULL };
        float *alpha_v = NULL, *rho_v = NULL;
        if (l->ltc == 2) {
            /* conv cell: tau_m = sigmoid(conv_tm(I_t + u_{t-1})), alpha = 1 - tau_m;
             * tau_adp = sigmoid(conv_ta(I_t + eta_{t-1})), rho = tau_adp */
            /* with the map BN (cell.map_bn): sigmoid(BN(conv(...))) */
            soma_conv_shape cs;
            ltc_conv_shape(&cs, l, B);
            if (l->mbn_w[0] >= 0 && n->train && B * l->out_h * l->out_w < 2)
                return soma__fail(SOMA_ERR_ARG, "the batchnorm inside the tau maps (ltc.map_bn) in training needs "
                                  "more than 1 value per channel (batch %d, %dx%d)", B, l->out_h, l->out_w);
            float *hm = soma__slot(n, l, l->chm, slot), *sum = l->lsc + 4 * count;
            soma__ltc_bn bn;
            alpha_v = l->lsc;
            soma__ltc_conv_forward(hm, sum, n->ws, in, ps.u, soma__param_value(n, l->tm_w),
                                   soma__param_value(n, l->tm_b), map_bn(&bn, n, l, 0, slot, B), &cs);
            soma__ltc_tau(alpha_v, hm, 1.0f, count, 1);
            if (l->ta_w >= 0) {
                float *ha = soma__slot(n, l, l->cha, slot);
                rho_v = l->lsc + count;
                soma__ltc_conv_forward(ha, sum, n->ws, in, ps.a, soma__param_value(n, l->ta_w),
                                       soma__param_value(n, l->ta_b), map_bn(&bn, n, l, 1, slot, B), &cs);
                soma__ltc_tau(rho_v, ha, 1.0f, count, 0);
            }
        } else if (l->ltc) {
            /* tau_m = sigmoid(k_m (W_tm [I_t, u_{t-1}] + b_tm)), alpha = 1 - tau_m;
             * tau_adp = sigmoid(k_a (W_ta [I_t, eta_{t-1}] + b_ta)), rho = tau_adp */
            const int N = l->out_c;
            float *hm = soma__slot(n, l, l->chm, slot);
            alpha_v = l->lsc;
            soma__ltc_map_forward(hm, in, ps.u, soma__param_value(n, l->tm_w), soma__param_value(n, l->tm_b), B, N);
            soma__ltc_tau(alpha_v, hm, soma__param_value(n, l->tm_k)[0], count, 1);
            if (l->ta_w >= 0) {
                float *ha = soma__slot(n, l, l->cha, slot);
                rho_v = l->lsc + count;
                soma__ltc_map_forward(ha, in, ps.a, soma__param_value(n, l->ta_w), soma__param_value(n, l->ta_b), B, N);
                soma__ltc_tau(rho_v, ha, soma__param_value(n, l->ta_k)[0], count, 0);
            }
        }
        soma__cell_forward_spike(&ns, &cc, &ps, in, alpha_v, rho_v, &l->cell, &n->spike, count);
        break;
    }
    default:
        return soma__fail(SOMA_ERR_UNSUPPORTED, "layer kind %d", (int)l->kind);
    }
    return SOMA_OK;
}

/* Backward of layer i at step `slot`: d (B, in_size) = dL/d(input), written
 * (d may be NULL when nobody needs it); parameter gradients accumulate.  For
 * CELL layers the state carries gu/ga/gs[cur] hold dL/d(state at this step)
 * and receive into [!cur] dL/d(state one step back). */
static soma_status layer_backward(soma_net *n, int i, float *d, const float *dy, const float *in,
                                  int slot, int prev, int B, int cur)
{
    soma_layer *l = &n->layers[i];
    float *out = soma__slot(n, l, l->out, slot);
    size_t count = (size_t)B * l->in_size;
    if (d) memset(d, 0, count * sizeof(float));
    switch (l->kind) {
    case SOMA_LAYER_DENSE:
        soma_dense_backward(d, soma__param_grad(n, l->w), soma__param_grad(n, l->b), dy, in,
                            soma__param_value(n, l->w), B, (int)l->in_size, l->out_c);
        if (l->rec >= 0) {
            const soma_layer *src = &n->layers[l->rec_src];
            const float *sp = soma__slot(n, src, src->out, prev);
            /* dR += dy^T s_{t-1};  dL/ds_{t-1} += dy R  (into the cell's previous-step carry);
             * sbn: dy of R s_{t-1} is the batchnorm's, in grec */
            const float *dr = l->rec_sep ? l->grec : dy;
            soma_gemm(1, 0, l->out_c, l->out_c, B, 1.0f, dr, l->out_c, sp, l->out_c, 1.0f,
                      soma__param_grad(n, l->rec), l->out_c);
            if (!n->no_carry)
                soma_gemm(0, 0, B, l->out_c, l->out_c, 1.0f, dr, l->out_c, soma__param_value(n, l->rec),
                          l->out_c, 1.0f, src->gs[!cur], l->out_c);
        }
        break;
    case SOMA_LAYER_CONV: {
        soma_conv_shape cs;
        conv_shape(&cs, l, B);
        soma_conv2d_backward(d, soma__param_grad(n, l->w), soma__param_grad(n, l->b), n->ws, dy, in,
                             soma__param_value(n, l->w), &cs);
        break;
    }
    case SOMA_LAYER_MAXPOOL: {
        soma_pool_shape ps;
        pool_shape(&ps, l, B);
        if (d) soma_maxpool_backward(d, dy, soma__slot_idx(n, l, slot), &ps);
        break;
    }
    case SOMA_LAYER_AVGPOOL: {
        soma_pool_shape ps;
        pool_shape(&ps, l, B);
        if (d) soma_avgpool_backward(d, dy, &ps);
        break;
    }
    case SOMA_LAYER_FLATTEN:
        if (d) memcpy(d, dy, count * sizeof(float));
        break;
    case SOMA_LAYER_ACT:
        if (d) soma_act_backward(d, dy, in, out, count, l->act);
        break;
    case SOMA_LAYER_DROPOUT:
        if (!d) break;
        if (n->train && l->p > 0) soma_dropout_backward(d, dy, l->mask, count);
        else memcpy(d, dy, count * sizeof(float));
        break;
    case SOMA_LAYER_BATCHNORM: {
        soma_bn_cache bc;
        bn_cache(&bc, n, l, &l->bn, slot);
        soma_batchnorm_backward(d, soma__param_grad(n, l->w), soma__param_grad(n, l->b), dy, &bc,
                                soma__param_value(n, l->w), B, l->out_c, l->out_h * l->out_w, n->train);
        if (l->bn_sep) {   /* the sum's other term: dL/d(R s_{t-1}) for the dense layer before */
            const soma_layer *dl = &n->layers[i - 1];
            bn_cache(&bc, n, l, &l->bn2, slot);
            memset(dl->grec, 0, (size_t)B * l->out_c * sizeof(float));
            soma_batchnorm_backward(dl->grec, soma__param_grad(n, l->w2), soma__param_grad(n, l->b2), dy,
                                    &bc, soma__param_value(n, l->w2), B, l->out_c, 1, n->train);
        }
        break;
    }
    case SOMA_LAYER_CELL: {
        /* dL/d(output)_t = from the layer above (dy) + carried from step t+1;
         * the output is s_t, or u_t for a leaky-integrator readout */
        float *go = l->cell.kind == SOMA_NEURON_LI ? l->gu[cur] : l->gs[cur];
        if (dy) for (size_t k = 0; k < count; k++) go[k] += dy[k];
        soma_cell_state ps, dnext = { l->gu[cur], l->ga[cur], l->gs[cur] }, dprev = { l->gu[!cur], l->ga[!cur], l->gs[!cur] };
        if (n->no_carry) dprev = (soma_cell_state){ NULL, NULL, NULL };   /* nobody reads them */
        cell_state(&ps, n, l, prev);
        soma_cell_cache cc = { soma__slot(n, l, l->cv, slot), l->cth ? soma__slot(n, l, l->cth, slot) : NULL };
        float *dI = d;
        if (!l->ltc) {
            soma__cell_backward_spike(&dprev, dI, NULL, NULL, &dnext, &cc, &ps, in, NULL, NULL, &l->cell,
                                      &n->spike, count);
            break;
        }
        /* LTC: recompute the rates from the stored h, then chain dalpha /
         * drho through the sigmoid maps into I_t, the previous state (the
         * carries) and the map parameters */
        const int N = l->out_c;
        float *alpha_v = l->lsc, *rho_v = l->lsc + count, *dal = l->lsc + 2 * count, *drh = l->lsc + 3 * count;
        const float *hm = soma__slot(n, l, l->chm, slot);
        const int conv = l->ltc == 2;
        float km = conv ? 1.0f : soma__param_value(n, l->tm_k)[0];
        soma__ltc_tau(alpha_v, hm, km, count, 1);
        memset(dal, 0, count * sizeof(float));
        int adp = l->ta_w >= 0;
        const float *ha = adp ? soma__slot(n, l, l->cha, slot) : NULL;
        float ka = adp && !conv ? soma__param_value(n, l->ta_k)[0] : 1.0f;
        if (adp) {
            soma__ltc_tau(rho_v, ha, ka, count, 0);
            memset(drh, 0, count * sizeof(float));
        }
        soma__cell_backward_spike(&dprev, dI, dal, adp ? drh : NULL, &dnext, &cc, &ps, in, alpha_v,
                                  adp ? rho_v : NULL, &l->cell, &n->spike, count);
        /* alpha = 1 - tau_m: dL/dtau_m = -dL/dalpha */
        for (size_t k = 0; k < count; k++) dal[k] = -dal[k];
        if (conv) {
            soma_conv_shape cs;
            ltc_conv_shape(&cs, l, B);
            float *sum = l->lsc + 4 * count, *dsum = l->lsc + 5 * count;
            soma__ltc_bn bn;
            soma__ltc_conv_backward(dI, dprev.u, soma__param_grad(n, l->tm_w), soma__param_grad(n, l->tm_b),
                                    dal, sum, dsum, n->ws, hm, in, ps.u, soma__param_value(n, l->tm_w),
                                    map_bn(&bn, n, l, 0, slot, B), &cs);
            if (adp)
                soma__ltc_conv_backward(dI, dprev.a, soma__param_grad(n, l->ta_w), soma__param_grad(n, l->ta_b),
                                        drh, sum, dsum, n->ws, ha, in, ps.a, soma__param_value(n, l->ta_w),
                                        map_bn(&bn, n, l, 1, slot, B), &cs);
            break;
        }
        soma__ltc_map_backward(dI, dprev.u, soma__param_grad(n, l->tm_w), soma__param_grad(n, l->tm_b),
                               soma__param_grad(n, l->tm_k), dal, hm, km, in, ps.u,
                               soma__param_value(n, l->tm_w), B, N);
        if (adp)   /* rho = tau_adp */
            soma__ltc_map_backward(dI, dprev.a, soma__param_grad(n, l->ta_w), soma__param_grad(n, l->ta_b),
                                   soma__param_grad(n, l->ta_k), drh, ha, ka, in, ps.a,
                                   soma__param_value(n, l->ta_w), B, N);
        break;
    }
    default:
        return soma__fail(SOMA_ERR_UNSUPPORTED, "layer kind %d", (int)l->kind);
    }
    return SOMA_OK;
}

/* ---- static nets ---------------------------------------------------------- */

static soma_status check_batch(const soma_net *n, int B)
{
    if (B <= 0 || B > n->max_batch)
        return soma__fail(SOMA_ERR_ARG, "batch %d outside 1..%d (prepared size)", B, n->max_batch);
    if (n->ws && soma_get_threads() > n->ws_threads)
        return soma__fail(SOMA_ERR_ARG, "thread count raised to %d after the net was prepared for %d",
                          soma_get_threads(), n->ws_threads);
    return SOMA_OK;
}

soma_status soma_net_forward(soma_net *n, const float *x, int B, soma_rng *rng,
                             const float **logits)
{
    soma_status st = check_batch(n, B);
    if (st) return st;
    if (n->spiking) return soma__fail(SOMA_ERR_ARG, "net '%s' has neuron cells: step it with soma_net_step", n->spec);
    const float *in = x;
    n->xs[0] = x;
    for (int i = 0; i < n->n_layers; i++) {
        if ((st = layer_forward(n, i, in, 0, 0, B, rng))) return st;
        in = n->layers[i].out;
    }
    *logits = in;
    return SOMA_OK;
}

void soma_net_zero_grad(soma_net *n)
{
    memset(n->params.grad, 0, n->params.total * sizeof(float));
}

/* 1 if a layer below i has parameters or state, so i's input gradient is used */
static int grad_below(const soma_net *n, int i)
{
    for (int k = 0; k < i; k++)
        if (n->layers[k].w >= 0 || n->layers[k].kind == SOMA_LAYER_CELL) return 1;
    return 0;
}

soma_status soma_net_backward(soma_net *n, const float *dlogits, int B, float *dx)
{
    soma_status st = check_batch(n, B);
    if (st) return st;
    const float *dy = dlogits;
    int cur = 0;
    for (int i = n->n_layers - 1; i >= 0; i--) {
        const float *in = i > 0 ? n->layers[i - 1].out : n->xs[0];
        float *d = i > 0 ? (dx || grad_below(n, i) ? n->dbuf[cur] : NULL) : dx;
        if ((st = layer_backward(n, i, d, dy, in, 0, 0, B, 0))) return st;
        dy = d;
        cur ^= 1;
    }
    return SOMA_OK;
}

/* ---- small-batch BP without a stored gradient ------------------------------
 *
 * At batch 1..8 a training step is memory-bound: the weights, the gradient
 * and the optimizer state are each read and written once per step, and the
 * arithmetic is a rank-B update.  Here the gradient never reaches memory:
 *   pass 1: the deltas dL/dy of every dense layer, top to bottom, with the
 *           weights as they were in the forward pass (kept in l->delta);
 *   check:  deltas and cached activations finite (O(B x units)), else
 *           SOMA_ERR_NUMERIC with every parameter untouched;
 *   pass 2: for each weight row, g = sum_b delta[b,o] x[b,:] in a per-thread
 *           row buffer, then the optimizer updates that row at once.
 * The optimizer code is the same elementwise code as soma_optim_step's; at
 * batch 1 the gradient values are the same products, so the two paths agree
 * bit for bit, and at batch 2..8 to rounding (the sum over the batch runs in
 * another order than in GEMM).  test_bp compares the paths. */

static int finite_all(const float *x, size_t n)
{
    uint32_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], sizeof u);
        bad |= (u & 0x7f800000u) + 0x00800000u;
    }
    return !(bad & 0x80000000u);
}

soma_status soma__net_fused_update(soma_net *n, const float *dlogits, int B, soma_optim *o, float lr)
{
    soma_status st = check_batch(n, B);
    if (st) return st;
    if (!n->fusable || B > SOMA__FUSED_MAX_BATCH)
        return soma__fail(SOMA_ERR_UNSUPPORTED, "fused update: net '%s' at batch %d", n->spec, B);
    int lowest = -1;
    for (int i = 0; i < n->n_layers; i++)
        if (n->layers[i].kind == SOMA_LAYER_DENSE) { lowest = i; break; }
    const float *dy = dlogits;
    int cur = 0;
    for (int i = n->n_layers - 1; i >= lowest; i--) {
        soma_layer *l = &n->layers[i];
        const float *in = i > 0 ? n->layers[i - 1].out : n->xs[0];
        float *d = n->dbuf[cur];
        size_t count = (size_t)B * l->in_size;
        switch (l->kind) {
        case SOMA_LAYER_DENSE:
            memcpy(l->delta, dy, (size_t)B * l->out_size * sizeof(float));
            if (i > lowest) /* dx = dy W */
                soma_gemm(0, 0, B, (int)l->in_size, l->out_c, 1.0f, dy, l->out_c,
                          soma__param_value(n, l->w), (int)l->in_size, 0.0f, d, (int)l->in_size);
            break;
        case SOMA_LAYER_ACT:
            memset(d, 0, count * sizeof(float));
            soma_act_backward(d, dy, in, l->out, count, l->act);
            break;
        case SOMA_LAYER_DROPOUT:
            if (n->train && l->p > 0) {
                memset(d, 0, count * sizeof(float));
                soma_dropout_backward(d, dy, l->mask, count);
            } else {
                memcpy(d, dy, count * sizeof(float));
            }
            break;
        default: /* FLATTEN */
            memcpy(d, dy, count * sizeof(float));
            break;
        }
        dy = d;
        cur ^= 1;
    }
    for (int i = lowest; i < n->n_layers; i++) {
        soma_layer *l = &n->layers[i];
        if (l->kind != SOMA_LAYER_DENSE) continue;
        const float *in = i > 0 ? n->layers[i - 1].out : n->xs[0];
        if (!finite_all(l->delta, (size_t)B * l->out_size) || !finite_all(in, (size_t)B * l->in_size))
            return soma__fail(SOMA_ERR_NUMERIC, "gradient contains NaN or Inf (layer %d)", i);
    }
    soma__optim_begin(o);
    float *values = n->params.value;
    for (int i = lowest; i < n->n_layers; i++) {
        soma_layer *l = &n->layers[i];
        if (l->kind != SOMA_LAYER_DENSE) continue;
        const float *in = i > 0 ? n->layers[i - 1].out : n->xs[0];
        const int I = (int)l->in_size, O = l->out_c;
        const float *delta = l->delta;
        size_t w_off = n->params.p[l->w].offset, b_off = n->params.p[l->b].offset;
#pragma omp parallel for schedule(static) if ((size_t)O * I >= 32768)
        for (int r = 0; r < O; r++) {
            float *g = n->rowbuf + (size_t)omp_get_thread_num() * n->rowbuf_stride;
            float d0 = delta[r];
            const float *x0 = in;
            for (int j = 0; j < I; j++) g[j] = d0 * x0[j];
            for (int b = 1; b < B; b++) {
                float db = delta[(size_t)b * O + r];
                const float *xb = in + (size_t)b * I;
                for (int j = 0; j < I; j++) g[j] += db * xb[j];
            }
            soma__optim_range(o, values, g, lr, w_off + (size_t)r * I, (size_t)I);
        }
        float *gb = n->rowbuf;
        for (int r = 0; r < O; r++) {
            float acc = delta[r];
            for (int b = 1; b < B; b++) acc += delta[(size_t)b * O + r];
            gb[r] = acc;
        }
        soma__optim_range(o, values, gb, lr, b_off, (size_t)O);
    }
    return SOMA_OK;
}

/* ---- temporal nets: one step at a time ------------------------------------- */

soma_status soma_net_reset_state(soma_net *n, int B, soma_rng *rng)
{
    if (!n->spiking || n->slots < 2)
        return soma__fail(SOMA_ERR_ARG, "soma_net_reset_state needs soma_net_prepare_time first");
    soma_status st = check_batch(n, B);
    if (st) return st;
    for (int i = 0; i < n->n_layers; i++)
        if (n->layers[i].kind == SOMA_LAYER_CELL && n->layers[i].cell.init == SOMA_STATE_UNIFORM && !rng)
            return soma__fail(SOMA_ERR_ARG, "a uniform initial cell state needs an rng");
    n->t = 0;
    n->cur_b = B;
    int s0 = soma__slot_of(n, -1);
    for (int i = 0; i < n->n_layers; i++) {
        soma_layer *l = &n->layers[i];
        size_t one = (size_t)n->max_batch * l->out_size;
        if (l->kind == SOMA_LAYER_CELL) {
            /* states start at zero; uniform: u ~ U[0,1) (the first B rows,
             * in order), a = threshold (the FPTT authors' eta = b0) */
            int li = l->cell.kind == SOMA_NEURON_LI;   /* LI: the membrane is the output */
            float *u = soma__slot(n, l, li ? l->out : l->cu, s0);
            memset(soma__slot(n, l, l->out, s0), 0, one * sizeof(float));
            memset(li ? l->cu : u, 0, one * sizeof(float));
            if (l->ca) memset(soma__slot(n, l, l->ca, s0), 0, one * sizeof(float));
            if (l->cell.init == SOMA_STATE_UNIFORM) {
                size_t m = (size_t)B * l->out_size;
                for (size_t k = 0; k < m; k++) u[k] = soma_rng_uniform(rng);
                if (l->ca) {
                    float *a = soma__slot(n, l, l->ca, s0);
                    for (size_t k = 0; k < m; k++) a[k] = l->cell.threshold;
                }
            }
        } else if (l->kind == SOMA_LAYER_DROPOUT && n->train && l->p > 0) {
            /* variational: one mask for the whole sequence */
            if (!rng) return soma__fail(SOMA_ERR_ARG, "dropout in training mode needs an rng");
            soma_dropout_mask(l->mask, (size_t)B * l->out_size, l->p, rng);
        }
    }
    return SOMA_OK;
}

soma_status soma_net_step(soma_net *n, const float *x_t, int B, const float **out)
{
    if (!n->spiking || n->slots < 2)
        return soma__fail(SOMA_ERR_ARG, "soma_net_step needs soma_net_prepare_time and soma_net_reset_state");
    if (B != n->cur_b)
        return soma__fail(SOMA_ERR_ARG, "batch %d differs from the sequence's %d (reset the state first)", B, n->cur_b);
    int slot = soma__slot_of(n, n->t), prev = soma__slot_of(n, n->t - 1);
    if (n->static_input && n->t > 0 && x_t != n->xs[prev])
        return soma__fail(SOMA_ERR_ARG, "static input promised, but step %d got another x", n->t);
    n->xs[slot] = x_t;
    const float *in = x_t;
    soma_status st;
    for (int i = 0; i < n->n_layers; i++) {
        soma_layer *l = &n->layers[i];
        if (n->static_input && n->t > 0 && i < n->prefix) {
            /* same input as last step, no state: same output */
            size_t one = (size_t)B * l->out_size;
            memcpy(soma__slot(n, l, l->out, slot), soma__slot(n, l, l->out, prev), one * sizeof(float));
            if (l->idx) memcpy(soma__slot_idx(n, l, slot), soma__slot_idx(n, l, prev), one * sizeof(int32_t));
        } else if ((st = layer_forward(n, i, in, slot, prev, B, NULL))) {
            return st;
        }
        in = soma__slot(n, l, l->out, slot);
    }
    n->t++;
    *out = in;
    return SOMA_OK;
}

/* Zeroes the state-gradient carries of every cell: k = 0/1 one side, 2 both. */
static void zero_carries(soma_net *n, int B, int k)
{
    for (int i = 0; i < n->n_layers; i++) {
        soma_layer *l = &n->layers[i];
        if (l->kind != SOMA_LAYER_CELL) continue;
        size_t one = (size_t)B * l->out_size * sizeof(float);
        for (int j = 0; j < 2; j++) {
            if (k != 2 && j != k) continue;
            memset(l->gu[j], 0, one);
            memset(l->gs[j], 0, one);
            if (l->ga[j]) memset(l->ga[j], 0, one);
        }
    }
}

soma_status soma_net_backward_time(soma_net *n, int steps, const float *const *dout, int B,
                                   int trunc)
{
    if (!n->spiking || n->slots < 2) return soma__fail(SOMA_ERR_ARG, "not a temporal net");
    if (B != n->cur_b) return soma__fail(SOMA_ERR_ARG, "batch %d differs from the sequence's %d", B, n->cur_b);
    if (steps <= 0 || steps > n->t || steps > n->slots - 1)
        return soma__fail(SOMA_ERR_ARG, "backward over %d steps: %d taken, window %d", steps, n->t, n->slots - 1);
    if (trunc < 0) return soma__fail(SOMA_ERR_ARG, "truncation must be >= 0, got %d", trunc);
    zero_carries(n, B, 2); /* no gradient arrives from after the last step */
    /* static input: the stateless prefix sees the same input every step and
     * is linear in its output gradient, so its backward runs once, on the
     * gradient summed over the window */
    int lo = n->static_input ? n->prefix : 0;
    if (lo) memset(n->psum, 0, (size_t)B * n->layers[lo - 1].out_size * sizeof(float));
    int cur = 0;
    soma_status st;
    for (int j = steps - 1; j >= 0; j--) {
        int t = n->t - steps + j;
        int slot = soma__slot_of(n, t), prev = soma__slot_of(n, t - 1);
        zero_carries(n, B, !cur); /* the previous-step carries receive fresh sums */
        n->no_carry = j == 0;     /* the state entering the window is detached */
        const float *dy = dout ? dout[j] : NULL;
        int bcur = 0;
        for (int i = n->n_layers - 1; i >= lo; i--) {
            soma_layer *l = &n->layers[i];
            const float *in = i > 0 ? soma__slot(n, &n->layers[i - 1], n->layers[i - 1].out, slot) : n->xs[slot];
            float *d = grad_below(n, i) ? n->dbuf[bcur] : NULL;
            if (!dy && l->kind != SOMA_LAYER_CELL) {
                /* nothing flows down from here at this step, except what
                 * cells below carry in time: a zero gradient */
                if (d) memset(d, 0, (size_t)B * l->in_size * sizeof(float));
                dy = d;
                bcur ^= 1;
                continue;
            }
            if ((st = layer_backward(n, i, d, dy, in, slot, prev, B, cur))) return st;
            dy = d;
            bcur ^= 1;
        }
        if (lo && dy) {
            size_t m = (size_t)B * n->layers[lo - 1].out_size;
            for (size_t k = 0; k < m; k++) n->psum[k] += dy[k];
        }
        /* truncated BPTT: the state entering step t is detached when t is a
         * multiple of trunc */
        if (trunc > 0 && t % trunc == 0) zero_carries(n, B, !cur);
        cur ^= 1;
    }
    n->no_carry = 0;
    if (lo) {
        int slot = soma__slot_of(n, n->t - 1), bcur = 0;
        const float *dy = n->psum;
        for (int i = lo - 1; i >= 0; i--) {
            const float *in = i > 0 ? soma__slot(n, &n->layers[i - 1], n->layers[i - 1].out, slot) : n->xs[slot];
            float *d = grad_below(n, i) ? n->dbuf[bcur] : NULL;
            if ((st = layer_backward(n, i, d, dy, in, slot, slot, B, cur))) return st;
            dy = d;
            bcur ^= 1;
        }
    }
    return SOMA_OK;
}

int soma_net_time(const soma_net *n) { return n->t; }

void soma_net_set_static_input(soma_net *n, int on) { n->static_input = on != 0; }
int soma_net_is_spiking(const soma_net *n) { return n->spiking; }

/* ---- access ------------------------------------------------------------- */

int soma_net_inputs(const soma_net *n) { return n->in_c * n->in_h * n->in_w; }
int soma_net_outputs(const soma_net *n) { return (int)n->layers[n->n_layers - 1].out_size; }
const char *soma_net_spec(const soma_net *n) { return n->spec; }
size_t soma_net_param_floats(const soma_net *n) { return n->params.total; }
float *soma_net_param_values(soma_net *n) { return n->params.value; }
float *soma_net_param_grads(soma_net *n) { return n->params.grad; }
int soma_net_tensor_count(const soma_net *n) { return n->params.count + n->buffers.count; }

float *soma_net_tensor(soma_net *n, int i, const char **name, int *ndim,
                       int64_t shape[SOMA_MAX_DIMS], int *is_param)
{
    int isp = i < n->params.count;
    soma_store *s = isp ? &n->params : &n->buffers;
    if (!isp) i -= n->params.count;
    if (i < 0 || i >= s->count) return NULL;
    soma_param *p = &s->p[i];
    if (name) *name = p->name;
    if (ndim) *ndim = p->ndim;
    if (shape) memcpy(shape, p->shape, sizeof p->shape);
    if (is_param) *is_param = isp;
    return s->value + p->offset;
}

void soma_net_describe(const soma_net *n, char *buf, size_t size)
{
    size_t used = 0;
    int w = snprintf(buf, size, "net %s: input %dx%dx%d, %zu parameters\n", n->spec,
                     n->in_c, n->in_h, n->in_w, n->params.total);
    used = w > 0 ? (size_t)w : 0;
    for (int i = 0; i < n->n_layers && used < size; i++) {
        const soma_layer *l = &n->layers[i];
        size_t np = 0;
        if (l->w >= 0) np += n->params.p[l->w].n;
        if (l->b >= 0) np += n->params.p[l->b].n;
        if (l->rec >= 0) np += n->params.p[l->rec].n;
        if (l->w2 >= 0) np += n->params.p[l->w2].n + n->params.p[l->b2].n;
        const int lt[10] = { l->tm_w, l->tm_b, l->tm_k, l->ta_w, l->ta_b, l->ta_k,
                             l->mbn_w[0], l->mbn_b[0], l->mbn_w[1], l->mbn_b[1] };
        for (int k = 0; k < 10; k++)
            if (l->ltc && lt[k] >= 0) np += n->params.p[lt[k]].n;
        char extra[48] = "";
        if (l->kind == SOMA_LAYER_ACT) snprintf(extra, sizeof extra, " %s", soma_act_name(l->act));
        else if (l->kind == SOMA_LAYER_CELL) snprintf(extra, sizeof extra, " %s%s%s", l->ltc ? "ltc-" : "",
                                                      soma_neuron_name(l->cell.kind),
                                                      l->mbn_w[0] >= 0 ? "+bn" : "");
        else if (l->kind == SOMA_LAYER_CONV) snprintf(extra, sizeof extra, " k%d s%d p%d", l->k, l->stride, l->pad);
        else if (l->kind == SOMA_LAYER_DROPOUT) snprintf(extra, sizeof extra, " p=%g", l->p);
        w = snprintf(buf + used, size - used, "  %2d %-9s%-14s %4dx%3dx%-3d -> %4dx%3dx%-3d %9zu\n", i,
                     layer_names[l->kind], extra, l->in_c, l->in_h, l->in_w, l->out_c, l->out_h,
                     l->out_w, np);
        if (w < 0) break;
        used += (size_t)w;
    }
}
