/*
 * test_ltc.c - Liquid-Time-Constant layers (ltcN, rltcN, the LTC readout):
 * spec parsing and parameter names, the forward step against a direct
 * evaluation of the equations (notes/fptt.md 2.1), and BPTT through LTC
 * nets against finite differences with a smooth spike (the sigmoid stand-in
 * of tests/test_snn.c's fd_bptt), for the whole sequence and for an FPTT-K
 * window entered with a state that is held constant.
 */
#include "check.h"
#include "net/net.h"
#include <stdio.h>

static soma_net *make_net(const char *spec, int D, soma_readout ro, soma_neuron_kind kind, uint64_t seed)
{
    soma_net_options o;
    soma_net_options_default(&o);
    o.in_c = D; o.in_h = 1; o.in_w = 1;
    o.seed = seed;
    o.readout = ro;
    o.ltc.kind = kind;
    if (kind == SOMA_NEURON_LIF) o.ltc.threshold = 0.5f;  /* the adding-task variant */
    soma_net *n = NULL;
    if (!CHECK(soma_net_new(&n, spec, &o) == SOMA_OK)) fprintf(stderr, "%s: %s\n", spec, soma_last_error());
    return n;
}

static int find_tensor(soma_net *n, const char *want)
{
    for (int i = 0; i < soma_net_tensor_count(n); i++) {
        const char *name;
        soma_net_tensor(n, i, &name, NULL, NULL, NULL);
        if (!strcmp(name, want)) return i;
    }
    return -1;
}

/* Names, shapes, init (k = 1, b = 0), auto-spiking, errors. */
static void test_spec(void)
{
    soma_net *n = make_net("6-rltc8-ltc5-3", 6, SOMA_READOUT_LTC, SOMA_NEURON_ALIF, 1);
    if (!n) return;
    CHECK(soma_net_is_spiking(n));
    const char *names[] = { "0.weight", "0.weight_rec", "1.tau_m.weight", "1.tau_m.bias", "1.tau_m.k",
                            "1.tau_adp.weight", "1.tau_adp.bias", "1.tau_adp.k", "2.weight",
                            "3.tau_m.weight", "4.weight", "5.tau_m.weight", "5.tau_m.k" };
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        int ok = find_tensor(n, names[i]) >= 0;
        if (!ok) fprintf(stderr, "missing tensor %s\n", names[i]);
        CHECK(ok);
    }
    CHECK(find_tensor(n, "2.weight_rec") < 0);
    CHECK(find_tensor(n, "5.tau_adp.weight") < 0);  /* the readout has only tau_o */
    int64_t shape[4];
    int ndim;
    float *w = soma_net_tensor(n, find_tensor(n, "1.tau_m.weight"), NULL, &ndim, shape, NULL);
    CHECK(ndim == 2 && shape[0] == 8 && shape[1] == 16);
    double ss = 0;
    for (int i = 0; i < 128; i++) ss += (double)w[i] * w[i];
    CHECK(ss / 128 > 0.3 * 2.0 / 24 && ss / 128 < 2.0 * 2.0 / 24);   /* Xavier normal, var 2/(16+8) */
    CHECK(soma_net_tensor(n, find_tensor(n, "1.tau_m.k"), NULL, NULL, NULL, NULL)[0] == 1.0f);
    CHECK(soma_net_tensor(n, find_tensor(n, "5.tau_m.k"), NULL, NULL, NULL, NULL)[0] == 1.0f);
    float *b = soma_net_tensor(n, find_tensor(n, "1.tau_adp.bias"), NULL, NULL, NULL, NULL);
    CHECK(b[0] == 0 && b[7] == 0);
    CHECK(n->layers[1].cell.kind == SOMA_NEURON_ALIF && n->layers[1].cell.reset == SOMA_RESET_ZERO &&
          n->layers[1].cell.threshold == 0.1f && n->layers[1].cell.beta_a == 1.8f &&
          n->layers[1].cell.surr.kind == SOMA_SURR_MULTIGAUSS);
    soma_net_free(n);
    /* fixed threshold: no tau_adp map */
    n = make_net("6-rltc8-3", 6, SOMA_READOUT_LI, SOMA_NEURON_LIF, 1);
    if (n) CHECK(find_tensor(n, "1.tau_adp.weight") < 0 && find_tensor(n, "1.tau_m.weight") >= 0);
    soma_net_free(n);
    soma_net_options o;
    soma_net_options_default(&o);
    o.in_c = 6; o.in_h = 1; o.in_w = 1;
    CHECK(soma_net_new(&n, "6-ltc8", &o) == SOMA_ERR_ARG);          /* output layer */
    CHECK(strstr(soma_last_error(), "output") != NULL);
    CHECK(soma_net_new(&n, "6-ltcx-3", &o) == SOMA_ERR_ARG);
    o.ltc.kind = SOMA_NEURON_LI;
    CHECK(soma_net_new(&n, "6-ltc8-3", &o) == SOMA_ERR_ARG);
    soma_net_options_default(&o);
    o.in_c = 6; o.in_h = 1; o.in_w = 1;
    o.ltc.threshold = -1;
    CHECK(soma_net_new(&n, "6-ltc8-3", &o) == SOMA_ERR_ARG);
}

static float sigm(float z) { return 1.0f / (1.0f + expf(-z)); }

/* Two steps of "3-rltc4-2" (LTC readout) against the equations in plain loops. */
static void test_forward(void)
{
    const int B = 2, D = 3, N = 4, C = 2;
    soma_net *n = make_net("3-rltc4-2", D, SOMA_READOUT_LTC, SOMA_NEURON_ALIF, 7);
    if (!n) return;
    /* larger biases and slopes so that some neurons spike */
    float *bias = soma__param_value(n, n->layers[0].b);
    for (int j = 0; j < N; j++) bias[j] = 0.4f + 0.1f * j;
    soma__param_value(n, n->layers[1].tm_k)[0] = 1.3f;
    soma__param_value(n, n->layers[1].ta_k)[0] = 0.7f;
    soma__param_value(n, n->layers[3].tm_k)[0] = 0.9f;
    CHECK(soma_net_prepare_time(n, B, 2) == SOMA_OK);
    CHECK(soma_net_reset_state(n, B, NULL) == SOMA_OK);
    float x[2][6] = { { 1.0f, -0.5f, 0.3f, 0.2f, 0.8f, -1.0f }, { 0.4f, 0.9f, -0.2f, 1.2f, -0.3f, 0.5f } };
    float u[8] = { 0 }, a[8] = { 0 }, s[8] = { 0 }, o[4] = { 0 };
    const float *W = soma__param_value(n, n->layers[0].w), *R = soma__param_value(n, n->layers[0].rec);
    const float *Wm = soma__param_value(n, n->layers[1].tm_w), *bm = soma__param_value(n, n->layers[1].tm_b);
    const float *Wa = soma__param_value(n, n->layers[1].ta_w), *ba = soma__param_value(n, n->layers[1].ta_b);
    const float *Wz = soma__param_value(n, n->layers[2].w), *bz = soma__param_value(n, n->layers[2].b);
    const float *Wo = soma__param_value(n, n->layers[3].tm_w), *bo = soma__param_value(n, n->layers[3].tm_b);
    float km = 1.3f, ka = 0.7f, ko = 0.9f;
    int spikes = 0;
    for (int t = 0; t < 2; t++) {
        const float *out;
        CHECK(soma_net_step(n, x[t], B, &out) == SOMA_OK);
        float un[8], an[8], sn[8], on[4];
        for (int bi = 0; bi < B; bi++) {
            float I[4], z[2];
            for (int j = 0; j < N; j++) {
                double acc = bias[j];
                for (int k = 0; k < D; k++) acc += (double)W[j * D + k] * x[t][bi * D + k];
                for (int k = 0; k < N; k++) acc += (double)R[j * N + k] * s[bi * N + k];
                I[j] = (float)acc;
            }
            for (int j = 0; j < N; j++) {
                double hm = bm[j], ha = ba[j];
                for (int k = 0; k < N; k++) {
                    hm += (double)Wm[j * 2 * N + k] * I[k] + (double)Wm[j * 2 * N + N + k] * u[bi * N + k];
                    ha += (double)Wa[j * 2 * N + k] * I[k] + (double)Wa[j * 2 * N + N + k] * a[bi * N + k];
                }
                float tm = sigm(km * (float)hm), ta = sigm(ka * (float)ha);
                int e = bi * N + j;
                an[e] = ta * a[e] + (1 - ta) * s[e];
                float th = 0.1f + 1.8f * an[e];
                float v = (1 - tm) * u[e] + tm * I[j];
                sn[e] = v > th ? 1.0f : 0.0f;
                un[e] = v * (1 - sn[e]);
                spikes += sn[e] != 0;
            }
            for (int c = 0; c < C; c++) {
                double acc = bz[c];
                for (int k = 0; k < N; k++) acc += (double)Wz[c * N + k] * sn[bi * N + k];
                z[c] = (float)acc;
            }
            for (int c = 0; c < C; c++) {
                double h = bo[c];
                for (int k = 0; k < C; k++)
                    h += (double)Wo[c * 2 * C + k] * z[k] + (double)Wo[c * 2 * C + C + k] * o[bi * C + k];
                float tau = sigm(ko * (float)h);
                on[bi * C + c] = (1 - tau) * o[bi * C + c] + tau * z[c];
            }
        }
        memcpy(u, un, sizeof u); memcpy(a, an, sizeof a); memcpy(s, sn, sizeof s); memcpy(o, on, sizeof o);
        soma_layer *l = &n->layers[1];
        int slot = soma__slot_of(n, t);
        char label[64];
        snprintf(label, sizeof label, "ltc forward u step %d", t);
        check_close_f(label, soma__slot(n, l, l->cu, slot), u, 8, 1e-5, 1e-6);
        snprintf(label, sizeof label, "ltc forward eta step %d", t);
        check_close_f(label, soma__slot(n, l, l->ca, slot), a, 8, 1e-5, 1e-6);
        snprintf(label, sizeof label, "ltc forward s step %d", t);
        check_close_f(label, soma__slot(n, l, l->out, slot), s, 8, 0, 0);
        snprintf(label, sizeof label, "ltc forward readout step %d", t);
        check_close_f(label, out, o, 4, 1e-5, 1e-6);
    }
    CHECK(spikes > 0);
    soma_net_free(n);
}

/* L = sum_t <out_t, r_t> over steps [t0, t1) of inputs xs (entered with
 * whatever state the net has). */
static double run_loss(soma_net *n, const float *xs, const float *r, int B, int D, int C, int t0, int t1)
{
    double L = 0;
    for (int t = t0; t < t1; t++) {
        const float *out;
        soma_net_step(n, xs + (size_t)t * B * D, B, &out);
        for (int i = 0; i < B * C; i++) L += (double)out[i] * r[(size_t)t * B * C + i];
    }
    return L;
}

/* Loss of the window [T0, T0 + K): the first T0 steps run with the saved
 * parameters w0 (so the entering state is a constant), the window with the
 * current ones. */
static double window_loss(soma_net *n, const float *w0, const float *xs, const float *r, int B, int D,
                          int C, int T0, int K)
{
    size_t np = soma_net_param_floats(n);
    float *w = soma_net_param_values(n);
    float *cur = malloc(np * sizeof(float));
    memcpy(cur, w, np * sizeof(float));
    memcpy(w, w0, np * sizeof(float));
    soma_net_reset_state(n, B, NULL);
    run_loss(n, xs, r, B, D, C, 0, T0);
    memcpy(w, cur, np * sizeof(float));
    free(cur);
    return run_loss(n, xs, r, B, D, C, T0, T0 + K);
}

/* BPTT over the last K steps of T0 + K against central differences of
 * window_loss along a random direction per tensor (T0 = 0: the whole
 * sequence from the reset). */
static void fd_ltc(const char *spec, soma_readout ro, soma_neuron_kind kind, int T0, int K)
{
    const int B = 3, D = 5;
    soma_net *n = make_net(spec, D, ro, kind, 11);
    if (!n) return;
    n->spike.fn = SOMA__SPIKE_SIGMOID;
    n->spike.k = 4.0f;
    /* slopes off 1 and biased rates so the k gradients are exercised */
    for (int i = 0; i < n->n_layers; i++) {
        soma_layer *l = &n->layers[i];
        if (l->tm_k >= 0) soma__param_value(n, l->tm_k)[0] = 1.2f;
        if (l->ta_k >= 0) soma__param_value(n, l->ta_k)[0] = 0.8f;
    }
    CHECK(soma_net_prepare_time(n, B, K) == SOMA_OK);
    int C = soma_net_outputs(n), T = T0 + K;
    soma_rng rng;
    soma_rng_seed(&rng, 5);
    float *xs = malloc(sizeof(float) * T * B * D), *r = malloc(sizeof(float) * T * B * C);
    for (int i = 0; i < T * B * D; i++) xs[i] = 1.5f * soma_rng_normal(&rng);
    for (int i = 0; i < T * B * C; i++) r[i] = soma_rng_normal(&rng);
    const float *dout[16];
    for (int j = 0; j < K; j++) dout[j] = r + (size_t)(T0 + j) * B * C;
    size_t np = soma_net_param_floats(n);
    float *w = soma_net_param_values(n), *g = malloc(sizeof(float) * np), *v = malloc(sizeof(float) * np);
    float *w0 = malloc(sizeof(float) * np);
    memcpy(w0, w, sizeof(float) * np);
    soma_net_reset_state(n, B, NULL);
    run_loss(n, xs, r, B, D, C, 0, T);
    soma_net_zero_grad(n);
    CHECK(soma_net_backward_time(n, K, dout, B, 0) == SOMA_OK);
    memcpy(g, soma_net_param_grads(n), sizeof(float) * np);
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
        double d[2];
        for (int h = 0; h < 2; h++) {
            float eps = h ? 5e-3f : 1e-2f;
            for (size_t k = 0; k < cnt; k++) p[k] = w0[off + k] + eps * v[k];
            double lp = window_loss(n, w0, xs, r, B, D, C, T0, K);
            for (size_t k = 0; k < cnt; k++) p[k] = w0[off + k] - eps * v[k];
            double lm = window_loss(n, w0, xs, r, B, D, C, T0, K);
            d[h] = (lp - lm) / (2.0 * eps);
        }
        memcpy(p, w0 + off, sizeof(float) * cnt);
        double fd = (4 * d[1] - d[0]) / 3;
        char label[160];
        snprintf(label, sizeof label, "ltc fd %s readout=%s %s T0=%d K=%d %s", spec, soma_readout_name(ro),
                 soma_neuron_name(kind), T0, K, name);
        check_close_d(label, &gv, &fd, 1, 2e-3, 2e-3);
    }
    free(g); free(v); free(w0); free(xs); free(r);
    soma_net_free(n);
}

int main(void)
{
    test_spec();
    test_forward();
    fd_ltc("5-rltc8-3", SOMA_READOUT_LI, SOMA_NEURON_ALIF, 0, 8);
    fd_ltc("5-rltc8-3", SOMA_READOUT_LTC, SOMA_NEURON_ALIF, 0, 8);
    fd_ltc("5-ltc6-rltc7-3", SOMA_READOUT_LTC, SOMA_NEURON_ALIF, 0, 6);
    fd_ltc("5-rltc8-3", SOMA_READOUT_LTC, SOMA_NEURON_LIF, 0, 8);
    fd_ltc("5-6-rltc8-3", SOMA_READOUT_LTC, SOMA_NEURON_ALIF, 0, 6);
    /* an FPTT-K window entered with a (constant) state: K = 4 after 5 steps */
    fd_ltc("5-rltc8-3", SOMA_READOUT_LTC, SOMA_NEURON_ALIF, 5, 4);
    fd_ltc("5-ltc6-rltc7-3", SOMA_READOUT_LI, SOMA_NEURON_ALIF, 3, 3);
    return check_report("test_ltc");
}
