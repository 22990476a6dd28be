/*
 * test_pc.c - predictive coding (rule "pc") and the MQ optimizer.
 *
 * Golden values (refs/pc_ref.py, float64 PyTorch with autograd VJPs ->
 * tests/fixtures/pc_*.safetensors) on a 4-layer MLP and a small convnet:
 * the states after 1, 2 and 3 iterations of simultaneous and sequential
 * inference (soft and hard clamp), the weight updates, the weights after one
 * iPC batch, after two SeqIL-MQ batches, and two steps of MQ on a flat array.
 * Properties of the paper: (a) SeqIL reaches every hidden layer in one
 * iteration, simultaneous IL needs L-1; (b) with a weak nudge IL's update
 * points along -dL/dW of BP; (c) the energy falls monotonically for small
 * gamma; (d) the number of matrix multiplies per batch.  Bad input errors.
 */
#include "check.h"
#include "rule/pc.h"
#include <stdio.h>

/* Fixtures are float32; the reference ran in float64.  Tolerance: 1e-5
 * relative, plus 1e-5 of the tensor's largest |value| as an absolute floor.
 * Weight updates get one more absolute floor, 1e-7: they are built from the
 * errors e = h - p, differences of O(1) float32 states whose round-off is
 * ~6e-8 absolute, so where e is 1e-4 of h (the bottom layer after 3
 * iterations) no float32 code can hold 1e-5 relative; the largest
 * deviation seen is 3e-8. */
#define RTOL 1e-5

static const float *fx(const soma_st *st, const char *name, size_t *n)
{
    const soma_st_tensor *t = soma_st_find(st, name);
    if (!t) { fprintf(stderr, "fixture tensor '%s' missing\n", name); CHECK(t != NULL); return NULL; }
    if (n) *n = t->nbytes / 4;
    return t->data;
}

static double maxabs(const float *x, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) if (fabs(x[i]) > m) m = fabs(x[i]);
    return m;
}

static int close_scaled(const char *label, const float *got, const float *want, size_t n)
{
    return check_close_f(label, got, want, n, RTOL, 1e-5 * maxabs(want, n) + 1e-9);
}

static int close_update(const char *label, const float *got, const float *want, size_t n)
{
    return check_close_f(label, got, want, n, RTOL, 1e-5 * maxabs(want, n) + 1e-7);
}

typedef struct fixture {
    soma_st *st;
    const char *spec;
    soma_net_options o;
    const float *x;
    int32_t *y;
    int B, C;
    soma_batch b;
    float gamma, beta, inc_lr;
    int T;
} fixture;

static int open_fixture(fixture *f, const char *path)
{
    memset(f, 0, sizeof *f);
    if (!CHECK(soma_st_read(&f->st, path) == SOMA_OK)) { fprintf(stderr, "%s\n", soma_last_error()); return 0; }
    f->spec = soma_st_meta(f->st, "spec");
    soma_net_options_default(&f->o);
    CHECK(sscanf(soma_st_meta(f->st, "input"), "%d,%d,%d", &f->o.in_c, &f->o.in_h, &f->o.in_w) == 3);
    size_t ny;
    f->x = fx(f->st, "x", NULL);
    f->y = (int32_t *)fx(f->st, "y", &ny);
    f->B = (int)ny;
    f->C = atoi(soma_st_meta(f->st, "classes"));
    f->T = atoi(soma_st_meta(f->st, "T"));
    f->gamma = (float)atof(soma_st_meta(f->st, "gamma"));
    f->beta = (float)atof(soma_st_meta(f->st, "beta"));
    f->inc_lr = (float)atof(soma_st_meta(f->st, "inc_lr"));
    f->b = (soma_batch){ .n = f->B, .c = f->o.in_c, .h = f->o.in_h, .w = f->o.in_w,
                         .x = (float *)f->x, .y = f->y };
    return 1;
}

static soma_net *fixture_net(const fixture *f)
{
    soma_net *net;
    if (!CHECK(soma_net_new(&net, f->spec, &f->o) == SOMA_OK)) return NULL;
    for (int i = 0; i < soma_net_tensor_count(net); i++) {
        const char *name;
        float *v = soma_net_tensor(net, i, &name, NULL, NULL, NULL);
        char key[96];
        snprintf(key, sizeof key, "init.%s", name);
        size_t n;
        const float *src = fx(f->st, key, &n);
        if (src) memcpy(v, src, n * sizeof(float));
    }
    return net;
}

static soma_rule *pc_rule(soma_net *net, const fixture *f, soma_pc_order order, soma_pc_clamp clamp,
                          const soma_optim_config *oc)
{
    soma_rule_config rc;
    soma_rule_config_default(&rc);
    soma_pc_config_default(&rc);
    rc.pc_T = f->T;
    rc.pc_gamma = f->gamma;
    rc.pc_beta = f->beta;
    rc.pc_order = order;
    rc.pc_clamp = clamp;
    if (oc) rc.optim = *oc;
    soma_rule *r = NULL;
    if (!CHECK(soma_rule_new(&r, "pc", net, &rc, f->B) == SOMA_OK))
        fprintf(stderr, "%s\n", soma_last_error());
    return r;
}

static void compare_params(soma_net *net, const fixture *f, const char *prefix, int grads)
{
    for (int i = 0; i < soma_net_tensor_count(net); i++) {
        const char *name;
        int is_param;
        float *v = soma_net_tensor(net, i, &name, NULL, NULL, &is_param);
        if (!is_param) continue;
        char key[128], label[192];
        snprintf(key, sizeof key, "%s%s", prefix, name);
        size_t n;
        const float *want = fx(f->st, key, &n);
        const float *got = grads ? soma_net_param_grads(net) + (v - soma_net_param_values(net)) : v;
        snprintf(label, sizeof label, "%s %s", f->spec, key);
        if (want) (grads ? close_update : close_scaled)(label, got, want, n);
    }
}

static void golden(const char *path)
{
    fixture f;
    if (!open_fixture(&f, path)) return;
    const char *tags[4] = { "sim", "seq", "sim.hard", "seq.hard" };
    for (int k = 0; k < 4; k++) {
        soma_net *net = fixture_net(&f);
        if (!net) continue;
        soma_rule *r = pc_rule(net, &f, k % 2 ? SOMA_PC_SEQUENTIAL : SOMA_PC_SIMULTANEOUS,
                               k / 2 ? SOMA_PC_HARD : SOMA_PC_SOFT, NULL);
        if (!r) { soma_net_free(net); continue; }
        CHECK(soma__pc_begin(r, &f.b) == SOMA_OK);
        int L = soma__pc_units(r);
        for (int t = 0; t < f.T; t++) {
            CHECK(soma__pc_iterate(r, t, 0.1f) == SOMA_OK);
            for (int l = 1; l <= L; l++) {
                char key[64], label[160];
                snprintf(key, sizeof key, "%s.t%d.h%d", tags[k], t + 1, l);
                snprintf(label, sizeof label, "%s %s", f.spec, key);
                size_t n, nw;
                const float *h = soma__pc_state(r, l, &n);
                const float *want = fx(f.st, key, &nw);
                if (want && CHECK(nw == n * (size_t)f.B)) close_scaled(label, h, want, nw);
            }
        }
        CHECK(soma__pc_grads(r) == SOMA_OK);
        char prefix[64];
        snprintf(prefix, sizeof prefix, "%s.grad.", tags[k]);
        compare_params(net, &f, prefix, 1);
        soma_rule_free(r);
        soma_net_free(net);
    }
    /* iPC, SGD lr inc_lr: one batch of T iterations, T weight steps */
    soma_optim_config oc;
    soma_optim_config_default(&oc, SOMA_OPTIM_SGD);
    oc.lr = f.inc_lr;
    soma_net *net = fixture_net(&f);
    soma_rule *r = net ? pc_rule(net, &f, SOMA_PC_INCREMENTAL, SOMA_PC_SOFT, &oc) : NULL;
    if (r) {
        soma_step_stats ss = { 0 };
        CHECK(soma_rule_train_batch(r, &f.b, f.inc_lr, NULL, &ss) == SOMA_OK);
        CHECK(soma_optim_get_step(soma_rule_optim(r)) == f.T);
        compare_params(net, &f, "inc.after.", 0);
    }
    soma_rule_free(r);
    soma_net_free(net);
    /* SeqIL + MQ: two batches */
    float alpha, rr, lr_min, rho_max;
    CHECK(sscanf(soma_st_meta(f.st, "mq"), "%g,%g,%g,%g", &alpha, &rr, &lr_min, &rho_max) == 4);
    soma_optim_config_default(&oc, SOMA_OPTIM_MQ);
    oc.lr = alpha; oc.eps = rr; oc.lr_min = lr_min; oc.rho_max = rho_max;
    net = fixture_net(&f);
    r = net ? pc_rule(net, &f, SOMA_PC_SEQUENTIAL, SOMA_PC_SOFT, &oc) : NULL;
    if (r) {
        for (int s = 0; s < 2; s++) {
            soma_step_stats ss = { 0 };
            if (!CHECK(soma_rule_train_batch(r, &f.b, alpha, NULL, &ss) == SOMA_OK))
                fprintf(stderr, "%s\n", soma_last_error());
        }
        compare_params(net, &f, "mq.after.", 0);
        const char *vname;
        float *v = soma_optim_group_state(soma_rule_optim(r), &vname);
        size_t nv;
        const float *want = fx(f.st, "mq.v", &nv);
        CHECK(v && vname && soma_optim_group_count(soma_rule_optim(r)) == (int)nv);
        if (v && want) close_scaled("mq.v", v, want, nv);
    }
    soma_rule_free(r);
    soma_net_free(net);
    soma_st_free(f.st);
}

/* ---- MQ alone ------------------------------------------------------------- */

static void mq_flat(void)
{
    soma_st *st;
    if (!CHECK(soma_st_read(&st, "tests/fixtures/pc_mq_flat.safetensors") == SOMA_OK)) return;
    float alpha, rr, lr_min, rho_max;
    CHECK(sscanf(soma_st_meta(st, "mq"), "%g,%g,%g,%g", &alpha, &rr, &lr_min, &rho_max) == 4);
    soma_optim_config oc;
    soma_optim_config_default(&oc, SOMA_OPTIM_MQ);
    CHECK(oc.eps == 1e-6f && oc.lr_min == 1e-3f && oc.rho_max == 0.9999f);
    oc.lr = alpha; oc.eps = rr; oc.lr_min = lr_min; oc.rho_max = rho_max;
    soma_optim *o;
    if (!CHECK(soma_optim_new(&o, &oc, 12) == SOMA_OK)) { soma_st_free(st); return; }
    float w[12];
    memcpy(w, fx(st, "w0", NULL), sizeof w);
    /* no groups: refused, nothing changes */
    soma_clear_error();
    soma_optim_step(o, w, fx(st, "g1", NULL), alpha);
    CHECK(soma_optim_get_step(o) == 0);
    CHECK(memcmp(w, fx(st, "w0", NULL), sizeof w) == 0);
    CHECK(strstr(soma_last_error(), "groups") != NULL);
    size_t off[2] = { 0, 7 }, len[2] = { 7, 5 };
    /* bad groups */
    size_t bo[2] = { 0, 5 }, bl[2] = { 7, 5 };
    CHECK(soma_optim_set_groups(o, 2, bo, bl) == SOMA_ERR_ARG);      /* overlap */
    size_t fo[1] = { 10 }, fl[1] = { 5 };
    CHECK(soma_optim_set_groups(o, 1, fo, fl) == SOMA_ERR_ARG);      /* past n */
    CHECK(soma_optim_set_groups(o, 0, off, len) == SOMA_ERR_ARG);
    CHECK(soma_optim_group_count(o) == 0);
    CHECK(soma_optim_set_groups(o, 2, off, len) == SOMA_OK);
    CHECK(soma_optim_size(o) == 2 * sizeof(float));
    soma_optim_step(o, w, fx(st, "g1", NULL), alpha);
    check_close_f("mq w1", w, fx(st, "w1", NULL), 12, RTOL, 1e-7);
    float *v = soma_optim_group_state(o, NULL);
    check_close_f("mq v1", v, fx(st, "v1", NULL), 2, RTOL, 0);
    soma_optim_step(o, w, fx(st, "g2", NULL), alpha);
    check_close_f("mq w2", w, fx(st, "w2", NULL), 12, RTOL, 1e-7);
    check_close_f("mq v2", v, fx(st, "v2", NULL), 2, RTOL, 0);
    CHECK(soma_optim_get_step(o) == 2);
    soma_optim_free(o);
    soma_st_free(st);

    /* bad configurations */
    soma_optim_config_default(&oc, SOMA_OPTIM_MQ);
    oc.rho_max = 1.0f;
    CHECK(soma_optim_new(&o, &oc, 4) == SOMA_ERR_ARG && strstr(soma_last_error(), "rho_max"));
    soma_optim_config_default(&oc, SOMA_OPTIM_MQ);
    oc.lr_min = -1e-3f;
    CHECK(soma_optim_new(&o, &oc, 4) == SOMA_ERR_ARG && strstr(soma_last_error(), "lr_min"));
    soma_optim_config_default(&oc, SOMA_OPTIM_MQ);
    oc.momentum = 0.9f;
    CHECK(soma_optim_new(&o, &oc, 4) == SOMA_ERR_ARG);
    soma_optim_config_default(&oc, SOMA_OPTIM_SGD);
    oc.lr_min = 1e-3f;
    CHECK(soma_optim_new(&o, &oc, 4) == SOMA_ERR_ARG && strstr(soma_last_error(), "mq"));
    soma_optim_kind k;
    CHECK(soma_optim_from_name(&k, "mq") == SOMA_OK && k == SOMA_OPTIM_MQ);

    /* memory: O(matrices), not O(parameters), on the paper's MLP */
    soma_net_options no;
    soma_net_options_default(&no);
    no.in_c = 3; no.in_h = 32; no.in_w = 32;
    soma_net *net;
    if (!CHECK(soma_net_new(&net, "3072-1024-1024-1024-10", &no) == SOMA_OK)) return;
    size_t np = soma_net_param_floats(net);
    soma_optim_config_default(&oc, SOMA_OPTIM_MQ);
    CHECK(soma_optim_new(&o, &oc, np) == SOMA_OK);
    CHECK(soma__rule_layer_groups(net, o) == SOMA_OK);
    CHECK(soma_optim_group_count(o) == 4);
    CHECK(soma_optim_size(o) == 4 * sizeof(float));
    soma_optim *adam;
    soma_optim_config ac;
    soma_optim_config_default(&ac, SOMA_OPTIM_ADAM);
    CHECK(soma_optim_new(&adam, &ac, np) == SOMA_OK);
    printf("optimizer state for %zu parameters: mq %zu bytes, adam %zu bytes\n", np,
           soma_optim_size(o), soma_optim_size(adam));
    CHECK(soma_optim_size(adam) == 2 * np * sizeof(float));
    soma_optim_free(adam);
    soma_optim_free(o);
    soma_net_free(net);
}

/* ---- properties on a random MLP ------------------------------------------- */

typedef struct toy {
    soma_net *net;
    float x[8 * 12];
    int32_t y[8];
    soma_batch b;
} toy;

static int toy_new(toy *t, const char *spec, uint64_t seed)
{
    soma_net_options o;
    soma_net_options_default(&o);
    o.in_c = 12; o.in_h = 1; o.in_w = 1;
    o.seed = seed;
    if (!CHECK(soma_net_new(&t->net, spec, &o) == SOMA_OK)) return 0;
    soma_rng rng;
    soma_rng_seed(&rng, seed + 100);
    for (int i = 0; i < 8 * 12; i++) t->x[i] = soma_rng_uniform(&rng);
    for (int i = 0; i < 8; i++) {   /* a learnable label: the largest of the first 4 inputs */
        int m = 0;
        for (int c = 1; c < 4; c++) if (t->x[i * 12 + c] > t->x[i * 12 + m]) m = c;
        t->y[i] = m;
    }
    t->b = (soma_batch){ .n = 8, .c = 12, .h = 1, .w = 1, .x = t->x, .y = t->y };
    return 1;
}

static soma_rule *toy_rule(toy *t, soma_pc_order order, soma_pc_clamp clamp, int T, float gamma,
                           float beta)
{
    soma_rule_config rc;
    soma_rule_config_default(&rc);
    soma_pc_config_default(&rc);
    rc.pc_T = T; rc.pc_gamma = gamma; rc.pc_beta = beta;
    rc.pc_order = order; rc.pc_clamp = clamp;
    soma_rule *r = NULL;
    if (!CHECK(soma_rule_new(&r, "pc", t->net, &rc, 8) == SOMA_OK)) fprintf(stderr, "%s\n", soma_last_error());
    return r;
}

static double err_norm(const soma_rule *r, int l)
{
    size_t n;
    const float *e = soma__pc_error(r, l, &n);
    double s = 0;
    for (size_t i = 0; i < n * 8; i++) s += (double)e[i] * e[i];
    return sqrt(s);
}

/* (a) SeqIL: one iteration reaches every hidden layer; IL needs L-1. */
static void prop_reach(void)
{
    toy t;
    if (!toy_new(&t, "12-10-9-8-7-4", 7)) return;   /* L = 5 */
    soma_rule *r = toy_rule(&t, SOMA_PC_SEQUENTIAL, SOMA_PC_SOFT, 1, 0.05f, 100.0f);
    if (r) {
        CHECK(soma__pc_begin(r, &t.b) == SOMA_OK);
        int L = soma__pc_units(r);
        CHECK(L == 5);
        for (int l = 1; l < L; l++) CHECK(err_norm(r, l) == 0);   /* feedforward start */
        CHECK(soma__pc_iterate(r, 0, 0) == SOMA_OK);
        /* e_l shrinks like gamma^(L-l) down the sweep: nonzero is the point */
        for (int l = 1; l < L; l++)
            if (!CHECK(err_norm(r, l) > 0)) fprintf(stderr, "  seq: e_%d still 0 after 1 iteration\n", l);
        soma_rule_free(r);
    }
    r = toy_rule(&t, SOMA_PC_SIMULTANEOUS, SOMA_PC_SOFT, 1, 0.05f, 100.0f);
    if (r) {
        CHECK(soma__pc_begin(r, &t.b) == SOMA_OK);
        int L = soma__pc_units(r);
        for (int it = 1; it <= L - 1; it++) {
            CHECK(soma__pc_iterate(r, it - 1, 0) == SOMA_OK);
            /* after `it` iterations exactly layers L-1 .. L-it carry an error */
            for (int l = 1; l < L; l++) {
                int reached = l >= L - it;
                if (!CHECK(reached ? err_norm(r, l) > 0 : err_norm(r, l) == 0))
                    fprintf(stderr, "  sim: after %d iterations |e_%d| = %g\n", it, l, err_norm(r, l));
            }
        }
        soma_rule_free(r);
    }
    soma_net_free(t.net);
}

static double cosine(const float *a, const float *b, size_t n)
{
    double ab = 0, aa = 0, bb = 0;
    for (size_t i = 0; i < n; i++) { ab += (double)a[i] * b[i]; aa += (double)a[i] * a[i]; bb += (double)b[i] * b[i]; }
    return ab / sqrt(aa * bb + 1e-300);
}

/* (b) weak nudge + long inference: IL's update is along BP's gradient.
 * With steps gamma/(1+t) an error's distance to its equilibrium shrinks
 * like prod (1 - gamma/(1+t)) ~ T^-gamma, so gamma 0.8 and T 200. */
static void prop_bp(void)
{
    toy t;
    if (!toy_new(&t, "12-10-9-8-4", 3)) return;
    size_t np = soma_net_param_floats(t.net);
    float *gbp = malloc(np * sizeof(float));
    /* BP's gradient of the mean CE */
    CHECK(soma_net_prepare(t.net, 8) == SOMA_OK);
    soma_net_set_train(t.net, 1);
    const float *logits;
    CHECK(soma_net_forward(t.net, t.x, 8, NULL, &logits) == SOMA_OK);
    float probs[8 * 4], dl[8 * 4] = { 0 };
    soma_ce_forward(probs, logits, t.y, 8, 4);
    soma_ce_backward(dl, probs, t.y, 8, 4, 1.0f);
    soma_net_zero_grad(t.net);
    CHECK(soma_net_backward(t.net, dl, 8, NULL) == SOMA_OK);
    memcpy(gbp, soma_net_param_grads(t.net), np * sizeof(float));
    const soma_pc_order orders[2] = { SOMA_PC_SIMULTANEOUS, SOMA_PC_SEQUENTIAL };
    for (int k = 0; k < 2; k++) {
        soma_rule *r = toy_rule(&t, orders[k], SOMA_PC_SOFT, 200, 0.8f, 1e-3f);
        if (!r) continue;
        CHECK(soma__pc_begin(r, &t.b) == SOMA_OK);
        for (int it = 0; it < 200; it++) CHECK(soma__pc_iterate(r, it, 0) == SOMA_OK);
        CHECK(soma__pc_grads(r) == SOMA_OK);
        double c = cosine(soma_net_param_grads(t.net), gbp, np);
        printf("cosine(IL %s update, BP gradient) = %.6f\n", soma_pc_order_name(orders[k]), c);
        CHECK(c > 0.99);
        soma_rule_free(r);
    }
    /* the same check fails with a strong nudge and a single simultaneous
     * iteration (only the top layer learns): the test can fail */
    soma_rule *r = toy_rule(&t, SOMA_PC_SIMULTANEOUS, SOMA_PC_SOFT, 1, 0.05f, 100.0f);
    if (r) {
        CHECK(soma__pc_begin(r, &t.b) == SOMA_OK);
        CHECK(soma__pc_iterate(r, 0, 0) == SOMA_OK);
        CHECK(soma__pc_grads(r) == SOMA_OK);
        CHECK(cosine(soma_net_param_grads(t.net), gbp, np) < 0.99);
        soma_rule_free(r);
    }
    free(gbp);
    soma_net_free(t.net);
}

/* (c) the energy falls at every iteration for a small gamma (hard clamp:
 * the top term is then a fixed CE and inference is gradient descent on F). */
static void prop_energy(void)
{
    toy t;
    if (!toy_new(&t, "12-10-9-8-4", 5)) return;
    const soma_pc_order orders[2] = { SOMA_PC_SIMULTANEOUS, SOMA_PC_SEQUENTIAL };
    for (int k = 0; k < 2; k++) {
        soma_rule *r = toy_rule(&t, orders[k], SOMA_PC_HARD, 50, 0.05f, 100.0f);
        if (!r) continue;
        CHECK(soma__pc_begin(r, &t.b) == SOMA_OK);
        double F0 = soma__pc_energy(r), prev = F0;
        int mono = 1;
        for (int it = 0; it < 50; it++) {
            CHECK(soma__pc_iterate(r, it, 0) == SOMA_OK);
            double F = soma__pc_energy(r);
            if (F > prev + 1e-7 * fabs(prev)) {
                mono = 0;
                fprintf(stderr, "  %s: F rose at iteration %d: %.9g -> %.9g\n",
                        soma_pc_order_name(orders[k]), it, prev, F);
            }
            prev = F;
        }
        printf("energy %s: %.6f -> %.6f over 50 iterations\n", soma_pc_order_name(orders[k]), F0, prev);
        CHECK(mono);
        CHECK(prev < F0 - 1e-3);   /* it moved, so monotonicity means something */
        soma_rule_free(r);
    }
    /* and it does rise with a step far too large: the check can fail */
    soma_rule *r = toy_rule(&t, SOMA_PC_SIMULTANEOUS, SOMA_PC_HARD, 5, 8.0f, 100.0f);
    if (r) {
        CHECK(soma__pc_begin(r, &t.b) == SOMA_OK);
        double prev = soma__pc_energy(r);
        int rose = 0;
        for (int it = 0; it < 5; it++) {
            CHECK(soma__pc_iterate(r, it, 0) == SOMA_OK);
            double F = soma__pc_energy(r);
            rose |= F > prev;
            prev = F;
        }
        CHECK(rose);
        soma_rule_free(r);
    }
    soma_net_free(t.net);
}

/* (d) matrix multiplies per training batch.  Table 5 of the paper gives
 * T(2L-1) + L (IL, SeqIL) and T(2L-1) + TL (iPC) and leaves out the
 * initial feedforward pass (L).  soma also computes p_1 = W_0 x once per
 * batch instead of once per iteration when the weights stay fixed during
 * inference (IL, SeqIL: T fewer).  So the exact counts are
 *   IL, SeqIL: T(2L-1) + L + L - T = 2L + T(2L-2)
 *   iPC:       T(2L-1) + TL + L     = L + T(3L-1)                         */
static void prop_matmuls(void)
{
    const char *specs[2] = { "12-10-9-8-4", "12-10-9-8-7-6-4" };
    for (int s = 0; s < 2; s++) {
        toy t;
        if (!toy_new(&t, specs[s], 9)) return;
        for (int T = 1; T <= 5; T += 2)
            for (int k = 0; k < SOMA_PC_ORDER_COUNT; k++) {
                soma_rule *r = toy_rule(&t, (soma_pc_order)k, SOMA_PC_SOFT, T, 0.05f, 100.0f);
                if (!r) continue;
                soma_step_stats ss = { 0 };
                CHECK(soma_rule_train_batch(r, &t.b, 0.01f, NULL, &ss) == SOMA_OK);
                int64_t L = soma__pc_units(r), got = soma__pc_matmuls(r);
                int64_t paper = k == SOMA_PC_INCREMENTAL ? T * (2 * L - 1) + T * L : T * (2 * L - 1) + L;
                int64_t want = k == SOMA_PC_INCREMENTAL ? paper + L : paper + L - T;
                if (!CHECK(got == want))
                    fprintf(stderr, "  %s L=%d T=%d: %lld matmuls, want %lld (paper %lld)\n",
                            soma_pc_order_name((soma_pc_order)k), (int)L, T, (long long)got,
                            (long long)want, (long long)paper);
                if (T == 3 && s == 0)
                    printf("matmuls %s L=%d T=3: %lld (Table 5: %lld + feedforward %d%s)\n",
                           soma_pc_order_name((soma_pc_order)k), (int)L, (long long)got,
                           (long long)paper, (int)L, k == SOMA_PC_INCREMENTAL ? "" : " - T");
                soma_rule_free(r);
            }
        soma_net_free(t.net);
    }
}

/* Training lowers the loss; prediction is the plain feedforward pass. */
static void train_and_predict(void)
{
    toy t;
    if (!toy_new(&t, "12-10-9-8-4", 11)) return;
    soma_rule_config rc;
    soma_rule_config_default(&rc);
    soma_pc_config_default(&rc);
    soma_optim_config_default(&rc.optim, SOMA_OPTIM_MQ);
    rc.optim.lr = 1e-2f;
    soma_rule *r;
    if (!CHECK(soma_rule_new(&r, "pc", t.net, &rc, 8) == SOMA_OK)) { soma_net_free(t.net); return; }
    double first = 0, last = 0;
    for (int s = 0; s < 60; s++) {
        soma_step_stats ss = { 0 };
        CHECK(soma_rule_train_batch(r, &t.b, rc.optim.lr, NULL, &ss) == SOMA_OK);
        if (s == 0) first = ss.loss / ss.n;
        last = ss.loss / ss.n;
    }
    printf("SeqIL-MQ on one batch: loss %.4f -> %.4f\n", first, last);
    CHECK(last < 0.7 * first);
    const float *scores, *logits;
    soma_step_stats ps = { 0 };
    CHECK(soma_rule_predict(r, &t.b, &scores, &ps) == SOMA_OK);
    float copy[8 * 4];
    memcpy(copy, scores, sizeof copy);
    soma_net_set_train(t.net, 0);
    CHECK(soma_net_forward(t.net, t.x, 8, NULL, &logits) == SOMA_OK);
    CHECK(memcmp(copy, logits, sizeof copy) == 0);
    CHECK(ps.n == 8);
    soma_mem_plan plan;
    soma_rule_plan(r, &plan);
    CHECK(plan.optim == 4 * sizeof(float));
    soma_rule_free(r);
    soma_net_free(t.net);
}

/* Autoencoder: target = input, BCE through a sigmoid. */
static void autoencoder(void)
{
    toy t;
    if (!toy_new(&t, "12-6-3-6-12", 13)) return;
    soma_rule_config rc;
    soma_rule_config_default(&rc);
    soma_pc_config_default(&rc);
    rc.pc_autoencoder = 1;
    rc.pc_T = 6;
    rc.pc_gamma = 0.035f;
    soma_optim_config_default(&rc.optim, SOMA_OPTIM_ADAM);
    rc.optim.lr = 3e-3f;
    soma_rule *r;
    if (!CHECK(soma_rule_new(&r, "pc", t.net, &rc, 8) == SOMA_OK)) { fprintf(stderr, "%s\n", soma_last_error()); soma_net_free(t.net); return; }
    double first = 0, last = 0;
    for (int s = 0; s < 150; s++) {
        soma_step_stats ss = { 0 };
        CHECK(soma_rule_train_batch(r, &t.b, rc.optim.lr, NULL, &ss) == SOMA_OK);
        if (s == 0) first = ss.loss / ss.n;
        last = ss.loss / ss.n;
    }
    printf("autoencoder SeqIL-Adam: BCE %.4f -> %.4f\n", first, last);
    CHECK(last < first - 0.02);
    soma_rule_free(r);
    soma_net_free(t.net);
}

static void bad_input(void)
{
    toy t;
    if (!toy_new(&t, "12-10-4", 1)) return;
    soma_rule_config rc;
    soma_rule *r = NULL;
    struct { const char *what; int T; float gamma, beta; soma_status want; } cases[] = {
        { "T", 0, 0.05f, 100.0f, SOMA_ERR_ARG },
        { "T", -2, 0.05f, 100.0f, SOMA_ERR_ARG },
        { "gamma", 3, 0.0f, 100.0f, SOMA_ERR_ARG },
        { "gamma", 3, -0.1f, 100.0f, SOMA_ERR_ARG },
        { "gamma", 3, NAN, 100.0f, SOMA_ERR_ARG },
        { "beta", 3, 0.05f, -1.0f, SOMA_ERR_ARG },
        { "beta", 3, 0.05f, INFINITY, SOMA_ERR_ARG },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        soma_rule_config_default(&rc);
        soma_pc_config_default(&rc);
        rc.pc_T = cases[i].T; rc.pc_gamma = cases[i].gamma; rc.pc_beta = cases[i].beta;
        soma_status s = soma_rule_new(&r, "pc", t.net, &rc, 8);
        if (!CHECK(s == cases[i].want && r == NULL && strstr(soma_last_error(), cases[i].what)))
            fprintf(stderr, "  case %zu: status %d, '%s'\n", i, s, soma_last_error());
        soma_rule_free(r);
        r = NULL;
    }
    /* soma_rule_config_default alone leaves pc_T = 0 unless it calls
     * soma_pc_config_default: either way the rule must not run with T = 0 */
    soma_rule_config_default(&rc);
    if (rc.pc_T == 0) CHECK(soma_rule_new(&r, "pc", t.net, &rc, 8) == SOMA_ERR_ARG);
    soma_rule_free(r);
    r = NULL;
    soma_pc_config_default(&rc);
    rc.pc_order = SOMA_PC_ORDER_COUNT;
    CHECK(soma_rule_new(&r, "pc", t.net, &rc, 8) == SOMA_ERR_ARG);
    soma_pc_config_default(&rc);
    rc.pc_autoencoder = 1;   /* 12 inputs, 4 outputs */
    CHECK(soma_rule_new(&r, "pc", t.net, &rc, 8) == SOMA_ERR_SHAPE &&
          strstr(soma_last_error(), "autoencoder") && strstr(soma_last_error(), "4 outputs"));
    soma_net_free(t.net);
    /* unsupported layers */
    soma_net_options o;
    soma_net_options_default(&o);
    o.in_c = 12; o.in_h = 1; o.in_w = 1;
    soma_net *net;
    if (CHECK(soma_net_new(&net, "12-10-bn-4", &o) == SOMA_OK)) {
        soma_pc_config_default(&rc);
        CHECK(soma_rule_new(&r, "pc", net, &rc, 8) == SOMA_ERR_UNSUPPORTED &&
              strstr(soma_last_error(), "batchnorm"));
        soma_net_free(net);
    }
    /* names */
    soma_pc_order po;
    soma_pc_clamp pcl;
    CHECK(soma_pc_order_from_name(&po, "seq") == SOMA_OK && po == SOMA_PC_SEQUENTIAL);
    CHECK(soma_pc_order_from_name(&po, "incremental") == SOMA_OK && po == SOMA_PC_INCREMENTAL);
    CHECK(soma_pc_order_from_name(&po, "bogus") == SOMA_ERR_ARG && strstr(soma_last_error(), "simultaneous"));
    CHECK(soma_pc_clamp_from_name(&pcl, "hard") == SOMA_OK && pcl == SOMA_PC_HARD);
    CHECK(soma_pc_clamp_from_name(&pcl, "firm") == SOMA_ERR_ARG);
}

/* Every allocation of the rule and of MQ's groups may fail: a clean error
 * and no leak (ASan checks the latter under SAN=1). */
static void alloc_failures(void)
{
    toy t;
    if (!toy_new(&t, "12-10-9-4", 2)) return;
    int failed_ok = 1, n;
    for (n = 1; n < 200; n++) {
        soma_rule_config rc;
        soma_rule_config_default(&rc);
        soma_pc_config_default(&rc);
        soma_optim_config_default(&rc.optim, SOMA_OPTIM_MQ);
        soma_rule *r = NULL;
        soma__fault_after(n);
        soma_status s = soma_rule_new(&r, "pc", t.net, &rc, 8);
        soma_step_stats ss = { 0 };
        if (!s) s = soma_rule_train_batch(r, &t.b, 1e-3f, NULL, &ss);  /* sets MQ's groups */
        soma__fault_after(0);
        soma_rule_free(r);
        if (s == SOMA_OK) break;
        if (s != SOMA_ERR_NOMEM) failed_ok = 0;
    }
    CHECK(failed_ok);
    CHECK(n > 5 && n < 200);   /* the walk reached a run with no failure */
    soma_net_free(t.net);
}

/* Plain SGD writes its update straight into the weights (one GEMM, no stored
 * gradient): the same weights as the stored path (forced by a clip that never
 * binds) after a few SeqIL and iPC batches, and a NaN in the batch leaves every
 * weight as it was. */
static void sgd_direct(void)
{
    for (int order = 0; order < 2; order++) {
        toy a, b;
        if (!toy_new(&a, "12-10-8-4", 7) || !toy_new(&b, "12-10-8-4", 7)) return;
        soma_rule_config rc;
        soma_rule_config_default(&rc);
        soma_pc_config_default(&rc);
        rc.pc_order = order ? SOMA_PC_INCREMENTAL : SOMA_PC_SEQUENTIAL;
        soma_optim_config_default(&rc.optim, SOMA_OPTIM_SGD);
        rc.optim.lr = 0.5f;
        soma_rule *ra = NULL, *rb = NULL;
        CHECK(soma_rule_new(&ra, "pc", a.net, &rc, 8) == SOMA_OK);
        rc.clip_norm = 1e30f;   /* the stored-gradient path, same arithmetic */
        CHECK(soma_rule_new(&rb, "pc", b.net, &rc, 8) == SOMA_OK);
        for (int k = 0; ra && rb && k < 4; k++) {
            CHECK(soma_rule_train_batch(ra, &a.b, 0.5f, NULL, NULL) == SOMA_OK);
            CHECK(soma_rule_train_batch(rb, &b.b, 0.5f, NULL, NULL) == SOMA_OK);
        }
        size_t np = soma_net_param_floats(a.net);
        const float *wa = soma_net_param_values(a.net), *wb = soma_net_param_values(b.net);
        double dmax = 0, wmax = 0, moved = 0;
        for (size_t i = 0; i < np; i++) {
            dmax = fmax(dmax, fabs((double)wa[i] - wb[i]));
            wmax = fmax(wmax, fabs((double)wa[i]));
        }
        CHECK(dmax <= 1e-6 * wmax);
        CHECK(soma_optim_get_step(soma_rule_optim(ra)) == soma_optim_get_step(soma_rule_optim(rb)));
        /* NaN: refused, nothing moves */
        float *keep = malloc(np * sizeof *keep);
        memcpy(keep, wa, np * sizeof *keep);
        a.x[5] = NAN;
        CHECK(soma_rule_train_batch(ra, &a.b, 0.5f, NULL, NULL) == SOMA_ERR_NUMERIC);
        for (size_t i = 0; i < np; i++) moved += wa[i] != keep[i];
        CHECK(moved == 0);
        free(keep);
        soma_rule_free(ra);
        soma_rule_free(rb);
        soma_net_free(a.net);
        soma_net_free(b.net);
    }
}

int main(void)
{
    soma_set_threads(1);
    golden("tests/fixtures/pc_mlp.safetensors");
    golden("tests/fixtures/pc_cnn.safetensors");
    mq_flat();
    prop_reach();
    prop_bp();
    prop_energy();
    prop_matmuls();
    train_and_predict();
    autoencoder();
    sgd_direct();
    bad_input();
    alloc_failures();
    return check_report("test_pc");
}
