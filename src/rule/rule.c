/*
 * rule.c - the registry of learning rules and the shared rule plumbing
 * (loss on class scores, NaN checks, gradient clipping).
 */
#include "rule.h"
#include "pc.h"
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* One line per rule. */
static const soma_rule_ops *const rules[] = {
    &soma__rule_bp,
    &soma__rule_bptt,
    &soma__rule_ep,
    &soma__rule_fptt,
    &soma__rule_ide,
    &soma__rule_lfp,
    &soma__rule_pc,
};
#define N_RULES ((int)(sizeof rules / sizeof *rules))

static const char *const loss_names[SOMA_LOSS_COUNT] = {
    [SOMA_LOSS_CE] = "ce", [SOMA_LOSS_MSE] = "mse", [SOMA_LOSS_BCE] = "bce",
};

const char *soma_loss_name(soma_loss_kind k)
{
    return (unsigned)k < SOMA_LOSS_COUNT ? loss_names[k] : "?";
}

soma_status soma_loss_from_name(soma_loss_kind *out, const char *name)
{
    for (int i = 0; i < SOMA_LOSS_COUNT; i++)
        if (!strcmp(name, loss_names[i])) { *out = (soma_loss_kind)i; return SOMA_OK; }
    return soma__fail(SOMA_ERR_ARG, "unknown loss '%s' (valid: ce, mse, bce)", name);
}

static const char *const reduce_names[SOMA_REDUCE_COUNT] = {
    [SOMA_REDUCE_MEAN] = "mean", [SOMA_REDUCE_LAST] = "last", [SOMA_REDUCE_SUM] = "sum",
    [SOMA_REDUCE_EACH] = "each",
};

const char *soma_reduce_name(soma_reduce r)
{
    return (unsigned)r < SOMA_REDUCE_COUNT ? reduce_names[r] : "?";
}

soma_status soma_reduce_from_name(soma_reduce *out, const char *name)
{
    for (int i = 0; i < SOMA_REDUCE_COUNT; i++)
        if (!strcmp(name, reduce_names[i])) { *out = (soma_reduce)i; return SOMA_OK; }
    return soma__fail(SOMA_ERR_ARG, "unknown reduce '%s' (valid: mean, last, sum, each)", name);
}

int soma_rule_count(void) { return N_RULES; }
const char *soma_rule_name_at(int i) { return i >= 0 && i < N_RULES ? rules[i]->name : NULL; }
const char *soma_rule_about_at(int i) { return i >= 0 && i < N_RULES ? rules[i]->about : NULL; }

void soma_rule_config_default(soma_rule_config *c)
{
    memset(c, 0, sizeof *c);
    soma_optim_config_default(&c->optim, SOMA_OPTIM_SGD);
    c->loss = SOMA_LOSS_CE;
    c->T = 25;
    c->encoding = SOMA_ENC_DIRECT;
    c->gain = 1.0f;
    c->reduce = SOMA_REDUCE_MEAN;
    c->fptt_alpha = 0.1f;
    c->fptt_beta = 0.5f;
    c->fptt_k = 1;
    c->lfp_eps = 1e-6f;
    c->lfp_alpha = 2.0f;
    c->lfp_beta = 1.0f;
    soma_ep_config_default(c);
    soma_pc_config_default(c);
    soma_ide_config_default(c);
}

soma_status soma_rule_new(soma_rule **out, const char *name, soma_net *net,
                          const soma_rule_config *cfg, int max_batch)
{
    *out = NULL;
    const soma_rule_ops *ops = NULL;
    for (int i = 0; i < N_RULES; i++)
        if (!strcmp(rules[i]->name, name)) ops = rules[i];
    if (!ops) {
        char list[256] = "";
        for (int i = 0; i < N_RULES; i++) {
            strncat(list, rules[i]->name, sizeof list - strlen(list) - 1);
            if (i + 1 < N_RULES) strncat(list, ", ", sizeof list - strlen(list) - 1);
        }
        return soma__fail(SOMA_ERR_ARG, "unknown rule '%s' (valid: %s)", name, list);
    }
    if (max_batch <= 0) return soma__fail(SOMA_ERR_ARG, "batch must be > 0, got %d", max_batch);
    if (cfg->clip_norm < 0) return soma__fail(SOMA_ERR_ARG, "clip norm must be >= 0, got %g", cfg->clip_norm);
    if ((unsigned)cfg->loss >= SOMA_LOSS_COUNT) return soma__fail(SOMA_ERR_ARG, "unknown loss %d", (int)cfg->loss);
    soma_rule *r = soma__calloc(1, sizeof *r);
    if (!r) return SOMA_ERR_NOMEM;
    r->ops = ops;
    r->net = net;
    r->cfg = *cfg;
    r->max_batch = max_batch;
    /* init first: a rule may add tensors of its own to the net, which the
     * optimizer must then cover */
    soma_status st = SOMA_OK;
    if (!soma_net_is_spiking(net)) st = soma_net_prepare(net, max_batch);
    if (!st) st = ops->init(r, max_batch);
    if (!st) st = soma_optim_new(&r->optim, &cfg->optim, soma_net_param_floats(net));
    /* MQ keeps one scalar per weight matrix: tell it where the matrices are */
    if (!st && cfg->optim.kind == SOMA_OPTIM_MQ) st = soma__rule_layer_groups(net, r->optim);
    if (st) { soma_rule_free(r); return st; }
    *out = r;
    return SOMA_OK;
}

void soma_rule_free(soma_rule *r)
{
    if (!r) return;
    if (r->ops->release) r->ops->release(r);
    soma_optim_free(r->optim);
    soma__free(r);
}

const char *soma_rule_name(const soma_rule *r) { return r->ops->name; }
soma_optim *soma_rule_optim(soma_rule *r) { return r->optim; }

static soma_status check_batch(const soma_rule *r, const soma_batch *b)
{
    if (b->n <= 0 || b->n > r->max_batch)
        return soma__fail(SOMA_ERR_ARG, "batch of %d samples outside 1..%d", b->n, r->max_batch);
    int want = r->cfg.sample_size ? r->cfg.sample_size : soma_net_inputs(r->net);
    if (b->c * b->h * b->w != want)
        return soma__fail(SOMA_ERR_SHAPE, "batch samples are %dx%dx%d = %d values, net '%s' expects %d",
                          b->c, b->h, b->w, b->c * b->h * b->w, soma_net_spec(r->net), want);
    int C = soma_net_outputs(r->net);
    for (int i = 0; !b->target && i < b->n; i++)
        if (b->y[i] < 0 || b->y[i] >= C)
            return soma__fail(SOMA_ERR_ARG, "label %d of sample %d outside 0..%d (net has %d outputs)",
                              b->y[i], i, C - 1, C);
    return SOMA_OK;
}

soma_status soma_rule_train_batch(soma_rule *r, const soma_batch *b, float lr, soma_rng *rng,
                                  soma_step_stats *st)
{
    soma_status s = check_batch(r, b);
    if (s) return s;
    if (!(lr > 0) || !isfinite(lr)) return soma__fail(SOMA_ERR_ARG, "learning rate must be > 0, got %g", lr);
    return r->ops->train_batch(r, b, lr, rng, st);
}

soma_status soma_rule_predict(soma_rule *r, const soma_batch *b, const float **scores,
                              soma_step_stats *st)
{
    soma_status s = check_batch(r, b);
    if (s) return s;
    return r->ops->predict(r, b, scores, st);
}

void soma_rule_epoch_end(soma_rule *r)
{
    if (r && r->ops->epoch_end) r->ops->epoch_end(r);
}

void soma_rule_plan(const soma_rule *r, soma_mem_plan *p)
{
    memset(p, 0, sizeof *p);
    const soma_net *n = r->net;
    p->params = n->params.total * sizeof(float);
    p->grads = n->params.total * sizeof(float);
    p->buffers = n->buffers.total * sizeof(float);
    p->optim = soma_optim_size(r->optim);
    if (r->ops->plan) r->ops->plan(r, p);
    p->total = p->params + p->grads + p->buffers + p->optim + p->activations + p->workspace;
}

/* ---- shared plumbing ----------------------------------------------------- */

int soma__all_finite(const float *x, size_t n)
{
    /* A float is NaN or Inf exactly when its exponent bits are all ones.
     * Integer OR-reduction over the bit patterns: exact without
     * -ffast-math, and `omp simd` makes it a vector loop. */
    uint32_t bad = 0;
#pragma omp simd reduction(|:bad)
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], sizeof u);   /* the bits, without breaking aliasing rules */
        bad |= (u & 0x7f800000u) + 0x00800000u;
    }
    /* (e & mask) + 2^23 carries into bit 31 only when all exponent bits are set */
    return !(bad & 0x80000000u);
}

void soma__clip_norm(float *g, size_t n, float max_norm)
{
    /* sum of squares in double; `simd` lets it use several partial sums
     * (a fixed order for a given build, so runs stay reproducible) */
    double ss = 0;
#pragma omp simd reduction(+:ss)
    for (size_t i = 0; i < n; i++) ss += (double)g[i] * g[i];
    soma__clip_scale(g, n, max_norm, ss);
}

void soma__clip_scale(float *g, size_t n, float max_norm, double ss)
{
    double norm = sqrt(ss);
    /* torch: clip_coef = max_norm / (total_norm + 1e-6), applied if < 1 */
    double coef = max_norm / (norm + 1e-6);
    if (coef < 1.0)
        for (size_t i = 0; i < n; i++) g[i] = (float)(g[i] * coef);
}

const float *soma__encode_input(const soma_encoder *enc, float *xs, const soma_batch *b, int t,
                                soma_rng *rng)
{
    if (!xs) return b->x;
    soma_encode_step(enc, xs, b->x, b->n, t, rng);
    return xs;
}

void soma__reduce_add(const soma_rule_config *c, float *scores, const float *out, int t, size_t bc)
{
    if (c->reduce == SOMA_REDUCE_LAST) {
        if (t == c->T - 1) memcpy(scores, out, bc * sizeof(float));
    } else {
        float w = c->reduce == SOMA_REDUCE_SUM ? 1.0f : 1.0f / (float)c->T;
        for (size_t i = 0; i < bc; i++) scores[i] += w * out[i];
    }
}

soma_status soma__loss_and_grad(float *dscores, float *probs, const float *scores,
                                const int32_t *labels, int B, int C, soma_loss_kind kind,
                                soma_step_stats *st)
{
    return soma__loss_and_grad_t(dscores, probs, scores, labels, NULL, B, C, kind, st);
}

soma_status soma__loss_and_grad_t(float *dscores, float *probs, const float *scores,
                                  const int32_t *labels, const float *target, int B, int C,
                                  soma_loss_kind kind, soma_step_stats *st)
{
    float loss;
    if (target) {
        /* regression: BCE (sum over the outputs) or else MSE against the targets */
        if (kind == SOMA_LOSS_BCE) loss = (float)C * soma_bce_logits_forward(scores, target, B, C);
        else loss = soma_mse_forward(scores, target, B, C);
        if (dscores) {
            memset(dscores, 0, (size_t)B * C * sizeof(float));
            if (kind == SOMA_LOSS_BCE) soma_bce_logits_backward(dscores, scores, target, B, C, (float)C);
            else soma_mse_backward(dscores, scores, target, B, C, 1.0f);
        }
        if (!isfinite(loss)) return soma__fail(SOMA_ERR_NUMERIC, "loss is %s", isnan(loss) ? "NaN" : "Inf");
        if (st) { st->loss += (double)loss * B; st->n += B; }
        return SOMA_OK;
    }
    if (kind == SOMA_LOSS_BCE)
        return soma__fail(SOMA_ERR_ARG, "loss bce needs targets (an autoencoder), not class labels");
    if (kind == SOMA_LOSS_CE) {
        loss = soma_ce_forward(probs, scores, labels, B, C);
        if (dscores) {
            memset(dscores, 0, (size_t)B * C * sizeof(float));
            soma_ce_backward(dscores, probs, labels, B, C, 1.0f);
        }
    } else {
        /* MSE against one-hot targets, built in probs as scratch */
        memset(probs, 0, (size_t)B * C * sizeof(float));
        for (int i = 0; i < B; i++) probs[(size_t)i * C + labels[i]] = 1.0f;
        loss = soma_mse_forward(scores, probs, B, C);
        if (dscores) {
            memset(dscores, 0, (size_t)B * C * sizeof(float));
            soma_mse_backward(dscores, scores, probs, B, C, 1.0f);
        }
    }
    if (!isfinite(loss)) return soma__fail(SOMA_ERR_NUMERIC, "loss is %s", isnan(loss) ? "NaN" : "Inf");
    if (st) {
        st->loss += (double)loss * B;
        st->n += B;
        for (int i = 0; i < B; i++) {
            const float *s = scores + (size_t)i * C;
            int best = 0;
            for (int c = 1; c < C; c++) if (s[c] > s[best]) best = c;
            st->correct += best == labels[i];
        }
    }
    return SOMA_OK;
}

/* ---- rule options by name ------------------------------------------------
 *
 * One table of the rules' own knobs, used three ways: CLI options
 * (--ep-beta 0.5), config-file keys (ep-beta = 0.5), and the checkpoint
 * metadata that lets `soma eval` rebuild the rule exactly. */

typedef enum opt_type {
    OPT_FLOAT, OPT_INT, OPT_BOOL, OPT_LRP, OPT_REWARD, OPT_EP_VARIANT, OPT_EP_FB,
    OPT_PC_ORDER, OPT_PC_CLAMP, OPT_FLOAT_LIST, OPT_LFP_COMPOSITE
} opt_type;

typedef struct rule_opt {
    const char *key;
    opt_type    type;
    size_t      off;
    const char *help;
} rule_opt;

#define RO(k, t, f, h) { k, t, offsetof(soma_rule_config, f), h }
static const rule_opt rule_opts[] = {
    RO("fptt-alpha", OPT_FLOAT, fptt_alpha, "fptt: regulariser strength alpha (0.1)"),
    RO("fptt-beta", OPT_FLOAT, fptt_beta, "fptt: running-average rate beta (0.5)"),
    RO("fptt-k", OPT_INT, fptt_k, "fptt: steps per update window K (1)"),
    RO("fptt-aux", OPT_BOOL, fptt_aux, "fptt: auxiliary oracle-divergence loss, classification (0)"),
    RO("lfp-rule", OPT_LFP_COMPOSITE, lfp_dense, "lfp: epsilon|zero|alphabeta|zplusminus, or dense=R,conv=R,pool=R"),
    RO("lfp-eps", OPT_FLOAT, lfp_eps, "lfp: stabiliser epsilon (1e-6)"),
    RO("lfp-alpha", OPT_FLOAT, lfp_alpha, "lfp: alpha of alphabeta (2)"),
    RO("lfp-beta", OPT_FLOAT, lfp_beta, "lfp: beta of alphabeta (1)"),
    RO("lfp-reward", OPT_REWARD, lfp_reward, "lfp: softmax|sigmoid|pm1 (softmax)"),
    RO("lfp-norm", OPT_BOOL, lfp_norm, "lfp: normalise the feedback between layers (0)"),
    RO("lfp-agc", OPT_FLOAT, lfp_agc, "lfp: adaptive clipping lambda, 0 = off (0)"),
    RO("lfp-snn-denom", OPT_INT, lfp_snn_denom, "lfp, spiking nets: 0 |v_t|, 1 |u_t-1|+|v_t-u_t-1| (0)"),
    RO("ep-variant", OPT_EP_VARIANT, ep_variant, "ep: general|classic (general)"),
    RO("ep-beta", OPT_FLOAT, ep_beta, "ep: nudging strength (1)"),
    RO("ep-free", OPT_INT, ep_free_steps, "ep: free-phase Euler steps (100)"),
    RO("ep-nudge", OPT_INT, ep_nudge_steps, "ep: nudged-phase Euler steps (20)"),
    RO("ep-eval", OPT_INT, ep_eval_steps, "ep: free steps at inference, 0 = ep-free (0)"),
    RO("ep-eps", OPT_FLOAT, ep_eps, "ep: Euler step size (0.5)"),
    RO("ep-symmetric", OPT_BOOL, ep_symmetric, "ep: symmetric nudging +-beta (0)"),
    RO("ep-random-sign", OPT_BOOL, ep_random_sign, "ep: random sign of beta per batch (0)"),
    RO("ep-particles", OPT_BOOL, ep_particles, "ep: persistent free states per sample (0)"),
    RO("ep-fb", OPT_EP_FB, ep_fb_init, "ep: feedback init random|transpose (random)"),
    RO("ep-lrs", OPT_FLOAT_LIST, ep_lrs, "ep: per-layer rate factors a,b,... (all 1)"),
    RO("ep-tol", OPT_FLOAT, ep_tol, "ep: free-phase residual tolerance, 0 = log only (0)"),
    RO("ep-stop", OPT_FLOAT, ep_stop, "ep: end a phase once RMS |mu| < this, 0 = fixed steps (0)"),
    RO("pc-T", OPT_INT, pc_T, "pc: inference iterations (3)"),
    RO("pc-gamma", OPT_FLOAT, pc_gamma, "pc: activity step size (0.05)"),
    RO("pc-beta", OPT_FLOAT, pc_beta, "pc: soft clamp strength (100)"),
    RO("pc-order", OPT_PC_ORDER, pc_order, "pc: sequential|simultaneous|incremental (sequential)"),
    RO("pc-clamp", OPT_PC_CLAMP, pc_clamp, "pc: soft|hard (soft)"),
    RO("pc-autoencoder", OPT_BOOL, pc_autoencoder, "pc: the target is the input (0)"),
    RO("ide-vth", OPT_FLOAT, ide_vth, "ide: firing threshold V_th (2)"),
    RO("ide-leak", OPT_FLOAT, ide_leak, "ide: LIF leak lambda in (0,1), 1 = IF (1)"),
    RO("ide-iter", OPT_BOOL, ide_iter, "ide: damped fixed-point solver instead of Broyden (0)"),
    RO("ide-max-iter", OPT_INT, ide_max_iter, "ide: implicit solver iterations (30)"),
    RO("ide-tol", OPT_FLOAT, ide_tol, "ide: solver relative residual tolerance (1e-6)"),
    RO("ide-damp", OPT_FLOAT, ide_damp, "ide: fixed-point damping in (0,1] (0.5)"),
    RO("ide-strict", OPT_BOOL, ide_strict, "ide: fail a batch whose solve ends above ide-tol (0)"),
    RO("ide-sn", OPT_BOOL, ide_sn, "ide: spectral-norm reparameterisation of W (1)"),
    RO("ide-sn-c", OPT_FLOAT, ide_sn_c, "ide: clip c of the spectral-norm scale alpha (1)"),
    RO("ide-sn-kernel", OPT_BOOL, ide_sn_kernel, "ide: conv |W|_2 of the reshaped kernel, as the authors (0)"),
    RO("ide-fb-k", OPT_INT, ide_fb_k, "ide: conv feedback kernel size, odd, 0 = F's (0)"),
    RO("ide-dropout", OPT_FLOAT, ide_dropout, "ide: variational dropout rate in [0,1), one mask a batch (0)"),
};
#undef RO
#define N_RULE_OPTS ((int)(sizeof rule_opts / sizeof *rule_opts))

int soma_rule_option_count(void) { return N_RULE_OPTS; }
const char *soma_rule_option_key(int i) { return i >= 0 && i < N_RULE_OPTS ? rule_opts[i].key : NULL; }
const char *soma_rule_option_help(int i) { return i >= 0 && i < N_RULE_OPTS ? rule_opts[i].help : NULL; }

soma_status soma_rule_option_set(soma_rule_config *c, const char *key, const char *value)
{
    const rule_opt *o = NULL;
    for (int i = 0; i < N_RULE_OPTS; i++)
        if (!strcmp(rule_opts[i].key, key)) o = &rule_opts[i];
    if (!o) return soma__fail(SOMA_ERR_ARG, "unknown rule option '%s'", key);
    void *f = (char *)c + o->off;
    char *end;
    switch (o->type) {
    case OPT_FLOAT: {
        float v = strtof(value, &end);
        if (!*value || *end || !isfinite(v)) return soma__fail(SOMA_ERR_ARG, "--%s: '%s' is not a finite number", key, value);
        *(float *)f = v;
        return SOMA_OK;
    }
    case OPT_INT:
    case OPT_BOOL: {
        long v = strtol(value, &end, 10);
        if (!*value || *end || v < INT32_MIN || v > INT32_MAX) return soma__fail(SOMA_ERR_ARG, "--%s: '%s' is not an integer", key, value);
        if (o->type == OPT_BOOL && v != 0 && v != 1) return soma__fail(SOMA_ERR_ARG, "--%s: must be 0 or 1, got %s", key, value);
        *(int *)f = (int)v;
        return SOMA_OK;
    }
    case OPT_LFP_COMPOSITE: return soma_lfp_composite_from_name(c, value);
    case OPT_REWARD: return soma_lfp_reward_from_name(&c->lfp_reward, value);
    case OPT_EP_VARIANT: return soma_ep_variant_from_name(&c->ep_variant, value);
    case OPT_EP_FB: return soma_ep_fb_init_from_name(&c->ep_fb_init, value);
    case OPT_PC_ORDER: return soma_pc_order_from_name(&c->pc_order, value);
    case OPT_PC_CLAMP: return soma_pc_clamp_from_name(&c->pc_clamp, value);
    case OPT_LRP: return soma_lrp_rule_from_name(&c->lfp_dense, value);
    case OPT_FLOAT_LIST: {
        int n = 0;
        const char *p = value;
        while (*p) {
            if (n == SOMA_EP_MAX_LAYERS) return soma__fail(SOMA_ERR_ARG, "--%s: more than %d values", key, SOMA_EP_MAX_LAYERS);
            float v = strtof(p, &end);
            if (end == p || !isfinite(v) || (*end && *end != ',')) return soma__fail(SOMA_ERR_ARG, "--%s: '%s' is not a list of numbers", key, value);
            c->ep_lrs[n++] = v;
            p = *end ? end + 1 : end;
        }
        c->ep_n_lrs = n;
        return SOMA_OK;
    }
    }
    return soma__fail(SOMA_ERR_ARG, "--%s: unsupported", key);
}

/* "key=value key=value ..." of every option, in a form option_set reads back. */
void soma_rule_options_format(const soma_rule_config *c, char *buf, size_t size)
{
    size_t used = 0;
    buf[0] = 0;
    for (int i = 0; i < N_RULE_OPTS && used < size; i++) {
        const rule_opt *o = &rule_opts[i];
        const void *f = (const char *)c + o->off;
        char v[160];
        switch (o->type) {
        case OPT_FLOAT: snprintf(v, sizeof v, "%.9g", *(const float *)f); break;
        case OPT_INT: case OPT_BOOL: snprintf(v, sizeof v, "%d", *(const int *)f); break;
        case OPT_LFP_COMPOSITE:
            snprintf(v, sizeof v, "dense=%s,conv=%s,pool=%s", soma_lrp_rule_name(c->lfp_dense),
                     soma_lrp_rule_name(c->lfp_conv), soma_lrp_rule_name(c->lfp_pool));
            break;
        case OPT_REWARD: snprintf(v, sizeof v, "%s", soma_lfp_reward_name(c->lfp_reward)); break;
        case OPT_EP_VARIANT: snprintf(v, sizeof v, "%s", soma_ep_variant_name(c->ep_variant)); break;
        case OPT_EP_FB: snprintf(v, sizeof v, "%s", soma_ep_fb_init_name(c->ep_fb_init)); break;
        case OPT_PC_ORDER: snprintf(v, sizeof v, "%s", soma_pc_order_name(c->pc_order)); break;
        case OPT_PC_CLAMP: snprintf(v, sizeof v, "%s", soma_pc_clamp_name(c->pc_clamp)); break;
        case OPT_LRP: snprintf(v, sizeof v, "%s", soma_lrp_rule_name(c->lfp_dense)); break;
        case OPT_FLOAT_LIST: {
            int o2 = 0;
            v[0] = 0;
            for (int k = 0; k < c->ep_n_lrs && o2 < (int)sizeof v; k++)
                o2 += snprintf(v + o2, sizeof v - o2, "%s%.9g", k ? "," : "", c->ep_lrs[k]);
            if (!c->ep_n_lrs) continue; /* empty list: the default */
            break;
        }
        }
        int w = snprintf(buf + used, size - used, "%s%s=%s", used ? " " : "", o->key, v);
        if (w < 0) break;
        used += (size_t)w;
    }
}

soma_status soma_rule_options_parse(soma_rule_config *c, const char *s)
{
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", s);
    for (char *tok = strtok(buf, " "); tok; tok = strtok(NULL, " ")) {
        char *eq = strchr(tok, '=');
        if (!eq) return soma__fail(SOMA_ERR_FORMAT, "rule options: '%s' is not key=value", tok);
        *eq = 0;
        soma_status st = soma_rule_option_set(c, tok, eq + 1);
        if (st) return st;
    }
    return SOMA_OK;
}
