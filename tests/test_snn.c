/*
 * test_snn.c - spiking nets stepped through time against PyTorch golden
 * values (refs/snn_ref.py -> tests/fixtures/snn_*.safetensors): membrane and
 * spike traces, readout, loss, full-BPTT and truncated-BPTT gradients, one
 * SGD step and the loss after it; for a 2-layer recurrent LIF net and an
 * adaptive-LIF net over 20 steps.
 */
#include "check.h"
#include "net/net.h"
#include <stdio.h>

static const float *fx(const soma_st *st, const char *name, size_t *n)
{
    const soma_st_tensor *t = soma_st_find(st, name);
    if (!t) { fprintf(stderr, "fixture tensor '%s' missing\n", name); CHECK(t != NULL); return NULL; }
    if (n) *n = t->nbytes / 4;
    return t->data;
}

static float meta_f(const soma_st *st, const char *key)
{
    const char *v = soma_st_meta(st, key);
    CHECK(v != NULL);
    return v ? strtof(v, NULL) : 0;
}

typedef struct model {
    soma_st *st;
    soma_net *net;
    int B, T, D, C, reduce_last;
    float *xt;        /* (T, B, D) per-step inputs */
} model;

static int open_model(model *m, const char *path)
{
    memset(m, 0, sizeof *m);
    if (!CHECK(soma_st_read(&m->st, path) == SOMA_OK)) { fprintf(stderr, "%s\n", soma_last_error()); return 0; }
    soma_st *st = m->st;
    soma_net_options o;
    soma_net_options_default(&o);
    m->D = 8;
    o.in_c = m->D; o.in_h = 1; o.in_w = 1;
    o.spiking = 1;
    CHECK(soma_neuron_from_name(&o.cell.kind, soma_st_meta(st, "neuron")) == SOMA_OK);
    soma_cell_params_default(&o.cell, o.cell.kind);
    o.cell.alpha = meta_f(st, "alpha");
    o.cell.threshold = meta_f(st, "threshold");
    o.cell.reset = SOMA_RESET_SUBTRACT;
    o.cell.detach_reset = 0;
    o.cell.input_scale = 0;
    if (o.cell.kind == SOMA_NEURON_ALIF) {
        o.cell.rho = meta_f(st, "rho");
        o.cell.beta_a = meta_f(st, "beta_a");
    }
    soma_surrogate_default(&o.cell.surr, SOMA_SURR_FAST_SIGMOID);
    o.cell.surr.slope = meta_f(st, "slope");
    o.readout = SOMA_READOUT_LI;
    soma_cell_params_default(&o.readout_cell, SOMA_NEURON_LI);
    o.readout_cell.alpha = meta_f(st, "readout_alpha");
    o.readout_cell.input_scale = 0;
    if (!CHECK(soma_net_new(&m->net, soma_st_meta(st, "spec"), &o) == SOMA_OK)) {
        fprintf(stderr, "%s\n", soma_last_error());
        return 0;
    }
    size_t ny;
    const float *x = fx(st, "x", NULL);
    fx(st, "y", &ny);
    m->B = (int)ny;
    m->T = (int)meta_f(st, "T");
    m->C = soma_net_outputs(m->net);
    m->reduce_last = !strcmp(soma_st_meta(st, "reduce"), "last");
    /* fixture x is (B, T, D); the net takes (B, D) per step */
    m->xt = malloc(sizeof(float) * m->T * m->B * m->D);
    for (int t = 0; t < m->T; t++)
        for (int b = 0; b < m->B; b++)
            memcpy(m->xt + ((size_t)t * m->B + b) * m->D, x + ((size_t)b * m->T + t) * m->D,
                   sizeof(float) * m->D);
    CHECK(soma_net_prepare_time(m->net, m->B, m->T) == SOMA_OK);
    return 1;
}

static void load_params(model *m, const char *prefix)
{
    for (int i = 0; i < soma_net_tensor_count(m->net); i++) {
        const char *name;
        float *v = soma_net_tensor(m->net, i, &name, NULL, NULL, NULL);
        char key[96];
        snprintf(key, sizeof key, "%s%s", prefix, name);
        size_t n;
        const float *src = fx(m->st, key, &n);
        if (src) memcpy(v, src, n * sizeof(float));
    }
}

/* Runs the T steps; logits (B, C) = mean or last of the readout. */
static void forward(model *m, float *logits)
{
    soma_net *net = m->net;
    CHECK(soma_net_reset_state(net, m->B, NULL) == SOMA_OK);
    memset(logits, 0, sizeof(float) * m->B * m->C);
    for (int t = 0; t < m->T; t++) {
        const float *out;
        if (!CHECK(soma_net_step(net, m->xt + (size_t)t * m->B * m->D, m->B, &out) == SOMA_OK)) return;
        for (int i = 0; i < m->B * m->C; i++) {
            if (m->reduce_last) { if (t == m->T - 1) logits[i] = out[i]; }
            else logits[i] += out[i] / (float)m->T;
        }
    }
}

/* Compares the per-step trace of layer `layer`'s buffer with the fixture's. */
static void check_trace(model *m, const char *key, int layer, int which)
{
    soma_net *net = m->net;
    soma_layer *l = &net->layers[layer];
    size_t per = (size_t)m->B * l->out_size;
    float *got = malloc(sizeof(float) * per * m->T);
    for (int t = 0; t < m->T; t++) {
        int slot = soma__slot_of(net, t);
        float *base = which == 0 ? l->cu : which == 1 ? l->out : which == 2 ? l->ca : l->cth;
        memcpy(got + per * t, soma__slot(net, l, base, slot), sizeof(float) * per);
    }
    size_t n;
    const float *want = fx(m->st, key, &n);
    char label[96];
    snprintf(label, sizeof label, "%s %s", soma_st_meta(m->st, "neuron"), key);
    if (want && CHECK(n == per * m->T)) check_close_f(label, got, want, n, 1e-5, 1e-6);
    free(got);
}

static void backward(model *m, const float *logits, float *loss, int trunc)
{
    int B = m->B, C = m->C;
    float probs[64], dl[64] = { 0 }, dstep[64];
    const int32_t *y = (const int32_t *)fx(m->st, "y", NULL);
    *loss = soma_ce_forward(probs, logits, y, B, C);
    soma_ce_backward(dl, probs, y, B, C, 1.0f);
    const float *dout[64];
    for (int i = 0; i < B * C; i++) dstep[i] = m->reduce_last ? dl[i] : dl[i] / (float)m->T;
    for (int t = 0; t < m->T; t++) dout[t] = (m->reduce_last && t != m->T - 1) ? NULL : dstep;
    soma_net_zero_grad(m->net);
    CHECK(soma_net_backward_time(m->net, m->T, dout, B, trunc) == SOMA_OK);
}

static void compare_grads(model *m, const char *prefix)
{
    for (int i = 0; i < soma_net_tensor_count(m->net); i++) {
        const char *name;
        int is_param;
        float *v = soma_net_tensor(m->net, i, &name, NULL, NULL, &is_param);
        if (!is_param) continue;
        char key[96], label[128];
        snprintf(key, sizeof key, "%s%s", prefix, name);
        size_t n;
        const float *want = fx(m->st, key, &n);
        float *g = soma_net_param_grads(m->net) + (v - soma_net_param_values(m->net));
        snprintf(label, sizeof label, "%s %s", soma_st_meta(m->st, "neuron"), key);
        if (want) check_close_f(label, g, want, n, 1e-4, 2e-6);
    }
}

static void run(const char *path)
{
    model m;
    if (!open_model(&m, path)) return;
    soma_net *net = m.net;
    load_params(&m, "init.");
    float logits[64], loss;
    forward(&m, logits);
    const char *kind = soma_st_meta(m.st, "neuron");
    char label[160];
    /* traces: layer 1 is the first hidden cell */
    check_trace(&m, "trace.u1", 1, 0);
    check_trace(&m, "trace.s1", 1, 1);
    if (!strcmp(kind, "alif")) {
        check_trace(&m, "trace.a1", 1, 2);
        check_trace(&m, "trace.th1", 1, 3);
        check_trace(&m, "trace.o", 3, 1); /* LI readout: its output is the membrane */
    } else {
        check_trace(&m, "trace.u2", 3, 0);
        check_trace(&m, "trace.s2", 3, 1);
        check_trace(&m, "trace.o", 5, 1);
    }
    snprintf(label, sizeof label, "%s logits", kind);
    check_close_f(label, logits, fx(m.st, "logits", NULL), (size_t)m.B * m.C, 1e-5, 1e-6);
    backward(&m, logits, &loss, 0);
    snprintf(label, sizeof label, "%s loss", kind);
    check_close_f(label, &loss, fx(m.st, "loss", NULL), 1, 1e-5, 0);
    compare_grads(&m, "grad.");

    /* one SGD-momentum step (first step: w - lr g) and the loss after it */
    soma_optim_config oc;
    soma_optim_config_default(&oc, SOMA_OPTIM_SGD);
    oc.lr = 0.1f;
    oc.momentum = 0.9f;
    soma_optim *opt;
    CHECK(soma_optim_new(&opt, &oc, soma_net_param_floats(net)) == SOMA_OK);
    soma_optim_step(opt, soma_net_param_values(net), soma_net_param_grads(net), 0.1f);
    soma_optim_free(opt);
    for (int i = 0; i < soma_net_tensor_count(net); i++) {
        const char *name;
        float *v = soma_net_tensor(net, i, &name, NULL, NULL, NULL);
        char key[96];
        snprintf(key, sizeof key, "sgd.after.%s", name);
        size_t n;
        const float *want = fx(m.st, key, &n);
        snprintf(label, sizeof label, "%s %s", kind, key);
        if (want) check_close_f(label, v, want, n, 1e-4, 1e-6);
    }
    forward(&m, logits);
    const int32_t *y = (const int32_t *)fx(m.st, "y", NULL);
    float probs[64];
    loss = soma_ce_forward(probs, logits, y, m.B, m.C);
    snprintf(label, sizeof label, "%s sgd.loss2", kind);
    check_close_f(label, &loss, fx(m.st, "sgd.loss2", NULL), 1, 1e-4, 0);

    /* truncated BPTT, k = 5, from the initial weights */
    load_params(&m, "init.");
    forward(&m, logits);
    backward(&m, logits, &loss, 5);
    compare_grads(&m, "grad_tbptt5.");

    /* the forward pass must not depend on the window's ring position: a net
     * prepared for a longer window gives the same logits */
    float l2[64];
    CHECK(soma_net_prepare_time(net, m.B, m.T + 7) == SOMA_OK);
    forward(&m, l2);
    snprintf(label, sizeof label, "%s logits (window T+7)", kind);
    check_close_f(label, l2, logits, (size_t)m.B * m.C, 0, 0);

    free(m.xt);
    soma_net_free(net);
    soma_st_free(m.st);
}

/* ---- finite differences of BPTT with a smooth spike ---------------------- */

/* L = sum_t <out_t, r_t> over T steps of inputs xs. */
static double seq_loss(soma_net *n, const float *xs, const float *r, int B, int D, int C, int T)
{
    double L = 0;
    soma_net_reset_state(n, B, NULL);
    for (int t = 0; t < T; t++) {
        const float *out;
        soma_net_step(n, xs + (size_t)t * B * D, B, &out);
        for (int i = 0; i < B * C; i++) L += (double)out[i] * r[(size_t)t * B * C + i];
    }
    return L;
}

/* The net's spike is swapped for sigmoid(k x) with its exact derivative, so
 * the forward is differentiable and BPTT must equal finite differences;
 * everything else (recurrence, resets, adaptation, readout, the time loop)
 * is the production code. */
static void fd_bptt(const char *spec, soma_neuron_kind kind, soma_reset reset, int detach)
{
    const int B = 3, D = 6, T = 8;
    soma_net_options o;
    soma_net_options_default(&o);
    o.in_c = D; o.in_h = 1; o.in_w = 1;
    o.spiking = 1;
    o.seed = 11;
    soma_cell_params_default(&o.cell, kind);
    o.cell.reset = reset;
    o.cell.detach_reset = detach;
    o.cell.threshold = 0.5f;
    soma_net *n;
    if (!CHECK(soma_net_new(&n, spec, &o) == SOMA_OK)) { fprintf(stderr, "%s\n", soma_last_error()); return; }
    n->spike.fn = SOMA__SPIKE_SIGMOID;
    n->spike.k = 3.0f;
    CHECK(soma_net_prepare_time(n, B, T) == SOMA_OK);
    int C = soma_net_outputs(n);
    soma_rng rng;
    soma_rng_seed(&rng, 5);
    float *xs = malloc(sizeof(float) * T * B * D), *r = malloc(sizeof(float) * T * B * C);
    for (int i = 0; i < T * B * D; i++) xs[i] = 2.0f * soma_rng_normal(&rng);
    for (int i = 0; i < T * B * C; i++) r[i] = soma_rng_normal(&rng);
    const float *dout[8];
    for (int t = 0; t < T; t++) dout[t] = r + (size_t)t * B * C;
    seq_loss(n, xs, r, B, D, C, T);
    soma_net_zero_grad(n);
    CHECK(soma_net_backward_time(n, T, dout, B, 0) == SOMA_OK);
    size_t np = soma_net_param_floats(n);
    float *w = soma_net_param_values(n), *g = malloc(sizeof(float) * np), *v = malloc(sizeof(float) * np);
    memcpy(g, soma_net_param_grads(n), sizeof(float) * np);
    /* per tensor: directional derivative along a random direction */
    for (int i = 0; i < soma_net_tensor_count(n); i++) {
        const char *name;
        int ndim, is_param;
        int64_t shape[4];
        float *p = soma_net_tensor(n, i, &name, &ndim, shape, &is_param);
        if (!is_param) continue;
        size_t off = (size_t)(p - w), cnt = 1;
        for (int d = 0; d < ndim; d++) cnt *= (size_t)shape[d];
        double gv = 0;
        for (size_t k = 0; k < cnt; k++) { v[k] = soma_rng_normal(&rng); gv += (double)g[off + k] * v[k]; }
        /* central differences at eps and eps/2, combined (Richardson) so the
         * O(eps^2) truncation error cancels; float rounding stays small */
        float *save = malloc(sizeof(float) * cnt);
        memcpy(save, p, sizeof(float) * cnt);
        double d[2];
        for (int h = 0; h < 2; h++) {
            float eps = h ? 5e-3f : 1e-2f;
            for (size_t k = 0; k < cnt; k++) p[k] = save[k] + eps * v[k];
            double lp = seq_loss(n, xs, r, B, D, C, T);
            for (size_t k = 0; k < cnt; k++) p[k] = save[k] - eps * v[k];
            double lm = seq_loss(n, xs, r, B, D, C, T);
            /* the step actually taken, in float */
            d[h] = (lp - lm) / (2.0 * eps);
        }
        memcpy(p, save, sizeof(float) * cnt);
        free(save);
        double fd = (4 * d[1] - d[0]) / 3;
        char label[160];
        snprintf(label, sizeof label, "bptt fd %s %s reset=%s detach=%d %s", spec, soma_neuron_name(kind),
                 soma_reset_name(reset), detach, name);
        check_close_d(label, &gv, &fd, 1, 2e-3, 2e-3);
    }
    free(g); free(v); free(xs); free(r);
    soma_net_free(n);
}

/* Static input (direct encoding): the stateless prefix runs once per
 * sequence; outputs and gradients must equal the step-by-step computation. */
static void static_prefix(const char *spec, int c, int h, int w)
{
    const int B = 3, T = 6;
    soma_net_options o;
    soma_net_options_default(&o);
    o.in_c = c; o.in_h = h; o.in_w = w;
    o.spiking = 1;
    o.seed = 2;
    o.cell.threshold = 0.3f;
    soma_net *a, *b;
    CHECK(soma_net_new(&a, spec, &o) == SOMA_OK);
    CHECK(soma_net_new(&b, spec, &o) == SOMA_OK);
    CHECK(soma_net_prepare_time(a, B, T) == SOMA_OK);
    CHECK(soma_net_prepare_time(b, B, T) == SOMA_OK);
    soma_net_set_static_input(a, 1);
    int D = c * h * w, C = soma_net_outputs(a);
    float *x = malloc(sizeof(float) * B * D), *r = malloc(sizeof(float) * T * B * C);
    soma_rng rng;
    soma_rng_seed(&rng, 8);
    for (int i = 0; i < B * D; i++) x[i] = 2.0f * soma_rng_normal(&rng);
    for (int i = 0; i < T * B * C; i++) r[i] = soma_rng_normal(&rng);
    const float *dout[6];
    for (int t = 0; t < T; t++) dout[t] = r + (size_t)t * B * C;
    CHECK(soma_net_reset_state(a, B, NULL) == SOMA_OK);
    CHECK(soma_net_reset_state(b, B, NULL) == SOMA_OK);
    int same = 1, spikes = 0;
    for (int t = 0; t < T; t++) {
        const float *oa, *ob;
        CHECK(soma_net_step(a, x, B, &oa) == SOMA_OK);
        CHECK(soma_net_step(b, x, B, &ob) == SOMA_OK);
        for (int i = 0; i < B * C; i++) same &= oa[i] == ob[i];
    }
    for (int i = 0; i < a->n_layers; i++)
        if (a->layers[i].kind == SOMA_LAYER_CELL && a->layers[i].cell.kind != SOMA_NEURON_LI)
            for (size_t k = 0; k < (size_t)a->slots * a->max_batch * a->layers[i].out_size; k++)
                spikes += a->layers[i].out[k] != 0;
    CHECK(same);
    CHECK(spikes > 0);
    soma_net_zero_grad(a);
    soma_net_zero_grad(b);
    CHECK(soma_net_backward_time(a, T, dout, B, 0) == SOMA_OK);
    CHECK(soma_net_backward_time(b, T, dout, B, 0) == SOMA_OK);
    char label[96];
    snprintf(label, sizeof label, "static-input prefix %s", spec);
    check_close_f(label, soma_net_param_grads(a), soma_net_param_grads(b), soma_net_param_floats(a),
                  1e-5, 1e-6);
    /* the promise is checked */
    CHECK(soma_net_reset_state(a, B, NULL) == SOMA_OK);
    const float *oa;
    CHECK(soma_net_step(a, x, B, &oa) == SOMA_OK);
    CHECK(soma_net_step(a, r, B, &oa) == SOMA_ERR_ARG);
    free(x); free(r);
    soma_net_free(a); soma_net_free(b);
}

/* reduce "each": L = (1/T) sum_t CE(out_t, y); the rule's SGD step must equal
 * one done by hand through the net API. */
static void reduce_each(void)
{
    const int B = 4, T = 5, D = 6;
    soma_net_options o;
    soma_net_options_default(&o);
    o.in_c = D; o.in_h = 1; o.in_w = 1;
    o.spiking = 1;
    o.seed = 21;
    o.cell.threshold = 0.4f;
    soma_net *a, *b;
    CHECK(soma_net_new(&a, "6-r9-4", &o) == SOMA_OK);
    CHECK(soma_net_new(&b, "6-r9-4", &o) == SOMA_OK);
    soma_rule_config rc;
    soma_rule_config_default(&rc);
    rc.optim.lr = 0.5f;
    rc.T = T;
    rc.reduce = SOMA_REDUCE_EACH;
    soma_rule *r;
    if (!CHECK(soma_rule_new(&r, "bptt", a, &rc, B) == SOMA_OK)) { fprintf(stderr, "%s\n", soma_last_error()); return; }
    float x[4 * 6];
    int32_t y[4] = { 0, 3, 1, 2 };
    soma_rng rng;
    soma_rng_seed(&rng, 3);
    for (int i = 0; i < B * D; i++) x[i] = 2.0f * soma_rng_normal(&rng);
    soma_batch bt = { .n = B, .c = D, .h = 1, .w = 1, .x = x, .y = y };
    soma_step_stats st = { 0 };
    CHECK(soma_rule_train_batch(r, &bt, 0.5f, NULL, &st) == SOMA_OK);
    /* by hand on net b */
    CHECK(soma_net_prepare_time(b, B, T) == SOMA_OK);
    CHECK(soma_net_reset_state(b, B, NULL) == SOMA_OK);
    int C = soma_net_outputs(b);
    float dl[5][16], probs[16];
    const float *dout[5];
    double total = 0;
    for (int t = 0; t < T; t++) {
        const float *out;
        CHECK(soma_net_step(b, x, B, &out) == SOMA_OK);
        total += soma_ce_forward(probs, out, y, B, C);
        memset(dl[t], 0, sizeof dl[t]);
        soma_ce_backward(dl[t], probs, y, B, C, 1.0f / (float)T);
        dout[t] = dl[t];
    }
    soma_net_zero_grad(b);
    CHECK(soma_net_backward_time(b, T, dout, B, 0) == SOMA_OK);
    size_t np = soma_net_param_floats(b);
    float *wb = soma_net_param_values(b), *gb = soma_net_param_grads(b);
    for (size_t i = 0; i < np; i++) wb[i] -= 0.5f * gb[i];
    check_close_f("bptt reduce=each update", soma_net_param_values(a), wb, np, 1e-5, 1e-6);
    double got = st.loss / st.n, want = total / T;
    check_close_d("bptt reduce=each loss", &got, &want, 1, 1e-5, 1e-7);
    soma_rule_free(r);
    soma_net_free(a);
    soma_net_free(b);
}

/* Bad input: a spiking API on a static net, and the reverse. */
static void test_errors(void)
{
    soma_net_options o;
    soma_net_options_default(&o);
    o.in_c = 8; o.in_h = 1; o.in_w = 1;
    soma_net *n;
    CHECK(soma_net_new(&n, "8-r16-5", &o) == SOMA_ERR_ARG);
    CHECK(strstr(soma_last_error(), "spiking") != NULL);
    CHECK(soma_net_new(&n, "8-16-5", &o) == SOMA_OK);
    CHECK(soma_net_prepare_time(n, 4, 10) == SOMA_ERR_ARG);
    soma_net_free(n);
    o.spiking = 1;
    CHECK(soma_net_new(&n, "8-16-5", &o) == SOMA_OK);
    CHECK(soma_net_prepare_time(n, 4, 0) == SOMA_ERR_ARG);
    CHECK(soma_net_prepare_time(n, 4, 3) == SOMA_OK);
    CHECK(soma_net_reset_state(n, 4, NULL) == SOMA_OK);
    float x[32] = { 0 };
    const float *out;
    for (int t = 0; t < 2; t++) CHECK(soma_net_step(n, x, 4, &out) == SOMA_OK);
    CHECK(soma_net_backward_time(n, 3, NULL, 4, 0) == SOMA_ERR_ARG); /* only 2 steps taken */
    CHECK(soma_net_step(n, x, 3, &out) == SOMA_ERR_ARG);              /* batch changed */
    soma_net_free(n);
    o.cell.alpha = 1.5f;
    CHECK(soma_net_new(&n, "8-16-5", &o) == SOMA_ERR_ARG);
    CHECK(strstr(soma_last_error(), "alpha") != NULL);
}

int main(void)
{
    run("tests/fixtures/snn_rlif.safetensors");
    run("tests/fixtures/snn_alif.safetensors");
    test_errors();
    reduce_each();
    static_prefix("18-10-r6-3", 2, 3, 3);
    static_prefix("conv2x3-pool2-8-3", 2, 5, 5);
    fd_bptt("6-r8-r7-3", SOMA_NEURON_LIF, SOMA_RESET_SUBTRACT, 0);
    fd_bptt("6-r8-r7-3", SOMA_NEURON_LIF, SOMA_RESET_ZERO, 0);
    fd_bptt("6-r8-7-3", SOMA_NEURON_IF, SOMA_RESET_SUBTRACT, 0);
    fd_bptt("6-r8-3", SOMA_NEURON_ALIF, SOMA_RESET_SUBTRACT, 0);
    fd_bptt("6-r8-3", SOMA_NEURON_ALIF, SOMA_RESET_ZERO, 0);
    return check_report("test_snn");
}
