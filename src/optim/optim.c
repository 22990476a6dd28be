/*
 * optim.c - the optimizer registry and everything the kinds share:
 * defaults, validation, state allocation, the step counter, dispatch.
 *
 * The per-kind update rules live in sgd.c, adam.c, adamax.c; each fills one
 * soma__optim_impl (optim.h).  Adding an optimizer is one new file plus one
 * line in `registry` below (and its enum value in soma.h).
 */
#include "optim.h"
#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const soma__optim_impl *const registry[SOMA_OPTIM_COUNT] = {
    [SOMA_OPTIM_SGD] = &soma__optim_sgd,
    [SOMA_OPTIM_ADAM] = &soma__optim_adam,
    [SOMA_OPTIM_ADAMAX] = &soma__optim_adamax,
    [SOMA_OPTIM_MQ] = &soma__optim_mq,
};

static const soma__optim_impl *impl_of(soma_optim_kind k)
{
    if ((int)k < 0 || (int)k >= SOMA_OPTIM_COUNT) return NULL;
    return registry[k];
}

/* "sgd, adam, adamax": the list every unknown-name message shows. */
static void valid_names(char *buf, size_t cap)
{
    size_t used = 0;
    buf[0] = 0;
    for (int k = 0; k < SOMA_OPTIM_COUNT && used < cap; k++) {
        int w = snprintf(buf + used, cap - used, "%s%s", k ? ", " : "", registry[k]->name);
        if (w < 0) break;
        used += (size_t)w;
    }
}

void soma_optim_config_default(soma_optim_config *c, soma_optim_kind kind)
{
    if (!c) return;
    /* Fields a kind does not use stay 0: soma_optim_new rejects them when
     * set, so "--momentum 0.9" given to Adam fails instead of being ignored. */
    memset(c, 0, sizeof *c);
    c->kind = kind;
    c->lr = 1e-3f;
    const soma__optim_impl *im = impl_of(kind);
    if (im) im->defaults(c);
}

const char *soma_optim_name(soma_optim_kind k)
{
    const soma__optim_impl *im = impl_of(k);
    return im ? im->name : "unknown";
}

soma_status soma_optim_from_name(soma_optim_kind *out, const char *name)
{
    char names[128];
    if (!out) return soma__fail(SOMA_ERR_ARG, "soma_optim_from_name: out is NULL");
    for (int k = 0; name && k < SOMA_OPTIM_COUNT; k++)
        if (strcmp(name, registry[k]->name) == 0) { *out = (soma_optim_kind)k; return SOMA_OK; }
    valid_names(names, sizeof names);
    return soma__fail(SOMA_ERR_ARG, "unknown optimizer '%s' (valid: %s)",
                      name ? name : "(null)", names);
}

double soma__optim_decimal(float x)
{
    char buf[32];
    /* 9 significant digits always round-trip a float, so the loop ends there. */
    for (int digits = 1; digits < 9; digits++) {
        snprintf(buf, sizeof buf, "%.*g", digits, (double)x);
        double d = strtod(buf, NULL);
        if ((float)d == x) return d;
    }
    return (double)x;
}

soma_status soma__optim_check_betas(const soma_optim_config *c)
{
    const char *k = soma_optim_name(c->kind);
    if (!(c->beta1 >= 0.0f && c->beta1 < 1.0f))
        return soma__fail(SOMA_ERR_ARG, "%s: beta1 must be in [0, 1), got %g", k, c->beta1);
    if (!(c->beta2 >= 0.0f && c->beta2 < 1.0f))
        return soma__fail(SOMA_ERR_ARG, "%s: beta2 must be in [0, 1), got %g", k, c->beta2);
    if (!(c->eps > 0.0f) || isinf(c->eps))
        return soma__fail(SOMA_ERR_ARG, "%s: eps must be > 0 and finite, got %g", k, c->eps);
    /* SGD's fields have no meaning here; refusing them catches a mistyped optimizer. */
    if (c->momentum != 0.0f)
        return soma__fail(SOMA_ERR_ARG, "%s: momentum is an sgd option (%s uses beta1), "
                          "must be 0, got %g", k, k, c->momentum);
    if (c->dampening != 0.0f)
        return soma__fail(SOMA_ERR_ARG, "%s: dampening is an sgd option, must be 0, got %g",
                          k, c->dampening);
    if (c->nesterov != 0)
        return soma__fail(SOMA_ERR_ARG, "%s: nesterov is an sgd option, must be 0, got %d",
                          k, c->nesterov);
    return SOMA_OK;
}

static soma_status check_config(const soma_optim_config *c)
{
    const soma__optim_impl *im = impl_of(c->kind);
    if (!im) {
        char names[128];
        valid_names(names, sizeof names);
        return soma__fail(SOMA_ERR_ARG, "optimizer kind %d is not one of: %s",
                          (int)c->kind, names);
    }
    if (!(c->lr > 0.0f) || isinf(c->lr))
        return soma__fail(SOMA_ERR_ARG, "%s: lr must be > 0 and finite, got %g", im->name, c->lr);
    if (!(c->weight_decay >= 0.0f) || isinf(c->weight_decay))
        return soma__fail(SOMA_ERR_ARG, "%s: weight_decay must be >= 0 and finite, got %g",
                          im->name, c->weight_decay);
    if (im != &soma__optim_mq && (c->lr_min != 0.0f || c->rho_max != 0.0f))
        return soma__fail(SOMA_ERR_ARG, "%s: lr_min/rho_max are mq options, must be 0, got %g/%g",
                          im->name, c->lr_min, c->rho_max);
    return im->check(c);
}

soma_status soma_optim_new(soma_optim **out, const soma_optim_config *cfg, size_t n)
{
    if (!out) return soma__fail(SOMA_ERR_ARG, "soma_optim_new: out is NULL");
    *out = NULL;
    if (!cfg) return soma__fail(SOMA_ERR_ARG, "soma_optim_new: cfg is NULL");
    if (n == 0) return soma__fail(SOMA_ERR_ARG, "soma_optim_new: n (parameters) must be > 0");
    soma_status st = check_config(cfg);
    if (st != SOMA_OK) return st;

    const soma__optim_impl *im = impl_of(cfg->kind);
    int ns = im->state_count(cfg);
    assert(ns >= 0 && ns <= SOMA__OPTIM_MAX_STATE);
    /* Each array starts on a 64-byte line so vector loads never straddle two arrays. */
    size_t stride = (n + 15) / 16 * 16;
    if (stride < n || (ns && stride > SIZE_MAX / sizeof(float) / (size_t)ns))
        return soma__fail(SOMA_ERR_ARG, "soma_optim_new: n = %zu is too large", n);

    soma_optim *o = soma__calloc(1, sizeof *o);
    if (!o) return SOMA_ERR_NOMEM;
    o->cfg = *cfg;
    o->impl = im;
    o->n = n;
    o->n_state = ns;
    o->beta1 = soma__optim_decimal(cfg->beta1);
    o->beta2 = soma__optim_decimal(cfg->beta2);
    o->dampening = soma__optim_decimal(cfg->dampening);
    if (ns) {
        size_t bytes = (size_t)ns * stride * sizeof(float);
        o->block = soma__malloc_aligned(bytes);
        if (!o->block) { soma__free(o); return SOMA_ERR_NOMEM; }
        memset(o->block, 0, bytes);
        for (int i = 0; i < ns; i++) o->state[i] = o->block + (size_t)i * stride;
    }
    *out = o;
    return SOMA_OK;
}

void soma_optim_free(soma_optim *o)
{
    if (!o) return;
    soma__free_aligned(o->block);
    soma__free(o->g_off);
    soma__free(o->g_len);
    soma__free(o->g_state);
    soma__free(o);
}

void soma_optim_step(soma_optim *o, float *w, const float *g, float lr)
{
    assert(o && w && g);
    if (o->impl->group_step) {
        if (!o->n_groups) {
            soma__fail(SOMA_ERR_ARG, "%s needs parameter groups (soma_optim_set_groups); "
                       "step refused", o->impl->name);
            return;
        }
        o->t++;
        o->impl->group_step(o, w, g, lr);
        return;
    }
    o->t++;   /* torch counts the step before using it in bias corrections */
    size_t n = o->n;
    if (n < SOMA__OPTIM_PAR_MIN) { o->impl->step(o, w, g, lr, 0, n); return; }
#pragma omp parallel
    {
        size_t lo, hi;
        soma__thread_range(n, &lo, &hi);
        if (hi > lo) o->impl->step(o, w + lo, g + lo, lr, lo, hi - lo);
    }
}

int soma_optim_state_count(const soma_optim *o) { return o ? o->n_state : 0; }

float *soma_optim_state(soma_optim *o, int i, const char **name)
{
    if (!o || i < 0 || i >= o->n_state) {
        if (name) *name = NULL;
        return NULL;
    }
    if (name) *name = o->impl->state_names[i];
    return o->state[i];
}

int64_t soma_optim_get_step(const soma_optim *o) { return o ? o->t : 0; }

void soma_optim_set_step(soma_optim *o, int64_t t)
{
    assert(o && t >= 0);
    o->t = t;
}

size_t soma_optim_size(const soma_optim *o)
{
    return o ? (size_t)o->n_state * o->n * sizeof(float) +
               (size_t)o->n_groups * o->impl->group_state * sizeof(float) : 0;
}

soma_status soma_optim_set_groups(soma_optim *o, int count, const size_t *offsets,
                                  const size_t *sizes)
{
    if (!o) return soma__fail(SOMA_ERR_ARG, "soma_optim_set_groups: optimizer is NULL");
    if (count <= 0 || !offsets || !sizes)
        return soma__fail(SOMA_ERR_ARG, "soma_optim_set_groups: need count > 0 (got %d) and "
                          "offsets and sizes", count);
    for (int i = 0; i < count; i++) {
        if (sizes[i] == 0 || offsets[i] > o->n || sizes[i] > o->n - offsets[i])
            return soma__fail(SOMA_ERR_ARG, "soma_optim_set_groups: group %d [%zu, +%zu) is empty "
                              "or outside the %zu parameters", i, offsets[i], sizes[i], o->n);
        for (int j = 0; j < i; j++)
            if (offsets[i] < offsets[j] + sizes[j] && offsets[j] < offsets[i] + sizes[i])
                return soma__fail(SOMA_ERR_ARG, "soma_optim_set_groups: groups %d and %d overlap", j, i);
    }
    int per = o->impl->group_state;
    size_t *off = soma__malloc((size_t)count * sizeof *off);
    size_t *len = soma__malloc((size_t)count * sizeof *len);
    float *gs = per ? soma__malloc((size_t)count * per * sizeof *gs) : NULL;
    if (!off || !len || (per && !gs)) {
        soma__free(off); soma__free(len); soma__free(gs);
        return SOMA_ERR_NOMEM;
    }
    memcpy(off, offsets, (size_t)count * sizeof *off);
    memcpy(len, sizes, (size_t)count * sizeof *len);
    /* MQ: v starts at the configured learning rate (the authors' IL.py) */
    for (int i = 0; i < count * per; i++) gs[i] = o->cfg.lr;
    soma__free(o->g_off); soma__free(o->g_len); soma__free(o->g_state);
    o->g_off = off;
    o->g_len = len;
    o->g_state = gs;
    o->n_groups = count;
    return SOMA_OK;
}

int soma_optim_group_count(const soma_optim *o) { return o ? o->n_groups : 0; }

float *soma_optim_group_state(soma_optim *o, const char **name)
{
    if (!o || !o->impl->group_state || !o->g_state) {
        if (name) *name = NULL;
        return NULL;
    }
    if (name) *name = o->impl->group_state_name;
    return o->g_state;
}

void soma__optim_begin(soma_optim *o) { o->t++; }

void soma__optim_range(soma_optim *o, float *w, const float *g, float lr, size_t off, size_t n)
{
    if (o->impl->group_step) { /* a per-matrix step cannot be split into rows */
        soma__fail(SOMA_ERR_UNSUPPORTED, "%s cannot update part of a group", o->impl->name);
        return;
    }
    o->impl->step(o, w + off, g, lr, off, n);
}
