/*
 * test_lfp.c - layer-wise feedback propagation (rule "lfp", src/ops/relevance.c):
 *  - the oracle of notes/lfp.md sec. 3.3: LFP-0 with the softmax reward on a
 *    ReLU MLP and a ReLU CNN equals |theta| (-dL/dtheta) from soma_net_backward
 *    (L = cross-entropy summed over the batch), and stops matching when the
 *    rule is changed (so the test can fail);
 *  - conservation of each relevance kernel (dense, conv, avg/max pool; the
 *    alpha-beta and z+z- sums);
 *  - golden values from refs/lfp_ref.py (tests/fixtures/lfp_*.safetensors)
 *    for every rule, composite, feedback function and the normalisation;
 *  - the seed's theorem (Appendix A.2): LFP-0 with the sigmoid feedback on a
 *    ReLU net with non-negative logits moves every parameter it moves
 *    against the gradient of the BCE;
 *  - unit-wise adaptive clipping, a short training run, bad input.
 */
#include "check.h"
#include <stdio.h>

static const float *fx(const soma_st *st, const char *name, size_t *n)
{
    const soma_st_tensor *t = soma_st_find(st, name);
    if (!t) { fprintf(stderr, "fixture tensor '%s' missing\n", name); CHECK(t != NULL); return NULL; }
    if (n) *n = t->nbytes / 4;
    return t->data;
}

static double max_abs(const float *x, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) if (fabs(x[i]) > m) m = fabs(x[i]);
    return m;
}

/* |got - want| <= rtol |want| + atol_frac max|want| */
static int close_scaled(const char *label, const float *got, const float *want, size_t n,
                        double rtol, double atol_frac)
{
    return check_close_f(label, got, want, n, rtol, atol_frac * max_abs(want, n) + 1e-30);
}

static void fill_normal(float *x, size_t n, soma_rng *rng)
{
    for (size_t i = 0; i < n; i++) x[i] = soma_rng_normal(rng);
}

static soma_net *make_net(const char *spec, int c, int h, int w, uint64_t seed)
{
    soma_net_options o;
    soma_net_options_default(&o);
    o.in_c = c; o.in_h = h; o.in_w = w;
    o.seed = seed;
    soma_net *net = NULL;
    if (!CHECK(soma_net_new(&net, spec, &o) == SOMA_OK)) fprintf(stderr, "%s\n", soma_last_error());
    return net;
}

static soma_rule *make_lfp(soma_net *net, const char *rules, float eps, soma_lfp_reward_kind rw, int B)
{
    soma_rule_config rc;
    soma_rule_config_default(&rc);
    rc.optim.lr = 0.1f;
    CHECK(soma_lfp_composite_from_name(&rc, rules) == SOMA_OK);
    rc.lfp_eps = eps;
    rc.lfp_reward = rw;
    soma_rule *r = NULL;
    if (!CHECK(soma_rule_new(&r, "lfp", net, &rc, B) == SOMA_OK)) fprintf(stderr, "%s\n", soma_last_error());
    return r;
}

/* ---- oracle: LFP-0 = |theta| (-grad) on ReLU nets ------------------------- */

/* Returns 1 if -fb matches |theta| * B * dCE_mean/dtheta everywhere. */
static int oracle_matches(const char *spec, int c, int h, int w, const char *rules, float eps,
                          int report)
{
    const int B = 6;
    soma_net *net = make_net(spec, c, h, w, 11);
    if (!net) return 0;
    soma_rule *r = make_lfp(net, rules, eps, SOMA_LFP_REWARD_SOFTMAX, B);
    if (!r) { soma_net_free(net); return 0; }
    int D = c * h * w, C = soma_net_outputs(net);
    float x[6 * 2 * 9 * 9 + 6 * 20];
    int32_t y[6];
    soma_rng rng;
    soma_rng_seed(&rng, 3);
    fill_normal(x, (size_t)B * D, &rng);
    for (int i = 0; i < B; i++) y[i] = (int32_t)soma_rng_below(&rng, (uint32_t)C);
    soma_batch b = { .n = B, .c = c, .h = h, .w = w, .x = x, .y = y };
    CHECK(soma_lfp_feedback(r, &b, NULL, NULL, NULL) == SOMA_OK);
    size_t np = soma_net_param_floats(net);
    float *lfp = calloc(np, sizeof(float)), *want = calloc(np, sizeof(float));
    memcpy(lfp, soma_net_param_grads(net), np * sizeof(float));
    /* BP on the same net and batch */
    const float *logits;
    CHECK(soma_net_forward(net, x, B, NULL, &logits) == SOMA_OK);
    float probs[6 * 10], dl[6 * 10] = { 0 };
    soma_ce_forward(probs, logits, y, B, C);
    soma_ce_backward(dl, probs, y, B, C, (float)B);   /* summed over the batch */
    soma_net_zero_grad(net);
    CHECK(soma_net_backward(net, dl, B, NULL) == SOMA_OK);
    const float *g = soma_net_param_grads(net), *th = soma_net_param_values(net);
    for (size_t k = 0; k < np; k++) want[k] = fabsf(th[k]) * g[k];   /* -fb */
    int ok;
    char label[160];
    snprintf(label, sizeof label, "oracle %s rules %s eps %g", spec, rules, eps);
    if (report) {
        ok = close_scaled(label, lfp, want, np, 1e-4, 1e-6);
    } else {
        double m = max_abs(want, np);
        ok = 1;
        for (size_t k = 0; k < np; k++)
            if (fabs(lfp[k] - want[k]) > 1e-4 * fabs(want[k]) + 1e-6 * m) ok = 0;
    }
    free(lfp); free(want);
    soma_rule_free(r);
    soma_net_free(net);
    return ok;
}

static void test_oracle(void)
{
    const char *mlp = "20-16-12-5", *cnn = "conv3x4p1-pool2-conv3x6s2p1-avgpool2-fc7-fc5";
    oracle_matches(mlp, 20, 1, 1, "zero", 0.0f, 1);
    oracle_matches(cnn, 2, 9, 9, "zero", 0.0f, 1);
    /* the test can fail: another rule anywhere breaks the equivalence */
    CHECK(!oracle_matches(mlp, 20, 1, 1, "epsilon", 0.25f, 0));
    CHECK(!oracle_matches(mlp, 20, 1, 1, "zplusminus", 0.0f, 0));
    CHECK(!oracle_matches(cnn, 2, 9, 9, "dense=zero,conv=alphabeta,pool=zero", 0.0f, 0));
    CHECK(!oracle_matches(cnn, 2, 9, 9, "dense=zero,conv=zero,pool=alphabeta", 0.0f, 0));
    /* (z+z- on the average pool of ReLU outputs, all >= 0, is the epsilon rule) */
}

/* ---- conservation per layer ------------------------------------------------ */

static double sum(const float *x, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++) s += x[i];
    return s;
}

/* per sample: sum R_in == sum over outputs of f(z) R_out (f = 1, or sgn0(z) for ab / z+z-) */
static void check_sums(const char *label, const float *R_in, const float *R_out, const float *z,
                       int B, size_t in, size_t out, int signed_out)
{
    double worst = 0, scale = 0;
    for (int n = 0; n < B; n++) {
        double a = sum(R_in + (size_t)n * in, in), want = 0;
        for (size_t j = 0; j < out; j++) {
            double r = R_out[(size_t)n * out + j];
            if (signed_out && z[(size_t)n * out + j] < 0) r = -r;
            want += r;
            scale += fabs(r);
        }
        if (fabs(a - want) > worst) worst = fabs(a - want);
    }
    char msg[200];
    snprintf(msg, sizeof msg, "%s: conservation off by %.3g (scale %.3g)", label, worst, scale);
    check_true(worst <= 1e-4 * (scale / B + 1e-12), msg, __FILE__, __LINE__);
}

static void test_conservation(void)
{
    soma_rng rng;
    soma_rng_seed(&rng, 21);
    const soma_lrp_rule rules[3] = { SOMA_LRP_ZERO, SOMA_LRP_ALPHABETA, SOMA_LRP_ZPLUSMINUS };
    /* dense, inputs of both signs, no bias */
    enum { B = 3, I = 7, O = 5 };
    float a[B * I], w[O * I], bias[O], z[B * O], R[B * O], Rin[B * I];
    fill_normal(a, B * I, &rng);
    fill_normal(w, O * I, &rng);
    fill_normal(R, B * O, &rng);
    fill_normal(bias, O, &rng);
    /* alpha-beta conserves where a unit has contributions of both signs:
     * inputs 0 and 1 are +1 and -1 with positive weights */
    for (int n = 0; n < B; n++) { a[n * I] = 1.0f; a[n * I + 1] = -1.0f; }
    for (int j = 0; j < O; j++) { w[j * I] = fabsf(w[j * I]) + 0.1f; w[j * I + 1] = fabsf(w[j * I + 1]) + 0.1f; }
    soma_dense_forward(z, a, w, NULL, B, I, O);
    for (int k = 0; k < 3; k++) {
        soma_lrp_params p = { rules[k], 0.0f, 2.0f, 1.0f };
        float *ws = malloc(soma_dense_relevance_workspace(B, I, O, &p) * sizeof(float));
        memset(Rin, 0, sizeof Rin);
        soma_dense_relevance(Rin, NULL, NULL, ws, R, z, a, w, NULL, B, I, O, &p);
        char label[64];
        snprintf(label, sizeof label, "dense %s", soma_lrp_rule_name(rules[k]));
        check_sums(label, Rin, R, z, B, I, O, k > 0);
        free(ws);
    }
    /* with a bias (LRP-0): sum R_in + sum_j b_j s_j = sum R_out */
    {
        soma_lrp_params p = { SOMA_LRP_ZERO, 0.0f, 2.0f, 1.0f };
        float zb[B * O];
        soma_dense_forward(zb, a, w, bias, B, I, O);
        float *ws = malloc(soma_dense_relevance_workspace(B, I, O, &p) * sizeof(float));
        memset(Rin, 0, sizeof Rin);
        soma_dense_relevance(Rin, NULL, NULL, ws, R, zb, a, w, bias, B, I, O, &p);
        double lhs = sum(Rin, B * I), rhs = sum(R, B * O);
        for (int n = 0; n < B; n++)
            for (int j = 0; j < O; j++) lhs += bias[j] * R[n * O + j] / zb[n * O + j];
        CHECK(fabs(lhs - rhs) < 1e-4 * (fabs(rhs) + 1));
        free(ws);
    }
    /* conv, padding and stride, no bias */
    {
        soma_conv_shape cs;
        CHECK(soma_conv_shape_init(&cs, 2, 3, 7, 6, 4, 3, 3, 2, 1) == SOMA_OK);
        size_t nin = 2 * 3 * 7 * 6, nout = (size_t)2 * 4 * cs.OH * cs.OW, nw = 4 * 3 * 9;
        float *ca = malloc(nin * 4), *cw = malloc(nw * 4), *cz = malloc(nout * 4), *cR = malloc(nout * 4), *cRin = malloc(nin * 4);
        fill_normal(ca, nin, &rng);
        fill_normal(cw, nw, &rng);
        fill_normal(cR, nout, &rng);
        soma_conv2d_forward_naive(cz, ca, cw, NULL, &cs);
        for (int k = 0; k < 3; k++) {
            soma_lrp_params p = { rules[k], 0.0f, 2.0f, 1.0f };
            float *ws = malloc(soma_conv2d_relevance_workspace(&cs, &p, 0) * sizeof(float));
            memset(cRin, 0, nin * 4);
            soma_conv2d_relevance(cRin, NULL, NULL, ws, cR, cz, ca, cw, NULL, &cs, &p);
            char label[64];
            snprintf(label, sizeof label, "conv %s", soma_lrp_rule_name(rules[k]));
            check_sums(label, cRin, cR, cz, 2, nin / 2, nout / 2, k > 0);
            free(ws);
        }
        free(ca); free(cw); free(cz); free(cR); free(cRin);
    }
    /* pooling, inputs of both signs */
    {
        soma_pool_shape ps;
        CHECK(soma_pool_shape_init(&ps, 2, 3, 6, 6, 2, 2) == SOMA_OK);
        size_t nin = 2 * 3 * 36, nout = 2 * 3 * 9;
        float pa[216], py[54], pR[54], pRin[216];
        int32_t idx[54];
        fill_normal(pa, nin, &rng);
        /* signs in a checkerboard: every window has both (see alpha-beta above) */
        for (size_t k = 0; k < nin; k++) {
            int hh = (int)(k / 6 % 6), ww = (int)(k % 6);
            pa[k] = fabsf(pa[k]) * ((hh + ww) % 2 ? -1.0f : 1.0f);
        }
        fill_normal(pR, nout, &rng);
        soma_avgpool_forward(py, pa, &ps);
        for (int k = 0; k < 3; k++) {
            soma_lrp_params p = { rules[k], 0.0f, 2.0f, 1.0f };
            float *ws = malloc(soma_avgpool_relevance_workspace(&ps, &p) * sizeof(float));
            memset(pRin, 0, sizeof pRin);
            soma_avgpool_relevance(pRin, ws, pR, py, pa, &ps, &p);
            char label[64];
            snprintf(label, sizeof label, "avgpool %s", soma_lrp_rule_name(rules[k]));
            check_sums(label, pRin, pR, py, 2, nin / 2, nout / 2, k > 0);
            free(ws);
        }
        soma_maxpool_forward(py, idx, pa, &ps);
        memset(pRin, 0, sizeof pRin);
        soma_maxpool_relevance(pRin, pR, idx, &ps);
        check_sums("maxpool", pRin, pR, py, 2, nin / 2, nout / 2, 0);
    }
}

/* ---- golden values from refs/lfp_ref.py ------------------------------------- */

static void run_golden(const char *path)
{
    soma_st *st;
    if (!CHECK(soma_st_read(&st, path) == SOMA_OK)) { fprintf(stderr, "%s\n", soma_last_error()); return; }
    const char *spec = soma_st_meta(st, "spec"), *cases = soma_st_meta(st, "cases");
    int c, h, w;
    CHECK(sscanf(soma_st_meta(st, "input"), "%d,%d,%d", &c, &h, &w) == 3);
    size_t nx, ny;
    const float *x = fx(st, "x", &nx);
    const int32_t *y = (const int32_t *)fx(st, "y", &ny);
    const int B = (int)ny;
    soma_batch b = { .n = B, .c = c, .h = h, .w = w, .x = (float *)x, .y = (int32_t *)y };
    char list[512];
    snprintf(list, sizeof list, "%s", cases);
    for (char *cname = strtok(list, ","); cname; cname = strtok(NULL, ",")) {
        char key[160], rules[96], reward[16];
        float eps, alpha, beta;
        int norm;
        snprintf(key, sizeof key, "case.%s", cname);
        const char *desc = soma_st_meta(st, key);
        if (!CHECK(desc && sscanf(desc, "%95s %f %f %f %15s %d", rules, &eps, &alpha, &beta,
                                  reward, &norm) == 6)) continue;
        soma_net *net = make_net(spec, c, h, w, 0);
        if (!net) continue;
        /* initial state */
        for (int i = 0; i < soma_net_tensor_count(net); i++) {
            const char *name;
            float *v = soma_net_tensor(net, i, &name, NULL, NULL, NULL);
            snprintf(key, sizeof key, "init.%s", name);
            size_t n;
            const float *src = fx(st, key, &n);
            if (src) memcpy(v, src, n * sizeof(float));
        }
        soma_rule_config rc;
        soma_rule_config_default(&rc);
        CHECK(soma_lfp_composite_from_name(&rc, rules) == SOMA_OK);
        CHECK(soma_lfp_reward_from_name(&rc.lfp_reward, reward) == SOMA_OK);
        rc.lfp_eps = eps; rc.lfp_alpha = alpha; rc.lfp_beta = beta; rc.lfp_norm = norm;
        soma_rule *r;
        if (!CHECK(soma_rule_new(&r, "lfp", net, &rc, B) == SOMA_OK)) {
            fprintf(stderr, "%s\n", soma_last_error());
            soma_net_free(net);
            continue;
        }
        float *R_in = malloc(nx * sizeof(float));
        CHECK(soma_lfp_feedback(r, &b, NULL, R_in, NULL) == SOMA_OK);
        char label[200];
        for (int i = 0; i < soma_net_tensor_count(net); i++) {
            const char *name;
            int is_param;
            float *v = soma_net_tensor(net, i, &name, NULL, NULL, &is_param);
            if (!is_param) continue;
            snprintf(key, sizeof key, "%s.fb.%s", cname, name);
            size_t n;
            const float *want = fx(st, key, &n);
            if (!want) continue;
            const float *g = soma_net_param_grads(net) + (v - soma_net_param_values(net));
            float *fb = malloc(n * sizeof(float));
            for (size_t k = 0; k < n; k++) fb[k] = -g[k];
            snprintf(label, sizeof label, "%s %s", spec, key);
            close_scaled(label, fb, want, n, 1e-5, 1e-6);
            free(fb);
        }
        snprintf(key, sizeof key, "%s.R_in", cname);
        snprintf(label, sizeof label, "%s %s", spec, key);
        const float *want = fx(st, key, NULL);
        if (want) close_scaled(label, R_in, want, nx, 1e-5, 1e-6);
        free(R_in);
        soma_rule_free(r);
        soma_net_free(net);
    }
    soma_st_free(st);
}

/* ---- the theorem of Appendix A.2 -------------------------------------------- */

static void test_sign_theorem(const char *spec, int c, int h, int w)
{
    const int B = 6;
    soma_net *net = make_net(spec, c, h, w, 17);
    if (!net) return;
    /* non-negative logits: the last dense layer's weights and bias made
     * non-negative (its inputs are ReLU outputs) */
    int last_w = -1, last_b = -1;
    for (int i = 0; i < soma_net_tensor_count(net); i++) {
        const char *name;
        int is_param;
        soma_net_tensor(net, i, &name, NULL, NULL, &is_param);
        if (!is_param) continue;
        if (strstr(name, ".weight")) last_w = i;
        if (strstr(name, ".bias")) last_b = i;
    }
    int64_t shape[4];
    int ndim;
    float *lw = soma_net_tensor(net, last_w, NULL, &ndim, shape, NULL);
    for (int64_t k = 0; k < shape[0] * shape[1]; k++) lw[k] = fabsf(lw[k]);
    float *lb = soma_net_tensor(net, last_b, NULL, &ndim, shape, NULL);
    for (int64_t k = 0; k < shape[0]; k++) lb[k] = fabsf(lb[k]);
    soma_rule *r = make_lfp(net, "zero", 0.0f, SOMA_LFP_REWARD_SIGMOID, B);
    if (!r) { soma_net_free(net); return; }
    int D = c * h * w, C = soma_net_outputs(net);
    float x[6 * 2 * 9 * 9 + 6 * 20];
    int32_t y[6];
    soma_rng rng;
    soma_rng_seed(&rng, 8);
    fill_normal(x, (size_t)B * D, &rng);
    for (int i = 0; i < B; i++) y[i] = (int32_t)soma_rng_below(&rng, (uint32_t)C);
    soma_batch b = { .n = B, .c = c, .h = h, .w = w, .x = x, .y = y };
    CHECK(soma_lfp_feedback(r, &b, NULL, NULL, NULL) == SOMA_OK);
    size_t np = soma_net_param_floats(net);
    float *upd = malloc(np * sizeof(float));
    const float *g = soma_net_param_grads(net);
    for (size_t k = 0; k < np; k++) upd[k] = -g[k];     /* the LFP update direction fb */
    /* gradient of BCE(o, onehot) */
    const float *logits;
    CHECK(soma_net_forward(net, x, B, NULL, &logits) == SOMA_OK);
    int nonneg = 1;
    for (int k = 0; k < B * C; k++) nonneg &= logits[k] >= 0;
    CHECK(nonneg);
    float t[6 * 10] = { 0 }, dz[6 * 10] = { 0 };
    for (int i = 0; i < B; i++) t[i * C + y[i]] = 1.0f;
    soma_bce_logits_backward(dz, logits, t, B, C, 1.0f);
    soma_net_zero_grad(net);
    CHECK(soma_net_backward(net, dz, B, NULL) == SOMA_OK);
    double m = max_abs(upd, np);
    size_t moved = 0, agree = 0;
    for (size_t k = 0; k < np; k++) {
        if (fabs(upd[k]) <= 1e-6 * m) continue;    /* "wherever the update is non-zero" */
        moved++;
        agree += (upd[k] > 0) == (g[k] < 0) && g[k] != 0;
    }
    char msg[160];
    snprintf(msg, sizeof msg, "sign theorem %s: %zu of %zu moved parameters against the gradient",
             spec, agree, moved);
    check_true(moved > np / 4 && agree == moved, msg, __FILE__, __LINE__);
    free(upd);
    soma_rule_free(r);
    soma_net_free(net);
}

/* ---- adaptive clipping, training, bad input --------------------------------- */

/* 2-1 net: one unit, so the AGC factor is checked by hand through one SGD step */
static void test_agc(void)
{
    soma_net *net = make_net("2-1", 2, 1, 1, 0);
    if (!net) return;
    float *w = soma_net_param_values(net);   /* "0.weight" (1,2) then "0.bias" (1) */
    w[0] = 0.6f; w[1] = 0.0f; w[2] = 0.8f;    /* ||(W_u, b_u)|| = 1 */
    soma_rule_config rc;
    soma_rule_config_default(&rc);
    rc.optim.lr = 1.0f;
    rc.optim.momentum = 0;
    rc.lfp_reward = SOMA_LFP_REWARD_PM1;
    rc.lfp_agc = 0.06f;
    soma_rule *r;
    if (!CHECK(soma_rule_new(&r, "lfp", net, &rc, 1) == SOMA_OK)) { soma_net_free(net); return; }
    /* one sample, label 0, single output: pm1 gives R = +1, s = 1/z with z = 0.6 x0 + 0.8 */
    float x[2] = { 0.4f, 1.0f };
    int32_t y[1] = { 0 };
    soma_batch b = { .n = 1, .c = 2, .h = 1, .w = 1, .x = x, .y = y };
    CHECK(soma_lfp_feedback(r, &b, NULL, NULL, NULL) == SOMA_OK);
    float g[3];
    memcpy(g, soma_net_param_grads(net), sizeof g);
    double z = 0.6 * 0.4 + 0.8, s = 1.0 / z;
    CHECK(fabs(g[0] + 0.6 * 0.4 * s) < 1e-6 && g[1] == 0 && fabs(g[2] + 0.8 * s) < 1e-6);
    double Gw = fabs(g[0]), Gb = fabs(g[2]);    /* P = 1 */
    float before[3];
    memcpy(before, w, sizeof before);
    soma_step_stats ss = { 0 };
    CHECK(soma_rule_train_batch(r, &b, 1.0f, NULL, &ss) == SOMA_OK);
    /* SGD lr 1: theta - clipped g; each part scaled to norm lambda P = 0.06 */
    CHECK(fabs((w[0] - before[0]) - 0.06 * (-g[0]) / Gw) < 1e-6);
    CHECK(fabs((w[2] - before[2]) - 0.06 * (-g[2]) / Gb) < 1e-6);
    CHECK(w[1] == before[1]);
    soma_rule_free(r);
    soma_net_free(net);
}

/* LFP-eps learns a small synthetic problem: the class is the argmax of a fixed projection */
static void test_training(const char *spec, const char *rules, double min_acc)
{
    const int B = 16, D = 12, C = 3;
    soma_net *net = make_net(spec, D, 1, 1, 5);
    if (!net) return;
    soma_rule_config rc;
    soma_rule_config_default(&rc);
    rc.optim.lr = 0.05f;
    rc.optim.momentum = 0.9f;
    CHECK(soma_lfp_composite_from_name(&rc, rules) == SOMA_OK);
    rc.clip_norm = 3.0f;
    soma_rule *r;
    if (!CHECK(soma_rule_new(&r, "lfp", net, &rc, B) == SOMA_OK)) { fprintf(stderr, "%s\n", soma_last_error()); soma_net_free(net); return; }
    soma_rng rng, drop;
    soma_rng_seed(&rng, 1);
    soma_rng_seed(&drop, 2);
    float proj[12 * 3], x[16 * 12];
    int32_t y[16];
    fill_normal(proj, (size_t)D * C, &rng);
    double first = 0, last = 0;
    int steps = 300;
    for (int s = 0; s < steps; s++) {
        fill_normal(x, (size_t)B * D, &rng);
        for (int n = 0; n < B; n++) {
            int best = 0;
            float bv = -1e30f;
            for (int k = 0; k < C; k++) {
                float v = 0;
                for (int i = 0; i < D; i++) v += x[n * D + i] * proj[i * C + k];
                if (v > bv) { bv = v; best = k; }
            }
            y[n] = best;
        }
        soma_batch b = { .n = B, .c = D, .h = 1, .w = 1, .x = x, .y = y };
        soma_step_stats ss = { 0 };
        if (!CHECK(soma_rule_train_batch(r, &b, rc.optim.lr, &drop, &ss) == SOMA_OK)) {
            fprintf(stderr, "%s\n", soma_last_error());
            break;
        }
        if (s < 30) first += (double)ss.correct / ss.n / 30;
        if (s >= steps - 30) last += (double)ss.correct / ss.n / 30;
    }
    char msg[160];
    snprintf(msg, sizeof msg, "training %s (%s): accuracy %.2f -> %.2f", spec, rules, first, last);
    check_true(last >= min_acc && last > first + 0.15, msg, __FILE__, __LINE__);
    soma_rule_free(r);
    soma_net_free(net);
}

static void test_bad_input(void)
{
    soma_lrp_rule lr;
    soma_lfp_reward_kind rk;
    CHECK(soma_lrp_rule_from_name(&lr, "gamma") == SOMA_ERR_ARG);
    CHECK(strstr(soma_last_error(), "gamma") != NULL);
    CHECK(soma_lrp_rule_from_name(&lr, "zpzm") == SOMA_OK && lr == SOMA_LRP_ZPLUSMINUS);
    CHECK(soma_lfp_reward_from_name(&rk, "hinge") == SOMA_ERR_ARG);
    soma_rule_config rc;
    soma_rule_config_default(&rc);
    CHECK(rc.lfp_eps == 1e-6f && rc.lfp_alpha == 2.0f && rc.lfp_beta == 1.0f &&
          rc.lfp_dense == SOMA_LRP_EPSILON && rc.lfp_reward == SOMA_LFP_REWARD_SOFTMAX);
    CHECK(soma_lfp_composite_from_name(&rc, "dense=bogus") == SOMA_ERR_ARG);
    CHECK(soma_lfp_composite_from_name(&rc, "lstm=epsilon") == SOMA_ERR_ARG);
    CHECK(strstr(soma_last_error(), "lstm") != NULL);
    CHECK(soma_lfp_composite_from_name(&rc, "dense=epsilon,,conv=zero") == SOMA_ERR_ARG);
    CHECK(soma_lfp_composite_from_name(&rc, "") == SOMA_ERR_ARG);
    CHECK(soma_lfp_composite_from_name(&rc, "dense=epsilon,conv=zplusminus") == SOMA_OK &&
          rc.lfp_dense == SOMA_LRP_EPSILON && rc.lfp_conv == SOMA_LRP_ZPLUSMINUS &&
          rc.lfp_pool == SOMA_LRP_EPSILON);

    soma_net *net = make_net("6-4-3", 6, 1, 1, 0);
    soma_rule *r = NULL;
    /* alpha - beta != 1 */
    soma_rule_config_default(&rc);
    CHECK(soma_lfp_composite_from_name(&rc, "conv=alphabeta") == SOMA_OK);
    rc.lfp_alpha = 2.0f; rc.lfp_beta = 0.5f;
    CHECK(soma_rule_new(&r, "lfp", net, &rc, 4) == SOMA_ERR_ARG && !r);
    CHECK(strstr(soma_last_error(), "alpha - beta = 1") != NULL);
    /* negative epsilon */
    soma_rule_config_default(&rc);
    rc.lfp_eps = -1e-3f;
    CHECK(soma_rule_new(&r, "lfp", net, &rc, 4) == SOMA_ERR_ARG && !r);
    CHECK(strstr(soma_last_error(), "epsilon") != NULL);
    soma_rule_config_default(&rc);
    rc.lfp_agc = -1;
    CHECK(soma_rule_new(&r, "lfp", net, &rc, 4) == SOMA_ERR_ARG);
    /* soma_lfp_feedback on another rule, and regression targets */
    soma_rule_config_default(&rc);
    CHECK(soma_rule_new(&r, "bp", net, &rc, 4) == SOMA_OK);
    float x[24] = { 0 }, tg[12] = { 0 };
    int32_t y[4] = { 0, 1, 2, 0 };
    soma_batch b = { .n = 4, .c = 6, .h = 1, .w = 1, .x = x, .y = y };
    CHECK(soma_lfp_feedback(r, &b, NULL, NULL, NULL) == SOMA_ERR_ARG);
    soma_rule_free(r);
    CHECK(soma_rule_new(&r, "lfp", net, &rc, 4) == SOMA_OK);
    b.target = tg;
    CHECK(soma_lfp_feedback(r, &b, NULL, NULL, NULL) == SOMA_ERR_UNSUPPORTED);
    b.target = NULL;
    y[2] = 7;
    CHECK(soma_lfp_feedback(r, &b, NULL, NULL, NULL) == SOMA_ERR_ARG);
    soma_rule_free(r);
    soma_net_free(net);

    /* a spiking net: zero time steps is an argument error; an LI readout is not
     * served (LFP through time needs spiking output cells) */
    soma_net_options o;
    soma_net_options_default(&o);
    o.in_c = 6; o.in_h = 1; o.in_w = 1;
    o.spiking = 1;
    CHECK(soma_net_new(&net, "6-8-3", &o) == SOMA_OK);
    soma_rule_config_default(&rc);
    rc.T = 0;
    r = NULL;
    CHECK(soma_rule_new(&r, "lfp", net, &rc, 4) == SOMA_ERR_ARG && !r);
    CHECK(strstr(soma_last_error(), "T > 0") != NULL);
    rc.T = 5;
    CHECK(soma_rule_new(&r, "lfp", net, &rc, 4) == SOMA_ERR_UNSUPPORTED && !r);
    soma_net_free(net);
}

/* LFP through time on a Heaviside LIF net vs refs/lfp_snn_ref.py, both
 * denominators; and it learns a toy task with no surrogate at all. */
static void snn_golden(void)
{
    soma_st *st;
    if (!CHECK(soma_st_read(&st, "tests/fixtures/lfp_snn.safetensors") == SOMA_OK)) return;
    for (int denom = 0; denom < 2; denom++) {
        soma_net_options o;
        soma_net_options_default(&o);
        o.in_c = 6; o.in_h = 1; o.in_w = 1;
        o.spiking = 1;
        o.cell.alpha = 0.9f;
        o.cell.threshold = 1.0f;
        soma_surrogate_default(&o.cell.surr, SOMA_SURR_NONE);
        o.readout = SOMA_READOUT_SPIKE;
        soma_net *net;
        if (!CHECK(soma_net_new(&net, "6-8-3", &o) == SOMA_OK)) break;
        for (int i = 0; i < soma_net_tensor_count(net); i++) {
            const char *name;
            float *v = soma_net_tensor(net, i, &name, NULL, NULL, NULL);
            char key[64];
            snprintf(key, sizeof key, "init.%s", name);
            const soma_st_tensor *t = soma_st_find(st, key);
            if (CHECK(t != NULL)) memcpy(v, t->data, t->nbytes);
        }
        soma_rule_config rc;
        soma_rule_config_default(&rc);
        rc.T = (int)strtol(soma_st_meta(st, "T"), NULL, 10);
        rc.lfp_snn_denom = denom;
        soma_rule *r;
        if (!CHECK(soma_rule_new(&r, "lfp", net, &rc, 4) == SOMA_OK)) { fprintf(stderr, "%s\n", soma_last_error()); soma_net_free(net); break; }
        soma_batch b = { .n = 4, .c = 6, .h = 1, .w = 1, .x = (float *)soma_st_find(st, "x")->data,
                         .y = (int32_t *)soma_st_find(st, "y")->data };
        CHECK(soma_lfp_feedback(r, &b, NULL, NULL, NULL) == SOMA_OK);
        for (int i = 0; i < soma_net_tensor_count(net); i++) {
            const char *name;
            int isp;
            float *v = soma_net_tensor(net, i, &name, NULL, NULL, &isp);
            if (!isp) continue;
            size_t n = 1;
            int64_t sh[4];
            int nd;
            soma_net_tensor(net, i, NULL, &nd, sh, NULL);
            for (int d = 0; d < nd; d++) n *= (size_t)sh[d];
            const float *g = soma_net_param_grads(net) + (v - soma_net_param_values(net));
            float *fb = malloc(n * sizeof *fb);
            for (size_t k = 0; k < n; k++) fb[k] = -g[k];
            char key[64];
            snprintf(key, sizeof key, "fb%c.%s", denom ? 'B' : 'A', name);
            const soma_st_tensor *t = soma_st_find(st, key);
            /* 1e-4: q = F / |v_t| divides by membranes that can be small, which
             * amplifies float32 rounding (seen: 2.6e-5 on one entry) */
            if (CHECK(t != NULL)) check_close_f(key, fb, t->data, n, 1e-4, 1e-7);
            free(fb);
        }
        const float *scores;
        CHECK(soma_rule_predict(r, &b, &scores, NULL) == SOMA_OK);
        check_close_f("lfp snn spike counts", scores, soma_st_find(st, "counts")->data, 12, 0, 0);
        soma_rule_free(r);
        soma_net_free(net);
    }
    soma_st_free(st);
}

/* LFP through time on a spiking conv net (conv3x2 - LIF - maxpool2 -
 * conv2x4 - LIF - fc3 - LIF on 1x8x8, T = 4: the seed's LIF-CNN in
 * miniature, in soma's layer order) vs
 * refs/lfp_snn_ref.py, both denominators: fb of every parameter within
 * 1e-5 relative (+1e-6 of the tensor's max) and the spike counts exactly.
 * The lowest conv takes the direct-input path (once, on sum_t q_t), the
 * second the per-step conv backward with F carried below it.  The _m
 * fixture is the seed's order, conv - maxpool2 - LIF (spec conv3x2m2-...). */
static void snn_conv_golden(const char *path)
{
    soma_st *st;
    if (!CHECK(soma_st_read(&st, path) == SOMA_OK)) return;
    const int B = (int)strtol(soma_st_meta(st, "B"), NULL, 10);
    int c = 0, h = 0, w = 0;
    if (!CHECK(sscanf(soma_st_meta(st, "input"), "%dx%dx%d", &c, &h, &w) == 3)) { soma_st_free(st); return; }
    for (int denom = 0; denom < 2; denom++) {
        soma_net_options o;
        soma_net_options_default(&o);
        o.in_c = c; o.in_h = h; o.in_w = w;
        o.spiking = 1;
        o.cell.alpha = 0.9f;
        o.cell.threshold = 1.0f;
        soma_surrogate_default(&o.cell.surr, SOMA_SURR_NONE);
        o.readout = SOMA_READOUT_SPIKE;
        soma_net *net;
        if (!CHECK(soma_net_new(&net, soma_st_meta(st, "spec"), &o) == SOMA_OK)) break;
        int copied = 0;
        for (int i = 0; i < soma_net_tensor_count(net); i++) {
            const char *name;
            float *v = soma_net_tensor(net, i, &name, NULL, NULL, NULL);
            char key[64];
            snprintf(key, sizeof key, "init.%s", name);
            const soma_st_tensor *t = soma_st_find(st, key);
            if (CHECK(t != NULL)) { memcpy(v, t->data, t->nbytes); copied++; }
        }
        CHECK(copied == 6);
        soma_rule_config rc;
        soma_rule_config_default(&rc);
        rc.T = (int)strtol(soma_st_meta(st, "T"), NULL, 10);
        rc.lfp_snn_denom = denom;
        soma_rule *r;
        if (!CHECK(soma_rule_new(&r, "lfp", net, &rc, B) == SOMA_OK)) {
            fprintf(stderr, "%s\n", soma_last_error());
            soma_net_free(net);
            break;
        }
        soma_batch b = { .n = B, .c = c, .h = h, .w = w, .x = (float *)fx(st, "x", NULL),
                         .y = (int32_t *)fx(st, "y", NULL) };
        CHECK(soma_lfp_feedback(r, &b, NULL, NULL, NULL) == SOMA_OK);
        for (int i = 0; i < soma_net_tensor_count(net); i++) {
            const char *name;
            int isp, nd;
            int64_t sh[4];
            float *v = soma_net_tensor(net, i, &name, &nd, sh, &isp);
            if (!isp) continue;
            size_t n = 1;
            for (int d = 0; d < nd; d++) n *= (size_t)sh[d];
            const float *g = soma_net_param_grads(net) + (v - soma_net_param_values(net));
            float *fb = malloc(n * sizeof *fb);
            for (size_t k = 0; k < n; k++) fb[k] = -g[k];
            char key[64];
            snprintf(key, sizeof key, "fb%c.%s", denom ? 'B' : 'A', name);
            size_t nw = 0;
            const float *want = fx(st, key, &nw);
            if (want && CHECK(nw == n)) close_scaled(key, fb, want, n, 1e-5, 1e-6);
            free(fb);
        }
        const float *scores;
        size_t nc = 0;
        const float *counts = fx(st, "counts", &nc);
        CHECK(soma_rule_predict(r, &b, &scores, NULL) == SOMA_OK);
        if (counts && CHECK(nc == (size_t)B * 3)) check_close_f("lfp snn conv spike counts", scores, counts, nc, 0, 0);
        soma_rule_free(r);
        soma_net_free(net);
    }
    soma_st_free(st);
}

/* Spiking conv nets: a layer kind LFP through time cannot carry is refused
 * with SOMA_ERR_UNSUPPORTED naming the layer. */
static void snn_bad_layers(void)
{
    static const struct { const char *spec, *layer; } cases[] = {
        { "conv3x2-avgpool2-fc3", "layer 2 (avgpool)" },
        { "conv3x2-bn-pool2-fc3", "layer 1 (batchnorm)" },
        { "conv3x2-pool2-drop0.2-fc3", "layer 3 (dropout)" },
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        soma_net_options o;
        soma_net_options_default(&o);
        o.in_c = 1; o.in_h = 8; o.in_w = 8;
        o.spiking = 1;
        soma_surrogate_default(&o.cell.surr, SOMA_SURR_NONE);
        o.readout = SOMA_READOUT_SPIKE;
        soma_net *net;
        if (!CHECK(soma_net_new(&net, cases[c].spec, &o) == SOMA_OK)) { fprintf(stderr, "%s\n", soma_last_error()); continue; }
        soma_rule_config rc;
        soma_rule_config_default(&rc);
        rc.T = 3;
        soma_rule *r = NULL;
        CHECK(soma_rule_new(&r, "lfp", net, &rc, 2) == SOMA_ERR_UNSUPPORTED && !r);
        if (!CHECK(strstr(soma_last_error(), cases[c].layer) != NULL))
            fprintf(stderr, "%s: %s\n", cases[c].spec, soma_last_error());
        soma_net_free(net);
    }
}

int main(void)
{
    snn_golden();
    snn_conv_golden("tests/fixtures/lfp_snn_conv.safetensors");
    snn_conv_golden("tests/fixtures/lfp_snn_conv_m.safetensors");
    snn_bad_layers();
    test_oracle();
    test_conservation();
    run_golden("tests/fixtures/lfp_a.safetensors");
    run_golden("tests/fixtures/lfp_b.safetensors");
    test_sign_theorem("20-16-12-5", 20, 1, 1);
    test_sign_theorem("conv3x4p1-pool2-conv3x6s2p1-avgpool2-fc7-fc5", 2, 9, 9);
    test_agc();
    test_training("12-32-3", "epsilon", 0.85);
    test_training("12-32-bn-drop0.2-24-3", "epsilon", 0.8);
    test_training("12-32-24-3", "zplusminus", 0.8);
    test_training("12-32-24-3", "alphabeta", 0.6);
    test_bad_input();
    return check_report("test_lfp");
}
