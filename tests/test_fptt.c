/*
 * test_fptt.c - the FPTT rule (src/rule/fptt.c) on LTC spiking nets:
 *  - golden values from refs/fptt_ref.py (PyTorch, written from the
 *    equations): three FPTT steps (K = 1) and two FPTT-K windows (K = 3) of
 *    "4-rltc6-3" with the liquid readout: W, Wbar, lam, membrane, threshold
 *    trace and loss after every window, within 1e-5 relative;
 *  - the post-step update on the notes' tiny trace (lam 0.01, Wbar 0.90);
 *  - K = T with a tiny alpha: one FPTT update equals a BPTT update;
 *  - the memory plan: FPTT's activation bytes do not depend on T, BPTT's grow;
 *  - W <- Wbar at the end of an epoch, Wbar/lam as named net buffers;
 *  - bad input: alpha <= 0, beta outside (0, 1], K < 1, T not a multiple of K;
 *  - the LTC tau maps' own sigmoid (src/neuron/ltc.c, not libm's expf) against
 *    the double-precision sigmoid, and its backward.
 */
#include "check.h"
#include "rule/rule.h"
#include "neuron/ltc.h"
#include <float.h>
#include <stdio.h>

static const float *fx(const soma_st *st, const char *name, size_t *n)
{
    const soma_st_tensor *t = soma_st_find(st, name);
    if (!t) { fprintf(stderr, "fixture tensor '%s' missing\n", name); CHECK(t != NULL); return NULL; }
    if (n) *n = t->nbytes / 4;
    return t->data;
}

static soma_net *ltc_net(const char *spec, int D, uint64_t seed)
{
    soma_net_options o;
    soma_net_options_default(&o);
    o.in_c = D; o.in_h = 1; o.in_w = 1;
    o.readout = SOMA_READOUT_LTC;
    o.seed = seed;
    soma_net *n = NULL;
    if (!CHECK(soma_net_new(&n, spec, &o) == SOMA_OK)) fprintf(stderr, "%s\n", soma_last_error());
    return n;
}

static void rule_cfg(soma_rule_config *c, int T, int K, int D)
{
    soma_rule_config_default(c);
    soma_optim_config_default(&c->optim, SOMA_OPTIM_SGD);
    c->optim.lr = 0.1f;
    c->clip_norm = 1.0f;
    c->T = T;
    c->fptt_k = K;
    c->fptt_alpha = 0.1f;
    c->fptt_beta = 0.5f;
    c->encoding = SOMA_ENC_FRAMES;
    c->sample_size = T * D;
    c->reduce = SOMA_REDUCE_LAST;
}

/* Compares every parameter (or its Wbar / lam buffer) with fixture key prefix. */
static void compare_params(soma_net *n, const soma_st *st, const char *prefix, const char *buf_prefix,
                           const char *label)
{
    for (int i = 0; i < soma_net_tensor_count(n); i++) {
        const char *name;
        int is_param;
        float *v = soma_net_tensor(n, i, &name, NULL, NULL, &is_param);
        const char *pname = name;
        if (buf_prefix) {
            if (is_param || strncmp(name, buf_prefix, strlen(buf_prefix))) continue;
            pname = name + strlen(buf_prefix);
        } else if (!is_param) {
            continue;
        }
        char key[128], lab[192];
        snprintf(key, sizeof key, "%s%s", prefix, pname);
        size_t cnt;
        const float *want = fx(st, key, &cnt);
        snprintf(lab, sizeof lab, "%s %s", label, key);
        if (want) check_close_f(lab, v, want, cnt, 1e-5, 1e-7);
    }
}

static void golden(const char *path)
{
    soma_st *st;
    if (!CHECK(soma_st_read(&st, path) == SOMA_OK)) { fprintf(stderr, "%s\n", soma_last_error()); return; }
    int T = atoi(soma_st_meta(st, "T")), K = atoi(soma_st_meta(st, "K")), D = 4;
    soma_net *n = ltc_net(soma_st_meta(st, "spec"), D, 1);
    if (!n) { soma_st_free(st); return; }
    /* the initial parameters, before the rule copies them into Wbar */
    for (int i = 0; i < soma_net_tensor_count(n); i++) {
        const char *name;
        float *v = soma_net_tensor(n, i, &name, NULL, NULL, NULL);
        char key[96];
        snprintf(key, sizeof key, "init.%s", name);
        size_t cnt;
        const float *src = fx(st, key, &cnt);
        if (src) memcpy(v, src, cnt * sizeof(float));
    }
    size_t ny;
    const float *x = fx(st, "x", NULL);
    const int32_t *y = (const int32_t *)fx(st, "y", &ny);
    int B = (int)ny;
    soma_rule_config c;
    rule_cfg(&c, T, K, D);
    soma_rule *r;
    if (!CHECK(soma_rule_new(&r, "fptt", n, &c, B) == SOMA_OK)) {
        fprintf(stderr, "%s\n", soma_last_error());
        soma_net_free(n);
        soma_st_free(st);
        return;
    }
    soma_batch b = { .n = B, .c = T * D, .h = 1, .w = 1, .x = (float *)x, .y = (int32_t *)y };
    const char *cell = soma_st_meta(st, "cell");   /* the LTC cell's layer (1, or 2 after an sbn) */
    const soma_layer *l = &n->layers[cell ? atoi(cell) : 1];
    for (int p = 0; p < T / K; p++) {
        double loss;
        if (!CHECK(soma__fptt_window(r, &b, p, 0.1f, NULL, &loss) == SOMA_OK)) {
            fprintf(stderr, "%s\n", soma_last_error());
            break;
        }
        char pre[32], label[64];
        snprintf(label, sizeof label, "fptt T=%d K=%d window %d", T, K, p);
        snprintf(pre, sizeof pre, "loss%d", p);
        float lf = (float)loss;
        char lab[96];
        snprintf(lab, sizeof lab, "%s loss", label);
        check_close_f(lab, &lf, fx(st, pre, NULL), 1, 1e-5, 0);
        int slot = soma__slot_of(n, soma_net_time(n) - 1);
        snprintf(pre, sizeof pre, "u%d", p);
        snprintf(lab, sizeof lab, "%s membrane", label);
        check_close_f(lab, soma__slot(n, l, l->cu, slot), fx(st, pre, NULL), (size_t)B * 6, 1e-5, 1e-7);
        snprintf(pre, sizeof pre, "eta%d", p);
        snprintf(lab, sizeof lab, "%s threshold trace", label);
        check_close_f(lab, soma__slot(n, l, l->ca, slot), fx(st, pre, NULL), (size_t)B * 6, 1e-5, 1e-7);
        snprintf(pre, sizeof pre, "w%d.", p);
        compare_params(n, st, pre, NULL, label);
        snprintf(pre, sizeof pre, "wbar%d.", p);
        compare_params(n, st, pre, "fptt.wbar.", label);
        snprintf(pre, sizeof pre, "lam%d.", p);
        compare_params(n, st, pre, "fptt.lam.", label);
        /* batchnorm running statistics, where the fixture has them (sbn) */
        for (int i = 0; i < soma_net_tensor_count(n); i++) {
            const char *name;
            float *v = soma_net_tensor(n, i, &name, NULL, NULL, NULL);
            char key[96];
            snprintf(key, sizeof key, "run%d.%s", p, name);
            if (!strstr(name, "running") || !soma_st_find(st, key)) continue;
            size_t cnt;
            const float *want = fx(st, key, &cnt);
            char rl[192];
            snprintf(rl, sizeof rl, "%s %s", label, key);
            if (want) check_close_f(rl, v, want, cnt, 1e-5, 1e-7);
        }
    }
    soma_rule_free(r);
    soma_net_free(n);
    soma_st_free(st);
}

/* notes 2.6: alpha 0.1, beta 0.5, W = Wbar = 1, lam = 0, the optimizer moves
 * W to 0.9 -> lam = 0.01, Wbar = 0.5 + 0.45 - 5 * 0.01 = 0.90 */
static void tiny_trace(void)
{
    float w = 0.9f, wbar = 1.0f, lam = 0.0f;
    soma__fptt_post_update(&lam, &wbar, &w, 1, 0.1f, 0.5f);
    const float lw = 0.01f, ww = 0.90f;
    check_close_f("tiny trace lam", &lam, &lw, 1, 1e-5, 1e-9);
    check_close_f("tiny trace wbar", &wbar, &ww, 1, 1e-5, 1e-9);
}

static void fill_batch(float *x, int32_t *y, int B, int n, int C, uint64_t seed)
{
    soma_rng g;
    soma_rng_seed(&g, seed);
    for (int i = 0; i < B * n; i++) x[i] = 1.5f * soma_rng_normal(&g);
    for (int i = 0; i < B; i++) y[i] = (int32_t)soma_rng_below(&g, (uint32_t)C);
}

/* K = T, tiny alpha: at the first update W = Wbar and lam = 0, so the
 * regulariser adds nothing and FPTT's update is BPTT's (reduce last, same
 * optimizer and clip). */
static void fptt_equals_bptt(void)
{
    const int T = 8, D = 4, B = 3;
    soma_net *a = ltc_net("4-rltc6-ltc5-3", D, 3), *bn = ltc_net("4-rltc6-ltc5-3", D, 3);
    if (!a || !bn) return;
    soma_rule_config c;
    rule_cfg(&c, T, T, D);
    c.fptt_alpha = 1e-6f;
    c.optim.kind = SOMA_OPTIM_ADAM;
    soma_optim_config_default(&c.optim, SOMA_OPTIM_ADAM);
    c.optim.lr = 1e-2f;
    soma_rule *rf, *rb;
    CHECK(soma_rule_new(&rf, "fptt", a, &c, B) == SOMA_OK);
    CHECK(soma_rule_new(&rb, "bptt", bn, &c, B) == SOMA_OK);
    float x[3 * 32];
    int32_t y[3];
    fill_batch(x, y, B, T * D, 3, 9);
    soma_batch b = { .n = B, .c = T * D, .h = 1, .w = 1, .x = x, .y = y };
    soma_step_stats sf = { 0 }, sb = { 0 };
    CHECK(soma_rule_train_batch(rf, &b, 1e-2f, NULL, &sf) == SOMA_OK);
    CHECK(soma_rule_train_batch(rb, &b, 1e-2f, NULL, &sb) == SOMA_OK);
    size_t np = soma_net_param_floats(a);
    CHECK(np == soma_net_param_floats(bn));
    check_close_f("fptt K=T == bptt: W after one update", soma_net_param_values(a), soma_net_param_values(bn),
                  np, 1e-6, 1e-8);
    /* and the parameters moved */
    soma_net *c0 = ltc_net("4-rltc6-ltc5-3", D, 3);
    double moved = 0;
    for (size_t i = 0; i < np; i++) moved += fabs(soma_net_param_values(a)[i] - soma_net_param_values(c0)[i]);
    CHECK(moved > 1e-3);
    soma_net_free(c0);
    /* W <- Wbar at the end of an epoch; the buffers are named tensors */
    int found = 0;
    float *wbar = NULL;
    for (int i = 0; i < soma_net_tensor_count(a); i++) {
        const char *name;
        float *v = soma_net_tensor(a, i, &name, NULL, NULL, NULL);
        if (!strcmp(name, "fptt.wbar.0.weight")) { found++; wbar = v; }
        if (!strcmp(name, "fptt.lam.1.tau_adp.k")) found++;
    }
    CHECK(found == 2);
    CHECK(wbar && memcmp(wbar, soma_net_param_values(a), 24 * sizeof(float)) != 0);
    soma_rule_epoch_end(rf);
    CHECK(wbar && memcmp(wbar, soma_net_param_values(a), 24 * sizeof(float)) == 0);
    soma_rule_epoch_end(rb);     /* no epoch_end: nothing */
    soma_rule_epoch_end(NULL);
    soma_rule_free(rf); soma_rule_free(rb);
    soma_net_free(a); soma_net_free(bn);
}

/* Planned activation bytes: FPTT (K = 1 and K = 10) the same at T = 100 and
 * T = 1000; BPTT's grow with T. */
static void memory_plan(void)
{
    const int D = 2, B = 16;
    size_t act[2][3];
    const int Ts[2] = { 100, 1000 };
    for (int k = 0; k < 2; k++) {
        for (int m = 0; m < 3; m++) {
            soma_net *n = ltc_net("2-rltc64-10", D, 1);
            if (!n) return;
            soma_rule_config c;
            rule_cfg(&c, Ts[k], m == 1 ? 10 : 1, D);
            soma_rule *r;
            if (!CHECK(soma_rule_new(&r, m == 2 ? "bptt" : "fptt", n, &c, B) == SOMA_OK)) {
                fprintf(stderr, "%s\n", soma_last_error());
                soma_net_free(n);
                return;
            }
            soma_mem_plan p;
            soma_rule_plan(r, &p);
            act[k][m] = p.activations;
            if (m == 0) CHECK(p.buffers >= 2 * p.params);   /* Wbar and lam */
            soma_rule_free(r);
            soma_net_free(n);
        }
    }
    printf("plan activations (bytes): T=100: fptt %zu, fptt-k10 %zu, bptt %zu; T=1000: %zu, %zu, %zu\n",
           act[0][0], act[0][1], act[0][2], act[1][0], act[1][1], act[1][2]);
    CHECK(act[0][0] == act[1][0]);
    CHECK(act[0][1] == act[1][1]);
    CHECK(act[1][2] > 8 * act[0][2]);
    CHECK(act[1][2] > 100 * act[1][0]);
}

static void bad_input(void)
{
    soma_net *n = ltc_net("2-rltc8-3", 2, 1);
    if (!n) return;
    soma_rule *r;
    soma_rule_config c;
    const float alphas[] = { 0.0f, -0.1f, NAN, INFINITY };
    for (int i = 0; i < 4; i++) {
        rule_cfg(&c, 10, 1, 2);
        c.fptt_alpha = alphas[i];
        CHECK(soma_rule_new(&r, "fptt", n, &c, 4) == SOMA_ERR_ARG);
        CHECK(strstr(soma_last_error(), "alpha") != NULL);
    }
    const float betas[] = { 0.0f, -0.5f, 1.5f, NAN };
    for (int i = 0; i < 4; i++) {
        rule_cfg(&c, 10, 1, 2);
        c.fptt_beta = betas[i];
        CHECK(soma_rule_new(&r, "fptt", n, &c, 4) == SOMA_ERR_ARG);
        CHECK(strstr(soma_last_error(), "beta") != NULL);
    }
    rule_cfg(&c, 10, 0, 2);
    CHECK(soma_rule_new(&r, "fptt", n, &c, 4) == SOMA_ERR_ARG);
    CHECK(strstr(soma_last_error(), "fptt-k") != NULL);
    rule_cfg(&c, 10, 3, 2);
    CHECK(soma_rule_new(&r, "fptt", n, &c, 4) == SOMA_ERR_ARG);
    CHECK(strstr(soma_last_error(), "multiple") != NULL);
    /* beta = 1 is allowed: Wbar follows W */
    rule_cfg(&c, 10, 5, 2);
    c.fptt_beta = 1.0f;
    CHECK(soma_rule_new(&r, "fptt", n, &c, 4) == SOMA_OK);
    soma_rule_free(r);
    soma_net_free(n);
    /* a static net */
    soma_net_options o;
    soma_net_options_default(&o);
    o.in_c = 2; o.in_h = 1; o.in_w = 1;
    CHECK(soma_net_new(&n, "2-8-3", &o) == SOMA_OK);
    rule_cfg(&c, 10, 1, 2);
    CHECK(soma_rule_new(&r, "fptt", n, &c, 4) == SOMA_ERR_ARG);
    soma_net_free(n);
}

/* A few FPTT-K batches on the full train path run, change W and keep the
 * loss finite; the window order is enforced. */
static void train_path(void)
{
    const int T = 12, D = 2, B = 4;
    soma_net *n = ltc_net("2-rltc16-3", D, 5);
    if (!n) return;
    soma_rule_config c;
    rule_cfg(&c, T, 4, D);
    c.reduce = SOMA_REDUCE_MEAN;
    soma_rule *r;
    if (!CHECK(soma_rule_new(&r, "fptt", n, &c, B) == SOMA_OK)) { soma_net_free(n); return; }
    float x[4 * 24];
    int32_t y[4];
    fill_batch(x, y, B, T * D, 3, 4);
    soma_batch b = { .n = B, .c = T * D, .h = 1, .w = 1, .x = x, .y = y };
    soma_step_stats st = { 0 };
    for (int i = 0; i < 3; i++) CHECK(soma_rule_train_batch(r, &b, 0.1f, NULL, &st) == SOMA_OK);
    CHECK(st.n == 3 * B && isfinite(st.loss));
    const float *scores;
    soma_step_stats ev = { 0 };
    CHECK(soma_rule_predict(r, &b, &scores, &ev) == SOMA_OK);
    CHECK(ev.n == B && isfinite(ev.loss));
    CHECK(soma__fptt_window(r, &b, 0, 0.1f, NULL, NULL) == SOMA_OK);
    CHECK(soma__fptt_window(r, &b, 2, 0.1f, NULL, NULL) == SOMA_ERR_ARG);  /* skipped window 1 */
    soma_rule_free(r);
    soma_net_free(n);
}

/* Above 32768 parameters the update's passes (regulariser and norm, lam and
 * Wbar) are split over threads: two K = 1 batches give the same W, Wbar and
 * lam, bit for bit, at 1 and at 2 threads (clipping on, so the norm counts). */
static void threads_agree(void)
{
    const int T = 3, D = 2, B = 2;
    soma_net *n[2] = { ltc_net("2-rltc96-3", D, 8), ltc_net("2-rltc96-3", D, 8) };
    soma_rule *r[2] = { NULL, NULL };
    float x[2 * 6];
    int32_t y[2];
    fill_batch(x, y, B, T * D, 3, 12);
    soma_batch b = { .n = B, .c = T * D, .h = 1, .w = 1, .x = x, .y = y };
    for (int k = 0; k < 2; k++) {
        if (!n[k]) goto done;
        soma_rule_config c;
        rule_cfg(&c, T, 1, D);
        soma_optim_config_default(&c.optim, SOMA_OPTIM_ADAMAX);
        c.clip_norm = 0.05f;
        if (!CHECK(soma_rule_new(&r[k], "fptt", n[k], &c, B) == SOMA_OK)) goto done;
        CHECK(soma_net_param_floats(n[k]) > 32768);
        soma_set_threads(k + 1);
        for (int i = 0; i < 2; i++) CHECK(soma_rule_train_batch(r[k], &b, 3e-3f, NULL, NULL) == SOMA_OK);
        soma_set_threads(1);
    }
    int same = soma_net_tensor_count(n[0]) == soma_net_tensor_count(n[1]);
    for (int i = 0; same && i < soma_net_tensor_count(n[0]); i++) {
        int64_t sh[SOMA_MAX_DIMS];
        int nd;
        const float *v0 = soma_net_tensor(n[0], i, NULL, &nd, sh, NULL);
        const float *v1 = soma_net_tensor(n[1], i, NULL, NULL, NULL, NULL);
        size_t cnt = 1;
        for (int d = 0; d < nd; d++) cnt *= (size_t)sh[d];
        same &= memcmp(v0, v1, cnt * sizeof(float)) == 0;
    }
    CHECK(same);
done:
    for (int k = 0; k < 2; k++) { soma_rule_free(r[k]); soma_net_free(n[k]); }
}

/* Checkpoints carry Wbar and lam and the LTC cell parameters: save after
 * training, load, create the rule (fresh Wbar = W, lam = 0), restore again
 * as train.c does on --resume: every tensor equals the saved one. */
static void checkpoint_roundtrip(void)
{
    const int T = 6, D = 2, B = 2;
    soma_net_options o;
    soma_net_options_default(&o);
    o.in_c = D; o.in_h = 1; o.in_w = 1;
    o.readout = SOMA_READOUT_LTC;
    o.ltc.threshold = 0.25f;
    soma_net *n;
    if (!CHECK(soma_net_new(&n, "2-rltc8-3", &o) == SOMA_OK)) return;
    soma_rule_config c;
    rule_cfg(&c, T, 2, D);
    soma_rule *r;
    if (!CHECK(soma_rule_new(&r, "fptt", n, &c, B) == SOMA_OK)) { soma_net_free(n); return; }
    float x[2 * 12];
    int32_t y[2];
    fill_batch(x, y, B, T * D, 3, 2);
    soma_batch b = { .n = B, .c = T * D, .h = 1, .w = 1, .x = x, .y = y };
    CHECK(soma_rule_train_batch(r, &b, 0.1f, NULL, NULL) == SOMA_OK);
    const char *path = "build/test_fptt_ckpt.st";
    CHECK(soma_checkpoint_save(path, n, soma_rule_optim(r), NULL, 0) == SOMA_OK);
    soma_net *m;
    soma_st *st;
    if (!CHECK(soma_checkpoint_load(&m, &st, path) == SOMA_OK)) {
        fprintf(stderr, "%s\n", soma_last_error());
    } else {
        CHECK(m->layers[1].ltc && m->layers[1].cell.threshold == 0.25f);
        soma_rule *r2;
        CHECK(soma_rule_new(&r2, "fptt", m, &c, B) == SOMA_OK);
        CHECK(soma_checkpoint_restore_net(m, st, path) == SOMA_OK);
        CHECK(soma_net_tensor_count(m) == soma_net_tensor_count(n));
        for (int i = 0; i < soma_net_tensor_count(n); i++) {
            const char *na, *nb;
            float *va = soma_net_tensor(n, i, &na, NULL, NULL, NULL);
            float *vb = soma_net_tensor(m, i, &nb, NULL, NULL, NULL);
            size_t cnt = n->params.count > i ? n->params.p[i].n : n->buffers.p[i - n->params.count].n;
            CHECK(!strcmp(na, nb));
            char label[96];
            snprintf(label, sizeof label, "checkpoint round trip %s", na);
            check_close_f(label, vb, va, cnt, 0, 0);
        }
        soma_rule_free(r2);
        soma_net_free(m);
        soma_st_free(st);
    }
    remove(path);
    soma_rule_free(r);
    soma_net_free(n);
}

static soma_net *cltc_net(const char *spec, int c, int h, int w, soma_state_init init, uint64_t seed)
{
    soma_net_options o;
    soma_net_options_default(&o);
    o.in_c = c; o.in_h = h; o.in_w = w;
    o.readout = SOMA_READOUT_LTC;
    o.ltc.init = init;
    o.seed = seed;
    soma_net *n = NULL;
    if (!CHECK(soma_net_new(&n, spec, &o) == SOMA_OK)) fprintf(stderr, "%s: %s\n", spec, soma_last_error());
    return n;
}

/* --ltc-init uniform under FPTT: the initial state comes from the rng the
 * rule is given (same seed, same update; another seed, another; none: a
 * clear error), and a conv LTC net (cltc, with per-step and shared
 * batchnorm) with it: FPTT with K = T equals BPTT, and a checkpoint rebuilds
 * the conv cells, the batchnorm rows and the init mode. */
static void init_and_conv(void)
{
    const int T = 5, B = 2, D = 16;
    soma_rule_config c;
    rule_cfg(&c, T, T, D);
    c.fptt_alpha = 1e-6f;
    soma_optim_config_default(&c.optim, SOMA_OPTIM_ADAM);
    c.optim.lr = 1e-2f;
    float x[2 * 5 * 16];
    int32_t y[2];
    fill_batch(x, y, B, T * D, 3, 6);
    soma_batch b = { .n = B, .c = T * D, .h = 1, .w = 1, .x = x, .y = y };
    soma_net *n[4];
    soma_rule *r[4];
    const char *rules[4] = { "fptt", "fptt", "fptt", "bptt" };
    const uint64_t seeds[4] = { 21, 21, 22, 21 };
    for (int i = 0; i < 4; i++) {
        n[i] = cltc_net("cltc3x2p1-bn5-rltc6-bn-3", 1, 4, 4, SOMA_STATE_UNIFORM, 4);
        if (!n[i] || !CHECK(soma_rule_new(&r[i], rules[i], n[i], &c, B) == SOMA_OK)) {
            for (int k = 0; k <= i; k++) soma_net_free(n[k]);
            for (int k = 0; k < i; k++) soma_rule_free(r[k]);
            return;
        }
    }
    CHECK(soma_rule_train_batch(r[0], &b, 1e-2f, NULL, NULL) == SOMA_ERR_ARG);   /* uniform needs an rng */
    CHECK(strstr(soma_last_error(), "rng") != NULL);
    for (int i = 0; i < 4; i++) {
        soma_rng g;
        soma_rng_seed(&g, seeds[i]);
        CHECK(soma_rule_train_batch(r[i], &b, 1e-2f, &g, NULL) == SOMA_OK);
    }
    size_t np = soma_net_param_floats(n[0]);
    const float *w0 = soma_net_param_values(n[0]);
    CHECK(memcmp(w0, soma_net_param_values(n[1]), np * sizeof(float)) == 0);
    CHECK(memcmp(w0, soma_net_param_values(n[2]), np * sizeof(float)) != 0);
    check_close_f("cltc, uniform init: fptt K=T == bptt", soma_net_param_values(n[3]), w0, np, 1e-6, 1e-8);
    /* checkpoint: conv cells and init mode come back */
    const char *path = "build/test_fptt_cltc.st";
    CHECK(soma_checkpoint_save(path, n[0], soma_rule_optim(r[0]), NULL, 0) == SOMA_OK);
    soma_net *m;
    soma_st *st;
    if (CHECK(soma_checkpoint_load(&m, &st, path) == SOMA_OK)) {
        CHECK(m->n_layers == n[0]->n_layers && m->layers[2].ltc == 2 && m->layers[2].k == 3 &&
              m->layers[1].kind == SOMA_LAYER_BATCHNORM && m->layers[1].bn_steps == 5 &&
              m->layers[2].cell.init == SOMA_STATE_UNIFORM && m->opts.ltc.init == SOMA_STATE_UNIFORM);
        CHECK(soma_net_param_floats(m) == np);
        soma_net_free(m);
        soma_st_free(st);
    } else {
        fprintf(stderr, "%s\n", soma_last_error());
    }
    remove(path);
    for (int i = 0; i < 4; i++) { soma_rule_free(r[i]); soma_net_free(n[i]); }
}

/* The oracle-divergence gradient against central differences of
 * L(o) = -(1/(B C)) sum O log softmax(o), in double. */
static double aux_loss_d(const double *o, const float *O, int B, int C)
{
    double L = 0;
    for (int b = 0; b < B; b++) {
        double m = o[b * C], z = 0;
        for (int k = 1; k < C; k++) if (o[b * C + k] > m) m = o[b * C + k];
        for (int k = 0; k < C; k++) z += exp(o[b * C + k] - m);
        for (int k = 0; k < C; k++) L -= O[b * C + k] * ((o[b * C + k] - m) - log(z));
    }
    return L / (B * C);
}

static void aux_gradient(void)
{
    enum { B = 3, C = 5 };
    soma_rng rng;
    soma_rng_seed(&rng, 77);
    float o[B * C], O[B * C], probs[B * C], d[B * C] = { 0 };
    double od[B * C], fd[B * C], got[B * C];
    for (int i = 0; i < B * C; i++) { o[i] = 2 * soma_rng_normal(&rng); od[i] = o[i]; O[i] = soma_rng_uniform(&rng); }
    for (int k = 0; k < C; k++) O[C + k] = 0; /* a sample with no oracle yet: no gradient */
    soma_softmax_forward(probs, o, B, C);
    double L = soma__fptt_aux_grad(d, probs, O, B, C, 0.7f);
    double Lw = aux_loss_d(od, O, B, C);
    check_close_d("fptt aux loss", &L, &Lw, 1, 1e-5, 1e-9);
    for (int i = 0; i < B * C; i++) {
        double h = 1e-6, save = od[i];
        od[i] = save + h; double lp = aux_loss_d(od, O, B, C);
        od[i] = save - h; double lm = aux_loss_d(od, O, B, C);
        od[i] = save;
        fd[i] = 0.7 * (lp - lm) / (2 * h);
        got[i] = d[i];
    }
    check_close_d("fptt aux gradient vs FD", got, fd, B * C, 1e-4, 1e-7);
    for (int k = 0; k < C; k++) CHECK(d[C + k] == 0.0f);
}

/* Training with --fptt-aux fills the class-distribution table. */
static void aux_table(void)
{
    soma_net_options o;
    soma_net_options_default(&o);
    o.in_c = 4; o.in_h = 1; o.in_w = 1;
    o.spiking = 1;
    o.seed = 1;
    soma_net *n;
    CHECK(soma_net_new(&n, "4-r12-3", &o) == SOMA_OK);
    soma_rule_config rc;
    soma_rule_config_default(&rc);
    soma_optim_config_default(&rc.optim, SOMA_OPTIM_ADAM);
    rc.optim.lr = 0.01f;
    rc.T = 6;
    rc.fptt_k = 2;
    rc.fptt_aux = 1;
    soma_rule *r;
    if (!CHECK(soma_rule_new(&r, "fptt", n, &rc, 8) == SOMA_OK)) { fprintf(stderr, "%s\n", soma_last_error()); soma_net_free(n); return; }
    float x[8 * 4];
    int32_t y[8];
    soma_rng rng;
    soma_rng_seed(&rng, 2);
    for (int i = 0; i < 32; i++) x[i] = soma_rng_normal(&rng);
    for (int i = 0; i < 8; i++) y[i] = i % 3;
    soma_batch bt = { .n = 8, .c = 4, .h = 1, .w = 1, .x = x, .y = y };
    for (int s = 0; s < 3; s++) CHECK(soma_rule_train_batch(r, &bt, 0.01f, NULL, NULL) == SOMA_OK);
    float nonzero = 0;
    for (int i = 0; i < soma_net_tensor_count(n); i++) {
        const char *name;
        int ndim, isp;
        int64_t shape[4];
        float *v = soma_net_tensor(n, i, &name, &ndim, shape, &isp);
        if (strcmp(name, "fptt.pest")) continue;
        CHECK(ndim == 3 && shape[0] == 3 && shape[1] == 3 && shape[2] == 3);
        for (int k = 0; k < 27; k++) nonzero += v[k] != 0;
        /* every filled row is a distribution */
        for (int row = 0; row < 9; row++) {
            double sum = 0;
            for (int k = 0; k < 3; k++) sum += v[row * 3 + k];
            CHECK(sum == 0 || fabs(sum - 1) < 1e-5);
        }
    }
    CHECK(nonzero > 0);
    rc.loss = SOMA_LOSS_MSE;
    soma_net *n2;
    CHECK(soma_net_new(&n2, "4-r12-3", &o) == SOMA_OK);
    soma_rule *r2;
    CHECK(soma_rule_new(&r2, "fptt", n2, &rc, 8) == SOMA_ERR_ARG);
    soma_rule_free(r);
    soma_net_free(n);
    soma_net_free(n2);
}

/* The tau maps' sigmoid (ltc.c's vectorised exp): every float z of a dense
 * sweep of [-100, 100] (and the ends of the range) within 4e-7 relative of the
 * sigmoid in double where that is >= 2e-38 (below, within 2e-38 absolute),
 * monotone, in [0, 1], 1 - tau exact as complement, NaN kept; the backward's
 * dL/dh and dk within the same bound of the double formulas. */
static void tau_sigmoid(void)
{
    enum { M = 200001 };
    static float h[M], tau[M], ctau[M], dt[M];
    for (int i = 0; i < M; i++) h[i] = -100.0f + 200.0f * (float)i / (M - 1);
    h[0] = -FLT_MAX; h[1] = -88.5f; h[2] = -87.0f; h[3] = -86.99f; h[4] = 0.0f; h[5] = -0.0f;
    h[6] = 1e-30f; h[7] = -1e-30f; h[8] = 16.5f; h[9] = 17.5f; h[10] = FLT_MAX; h[11] = 88.8f;
    soma__ltc_tau(tau, h, 1.0f, M, 0);
    soma__ltc_tau(ctau, h, 1.0f, M, 1);
    double worst = 0, worst_abs = 0;
    int bad_range = 0, bad_c = 0, bad_mono = 0;
    for (int i = 0; i < M; i++) {
        double want = 1.0 / (1.0 + exp(-(double)h[i]));
        double d = fabs((double)tau[i] - want);
        if (want >= 2e-38) { if (d / want > worst) worst = d / want; }
        else if (d > worst_abs) worst_abs = d;
        bad_range += !(tau[i] >= 0.0f && tau[i] <= 1.0f);
        bad_c += ctau[i] != 1.0f - tau[i];
        bad_mono += i > 12 && tau[i] < tau[i - 1];
    }
    if (!CHECK(worst <= 4e-7 && worst_abs <= 2e-38))
        fprintf(stderr, "tau sigmoid: max rel err %.3g, max abs err below 2e-38 %.3g\n", worst, worst_abs);
    CHECK(bad_range == 0 && bad_c == 0 && bad_mono == 0);
    CHECK(tau[4] == 0.5f && tau[5] == 0.5f && tau[10] == 1.0f && tau[0] >= 0.0f && tau[0] < 2e-38f);
    /* the slope: sigmoid(k h) */
    soma__ltc_tau(tau, h + 100000, -2.5f, 1000, 0);
    double w2 = 0;
    for (int i = 0; i < 1000; i++) {
        double want = 1.0 / (1.0 + exp(-(double)(-2.5f * h[100000 + i])));
        double r = fabs((double)tau[i] - want) / want;
        if (r > w2) w2 = r;
    }
    CHECK(w2 <= 4e-7);
    /* backward: dtau -> dL/dh = k dtau t (1 - t), dk = sum dtau t (1 - t) h.  Near
     * t = 1 the float 1 - t loses digits whatever the exp (libm's too): the
     * bound is 1e-6 relative plus t's own 4e-7 error carried through 1 - t. */
    const float k = 0.8f;
    double dk_want = 0, dk_tol = 0;
    int bad_b = 0;
    for (int i = 0; i < M; i++) dt[i] = 1.0f + 0.25f * (float)(i % 7);
    float dk = 0.5f;
    soma__ltc_tau_backward(dt, h + 0, k, &dk, 1000);      /* h[0..1000): the far negative end */
    soma__ltc_tau_backward(dt + 100000 - 5000, h + 100000 - 5000, k, NULL, 10000);
    for (int i = 0; i < 100000 + 5000; i++) {
        if (i == 1000) i = 100000 - 5000;
        /* z = k h rounded to float, as the code forms it */
        double g = 1.0 + 0.25 * (i % 7), t = 1.0 / (1.0 + exp(-(double)(k * h[i])));
        double term = g * t * (1 - t), tol = 1e-6 * term + 4e-7 * g * t * t;
        if (i < 1000) { dk_want += term * h[i]; dk_tol += tol * fabs((double)h[i]); }
        bad_b += !(fabs((double)dt[i] - k * term) <= k * (tol + 2e-38 * g));   /* 2e-38: the clamp */
    }
    CHECK(bad_b == 0);
    if (!CHECK(fabs(((double)dk - 0.5) - dk_want) <= dk_tol + 1e-30))
        fprintf(stderr, "tau backward: dk %.9g want %.9g\n", (double)dk - 0.5, dk_want);
    /* NaN in, NaN out: a bad pre-activation is not hidden */
    float hn[3] = { NAN, 1.0f, -1.0f }, tn[3];
    soma__ltc_tau(tn, hn, 1.0f, 3, 0);
    CHECK(isnan(tn[0]) && tn[1] > 0.73f && tn[2] < 0.27f);
}

int main(void)
{
    tau_sigmoid();
    aux_gradient();
    aux_table();
    tiny_trace();
    golden("tests/fixtures/fptt_k1.safetensors");
    golden("tests/fixtures/fptt_k3.safetensors");
    golden("tests/fixtures/fptt_sbn.safetensors");
    fptt_equals_bptt();
    memory_plan();
    bad_input();
    train_path();
    threads_agree();
    checkpoint_roundtrip();
    init_and_conv();
    return check_report("test_fptt");
}
