/*
 * relevance.c - LRP relevance kernels: a layer's output relevance R_out
 * split over its inputs (R_in) and its connections (the parameter feedback
 * fb of layer-wise feedback propagation).  Weber et al. 2023, eqs. 8-13;
 * ../shared/notes/lfp.md sec. 3-4.  The rules are stated in soma.h.
 *
 * Every rule is written once, over a "linear op" that is a dense layer, a
 * convolution or an average pooling (fixed weights 1/k^2), with three
 * primitives taken from the core's kernels:
 *   fwd(y, a, w)      y = op(a; w), no bias           (z, z+ and z-)
 *   bx(dx, s, w)     dx += op^T(s; w)                  (the backward input kernel)
 *   bw(dw, db, s, a) dw += s^T a, db += sum s          (the backward weight kernel)
 * so a convolution's relevance is its backward pass with the normalised
 * signal s in place of dL/dy, followed by a product with the input (R) or
 * with |w| (fb):
 *   EPSILON/ZERO: R_in = a * bx(s, w),      fb = |w| * bw(s, a)
 *   ALPHABETA:    R_in = a+ * [bx(s+, w+) + bx(s-, w-)] + a- * [bx(s+, w-) + bx(s-, w+)]
 *                 fb   = |w| * (w >= 0 ? bw(s+, a+) + bw(s-, a-) : bw(s+, a-) + bw(s-, a+))
 *   ZPLUSMINUS:   R_in = |a| * bx(s, |w|),  fb = |w| * bw(s, a)
 * with z+ = fwd(a+, w+) + fwd(a-, w-) + b+ and z- = fwd(a+, w-) + fwd(a-, w+) + b-
 * (a+ = max(a, 0), w- = min(w, 0), ...): a connection's z_ij = w_ij a_i is
 * non-negative exactly when w and a have the same sign.
 *
 * Workspace layout (floats, in this order): EPSILON/ZERO s(n_out) t(n_in)
 * G(n_w) gb(O); ALPHABETA/ZPLUSMINUS a+ a-(n_in each) w+ w-(n_w each)
 * z+ z- tmp(n_out each) t(n_in) gb+ gb-(O each); then a conv's im2col.
 */
#include "../soma_internal.h"
#include <math.h>
#include <string.h>

/* ---- names and checks ---------------------------------------------------- */

static const char *const rule_names[SOMA_LRP_COUNT] = {
    [SOMA_LRP_EPSILON] = "epsilon", [SOMA_LRP_ZERO] = "zero",
    [SOMA_LRP_ALPHABETA] = "alphabeta", [SOMA_LRP_ZPLUSMINUS] = "zplusminus",
};

const char *soma_lrp_rule_name(soma_lrp_rule r)
{
    return (unsigned)r < SOMA_LRP_COUNT ? rule_names[r] : "?";
}

soma_status soma_lrp_rule_from_name(soma_lrp_rule *out, const char *name)
{
    static const struct { const char *alias; soma_lrp_rule r; } aliases[] = {
        { "0", SOMA_LRP_ZERO }, { "eps", SOMA_LRP_EPSILON }, { "ab", SOMA_LRP_ALPHABETA },
        { "zpzm", SOMA_LRP_ZPLUSMINUS },
    };
    for (int i = 0; i < SOMA_LRP_COUNT; i++)
        if (!strcmp(name, rule_names[i])) { *out = (soma_lrp_rule)i; return SOMA_OK; }
    for (size_t i = 0; i < sizeof aliases / sizeof *aliases; i++)
        if (!strcmp(name, aliases[i].alias)) { *out = aliases[i].r; return SOMA_OK; }
    return soma__fail(SOMA_ERR_ARG, "unknown LRP rule '%s' (valid: epsilon, zero, alphabeta, "
                      "zplusminus)", name);
}

soma_status soma_lrp_params_check(const soma_lrp_params *p)
{
    if ((unsigned)p->rule >= SOMA_LRP_COUNT)
        return soma__fail(SOMA_ERR_ARG, "unknown LRP rule %d", (int)p->rule);
    if (!(p->eps >= 0) || !isfinite(p->eps))
        return soma__fail(SOMA_ERR_ARG, "LRP epsilon must be >= 0 and finite, got %g", p->eps);
    if (p->rule == SOMA_LRP_ALPHABETA) {
        if (!isfinite(p->alpha) || !(p->beta >= 0) || !isfinite(p->beta))
            return soma__fail(SOMA_ERR_ARG, "alphabeta: alpha %g and beta %g must be finite, "
                              "beta >= 0", p->alpha, p->beta);
        if (fabs((double)p->alpha - (double)p->beta - 1.0) > 1e-6)
            return soma__fail(SOMA_ERR_ARG, "alphabeta needs alpha - beta = 1, got alpha %g, "
                              "beta %g", p->alpha, p->beta);
    }
    return SOMA_OK;
}

/* ---- the linear op ------------------------------------------------------- */

typedef enum { OP_DENSE, OP_CONV, OP_AVGPOOL } op_kind;

typedef struct lin_op {
    op_kind kind;
    int B, I, O;                 /* dense */
    const soma_conv_shape *cs;   /* conv */
    const soma_pool_shape *ps;   /* avgpool */
    size_t n_in, n_out, n_w;     /* floats of the input, output and weight */
    int ch;                      /* output channels (bias length) */
    size_t plane;                /* output values per channel and sample */
    float *cws;                  /* conv im2col workspace */
} lin_op;

/* y = op(a; w), overwritten, no bias */
static void op_fwd(const lin_op *op, float *y, const float *a, const float *w)
{
    switch (op->kind) {
    case OP_DENSE: soma_dense_forward(y, a, w, NULL, op->B, op->I, op->O); break;
    case OP_CONV: soma_conv2d_forward(y, op->cws, a, w, NULL, op->cs); break;
    case OP_AVGPOOL: soma_avgpool_forward(y, a, op->ps); break;
    }
}

/* dx += op^T(s; w): the backward input kernel with s as the output gradient */
static void op_bx(const lin_op *op, float *dx, const float *s, const float *w)
{
    switch (op->kind) {
    case OP_DENSE: soma_dense_backward(dx, NULL, NULL, s, NULL, w, op->B, op->I, op->O); break;
    case OP_CONV: soma_conv2d_backward(dx, NULL, NULL, op->cws, s, NULL, w, op->cs); break;
    case OP_AVGPOOL: soma_avgpool_backward(dx, s, op->ps); break;
    }
}

/* dw += s^T a, db += sum of s per channel: the backward weight kernel */
static void op_bw(const lin_op *op, float *dw, float *db, const float *s, const float *a)
{
    switch (op->kind) {
    case OP_DENSE: soma_dense_backward(NULL, dw, db, s, a, NULL, op->B, op->I, op->O); break;
    case OP_CONV: soma_conv2d_backward(NULL, dw, db, op->cws, s, a, NULL, op->cs); break;
    case OP_AVGPOOL: break;  /* no parameters */
    }
}

static inline float sgn0(float z) { return z >= 0 ? 1.0f : -1.0f; }
/* x / d with 0 for d == 0 (LRP-0 at a dead unit: nothing to split) */
static inline float safe_div(float x, float d) { return d != 0 ? x / d : 0.0f; }

static size_t rule_floats(const lin_op *op, soma_lrp_rule r)
{
    if (r == SOMA_LRP_EPSILON || r == SOMA_LRP_ZERO)
        return op->n_out + op->n_in + op->n_w + (size_t)op->ch;
    return 3 * op->n_in + 2 * op->n_w + 3 * op->n_out + 2 * (size_t)op->ch;
}

/* out[k] += x[k] * y[k] over n */
/* Elementwise passes over weight-sized arrays: split across threads when
 * large (elementwise, so the result does not depend on the split). */
static void add_prod(float *out, const float *x, const float *y, size_t n)
{
#pragma omp parallel for simd schedule(static) if (n >= 32768)
    for (size_t k = 0; k < n; k++) out[k] += x[k] * y[k];
}

/* fb += |w| * G */
static void add_absw(float *fb, const float *w, const float *G, size_t n)
{
#pragma omp parallel for simd schedule(static) if (n >= 32768)
    for (size_t k = 0; k < n; k++) fb[k] += fabsf(w[k]) * G[k];
}

/* The rule on one linear op; see the top of the file. */
static void relevance_lin(const lin_op *op, float *R_in, float *fbw, float *fbb, float *ws,
                          const float *R_out, const float *z, const float *a, const float *w,
                          const float *b, const soma_lrp_params *p)
{
    const size_t n_in = op->n_in, n_out = op->n_out, n_w = op->n_w, P = op->plane;
    const int C = op->ch, nb = (int)(n_out / ((size_t)C * P));
    const int params = op->kind != OP_AVGPOOL;
    if (!params) fbw = fbb = NULL;
    if (p->rule == SOMA_LRP_EPSILON || p->rule == SOMA_LRP_ZERO) {
        const float eps = p->rule == SOMA_LRP_ZERO ? 0.0f : p->eps;
        float *s = ws, *t = s + n_out, *G = t + n_in, *gb = G + n_w;
        /* s_j = R_j / (z_j + eps sgn0(z_j)) */
        for (size_t k = 0; k < n_out; k++) s[k] = safe_div(R_out[k], z[k] + eps * sgn0(z[k]));
        if (R_in) {
            memset(t, 0, n_in * sizeof(float));
            op_bx(op, t, s, w);                     /* sum_j w_ij s_j */
            add_prod(R_in, a, t, n_in);             /* R_i = a_i sum_j w_ij s_j */
        }
        if (fbw || fbb) {
            memset(G, 0, n_w * sizeof(float));
            memset(gb, 0, (size_t)C * sizeof(float));
            op_bw(op, fbw ? G : NULL, fbb ? gb : NULL, s, a);
            if (fbw) add_absw(fbw, w, G, n_w);      /* |w_ij| sum_n a_i s_j */
            if (fbb && b) add_absw(fbb, b, gb, (size_t)C);
        }
        return;
    }
    float *ap = ws, *an = ap + n_in, *wp = an + n_in, *wn = wp + n_w;
    float *zp = wn + n_w, *zn = zp + n_out, *tmp = zn + n_out, *t = tmp + n_out;
    float *gbp = t + n_in, *gbn = gbp + C;
    for (size_t k = 0; k < n_in; k++) { ap[k] = a[k] > 0 ? a[k] : 0.0f; an[k] = a[k] < 0 ? a[k] : 0.0f; }
    for (size_t k = 0; k < n_w; k++) { wp[k] = w[k] > 0 ? w[k] : 0.0f; wn[k] = w[k] < 0 ? w[k] : 0.0f; }
    /* z+ = a+ w+ + a- w- + b+,  z- = a+ w- + a- w+ + b-  (average pooling: w = 1/k^2 > 0) */
    if (params) {
        op_fwd(op, zp, ap, wp);
        op_fwd(op, tmp, an, wn);
        for (size_t k = 0; k < n_out; k++) zp[k] += tmp[k];
        op_fwd(op, zn, ap, wn);
        op_fwd(op, tmp, an, wp);
        for (size_t k = 0; k < n_out; k++) zn[k] += tmp[k];
        if (b)
            for (int n = 0; n < nb; n++)
                for (int c = 0; c < C; c++) {
                    size_t at = ((size_t)n * C + c) * P;
                    float bpos = b[c] >= 0 ? b[c] : 0.0f, bneg = b[c] < 0 ? b[c] : 0.0f;
                    for (size_t q = 0; q < P; q++) { zp[at + q] += bpos; zn[at + q] += bneg; }
                }
    } else {
        op_fwd(op, zp, ap, NULL);
        op_fwd(op, zn, an, NULL);
    }
    if (p->rule == SOMA_LRP_ALPHABETA) {
        /* s+ = alpha sgn0(z) R / stab(z+), s- = -beta sgn0(z) R / (z- - eps), in place */
        for (size_t k = 0; k < n_out; k++) {
            float r = sgn0(z[k]) * R_out[k];
            zp[k] = safe_div(p->alpha * r, zp[k] + p->eps);
            zn[k] = safe_div(-p->beta * r, zn[k] - p->eps);
        }
        const float *sp = zp, *sn = zn;
        if (R_in) {
            /* inputs a_i >= 0 meet w+ in the positive part, w- in the negative */
            memset(t, 0, n_in * sizeof(float));
            op_bx(op, t, sp, params ? wp : NULL);
            if (params) op_bx(op, t, sn, wn);
            add_prod(R_in, ap, t, n_in);
            memset(t, 0, n_in * sizeof(float));
            if (params) op_bx(op, t, sp, wn);
            op_bx(op, t, sn, params ? wp : NULL);
            add_prod(R_in, an, t, n_in);
        }
        if (fbw || fbb) {
            /* G1 (in wp): connections with w >= 0 are positive with a+, negative with a-;
             * G2 (in wn): w < 0 the other way round.  w+ and w- are no longer needed. */
            float *G1 = wp, *G2 = wn;
            memset(G1, 0, n_w * sizeof(float));
            memset(G2, 0, n_w * sizeof(float));
            memset(gbp, 0, 2 * (size_t)C * sizeof(float));
            if (fbw) {
                op_bw(op, G1, NULL, sp, ap);
                op_bw(op, G1, NULL, sn, an);
                op_bw(op, G2, NULL, sp, an);
                op_bw(op, G2, NULL, sn, ap);
                for (size_t k = 0; k < n_w; k++) fbw[k] += fabsf(w[k]) * (w[k] >= 0 ? G1[k] : G2[k]);
            }
            if (fbb && b) {
                op_bw(op, NULL, gbp, sp, NULL);
                op_bw(op, NULL, gbn, sn, NULL);
                for (int c = 0; c < C; c++) fbb[c] += fabsf(b[c]) * (b[c] >= 0 ? gbp[c] : gbn[c]);
            }
        }
        return;
    }
    /* ZPLUSMINUS: s = sgn0(z) R / (|z+| + |z-| + eps), in zp */
    for (size_t k = 0; k < n_out; k++)
        zp[k] = safe_div(sgn0(z[k]) * R_out[k], zp[k] - zn[k] + p->eps);
    const float *s = zp;
    if (R_in) {
        /* R_i = sum_j |w_ij a_i| s_j = |a_i| sum_j |w_ij| s_j */
        for (size_t k = 0; k < n_w; k++) wn[k] = fabsf(w[k]);
        memset(t, 0, n_in * sizeof(float));
        op_bx(op, t, s, params ? wn : NULL);
        for (size_t k = 0; k < n_in; k++) R_in[k] += fabsf(a[k]) * t[k];
    }
    if (fbw || fbb) {
        float *G = wp;
        memset(G, 0, n_w * sizeof(float));
        memset(gbp, 0, (size_t)C * sizeof(float));
        op_bw(op, fbw ? G : NULL, fbb ? gbp : NULL, s, a);
        if (fbw) add_absw(fbw, w, G, n_w);
        if (fbb && b) add_absw(fbb, b, gbp, (size_t)C);
    }
}

/* ---- dense ------------------------------------------------------------------ */

static lin_op dense_op(int B, int I, int O)
{
    return (lin_op){ .kind = OP_DENSE, .B = B, .I = I, .O = O, .n_in = (size_t)B * I,
                     .n_out = (size_t)B * O, .n_w = (size_t)O * I, .ch = O, .plane = 1 };
}

size_t soma_dense_relevance_workspace(int B, int I, int O, const soma_lrp_params *p)
{
    lin_op op = dense_op(B, I, O);
    return rule_floats(&op, p->rule);
}

/* R_out, z (B,O); a (B,I); w (O,I); b (O) or NULL -> R_in (B,I), fbw (O,I), fbb (O) */
void soma_dense_relevance(float *R_in, float *fbw, float *fbb, float *ws, const float *R_out,
                          const float *z, const float *a, const float *w, const float *b,
                          int B, int I, int O, const soma_lrp_params *p)
{
    lin_op op = dense_op(B, I, O);
    relevance_lin(&op, R_in, fbw, fbb, ws, R_out, z, a, w, b, p);
}

/* ---- conv2d ----------------------------------------------------------------- */

static lin_op conv_op(const soma_conv_shape *s)
{
    size_t P = (size_t)s->OH * s->OW;
    return (lin_op){ .kind = OP_CONV, .cs = s, .n_in = (size_t)s->B * s->C * s->H * s->W,
                     .n_out = (size_t)s->B * s->O * P, .n_w = (size_t)s->O * s->C * s->KH * s->KW,
                     .ch = s->O, .plane = P };
}

size_t soma_conv2d_relevance_workspace(const soma_conv_shape *s, const soma_lrp_params *p,
                                       int threads)
{
    lin_op op = conv_op(s);
    return rule_floats(&op, p->rule) + soma_conv2d_workspace(s, threads);
}

/* R_out, z (B,O,OH,OW); a (B,C,H,W); w (O,C,KH,KW); b (O) or NULL ->
 * R_in (B,C,H,W), fbw (O,C,KH,KW), fbb (O) */
void soma_conv2d_relevance(float *R_in, float *fbw, float *fbb, float *ws, const float *R_out,
                           const float *z, const float *a, const float *w, const float *b,
                           const soma_conv_shape *s, const soma_lrp_params *p)
{
    lin_op op = conv_op(s);
    op.cws = ws + rule_floats(&op, p->rule);
    relevance_lin(&op, R_in, fbw, fbb, ws, R_out, z, a, w, b, p);
}

/* ---- pooling ---------------------------------------------------------------- */

/* R_out (B,C,OH,OW) -> R_in (B,C,H,W) += R_out at the winner: max pooling
 * passes the gradient the same way, and here the relevance. */
void soma_maxpool_relevance(float *R_in, const float *R_out, const int32_t *idx,
                            const soma_pool_shape *s)
{
    soma_maxpool_backward(R_in, R_out, idx, s);
}

static lin_op pool_op(const soma_pool_shape *s)
{
    return (lin_op){ .kind = OP_AVGPOOL, .ps = s, .n_in = (size_t)s->B * s->C * s->H * s->W,
                     .n_out = (size_t)s->B * s->C * s->OH * s->OW, .n_w = 0, .ch = s->C,
                     .plane = (size_t)s->OH * s->OW };
}

size_t soma_avgpool_relevance_workspace(const soma_pool_shape *s, const soma_lrp_params *p)
{
    lin_op op = pool_op(s);
    return rule_floats(&op, p->rule);
}

/* R_out, y (B,C,OH,OW); a (B,C,H,W) -> R_in (B,C,H,W) */
void soma_avgpool_relevance(float *R_in, float *ws, const float *R_out, const float *y,
                            const float *a, const soma_pool_shape *s, const soma_lrp_params *p)
{
    lin_op op = pool_op(s);
    relevance_lin(&op, R_in, NULL, NULL, ws, R_out, y, a, NULL, NULL, p);
}

/* ---- batchnorm ------------------------------------------------------------- */

void soma_batchnorm_relevance(float *R_in, float *fbg, float *fbb, const float *R_out,
                              const float *y, const float *x, const float *xhat,
                              const float *gamma, const float *beta, const float *invstd,
                              int B, int C, int S, float eps)
{
    for (int c = 0; c < C; c++) {
        const float g = gamma ? gamma[c] : 1.0f, scale = g * invstd[c];
        double sg = 0, sb = 0;
        for (int n = 0; n < B; n++) {
            size_t at = ((size_t)n * C + c) * S;
            for (int q = 0; q < S; q++) {
                float s = safe_div(R_out[at + q], y[at + q] + eps * sgn0(y[at + q]));
                /* y = scale x + (beta - scale mean): the input's share is scale x s */
                if (R_in) R_in[at + q] += scale * x[at + q] * s;
                sg += (double)xhat[at + q] * s;
                sb += s;
            }
        }
        if (fbg && gamma) fbg[c] += fabsf(gamma[c]) * (float)sg;
        if (fbb && beta) fbb[c] += fabsf(beta[c]) * (float)sb;
    }
}

/* ---- feedback functions ---------------------------------------------------- */

static const char *const reward_names[SOMA_LFP_REWARD_COUNT] = {
    [SOMA_LFP_REWARD_SOFTMAX] = "softmax", [SOMA_LFP_REWARD_SIGMOID] = "sigmoid",
    [SOMA_LFP_REWARD_PM1] = "pm1",
};

const char *soma_lfp_reward_name(soma_lfp_reward_kind k)
{
    return (unsigned)k < SOMA_LFP_REWARD_COUNT ? reward_names[k] : "?";
}

soma_status soma_lfp_reward_from_name(soma_lfp_reward_kind *out, const char *name)
{
    for (int i = 0; i < SOMA_LFP_REWARD_COUNT; i++)
        if (!strcmp(name, reward_names[i])) { *out = (soma_lfp_reward_kind)i; return SOMA_OK; }
    return soma__fail(SOMA_ERR_ARG, "unknown LFP reward '%s' (valid: softmax, sigmoid, pm1)", name);
}

/* o(B,C), labels(B) -> r(B,C); the factor o cancels the output layer's
 * division by z, leaving s = y - p there (notes sec. 5). */
void soma_lfp_reward(float *r, const float *o, const int32_t *labels, int B, int C,
                     soma_lfp_reward_kind k)
{
    for (int n = 0; n < B; n++) {
        const float *on = o + (size_t)n * C;
        float *rn = r + (size_t)n * C;
        int y = labels[n];
        if (k == SOMA_LFP_REWARD_SOFTMAX) {
            soma_softmax_forward(rn, on, 1, C);
            for (int c = 0; c < C; c++) rn[c] = on[c] * ((c == y) - rn[c]);
        } else if (k == SOMA_LFP_REWARD_SIGMOID) {
            for (int c = 0; c < C; c++) {
                float sig = 1.0f / (1.0f + expf(-on[c]));
                rn[c] = on[c] * ((c == y) - sig);
            }
        } else {
            int best = 0;
            for (int c = 1; c < C; c++) if (on[c] > on[best]) best = c;
            for (int c = 0; c < C; c++) rn[c] = 0.0f;
            rn[y] = best == y ? 1.0f : -1.0f;
        }
    }
}
