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
 *    count that does not match T is rejected.
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
    if (soma_st_meta(st, "fb_k")) rc->ide_fb_k = atoi(soma_st_meta(st, "fb_k"));
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
    return 1;
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

static void golden(const char *name)
{
    char path[256];
    snprintf(path, sizeof path, "tests/fixtures/ide_%s.safetensors", name);
    soma_st *st;
    if (!CHECK(soma_st_read(&st, path) == SOMA_OK)) { fprintf(stderr, "%s\n", soma_last_error()); return; }
    soma_rule_config rc;
    config_from_meta(&rc, st);
    size_t nx, ny, n;
    const float *x = fx(st, "x", &nx);
    const int32_t *y = (const int32_t *)fx(st, "y", &ny);
    int B = (int)ny;
    soma_net *net;
    soma_rule *r;
    if (!build(st, &rc, &net, &r, B)) { soma_st_free(st); return; }
    ide_state *e = r->state;
    int ic, ih, iw, nf = is_frames(st) ? rc.T : 1;
    in_shape(st, &ic, &ih, &iw);
    CHECK((size_t)ic * ih * iw * B * nf == nx);
    soma_batch b = { .n = B, .c = ic * nf, .h = ih, .w = iw, .x = (float *)x, .y = (int32_t *)y };
    char lab[128];
    soma_step_stats sst = { 0 };
    CHECK(soma__ide_grad(r, &b, 1, &sst) == SOMA_OK);
    if (nf > 1) {   /* spike input: the weighted average input f sees */
        CHECK(e->frames == 1);
        snprintf(lab, sizeof lab, "%s x-bar", name);
        const float *xb = fx(st, "xbar", &n);
        if (xb) check_close_f(lab, e->xbar, xb, n, 1e-6, 1e-7);
    }
    /* F's batchnorm: running statistics updated once by the batch (notes 2.5) */
    for (int i = 0; i < soma_net_tensor_count(net); i++) {
        const char *tn;
        float *v = soma_net_tensor(net, i, &tn, NULL, NULL, NULL);
        char key[96];
        snprintf(key, sizeof key, "after.%s", tn);
        if (!soma_st_find(st, key)) continue;
        snprintf(lab, sizeof lab, "%s %s", name, key);
        const float *after = fx(st, key, &n);
        check_close_f(lab, v, after, n, 1e-5, 1e-7);
    }
    int nH = e->n[e->H];
    snprintf(lab, sizeof lab, "%s weff", name);
    const float *w = fx(st, "weff", &n);
    if (w) check_close_f(lab, e->weff, w, n, 1e-5, 1e-7);
    snprintf(lab, sizeof lab, "%s rates", name);
    const float *want = fx(st, "rates", &n);
    if (want) check_close_f(lab, e->a, want, n, 1e-5, 1e-7);
    float *fa = malloc((size_t)B * nH * sizeof(float));
    soma__ide_map(r, fa, e->a, B);
    snprintf(lab, sizeof lab, "%s f(a_T)", name);
    if ((want = fx(st, "fa", &n))) check_close_f(lab, fa, want, n, 1e-5, 1e-6);
    soma_ide_diag d;
    CHECK(soma_ide_diagnostics(r, &d, 0) == SOMA_OK);
    CHECK(d.batches == 1 && d.residual <= rc.ide_tol && d.iters >= 1);
    if (d.residual > rc.ide_tol) fprintf(stderr, "%s: Broyden residual %.3g\n", name, d.residual);
    snprintf(lab, sizeof lab, "%s broyden at a_T", name);
    compare_grads(lab, net, st, "grad.", 1e-5);

    /* the damped fixed-point iteration gives the same gradient */
    r->cfg.ide_iter = 1;
    r->cfg.ide_max_iter = 300;
    CHECK(soma__ide_grad_at(r, &b, e->a, NULL) == SOMA_OK);
    CHECK(soma_ide_diagnostics(r, &d, 0) == SOMA_OK && d.residual <= rc.ide_tol);
    snprintf(lab, sizeof lab, "%s fixed-point iteration at a_T", name);
    compare_grads(lab, net, st, "grad.", 1e-5);
    r->cfg.ide_iter = 0;
    r->cfg.ide_max_iter = 30;

    /* the fixed point and the gradient there */
    memcpy(fa, e->a, (size_t)B * nH * sizeof(float));
    fixed_point(r, fa, B, 500);
    snprintf(lab, sizeof lab, "%s fixed point", name);
    if ((want = fx(st, "fixed", &n))) check_close_f(lab, fa, want, n, 1e-5, 1e-6);
    CHECK(soma__ide_grad_at(r, &b, fa, NULL) == SOMA_OK);
    snprintf(lab, sizeof lab, "%s at a*", name);
    compare_grads(lab, net, st, "grad_fp.", 1e-5);

    /* spectral norm: the power iteration converges to the SVD's sigma */
    const float *sv = soma_st_find(st, "sigma_svd") ? fx(st, "sigma_svd", NULL) : NULL;
    if (sv) {
        for (int k = 0; k < 300; k++) soma__ide_weight(r, 1);
        CHECK(fabs(e->sigma - sv[0]) <= 1e-5 * sv[0]);
        if (fabs(e->sigma - sv[0]) > 1e-5 * sv[0])
            fprintf(stderr, "sigma %.9g, svd %.9g\n", e->sigma, sv[0]);
    }
    free(fa);
    soma_rule_free(r);
    soma_net_free(net);
    soma_st_free(st);
}

/* ---- double-precision single-layer model (the test's own) ---------------- */

typedef struct dmodel {
    int B, n0, n1, C;
    double *F, *b1, *W, *R, *bR;   /* F (n1,n0), W (n1,n1), R (C,n1) */
    const float *x;
    const int32_t *y;
    double V;
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
            double z = m->b1[i];
            for (int j = 0; j < m->n0; j++) z += m->F[(size_t)i * m->n0 + j] * m->x[(size_t)s * m->n0 + j];
            for (int j = 0; j < m->n1; j++) z += m->W[(size_t)i * m->n1 + j] * a[(size_t)s * m->n1 + j];
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

/* Finite differences and the BPTT oracle on the single-layer IF fixture. */
static void double_checks(void)
{
    soma_st *st;
    if (!CHECK(soma_st_read(&st, "tests/fixtures/ide_if.safetensors") == SOMA_OK)) return;
    soma_rule_config rc;
    config_from_meta(&rc, st);
    size_t nx, ny;
    const float *x = fx(st, "x", &nx);
    const int32_t *y = (const int32_t *)fx(st, "y", &ny);
    int B = (int)ny;
    soma_net *net;
    soma_rule *r;
    if (!build(st, &rc, &net, &r, B)) { soma_st_free(st); return; }
    ide_state *e = r->state;
    soma_batch b = { .n = B, .c = (int)(nx / ny), .h = 1, .w = 1, .x = (float *)x, .y = (int32_t *)y };
    dmodel m = { .B = B, .n0 = e->n[0], .n1 = e->n[1], .C = e->C, .x = x, .y = y, .V = rc.ide_vth };
    m.F = dcopy(value_of(net, "0.weight"), (size_t)m.n1 * m.n0);
    m.b1 = dcopy(value_of(net, "0.bias"), m.n1);
    m.W = dcopy(value_of(net, "0.weight_fb"), (size_t)m.n1 * m.n1);
    m.R = dcopy(value_of(net, "2.weight"), (size_t)m.C * m.n1);
    m.bR = dcopy(value_of(net, "2.bias"), m.C);

    /* IDE gradient at the (float) fixed point */
    soma__ide_simulate(r, x, B);
    size_t nA = (size_t)B * m.n1;
    float *a = malloc(nA * sizeof(float));
    memcpy(a, e->a, nA * sizeof(float));
    fixed_point(r, a, B, 500);
    CHECK(soma__ide_grad_at(r, &b, a, NULL) == SOMA_OK);

    /* central differences of the loss at the double fixed point */
    struct { const char *name; double *p; } ps[] = {
        { "0.weight", m.F }, { "0.bias", m.b1 }, { "0.weight_fb", m.W }, { "2.weight", m.R }, { "2.bias", m.bR },
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
            double lp = loss_at_fixed_point(&m);
            ps[k].p[i] = keep - h;
            double lm = loss_at_fixed_point(&m);
            ps[k].p[i] = keep;
            fd[i] = (lp - lm) / (2 * h);
            gd[i] = g[i];
        }
        char lab[96];
        snprintf(lab, sizeof lab, "finite differences %s", ps[k].name);
        check_close_d(lab, gd, fd, n, 1e-3, 2e-6);
        free(fd); free(gd);
    }

    /* BPTT through the rate map converges to the IDE gradient as K grows */
    size_t nF = (size_t)m.n1 * m.n0, nW = (size_t)m.n1 * m.n1, nR = (size_t)m.C * m.n1;
    size_t tot = nF + m.n1 + nW + nR + m.C;
    double *ide = malloc(tot * sizeof(double)), *bp = malloc(tot * sizeof(double));
    {
        size_t o = 0, n;
        const char *names[] = { "0.weight", "0.bias", "0.weight_fb", "2.weight", "2.bias" };
        for (int k = 0; k < 5; k++) {
            const float *g = grad_of(net, names[k], &n);
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
        r->cfg.T = Ts[q];
        soma__ide_simulate(r, x, B);
        double ss = 0;
        for (size_t i = 0; i < nA; i++) ss += ((double)e->a[i] - a[i]) * ((double)e->a[i] - a[i]);
        gaps[q] = sqrt(ss / nA);
        printf("  IF rates vs fixed point, T = %4d: RMS gap %.3g\n", Ts[q], gaps[q]);
    }
    CHECK(gaps[1] < gaps[0] && gaps[2] < gaps[1] && gaps[2] < 5e-3);
    /* Theorem 2: with the leak (LIF 0.95) the gap to the same fixed point stays bounded */
    r->cfg.ide_leak = 0.95f;
    double worst = 0;
    for (int q = 0; q < 3; q++) {
        r->cfg.T = Ts[q];
        soma__ide_simulate(r, x, B);
        double ss = 0;
        for (size_t i = 0; i < nA; i++) ss += ((double)e->a[i] - a[i]) * ((double)e->a[i] - a[i]);
        ss = sqrt(ss / nA);
        printf("  LIF 0.95 rates vs fixed point, T = %4d: RMS gap %.3g\n", Ts[q], ss);
        if (!(ss <= worst)) worst = ss;
    }
    CHECK(worst < 0.25);
    r->cfg.ide_leak = rc.ide_leak;
    r->cfg.T = rc.T;

    free(ide); free(bp); free(a);
    free(m.F); free(m.b1); free(m.W); free(m.R); free(m.bR);
    soma_rule_free(r);
    soma_net_free(net);
    soma_st_free(st);
}

/* ---- solver reporting, training, bad input -------------------------------- */

static void strict_and_training(void)
{
    soma_st *st;
    if (!CHECK(soma_st_read(&st, "tests/fixtures/ide_lif_ml.safetensors") == SOMA_OK)) return;
    soma_rule_config rc;
    config_from_meta(&rc, st);
    rc.ide_strict = 1;
    rc.ide_max_iter = 1;
    size_t nx, ny;
    const float *x = fx(st, "x", &nx);
    const int32_t *y = (const int32_t *)fx(st, "y", &ny);
    int B = (int)ny;
    soma_net *net;
    soma_rule *r;
    if (!build(st, &rc, &net, &r, B)) { soma_st_free(st); return; }
    soma_batch b = { .n = B, .c = (int)(nx / ny), .h = 1, .w = 1, .x = (float *)x, .y = (int32_t *)y };
    soma_rng rng;
    soma_rng_seed(&rng, 1);
    CHECK(soma_rule_train_batch(r, &b, 0.1f, &rng, NULL) == SOMA_ERR_NUMERIC);
    CHECK(strstr(soma_last_error(), "residual") != NULL);
    soma_ide_diag d;
    CHECK(soma_ide_diagnostics(r, &d, 1) == SOMA_OK && d.unconverged == 1 && d.residual > rc.ide_tol);
    /* back to the defaults: a few SGD steps lower the loss on the batch */
    r->cfg.ide_strict = 0;
    r->cfg.ide_max_iter = 30;
    soma_step_stats s0 = { 0 }, s1 = { 0 };
    const float *scores;
    CHECK(soma_rule_predict(r, &b, &scores, &s0) == SOMA_OK);
    for (int k = 0; k < 30; k++) CHECK(soma_rule_train_batch(r, &b, 0.2f, &rng, NULL) == SOMA_OK);
    CHECK(soma_rule_predict(r, &b, &scores, &s1) == SOMA_OK);
    printf("  30 SGD steps on one batch: loss %.4f -> %.4f\n", s0.loss / s0.n, s1.loss / s1.n);
    CHECK(s1.loss < s0.loss);
    soma_mem_plan p;
    soma_rule_plan(r, &p);
    CHECK(p.activations > 0 && p.total > p.activations);
    soma_rule_free(r);
    soma_net_free(net);
    soma_st_free(st);
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

/* The conv fixture: a few SGD steps lower the loss; the running statistics
 * move once per batch; the rule refuses more threads than its workspace has. */
static void conv_training(void)
{
    soma_st *st;
    if (!CHECK(soma_st_read(&st, "tests/fixtures/ide_conv_bn.safetensors") == SOMA_OK)) return;
    soma_rule_config rc;
    config_from_meta(&rc, st);
    rc.optim.lr = 0.05f;
    size_t nx, ny;
    const float *x = fx(st, "x", &nx);
    const int32_t *y = (const int32_t *)fx(st, "y", &ny);
    int B = (int)ny, ic, ih, iw;
    in_shape(st, &ic, &ih, &iw);
    soma_net *net;
    soma_rule *r;
    if (!build(st, &rc, &net, &r, B)) { soma_st_free(st); return; }
    soma_batch b = { .n = B, .c = ic, .h = ih, .w = iw, .x = (float *)x, .y = (int32_t *)y };
    double first = 0, last = 0;
    sgd_steps(r, &b, 30, &first, &last);
    soma_rng rng;
    soma_rng_seed(&rng, 1);
    printf("  conv form, 30 SGD steps on one batch: loss %.4f -> %.4f\n", first, last);
    CHECK(last < first);
    soma_set_threads(2);
    soma_step_stats s = { 0 };
    if (soma_get_threads() == 2) CHECK(soma_rule_train_batch(r, &b, 0.05f, &rng, &s) == SOMA_ERR_ARG);
    soma_set_threads(1);
    soma_rule_free(r);
    soma_net_free(net);
    soma_st_free(st);
}

/* 1 when every buffer (running statistics, spectral-norm vectors) of a and b
 * holds the same bits */
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
    for (size_t i = 0; i < n0; i++) xf[i] = 0.0f;   /* sample 0, frame 0 */
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
    soma_st *st;
    if (!CHECK(soma_st_read(&st, "tests/fixtures/ide_spike.safetensors") == SOMA_OK)) return;
    soma_rule_config rc;
    config_from_meta(&rc, st);
    size_t nx, ny;
    const float *x = fx(st, "x", &nx);
    const int32_t *y = (const int32_t *)fx(st, "y", &ny);
    int B = (int)ny, ic, ih, iw;
    in_shape(st, &ic, &ih, &iw);
    soma_net *net;
    soma_rule *r;
    if (!build(st, &rc, &net, &r, B)) { soma_st_free(st); return; }
    soma_batch b = { .n = B, .c = ic * rc.T, .h = ih, .w = iw, .x = (float *)x, .y = (int32_t *)y };
    double first = 0, last = 0;
    sgd_steps(r, &b, 30, &first, &last);
    soma_rng rng;
    soma_rng_seed(&rng, 1);
    printf("  spike input, 30 SGD steps on one batch: loss %.4f -> %.4f\n", first, last);
    CHECK(last < first);
    /* a batch of static samples (one frame each) is refused by the rule API */
    soma_batch one = b;
    one.c = ic;
    soma_step_stats s = { 0 };
    CHECK(soma_rule_train_batch(r, &one, 0.05f, &rng, &s) == SOMA_ERR_SHAPE);
    /* T changed after the rule was built: the frames no longer match */
    r->cfg.T = 5;
    const float *sc;
    CHECK(soma_rule_predict(r, &b, &sc, NULL) == SOMA_ERR_ARG);
    r->cfg.T = rc.T;
    soma_mem_plan p4, p64;
    soma_rule_plan(r, &p4);
    soma_rule_free(r);
    soma_net_free(net);
    rc.T = 64;
    rc.sample_size = 64 * ic * ih * iw;
    if (CHECK(new_net_shape(&net, soma_st_meta(st, "spec"), ic, ih, iw))) {
        if (CHECK(soma_rule_new(&r, "ide", net, &rc, B) == SOMA_OK)) {
            soma_rule_plan(r, &p64);
            CHECK(p64.total == p4.total && p64.activations == p4.activations);
            printf("  spike input memory plan: %zu bytes at T = 4, %zu at T = 64\n", p4.total, p64.total);
            soma_rule_free(r);
        }
        soma_net_free(net);
    }
    soma_st_free(st);
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
            { "conv3x4-conv3x4-3", 0, SOMA_ERR_UNSUPPORTED },
            { "conv3x4-5-3", 0, SOMA_ERR_UNSUPPORTED },  /* one dense readout only */
            { "conv3x4-3-bn", 0, SOMA_ERR_UNSUPPORTED },
            { "conv3x4-drop0.2-3", 0, SOMA_ERR_UNSUPPORTED },
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
    char buf[4096];
    soma_rule_options_format(&rc, buf, sizeof buf);
    soma_rule_config rc2;
    soma_rule_config_default(&rc2);
    CHECK(soma_rule_options_parse(&rc2, buf) == SOMA_OK && rc2.ide_leak == 0.95f && rc2.ide_max_iter == 12);
}

int main(void)
{
    soma_set_threads(1);
    golden("if");
    golden("lif_ml");
    golden("conv_bn");
    golden("spike");
    frames_equal_static("if");
    frames_equal_static("lif_ml");
    frames_equal_static("conv_bn");
    spike_training();
    double_checks();
    strict_and_training();
    conv_training();
    bad_input();
    return check_report("test_ide");
}
