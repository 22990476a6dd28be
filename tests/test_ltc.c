/*
 * test_ltc.c - Liquid-Time-Constant layers (ltcN, rltcN, the LTC readout):
 * spec parsing and parameter names, the forward step against a direct
 * evaluation of the equations (notes/fptt.md 2.1), and BPTT through LTC
 * nets against finite differences with a smooth spike (the sigmoid stand-in
 * of tests/test_snn.c's fd_bptt), for the whole sequence and for an FPTT-K
 * window entered with a state that is held constant; the conv cells' batchnorm
 * inside the tau maps (--ltc-map-bn) against golden values of
 * refs/fptt_ref.py, finite differences (training and evaluation), its
 * training/evaluation behaviour, checkpoints, FPTT and bad input.
 */
#include "check.h"
#include "net/net.h"
#include <stdio.h>

/* --ltc-map-bn for the nets make_net_chw builds (0: off, the default) */
static int test_map_bn;

static soma_net *make_net_chw(const char *spec, int c, int h, int w, soma_readout ro, soma_neuron_kind kind,
                              uint64_t seed)
{
    soma_net_options o;
    soma_net_options_default(&o);
    o.in_c = c; o.in_h = h; o.in_w = w;
    o.seed = seed;
    o.readout = ro;
    o.ltc.kind = kind;
    o.ltc.map_bn = test_map_bn;
    if (kind == SOMA_NEURON_LIF) o.ltc.threshold = 0.5f;  /* the adding-task variant */
    soma_net *n = NULL;
    if (!CHECK(soma_net_new(&n, spec, &o) == SOMA_OK)) fprintf(stderr, "%s: %s\n", spec, soma_last_error());
    return n;
}

static soma_net *make_net(const char *spec, int D, soma_readout ro, soma_neuron_kind kind, uint64_t seed)
{
    return make_net_chw(spec, D, 1, 1, ro, kind, seed);
}

/* tensor i of n: its values, name, element count and (when asked) whether it is a parameter */
static float *tensor_elems(soma_net *n, int i, const char **name, size_t *cnt, int *is_param)
{
    int64_t shape[4];
    int ndim;
    float *p = soma_net_tensor(n, i, name, &ndim, shape, is_param);
    *cnt = 1;
    for (int d = 0; d < ndim; d++) *cnt *= (size_t)shape[d];
    return p;
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

/* Two steps of "3-rltc4-2" (LTC readout) against the equations in plain loops;
 * uniform: the hidden cells start at u ~ U[0,1) (the reset's rng), eta = b0. */
static void test_forward(int uniform)
{
    const int B = 2, D = 3, N = 4, C = 2;
    soma_net *n = make_net("3-rltc4-2", D, SOMA_READOUT_LTC, SOMA_NEURON_ALIF, 7);
    if (!n) return;
    n->layers[1].cell.init = uniform ? SOMA_STATE_UNIFORM : SOMA_STATE_ZERO;
    /* larger biases and slopes so that some neurons spike */
    float *bias = soma__param_value(n, n->layers[0].b);
    for (int j = 0; j < N; j++) bias[j] = 0.4f + 0.1f * j;
    soma__param_value(n, n->layers[1].tm_k)[0] = 1.3f;
    soma__param_value(n, n->layers[1].ta_k)[0] = 0.7f;
    soma__param_value(n, n->layers[3].tm_k)[0] = 0.9f;
    CHECK(soma_net_prepare_time(n, B, 2) == SOMA_OK);
    soma_rng rng, ref;
    soma_rng_seed(&rng, 99);
    soma_rng_seed(&ref, 99);
    CHECK(soma_net_reset_state(n, B, &rng) == SOMA_OK);
    float x[2][6] = { { 1.0f, -0.5f, 0.3f, 0.2f, 0.8f, -1.0f }, { 0.4f, 0.9f, -0.2f, 1.2f, -0.3f, 0.5f } };
    float u[8] = { 0 }, a[8] = { 0 }, s[8] = { 0 }, o[4] = { 0 };
    if (uniform)
        for (int e = 0; e < B * N; e++) { u[e] = soma_rng_uniform(&ref); a[e] = 0.1f; }
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

/* --ltc-init: the default is zero (and needs no rng); uniform draws u from
 * the reset's rng (reproducible per seed, fresh per sequence), eta = b0,
 * s = 0, and leaves the readout at 0. */
static void test_init_state(void)
{
    const int B = 3, N = 5;
    soma_net_options o;
    soma_net_options_default(&o);
    CHECK(o.ltc.init == SOMA_STATE_ZERO && o.cell.init == SOMA_STATE_ZERO && o.readout_cell.init == SOMA_STATE_ZERO);
    soma_state_init k;
    CHECK(soma_state_init_from_name(&k, "uniform") == SOMA_OK && k == SOMA_STATE_UNIFORM);
    CHECK(soma_state_init_from_name(&k, "zero") == SOMA_OK && k == SOMA_STATE_ZERO);
    CHECK(soma_state_init_from_name(&k, "random") == SOMA_ERR_ARG);
    CHECK(!strcmp(soma_state_init_name(SOMA_STATE_UNIFORM), "uniform"));
    o.in_c = 4; o.in_h = 1; o.in_w = 1;
    o.readout = SOMA_READOUT_LTC;
    soma_net *n = NULL;
    o.ltc.init = (soma_state_init)7;
    CHECK(soma_net_new(&n, "4-rltc5-2", &o) == SOMA_ERR_ARG);
    /* default: all zero, no rng needed */
    o.ltc.init = SOMA_STATE_ZERO;
    if (!CHECK(soma_net_new(&n, "4-rltc5-2", &o) == SOMA_OK)) return;
    CHECK(soma_net_prepare_time(n, 4, 2) == SOMA_OK);
    CHECK(soma_net_reset_state(n, B, NULL) == SOMA_OK);
    soma_layer *l = &n->layers[1];
    int s0 = soma__slot_of(n, -1), nz = 0;
    for (int e = 0; e < B * N; e++)
        nz += soma__slot(n, l, l->cu, s0)[e] != 0 || soma__slot(n, l, l->ca, s0)[e] != 0;
    CHECK(nz == 0);
    soma_net_free(n);
    /* uniform */
    o.ltc.init = SOMA_STATE_UNIFORM;
    if (!CHECK(soma_net_new(&n, "4-rltc5-2", &o) == SOMA_OK)) return;
    CHECK(soma_net_prepare_time(n, 4, 2) == SOMA_OK);
    CHECK(soma_net_reset_state(n, B, NULL) == SOMA_ERR_ARG);
    CHECK(strstr(soma_last_error(), "rng") != NULL);
    l = &n->layers[1];
    CHECK(l->cell.init == SOMA_STATE_UNIFORM && n->layers[3].cell.init == SOMA_STATE_ZERO);
    soma_rng rng, ref;
    float first[15];
    const float x[12] = { 0.5f, -1, 0.2f, 0.7f, 1, 0.1f, -0.3f, 0.4f, -0.6f, 0.9f, 0, 0.3f };
    float y[2][6];
    for (int rep = 0; rep < 2; rep++) {
        soma_rng_seed(&rng, 1234);
        soma_rng_seed(&ref, 1234);
        CHECK(soma_net_reset_state(n, B, &rng) == SOMA_OK);
        const float *u = soma__slot(n, l, l->cu, s0), *a = soma__slot(n, l, l->ca, s0);
        const float *sp = soma__slot(n, l, l->out, s0), *ro = soma__slot(n, &n->layers[3], n->layers[3].out, s0);
        int bad = 0;
        for (int e = 0; e < B * N; e++) {
            float want = soma_rng_uniform(&ref);
            bad += u[e] != want || !(u[e] >= 0 && u[e] < 1) || a[e] != 0.1f || sp[e] != 0;
        }
        for (int e = 0; e < B * 2; e++) bad += ro[e] != 0;
        CHECK(bad == 0);
        if (rep == 0) memcpy(first, u, sizeof first);
        else CHECK(!memcmp(first, u, sizeof first));
        CHECK(memcmp(&rng, &ref, sizeof rng) == 0);   /* exactly B*N draws */
        const float *out;
        CHECK(soma_net_step(n, x, B, &out) == SOMA_OK);
        memcpy(y[rep], out, sizeof y[rep]);
    }
    CHECK(!memcmp(y[0], y[1], sizeof y[0]));
    /* a second sequence from the same rng starts elsewhere */
    CHECK(soma_net_reset_state(n, B, &rng) == SOMA_OK);
    CHECK(memcmp(first, soma__slot(n, l, l->cu, s0), sizeof first) != 0);
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
 * sequence from the reset).  map_bn: --ltc-map-bn of the conv cells;
 * train 0: evaluation mode (batchnorm with running statistics, drawn here
 * away from 0 / 1 so that they matter). */
static void fd_ltc_opt(const char *spec, int ic, int ih, int iw, soma_readout ro, soma_neuron_kind kind,
                       int T0, int K, float eps0, int map_bn, int train)
{
    const int B = 3, D = ic * ih * iw;
    test_map_bn = map_bn;
    soma_net *n = make_net_chw(spec, ic, ih, iw, ro, kind, 11);
    test_map_bn = 0;
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
    soma_net_set_train(n, train);   /* batchnorm: batch statistics of each step, or running ones */
    int C = soma_net_outputs(n), T = T0 + K;
    soma_rng rng;
    soma_rng_seed(&rng, 5);
    /* map BN affine off 1 / 0; in evaluation, running statistics off 0 / 1 */
    for (int i = 0; i < soma_net_tensor_count(n); i++) {
        const char *name;
        size_t cnt;
        float *p = tensor_elems(n, i, &name, &cnt, NULL);
        int g = strstr(name, ".bn.weight") != NULL, be = strstr(name, ".bn.bias") != NULL;
        int rm = !train && strstr(name, "running_mean") != NULL, rv = !train && strstr(name, "running_var") != NULL;
        for (size_t k = 0; k < cnt; k++) {
            if (g) p[k] = 1.0f + 0.3f * soma_rng_normal(&rng);
            if (be) p[k] = 0.3f * soma_rng_normal(&rng);
            if (rm) p[k] = 0.3f * soma_rng_normal(&rng);
            if (rv) p[k] = 0.5f + soma_rng_uniform(&rng);
        }
    }
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
        int is_param;
        size_t cnt;
        float *p = tensor_elems(n, i, &name, &cnt, &is_param);
        if (!is_param) continue;
        size_t off = (size_t)(p - w);
        double gv = 0;
        for (size_t k = 0; k < cnt; k++) { v[k] = soma_rng_normal(&rng); gv += (double)g[off + k] * v[k]; }
        double d[2];
        for (int h = 0; h < 2; h++) {
            float eps = h ? eps0 / 2 : eps0;
            for (size_t k = 0; k < cnt; k++) p[k] = w0[off + k] + eps * v[k];
            double lp = window_loss(n, w0, xs, r, B, D, C, T0, K);
            for (size_t k = 0; k < cnt; k++) p[k] = w0[off + k] - eps * v[k];
            double lm = window_loss(n, w0, xs, r, B, D, C, T0, K);
            d[h] = (lp - lm) / (2.0 * eps);
        }
        memcpy(p, w0 + off, sizeof(float) * cnt);
        double fd = (4 * d[1] - d[0]) / 3;
        char label[160];
        snprintf(label, sizeof label, "ltc fd %s readout=%s %s T0=%d K=%d map_bn=%d%s %s", spec,
                 soma_readout_name(ro), soma_neuron_name(kind), T0, K, map_bn, train ? "" : " eval", name);
        check_close_d(label, &gv, &fd, 1, 2e-3, 2e-3);
    }
    free(g); free(v); free(w0); free(xs); free(r);
    soma_net_free(n);
}

static void fd_ltc_chw(const char *spec, int ic, int ih, int iw, soma_readout ro, soma_neuron_kind kind,
                       int T0, int K, float eps0)
{
    fd_ltc_opt(spec, ic, ih, iw, ro, kind, T0, K, eps0, 0, 1);
}

static void fd_ltc(const char *spec, soma_readout ro, soma_neuron_kind kind, int T0, int K)
{
    fd_ltc_chw(spec, 5, 1, 1, ro, kind, T0, K, 1e-2f);
}

/* cltcKxC[sS][pP][mM]: layers, names, shapes, errors. */
static void test_conv_spec(void)
{
    soma_net *n = make_net_chw("cltc3x4p1m2-cltc3x3-5", 2, 6, 6, SOMA_READOUT_LTC, SOMA_NEURON_ALIF, 1);
    if (!n) return;
    CHECK(soma_net_is_spiking(n));
    CHECK(n->n_layers == 8);
    if (n->n_layers == 8) {
        CHECK(n->layers[0].kind == SOMA_LAYER_CONV && n->layers[0].out_h == 6 && n->layers[0].out_c == 4);
        CHECK(n->layers[1].kind == SOMA_LAYER_MAXPOOL && n->layers[1].out_h == 3);
        CHECK(n->layers[2].kind == SOMA_LAYER_CELL && n->layers[2].ltc == 2 && n->layers[2].out_size == 36 &&
              n->layers[2].cell.kind == SOMA_NEURON_ALIF);
        CHECK(n->layers[3].kind == SOMA_LAYER_CONV && n->layers[3].out_h == 1 && n->layers[3].out_c == 3);
        CHECK(n->layers[4].kind == SOMA_LAYER_CELL && n->layers[4].ltc == 2 && n->layers[4].k == 3);
        CHECK(n->layers[5].kind == SOMA_LAYER_FLATTEN && n->layers[6].kind == SOMA_LAYER_DENSE);
    }
    int64_t shape[4];
    int ndim = 0;
    int i = find_tensor(n, "2.tau_m.weight");
    if (CHECK(i >= 0)) {
        soma_net_tensor(n, i, NULL, &ndim, shape, NULL);
        CHECK(ndim == 4 && shape[0] == 4 && shape[1] == 4 && shape[2] == 3 && shape[3] == 3);
    }
    CHECK(find_tensor(n, "2.tau_m.bias") >= 0 && find_tensor(n, "2.tau_adp.weight") >= 0 &&
          find_tensor(n, "2.tau_adp.bias") >= 0 && find_tensor(n, "4.tau_m.weight") >= 0);
    CHECK(find_tensor(n, "2.tau_m.k") < 0 && find_tensor(n, "2.tau_adp.k") < 0);  /* no slope (2.4) */
    CHECK(find_tensor(n, "7.tau_m.k") >= 0);   /* the LTC readout keeps its dense map */
    soma_net_free(n);
    n = make_net_chw("cltc3x4p1-5", 1, 4, 4, SOMA_READOUT_LI, SOMA_NEURON_LIF, 1);
    if (n) CHECK(find_tensor(n, "1.tau_m.weight") >= 0 && find_tensor(n, "1.tau_adp.weight") < 0);
    soma_net_free(n);
    soma_net_options o;
    soma_net_options_default(&o);
    o.in_c = 1; o.in_h = 6; o.in_w = 6;
    const char *bads[] = { "cltc3x4", "cltc2x4-5", "cltc3x4m-5", "cltc3x4m2p1-5", "cltcx4-5", "8-cltc3x4-5" };
    for (size_t k = 0; k < sizeof bads / sizeof *bads; k++) {
        int ok = soma_net_new(&n, bads[k], &o) == SOMA_ERR_ARG;
        if (!ok) fprintf(stderr, "accepted bad spec %s\n", bads[k]);
        CHECK(ok);
    }
}

/* Two steps of "cltc3x2p1-3" on a 1x4x4 input against the equations of
 * notes/fptt.md 2.4 (no BN), with the core's naive conv as reference. */
static void test_conv_forward(int uniform)
{
    const int B = 2, H = 4, C = 2, M = C * H * H;
    soma_net *n = make_net_chw("cltc3x2p1-3", 1, H, H, SOMA_READOUT_LI, SOMA_NEURON_ALIF, 3);
    if (!n) return;
    soma_layer *l = &n->layers[1];
    l->cell.init = uniform ? SOMA_STATE_UNIFORM : SOMA_STATE_ZERO;
    float *b0 = soma__param_value(n, n->layers[0].b);
    b0[0] = 0.5f; b0[1] = 0.3f;   /* some spikes */
    CHECK(soma_net_prepare_time(n, B, 2) == SOMA_OK);
    soma_rng rng, ref;
    soma_rng_seed(&rng, 8);
    soma_rng_seed(&ref, 8);
    CHECK(soma_net_reset_state(n, B, &rng) == SOMA_OK);
    float x[2][32], u[64] = { 0 }, a[64] = { 0 }, s[64] = { 0 };
    for (int t = 0; t < 2; t++)
        for (int k = 0; k < 32; k++) x[t][k] = soma_rng_normal(&ref);
    soma_rng_seed(&ref, 8);
    if (uniform)
        for (int e = 0; e < B * M; e++) { u[e] = soma_rng_uniform(&ref); a[e] = 0.1f; }
    soma_conv_shape c0, cm;
    soma_conv_shape_init(&c0, B, 1, H, H, C, 3, 3, 1, 1);
    soma_conv_shape_init(&cm, B, C, H, H, C, 3, 3, 1, 1);
    int spikes = 0;
    for (int t = 0; t < 2; t++) {
        const float *out;
        CHECK(soma_net_step(n, x[t], B, &out) == SOMA_OK);
        float I[64], sm[64], sa[64], hm[64], ha[64];
        soma_conv2d_forward_naive(I, x[t], soma__param_value(n, n->layers[0].w), b0, &c0);
        for (int e = 0; e < B * M; e++) { sm[e] = I[e] + u[e]; sa[e] = I[e] + a[e]; }
        soma_conv2d_forward_naive(hm, sm, soma__param_value(n, l->tm_w), soma__param_value(n, l->tm_b), &cm);
        soma_conv2d_forward_naive(ha, sa, soma__param_value(n, l->ta_w), soma__param_value(n, l->ta_b), &cm);
        for (int e = 0; e < B * M; e++) {
            float tm = sigm(hm[e]), ta = sigm(ha[e]);
            a[e] = ta * a[e] + (1 - ta) * s[e];
            float th = 0.1f + 1.8f * a[e];
            float v = (1 - tm) * u[e] + tm * I[e];
            s[e] = v > th ? 1.0f : 0.0f;
            u[e] = v * (1 - s[e]);
            spikes += s[e] != 0;
        }
        int slot = soma__slot_of(n, t);
        char label[64];
        snprintf(label, sizeof label, "cltc forward u step %d init %d", t, uniform);
        check_close_f(label, soma__slot(n, l, l->cu, slot), u, B * M, 1e-5, 1e-6);
        snprintf(label, sizeof label, "cltc forward eta step %d init %d", t, uniform);
        check_close_f(label, soma__slot(n, l, l->ca, slot), a, B * M, 1e-5, 1e-6);
        snprintf(label, sizeof label, "cltc forward s step %d init %d", t, uniform);
        check_close_f(label, soma__slot(n, l, l->out, slot), s, B * M, 0, 0);
    }
    CHECK(spikes > 0);
    soma_net_free(n);
}

/* sbn / sbnN (the authors' SeparatedBatchNorm1d pair, notes/fptt.md 2.2):
 * I_t = BN(W x_t + b) + BN_rec(R s_{t-1}), each with its own affine and
 * running statistics; the output against the test's own double
 * computation from the dense layer's two currents, in training (batch
 * statistics) and evaluation (running ones); placement errors. */
static void test_sbn(void)
{
    const int B = 4, D = 3, N = 5, T = 4, S = 3;
    soma_net *n = make_net("3-rltc5-sbn3-2", D, SOMA_READOUT_LI, SOMA_NEURON_ALIF, 5);
    if (!n) return;
    if (!CHECK(n->n_layers == 5)) { soma_net_free(n); return; }
    soma_layer *dl = &n->layers[0], *bl = &n->layers[1];
    CHECK(dl->rec_sep == 1 && bl->bn_sep == 1 && bl->bn_steps == S && dl->rec_src == 2 && n->prefix == 0);
    const char *names[] = { "1.rec.weight", "1.rec.bias", "1.rec.running_mean", "1.rec.running_var" };
    for (int k = 0; k < 4; k++) CHECK(find_tensor(n, names[k]) >= 0);
    /* affines apart, away from the init, so a mix-up shows */
    float *g1 = soma__param_value(n, bl->w), *b1 = soma__param_value(n, bl->b);
    float *g2 = soma__param_value(n, bl->w2), *b2 = soma__param_value(n, bl->b2);
    for (int j = 0; j < N; j++) {
        g1[j] = 0.6f + 0.1f * j; b1[j] = 0.02f * j;
        g2[j] = 1.3f - 0.15f * j; b2[j] = -0.03f * j;
    }
    CHECK(soma_net_prepare_time(n, B, T) == SOMA_OK);
    soma_rng rng;
    soma_rng_seed(&rng, 9);
    float x[4][12];
    for (int t = 0; t < T; t++)
        for (int k = 0; k < B * D; k++) x[t][k] = 2.0f * soma_rng_normal(&rng);
    const float *rmean = n->buffers.value + n->buffers.p[bl->run_mean2].offset;
    const float *rvar = n->buffers.value + n->buffers.p[bl->run_var2].offset;
    for (int train = 1; train >= 0; train--) {
        soma_net_set_train(n, train);
        CHECK(soma_net_reset_state(n, B, NULL) == SOMA_OK);
        double worst = 0;
        int spiked = 0;
        for (int t = 0; t < T; t++) {
            /* R s_{t-1} and the rec running row before this step updates them */
            int r = t < S ? t : S - 1;
            double rm[5], rv[5], m1[5], v1[5];
            const float *rm1 = n->buffers.value + n->buffers.p[bl->run_mean].offset + r * N;
            const float *rv1 = n->buffers.value + n->buffers.p[bl->run_var].offset + r * N;
            for (int j = 0; j < N; j++) { rm[j] = rmean[r * N + j]; rv[j] = rvar[r * N + j]; m1[j] = rm1[j]; v1[j] = rv1[j]; }
            const float *out;
            CHECK(soma_net_step(n, x[t], B, &out) == SOMA_OK);
            int slot = soma__slot_of(n, t), ps = soma__slot_of(n, t - 1);
            const float *sp = soma__slot(n, &n->layers[2], n->layers[2].out, ps);
            const float *R = soma__param_value(n, dl->rec), *W = soma__param_value(n, dl->w);
            const float *bw = soma__param_value(n, dl->b);
            const float *y = soma__slot(n, bl, bl->out, slot);
            double I[4][5], Q[4][5];
            for (int bi = 0; bi < B; bi++)
                for (int j = 0; j < N; j++) {
                    double a = bw[j], q = 0;
                    for (int k = 0; k < D; k++) a += (double)W[j * D + k] * x[t][bi * D + k];
                    for (int k = 0; k < N; k++) { q += (double)R[j * N + k] * sp[bi * N + k]; spiked += sp[bi * N + k] != 0; }
                    I[bi][j] = a; Q[bi][j] = q;
                }
            for (int j = 0; j < N; j++) {
                double mi = 0, vi = 0, mq = 0, vq = 0;
                if (train) {
                    for (int bi = 0; bi < B; bi++) { mi += I[bi][j]; mq += Q[bi][j]; }
                    mi /= B; mq /= B;
                    for (int bi = 0; bi < B; bi++) {
                        vi += (I[bi][j] - mi) * (I[bi][j] - mi);
                        vq += (Q[bi][j] - mq) * (Q[bi][j] - mq);
                    }
                    vi /= B; vq /= B;
                } else {
                    mi = m1[j]; vi = v1[j]; mq = rm[j]; vq = rv[j];
                }
                for (int bi = 0; bi < B; bi++) {
                    double want = g1[j] * (I[bi][j] - mi) / sqrt(vi + 1e-5) + b1[j] +
                                  g2[j] * (Q[bi][j] - mq) / sqrt(vq + 1e-5) + b2[j];
                    double e = fabs(y[bi * N + j] - want) / (1e-3 + fabs(want));
                    if (e > worst) worst = e;
                }
            }
        }
        CHECK(spiked > 0);
        if (!CHECK(worst < 1e-4)) fprintf(stderr, "sbn %s: worst relative error %.3g\n", train ? "train" : "eval", worst);
    }
    CHECK(rvar[0] != 1.0f && rvar[0] != rvar[N]);   /* the recurrent statistics moved, per step */
    soma_net_free(n);
    /* placement: after a recurrent dense only */
    soma_net_options o;
    soma_net_options_default(&o);
    o.in_c = 3; o.in_h = o.in_w = 1;
    o.spiking = 1;
    o.readout = SOMA_READOUT_LI;
    const char *bads[] = { "3-ltc5-sbn-2", "3-8-sbn-2", "3-sbn-2" };
    for (size_t k = 0; k < sizeof bads / sizeof *bads; k++) {
        n = NULL;
        int ok = soma_net_new(&n, bads[k], &o) == SOMA_ERR_ARG && strstr(soma_last_error(), "sbn");
        if (!ok) fprintf(stderr, "sbn accepted in %s (%s)\n", bads[k], soma_last_error());
        CHECK(ok);
        soma_net_free(n);
    }
}

/* bn / bnN in temporal nets (notes/fptt.md 2.2): placement after ltc /
 * rltc / cltc tokens, the recurrent link, one affine, running statistics
 * per time step (train: updated from the step's batch; eval: used). */
static void test_bn_time(void)
{
    const int B = 4, D = 3, N = 5, T = 4, S = 3;
    soma_net *n = make_net("3-rltc5-bn3-2", D, SOMA_READOUT_LI, SOMA_NEURON_ALIF, 2);
    if (!n) return;
    CHECK(n->n_layers == 5);
    if (n->n_layers != 5) { soma_net_free(n); return; }
    CHECK(n->layers[0].kind == SOMA_LAYER_DENSE && n->layers[1].kind == SOMA_LAYER_BATCHNORM &&
          n->layers[2].kind == SOMA_LAYER_CELL && n->layers[2].ltc == 1 && n->layers[0].rec_src == 2);
    CHECK(n->layers[1].bn_steps == S && n->prefix == 0);
    int im = find_tensor(n, "1.running_mean"), iv = find_tensor(n, "1.running_var");
    int64_t shape[4];
    int ndim = 0;
    float *rm = NULL, *rv = NULL;
    if (CHECK(im >= 0 && iv >= 0)) {
        rm = soma_net_tensor(n, im, NULL, &ndim, shape, NULL);
        CHECK(ndim == 2 && shape[0] == S && shape[1] == N);
        rv = soma_net_tensor(n, iv, NULL, NULL, NULL, NULL);
        CHECK(rv[0] == 1 && rv[S * N - 1] == 1);
    }
    soma_net_tensor(n, find_tensor(n, "1.weight"), NULL, &ndim, shape, NULL);
    CHECK(ndim == 1 && shape[0] == N);
    CHECK(soma_net_prepare_time(n, B, T) == SOMA_OK);
    soma_net_set_train(n, 1);
    soma_rng rng;
    soma_rng_seed(&rng, 3);
    float x[4][12];
    for (int t = 0; t < T; t++)
        for (int k = 0; k < B * D; k++) x[t][k] = 2.0f * soma_rng_normal(&rng);
    CHECK(soma_net_reset_state(n, B, NULL) == SOMA_OK);
    /* expected rows: m = 0.1 mean_t, v = 0.9 + 0.1 var_t (unbiased); step 3 updates row 2 again */
    double em[3][5], ev[3][5];
    for (int r = 0; r < S; r++) for (int j = 0; j < N; j++) { em[r][j] = 0; ev[r][j] = 1; }
    for (int t = 0; t < T; t++) {
        const float *out;
        CHECK(soma_net_step(n, x[t], B, &out) == SOMA_OK);
        const float *I = soma__slot(n, &n->layers[0], n->layers[0].out, soma__slot_of(n, t));
        int r = t < S ? t : S - 1;
        for (int j = 0; j < N; j++) {
            double mu = 0, var = 0;
            for (int bi = 0; bi < B; bi++) mu += I[bi * N + j];
            mu /= B;
            for (int bi = 0; bi < B; bi++) var += (I[bi * N + j] - mu) * (I[bi * N + j] - mu);
            var /= B - 1;
            em[r][j] = 0.9 * em[r][j] + 0.1 * mu;
            ev[r][j] = 0.9 * ev[r][j] + 0.1 * var;
        }
    }
    if (rm && rv) {
        double got_m[15], got_v[15];
        for (int k = 0; k < S * N; k++) { got_m[k] = rm[k]; got_v[k] = rv[k]; }
        check_close_d("bnN running mean per step", got_m, &em[0][0], S * N, 1e-5, 1e-6);
        check_close_d("bnN running var per step", got_v, &ev[0][0], S * N, 1e-5, 1e-6);
    }
    /* eval: step t normalises with row min(t, S-1) */
    soma_net_set_train(n, 0);
    float *g = soma__param_value(n, n->layers[1].w), *be = soma__param_value(n, n->layers[1].b);
    for (int j = 0; j < N; j++) { g[j] = 0.5f + 0.1f * j; be[j] = 0.05f * j; }
    CHECK(soma_net_reset_state(n, B, NULL) == SOMA_OK);
    int bad = 0;
    for (int t = 0; t < T; t++) {
        const float *out;
        CHECK(soma_net_step(n, x[t], B, &out) == SOMA_OK);
        int slot = soma__slot_of(n, t), r = t < S ? t : S - 1;
        const float *I = soma__slot(n, &n->layers[0], n->layers[0].out, slot);
        const float *y = soma__slot(n, &n->layers[1], n->layers[1].out, slot);
        for (int bi = 0; bi < B; bi++)
            for (int j = 0; j < N; j++) {
                float want = g[j] * (I[bi * N + j] - rm[r * N + j]) / sqrtf(rv[r * N + j] + 1e-5f) + be[j];
                bad += fabsf(y[bi * N + j] - want) > 1e-5f * (1 + fabsf(want));
            }
    }
    CHECK(bad == 0);
    soma_net_free(n);
    /* placements: after a dense with --neuron cells, inside cltc (before its pool) */
    soma_net_options o;
    soma_net_options_default(&o);
    o.in_c = 1; o.in_h = 4; o.in_w = 4;
    o.spiking = 1;
    if (CHECK(soma_net_new(&n, "16-r6-bn-3", &o) == SOMA_OK)) {
        CHECK(n->layers[0].kind == SOMA_LAYER_FLATTEN || n->layers[0].kind == SOMA_LAYER_DENSE);
        int d = n->layers[0].kind == SOMA_LAYER_DENSE ? 0 : 1;
        CHECK(n->layers[d + 1].kind == SOMA_LAYER_BATCHNORM && n->layers[d + 1].bn_steps == 0 &&
              n->layers[d + 2].kind == SOMA_LAYER_CELL && n->layers[d].rec_src == d + 2);
        soma_net_free(n);
    }
    if (CHECK(soma_net_new(&n, "cltc3x2p1m2-bn6-3", &o) == SOMA_OK)) {
        CHECK(n->layers[0].kind == SOMA_LAYER_CONV && n->layers[1].kind == SOMA_LAYER_BATCHNORM &&
              n->layers[1].out_h == 4 && n->layers[1].out_c == 2 && n->layers[2].kind == SOMA_LAYER_MAXPOOL &&
              n->layers[3].kind == SOMA_LAYER_CELL && n->layers[3].ltc == 2);
        soma_net_free(n);
    }
    const char *bads[] = { "cltc3x2p1-bn-bn-3", "bn-16-3", "16-r6-bn0-3" };
    for (size_t k = 0; k < sizeof bads / sizeof *bads; k++) {
        int ok = soma_net_new(&n, bads[k], &o) == SOMA_ERR_ARG;
        if (!ok) fprintf(stderr, "accepted bad spec %s\n", bads[k]);
        CHECK(ok);
    }
    /* --bn-gamma: the initial scale of every bn layer (the S-MNIST net's 0.1), beta 0;
     * not the tau maps' BN; non-finite refused */
    o.bn_gamma = 0.1f;
    if (CHECK(soma_net_new(&n, "16-rltc5-bn3-2", &o) == SOMA_OK)) {
        int nb = 0, bad = 0;
        for (int i = 0; i < n->n_layers; i++) {
            const soma_layer *l = &n->layers[i];
            if (l->kind != SOMA_LAYER_BATCHNORM) continue;
            nb++;
            for (int c = 0; c < l->out_c; c++)
                bad += soma__param_value(n, l->w)[c] != 0.1f || soma__param_value(n, l->b)[c] != 0.0f;
        }
        CHECK(nb == 1 && bad == 0);
        soma_net_free(n);
    }
    o.bn_gamma = NAN;
    CHECK(soma_net_new(&n, "16-rltc5-bn3-2", &o) == SOMA_ERR_ARG && strstr(soma_last_error(), "--bn-gamma"));
    o.bn_gamma = 1.0f;
    o.spiking = 0;
    CHECK(soma_net_new(&n, "16-8-bn4-3", &o) == SOMA_ERR_ARG);   /* bnN: temporal only */
    CHECK(strstr(soma_last_error(), "temporal") != NULL);
}


/* ---- batchnorm inside the conv tau maps (--ltc-map-bn, notes/fptt.md 2.4) ---- */

static soma_net *map_bn_net(const char *spec, int c, int h, int w, soma_readout ro, soma_neuron_kind kind,
                            int map_bn, uint64_t seed)
{
    test_map_bn = map_bn;
    soma_net *n = make_net_chw(spec, c, h, w, ro, kind, seed);
    test_map_bn = 0;
    return n;
}

static float *tensor_by_name(soma_net *n, const char *name, int *ndim, int64_t *shape)
{
    int i = find_tensor(n, name);
    if (i < 0) { fprintf(stderr, "missing tensor %s\n", name); return NULL; }
    return soma_net_tensor(n, i, NULL, ndim, shape, NULL);
}

/* Names, shapes and init of the map BN tensors; the other parameters equal
 * the net's without it (no extra draws); the dense LTC maps get none; the
 * memory plan counts its caches; bad input. */
static void test_map_bn_spec(void)
{
    const char *spec = "cltc3x3p1m2-cltc3x2p1-4";
    soma_net *n0 = map_bn_net(spec, 1, 6, 6, SOMA_READOUT_NONE, SOMA_NEURON_ALIF, 0, 5);
    soma_net *n1 = map_bn_net(spec, 1, 6, 6, SOMA_READOUT_NONE, SOMA_NEURON_ALIF, 1, 5);
    soma_net *n3 = map_bn_net(spec, 1, 6, 6, SOMA_READOUT_NONE, SOMA_NEURON_ALIF, 3, 5);
    if (!n0 || !n1 || !n3) { soma_net_free(n0); soma_net_free(n1); soma_net_free(n3); return; }
    CHECK(find_tensor(n0, "2.tau_m.bn.weight") < 0 && n0->layers[2].mbn_w[0] < 0);
    CHECK(soma_net_tensor_count(n1) == soma_net_tensor_count(n0) + 16);   /* 2 cells x 2 maps x 4 */
    const char *maps[2] = { "tau_m", "tau_adp" };
    for (int c = 0; c < 2; c++)
        for (int m = 0; m < 2; m++) {
            int li = c ? 4 : 2, C = c ? 2 : 3;
            char name[64];
            int ndim;
            int64_t shape[4];
            snprintf(name, sizeof name, "%d.%s.bn.weight", li, maps[m]);
            float *g = tensor_by_name(n1, name, &ndim, shape);
            if (CHECK(g != NULL)) CHECK(ndim == 1 && shape[0] == C && g[0] == 1.0f && g[C - 1] == 1.0f);
            snprintf(name, sizeof name, "%d.%s.bn.bias", li, maps[m]);
            float *be = tensor_by_name(n1, name, &ndim, shape);
            if (CHECK(be != NULL)) CHECK(ndim == 1 && be[0] == 0.0f);
            snprintf(name, sizeof name, "%d.%s.bn.running_mean", li, maps[m]);
            float *rm = tensor_by_name(n1, name, &ndim, shape);
            if (CHECK(rm != NULL)) CHECK(ndim == 1 && shape[0] == C && rm[0] == 0.0f);
            float *rm3 = tensor_by_name(n3, name, &ndim, shape);
            if (CHECK(rm3 != NULL)) CHECK(ndim == 2 && shape[0] == 3 && shape[1] == C);
            snprintf(name, sizeof name, "%d.%s.bn.running_var", li, maps[m]);
            float *rv3 = tensor_by_name(n3, name, &ndim, shape);
            if (CHECK(rv3 != NULL)) CHECK(rv3[0] == 1.0f && rv3[3 * C - 1] == 1.0f);
        }
    /* every tensor of the net without it: same name, same values */
    int same = 1;
    for (int i = 0; i < soma_net_tensor_count(n0); i++) {
        const char *name;
        size_t cnt;
        float *a = tensor_elems(n0, i, &name, &cnt, NULL);
        float *b = tensor_by_name(n1, name, NULL, NULL);
        same &= b && !memcmp(a, b, cnt * sizeof(float));
    }
    CHECK(same);
    /* the plan: per map, xhat per slot and two (C) statistics per slot; one
     * more scratch (B, out_size) per cell */
    const int B = 3, K = 4, slots = K + 1;
    CHECK(soma_net_prepare_time(n0, B, K) == SOMA_OK && soma_net_prepare_time(n1, B, K) == SOMA_OK);
    size_t want = 0;
    for (int c = 0; c < 2; c++) {
        const soma_layer *l = &n1->layers[c ? 4 : 2];
        size_t one = (size_t)B * l->out_size;
        want += 2 * (slots * one + 2 * (size_t)slots * l->out_c) * sizeof(float) + one * sizeof(float);
    }
    CHECK(n1->act_bytes == n0->act_bytes + want);
    char desc[2048];
    soma_net_describe(n1, desc, sizeof desc);
    CHECK(strstr(desc, "ltc-alif+bn") != NULL);
    soma_net_free(n0); soma_net_free(n1); soma_net_free(n3);
    /* lif: only tau_m (and its BN); a dense ltc layer next to a cltc one gets none */
    soma_net *n = map_bn_net("cltc3x2p1-ltc5-3", 1, 4, 4, SOMA_READOUT_LTC, SOMA_NEURON_LIF, 1, 1);
    if (n) {
        CHECK(find_tensor(n, "1.tau_m.bn.weight") >= 0 && find_tensor(n, "1.tau_adp.bn.weight") < 0);
        CHECK(find_tensor(n, "4.tau_m.bn.weight") < 0 && n->layers[4].ltc == 1 && n->layers[4].cell.map_bn == 0);
        CHECK(find_tensor(n, "6.tau_m.bn.weight") < 0);   /* the ltc readout */
        soma_net_free(n);
    }
    /* bad input: no conv LTC cell, a negative value, the option on other cells */
    soma_net_options o;
    soma_net_options_default(&o);
    o.in_c = 1; o.in_h = 4; o.in_w = 4;
    o.ltc.map_bn = 1;
    n = NULL;
    const char *bads[] = { "16-ltc5-3", "16-rltc5-bn-3", "16-8-3", "conv3x2-3" };
    for (size_t k = 0; k < sizeof bads / sizeof *bads; k++) {
        int ok = soma_net_new(&n, bads[k], &o) == SOMA_ERR_ARG && strstr(soma_last_error(), "--ltc-map-bn") &&
                 strstr(soma_last_error(), "cltc");
        if (!ok) fprintf(stderr, "map_bn accepted on %s (%s)\n", bads[k], soma_last_error());
        CHECK(ok);
    }
    o.ltc.map_bn = -1;
    CHECK(soma_net_new(&n, "cltc3x2p1-3", &o) == SOMA_ERR_ARG && strstr(soma_last_error(), "map_bn"));
    o.ltc.map_bn = 0;
    o.cell.map_bn = 1;
    o.spiking = 1;
    CHECK(soma_net_new(&n, "cltc3x2p1-3", &o) == SOMA_ERR_ARG && strstr(soma_last_error(), "map_bn"));
    o.cell.map_bn = 0;
    o.readout_cell.map_bn = 2;
    CHECK(soma_net_new(&n, "cltc3x2p1-3", &o) == SOMA_ERR_ARG && strstr(soma_last_error(), "readout_cell"));
}

/* Golden values of refs/fptt_ref.py (float64): T steps of
 * "cltc3x3p1m2-cltc3x2p1-4" with the map BN in training (outputs, states,
 * the BPTT gradient of L = sum_t <out_t, r_t>, the running statistics after
 * the steps), then evaluation with those statistics (outputs, gradient). */
static void test_map_bn_golden(const char *path)
{
    soma_st *st;
    if (!CHECK(soma_st_read(&st, path) == SOMA_OK)) { fprintf(stderr, "%s\n", soma_last_error()); return; }
    const int T = atoi(soma_st_meta(st, "T")), mb = atoi(soma_st_meta(st, "map_bn")), B = 3, D = 36, O = 4;
    soma_net *n = map_bn_net(soma_st_meta(st, "spec"), 1, 6, 6, SOMA_READOUT_NONE, SOMA_NEURON_ALIF, mb, 1);
    if (!n || !CHECK(n->n_layers == 7 && T <= 8)) { soma_net_free(n); soma_st_free(st); return; }
    for (int mode = 0; mode < 2; mode++) {   /* 0: training, 1: evaluation */
        for (int i = 0; i < soma_net_tensor_count(n); i++) {
            const char *name;
            int is_param;
            float *v = soma_net_tensor(n, i, &name, NULL, NULL, &is_param);
            char key[96];
            snprintf(key, sizeof key, "%s.%s", mode && !is_param ? "run" : "init", name);
            const soma_st_tensor *t = soma_st_find(st, key);
            if (!CHECK(t != NULL)) { fprintf(stderr, "fixture tensor %s missing\n", key); continue; }
            memcpy(v, t->data, t->nbytes);
        }
        CHECK(soma_net_prepare_time(n, B, T) == SOMA_OK);
        soma_net_set_train(n, !mode);
        CHECK(soma_net_reset_state(n, B, NULL) == SOMA_OK);
        const float *x = soma_st_find(st, "x")->data, *r = soma_st_find(st, "r")->data;
        const float *dout[8];
        for (int t = 0; t < T; t++) {
            const float *out;
            if (!CHECK(soma_net_step(n, x + (size_t)t * B * D, B, &out) == SOMA_OK)) {
                fprintf(stderr, "%s\n", soma_last_error());
                break;
            }
            dout[t] = r + (size_t)t * B * O;
            char key[32], label[96];
            snprintf(key, sizeof key, "%sout%d", mode ? "ev" : "", t);
            snprintf(label, sizeof label, "map_bn=%d %s %s", mb, mode ? "eval" : "train", key);
            check_close_f(label, out, soma_st_find(st, key)->data, (size_t)B * O, 1e-4, 1e-5);
            if (mode) continue;
            int slot = soma__slot_of(n, t);
            const soma_layer *l2 = &n->layers[2], *l4 = &n->layers[4];
            snprintf(key, sizeof key, "u2.%d", t);
            snprintf(label, sizeof label, "map_bn=%d train %s", mb, key);
            check_close_f(label, soma__slot(n, l2, l2->cu, slot), soma_st_find(st, key)->data, (size_t)B * 27, 1e-4, 1e-5);
            snprintf(key, sizeof key, "eta2.%d", t);
            snprintf(label, sizeof label, "map_bn=%d train %s", mb, key);
            check_close_f(label, soma__slot(n, l2, l2->ca, slot), soma_st_find(st, key)->data, (size_t)B * 27, 1e-4, 1e-5);
            snprintf(key, sizeof key, "s4.%d", t);
            snprintf(label, sizeof label, "map_bn=%d train %s", mb, key);
            check_close_f(label, soma__slot(n, l4, l4->out, slot), soma_st_find(st, key)->data, (size_t)B * 18, 0, 0);
        }
        soma_net_zero_grad(n);
        CHECK(soma_net_backward_time(n, T, dout, B, 0) == SOMA_OK);
        for (int i = 0; i < soma_net_tensor_count(n); i++) {
            const char *name;
            int is_param;
            size_t cnt;
            float *v = tensor_elems(n, i, &name, &cnt, &is_param);
            char key[96], label[160];
            if (is_param) {
                snprintf(key, sizeof key, "%s.%s", mode ? "evgrad" : "grad", name);
                v = soma_net_param_grads(n) + (v - soma_net_param_values(n));
            } else {
                /* training: the statistics after the steps; evaluation: unchanged */
                snprintf(key, sizeof key, "run.%s", name);
            }
            const soma_st_tensor *t = soma_st_find(st, key);
            if (!CHECK(t != NULL && t->nbytes == cnt * sizeof(float))) continue;
            snprintf(label, sizeof label, "map_bn=%d %s %s", mb, mode ? "eval" : "train", key);
            if (is_param) check_close_f(label, v, t->data, cnt, 2e-4, 2e-5);
            else if (mode) CHECK(!memcmp(v, t->data, t->nbytes));
            else check_close_f(label, v, t->data, cnt, 1e-5, 1e-6);
        }
    }
    soma_net_free(n);
    soma_st_free(st);
}

/* Training vs evaluation: in training a sample's output depends on the rest
 * of its batch (batch statistics of every step) and the running statistics
 * move each step (by the step's batch mean and unbiased variance); in
 * evaluation neither.  One value per channel cannot be trained. */
static void test_map_bn_modes(void)
{
    const int B = 3, T = 3, D = 25;
    soma_net *n = map_bn_net("cltc3x2p1-3", 1, 5, 5, SOMA_READOUT_LI, SOMA_NEURON_ALIF, 1, 9);
    if (!n) return;
    CHECK(soma_net_prepare_time(n, B, T) == SOMA_OK);
    soma_rng rng;
    soma_rng_seed(&rng, 4);
    float x[3 * 25];
    for (int k = 0; k < B * D; k++) x[k] = 1.5f * soma_rng_normal(&rng);
    soma_layer *l = &n->layers[1];
    float *rm = soma__buffer_value(n, l->mbn_rm[0]), *rv = soma__buffer_value(n, l->mbn_rv[0]);
    const int C = l->out_c;
    const double cnt = (double)B * l->out_h * l->out_w;
    float y[2][2][3];   /* [mode][batch 3 or 1][first sample's outputs] */
    for (int mode = 0; mode < 2; mode++)
        for (int one = 0; one < 2; one++) {
            int b = one ? 1 : B;
            soma_net_set_train(n, !mode);
            CHECK(soma_net_reset_state(n, b, NULL) == SOMA_OK);
            const float *out = NULL;
            int moved_ok = 1;
            for (int t = 0; t < T; t++) {
                float pm[8], pv[8];
                memcpy(pm, rm, C * sizeof(float));
                memcpy(pv, rv, C * sizeof(float));
                CHECK(soma_net_step(n, x, b, &out) == SOMA_OK);
                const int slot = soma__slot_of(n, t);
                const float *mu = l->mbn[0].mean + (size_t)slot * C, *is = l->mbn[0].invstd + (size_t)slot * C;
                double n_ = one ? cnt / B : cnt;
                for (int c = 0; c < C; c++) {
                    if (mode) { moved_ok &= rm[c] == pm[c] && rv[c] == pv[c] && mu[c] == pm[c]; continue; }
                    double var = 1.0 / ((double)is[c] * is[c]) - 1e-5;
                    double wm = 0.9 * pm[c] + 0.1 * mu[c], wv = 0.9 * pv[c] + 0.1 * var * n_ / (n_ - 1);
                    moved_ok &= fabs(rm[c] - wm) <= 1e-5 * (1 + fabs(wm)) && fabs(rv[c] - wv) <= 1e-4 * (1 + fabs(wv)) &&
                                rm[c] != pm[c];
                }
            }
            if (!CHECK(moved_ok)) fprintf(stderr, "map bn running statistics, mode %d batch %d\n", mode, b);
            memcpy(y[mode][one], out, 3 * sizeof(float));
        }
    float d_train = 0;
    for (int k = 0; k < 3; k++) d_train += fabsf(y[0][0][k] - y[0][1][k]);
    CHECK(d_train > 1e-3f);                                   /* training: the batch matters */
    check_close_f("map bn eval: batch-independent", y[1][1], y[1][0], 3, 1e-5, 1e-6);
    soma_net_free(n);
    /* a 1x1 map at batch 1: one value per channel */
    n = map_bn_net("cltc1x2-3", 1, 1, 1, SOMA_READOUT_LI, SOMA_NEURON_ALIF, 1, 1);
    if (!n) return;
    CHECK(soma_net_prepare_time(n, 2, 2) == SOMA_OK);
    const float *out;
    soma_net_set_train(n, 1);
    CHECK(soma_net_reset_state(n, 1, NULL) == SOMA_OK);
    CHECK(soma_net_step(n, x, 1, &out) == SOMA_ERR_ARG && strstr(soma_last_error(), "map_bn"));
    CHECK(soma_net_reset_state(n, 2, NULL) == SOMA_OK && soma_net_step(n, x, 2, &out) == SOMA_OK);
    soma_net_set_train(n, 0);
    CHECK(soma_net_reset_state(n, 1, NULL) == SOMA_OK && soma_net_step(n, x, 1, &out) == SOMA_OK);
    soma_net_free(n);
}

/* Checkpoints: the option (soma.ltc_cell map_bn=N) and the map BN tensors
 * come back; a net without it writes no map_bn field. */
static void test_map_bn_checkpoint(void)
{
    const int B = 2, T = 4, D = 16;
    const char *path = "build/test_ltc_map_bn.st";
    for (int mb = 0; mb < 4; mb += 3) {
        soma_net *n = map_bn_net("cltc3x2p1-rltc5-3", 1, 4, 4, SOMA_READOUT_LTC, SOMA_NEURON_ALIF, mb, 3);
        if (!n) return;
        CHECK(soma_net_prepare_time(n, B, T) == SOMA_OK);
        soma_net_set_train(n, 1);
        soma_rng rng;
        soma_rng_seed(&rng, 1);
        float x[2 * 16], r[2 * 3];
        for (int k = 0; k < B * D; k++) x[k] = soma_rng_normal(&rng);
        for (int k = 0; k < B * 3; k++) r[k] = soma_rng_normal(&rng);
        const float *out, *dout[4] = { r, r, r, r };
        CHECK(soma_net_reset_state(n, B, NULL) == SOMA_OK);
        for (int t = 0; t < T; t++) CHECK(soma_net_step(n, x, B, &out) == SOMA_OK);
        soma_net_zero_grad(n);
        CHECK(soma_net_backward_time(n, T, dout, B, 0) == SOMA_OK);
        float *w = soma_net_param_values(n);
        const float *g = soma_net_param_grads(n);
        for (size_t k = 0; k < soma_net_param_floats(n); k++) w[k] -= 0.1f * g[k];   /* move the affine */
        CHECK(soma_checkpoint_save(path, n, NULL, NULL, 0) == SOMA_OK);
        soma_st *raw;
        if (CHECK(soma_st_read(&raw, path) == SOMA_OK)) {
            const char *lc = soma_st_meta(raw, "soma.ltc_cell");
            CHECK(lc && (mb ? strstr(lc, "map_bn=3") != NULL : strstr(lc, "map_bn") == NULL));
            soma_st_free(raw);
        }
        soma_net *m;
        soma_st *st;
        if (!CHECK(soma_checkpoint_load(&m, &st, path) == SOMA_OK)) {
            fprintf(stderr, "%s\n", soma_last_error());
            soma_net_free(n);
            continue;
        }
        CHECK(m->opts.ltc.map_bn == mb && m->layers[1].cell.map_bn == mb && (m->layers[1].mbn_w[1] >= 0) == (mb > 0));
        CHECK(soma_net_tensor_count(m) == soma_net_tensor_count(n));
        int same = 1, bn_seen = 0;
        for (int i = 0; i < soma_net_tensor_count(n); i++) {
            const char *na, *nb;
            size_t cnt;
            float *va = tensor_elems(n, i, &na, &cnt, NULL);
            float *vb = soma_net_tensor(m, i, &nb, NULL, NULL, NULL);
            same &= !strcmp(na, nb) && !memcmp(va, vb, cnt * sizeof(float));
            bn_seen += strstr(na, ".bn.") != NULL;
        }
        CHECK(same && bn_seen == (mb ? 8 : 0));
        /* the restored net runs the same in evaluation */
        float y[2][6];
        soma_net *nm[2] = { n, m };
        for (int k = 0; k < 2; k++) {
            CHECK(soma_net_prepare_time(nm[k], B, T) == SOMA_OK);
            soma_net_set_train(nm[k], 0);
            CHECK(soma_net_reset_state(nm[k], B, NULL) == SOMA_OK);
            for (int t = 0; t < T; t++) CHECK(soma_net_step(nm[k], x, B, &out) == SOMA_OK);
            memcpy(y[k], out, sizeof y[k]);
        }
        CHECK(!memcmp(y[0], y[1], sizeof y[0]));
        soma_net_free(m);
        soma_st_free(st);
        soma_net_free(n);
    }
    remove(path);
}

/* FPTT picks the map BN affine up like every parameter (W-bar, lambda), and
 * with K = T and a tiny alpha one FPTT update equals a BPTT update. */
static void test_map_bn_fptt(void)
{
    const int T = 4, B = 2, D = 16;
    soma_rule_config c;
    soma_rule_config_default(&c);
    soma_optim_config_default(&c.optim, SOMA_OPTIM_ADAM);
    c.optim.lr = 1e-2f;
    c.clip_norm = 1.0f;
    c.T = T;
    c.fptt_k = T;
    c.fptt_alpha = 1e-6f;
    c.fptt_beta = 0.5f;
    c.encoding = SOMA_ENC_FRAMES;
    c.sample_size = T * D;
    c.reduce = SOMA_REDUCE_LAST;
    float x[2 * 4 * 16];
    int32_t y[2] = { 0, 2 };
    soma_rng rng;
    soma_rng_seed(&rng, 6);
    for (int k = 0; k < B * T * D; k++) x[k] = soma_rng_uniform(&rng);
    soma_batch b = { .n = B, .c = T * D, .h = 1, .w = 1, .x = x, .y = y };
    soma_net *n[2];
    soma_rule *r[2];
    const char *rules[2] = { "fptt", "bptt" };
    for (int i = 0; i < 2; i++) {
        n[i] = map_bn_net("cltc3x2p1-rltc6-3", 1, 4, 4, SOMA_READOUT_LTC, SOMA_NEURON_ALIF, 2, 4);
        if (!n[i] || !CHECK(soma_rule_new(&r[i], rules[i], n[i], &c, B) == SOMA_OK)) {
            for (int k = 0; k <= i; k++) soma_net_free(n[k]);
            for (int k = 0; k < i; k++) soma_rule_free(r[k]);
            return;
        }
    }
    const char *want[] = { "fptt.wbar.1.tau_m.bn.weight", "fptt.lam.1.tau_m.bn.bias",
                           "fptt.wbar.1.tau_adp.bn.bias", "fptt.lam.1.tau_adp.bn.weight" };
    for (size_t k = 0; k < sizeof want / sizeof *want; k++) CHECK(find_tensor(n[0], want[k]) >= 0);
    CHECK(find_tensor(n[0], "fptt.wbar.1.tau_m.bn.running_mean") < 0);   /* buffers are not parameters */
    float *wb = tensor_by_name(n[0], "fptt.wbar.1.tau_m.bn.weight", NULL, NULL);
    if (wb) CHECK(wb[0] == 1.0f && wb[1] == 1.0f);   /* W-bar starts at W */
    for (int i = 0; i < 2; i++) {
        soma_net_set_train(n[i], 1);
        CHECK(soma_rule_train_batch(r[i], &b, 1e-2f, NULL, NULL) == SOMA_OK);
    }
    size_t np = soma_net_param_floats(n[0]);
    check_close_f("map bn: fptt K=T == bptt", soma_net_param_values(n[1]), soma_net_param_values(n[0]), np, 1e-6, 1e-8);
    const float *g0 = tensor_by_name(n[0], "1.tau_m.bn.weight", NULL, NULL);
    CHECK(g0 && g0[0] != 1.0f);   /* the affine trained */
    for (int i = 0; i < 2; i++) { soma_rule_free(r[i]); soma_net_free(n[i]); }
}

int main(void)
{
    test_spec();
    test_forward(0);
    test_forward(1);
    test_init_state();
    fd_ltc("5-rltc8-3", SOMA_READOUT_LI, SOMA_NEURON_ALIF, 0, 8);
    fd_ltc("5-rltc8-3", SOMA_READOUT_LTC, SOMA_NEURON_ALIF, 0, 8);
    fd_ltc("5-ltc6-rltc7-3", SOMA_READOUT_LTC, SOMA_NEURON_ALIF, 0, 6);
    fd_ltc("5-rltc8-3", SOMA_READOUT_LTC, SOMA_NEURON_LIF, 0, 8);
    fd_ltc("5-6-rltc8-3", SOMA_READOUT_LTC, SOMA_NEURON_ALIF, 0, 6);
    /* an FPTT-K window entered with a (constant) state: K = 4 after 5 steps */
    fd_ltc("5-rltc8-3", SOMA_READOUT_LTC, SOMA_NEURON_ALIF, 5, 4);
    fd_ltc("5-ltc6-rltc7-3", SOMA_READOUT_LI, SOMA_NEURON_ALIF, 3, 3);
    /* convolutional LTC cells (notes/fptt.md 2.4, no BN) */
    test_conv_spec();
    test_conv_forward(0);
    test_conv_forward(1);
    fd_ltc_chw("cltc3x3p1-cltc3x2-4", 2, 5, 5, SOMA_READOUT_LTC, SOMA_NEURON_ALIF, 0, 5, 1e-2f);
    /* smaller steps: a larger one moves the max pool's argmax (not smooth) */
    fd_ltc_chw("cltc3x3p1m2-4", 2, 5, 5, SOMA_READOUT_LI, SOMA_NEURON_ALIF, 0, 5, 1e-3f);
    fd_ltc_chw("cltc3x3p1-4", 1, 4, 4, SOMA_READOUT_LTC, SOMA_NEURON_LIF, 0, 5, 1e-2f);
    fd_ltc_chw("cltc3x3p1-cltc3x2-4", 2, 5, 5, SOMA_READOUT_LTC, SOMA_NEURON_ALIF, 3, 3, 1e-2f);   /* FPTT-K window */
    /* per-time-step batchnorm (notes/fptt.md 2.2), batch statistics in training */
    test_bn_time();
    fd_ltc("5-rltc8-bn4-3", SOMA_READOUT_LTC, SOMA_NEURON_ALIF, 0, 6);
    fd_ltc("5-ltc6-bn-rltc7-bn3-3", SOMA_READOUT_LI, SOMA_NEURON_ALIF, 3, 3);
    test_sbn();
    /* a small step: batchnorm of a batch of 3 sparse recurrent currents is steep (small
     * variances): 1e-2 leaves the linear range, 1e-4 drowns in float noise */
    fd_ltc_chw("5-rltc8-sbn4-3", 5, 1, 1, SOMA_READOUT_LTC, SOMA_NEURON_ALIF, 0, 6, 1e-3f);
    fd_ltc_chw("5-ltc6-bn-rltc7-sbn3-3", 5, 1, 1, SOMA_READOUT_LI, SOMA_NEURON_ALIF, 3, 3, 3e-3f);
    fd_ltc_chw("5-rltc8-sbn4-3", 5, 1, 1, SOMA_READOUT_LTC, SOMA_NEURON_LIF, 0, 6, 1e-3f);
    fd_ltc_chw("cltc3x3p1-bn2-4", 2, 4, 4, SOMA_READOUT_LTC, SOMA_NEURON_ALIF, 0, 4, 1e-2f);
    /* batchnorm inside the conv tau maps (--ltc-map-bn, notes/fptt.md 2.4) */
    test_map_bn_spec();
    test_map_bn_golden("tests/fixtures/ltc_map_bn.safetensors");
    test_map_bn_golden("tests/fixtures/ltc_map_bn_steps.safetensors");
    test_map_bn_modes();
    test_map_bn_checkpoint();
    test_map_bn_fptt();
    /* 3e-3: with batch statistics the loss is scale-invariant in each map's conv
     * weight, curved enough that 1e-2 misses 1.tau_m.weight's slope by 13 % */
    fd_ltc_opt("cltc3x3p1-cltc3x2-4", 2, 5, 5, SOMA_READOUT_LTC, SOMA_NEURON_ALIF, 0, 5, 3e-3f, 1, 1);
    fd_ltc_opt("cltc3x3p1-cltc3x2-4", 2, 5, 5, SOMA_READOUT_LTC, SOMA_NEURON_ALIF, 0, 5, 1e-2f, 1, 0);
    fd_ltc_opt("cltc3x3p1-cltc3x2-4", 2, 5, 5, SOMA_READOUT_LI, SOMA_NEURON_ALIF, 0, 5, 1e-2f, 3, 0);
    fd_ltc_opt("cltc3x3p1-cltc3x2-4", 2, 5, 5, SOMA_READOUT_LTC, SOMA_NEURON_ALIF, 3, 3, 1e-2f, 1, 1);  /* FPTT-K window */
    fd_ltc_opt("cltc3x3p1m2-4", 2, 5, 5, SOMA_READOUT_LI, SOMA_NEURON_ALIF, 0, 5, 1e-3f, 1, 1);
    fd_ltc_opt("cltc3x3p1-4", 1, 4, 4, SOMA_READOUT_LTC, SOMA_NEURON_LIF, 0, 5, 1e-2f, 1, 1);
    fd_ltc_opt("cltc3x3p1-bn2-4", 2, 4, 4, SOMA_READOUT_LTC, SOMA_NEURON_ALIF, 0, 4, 1e-2f, 2, 1);
    return check_report("test_ltc");
}
