/*
 * test_ide.c - implicit differentiation on the equilibrium of a feedback SNN
 * (src/rule/ide.c).
 *
 *  - golden values from refs/ide_ref.py (float64 PyTorch, written from the
 *    equations): the simulated rates a_T of a single-layer IF net and of a
 *    multi-layer LIF net with spectral norm, the effective feedback weight,
 *    f(a_T), the fixed point a*, and the implicit gradient at a_T and at a*
 *    (the reference checks the latter against autograd through 400 unrolled
 *    iterations of the map); Broyden and the damped fixed-point iteration
 *    agree; the spectral norm's power iteration reaches the SVD's sigma;
 *  - in double precision, the rule's gradient at the fixed point against
 *    central finite differences of the loss at the (re-solved) fixed point;
 *  - the cross-rule property: backpropagation through time through the
 *    rate-equivalent network a <- f(a), unrolled K steps from 0, converges
 *    to the IDE gradient as K grows;
 *  - Theorems 1-2 of the supplement: the IF rates approach the fixed point
 *    as T grows when |W|_2 < V_th; the LIF rates' gap stays bounded;
 *  - the solver's residual is reported (strict mode fails with it), bad
 *    input is rejected, a few SGD steps lower the loss;
 *  - spike input (encoding frames): golden values of a conv + batchnorm LIF
 *    net on T = 4 binary 2x6x6 frames (x-bar, rates, running statistics,
 *    gradients); T equal frames reproduce the static-current path bit for
 *    bit (every fixture); the memory plan does not grow with T; a frame
 *    count that does not match T is rejected;
 *  - variational dropout (ide-dropout): golden values with the reference's
 *    masks (dense multi-layer, multi-layer conv); one mask for all T steps
 *    (against the test's own double simulation), drawn once per batch from
 *    its rng, none at prediction, rate 0 draws nothing; finite differences
 *    in double with the masks held;
 *  - the multi-layer conv form (AlexNet-F in small: transposed-conv
 *    feedback, S_k with and without batchnorm): golden values, finite
 *    differences in double against the test's own plain-loop model, SGD
 *    steps, the memory plan flat in T; dense S_k batchnorm against the same
 *    net written as 1x1 convs.
 * Float tolerances: every golden comparison is 1e-5 relative (atol 1e-6 or
 * 1e-7: entries near zero); the adjoint system is solved to ide_tol = 1e-7.
 * Finite differences: 1e-3 relative + 2e-6 absolute, because the rule's
 * gradient is float32 at the float32 fixed point while the differences are
 * taken in double at the double one (step 1e-6).
 */
#include "check.h"
#include "rule/ide.h"
#include <stdio.h>

static const float *fx(const soma_st *st, const char *name, size_t *n)
{
    const soma_st_tensor *t = soma_st_find(st, name);
    if (!t) { fprintf(stderr, "fixture tensor '%s' missing\n", name); CHECK(t != NULL); return NULL; }
    if (n) *n = t->nbytes / 4;
    return t->data;
}

static void config_from_meta(soma_rule_config *rc, const soma_st *st)
{
    soma_rule_config_default(rc);
    soma_optim_config_default(&rc->optim, SOMA_OPTIM_SGD);
    rc->T = atoi(soma_st_meta(st, "T"));
    rc->ide_leak = strtof(soma_st_meta(st, "leak"), NULL);
    rc->ide_vth = strtof(soma_st_meta(st, "vth"), NULL);
    rc->ide_sn = atoi(soma_st_meta(st, "sn"));
    rc->ide_sn_c = strtof(soma_st_meta(st, "sn_c"), NULL);
    rc->ide_tol = 1e-7f;
    if (soma_st_meta(st, "sn_kernel")) rc->ide_sn_kernel = atoi(soma_st_meta(st, "sn_kernel"));
    if (soma_st_meta(st, "fb_k")) rc->ide_fb_k = atoi(soma_st_meta(st, "fb_k"));
    if (soma_st_meta(st, "dropout")) rc->ide_dropout = strtof(soma_st_meta(st, "dropout"), NULL);
}

/* dropout fixtures: the reference's masks into the rule (mask.<k>, mask.fb) */
static void load_masks(soma_rule *r, const soma_st *st)
{
    ide_state *e = r->state;
    if (!soma_st_meta(st, "dropout")) return;
    for (int k = 1; k <= e->H + 1; k++) {
        char key[32];
        if (k <= e->H) snprintf(key, sizeof key, "mask.%d", k);
        else snprintf(key, sizeof key, "mask.fb");
        const soma_st_tensor *t = soma_st_find(st, key);
        if (!CHECK(t != NULL && e->drop_alloc)) return;
        memcpy(k <= e->H ? e->drop[k] : e->drop_fb, t->data, t->nbytes);
    }
}

/* spike-input fixtures: x holds T frames a sample (frame t contiguous) */
static int is_frames(const soma_st *st) { return soma_st_meta(st, "frames") != NULL; }

/* input shape (c, h, w) of a fixture: its in_c/in_h/in_w, else (n0, 1, 1) */
static void in_shape(const soma_st *st, int *c, int *h, int *w)
{
    if (soma_st_meta(st, "in_c")) {
        *c = atoi(soma_st_meta(st, "in_c"));
        *h = atoi(soma_st_meta(st, "in_h"));
        *w = atoi(soma_st_meta(st, "in_w"));
    } else {
        *c = atoi(soma_st_meta(st, "spec"));
        *h = *w = 1;
    }
}

static int new_net_shape(soma_net **net, const char *spec, int c, int h, int w)
{
    soma_net_options o;
    soma_net_options_default(&o);
    o.in_c = c; o.in_h = h; o.in_w = w;
    return soma_net_new(net, spec, &o) == SOMA_OK;
}

static int new_net(soma_net **net, const char *spec)
{
    return new_net_shape(net, spec, atoi(spec), 1, 1);
}

/* Builds the fixture's net and rule and loads every init.* tensor. */
static int build(const soma_st *st, soma_rule_config *rc, soma_net **net, soma_rule **rule, int B)
{
    int c, h, w;
    in_shape(st, &c, &h, &w);
    if (is_frames(st)) {
        rc->encoding = SOMA_ENC_FRAMES;
        rc->sample_size = rc->T * c * h * w;
    }
    if (!CHECK(new_net_shape(net, soma_st_meta(st, "spec"), c, h, w))) return 0;
    if (!CHECK(soma_rule_new(rule, "ide", *net, rc, B) == SOMA_OK)) {
        fprintf(stderr, "%s\n", soma_last_error());
        soma_net_free(*net);
        return 0;
    }
    for (int i = 0; i < soma_net_tensor_count(*net); i++) {
        const char *name;
        int64_t shape[4];
        int ndim, is_param;
        float *v = soma_net_tensor(*net, i, &name, &ndim, shape, &is_param);
        char key[96];
        snprintf(key, sizeof key, "init.%s", name);
        size_t n;
        const float *src = fx(st, key, &n);
        if (src) memcpy(v, src, n * sizeof(float));
    }
    load_masks(*rule, st);
    return 1;
}

/* One fixture case: the file, its rule config, the net and rule (build) and
 * the batch of its x and y (spike fixtures: T frames a sample). */
typedef struct {
    soma_st *st;
    soma_rule_config rc;
    soma_net *net;
    soma_rule *r;
    soma_batch b;
    size_t nx;   /* floats in x */
} fixture_case;

/* Opens tests/fixtures/ide_<name>.safetensors: the config from its metadata,
 * changed by tune (when given) before the rule is built. */
static int open_fixture_case(fixture_case *fc, const char *name, void (*tune)(soma_rule_config *))
{
    char path[256];
    snprintf(path, sizeof path, "tests/fixtures/ide_%s.safetensors", name);
    if (!CHECK(soma_st_read(&fc->st, path) == SOMA_OK)) { fprintf(stderr, "%s\n", soma_last_error()); return 0; }
    config_from_meta(&fc->rc, fc->st);
    if (tune) tune(&fc->rc);
    size_t ny = 0;
    const float *x = fx(fc->st, "x", &fc->nx);
    const int32_t *y = (const int32_t *)fx(fc->st, "y", &ny);
    int c, h, w;
    in_shape(fc->st, &c, &h, &w);
    soma_batch b = { .n = (int)ny, .c = c * (is_frames(fc->st) ? fc->rc.T : 1), .h = h, .w = w,
                     .x = (float *)x, .y = (int32_t *)y };
    fc->b = b;
    if (!build(fc->st, &fc->rc, &fc->net, &fc->r, b.n)) { soma_st_free(fc->st); return 0; }
    return 1;
}

static void close_fixture_case(fixture_case *fc)
{
    soma_rule_free(fc->r);
    soma_net_free(fc->net);
    soma_st_free(fc->st);
}

static void compare_grads(const char *label, soma_net *net, const soma_st *st, const char *prefix,
                          double rtol)
{
    for (int i = 0; i < soma_net_tensor_count(net); i++) {
        const char *name;
        int is_param;
        float *v = soma_net_tensor(net, i, &name, NULL, NULL, &is_param);
        if (!is_param) continue;
        char key[96], lab[192];
        snprintf(key, sizeof key, "%s%s", prefix, name);
        snprintf(lab, sizeof lab, "%s %s", label, key);
        size_t n;
        const float *want = fx(st, key, &n);
        const float *g = soma_net_param_grads(net) + (v - soma_net_param_values(net));
        if (want) check_close_f(lab, g, want, n, rtol, 1e-6);
    }
}

/* a <- f(a) iterated until it stops moving (float) */
static void fixed_point(soma_rule *r, float *a, int B, int iters)
{
    ide_state *e = r->state;
    size_t m = (size_t)B * e->n[e->H];
    float *t = malloc(m * sizeof(float));
    for (int k = 0; k < iters; k++) {
        soma__ide_map(r, t, a, B);
        memcpy(a, t, m * sizeof(float));
    }
    free(t);
}

/* event: the simulation's products (ide.h's e->event): 0 by the spike
 * count, 1 always event-driven, -1 always the GEMM (dense forms; the conv
 * forms always take the conv kernels) */
static void golden_ev(const char *name, int event)
{
    fixture_case fc;
    if (!open_fixture_case(&fc, name, NULL)) return;
    size_t n, nx = fc.nx;
    int B = fc.b.n;
    ide_state *e = fc.r->state;
    e->event = event;
    int ic, ih, iw, nf = is_frames(fc.st) ? fc.rc.T : 1;
    in_shape(fc.st, &ic, &ih, &iw);
    CHECK((size_t)ic * ih * iw * B * nf == nx);
    char lab[192];
    soma_step_stats sst = { 0 };
    CHECK(soma__ide_grad(fc.r, &fc.b, 1, &sst) == SOMA_OK);
    if (event > 0) CHECK(e->ev_products > 0 && e->gemm_products == 0);
    if (event < 0) CHECK(e->ev_products == 0);
    char tag[48];
    snprintf(tag, sizeof tag, "%s%s", name, event > 0 ? " (events)" : event < 0 ? " (gemm)" : "");
    name = tag;
    if (nf > 1) {   /* spike input: the weighted average input f sees */
        CHECK(e->frames == 1);
        snprintf(lab, sizeof lab, "%s x-bar", name);
        const float *xb = fx(fc.st, "xbar", &n);
        if (xb) check_close_f(lab, e->xbar, xb, n, 1e-6, 1e-7);
    }
    /* F's batchnorm: running statistics updated once by the batch (notes 2.5) */
    for (int i = 0; i < soma_net_tensor_count(fc.net); i++) {
        const char *tn;
        float *v = soma_net_tensor(fc.net, i, &tn, NULL, NULL, NULL);
        char key[96];
        snprintf(key, sizeof key, "after.%s", tn);
        if (!soma_st_find(fc.st, key)) continue;
        snprintf(lab, sizeof lab, "%s %s", name, key);
        const float *after = fx(fc.st, key, &n);
        check_close_f(lab, v, after, n, 1e-5, 1e-7);
    }
    int nH = e->n[e->H];
    int drop = fc.rc.ide_dropout > 0;   /* the direct map calls below: with the batch's masks */
    snprintf(lab, sizeof lab, "%s weff", name);
    const float *w = fx(fc.st, "weff", &n);
    if (w) check_close_f(lab, e->weff, w, n, 1e-5, 1e-7);
    snprintf(lab, sizeof lab, "%s rates", name);
    const float *want = fx(fc.st, "rates", &n);
    if (want) check_close_f(lab, e->a, want, n, 1e-5, 1e-7);
    float *fa = malloc((size_t)B * nH * sizeof(float));
    e->drop_on = drop;
    soma__ide_map(fc.r, fa, e->a, B);
    e->drop_on = 0;
    snprintf(lab, sizeof lab, "%s f(a_T)", name);
    if ((want = fx(fc.st, "fa", &n))) check_close_f(lab, fa, want, n, 1e-5, 1e-6);
    soma_ide_diag d;
    CHECK(soma_ide_diagnostics(fc.r, &d, 0) == SOMA_OK);
    CHECK(d.batches == 1 && d.residual <= fc.rc.ide_tol && d.iters >= 1);
    if (d.residual > fc.rc.ide_tol) fprintf(stderr, "%s: Broyden residual %.3g\n", name, d.residual);
    snprintf(lab, sizeof lab, "%s broyden at a_T", name);
    compare_grads(lab, fc.net, fc.st, "grad.", 1e-5);

    /* the damped fixed-point iteration gives the same gradient */
    fc.r->cfg.ide_iter = 1;
    fc.r->cfg.ide_max_iter = 300;
    CHECK(soma__ide_grad_at(fc.r, &fc.b, e->a, NULL) == SOMA_OK);
    CHECK(soma_ide_diagnostics(fc.r, &d, 0) == SOMA_OK && d.residual <= fc.rc.ide_tol);
    snprintf(lab, sizeof lab, "%s fixed-point iteration at a_T", name);
    compare_grads(lab, fc.net, fc.st, "grad.", 1e-5);
    fc.r->cfg.ide_iter = 0;
    fc.r->cfg.ide_max_iter = 30;

    /* the fixed point and the gradient there */
    memcpy(fa, e->a, (size_t)B * nH * sizeof(float));
    e->drop_on = drop;
    fixed_point(fc.r, fa, B, 500);
    e->drop_on = 0;
    snprintf(lab, sizeof lab, "%s fixed point", name);
    if ((want = fx(fc.st, "fixed", &n))) check_close_f(lab, fa, want, n, 1e-5, 1e-6);
    CHECK(soma__ide_grad_at(fc.r, &fc.b, fa, NULL) == SOMA_OK);
    snprintf(lab, sizeof lab, "%s at a*", name);
    compare_grads(lab, fc.net, fc.st, "grad_fp.", 1e-5);

    /* spectral norm: the power iteration converges to the SVD's sigma */
    const float *sv = soma_st_find(fc.st, "sigma_svd") ? fx(fc.st, "sigma_svd", NULL) : NULL;
    if (sv) {
        for (int k = 0; k < 300; k++) soma__ide_weight(fc.r, 1);
        CHECK(fabs(e->sigma - sv[0]) <= 1e-5 * sv[0]);
        if (fabs(e->sigma - sv[0]) > 1e-5 * sv[0])
            fprintf(stderr, "sigma %.9g, svd %.9g\n", e->sigma, sv[0]);
    }
    free(fa);
    close_fixture_case(&fc);
}

static void golden(const char *name) { golden_ev(name, 0); }

/* ---- double-precision single-layer model (the test's own) ---------------- */

typedef struct dmodel {
    int B, n0, n1, C;
    double *F, *b1, *W, *R, *bR;   /* F (n1,n0), W (n1,n1), R (C,n1) */
    const float *x;
    const int32_t *y;
    double V;
    const float *mF, *mW;          /* dropout masks (B,n1) of F's and W's outputs, or NULL */
} dmodel;

static double *dcopy(const float *src, size_t n)
{
    double *d = malloc(n * sizeof(double));
    for (size_t i = 0; i < n; i++) d[i] = src[i];
    return d;
}

/* out = f(a) for every sample; pre (may be NULL) receives the pre-activation / V */
static void dmap(const dmodel *m, double *out, double *pre, const double *a)
{
    for (int s = 0; s < m->B; s++)
        for (int i = 0; i < m->n1; i++) {
            double z = m->b1[i], zw = 0;
            size_t q = (size_t)s * m->n1 + i;
            for (int j = 0; j < m->n0; j++) z += m->F[(size_t)i * m->n0 + j] * m->x[(size_t)s * m->n0 + j];
            for (int j = 0; j < m->n1; j++) zw += m->W[(size_t)i * m->n1 + j] * a[(size_t)s * m->n1 + j];
            z = (m->mF ? m->mF[q] * z : z) + (m->mW ? m->mW[q] * zw : zw);
            z /= m->V;
            if (pre) pre[(size_t)s * m->n1 + i] = z;
            out[(size_t)s * m->n1 + i] = z < 0 ? 0 : z > 1 ? 1 : z;
        }
}

/* mean CE of the readout at a; dlogits -> da (may be NULL) */
static double dloss(const dmodel *m, const double *a, double *da, double *dR, double *dbR)
{
    double L = 0;
    for (int s = 0; s < m->B; s++) {
        double lg[16] = { 0 }, mx = -1e300, z = 0;
        for (int c = 0; c < m->C; c++) {
            lg[c] = m->bR[c];
            for (int j = 0; j < m->n1; j++) lg[c] += m->R[(size_t)c * m->n1 + j] * a[(size_t)s * m->n1 + j];
            if (lg[c] > mx) mx = lg[c];
        }
        for (int c = 0; c < m->C; c++) z += exp(lg[c] - mx);
        L += -(lg[m->y[s]] - mx - log(z)) / m->B;
        for (int c = 0; c < m->C; c++) {
            double dl = (exp(lg[c] - mx) / z - (c == m->y[s])) / m->B;
            for (int j = 0; j < m->n1; j++) {
                if (da) da[(size_t)s * m->n1 + j] += dl * m->R[(size_t)c * m->n1 + j];
                if (dR) dR[(size_t)c * m->n1 + j] += dl * a[(size_t)s * m->n1 + j];
            }
            if (dbR) dbR[c] += dl;
        }
    }
    return L;
}

static double loss_at_fixed_point(const dmodel *m)
{
    size_t n = (size_t)m->B * m->n1;
    double *a = calloc(n, sizeof(double)), *t = malloc(n * sizeof(double));
    for (int k = 0; k < 5000; k++) {
        dmap(m, t, NULL, a);
        double diff = 0;
        for (size_t i = 0; i < n; i++) { diff = fmax(diff, fabs(t[i] - a[i])); a[i] = t[i]; }
        if (diff < 1e-15) break;
    }
    double L = dloss(m, a, NULL, NULL, NULL);
    free(a); free(t);
    return L;
}

/* BPTT through K iterations of the map from a = 0: gradients of every parameter */
static void bptt(const dmodel *m, int K, double *gF, double *gb, double *gW, double *gR, double *gbR)
{
    size_t n = (size_t)m->B * m->n1;
    double *as = calloc((size_t)(K + 1) * n, sizeof(double)), *pre = malloc((size_t)(K + 1) * n * sizeof(double));
    for (int k = 1; k <= K; k++) dmap(m, as + k * n, pre + k * n, as + (k - 1) * n);
    double *d = calloc(n, sizeof(double)), *dn = malloc(n * sizeof(double));
    dloss(m, as + K * n, d, gR, gbR);
    for (int k = K; k >= 1; k--) {
        const double *pk = pre + k * n, *ap = as + (k - 1) * n;
        memset(dn, 0, n * sizeof(double));
        for (int s = 0; s < m->B; s++)
            for (int i = 0; i < m->n1; i++) {
                size_t q = (size_t)s * m->n1 + i;
                double e = pk[q] >= 0 && pk[q] <= 1 ? d[q] / m->V : 0;   /* through the clamp */
                if (e == 0) continue;
                gb[i] += e;
                for (int j = 0; j < m->n0; j++) gF[(size_t)i * m->n0 + j] += e * m->x[(size_t)s * m->n0 + j];
                for (int j = 0; j < m->n1; j++) {
                    gW[(size_t)i * m->n1 + j] += e * ap[(size_t)s * m->n1 + j];
                    dn[(size_t)s * m->n1 + j] += e * m->W[(size_t)i * m->n1 + j];
                }
            }
        memcpy(d, dn, n * sizeof(double));
    }
    free(as); free(pre); free(d); free(dn);
}

static float *grad_of(soma_net *net, const char *want, size_t *n)
{
    for (int i = 0; i < soma_net_tensor_count(net); i++) {
        const char *name;
        int is_param, ndim;
        int64_t shape[4];
        float *v = soma_net_tensor(net, i, &name, &ndim, shape, &is_param);
        if (!is_param || strcmp(name, want)) continue;
        *n = 1;
        for (int k = 0; k < ndim; k++) *n *= (size_t)shape[k];
        return soma_net_param_grads(net) + (v - soma_net_param_values(net));
    }
    return NULL;
}

static float *value_of(soma_net *net, const char *want)
{
    for (int i = 0; i < soma_net_tensor_count(net); i++) {
        const char *name;
        int is_param;
        float *v = soma_net_tensor(net, i, &name, NULL, NULL, &is_param);
        if (!strcmp(name, want)) return v;
    }
    return NULL;
}

/* Central differences of the loss at the double fixed point against the
 * rule's gradient (in the net's grad store) for every parameter of m. */
static void fd_dense(const char *tag, soma_net *net, dmodel *m)
{
    struct { const char *name; double *p; } ps[] = {
        { "0.weight", m->F }, { "0.bias", m->b1 }, { "0.weight_fb", m->W }, { "2.weight", m->R },
        { "2.bias", m->bR },
    };
    const double h = 1e-6;
    for (size_t k = 0; k < sizeof ps / sizeof *ps; k++) {
        size_t n;
        const float *g = grad_of(net, ps[k].name, &n);
        if (!CHECK(g != NULL)) continue;
        double *fd = malloc(n * sizeof(double)), *gd = malloc(n * sizeof(double));
        for (size_t i = 0; i < n; i++) {
            double keep = ps[k].p[i];
            ps[k].p[i] = keep + h;
            double lp = loss_at_fixed_point(m);
            ps[k].p[i] = keep - h;
            double lm = loss_at_fixed_point(m);
            ps[k].p[i] = keep;
            fd[i] = (lp - lm) / (2 * h);
            gd[i] = g[i];
        }
        char lab[96];
        snprintf(lab, sizeof lab, "finite differences %s%s", tag, ps[k].name);
        check_close_d(lab, gd, fd, n, 1e-3, 2e-6);
        free(fd); free(gd);
    }
}

/* Finite differences and the BPTT oracle on the single-layer IF fixture. */
static void double_checks(void)
{
    fixture_case fc;
    if (!open_fixture_case(&fc, "if", NULL)) return;
    const float *x = fc.b.x;
    const int32_t *y = fc.b.y;
    int B = fc.b.n;
    ide_state *e = fc.r->state;
    dmodel m = { .B = B, .n0 = e->n[0], .n1 = e->n[1], .C = e->C, .x = x, .y = y, .V = fc.rc.ide_vth };
    m.F = dcopy(value_of(fc.net, "0.weight"), (size_t)m.n1 * m.n0);
    m.b1 = dcopy(value_of(fc.net, "0.bias"), m.n1);
    m.W = dcopy(value_of(fc.net, "0.weight_fb"), (size_t)m.n1 * m.n1);
    m.R = dcopy(value_of(fc.net, "2.weight"), (size_t)m.C * m.n1);
    m.bR = dcopy(value_of(fc.net, "2.bias"), m.C);

    /* IDE gradient at the (float) fixed point */
    soma__ide_simulate(fc.r, x, B);
    size_t nA = (size_t)B * m.n1;
    float *a = malloc(nA * sizeof(float));
    memcpy(a, e->a, nA * sizeof(float));
    fixed_point(fc.r, a, B, 500);
    CHECK(soma__ide_grad_at(fc.r, &fc.b, a, NULL) == SOMA_OK);

    fd_dense("", fc.net, &m);

    /* BPTT through the rate map converges to the IDE gradient as K grows */
    size_t nF = (size_t)m.n1 * m.n0, nW = (size_t)m.n1 * m.n1, nR = (size_t)m.C * m.n1;
    size_t tot = nF + m.n1 + nW + nR + m.C;
    double *ide = malloc(tot * sizeof(double)), *bp = malloc(tot * sizeof(double));
    {
        size_t o = 0, n;
        const char *names[] = { "0.weight", "0.bias", "0.weight_fb", "2.weight", "2.bias" };
        for (int k = 0; k < 5; k++) {
            const float *g = grad_of(fc.net, names[k], &n);
            for (size_t i = 0; i < n; i++) ide[o++] = g[i];
        }
    }
    double nrm = 0;
    for (size_t i = 0; i < tot; i++) nrm += ide[i] * ide[i];
    nrm = sqrt(nrm);
    int Ks[] = { 2, 5, 10, 40, 200 };
    double prev = INFINITY, last = 0;
    int mono = 1;
    for (int q = 0; q < 5; q++) {
        memset(bp, 0, tot * sizeof(double));
        bptt(&m, Ks[q], bp, bp + nF, bp + nF + m.n1, bp + nF + m.n1 + nW, bp + nF + m.n1 + nW + nR);
        double err = 0;
        for (size_t i = 0; i < tot; i++) err += (bp[i] - ide[i]) * (bp[i] - ide[i]);
        err = sqrt(err) / nrm;
        printf("  BPTT through the rate map, K = %3d: |g_bptt - g_ide| / |g_ide| = %.3g\n", Ks[q], err);
        if (err > prev * 1.0001 && err > 1e-6) mono = 0;
        prev = last = err;
    }
    CHECK(mono);
    CHECK(last < 1e-5);

    /* Theorem 1: with |W|_2 < V_th the IF rates approach the fixed point as T grows */
    int Ts[] = { 10, 100, 1000 };
    double gaps[3];
    for (int q = 0; q < 3; q++) {
        fc.r->cfg.T = Ts[q];
        soma__ide_simulate(fc.r, x, B);
        double ss = 0;
        for (size_t i = 0; i < nA; i++) ss += ((double)e->a[i] - a[i]) * ((double)e->a[i] - a[i]);
        gaps[q] = sqrt(ss / nA);
        printf("  IF rates vs fixed point, T = %4d: RMS gap %.3g\n", Ts[q], gaps[q]);
    }
    CHECK(gaps[1] < gaps[0] && gaps[2] < gaps[1] && gaps[2] < 5e-3);
    /* the public curve (its own fixed point, from a_1000) gives the same gaps */
    {
        double g2[3], change = 1;
        CHECK(soma_ide_rate_gap(fc.r, &fc.b, Ts, 3, g2, &change) == SOMA_OK);
        CHECK(change <= 1e-6 && fc.r->cfg.T == Ts[2]);   /* T as it was */
        for (int q = 0; q < 3; q++) CHECK(fabs(g2[q] - gaps[q]) < 1e-5 + 1e-3 * gaps[q]);
        int bad[1] = { 0 };
        CHECK(soma_ide_rate_gap(fc.r, &fc.b, bad, 1, g2, NULL) == SOMA_ERR_ARG);
    }
    /* Theorem 2: with the leak (LIF 0.95) the gap to the same fixed point stays bounded */
    fc.r->cfg.ide_leak = 0.95f;
    double worst = 0;
    for (int q = 0; q < 3; q++) {
        fc.r->cfg.T = Ts[q];
        soma__ide_simulate(fc.r, x, B);
        double ss = 0;
        for (size_t i = 0; i < nA; i++) ss += ((double)e->a[i] - a[i]) * ((double)e->a[i] - a[i]);
        ss = sqrt(ss / nA);
        printf("  LIF 0.95 rates vs fixed point, T = %4d: RMS gap %.3g\n", Ts[q], ss);
        if (!(ss <= worst)) worst = ss;
    }
    CHECK(worst < 0.25);
    fc.r->cfg.ide_leak = fc.rc.ide_leak;
    fc.r->cfg.T = fc.rc.T;

    free(ide); free(bp); free(a);
    free(m.F); free(m.b1); free(m.W); free(m.R); free(m.bR);
    close_fixture_case(&fc);
}

/* ---- solver reporting, training, bad input -------------------------------- */

static void strict_tune(soma_rule_config *rc) { rc->ide_strict = 1; rc->ide_max_iter = 1; }

static void strict_and_training(void)
{
    fixture_case fc;
    if (!open_fixture_case(&fc, "lif_ml", strict_tune)) return;
    soma_rng rng;
    soma_rng_seed(&rng, 1);
    CHECK(soma_rule_train_batch(fc.r, &fc.b, 0.1f, &rng, NULL) == SOMA_ERR_NUMERIC);
    CHECK(strstr(soma_last_error(), "residual") != NULL);
    soma_ide_diag d;
    CHECK(soma_ide_diagnostics(fc.r, &d, 1) == SOMA_OK && d.unconverged == 1 && d.residual > fc.rc.ide_tol);
    /* back to the defaults: a few SGD steps lower the loss on the batch */
    fc.r->cfg.ide_strict = 0;
    fc.r->cfg.ide_max_iter = 30;
    soma_step_stats s0 = { 0 }, s1 = { 0 };
    const float *scores;
    CHECK(soma_rule_predict(fc.r, &fc.b, &scores, &s0) == SOMA_OK);
    for (int k = 0; k < 30; k++) CHECK(soma_rule_train_batch(fc.r, &fc.b, 0.2f, &rng, NULL) == SOMA_OK);
    CHECK(soma_rule_predict(fc.r, &fc.b, &scores, &s1) == SOMA_OK);
    printf("  30 SGD steps on one batch: loss %.4f -> %.4f\n", s0.loss / s0.n, s1.loss / s1.n);
    CHECK(s1.loss < s0.loss);
    soma_mem_plan p;
    soma_rule_plan(fc.r, &p);
    CHECK(p.activations > 0 && p.total > p.activations);
    close_fixture_case(&fc);
}

/* n SGD steps (lr 0.05) on one batch: the first and the last step's mean loss */
static void sgd_steps(soma_rule *r, const soma_batch *b, int n, double *first, double *last)
{
    soma_rng rng;
    soma_rng_seed(&rng, 1);
    for (int k = 0; k < n; k++) {
        soma_step_stats s = { 0 };
        if (!CHECK(soma_rule_train_batch(r, b, 0.05f, &rng, &s) == SOMA_OK)) {
            fprintf(stderr, "%s\n", soma_last_error());
            break;
        }
        if (k == 0) *first = s.loss / s.n;
        *last = s.loss / s.n;
    }
}

/* ---- variational dropout ---------------------------------------------------- */

/* The single-layer IF simulation in double with the masks m->mF, m->mW
 * applied at every step (the test's own): rates (B, n1); returns the
 * smallest |u - V| seen at a threshold test. */
static double dsimulate(const dmodel *m, double *rates, int T)
{
    size_t n = (size_t)m->B * m->n1;
    double *u = calloc(n, sizeof(double)), *s = calloc(n, sizeof(double)), *sn = malloc(n * sizeof(double));
    double margin = INFINITY;
    memset(rates, 0, n * sizeof(double));
    for (int t = 0; t < T; t++) {
        for (int b = 0; b < m->B; b++)
            for (int i = 0; i < m->n1; i++) {
                size_t q = (size_t)b * m->n1 + i;
                double z = m->b1[i], zw = 0;
                for (int j = 0; j < m->n0; j++) z += m->F[(size_t)i * m->n0 + j] * m->x[(size_t)b * m->n0 + j];
                for (int j = 0; j < m->n1; j++) zw += m->W[(size_t)i * m->n1 + j] * s[(size_t)b * m->n1 + j];
                u[q] += m->mF[q] * z + (t > 0 ? m->mW[q] * zw : 0.0);
                margin = fmin(margin, fabs(u[q] - m->V));
                sn[q] = u[q] >= m->V;
                u[q] -= m->V * sn[q];
            }
        for (size_t q = 0; q < n; q++) { s[q] = sn[q]; rates[q] += sn[q] / T; }
    }
    free(u); free(s); free(sn);
    return margin;
}

/* ide-dropout: rate 0 allocates, draws and multiplies nothing; the masks of
 * a batch come from its rng, once, in a fixed order, with values 0 or
 * 1/(1-p); the simulation uses the same mask at every step (against the
 * test's own double simulation); masks of ones give the gradient without
 * dropout; prediction uses none; in double the gradient with the masks held
 * fixed matches central finite differences at the re-solved fixed point. */
static void dropout_checks(void)
{
    soma_st *st;
    if (!CHECK(soma_st_read(&st, "tests/fixtures/ide_if.safetensors") == SOMA_OK)) return;
    soma_rule_config r0, rd;
    config_from_meta(&r0, st);
    config_from_meta(&rd, st);
    rd.ide_dropout = 0.2f;
    size_t nx, ny;
    const float *x = fx(st, "x", &nx);
    const int32_t *y = (const int32_t *)fx(st, "y", &ny);
    int B = (int)ny;
    soma_net *n0, *nd;
    soma_rule *a, *d;
    if (!build(st, &r0, &n0, &a, B)) { soma_st_free(st); return; }
    if (!build(st, &rd, &nd, &d, B)) { soma_rule_free(a); soma_net_free(n0); soma_st_free(st); return; }
    ide_state *ea = a->state, *ed = d->state;
    int n1 = ed->n[1];
    size_t m1 = (size_t)B * n1;
    soma_batch b = { .n = B, .c = (int)(nx / ny), .h = 1, .w = 1, .x = (float *)x, .y = (int32_t *)y };
    /* rate 0: no masks, the rng untouched by a training step */
    CHECK(ea->drop_alloc == 0 && ed->drop_alloc == 1);
    soma_rng g0, g1;
    soma_rng_seed(&g0, 5);
    g1 = g0;
    CHECK(soma_rule_train_batch(a, &b, 0.05f, &g0, NULL) == SOMA_OK);
    CHECK(!memcmp(&g0, &g1, sizeof g0));
    soma_rule_free(a);
    soma_net_free(n0);
    if (!build(st, &r0, &n0, &a, B)) { soma_rule_free(d); soma_net_free(nd); soma_st_free(st); return; }
    ea = a->state;
    /* the masks of a training batch: drawn once from its rng (F's, then W's) */
    soma_rng_seed(&g0, 11);
    soma_rng_seed(&g1, 11);
    float *keep = malloc(2 * m1 * sizeof(float));
    CHECK(soma_rule_train_batch(d, &b, 0.05f, &g0, NULL) == SOMA_OK);
    memcpy(keep, ed->drop[1], m1 * sizeof(float));
    memcpy(keep + m1, ed->drop_fb, m1 * sizeof(float));
    soma__ide_draw_masks(d, &g1, B);
    CHECK(!memcmp(keep, ed->drop[1], m1 * sizeof(float)) && !memcmp(keep + m1, ed->drop_fb, m1 * sizeof(float)));
    CHECK(!memcmp(&g0, &g1, sizeof g0));   /* nothing else drawn */
    int zeros = 0, odd = 0;
    for (size_t i = 0; i < 2 * m1; i++) {
        zeros += keep[i] == 0.0f;
        odd += keep[i] != 0.0f && keep[i] != 1.25f;
    }
    CHECK(odd == 0 && zeros > 0 && zeros < (int)m1);
    size_t np = soma_net_param_floats(n0);   /* back to the fixture's weights */
    memcpy(soma_net_param_values(nd), soma_net_param_values(n0), np * sizeof(float));
    /* the same masks at every step: the rule's rates are the double simulation's
     * with those masks held fixed (a seed whose spikes stay clear of V) */
    dmodel m = { .B = B, .n0 = ed->n[0], .n1 = n1, .C = ed->C, .x = x, .y = y, .V = rd.ide_vth };
    m.F = dcopy(value_of(nd, "0.weight"), (size_t)n1 * m.n0);
    m.b1 = dcopy(value_of(nd, "0.bias"), n1);
    m.W = dcopy(value_of(nd, "0.weight_fb"), (size_t)n1 * n1);
    m.R = dcopy(value_of(nd, "2.weight"), (size_t)m.C * n1);
    m.bR = dcopy(value_of(nd, "2.bias"), m.C);
    m.mF = ed->drop[1];
    m.mW = ed->drop_fb;
    double *dr = malloc(m1 * sizeof(double)), margin = 0;
    int seed = 0;
    for (seed = 100; seed < 200; seed++) {
        soma_rng_seed(&g0, seed);
        soma__ide_draw_masks(d, &g0, B);
        if ((margin = dsimulate(&m, dr, rd.T)) > 1e-4) break;
    }
    CHECK(margin > 1e-4);
    ed->drop_on = 1;
    soma__ide_simulate(d, x, B);
    ed->drop_on = 0;
    double *ad = malloc(m1 * sizeof(double));
    for (size_t i = 0; i < m1; i++) ad[i] = ed->a[i];
    check_close_d("dropout: rates with one mask for all T steps", ad, dr, m1, 1e-6, 1e-6);
    soma__ide_simulate(d, x, B);   /* and the masks matter */
    int differ = 0;
    for (size_t i = 0; i < m1; i++) differ += fabs(ed->a[i] - dr[i]) > 1e-6;
    CHECK(differ > 0);
    printf("  dropout 0.2: masks from seed %d (margin %.3g), %d of %zu rates differ without them\n",
           seed, margin, differ, m1);
    /* masks of ones: the gradient without dropout */
    for (size_t i = 0; i < m1; i++) ed->drop[1][i] = ed->drop_fb[i] = 1.0f;
    CHECK(soma__ide_grad(a, &b, 0, NULL) == SOMA_OK);
    CHECK(soma__ide_grad(d, &b, 0, NULL) == SOMA_OK);
    check_close_f("dropout: masks of ones vs no dropout", soma_net_param_grads(nd), soma_net_param_grads(n0),
                  np, 1e-6, 1e-7);
    /* prediction: no dropout */
    soma__ide_draw_masks(d, &g0, B);
    const float *la, *ld;
    CHECK(soma_rule_predict(a, &b, &la, NULL) == SOMA_OK);
    CHECK(soma_rule_predict(d, &b, &ld, NULL) == SOMA_OK);
    CHECK(!memcmp(la, ld, (size_t)B * ed->C * sizeof(float)));
    /* finite differences in double with the masks held */
    soma_rng_seed(&g0, seed);
    soma__ide_draw_masks(d, &g0, B);
    ed->drop_on = 1;
    soma__ide_simulate(d, x, B);
    float *af = malloc(m1 * sizeof(float));
    memcpy(af, ed->a, m1 * sizeof(float));
    fixed_point(d, af, B, 500);
    ed->drop_on = 0;
    CHECK(soma__ide_grad_at(d, &b, af, NULL) == SOMA_OK);
    fd_dense("with dropout masks ", nd, &m);
    free(af); free(ad); free(dr); free(keep);
    free(m.F); free(m.b1); free(m.W); free(m.R); free(m.bR);
    soma_rule_free(a); soma_rule_free(d);
    soma_net_free(n0); soma_net_free(nd);
    soma_st_free(st);
}

/* ---- double-precision multi-layer conv model (the test's own) ------------- */

/* y (O,OH,OW) = conv(x (C,H,W); w) + b for one sample, plain loops */
static void dconv(double *y, const double *x, const double *w, const double *b, const soma_conv_shape *s)
{
    for (int o = 0; o < s->O; o++)
        for (int oh = 0; oh < s->OH; oh++)
            for (int ow = 0; ow < s->OW; ow++) {
                double acc = b ? b[o] : 0.0;
                for (int c = 0; c < s->C; c++)
                    for (int kh = 0; kh < s->KH; kh++)
                        for (int kw = 0; kw < s->KW; kw++) {
                            int ih = oh * s->stride - s->pad + kh, iw = ow * s->stride - s->pad + kw;
                            if (ih < 0 || ih >= s->H || iw < 0 || iw >= s->W) continue;
                            acc += w[((size_t)(o * s->C + c) * s->KH + kh) * s->KW + kw] *
                                   x[((size_t)c * s->H + ih) * s->W + iw];
                        }
                y[((size_t)o * s->OH + oh) * s->OW + ow] = acc;
            }
}

/* x (C,H,W) = conv^T(y (O,OH,OW); w): the transposed conv, written as the
 * scatter of every output tap (independent of the conv kernels' dx path) */
static void dconvt(double *x, const double *y, const double *w, const soma_conv_shape *s)
{
    memset(x, 0, (size_t)s->C * s->H * s->W * sizeof(double));
    for (int o = 0; o < s->O; o++)
        for (int oh = 0; oh < s->OH; oh++)
            for (int ow = 0; ow < s->OW; ow++) {
                double v = y[((size_t)o * s->OH + oh) * s->OW + ow];
                for (int c = 0; c < s->C; c++)
                    for (int kh = 0; kh < s->KH; kh++)
                        for (int kw = 0; kw < s->KW; kw++) {
                            int ih = oh * s->stride - s->pad + kh, iw = ow * s->stride - s->pad + kw;
                            if (ih < 0 || ih >= s->H || iw < 0 || iw >= s->W) continue;
                            x[((size_t)c * s->H + ih) * s->W + iw] +=
                                w[((size_t)(o * s->C + c) * s->KH + kh) * s->KW + kw] * v;
                        }
            }
}

/* The multi-layer conv form without S_k batchnorm: F conv + bias + batchnorm
 * (batch statistics), S_k conv + bias, the transposed-conv feedback with the
 * spectral norm at held u, v, dropout masks, a dense readout. */
typedef struct dml {
    int B, H, C, n[IDE_MAXH + 1];
    soma_conv_shape cs[IDE_MAXH + 1], wcs;
    double *p[32];                 /* parameters, by the net's param index */
    size_t np[32];
    int w[IDE_MAXH + 2], b[IDE_MAXH + 2], bn_g, bn_b, fb, g;
    double eps, V, c;
    const float *u, *v, *mask[IDE_MAXH + 1], *mfb;
    const float *x;
    const int32_t *y;
} dml;

static void dml_fx(const dml *m, double *fx)
{
    const soma_conv_shape *s = &m->cs[1];
    int n1 = m->n[1], P = s->OH * s->OW;
    double *xs = malloc((size_t)m->n[0] * sizeof(double));
    for (int b = 0; b < m->B; b++) {
        for (int i = 0; i < m->n[0]; i++) xs[i] = m->x[(size_t)b * m->n[0] + i];
        dconv(fx + (size_t)b * n1, xs, m->p[m->w[1]], m->p[m->b[1]], s);
    }
    for (int c = 0; c < s->O; c++) {   /* batchnorm, batch statistics (biased) */
        double mean = 0, var = 0, nn = (double)m->B * P;
        for (int b = 0; b < m->B; b++)
            for (int q = 0; q < P; q++) mean += fx[(size_t)b * n1 + (size_t)c * P + q] / nn;
        for (int b = 0; b < m->B; b++)
            for (int q = 0; q < P; q++) {
                double dd = fx[(size_t)b * n1 + (size_t)c * P + q] - mean;
                var += dd * dd / nn;
            }
        for (int b = 0; b < m->B; b++)
            for (int q = 0; q < P; q++) {
                double *z = &fx[(size_t)b * n1 + (size_t)c * P + q];
                *z = (*z - mean) / sqrt(var + m->eps) * m->p[m->bn_g][c] + m->p[m->bn_b][c];
            }
    }
    for (size_t i = 0; i < (size_t)m->B * n1; i++) fx[i] *= m->mask[1][i];
    free(xs);
}

static double dml_loss_at_fp(const dml *m, const double *a0)
{
    int H = m->H, n1 = m->n[1], nH = m->n[H];
    size_t nA = (size_t)m->B * nH, wn = m->np[m->fb];
    double *fx = malloc((size_t)m->B * n1 * sizeof(double)), *weff = malloc(wn * sizeof(double));
    double *a = malloc(nA * sizeof(double)), *z[IDE_MAXH + 1], *vv = malloc((size_t)nH * sizeof(double));
    for (int k = 1; k <= H; k++) z[k] = malloc((size_t)m->n[k] * sizeof(double));
    dml_fx(m, fx);
    /* W = clamp(alpha, -c, c) w / sigma, sigma = u^T (W v) at the held u, v */
    for (int j = 0; j < nH; j++) vv[j] = m->v[j];
    dconvt(z[1], vv, m->p[m->fb], &m->wcs);
    double sig = 0, al = fmin(fmax(m->p[m->g][0], -m->c), m->c);
    for (int i = 0; i < n1; i++) sig += m->u[i] * z[1][i];
    for (size_t i = 0; i < wn; i++) weff[i] = al * m->p[m->fb][i] / sig;
    memcpy(a, a0, nA * sizeof(double));
    for (int it = 0; it < 5000; it++) {
        double diff = 0;
        for (int b = 0; b < m->B; b++) {
            double *ab = a + (size_t)b * nH;
            dconvt(z[1], ab, weff, &m->wcs);
            for (int i = 0; i < n1; i++) {
                size_t q = (size_t)b * n1 + i;
                double t = (m->mfb[q] * z[1][i] + fx[q]) / m->V;
                z[1][i] = t < 0 ? 0 : t > 1 ? 1 : t;
            }
            for (int k = 2; k <= H; k++) {
                dconv(z[k], z[k - 1], m->p[m->w[k]], m->p[m->b[k]], &m->cs[k]);
                for (int i = 0; i < m->n[k]; i++) {
                    double t = m->mask[k][(size_t)b * m->n[k] + i] * z[k][i] / m->V;
                    z[k][i] = t < 0 ? 0 : t > 1 ? 1 : t;
                }
            }
            for (int i = 0; i < nH; i++) { diff = fmax(diff, fabs(z[H][i] - ab[i])); ab[i] = z[H][i]; }
        }
        if (diff < 1e-15) break;
    }
    double L = 0;   /* mean cross-entropy of the readout */
    const double *R = m->p[m->w[H + 1]], *bR = m->p[m->b[H + 1]];
    for (int b = 0; b < m->B; b++) {
        double lg[16], mx = -1e300, zz = 0;
        for (int c = 0; c < m->C; c++) {
            lg[c] = bR[c];
            for (int j = 0; j < nH; j++) lg[c] += R[(size_t)c * nH + j] * a[(size_t)b * nH + j];
            mx = fmax(mx, lg[c]);
        }
        for (int c = 0; c < m->C; c++) zz += exp(lg[c] - mx);
        L += -(lg[m->y[b]] - mx - log(zz)) / m->B;
    }
    for (int k = 1; k <= H; k++) free(z[k]);
    free(fx); free(weff); free(a); free(vv);
    return L;
}

/* The multi-layer conv fixture (transposed-conv feedback, F's batchnorm,
 * dropout masks, spectral norm): the rule's gradient at its fixed point
 * against central differences of the double model's loss at the re-solved
 * fixed point, 8 entries of every parameter tensor. */
static void mlconv_double(void)
{
    fixture_case fc;
    if (!open_fixture_case(&fc, "mlconv", NULL)) return;
    const float *x = fc.b.x;
    const int32_t *y = fc.b.y;
    int B = fc.b.n;
    ide_state *e = fc.r->state;
    CHECK(e->fbk == IDE_FB_CONVT && e->H == 3 && e->sbn == 0 && e->bn_g[1] >= 0);
    CHECK(soma__ide_grad(fc.r, &fc.b, 1, NULL) == SOMA_OK);   /* u, v after one power iteration */
    size_t nA = (size_t)B * e->n[e->H];
    float *af = malloc(nA * sizeof(float));
    memcpy(af, e->a, nA * sizeof(float));
    e->drop_on = 1;
    fixed_point(fc.r, af, B, 2000);
    e->drop_on = 0;
    CHECK(soma__ide_grad_at(fc.r, &fc.b, af, NULL) == SOMA_OK);
    dml m = { .B = B, .H = e->H, .C = e->C, .wcs = e->wcs, .fb = e->fb, .g = e->sn_g,
              .bn_g = e->bn_g[1], .bn_b = e->bn_b[1], .eps = e->bn_eps[1], .V = fc.rc.ide_vth,
              .c = fc.rc.ide_sn_c, .x = x, .y = y, .mfb = e->drop_fb };
    m.u = soma__buffer_value(fc.net, e->sn_u);
    m.v = soma__buffer_value(fc.net, e->sn_v);
    for (int k = 0; k <= e->H; k++) {
        m.n[k] = e->n[k];
        m.cs[k] = e->cs[k];
        m.mask[k] = e->drop[k];
    }
    for (int k = 1; k <= e->H + 1; k++) { m.w[k] = e->w[k]; m.b[k] = e->b[k]; }
    int npar = fc.net->params.count;
    if (!CHECK(npar <= 32)) { close_fixture_case(&fc); return; }
    for (int i = 0; i < npar; i++) {
        m.np[i] = fc.net->params.p[i].n;
        m.p[i] = dcopy(soma__param_value(fc.net, i), m.np[i]);
    }
    double *a0 = malloc(nA * sizeof(double));
    for (size_t i = 0; i < nA; i++) a0[i] = af[i];
    const double h = 1e-6;
    for (int i = 0; i < npar; i++) {
        enum { NE = 8 };
        size_t n = m.np[i], ne = n < NE ? n : NE;
        double fd[NE], gd[NE];
        const float *g = soma__param_grad(fc.net, i);
        for (size_t q = 0; q < ne; q++) {
            size_t at = q * n / ne;
            double keep = m.p[i][at];
            m.p[i][at] = keep + h;
            double lp = dml_loss_at_fp(&m, a0);
            m.p[i][at] = keep - h;
            double lm = dml_loss_at_fp(&m, a0);
            m.p[i][at] = keep;
            fd[q] = (lp - lm) / (2 * h);
            gd[q] = g[at];
        }
        char lab[96];
        snprintf(lab, sizeof lab, "multi-layer conv finite differences %s", fc.net->params.p[i].name);
        check_close_d(lab, gd, fd, ne, 1e-4, 1e-7);
    }
    for (int i = 0; i < npar; i++) free(m.p[i]);
    free(a0); free(af);
    close_fixture_case(&fc);
}

/* The multi-layer conv forms: 30 SGD steps lower the loss (the batchnorm
 * fixture: S_k's running statistics move every step; the dropout one:
 * prediction, without masks, gets better); the memory plan is the same at
 * T = 4 and T = 64. */
static void mlconv_training(const char *name)
{
    fixture_case fc;
    if (!open_fixture_case(&fc, name, NULL)) return;
    int B = fc.b.n, ic, ih, iw;
    in_shape(fc.st, &ic, &ih, &iw);
    const float *sc;
    soma_step_stats p0 = { 0 }, p1 = { 0 };
    CHECK(soma_rule_predict(fc.r, &fc.b, &sc, &p0) == SOMA_OK);
    double first = 0, last = 0;
    sgd_steps(fc.r, &fc.b, 30, &first, &last);
    CHECK(soma_rule_predict(fc.r, &fc.b, &sc, &p1) == SOMA_OK);
    printf("  %s, 30 SGD steps on one batch: loss %.4f -> %.4f (prediction %.4f -> %.4f)\n", name,
           first, last, p0.loss / p0.n, p1.loss / p1.n);
    CHECK(last < first && p1.loss < p0.loss);
    soma_mem_plan p4, p64;
    soma_rule_free(fc.r);
    soma_net_free(fc.net);
    int Ts[2] = { 4, 64 };
    for (int q = 0; q < 2; q++) {
        fc.rc.T = Ts[q];
        if (!CHECK(new_net_shape(&fc.net, soma_st_meta(fc.st, "spec"), ic, ih, iw))) break;
        if (CHECK(soma_rule_new(&fc.r, "ide", fc.net, &fc.rc, B) == SOMA_OK)) {
            soma_rule_plan(fc.r, q ? &p64 : &p4);
            soma_rule_free(fc.r);
        }
        soma_net_free(fc.net);
    }
    CHECK(p4.total == p64.total && p4.activations == p64.activations);
    printf("  %s memory plan: %zu bytes at T = 4, %zu at T = 64\n", name, p4.total, p64.total);
    soma_st_free(fc.st);
}

/* Batchnorm on dense S_k: "9-5-bn-4-bn-3" is "conv3x5-bn-conv1x4-bn-3" on
 * 1x3x3 inputs (F's kernel covers the input: 5x1x1 maps) with a 1x1
 * transposed-conv feedback (W_dense = w^T), whose path the golden
 * mlconv_bn checks.  Same weights, buffers and dropout
 * masks: the same rates, gradients and running statistics. */
static void dense_bn_as_conv(void)
{
    soma_rule_config rc;
    soma_rule_config_default(&rc);
    soma_optim_config_default(&rc.optim, SOMA_OPTIM_SGD);
    rc.T = 10;
    rc.ide_leak = 0.95f;
    rc.ide_dropout = 0.2f;
    rc.ide_tol = 1e-7f;
    enum { B = 4 };
    soma_net *nd, *nc;
    soma_rule *d = NULL, *c = NULL;
    if (!CHECK(new_net(&nd, "9-5-bn-4-bn-3"))) return;
    if (!CHECK(new_net_shape(&nc, "conv3x5-bn-conv1x4-bn-3", 1, 3, 3))) { soma_net_free(nd); return; }
    CHECK(soma_rule_new(&d, "ide", nd, &rc, B) == SOMA_OK);
    rc.ide_fb_k = 1;
    CHECK(soma_rule_new(&c, "ide", nc, &rc, B) == SOMA_OK);
    if (!d || !c) { soma_rule_free(d); soma_rule_free(c); soma_net_free(nd); soma_net_free(nc); return; }
    ide_state *ed = d->state, *ec = c->state;
    CHECK(ed->sbn && ec->sbn && ed->fbk == IDE_FB_DENSE && ec->fbk == IDE_FB_CONVT && ed->H == 2 && ec->H == 2);
    /* the dense net's tensors into the conv net's (the feedback transposed) */
    soma_rng g;
    soma_rng_seed(&g, 9);
    for (int k = 1; k <= 3; k++) {
        int pi[4] = { ed->w[k], ed->b[k], k <= 2 ? ed->bn_g[k] : -1, k <= 2 ? ed->bn_b[k] : -1 };
        int qi[4] = { ec->w[k], ec->b[k], k <= 2 ? ec->bn_g[k] : -1, k <= 2 ? ec->bn_b[k] : -1 };
        for (int j = 0; j < 4; j++) {
            if (pi[j] < 0) continue;
            size_t n = nd->params.p[pi[j]].n;
            CHECK(n == nc->params.p[qi[j]].n);
            float *v = soma__param_value(nd, pi[j]);
            for (size_t i = 0; i < n; i++) v[i] = j == 2 ? 0.6f + soma_rng_uniform(&g) : soma_rng_uniform(&g) - 0.25f;
            memcpy(soma__param_value(nc, qi[j]), v, n * sizeof(float));
        }
        if (k <= 2) {
            float *rm = soma__buffer_value(nd, ed->bn_rm[k]), *rv = soma__buffer_value(nd, ed->bn_rv[k]);
            for (int i = 0; i < ed->bn_c[k]; i++) { rm[i] = 0.2f * soma_rng_uniform(&g); rv[i] = 0.5f + soma_rng_uniform(&g); }
            memcpy(soma__buffer_value(nc, ec->bn_rm[k]), rm, ed->bn_c[k] * sizeof(float));
            memcpy(soma__buffer_value(nc, ec->bn_rv[k]), rv, ed->bn_c[k] * sizeof(float));
        }
    }
    int n1 = ed->n[1], nH = ed->n[2];
    const float *wd = soma__param_value(nd, ed->fb);
    float *wc = soma__param_value(nc, ec->fb);
    for (int i = 0; i < n1; i++)
        for (int j = 0; j < nH; j++) wc[(size_t)j * n1 + i] = wd[(size_t)i * nH + j];
    soma__param_value(nc, ec->sn_g)[0] = soma__param_value(nd, ed->sn_g)[0];
    memcpy(soma__buffer_value(nc, ec->sn_u), soma__buffer_value(nd, ed->sn_u), n1 * sizeof(float));
    memcpy(soma__buffer_value(nc, ec->sn_v), soma__buffer_value(nd, ed->sn_v), nH * sizeof(float));
    float x[B * 9];
    int32_t y[B] = { 0, 1, 2, 1 };
    for (int i = 0; i < B * 9; i++) x[i] = 1.5f * soma_rng_uniform(&g);
    soma__ide_draw_masks(d, &g, B);
    for (int k = 1; k <= 2; k++) memcpy(ec->drop[k], ed->drop[k], (size_t)B * ed->n[k] * sizeof(float));
    memcpy(ec->drop_fb, ed->drop_fb, (size_t)B * n1 * sizeof(float));
    soma_batch bd = { .n = B, .c = 9, .h = 1, .w = 1, .x = x, .y = y }, bc = bd;
    bc.c = 1;
    bc.h = bc.w = 3;
    CHECK(soma__ide_grad(d, &bd, 1, NULL) == SOMA_OK);
    CHECK(soma__ide_grad(c, &bc, 1, NULL) == SOMA_OK);
    double fr = 0;
    for (int i = 0; i < B * nH; i++) fr += ed->a[i] > 0 && ed->a[i] < 1;
    CHECK(fr >= 0.2 * B * nH);   /* not a trivial point */
    check_close_f("dense S_k batchnorm vs conv1x1: rates", ed->a, ec->a, (size_t)B * nH, 1e-6, 1e-7);
    for (int k = 1; k <= 3; k++) {
        int pi[4] = { ed->w[k], ed->b[k], k <= 2 ? ed->bn_g[k] : -1, k <= 2 ? ed->bn_b[k] : -1 };
        int qi[4] = { ec->w[k], ec->b[k], k <= 2 ? ec->bn_g[k] : -1, k <= 2 ? ec->bn_b[k] : -1 };
        for (int j = 0; j < 4; j++) {
            if (pi[j] < 0) continue;
            char lab[96];
            snprintf(lab, sizeof lab, "dense S_k batchnorm vs conv1x1: grad %s", nd->params.p[pi[j]].name);
            /* atol 1e-5: a bias before a batchnorm has an exactly zero gradient, here float noise */
            check_close_f(lab, soma__param_grad(nd, pi[j]), soma__param_grad(nc, qi[j]), nd->params.p[pi[j]].n,
                          1e-4, 1e-5);
        }
        if (k <= 2) {
            check_close_f("dense S_k batchnorm vs conv1x1: running mean", soma__buffer_value(nd, ed->bn_rm[k]),
                          soma__buffer_value(nc, ec->bn_rm[k]), ed->bn_c[k], 1e-6, 1e-7);
            check_close_f("dense S_k batchnorm vs conv1x1: running var", soma__buffer_value(nd, ed->bn_rv[k]),
                          soma__buffer_value(nc, ec->bn_rv[k]), ed->bn_c[k], 1e-6, 1e-7);
        }
    }
    float *gt = malloc((size_t)n1 * nH * sizeof(float));
    const float *gc = soma__param_grad(nc, ec->fb);
    for (int i = 0; i < n1; i++)
        for (int j = 0; j < nH; j++) gt[(size_t)i * nH + j] = gc[(size_t)j * n1 + i];
    check_close_f("dense S_k batchnorm vs conv1x1: grad weight_fb", soma__param_grad(nd, ed->fb), gt,
                  (size_t)n1 * nH, 1e-4, 1e-6);
    check_close_f("dense S_k batchnorm vs conv1x1: grad weight_fb_g", soma__param_grad(nd, ed->sn_g),
                  soma__param_grad(nc, ec->sn_g), 1, 1e-4, 1e-6);
    free(gt);
    soma_rule_free(d); soma_rule_free(c);
    soma_net_free(nd); soma_net_free(nc);
}

/* The conv fixture: a few SGD steps lower the loss; the running statistics
 * move once per batch; the rule refuses more threads than its workspace has. */
static void conv_tune(soma_rule_config *rc) { rc->optim.lr = 0.05f; }

static void conv_training(void)
{
    fixture_case fc;
    if (!open_fixture_case(&fc, "conv_bn", conv_tune)) return;
    double first = 0, last = 0;
    sgd_steps(fc.r, &fc.b, 30, &first, &last);
    soma_rng rng;
    soma_rng_seed(&rng, 1);
    printf("  conv form, 30 SGD steps on one batch: loss %.4f -> %.4f\n", first, last);
    CHECK(last < first);
    soma_set_threads(2);
    soma_step_stats s = { 0 };
    if (soma_get_threads() == 2) CHECK(soma_rule_train_batch(fc.r, &fc.b, 0.05f, &rng, &s) == SOMA_ERR_ARG);
    soma_set_threads(1);
    close_fixture_case(&fc);
}

/* 1 when every buffer (running statistics, spectral-norm vectors) of a and b
 * holds the same bits */
/* ---- the Broyden solver ----------------------------------------------------- */

/* J^T v in double for the single-layer form at the last map point (pre_1):
 * (J^T v)_j = sum_i W_ij [0 <= pre_i <= 1] v_i / V */
static void djt(const ide_state *e, double V, const double *v, double *out, int B)
{
    int n1 = e->n[1], nH = e->n[e->H];
    for (int b = 0; b < B; b++)
        for (int j = 0; j < nH; j++) {
            double acc = 0;
            for (int i = 0; i < n1; i++) {
                float p = e->pre[1][(size_t)b * n1 + i];
                if (p >= 0.0f && p <= 1.0f) acc += (double)e->weff[(size_t)i * nH + j] * v[(size_t)b * n1 + i] / V;
            }
            out[(size_t)b * nH + j] = acc;
        }
}

/* The solver's Broyden (next step from the last one, one pass over the pairs)
 * against the textbook form in double (every product with the current
 * inverse estimate -I + sum u v^T taken directly), through the circular
 * memory: 3 pairs, N iterations, so the oldest pair is replaced N - 3 times
 * (N = 6: still far from the solution; N = 14: at float's floor). */
static void broyden_memory(int N)
{
    fixture_case fc;
    if (!open_fixture_case(&fc, "if", NULL)) return;
    int B = fc.b.n;
    ide_state *e = fc.r->state;
    CHECK(e->H == 1 && soma__ide_grad(fc.r, &fc.b, 0, NULL) == SOMA_OK);   /* the map point, g = e->gA */
    enum { M = 3 };
    int D = e->n[1];
    size_t m = (size_t)B * D;
    e->mem = M;
    fc.r->cfg.ide_max_iter = N;
    fc.r->cfg.ide_tol = 1e-30f;   /* all N iterations */
    int iters;
    double res = soma__ide_solve(fc.r, e->gA, B, &iters);
    CHECK(iters == N);
    /* the reference: the same iteration, Binv products formed directly */
    double *g = malloc(m * sizeof(double)), *beta = calloc(m, sizeof(double)), *G = malloc(m * sizeof(double));
    double *Gn = malloc(m * sizeof(double)), *dx = malloc(m * sizeof(double)), *jt = malloc(m * sizeof(double));
    double *U = calloc(m * M, sizeof(double)), *Vv = calloc(m * M, sizeof(double)), *best = calloc(m, sizeof(double));
    double gn = 0, bres = 1;
    for (size_t i = 0; i < m; i++) { g[i] = e->gA[i]; G[i] = dx[i] = g[i]; gn += g[i] * g[i]; }
    gn = sqrt(gn);
    for (int k = 0; k < N; k++) {
        for (size_t i = 0; i < m; i++) beta[i] += dx[i];
        djt(e, fc.rc.ide_vth, beta, jt, B);
        double ss = 0;
        for (size_t i = 0; i < m; i++) { Gn[i] = jt[i] - beta[i] + g[i]; ss += Gn[i] * Gn[i]; }
        if (sqrt(ss) / gn < bres) { bres = sqrt(ss) / gn; memcpy(best, beta, m * sizeof(double)); }
        int have = k < M ? k : M, slot = k % M;
        for (int s2 = 0; s2 < B; s2++) {
            double *u = U + (size_t)s2 * M * D, *v = Vv + (size_t)s2 * M * D;
            double vT[64], Bdg[64], dg[64], BG[64];
            if (D > 64) { CHECK(D <= 64); break; }
            for (int j = 0; j < D; j++) {
                dg[j] = Gn[(size_t)s2 * D + j] - G[(size_t)s2 * D + j];
                vT[j] = -dx[(size_t)s2 * D + j];
                Bdg[j] = -dg[j];
            }
            for (int q = 0; q < have; q++) {
                double a = 0, c = 0;
                for (int j = 0; j < D; j++) {
                    a += u[q * D + j] * dx[(size_t)s2 * D + j];
                    c += v[q * D + j] * dg[j];
                }
                for (int j = 0; j < D; j++) { vT[j] += a * v[q * D + j]; Bdg[j] += c * u[q * D + j]; }
            }
            double den = 0;
            for (int j = 0; j < D; j++) den += vT[j] * dg[j];
            for (int j = 0; j < D; j++) {
                u[slot * D + j] = (dx[(size_t)s2 * D + j] - Bdg[j]) / den;
                v[slot * D + j] = vT[j];
            }
            int kk = k + 1 < M ? k + 1 : M;
            for (int j = 0; j < D; j++) BG[j] = -Gn[(size_t)s2 * D + j];
            for (int q = 0; q < kk; q++) {
                double c = 0;
                for (int j = 0; j < D; j++) c += v[q * D + j] * Gn[(size_t)s2 * D + j];
                for (int j = 0; j < D; j++) BG[j] += c * u[q * D + j];
            }
            for (int j = 0; j < D; j++) dx[(size_t)s2 * D + j] = -BG[j];
        }
        memcpy(G, Gn, m * sizeof(double));
    }
    float *want = malloc(m * sizeof(float));
    for (size_t i = 0; i < m; i++) want[i] = (float)best[i];
    char lab[96];
    snprintf(lab, sizeof lab, "broyden, 3 pairs, %d iterations: the solver vs the direct double one", N);
    check_close_f(lab, e->beta, want, m, 1e-4, 1e-6);
    printf("  Broyden with 3 pairs, %d iterations: relative residual %.3g (double, direct: %.3g)\n", N, res,
           bres);
    CHECK(fabs(res - bres) <= 1e-2 * bres + 1e-7);
    free(g); free(beta); free(G); free(Gn); free(dx); free(jt); free(U); free(Vv); free(best); free(want);
    close_fixture_case(&fc);
}

/* ---- event-driven simulation ------------------------------------------------ */

/* The simulation's products taken event-driven (dense: the rows of W^T,
 * S_k^T of the units that fired; conv: each spike's kernel slice scattered)
 * against the GEMM / conv kernels: the same spikes and rates bit for bit,
 * membranes within float rounding, with and without dropout masks; the
 * threshold moved so that the automatic choice takes both paths within one
 * simulation.  The nets have every kind of product: dense feedback, S_k in
 * place and through a batchnorm; conv feedback; transposed-conv feedback,
 * strided conv S_k with and without a batchnorm. */
static void event_paths(const char *spec, int c, int h, int w, int dropout)
{
    enum { B = 6, T = 16 };
    soma_net *net;
    if (!CHECK(new_net_shape(&net, spec, c, h, w))) return;
    soma_rule_config rc;
    soma_rule_config_default(&rc);
    soma_optim_config_default(&rc.optim, SOMA_OPTIM_SGD);
    rc.T = T;
    rc.ide_vth = 1.0f;
    rc.ide_leak = 0.95f;
    rc.ide_dropout = dropout ? 0.2f : 0.0f;
    soma_rule *r;
    soma_set_threads(2);   /* conv workspaces for two threads (the per-sample path below) */
    int made = soma_rule_new(&r, "ide", net, &rc, B) == SOMA_OK;
    soma_set_threads(1);
    if (!CHECK(made)) { soma_net_free(net); return; }
    ide_state *e = r->state;
    int H = e->H, n0 = e->n[0];
    /* F's bias spread so that some units fire at every step, some rarely; the
     * batchnorms' running statistics a non-trivial affine map */
    soma_rng g;
    soma_rng_seed(&g, 7);
    float *x = malloc((size_t)B * n0 * sizeof(float));
    for (int i = 0; i < B * n0; i++) x[i] = soma_rng_normal(&g);
    for (int i = 0; i < soma_net_tensor_count(net); i++) {
        const char *name;
        int nd;
        int64_t shape[4];
        float *v = soma_net_tensor(net, i, &name, &nd, shape, NULL);
        size_t n = 1;
        for (int d = 0; d < nd; d++) n *= (size_t)shape[d];
        int fb = !strcmp(name, "0.bias"), rmean = strstr(name, "running_mean") != NULL;
        int rvar = strstr(name, "running_var") != NULL;
        for (size_t j = 0; j < n && (fb || rmean || rvar); j++)
            v[j] = fb ? 0.9f * soma_rng_normal(&g) : rmean ? 0.2f * soma_rng_normal(&g) : 0.5f;
    }
    if (dropout) {
        soma__ide_draw_masks(r, &g, B);
        e->drop_on = 1;
    }
    soma__ide_weight(r, 0);
    size_t ms = 0, off[IDE_MAXH + 2];
    for (int k = 1; k <= H; k++) { off[k] = ms; ms += (size_t)B * e->n[k]; }
    size_t mH = (size_t)B * e->n[H];
    float *u0 = malloc(ms * sizeof(float)), *s0 = malloc(ms * sizeof(float)), *a0 = malloc(mH * sizeof(float));
    /* the GEMM everywhere: the reference */
    e->event = -1;
    soma__ide_simulate(r, x, B);
    CHECK(e->ev_products == 0 && e->gemm_products == (int64_t)(T - 1) + (int64_t)T * (H - 1));
    for (int k = 1; k <= H; k++) {
        memcpy(u0 + off[k], e->u[k], (size_t)B * e->n[k] * sizeof(float));
        memcpy(s0 + off[k], e->s[k], (size_t)B * e->n[k] * sizeof(float));
    }
    memcpy(a0, e->a, mH * sizeof(float));
    double lo = 1, hi = 0;   /* the rates' spread: the layers' mean rates */
    for (int k = 1; k <= H; k++) {
        double sum = 0;
        for (size_t i = 0; i < (size_t)B * e->n[k]; i++) sum += e->s[k][i];
        sum /= (double)B * e->n[k];
        if (sum < lo) lo = sum;
        if (sum > hi) hi = sum;
    }
    int mixed = 0;
    for (int mode = 0; mode < 3; mode++) {
        char lab[160];
        if (mode == 0) { e->event = 1; }
        else if (mode == 1) { e->event = 0; e->ev_density = IDE_EVENT_DENSITY; }
        else {   /* a threshold between the sparsest and densest steps: both paths */
            e->event = 0;
            int64_t best = -1;
            double pick = IDE_EVENT_DENSITY;
            for (double d = 0.02; d < 1.0; d += 0.02) {
                e->ev_density = d;
                soma__ide_simulate(r, x, B);
                int64_t both = e->ev_products < e->gemm_products ? e->ev_products : e->gemm_products;
                if (both > best) { best = both; pick = d; }
            }
            e->ev_density = pick;
        }
        soma__ide_simulate(r, x, B);
        if (mode == 0) CHECK(e->gemm_products == 0 && e->ev_products > 0);
        if (mode == 2) {
            mixed = e->ev_products > 0 && e->gemm_products > 0;
            CHECK(mixed);
            printf("  event-driven simulation, %s%s: layer rates %.2f-%.2f; threshold %.2f: %lld "
                   "event, %lld GEMM products\n", spec, dropout ? " (dropout)" : "", lo, hi,
                   e->ev_density, (long long)e->ev_products, (long long)e->gemm_products);
        }
        int same = 1;
        for (int k = 1; k <= H; k++) {
            size_t mk = (size_t)B * e->n[k];
            same &= !memcmp(e->s[k], s0 + off[k], mk * sizeof(float));
            snprintf(lab, sizeof lab, "events %s (mode %d%s) layer %d membranes", spec, mode,
                     dropout ? ", dropout" : "", k);
            /* the same terms in another order (and without the GEMM kernel's FMAs):
             * T = 16 steps of sums of up to 48 terms of size ~1 carried in the
             * membrane, so up to ~T n eps = 16 * 48 * 6e-8 = 5e-5 apart (2.9e-5
             * seen with OpenBLAS's SkylakeX sgemm) */
            check_close_f(lab, e->u[k], u0 + off[k], mk, 1e-5, 1e-4);
        }
        CHECK(same);
        CHECK(!memcmp(e->a, a0, mH * sizeof(float)));
    }
    e->ev_density = IDE_EVENT_DENSITY;
    e->event = 0;
    /* a single layer at two threads: every sample on its own through all T
     * steps (no per-step barrier), bit for bit one thread's all-event run */
    if (H == 1) {
        e->event = 1;
        soma__ide_simulate(r, x, B);
        memcpy(u0, e->u[1], mH * sizeof(float));
        memcpy(s0, e->s[1], mH * sizeof(float));
        memcpy(a0, e->a, mH * sizeof(float));
        e->event = 0;
        soma_set_threads(2);
        if (soma_get_threads() == 2) {
            memset(e->a, 0, mH * sizeof(float));
            soma__ide_simulate(r, x, B);
            CHECK(e->gemm_products == 0 && e->ev_products == T - 1);
            CHECK(!memcmp(e->u[1], u0, mH * sizeof(float)) && !memcmp(e->s[1], s0, mH * sizeof(float)) &&
                  !memcmp(e->a, a0, mH * sizeof(float)));
        }
        soma_set_threads(1);
    }
    e->drop_on = 0;
    (void)mixed;
    free(x);
    free(u0);
    free(s0);
    free(a0);
    soma_rule_free(r);
    soma_net_free(net);
}

static int same_buffers(soma_net *a, soma_net *b)
{
    if (soma_net_tensor_count(a) != soma_net_tensor_count(b)) return 0;
    for (int i = 0; i < soma_net_tensor_count(a); i++) {
        int pa, pb, nd;
        int64_t sh[4];
        const char *na, *nb;
        float *va = soma_net_tensor(a, i, &na, &nd, sh, &pa);
        float *vb = soma_net_tensor(b, i, &nb, NULL, NULL, &pb);
        size_t n = 1;
        for (int k = 0; k < nd; k++) n *= (size_t)sh[k];
        if (pa != pb || strcmp(na, nb)) return 0;
        if (!pa && memcmp(va, vb, n * sizeof(float))) return 0;
    }
    return 1;
}

/* Spike input with T equal frames x_t = x is the static-current path bit for
 * bit: rates, gradients, running statistics and the spectral norm's vectors
 * after one gradient, then the parameters after a few SGD steps and the
 * predicted logits.  On every static fixture (dense IF, multi-layer LIF,
 * conv + batchnorm LIF). */
static void frames_equal_static(const char *name)
{
    char path[256];
    snprintf(path, sizeof path, "tests/fixtures/ide_%s.safetensors", name);
    soma_st *st;
    if (!CHECK(soma_st_read(&st, path) == SOMA_OK)) return;
    soma_rule_config rs, rf;
    config_from_meta(&rs, st);
    config_from_meta(&rf, st);
    size_t nx, ny;
    const float *x = fx(st, "x", &nx);
    const int32_t *y = (const int32_t *)fx(st, "y", &ny);
    int B = (int)ny, ic, ih, iw, T = rs.T;
    in_shape(st, &ic, &ih, &iw);
    size_t n0 = nx / ny;
    rf.encoding = SOMA_ENC_FRAMES;
    rf.sample_size = T * (int)n0;
    soma_net *ns, *nf;
    soma_rule *a, *f;
    if (!build(st, &rs, &ns, &a, B)) { soma_st_free(st); return; }
    if (!build(st, &rf, &nf, &f, B)) { soma_rule_free(a); soma_net_free(ns); soma_st_free(st); return; }
    float *xf = malloc(nx * T * sizeof(float));
    for (int s = 0; s < B; s++)
        for (int t = 0; t < T; t++) memcpy(xf + ((size_t)s * T + t) * n0, x + s * n0, n0 * sizeof(float));
    soma_batch bs = { .n = B, .c = ic, .h = ih, .w = iw, .x = (float *)x, .y = (int32_t *)y };
    soma_batch bf = { .n = B, .c = ic * T, .h = ih, .w = iw, .x = xf, .y = (int32_t *)y };
    ide_state *es = a->state, *ef = f->state;
    size_t np = soma_net_param_floats(ns);
    CHECK(ef->frames == 1 && es->frames == 0 && np == soma_net_param_floats(nf));
    CHECK(soma__ide_grad(a, &bs, 1, NULL) == SOMA_OK);
    CHECK(soma__ide_grad(f, &bf, 1, NULL) == SOMA_OK);
    size_t mH = (size_t)B * es->n[es->H];
    int same_x = !memcmp(ef->xbar, x, nx * sizeof(float));
    int same_a = !memcmp(es->a, ef->a, mH * sizeof(float));
    for (int k = 1; k <= es->H; k++)   /* the last membranes: every step's current, to the bit */
        same_a = same_a && !memcmp(es->u[k], ef->u[k], (size_t)B * es->n[k] * sizeof(float));
    int same_g = !memcmp(soma_net_param_grads(ns), soma_net_param_grads(nf), np * sizeof(float));
    int same_b = same_buffers(ns, nf);
    /* the rate gap: T equal frames give the static input's gap and fixed point
     * to the bit; another T than the frames' is refused */
    {
        double gs = -1, gf = -2, cs = -1, cf = -2;
        int Tq[1] = { T }, Tbad[2] = { T + 1, T };
        CHECK(soma_ide_rate_gap(a, &bs, Tq, 1, &gs, &cs) == SOMA_OK);
        CHECK(soma_ide_rate_gap(f, &bf, Tq, 1, &gf, &cf) == SOMA_OK);
        CHECK(gs == gf && cs == cf && gs > 0 && cf <= 1e-6 && f->cfg.T == T);
        CHECK(soma_ide_rate_gap(f, &bf, Tbad, 1, &gf, NULL) == SOMA_ERR_UNSUPPORTED);
        CHECK(soma_ide_rate_gap(f, &bf, Tbad, 2, &gf, NULL) == SOMA_ERR_UNSUPPORTED);
    }
    soma_rng rng;
    soma_rng_seed(&rng, 1);
    for (int k = 0; k < 3; k++) {
        CHECK(soma_rule_train_batch(a, &bs, 0.05f, &rng, NULL) == SOMA_OK);
        CHECK(soma_rule_train_batch(f, &bf, 0.05f, &rng, NULL) == SOMA_OK);
    }
    int same_w = !memcmp(soma_net_param_values(ns), soma_net_param_values(nf), np * sizeof(float));
    const float *ls, *lf;
    CHECK(soma_rule_predict(a, &bs, &ls, NULL) == SOMA_OK);
    CHECK(soma_rule_predict(f, &bf, &lf, NULL) == SOMA_OK);
    int same_l = !memcmp(ls, lf, (size_t)B * es->C * sizeof(float));
    if (!CHECK(same_x && same_a && same_g && same_b && same_w && same_l))
        fprintf(stderr, "%s: T equal frames vs static: x-bar %d rates+membranes %d grads %d buffers %d "
                "weights %d logits %d (1 = bit-identical)\n", name, same_x, same_a, same_g, same_b,
                same_w, same_l);
    /* and frames that are not equal are not the static path (the frames reach the net) */
    for (size_t i = 0; i < n0 * (size_t)(T + 1) / 2; i++) xf[i] = 0.0f;   /* sample 0, the first half */
    CHECK(soma_rule_predict(f, &bf, &lf, NULL) == SOMA_OK);
    CHECK(memcmp(ls, lf, (size_t)B * es->C * sizeof(float)) != 0);
    free(xf);
    soma_rule_free(a); soma_rule_free(f);
    soma_net_free(ns); soma_net_free(nf);
    soma_st_free(st);
}

/* Spike input: a few SGD steps lower the loss; the memory plan is the same
 * for T = 4 and T = 64 (nothing per step is kept). */
static void spike_training(void)
{
    fixture_case fc;
    if (!open_fixture_case(&fc, "spike", NULL)) return;
    int B = fc.b.n, ic, ih, iw;
    in_shape(fc.st, &ic, &ih, &iw);
    double first = 0, last = 0;
    sgd_steps(fc.r, &fc.b, 30, &first, &last);
    soma_rng rng;
    soma_rng_seed(&rng, 1);
    printf("  spike input, 30 SGD steps on one batch: loss %.4f -> %.4f\n", first, last);
    CHECK(last < first);
    /* a batch of static samples (one frame each) is refused by the rule API */
    soma_batch one = fc.b;
    one.c = ic;
    soma_step_stats s = { 0 };
    CHECK(soma_rule_train_batch(fc.r, &one, 0.05f, &rng, &s) == SOMA_ERR_SHAPE);
    /* T changed after the rule was built: the frames no longer match */
    fc.r->cfg.T = 5;
    const float *sc;
    CHECK(soma_rule_predict(fc.r, &fc.b, &sc, NULL) == SOMA_ERR_ARG);
    fc.r->cfg.T = fc.rc.T;
    soma_mem_plan p4, p64;
    soma_rule_plan(fc.r, &p4);
    soma_rule_free(fc.r);
    soma_net_free(fc.net);
    fc.rc.T = 64;
    fc.rc.sample_size = 64 * ic * ih * iw;
    if (CHECK(new_net_shape(&fc.net, soma_st_meta(fc.st, "spec"), ic, ih, iw))) {
        if (CHECK(soma_rule_new(&fc.r, "ide", fc.net, &fc.rc, B) == SOMA_OK)) {
            soma_rule_plan(fc.r, &p64);
            CHECK(p64.total == p4.total && p64.activations == p4.activations);
            printf("  spike input memory plan: %zu bytes at T = 4, %zu at T = 64\n", p4.total, p64.total);
            soma_rule_free(fc.r);
        }
        soma_net_free(fc.net);
    }
    soma_st_free(fc.st);
}

static soma_status try_rule(const char *spec, const soma_rule_config *rc)
{
    soma_net *net;
    if (!new_net(&net, spec)) return SOMA_ERR_ARG;
    soma_rule *r = NULL;
    soma_status s = soma_rule_new(&r, "ide", net, rc, 4);
    soma_rule_free(r);
    soma_net_free(net);
    return s;
}

static void bad_input(void)
{
    soma_rule_config rc;
    soma_rule_config_default(&rc);
    CHECK(try_rule("6-5-3", &rc) == SOMA_OK);
    CHECK(try_rule("6-5-4-3", &rc) == SOMA_OK);
    rc.T = 0;
    CHECK(try_rule("6-5-3", &rc) == SOMA_ERR_ARG);
    soma_rule_config_default(&rc);
    rc.ide_tol = 0;
    CHECK(try_rule("6-5-3", &rc) == SOMA_ERR_ARG);
    rc.ide_tol = -1;
    CHECK(try_rule("6-5-3", &rc) == SOMA_ERR_ARG);
    soma_rule_config_default(&rc);
    rc.ide_vth = 0;
    CHECK(try_rule("6-5-3", &rc) == SOMA_ERR_ARG);
    soma_rule_config_default(&rc);
    rc.ide_leak = 1.5f;
    CHECK(try_rule("6-5-3", &rc) == SOMA_ERR_ARG);
    soma_rule_config_default(&rc);
    rc.ide_sn_c = 0;
    CHECK(try_rule("6-5-3", &rc) == SOMA_ERR_ARG);
    soma_rule_config_default(&rc);
    rc.ide_damp = 0;
    CHECK(try_rule("6-5-3", &rc) == SOMA_ERR_ARG);
    soma_rule_config_default(&rc);
    rc.ide_max_iter = 0;
    CHECK(try_rule("6-5-3", &rc) == SOMA_ERR_ARG);
    /* no feedback (hidden) layer */
    soma_rule_config_default(&rc);
    CHECK(try_rule("6-3", &rc) == SOMA_ERR_ARG);
    /* a feedback matrix that is not (n1, nH): non-square for a single layer */
    soma_net *net;
    if (CHECK(new_net(&net, "6-5-3"))) {
        int64_t shape[2] = { 5, 4 };
        CHECK(soma__net_add_tensor(net, 1, "0.weight_fb", 2, shape) >= 0);
        soma_rule *r = NULL;
        CHECK(soma_rule_new(&r, "ide", net, &rc, 4) == SOMA_ERR_SHAPE);
        CHECK(strstr(soma_last_error(), "5x5") != NULL);
        soma_rule_free(r);
        soma_net_free(net);
    }
    /* the convolutional form */
    {
        struct { const char *spec; int fb_k; soma_status want; } cs[] = {
            { "conv3x4s2p1-bn-3", 0, SOMA_OK }, { "conv3x4-3", 5, SOMA_OK },
            { "conv3x4-3", 2, SOMA_ERR_ARG },            /* even feedback kernel */
            { "conv4x4-3", 0, SOMA_ERR_ARG },            /* F's even kernel as the default */
            { "conv3x4-pool2-3", 0, SOMA_ERR_UNSUPPORTED },
            { "conv3x4-5-3", 0, SOMA_ERR_UNSUPPORTED },  /* one dense readout only */
            { "conv3x4-3-bn", 0, SOMA_ERR_UNSUPPORTED },
            { "conv3x4-drop0.2-3", 0, SOMA_ERR_UNSUPPORTED },
            /* the multi-layer conv form: transposed-conv feedback of stride h_1 / h_H */
            { "conv3x4s2p1-conv3x4p1-3", 0, SOMA_OK },            /* 4x4 -> 4x4, stride 1 */
            { "conv3x4s2p1-bn-conv3x6s2p1-bn-conv3x5p1-bn-3", 0, SOMA_OK },   /* 4x4 -> 2x2 */
            { "conv3x4s2p1-conv3x4p1-3", 5, SOMA_OK },
            { "conv3x4s2p1-conv3x4p1-3", 4, SOMA_ERR_ARG },       /* even feedback kernel */
            { "conv3x4-conv3x4-3", 0, SOMA_ERR_SHAPE },           /* 6x6 and 4x4: no stride */
            { "conv3x4s2p1-conv3x4p1-3-bn", 0, SOMA_ERR_UNSUPPORTED },
            { "conv3x4s2p1-conv3x4p1-pool2-3", 0, SOMA_ERR_UNSUPPORTED },
        };
        for (size_t i = 0; i < sizeof cs / sizeof *cs; i++) {
            soma_rule_config_default(&rc);
            rc.ide_fb_k = cs[i].fb_k;
            soma_status got = SOMA_ERR_ARG;
            if (new_net_shape(&net, cs[i].spec, 1, 8, 8)) {
                soma_rule *r = NULL;
                got = soma_rule_new(&r, "ide", net, &rc, 4);
                soma_rule_free(r);
                soma_net_free(net);
            }
            if (!CHECK(got == cs[i].want))
                fprintf(stderr, "conv form '%s' fb_k %d: status %d, want %d\n", cs[i].spec, cs[i].fb_k,
                        got, cs[i].want);
        }
        soma_rule_config_default(&rc);
        if (CHECK(new_net_shape(&net, "conv3x4-3", 1, 8, 8))) {   /* a feedback kernel of another shape */
            int64_t shape[4] = { 4, 4, 5, 5 };
            CHECK(soma__net_add_tensor(net, 1, "0.weight_fb", 4, shape) >= 0);
            soma_rule *r = NULL;
            CHECK(soma_rule_new(&r, "ide", net, &rc, 4) == SOMA_ERR_SHAPE);
            CHECK(strstr(soma_last_error(), "4x4x3x3") != NULL);
            soma_rule_free(r);
            soma_net_free(net);
        }
        /* a net trained with the operator norm (u, v of the 4x6x6 map) given to
         * ide-sn-kernel (u of the 4 out channels): a shape error naming both */
        if (CHECK(new_net_shape(&net, "conv3x4-3", 1, 8, 8))) {
            soma_rule *r = NULL;
            CHECK(soma_rule_new(&r, "ide", net, &rc, 4) == SOMA_OK);
            soma_rule_free(r);
            r = NULL;
            rc.ide_sn_kernel = 1;
            CHECK(soma_rule_new(&r, "ide", net, &rc, 4) == SOMA_ERR_SHAPE);
            CHECK(strstr(soma_last_error(), "weight_fb_u") && strstr(soma_last_error(), "is 144") &&
                  strstr(soma_last_error(), "need 4"));
            soma_rule_free(r);
            soma_net_free(net);
        }
    }
    /* the multi-layer conv form: the messages name the layers, an existing
     * feedback tensor must be the transposed conv's (C_H, C_1, K, K) */
    soma_rule_config_default(&rc);
    if (CHECK(new_net_shape(&net, "conv3x4-conv3x4-3", 1, 8, 8))) {
        soma_rule *r = NULL;
        CHECK(soma_rule_new(&r, "ide", net, &rc, 4) == SOMA_ERR_SHAPE);
        CHECK(strstr(soma_last_error(), "4x4x4") && strstr(soma_last_error(), "4x6x6") &&
              strstr(soma_last_error(), "layer 2"));
        soma_rule_free(r);
        soma_net_free(net);
    }
    if (CHECK(new_net_shape(&net, "conv3x4s2p1-conv3x6s2p1-3", 1, 8, 8))) {
        int64_t shape[4] = { 4, 6, 3, 3 };
        CHECK(soma__net_add_tensor(net, 1, "0.weight_fb", 4, shape) >= 0);
        soma_rule *r = NULL;
        CHECK(soma_rule_new(&r, "ide", net, &rc, 4) == SOMA_ERR_SHAPE);
        CHECK(strstr(soma_last_error(), "6x4x3x3") != NULL);
        soma_rule_free(r);
        soma_net_free(net);
    }
    if (CHECK(new_net_shape(&net, "conv3x4s2p1-3-bn", 1, 8, 8))) {
        soma_rule *r = NULL;
        CHECK(soma_rule_new(&r, "ide", net, &rc, 4) == SOMA_ERR_UNSUPPORTED);
        CHECK(strstr(soma_last_error(), "readout") != NULL);
        soma_rule_free(r);
        soma_net_free(net);
    }
    /* the dropout rate: [0, 1), named in the message; set after the rule was
     * built without it, or without an rng, a training step refuses */
    {
        float rates[] = { -0.1f, 1.0f, 1.5f, 0.0f, 0.5f, 0.999f };
        for (size_t i = 0; i < sizeof rates / sizeof *rates; i++) {
            soma_rule_config_default(&rc);
            rc.ide_dropout = rates[i];
            soma_status want = rates[i] >= 0.0f && rates[i] < 1.0f ? SOMA_OK : SOMA_ERR_ARG;
            soma_status got = try_rule("6-5-3", &rc);
            if (!CHECK(got == want && (want == SOMA_OK || strstr(soma_last_error(), "ide-dropout"))))
                fprintf(stderr, "ide-dropout %g: status %d (%s)\n", rates[i], got, soma_last_error());
        }
        soma_rule_config_default(&rc);
        float xs[4 * 6];
        int32_t ys[4] = { 0, 1, 2, 0 };
        for (int i = 0; i < 24; i++) xs[i] = (float)(i % 7) / 7.0f;
        soma_batch b = { .n = 4, .c = 6, .h = 1, .w = 1, .x = xs, .y = ys };
        soma_rng g;
        soma_rng_seed(&g, 3);
        if (CHECK(new_net(&net, "6-5-3"))) {
            soma_rule *r = NULL;
            if (CHECK(soma_rule_new(&r, "ide", net, &rc, 4) == SOMA_OK)) {
                r->cfg.ide_dropout = 0.3f;   /* no mask buffers */
                CHECK(soma_rule_train_batch(r, &b, 0.05f, &g, NULL) == SOMA_ERR_ARG);
                CHECK(strstr(soma_last_error(), "ide-dropout") != NULL);
                r->cfg.ide_dropout = 0.0f;
                CHECK(soma_rule_train_batch(r, &b, 0.05f, &g, NULL) == SOMA_OK);
            }
            soma_rule_free(r);
            soma_net_free(net);
        }
        rc.ide_dropout = 0.2f;
        if (CHECK(new_net(&net, "6-5-3"))) {
            soma_rule *r = NULL;
            if (CHECK(soma_rule_new(&r, "ide", net, &rc, 4) == SOMA_OK)) {
                CHECK(soma_rule_train_batch(r, &b, 0.05f, NULL, NULL) == SOMA_ERR_ARG);
                CHECK(soma_rule_train_batch(r, &b, 0.05f, &g, NULL) == SOMA_OK);
                r->cfg.ide_dropout = 1.0f;
                CHECK(soma_rule_train_batch(r, &b, 0.05f, &g, NULL) == SOMA_ERR_ARG);
            }
            soma_rule_free(r);
            soma_net_free(net);
        }
    }
    /* spike input: the frames must be T frames of the net's inputs */
    {
        struct { soma_encoding enc; int T, sample; soma_status want; const char *msg; } fs[] = {
            { SOMA_ENC_FRAMES, 4, 4 * 6, SOMA_OK, NULL },
            { SOMA_ENC_FRAMES, 4, 3 * 6, SOMA_ERR_ARG, "3 frames" },   /* T does not match */
            { SOMA_ENC_FRAMES, 4, 0, SOMA_ERR_ARG, "T = 4 frames" },   /* sample size not given */
            { SOMA_ENC_FRAMES, 4, 25, SOMA_ERR_ARG, "T = 4 frames" },  /* not whole frames */
            { SOMA_ENC_DIRECT, 4, 6, SOMA_OK, NULL },
            { SOMA_ENC_DIRECT, 4, 12, SOMA_ERR_ARG, "encoding frames" },
            { SOMA_ENC_POISSON, 4, 6, SOMA_ERR_UNSUPPORTED, "poisson" },
            { SOMA_ENC_SEQUENTIAL, 4, 1, SOMA_ERR_UNSUPPORTED, "sequential" },
        };
        for (size_t i = 0; i < sizeof fs / sizeof *fs; i++) {
            soma_rule_config_default(&rc);
            rc.encoding = fs[i].enc;
            rc.T = fs[i].T;
            rc.sample_size = fs[i].sample;
            soma_status got = try_rule("6-5-3", &rc);
            int msg_ok = !fs[i].msg || strstr(soma_last_error(), fs[i].msg) != NULL;
            if (!CHECK(got == fs[i].want && msg_ok))
                fprintf(stderr, "spike input case %zu: status %d, want %d (%s)\n", i, got, fs[i].want,
                        soma_last_error());
        }
        soma_rule_config_default(&rc);
    }
    /* diagnostics of another rule */
    if (CHECK(new_net(&net, "6-5-3"))) {
        soma_rule *r = NULL;
        soma_ide_diag d;
        if (CHECK(soma_rule_new(&r, "bp", net, &rc, 4) == SOMA_OK))
            CHECK(soma_ide_diagnostics(r, &d, 0) == SOMA_ERR_ARG);
        soma_rule_free(r);
        soma_net_free(net);
    }
    /* the options by name */
    soma_rule_config_default(&rc);
    CHECK(soma_rule_option_set(&rc, "ide-leak", "0.95") == SOMA_OK && rc.ide_leak == 0.95f);
    CHECK(soma_rule_option_set(&rc, "ide-iter", "1") == SOMA_OK && rc.ide_iter == 1);
    CHECK(soma_rule_option_set(&rc, "ide-max-iter", "12") == SOMA_OK && rc.ide_max_iter == 12);
    CHECK(soma_rule_option_set(&rc, "ide-sn", "2") == SOMA_ERR_ARG);
    CHECK(soma_rule_option_set(&rc, "ide-dropout", "0.2") == SOMA_OK && rc.ide_dropout == 0.2f);
    char buf[4096];
    soma_rule_options_format(&rc, buf, sizeof buf);
    soma_rule_config rc2;
    soma_rule_config_default(&rc2);
    CHECK(soma_rule_options_parse(&rc2, buf) == SOMA_OK && rc2.ide_leak == 0.95f && rc2.ide_max_iter == 12 &&
          rc2.ide_dropout == 0.2f);
}

int main(void)
{
    soma_set_threads(1);
    golden("if");
    golden("lif_ml");
    for (int ev = -1; ev <= 1; ev += 2) {   /* through either product */
        golden_ev("if", ev);
        golden_ev("lif_ml", ev);
        golden_ev("drop", ev);
        golden_ev("conv_bn", ev);
        golden_ev("spike", ev);
        golden_ev("mlconv", ev);
        golden_ev("mlconv_bn", ev);
        golden_ev("conv_kn", ev);
        golden_ev("mlconv_kn", ev);
    }
    broyden_memory(6);
    broyden_memory(14);
    for (int drop = 0; drop <= 1; drop++) {
        event_paths("16-40-30-bn-20-5", 16, 1, 1, drop);
        event_paths("16-48-5", 16, 1, 1, drop);
        event_paths("conv3x4s2p1-bn-3", 1, 8, 8, drop);
        event_paths("conv3x4s2p1-bn-conv3x6s2p1-bn-conv3x5s1p1-3", 1, 8, 8, drop);
    }
    golden("conv_bn");
    golden("spike");
    golden("drop");
    golden("mlconv");
    golden("mlconv_bn");
    golden("conv_kn");
    golden("mlconv_kn");
    frames_equal_static("if");
    frames_equal_static("lif_ml");
    frames_equal_static("conv_bn");
    frames_equal_static("mlconv_bn");
    spike_training();
    double_checks();
    dropout_checks();
    mlconv_double();
    mlconv_training("mlconv");
    mlconv_training("mlconv_bn");
    dense_bn_as_conv();
    strict_and_training();
    conv_training();
    bad_input();
    return check_report("test_ide");
}
