/*
 * pc.c - predictive coding trained by inference learning (IL): standard
 * (simultaneous) IL, sequential IL (SeqIL) and incremental PC (iPC), after
 * Alonso, Krichmar & Neftci (2023), exactly as their code does it
 * (shared/notes/pc.md section 2; docs/pc.md).
 *
 * The net is a chain of L weight layers (dense or conv), each preceded by
 * at most one activation and any flattens.  State h_l (l = 1..L) is the
 * output of the l-th weight layer, a PRE-activation; block_l maps h_{l-1}
 * (h_0 = x, clamped) to the prediction of h_l:
 *
 *   p_l = block_l(h_{l-1}) = W_{l-1} f(h_{l-1}) + b_{l-1}   (no f on x)
 *   e_l = h_l - p_l (hidden),   e_L = h_L - softmax(p_L)   (sigmoid: autoencoder)
 *   F   = mean_batch [ sum_{l<L} 1/2 |e_l|^2 - sum h_L log softmax(p_L) ]
 *   soft clamp:  h_L = (softmax(p_L) + beta y) / (1 + beta), recomputed after
 *                every iteration;  hard clamp: h_L = y
 *   iteration t: h_l += gamma / (1 + t) * ( VJP(block_{l+1}, h_l; e_{l+1}) - e_l )
 *                (dense block: f'(h_l) . (e_{l+1} W_l); conv: the core's conv backward)
 *     simultaneous: every e from the snapshot at the iteration's start;
 *     sequential:   l = L-1 .. 1, e_{l+1} recomputed from the just-updated h_{l+1};
 *     incremental:  simultaneous, plus one optimizer step per iteration on the
 *                   weight gradient of the same snapshot.
 *   after inference: dW_{l-1} = -e_l^T f(h_{l-1}) / B, db = -mean e_l (the
 *   gradient of F; the optimizer subtracts it), then one optimizer step.
 *
 * Matrix multiplies per training batch (counted, tests/test_pc.c):
 *   feedforward L; per iteration L-1 input VJPs and L-1 new predictions
 *   (p_1 = W_0 x stays fixed while the weights do); weight gradients L:
 *   IL/SeqIL 2L + T(2L-2);  iPC L + T(3L-1) (p_1 is redone: W_0 moved).
 * Prediction at test time is a plain feedforward pass (soma_net_forward).
 *
 * Memory: per weight layer h, p, e (and f(h_{l-1}) when there is an
 * activation), (max_batch, size) each; scratch of two of the largest.
 */
#include "pc.h"
#include <math.h>
#include <string.h>

typedef struct pc_unit {
    int layer;          /* index of the dense/conv layer in net->layers */
    int has_act;        /* block applies f = act to h_{l-1} first */
    soma_act act;
    size_t in, out;     /* sizes of h_{l-1} and h_l per sample */
    float *h, *p, *e;   /* (B, out) */
    float *a;           /* (B, in): f(h_{l-1}) (owned), or h_{l-1} / x itself */
    int own_a;
} pc_unit;

typedef struct pc_state {
    int L;
    pc_unit *u;         /* u[1..L]; u[0] unused */
    float *s;           /* (B, C) softmax / sigmoid of p_L */
    float *y;           /* (B, C) target: one-hot or the input */
    float *td, *fd;     /* scratch (B, max size) */
    float *probs;       /* (B, C) for the loss */
    const float *x;     /* current batch input (caller-owned) */
    int B, C;
    int64_t matmuls;
    size_t bytes;
} pc_state;

/* ---- names and defaults --------------------------------------------------- */

static const char *const order_names[SOMA_PC_ORDER_COUNT] = {
    [SOMA_PC_SEQUENTIAL] = "sequential", [SOMA_PC_SIMULTANEOUS] = "simultaneous",
    [SOMA_PC_INCREMENTAL] = "incremental",
};
static const char *const order_short[SOMA_PC_ORDER_COUNT] = {
    [SOMA_PC_SEQUENTIAL] = "seq", [SOMA_PC_SIMULTANEOUS] = "sim", [SOMA_PC_INCREMENTAL] = "inc",
};
static const char *const clamp_names[SOMA_PC_CLAMP_COUNT] = {
    [SOMA_PC_SOFT] = "soft", [SOMA_PC_HARD] = "hard",
};

const char *soma_pc_order_name(soma_pc_order o)
{
    return (unsigned)o < SOMA_PC_ORDER_COUNT ? order_names[o] : "?";
}

soma_status soma_pc_order_from_name(soma_pc_order *out, const char *name)
{
    for (int i = 0; name && i < SOMA_PC_ORDER_COUNT; i++)
        if (!strcmp(name, order_names[i]) || !strcmp(name, order_short[i])) {
            *out = (soma_pc_order)i;
            return SOMA_OK;
        }
    return soma__fail(SOMA_ERR_ARG, "unknown pc order '%s' (valid: sequential, simultaneous, "
                      "incremental; or seq, sim, inc)", name ? name : "(null)");
}

const char *soma_pc_clamp_name(soma_pc_clamp c)
{
    return (unsigned)c < SOMA_PC_CLAMP_COUNT ? clamp_names[c] : "?";
}

soma_status soma_pc_clamp_from_name(soma_pc_clamp *out, const char *name)
{
    for (int i = 0; name && i < SOMA_PC_CLAMP_COUNT; i++)
        if (!strcmp(name, clamp_names[i])) { *out = (soma_pc_clamp)i; return SOMA_OK; }
    return soma__fail(SOMA_ERR_ARG, "unknown pc clamp '%s' (valid: soft, hard)",
                      name ? name : "(null)");
}

void soma_pc_config_default(soma_rule_config *c)
{
    c->pc_T = 3;
    c->pc_gamma = 0.05f;
    c->pc_beta = 100.0f;
    c->pc_order = SOMA_PC_SEQUENTIAL;
    c->pc_clamp = SOMA_PC_SOFT;
    c->pc_autoencoder = 0;
}

/* ---- optimizer groups (MQ) ------------------------------------------------ */

soma_status soma__rule_layer_groups(soma_net *n, soma_optim *o)
{
    int np = n->params.count;
    size_t *off = soma__malloc((size_t)(np ? np : 1) * sizeof *off);
    size_t *len = soma__malloc((size_t)(np ? np : 1) * sizeof *len);
    char *done = soma__calloc((size_t)(np ? np : 1), 1);
    soma_status st = SOMA_ERR_NOMEM;
    if (!off || !len || !done) goto out;
    int k = 0;
    for (int i = 0; i < n->n_layers; i++) {
        const soma_layer *l = &n->layers[i];
        if ((l->kind != SOMA_LAYER_DENSE && l->kind != SOMA_LAYER_CONV) || l->w < 0) continue;
        const soma_param *w = &n->params.p[l->w];
        off[k] = w->offset;
        len[k] = w->n;
        done[l->w] = 1;
        if (l->b >= 0 && n->params.p[l->b].offset == w->offset + w->n) {
            len[k] += n->params.p[l->b].n;   /* one scalar over [vec(W); b], as MQ pools them */
            done[l->b] = 1;
        }
        k++;
    }
    for (int i = 0; i < np; i++)
        if (!done[i]) { off[k] = n->params.p[i].offset; len[k] = n->params.p[i].n; k++; }
    st = soma_optim_set_groups(o, k, off, len);
out:
    soma__free(off);
    soma__free(len);
    soma__free(done);
    return st;
}

/* ---- the blocks ------------------------------------------------------------ */

static void conv_shape_of(soma_conv_shape *cs, const soma_layer *l, int B)
{
    soma_conv_shape_init(cs, B, l->in_c, l->in_h, l->in_w, l->out_c, l->k, l->k, l->stride, l->pad);
}

/* u->p = block(input) for unit u, whose input state is `in` (B, u->in). */
static void block_forward(soma_rule *r, pc_unit *u, const float *in)
{
    pc_state *s = r->state;
    soma_net *n = r->net;
    const soma_layer *l = &n->layers[u->layer];
    const int B = s->B;
    /* a = f(h_{l-1}) is kept as the snapshot iPC's weight step reads, so it
     * is a copy even without an activation; x itself for the first block */
    if (u->has_act) soma_act_forward(u->a, in, (size_t)B * u->in, u->act);
    else if (u->own_a) memcpy(u->a, in, (size_t)B * u->in * sizeof(float));
    else u->a = (float *)in;
    const float *w = soma__param_value(n, l->w), *b = soma__param_value(n, l->b);
    if (l->kind == SOMA_LAYER_DENSE) {
        soma_dense_forward(u->p, u->a, w, b, B, (int)u->in, (int)u->out);
    } else {
        soma_conv_shape cs;
        conv_shape_of(&cs, l, B);
        soma_conv2d_forward(u->p, n->ws, u->a, w, b, &cs);
    }
    s->matmuls++;
}

/* s->td (B, u->in) = VJP of block u at its input state `in` with cotangent c (B, u->out). */
static void block_vjp_input(soma_rule *r, pc_unit *u, const float *in, const float *c)
{
    pc_state *s = r->state;
    soma_net *n = r->net;
    const soma_layer *l = &n->layers[u->layer];
    const int B = s->B;
    size_t cnt = (size_t)B * u->in;
    const float *w = soma__param_value(n, l->w);
    if (l->kind == SOMA_LAYER_DENSE) {
        /* from p = a W^T + b: dL/da = c W */
        soma_gemm(0, 0, B, (int)u->in, (int)u->out, 1.0f, c, (int)u->out, w, (int)u->in, 0.0f,
                  s->td, (int)u->in);
    } else {
        soma_conv_shape cs;
        conv_shape_of(&cs, l, B);
        memset(s->td, 0, cnt * sizeof(float));
        soma_conv2d_backward(s->td, NULL, NULL, n->ws, c, u->a, w, &cs);
    }
    s->matmuls++;
    if (u->has_act) {
        /* from a = f(h): dL/dh = dL/da . f'(h) */
        soma_act_deriv(s->fd, in, u->a, cnt, u->act);
        float *restrict td = s->td;
        const float *restrict fd = s->fd;
        _Pragma("omp simd")
        for (size_t i = 0; i < cnt; i++) td[i] *= fd[i];
    }
}

/* -VJP_theta(block u; e_u) / B into the grad store: written over it when
 * overwrite (dense blocks), else accumulated. */
static void block_grads(soma_rule *r, pc_unit *u, int overwrite)
{
    pc_state *s = r->state;
    soma_net *n = r->net;
    const soma_layer *l = &n->layers[u->layer];
    const int B = s->B;
    float *dw = soma__param_grad(n, l->w), *db = soma__param_grad(n, l->b);
    const float scale = -1.0f / (float)B;
    if (l->kind == SOMA_LAYER_DENSE) {
        /* from p = a W^T + b with cotangent -e/B: dW = -e^T a / B, db = -sum_b e / B */
        soma_gemm(1, 0, (int)u->out, (int)u->in, B, scale, u->e, (int)u->out, u->a, (int)u->in,
                  overwrite ? 0.0f : 1.0f, dw, (int)u->in);
        if (overwrite) memset(db, 0, u->out * sizeof(float));
        for (int b = 0; b < B; b++) {
            const float *er = u->e + (size_t)b * u->out;
            for (size_t o = 0; o < u->out; o++) db[o] += scale * er[o];
        }
    } else {
        size_t cnt = (size_t)B * u->out;
        for (size_t i = 0; i < cnt; i++) s->td[i] = scale * u->e[i];
        soma_conv_shape cs;
        conv_shape_of(&cs, l, B);
        soma_conv2d_backward(NULL, dw, db, n->ws, s->td, u->a, soma__param_value(n, l->w), &cs);
    }
    s->matmuls++;
}

/* ---- states and errors ----------------------------------------------------- */

static const float *input_of(const pc_state *s, int l) { return l == 1 ? s->x : s->u[l - 1].h; }

/* s->s = softmax / sigmoid of p_L; h_L = the clamp; e_L = h_L - s. */
static void top(soma_rule *r)
{
    pc_state *s = r->state;
    pc_unit *u = &s->u[s->L];
    size_t cnt = (size_t)s->B * s->C;
    if (r->cfg.pc_autoencoder) soma_act_forward(s->s, u->p, cnt, SOMA_ACT_SIGMOID);
    else soma_softmax_forward(s->s, u->p, s->B, s->C);
    if (r->cfg.pc_clamp == SOMA_PC_HARD) {
        memcpy(u->h, s->y, cnt * sizeof(float));
    } else {
        /* argmin_h 1/2|h - s|^2 + beta/2 |y - h|^2 */
        const float beta = r->cfg.pc_beta, inv = 1.0f / (1.0f + beta);
        for (size_t i = 0; i < cnt; i++) u->h[i] = (s->s[i] + beta * s->y[i]) * inv;
    }
    for (size_t i = 0; i < cnt; i++) u->e[i] = u->h[i] - s->s[i];
}

static void hidden_error(pc_state *s, int l)
{
    pc_unit *u = &s->u[l];
    size_t cnt = (size_t)s->B * u->out;
    for (size_t i = 0; i < cnt; i++) u->e[i] = u->h[i] - u->p[i];
}

/* New predictions p_from..p_L from the current states, then every error. */
static void predict_from(soma_rule *r, int from)
{
    pc_state *s = r->state;
    for (int l = from; l <= s->L; l++) block_forward(r, &s->u[l], input_of(s, l));
    for (int l = 1; l < s->L; l++) hidden_error(s, l);
    top(r);
}

/* h_l += g (td - e_l), td already in s->td */
static void step_state(pc_state *s, int l, float g)
{
    pc_unit *u = &s->u[l];
    size_t cnt = (size_t)s->B * u->out;
    for (size_t i = 0; i < cnt; i++) u->h[i] += g * (s->td[i] - u->e[i]);
}

/* Plain SGD (no momentum, decay or clip) on a net of dense blocks: the
 * update W += (lr/B) e^T f(h) is one GEMM into W, so the gradient never
 * reaches memory (it would be written, read back and checked: three passes
 * over every weight).  The finite check moves to the factors, e and f(h),
 * O(B x units); on failure nothing is changed, as on the stored path. */
static int sgd_direct(const soma_rule *r)
{
    const soma_optim_config *oc = &r->cfg.optim;
    if (oc->kind != SOMA_OPTIM_SGD || oc->momentum != 0 || oc->weight_decay != 0 || r->cfg.clip_norm > 0)
        return 0;
    const pc_state *s = r->state;
    size_t dense = 0;
    for (int l = 1; l <= s->L; l++) {
        const soma_layer *ly = &r->net->layers[s->u[l].layer];
        if (ly->kind != SOMA_LAYER_DENSE || ly->b < 0) return 0;
        dense += s->u[l].out * (s->u[l].in + 1);
    }
    return dense == soma_net_param_floats(r->net);
}

static soma_status sgd_direct_step(soma_rule *r, float lr)
{
    pc_state *s = r->state;
    soma_net *n = r->net;
    const int B = s->B;
    for (int l = 1; l <= s->L; l++) {
        const pc_unit *u = &s->u[l];
        if (!soma__all_finite(u->e, (size_t)B * u->out) || !soma__all_finite(u->a, (size_t)B * u->in))
            return soma__fail(SOMA_ERR_NUMERIC, "pc: weight update contains NaN or Inf (unit %d)", l);
    }
    soma__optim_begin(r->optim);
    const float k = lr / (float)B;
    for (int l = 1; l <= s->L; l++) {
        pc_unit *u = &s->u[l];
        const soma_layer *ly = &n->layers[u->layer];
        float *w = soma__param_value(n, ly->w), *b = soma__param_value(n, ly->b);
        soma_gemm(1, 0, (int)u->out, (int)u->in, B, k, u->e, (int)u->out, u->a, (int)u->in, 1.0f, w, (int)u->in);
        for (int i = 0; i < B; i++) {
            const float *er = u->e + (size_t)i * u->out;
            for (size_t o = 0; o < u->out; o++) b[o] += k * er[o];
        }
        s->matmuls++;
    }
    return SOMA_OK;
}

static soma_status apply_grads(soma_rule *r, float lr)
{
    if (sgd_direct(r)) return sgd_direct_step(r, lr);
    soma_status e = soma__pc_grads(r);
    if (e) return e;
    soma_net *n = r->net;
    size_t np = soma_net_param_floats(n);
    float *g = soma_net_param_grads(n);
    if (r->cfg.clip_norm > 0) soma__clip_norm(g, np, r->cfg.clip_norm);
    if (r->cfg.optim.kind == SOMA_OPTIM_MQ && !soma_optim_group_count(r->optim) &&
        (e = soma__rule_layer_groups(n, r->optim)))
        return e;
    soma_clear_error();
    int64_t t0 = soma_optim_get_step(r->optim);
    soma_optim_step(r->optim, soma_net_param_values(n), g, lr);
    if (soma_optim_get_step(r->optim) == t0)
        return soma__fail(SOMA_ERR_ARG, "pc: the optimizer refused the step: %s", soma_last_error());
    return SOMA_OK;
}

/* ---- the internal API (pc.h) ----------------------------------------------- */

soma_status soma__pc_begin(soma_rule *r, const soma_batch *b)
{
    if (r->ops != &soma__rule_pc) return soma__fail(SOMA_ERR_ARG, "rule '%s' is not pc", r->ops->name);
    pc_state *s = r->state;
    if (b->target && !r->cfg.pc_autoencoder)
        return soma__fail(SOMA_ERR_UNSUPPORTED, "rule pc: regression targets are not supported "
                          "(classification, or pc_autoencoder with the input as target)");
    s->B = b->n;
    s->x = b->x;
    s->matmuls = 0;
    size_t cnt = (size_t)s->B * s->C;
    if (r->cfg.pc_autoencoder) {
        memcpy(s->y, b->x, cnt * sizeof(float));
    } else {
        memset(s->y, 0, cnt * sizeof(float));
        for (int i = 0; i < s->B; i++) s->y[(size_t)i * s->C + b->y[i]] = 1.0f;
    }
    /* feedforward: h_l = p_l */
    for (int l = 1; l <= s->L; l++) {
        pc_unit *u = &s->u[l];
        block_forward(r, u, input_of(s, l));
        memcpy(u->h, u->p, (size_t)s->B * u->out * sizeof(float));
    }
    for (int l = 1; l < s->L; l++) hidden_error(s, l);
    top(r);
    return SOMA_OK;
}

soma_status soma__pc_iterate(soma_rule *r, int t, float lr)
{
    pc_state *s = r->state;
    const int L = s->L;
    const float g = r->cfg.pc_gamma / (1.0f + (float)t);
    switch (r->cfg.pc_order) {
    case SOMA_PC_SEQUENTIAL:
        /* top-down sweep: h_{l+1} is already updated, h_{l-1} not yet, so
         * e_{l+1} = h_{l+1}(new) - p_{l+1}(h_l) and e_l = h_l - p_l(h_{l-1})
         * both use the predictions cached at the sweep's start */
        for (int l = L - 1; l >= 1; l--) {
            if (l < L - 1) hidden_error(s, l + 1);
            block_vjp_input(r, &s->u[l + 1], s->u[l].h, s->u[l + 1].e);
            step_state(s, l, g);
        }
        predict_from(r, 2);
        break;
    case SOMA_PC_SIMULTANEOUS:
    case SOMA_PC_INCREMENTAL:
        /* bottom-up, but every error stays the snapshot's until predict_from,
         * and h_l's update reads only h_l and e_{l+1}: a Jacobi step */
        for (int l = 1; l < L; l++) {
            block_vjp_input(r, &s->u[l + 1], s->u[l].h, s->u[l + 1].e);
            step_state(s, l, g);
        }
        if (r->cfg.pc_order == SOMA_PC_INCREMENTAL) {
            /* the weights' step uses the same snapshot: e (not yet
             * recomputed) and f(h_{l-1}) (the a buffers, not yet refreshed) */
            soma_status e = apply_grads(r, lr);
            if (e) return e;
            predict_from(r, 1);
        } else {
            predict_from(r, 2);
        }
        break;
    default:
        return soma__fail(SOMA_ERR_ARG, "pc: unknown order %d", (int)r->cfg.pc_order);
    }
    return SOMA_OK;
}

soma_status soma__pc_grads(soma_rule *r)
{
    pc_state *s = r->state;
    soma_net *n = r->net;
    /* When dense blocks' weights and biases are every parameter of the net,
     * each gradient is written exactly once: no zeroing pass over the store. */
    size_t dense = 0;
    for (int l = 1; l <= s->L; l++) {
        const soma_layer *ly = &n->layers[s->u[l].layer];
        if (ly->kind == SOMA_LAYER_DENSE && ly->b >= 0) dense += s->u[l].out * (s->u[l].in + 1);
    }
    const int overwrite = dense == soma_net_param_floats(n);
    if (!overwrite) soma_net_zero_grad(n);
    for (int l = 1; l <= s->L; l++) block_grads(r, &s->u[l], overwrite && n->layers[s->u[l].layer].kind == SOMA_LAYER_DENSE);
    if (!soma__all_finite(soma_net_param_grads(n), soma_net_param_floats(n)))
        return soma__fail(SOMA_ERR_NUMERIC, "pc: weight update contains NaN or Inf");
    return SOMA_OK;
}

int soma__pc_units(const soma_rule *r) { return ((const pc_state *)r->state)->L; }

const float *soma__pc_state(const soma_rule *r, int l, size_t *n)
{
    const pc_state *s = r->state;
    if (l < 1 || l > s->L) return NULL;
    if (n) *n = s->u[l].out;
    return s->u[l].h;
}

const float *soma__pc_error(const soma_rule *r, int l, size_t *n)
{
    const pc_state *s = r->state;
    if (l < 1 || l > s->L) return NULL;
    if (n) *n = s->u[l].out;
    return s->u[l].e;
}

double soma__pc_energy(const soma_rule *r)
{
    const pc_state *s = r->state;
    double F = 0;
    for (int l = 1; l < s->L; l++) {
        const pc_unit *u = &s->u[l];
        size_t cnt = (size_t)s->B * u->out;
        for (size_t i = 0; i < cnt; i++) F += 0.5 * (double)u->e[i] * u->e[i];
    }
    const pc_unit *u = &s->u[s->L];
    for (int b = 0; b < s->B; b++) {
        const float *p = u->p + (size_t)b * s->C, *h = u->h + (size_t)b * s->C;
        if (r->cfg.pc_autoencoder) {
            /* -[h log sig(p) + (1-h) log(1 - sig(p))] = softplus(p) - h p */
            for (int c = 0; c < s->C; c++) {
                double z = p[c];
                double sp = z > 0 ? z + log1p(exp(-z)) : log1p(exp(z));
                F += sp - (double)h[c] * z;
            }
        } else {
            double m = p[0], sum = 0;
            for (int c = 1; c < s->C; c++) if (p[c] > m) m = p[c];
            for (int c = 0; c < s->C; c++) sum += exp((double)p[c] - m);
            double lse = m + log(sum);
            for (int c = 0; c < s->C; c++) F -= (double)h[c] * ((double)p[c] - lse);
        }
    }
    return F / s->B;
}

int64_t soma__pc_matmuls(const soma_rule *r) { return ((const pc_state *)r->state)->matmuls; }

/* ---- the rule's table ------------------------------------------------------ */

static float *alloc_floats(pc_state *s, size_t n)
{
    float *p = soma__malloc_aligned((n ? n : 1) * sizeof(float));
    if (p) {
        memset(p, 0, (n ? n : 1) * sizeof(float));
        s->bytes += n * sizeof(float);
    }
    return p;
}

static soma_status pc_init(soma_rule *r, int max_batch)
{
    soma_net *n = r->net;
    const soma_rule_config *c = &r->cfg;
    if (soma_net_is_spiking(n))
        return soma__fail(SOMA_ERR_ARG, "rule pc is for static nets; net '%s' has neuron cells",
                          soma_net_spec(n));
    if (c->pc_T < 1)
        return soma__fail(SOMA_ERR_ARG, "pc: T (inference iterations) must be >= 1, got %d "
                          "(soma_pc_config_default fills the defaults)", c->pc_T);
    if (!(c->pc_gamma > 0) || !isfinite(c->pc_gamma))
        return soma__fail(SOMA_ERR_ARG, "pc: gamma (activity step) must be > 0 and finite, got %g",
                          c->pc_gamma);
    if (!(c->pc_beta >= 0) || !isfinite(c->pc_beta))
        return soma__fail(SOMA_ERR_ARG, "pc: beta (soft clamp) must be >= 0 and finite, got %g",
                          c->pc_beta);
    if ((unsigned)c->pc_order >= SOMA_PC_ORDER_COUNT)
        return soma__fail(SOMA_ERR_ARG, "pc: unknown order %d", (int)c->pc_order);
    if ((unsigned)c->pc_clamp >= SOMA_PC_CLAMP_COUNT)
        return soma__fail(SOMA_ERR_ARG, "pc: unknown clamp %d", (int)c->pc_clamp);
    if (c->pc_autoencoder != 0 && c->pc_autoencoder != 1)
        return soma__fail(SOMA_ERR_ARG, "pc: autoencoder must be 0 or 1, got %d", c->pc_autoencoder);
    if (c->pc_autoencoder && soma_net_outputs(n) != soma_net_inputs(n))
        return soma__fail(SOMA_ERR_SHAPE, "pc autoencoder: net '%s' has %d outputs but %d inputs; "
                          "they must be equal (the target is the input)", soma_net_spec(n),
                          soma_net_outputs(n), soma_net_inputs(n));
    /* the layer chain: ([flatten] [act] [flatten])* dense|conv, ending in a weight layer */
    int L = 0;
    for (int i = 0; i < n->n_layers; i++) {
        const soma_layer *l = &n->layers[i];
        if (l->kind == SOMA_LAYER_DENSE || l->kind == SOMA_LAYER_CONV) {
            if (l->rec >= 0 && l->kind == SOMA_LAYER_DENSE)
                return soma__fail(SOMA_ERR_UNSUPPORTED, "rule pc: layer %d has a recurrent weight", i);
            L++;
        } else if (l->kind == SOMA_LAYER_DROPOUT && l->p == 0) {
            continue;
        } else if (l->kind != SOMA_LAYER_ACT && l->kind != SOMA_LAYER_FLATTEN) {
            return soma__fail(SOMA_ERR_UNSUPPORTED, "rule pc: layer %d is a %s; pc supports "
                              "dense, conv, activation and flatten layers (net '%s')", i,
                              soma__layer_kind_name(l->kind), soma_net_spec(n));
        }
    }
    int last = n->layers[n->n_layers - 1].kind;
    if (L < 1 || (last != SOMA_LAYER_DENSE && last != SOMA_LAYER_CONV))
        return soma__fail(SOMA_ERR_UNSUPPORTED, "rule pc: net '%s' must end in a dense layer",
                          soma_net_spec(n));
    pc_state *s = soma__calloc(1, sizeof *s);
    if (!s) return SOMA_ERR_NOMEM;
    r->state = s;
    s->L = L;
    s->C = soma_net_outputs(n);
    if (!(s->u = soma__calloc((size_t)L + 1, sizeof *s->u))) return SOMA_ERR_NOMEM;
    size_t maxsz = (size_t)soma_net_inputs(n);
    int k = 1, acts = 0;
    soma_act act = SOMA_ACT_IDENTITY;
    for (int i = 0; i < n->n_layers; i++) {
        const soma_layer *l = &n->layers[i];
        if (l->kind == SOMA_LAYER_ACT) { acts++; act = l->act; continue; }
        if (l->kind != SOMA_LAYER_DENSE && l->kind != SOMA_LAYER_CONV) continue;
        if (acts > 1)
            return soma__fail(SOMA_ERR_UNSUPPORTED, "rule pc: two activations before layer %d", i);
        pc_unit *u = &s->u[k++];
        u->layer = i;
        u->has_act = acts == 1;
        u->act = act;
        u->in = l->in_size;
        u->out = l->out_size;
        size_t nb = (size_t)max_batch * u->out;
        if (!(u->h = alloc_floats(s, nb)) || !(u->p = alloc_floats(s, nb)) ||
            !(u->e = alloc_floats(s, nb)))
            return SOMA_ERR_NOMEM;
        if (u->has_act || k > 2) {
            if (!(u->a = alloc_floats(s, (size_t)max_batch * u->in))) return SOMA_ERR_NOMEM;
            u->own_a = 1;
        }
        if (u->out > maxsz) maxsz = u->out;
        if (u->in > maxsz) maxsz = u->in;
        acts = 0;
        act = SOMA_ACT_IDENTITY;
    }
    size_t nc = (size_t)max_batch * s->C;
    if (!(s->s = alloc_floats(s, nc)) || !(s->y = alloc_floats(s, nc)) ||
        !(s->probs = alloc_floats(s, nc)) || !(s->td = alloc_floats(s, (size_t)max_batch * maxsz)) ||
        !(s->fd = alloc_floats(s, (size_t)max_batch * maxsz)))
        return SOMA_ERR_NOMEM;
    return SOMA_OK;
}

static void pc_release(soma_rule *r)
{
    pc_state *s = r->state;
    if (!s) return;
    if (s->u)
        for (int l = 1; l <= s->L; l++) {
            soma__free_aligned(s->u[l].h);
            soma__free_aligned(s->u[l].p);
            soma__free_aligned(s->u[l].e);
            if (s->u[l].own_a) soma__free_aligned(s->u[l].a);
        }
    soma__free(s->u);
    soma__free_aligned(s->s);
    soma__free_aligned(s->y);
    soma__free_aligned(s->probs);
    soma__free_aligned(s->td);
    soma__free_aligned(s->fd);
    soma__free(s);
    r->state = NULL;
}

/* Loss and hits of the feedforward prediction p_L on the batch. */
static soma_status score(soma_rule *r, const float *logits, const soma_batch *b, soma_step_stats *st)
{
    pc_state *s = r->state;
    if (!r->cfg.pc_autoencoder)
        return soma__loss_and_grad(NULL, s->probs, logits, b->y, b->n, s->C, SOMA_LOSS_CE, st);
    /* reconstruction: BCE through the sigmoid against the input, summed over the
     * outputs (the top energy of F), as the bce loss of the other rules */
    return soma__loss_and_grad_t(NULL, s->probs, logits, b->y, b->x, b->n, s->C, SOMA_LOSS_BCE, st);
}

static soma_status pc_train_batch(soma_rule *r, const soma_batch *b, float lr, soma_rng *rng,
                                  soma_step_stats *st)
{
    (void)rng;
    pc_state *s = r->state;
    soma_status e = soma__pc_begin(r, b);
    if (e) return e;
    soma_step_stats local = { 0 };
    if ((e = score(r, s->u[s->L].p, b, &local))) return e;
    for (int t = 0; t < r->cfg.pc_T; t++)
        if ((e = soma__pc_iterate(r, t, lr))) return e;
    if (r->cfg.pc_order != SOMA_PC_INCREMENTAL && (e = apply_grads(r, lr))) return e;
    if (st) { st->loss += local.loss; st->correct += local.correct; st->n += local.n; }
    return SOMA_OK;
}

static soma_status pc_predict(soma_rule *r, const soma_batch *b, const float **scores,
                              soma_step_stats *st)
{
    soma_net_set_train(r->net, 0);
    soma_status e = soma_net_forward(r->net, b->x, b->n, NULL, scores);
    if (e) return e;
    return st ? score(r, *scores, b, st) : SOMA_OK;
}

static void pc_plan(const soma_rule *r, soma_mem_plan *p)
{
    const pc_state *s = r->state;
    p->activations = r->net->act_bytes + (s ? s->bytes : 0);
    p->workspace = r->net->ws_floats * sizeof(float);
}

const soma_rule_ops soma__rule_pc = {
    .name = "pc",
    .about = "predictive coding: inference learning (sequential SeqIL, simultaneous IL, incremental iPC)",
    .init = pc_init,
    .train_batch = pc_train_batch,
    .predict = pc_predict,
    .plan = pc_plan,
    .release = pc_release,
};
