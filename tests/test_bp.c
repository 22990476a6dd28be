/*
 * test_bp.c - BP on a tiny MLP and a tiny CNN against PyTorch golden values
 * (refs/core_ref.py -> tests/fixtures/bp_*.safetensors): logits, loss,
 * every gradient, and the parameters after three SGD-momentum and three
 * Adam steps, batchnorm running statistics included.
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

/* Copies the fixture's "<prefix><name>" tensors into the net. */
static void load_state(soma_net *net, const soma_st *st, const char *prefix)
{
    for (int i = 0; i < soma_net_tensor_count(net); i++) {
        const char *name;
        int ndim;
        int64_t shape[4];
        float *v = soma_net_tensor(net, i, &name, &ndim, shape, NULL);
        char key[128];
        snprintf(key, sizeof key, "%s%s", prefix, name);
        size_t n;
        const float *src = fx(st, key, &n);
        if (src) memcpy(v, src, n * sizeof(float));
    }
}

static void compare_state(soma_net *net, const soma_st *st, const char *prefix, double rtol)
{
    for (int i = 0; i < soma_net_tensor_count(net); i++) {
        const char *name;
        int ndim;
        int64_t shape[4];
        float *v = soma_net_tensor(net, i, &name, &ndim, shape, NULL);
        char key[128];
        snprintf(key, sizeof key, "%s%s", prefix, name);
        size_t n;
        const float *want = fx(st, key, &n);
        if (want) check_close_f(key, v, want, n, rtol, 1e-6);
    }
}

static void run_model(const char *path)
{
    soma_st *st;
    if (!CHECK(soma_st_read(&st, path) == SOMA_OK)) { fprintf(stderr, "%s\n", soma_last_error()); return; }
    const char *spec = soma_st_meta(st, "spec");
    soma_net_options o;
    soma_net_options_default(&o);
    CHECK(sscanf(soma_st_meta(st, "input"), "%d,%d,%d", &o.in_c, &o.in_h, &o.in_w) == 3);
    size_t nx, ny;
    const float *x = fx(st, "x", &nx);
    const int32_t *y = (const int32_t *)fx(st, "y", &ny);
    int B = (int)ny;
    int C = 5;
    soma_batch b = { .n = B, .c = o.in_c, .h = o.in_h, .w = o.in_w, .x = (float *)x, .y = (int32_t *)y };

    /* forward + backward at the initial weights */
    soma_net *net;
    if (!CHECK(soma_net_new(&net, spec, &o) == SOMA_OK)) { fprintf(stderr, "%s\n", soma_last_error()); return; }
    load_state(net, st, "init.");
    CHECK(soma_net_prepare(net, B) == SOMA_OK);
    soma_net_set_train(net, 1);
    const float *logits;
    CHECK(soma_net_forward(net, x, B, NULL, &logits) == SOMA_OK);
    char label[160];
    snprintf(label, sizeof label, "%s logits", spec);
    check_close_f(label, logits, fx(st, "logits", NULL), (size_t)B * C, 1e-5, 1e-6);
    float probs[64 * 5], dl[64 * 5] = { 0 };
    float loss = soma_ce_forward(probs, logits, y, B, C);
    snprintf(label, sizeof label, "%s loss", spec);
    check_close_f(label, &loss, fx(st, "loss", NULL), 1, 1e-5, 0);
    soma_ce_backward(dl, probs, y, B, C, 1.0f);
    soma_net_zero_grad(net);
    CHECK(soma_net_backward(net, dl, B, NULL) == SOMA_OK);
    for (int i = 0; i < soma_net_tensor_count(net); i++) {
        const char *name;
        int is_param;
        float *v = soma_net_tensor(net, i, &name, NULL, NULL, &is_param);
        if (!is_param) continue;
        char key[128];
        snprintf(key, sizeof key, "grad.%s", name);
        size_t n;
        const float *want = fx(st, key, &n);
        float *g = soma_net_param_grads(net) + (v - soma_net_param_values(net));
        snprintf(label, sizeof label, "%s %s", spec, key);
        if (want) check_close_f(label, g, want, n, 1e-4, 1e-6);
    }
    soma_net_free(net);

    /* three steps of each optimizer through the BP rule */
    const char *opts[2] = { "sgd", "adam" };
    const char *wanted = soma_st_meta(st, "optims");
    for (int k = 0; k < 2; k++) {
        if (!wanted || !strstr(wanted, opts[k])) continue;
        CHECK(soma_net_new(&net, spec, &o) == SOMA_OK);
        load_state(net, st, "init.");
        soma_rule_config rc;
        soma_rule_config_default(&rc);
        soma_optim_config_default(&rc.optim, k == 0 ? SOMA_OPTIM_SGD : SOMA_OPTIM_ADAM);
        rc.optim.lr = k == 0 ? 0.1f : 0.01f;
        if (k == 0) rc.optim.momentum = 0.9f;
        soma_rule *r;
        if (!CHECK(soma_rule_new(&r, "bp", net, &rc, B) == SOMA_OK)) { fprintf(stderr, "%s\n", soma_last_error()); continue; }
        float losses[3];
        for (int s = 0; s < 3; s++) {
            soma_step_stats ss = { 0 };
            CHECK(soma_rule_train_batch(r, &b, rc.optim.lr, NULL, &ss) == SOMA_OK);
            losses[s] = (float)(ss.loss / ss.n);
        }
        char key[64];
        snprintf(key, sizeof key, "%s.losses", opts[k]);
        snprintf(label, sizeof label, "%s %s", spec, key);
        check_close_f(label, losses, fx(st, key, NULL), 3, 1e-5, 1e-7);
        snprintf(key, sizeof key, "%s.after.", opts[k]);
        compare_state(net, st, key, 1e-4);
        const float *scores;
        CHECK(soma_rule_predict(r, &b, &scores, NULL) == SOMA_OK);
        snprintf(key, sizeof key, "%s.eval_logits", opts[k]);
        snprintf(label, sizeof label, "%s %s", spec, key);
        check_close_f(label, scores, fx(st, key, NULL), (size_t)B * C, 1e-4, 1e-5);
        soma_rule_free(r);
        soma_net_free(net);
    }
    soma_st_free(st);
}

/* Small batches take the fused path (gradient formed row by row inside the
 * update); a clip norm too large to clip forces the stored-gradient path
 * without changing the update.  Batch 1: identical bits; batch 5: rounding. */
static void fused_vs_stored(soma_optim_kind kind, int B, const char *spec)
{
    soma_net_options o;
    soma_net_options_default(&o);
    o.in_c = 12; o.in_h = 1; o.in_w = 1;
    o.seed = 3;
    soma_net *a, *b;
    CHECK(soma_net_new(&a, spec, &o) == SOMA_OK);
    CHECK(soma_net_new(&b, spec, &o) == SOMA_OK);
    soma_rule_config rc;
    soma_rule_config_default(&rc);
    soma_optim_config_default(&rc.optim, kind);
    rc.optim.lr = 0.05f;
    if (kind == SOMA_OPTIM_SGD) { rc.optim.momentum = 0.9f; rc.optim.weight_decay = 1e-3f; }
    soma_rule *ra, *rb;
    CHECK(soma_rule_new(&ra, "bp", a, &rc, B) == SOMA_OK);
    rc.clip_norm = 1e30f;
    CHECK(soma_rule_new(&rb, "bp", b, &rc, B) == SOMA_OK);
    soma_rng rng, ga, gb;
    soma_rng_seed(&rng, 9);
    soma_rng_seed(&ga, 4);
    soma_rng_seed(&gb, 4);
    float x[8 * 12];
    int32_t y[8];
    for (int s = 0; s < 4; s++) {
        for (int i = 0; i < B * 12; i++) x[i] = soma_rng_normal(&rng);
        for (int i = 0; i < B; i++) y[i] = (int32_t)soma_rng_below(&rng, 4);
        soma_batch bt = { .n = B, .c = 12, .h = 1, .w = 1, .x = x, .y = y };
        CHECK(soma_rule_train_batch(ra, &bt, 0.05f, &ga, NULL) == SOMA_OK);
        CHECK(soma_rule_train_batch(rb, &bt, 0.05f, &gb, NULL) == SOMA_OK);
    }
    char label[96];
    snprintf(label, sizeof label, "fused vs stored %s B=%d %s", soma_optim_name(kind), B, spec);
    size_t n = soma_net_param_floats(a);
    check_close_f(label, soma_net_param_values(a), soma_net_param_values(b), n,
                  B == 1 ? 0 : 1e-5, B == 1 ? 0 : 1e-6);
    soma_rule_free(ra); soma_rule_free(rb);
    soma_net_free(a); soma_net_free(b);
}

/* init "unit": hidden weights unit rows, biases 0; the readout PyTorch's default */
static void init_unit(void)
{
    soma_net_options o;
    soma_net_options_default(&o);
    o.in_c = 12; o.in_h = 1; o.in_w = 1;
    o.init = SOMA_INIT_UNIT;
    soma_net *net;
    if (!CHECK(soma_net_new(&net, "12-20-16-4", &o) == SOMA_OK)) return;
    const float *v = soma_net_param_values(net);
    CHECK(soma_net_param_floats(net) == 240 + 20 + 320 + 16 + 64 + 4);
    const int rows[2] = { 20, 16 }, cols[2] = { 12, 20 };
    double worst = 0, bias = 0;
    for (int l = 0; l < 2; l++) {
        for (int r = 0; r < rows[l]; r++) {
            double q = 0;
            for (int j = 0; j < cols[l]; j++) q += (double)v[r * cols[l] + j] * v[r * cols[l] + j];
            if (fabs(q - 1) > worst) worst = fabs(q - 1);
        }
        v += rows[l] * cols[l];
        for (int r = 0; r < rows[l]; r++) bias += fabs(v[r]);
        v += rows[l];
    }
    CHECK(worst < 1e-5 && bias == 0);
    double mx = 0, bmx = 0;   /* readout: U(-1/4, 1/4) weights and biases */
    for (int j = 0; j < 64; j++) mx = fmax(mx, fabs(v[j]));
    for (int j = 0; j < 4; j++) bmx = fmax(bmx, fabs(v[64 + j]));
    if (!CHECK(mx <= 0.25f && mx > 0.15 && bmx > 0 && bmx <= 0.25f))
        fprintf(stderr, "  init unit: worst %g bias %g readout max %g / %g\n", worst, bias, mx, bmx);
    soma_net_free(net);
}

int main(void)
{
    init_unit();
    fused_vs_stored(SOMA_OPTIM_SGD, 1, "12-20-16-4");
    fused_vs_stored(SOMA_OPTIM_ADAM, 1, "12-20-16-4");
    fused_vs_stored(SOMA_OPTIM_ADAMAX, 1, "12-20-drop0.3-16-4");
    fused_vs_stored(SOMA_OPTIM_SGD, 5, "12-20-16-4");
    fused_vs_stored(SOMA_OPTIM_ADAM, 5, "12-20-drop0.3-16-4");
    run_model("tests/fixtures/bp_mlp.safetensors");
    run_model("tests/fixtures/bp_mlp_plain.safetensors");
    run_model("tests/fixtures/bp_cnn.safetensors");
    return check_report("test_bp");
}
