/*
 * ide.c - feedback spiking networks trained by implicit differentiation on
 * the equilibrium state of their average firing rates (Xiao, Meng, Zhang,
 * Wang, Lin, NeurIPS 2021; notes: shared/notes/ide.md; docs/ide.md).
 *
 * Network, over the net's dense layers D_1..D_L (L >= 2): hidden layers
 * 1..H = L - 1, the input map F = D_1 (n0 -> n1, bias), feed-forward maps
 * S_k = D_k (n_{k-1} -> n_k, bias) for k = 2..H, the readout D_L on the
 * last hidden layer's rates, and a feedback matrix W (n1, nH) without bias
 * from layer H back to layer 1, stored as "<i>.weight_fb" beside the first
 * dense layer i.  H = 1 is the single-layer form (W square).
 *
 * Forward, no graph kept, constant input current F x + b_1 (direct input),
 * T steps of IF / LIF with threshold V, test u >= V, reset by subtraction:
 *   layer 1:  u_1 += W s_H(t-1) + F x + b_1     (no feedback at t = 0)
 *   layer k:  u_k += S_k s_{k-1}(t) + b_k       (k = 2..H, same step, in order)
 *   each:     s = [u >= V];  u = u - V s;  LIF: u = lambda u
 *   a_T = sum_t lambda^(T-1-t) s_H(t) / sum_{k<T} lambda^k   (IF: lambda = 1)
 * Prediction: logits = D_L(a_T).
 *
 * Spike input (cfg.encoding frames, e.g. N-MNIST): a sample is T frames
 * x_0..x_{T-1} of n0 values (frame t contiguous); layer 1 gets F x_t + b_1
 * at step t instead of the constant current, and the map f below takes the
 * average input x-bar = sum_t lambda^(T-1-t) x_t / sum_{k<T} lambda^k,
 * weighted as the rates are (IF: the mean; notes 2.2).  F is affine, so
 * F x-bar + b_1 is the same average of the per-step currents.  Only x-bar,
 * one gathered frame and its current are kept: memory stays flat in T.
 *
 * Equilibrium map (the same for IF and LIF):
 *   f(a) = a_H,  a_1 = clamp((W a + F x + b_1) / V, 0, 1),
 *                a_k = clamp((S_k a_{k-1} + b_k) / V, 0, 1)
 * Backward at a = a_T, with g = dL/da from the readout:
 *   beta solves (I - J^T) beta = g,  J = df/da(a_T)   (clamp' = 1 on [0, 1])
 *   dL/dtheta = beta^T df(a_T)/dtheta    (one VJP of f; the readout: its own)
 * by limited-memory good Broyden per sample (the authors' solver: inverse
 * Jacobian estimate -I + U V^T, 27 pairs, step 1, best iterate kept), or by
 * the damped fixed-point iteration beta <- (1-d) beta + d (J^T beta + g)
 * (the correct form: the reference's halved one solves (2I - J^T) beta = g).
 * Unlike the authors' code the first Broyden step is the Newton step of the
 * initial estimate (+G, the fixed-point step), and the multi-layer Jacobian
 * is taken at a_T, not at f(a_T).
 *
 * Convolutional form (the net's first layer is a conv): H = 1, F = that conv
 * (+ bias), the rates the (C, OH, OW) map of its output, W a conv kernel
 * "<i>.weight_fb" (C, C, K, K), stride 1, pad K/2, no bias (K = ide_fb_k,
 * odd; 0 = F's kernel), the readout the one dense layer after the flatten.
 * W a is soma_conv2d_forward; W^T v (the Jacobian products) is the conv
 * backward's dx path, the transposed convolution; dL/dw its dw path.
 *
 * F's batchnorm (a bn right after F, as in F400 / F64C5; notes 2.5): with
 * constant input F x is the same at every step, so its batch statistics are
 * computed once per batch and stay fixed through the simulation, the map and
 * the solve (F is not in J); the running statistics are updated once per
 * training batch (the authors' code does it twice: its save/restore is a
 * no-op), the parameter VJP goes through the batch statistics, prediction
 * uses the running ones.  Spike input: the statistics are those of
 * F x-bar + b_1 (the authors' code: the linear response to the weighted
 * average input, computed once), applied to every step's F x_t + b_1 and
 * used by f; unlike the authors' simulation (unbiased variance, eps 1e-8)
 * the normalisation is the layer's own (biased variance, its eps), the same
 * as in f, so constant frames reproduce the static path exactly.
 *
 * Spectral norm (ide_sn): W = clamp(alpha, -c, c) w / sigma, sigma = u^T w v
 * after one power iteration v = w^T u / |.|, u = w v / |.| per training
 * batch (u, v persistent buffers, no gradient through them); alpha starts
 * at sigma(w) (10 power iterations).  Predict reuses u, v unchanged.  Conv
 * form: the power iteration runs on the conv operator (forward and its
 * adjoint), so sigma is its operator norm (the authors': the reshaped
 * kernel's norm, which does not bound the operator).
 * Every product goes through soma_gemm / soma_dense_*.
 */
#include "ide.h"
#include <math.h>
#include <string.h>

void soma_ide_config_default(soma_rule_config *c)
{
    c->ide_vth = 2.0f;
    c->ide_leak = 1.0f;
    c->ide_iter = 0;
    c->ide_max_iter = 30;
    c->ide_tol = 1e-6f;
    c->ide_damp = 0.5f;
    c->ide_strict = 0;
    c->ide_sn = 1;
    c->ide_sn_c = 1.0f;
    c->ide_fb_k = 0;
}

static soma_status check_config(const soma_rule_config *c)
{
    if (c->T < 1) return soma__fail(SOMA_ERR_ARG, "IDE needs T >= 1 simulation steps, got %d", c->T);
    if (!(c->ide_vth > 0.0f) || !isfinite(c->ide_vth))
        return soma__fail(SOMA_ERR_ARG, "IDE threshold V_th must be > 0 and finite, got %g", c->ide_vth);
    if (!(c->ide_leak > 0.0f && c->ide_leak <= 1.0f))
        return soma__fail(SOMA_ERR_ARG, "IDE leak lambda must be in (0, 1] (1 = IF), got %g", c->ide_leak);
    if (c->ide_max_iter < 1)
        return soma__fail(SOMA_ERR_ARG, "IDE solver iterations must be >= 1, got %d", c->ide_max_iter);
    if (!(c->ide_tol > 0.0f) || !isfinite(c->ide_tol))
        return soma__fail(SOMA_ERR_ARG, "IDE solver tolerance must be > 0, got %g", c->ide_tol);
    if (!(c->ide_damp > 0.0f && c->ide_damp <= 1.0f))
        return soma__fail(SOMA_ERR_ARG, "IDE fixed-point damping must be in (0, 1], got %g", c->ide_damp);
    if (c->ide_sn && (!(c->ide_sn_c > 0.0f) || !isfinite(c->ide_sn_c)))
        return soma__fail(SOMA_ERR_ARG, "IDE spectral-norm clip c must be > 0, got %g", c->ide_sn_c);
    if (c->ide_fb_k < 0 || (c->ide_fb_k > 0 && c->ide_fb_k % 2 == 0))
        return soma__fail(SOMA_ERR_ARG, "IDE conv feedback kernel must be odd (same-size output "
                          "with pad K/2), or 0 for F's kernel; got %d", c->ide_fb_k);
    return SOMA_OK;
}

/* Finds tensor `name` or adds it; SOMA_ERR_SHAPE if it exists with another shape. */
static int find_or_add(soma_net *n, int is_param, const char *name, int ndim, const int64_t *shape,
                       int *created)
{
    soma_store *s = is_param ? &n->params : &n->buffers;
    *created = 0;
    for (int i = 0; i < s->count; i++) {
        if (strcmp(s->p[i].name, name)) continue;
        int same = s->p[i].ndim == ndim;
        for (int d = 0; same && d < ndim; d++) same = s->p[i].shape[d] == shape[d];
        if (!same) {
            char want[64] = "";
            for (int d = 0; d < ndim; d++)
                snprintf(want + strlen(want), sizeof want - strlen(want), "%s%lld", d ? "x" : "",
                         (long long)shape[d]);
            return soma__fail(SOMA_ERR_SHAPE, "rule ide: tensor '%s' exists with another shape "
                              "(the feedback matrix must be %s: last hidden layer -> first)", name, want);
        }
        return i;
    }
    *created = 1;
    return soma__net_add_tensor(n, is_param, name, ndim, shape);
}

/* ---- spectral norm ------------------------------------------------------- */

static double normalize(float *x, int n)
{
    double ss = 0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    double nrm = sqrt(ss);
    double inv = 1.0 / (nrm > 1e-12 ? nrm : 1e-12);   /* torch F.normalize eps */
    for (int i = 0; i < n; i++) x[i] = (float)(x[i] * inv);
    return nrm;
}

/* The conv feedback operator on one sample (B = 1) */
static soma_conv_shape one_sample(soma_conv_shape s)
{
    s.B = 1;
    return s;
}

/* One power iteration on the feedback operator: v = W^T u / |.|, u = W v / |.|.
 * Dense: W = w (m, n).  Conv: W is the convolution by the kernel w on a
 * (C, OH, OW) map and W^T its adjoint, the transposed convolution, i.e. the
 * conv backward's dx path (so sigma is the operator norm of the conv, not
 * the norm of the reshaped kernel as in the authors' code, notes 2.4). */
static void power_iter(ide_state *e, const float *w, float *u, float *v)
{
    int m = e->n[1], n = e->n[e->H];
    if (e->conv) {
        soma_conv_shape s = one_sample(e->wcs);
        memset(v, 0, (size_t)n * sizeof(float));
        soma_conv2d_backward(v, NULL, NULL, e->cws, u, NULL, w, &s);
        normalize(v, n);
        soma_conv2d_forward(u, e->cws, v, w, NULL, &s);
        normalize(u, m);
        return;
    }
    soma_gemv(1, m, n, 1.0f, w, n, u, 0.0f, v);
    normalize(v, n);
    soma_gemv(0, m, n, 1.0f, w, n, v, 0.0f, u);
    normalize(u, m);
}

/* sigma = u^T W v, in double (conv: W v into the scratch e->cfb) */
static double sn_sigma(ide_state *e, const float *w, const float *u, const float *v)
{
    int m = e->n[1], n = e->n[e->H];
    double s = 0;
    if (e->conv) {
        soma_conv_shape cs = one_sample(e->wcs);
        soma_conv2d_forward(e->cfb, e->cws, v, w, NULL, &cs);
        for (int i = 0; i < m; i++) s += (double)u[i] * e->cfb[i];
        return s;
    }
    for (int i = 0; i < m; i++) {
        double row = 0;
        for (int j = 0; j < n; j++) row += (double)w[(size_t)i * n + j] * v[j];
        s += u[i] * row;
    }
    return s;
}

void soma__ide_weight(soma_rule *r, int do_iter)
{
    ide_state *e = r->state;
    soma_net *net = r->net;
    if (e->sn_g < 0) return;   /* weff is the parameter itself */
    const float *w = soma__param_value(net, e->fb);
    float *u = soma__buffer_value(net, e->sn_u), *v = soma__buffer_value(net, e->sn_v);
    if (do_iter) power_iter(e, w, u, v);
    e->sigma = (float)sn_sigma(e, w, u, v);
    float c = r->cfg.ide_sn_c, g = soma__param_value(net, e->sn_g)[0];
    float gc = g < -c ? -c : g > c ? c : g;
    float k = gc / e->sigma;
    for (size_t i = 0; i < e->wn; i++) e->weff[i] = k * w[i];
}

/* W_eff = gc w / sigma:  dw = (gc/sigma) G - (gc <G,w> / sigma^2) dsigma/dw,
 * dsigma/dw = u v^T (dense) or the conv kernel gradient of <u, conv(v; w)>
 * (the conv backward's dw with dy = u, x = v);
 * dalpha = <G,w> / sigma where |alpha| <= c (clamp passes on the closed interval). */
static void sn_backward(soma_rule *r)
{
    ide_state *e = r->state;
    soma_net *net = r->net;
    int m = e->n[1], n = e->n[e->H];
    const float *w = soma__param_value(net, e->fb);
    const float *u = soma__buffer_value(net, e->sn_u), *v = soma__buffer_value(net, e->sn_v);
    float *dw = soma__param_grad(net, e->fb);
    float c = r->cfg.ide_sn_c, g = soma__param_value(net, e->sn_g)[0];
    float gc = g < -c ? -c : g > c ? c : g;
    double sig = e->sigma, gw = 0;
    for (size_t i = 0; i < e->wn; i++) gw += (double)e->gweff[i] * w[i];
    double k1 = gc / sig, k2 = gc * gw / (sig * sig);
    if (e->conv) {
        soma_conv_shape s = one_sample(e->wcs);
        memset(e->dsig, 0, e->wn * sizeof(float));
        soma_conv2d_backward(NULL, e->dsig, NULL, e->cws, u, v, w, &s);
        for (size_t q = 0; q < e->wn; q++) dw[q] += (float)(k1 * e->gweff[q] - k2 * e->dsig[q]);
    } else for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            size_t q = (size_t)i * n + j;
            dw[q] += (float)(k1 * e->gweff[q] - k2 * u[i] * v[j]);
        }
    if (g >= -c && g <= c) soma__param_grad(net, e->sn_g)[0] += (float)(gw / sig);
}

/* ---- init / release ------------------------------------------------------ */

static soma_status ide_init(soma_rule *r, int max_batch)
{
    soma_net *net = r->net;
    const soma_rule_config *c = &r->cfg;
    if (soma_net_is_spiking(net))
        return soma__fail(SOMA_ERR_ARG, "rule ide builds its own spiking dynamics over a rate net's "
                          "dense / conv layers; net '%s' has neuron cells (drop --neuron)", soma_net_spec(net));
    soma_status st = check_config(c);
    if (st) return st;
    ide_state *e = soma__calloc(1, sizeof *e);
    if (!e) return SOMA_ERR_NOMEM;
    r->state = e;
    e->fb = e->sn_g = e->sn_u = e->sn_v = -1;
    e->bn_g = e->bn_b = e->bn_rm = e->bn_rv = -1;
    /* dense form: D_1 [bn] D_2 .. D_L;  conv form: conv [bn] flatten D (the readout) */
    int L = 0, first = -1, last_param = -1;
    const soma_layer *cl = NULL;
    for (int i = 0; i < net->n_layers; i++) {
        const soma_layer *l = &net->layers[i];
        if (l->kind == SOMA_LAYER_ACT || l->kind == SOMA_LAYER_FLATTEN) continue;
        if (l->kind == SOMA_LAYER_CONV) {
            if (first >= 0)
                return soma__fail(SOMA_ERR_UNSUPPORTED, "rule ide: the convolutional form takes one "
                                  "conv layer, first (the input map F), then the dense readout; layer "
                                  "%d of '%s' is another conv", i, soma_net_spec(net));
            first = last_param = i;
            cl = l;
            e->conv = 1;
            e->w[1] = l->w;
            e->b[1] = l->b;
            e->n[1] = (int)l->out_size;
            continue;
        }
        if (l->kind == SOMA_LAYER_BATCHNORM) {
            if (last_param != first || first < 0 || e->bn_g >= 0 || (!e->conv && L != 1))
                return soma__fail(SOMA_ERR_UNSUPPORTED, "rule ide: batchnorm only right after the "
                                  "input map F (the first dense / conv layer); layer %d of '%s'", i,
                                  soma_net_spec(net));
            e->bn_g = l->w;
            e->bn_b = l->b;
            e->bn_rm = l->run_mean;
            e->bn_rv = l->run_var;
            e->bn_c = l->in_c;
            e->bn_s = l->in_h * l->in_w;
            e->bn_eps = l->eps;
            e->bn_mom = l->momentum;
            last_param = -2;
            continue;
        }
        if (l->kind != SOMA_LAYER_DENSE)
            return soma__fail(SOMA_ERR_UNSUPPORTED, "rule ide runs over dense layers, or one conv "
                              "layer and a dense readout; layer %d of '%s' is neither (pooling, "
                              "dropout are not implemented)", i, soma_net_spec(net));
        if (l->rec >= 0)
            return soma__fail(SOMA_ERR_UNSUPPORTED, "rule ide: layer %d has a recurrent weight; the "
                              "feedback matrix is the rule's own", i);
        if (e->conv && L == 1)
            return soma__fail(SOMA_ERR_UNSUPPORTED, "rule ide: the convolutional form takes one "
                              "dense readout after the conv layer; '%s' has more", soma_net_spec(net));
        if (L == IDE_MAXH + 1)
            return soma__fail(SOMA_ERR_UNSUPPORTED, "rule ide takes at most %d dense layers", IDE_MAXH + 1);
        L++;
        last_param = i;
        if (first < 0) first = i;
        int k = e->conv ? 2 : L;
        e->w[k] = l->w;
        e->b[k] = l->b;
        if (!e->conv && L <= IDE_MAXH) e->n[L] = l->out_c;
    }
    if (e->conv ? L != 1 : L < 2)
        return soma__fail(SOMA_ERR_ARG, "rule ide needs a feedback (hidden) layer and a readout: "
                          "'%s' has %d dense layer (e.g. 784-400-10, conv5x64s2p2-bn-10)",
                          soma_net_spec(net), L);
    e->H = e->conv ? 1 : L - 1;
    e->n[0] = soma_net_inputs(net);
    e->C = soma_net_outputs(net);
    int H = e->H, n1 = e->n[1], nH = e->n[H];
    if (e->bn_g >= 0 && e->bn_c * e->bn_s != n1)
        return soma__fail(SOMA_ERR_SHAPE, "rule ide: F's batchnorm has %d x %d values, F %d",
                          e->bn_c, e->bn_s, n1);
    /* the input: a static current (encoding direct) or T spike frames a sample */
    int64_t n0 = e->n[0], want = (int64_t)c->T * n0;
    if (c->encoding == SOMA_ENC_FRAMES) {
        if (c->sample_size != want) {
            if (c->sample_size > 0 && c->sample_size % n0 == 0)
                return soma__fail(SOMA_ERR_ARG, "rule ide: spike input has %d frames of the net's "
                                  "%lld inputs a sample, but T = %d (set --T to the frame count)",
                                  (int)(c->sample_size / n0), (long long)n0, c->T);
            return soma__fail(SOMA_ERR_ARG, "rule ide: spike input (encoding frames) takes samples "
                              "of T = %d frames of the net's %lld inputs (%lld values); the samples "
                              "have %d", c->T, (long long)n0, (long long)want, c->sample_size);
        }
        e->frames = 1;
    } else if (c->encoding != SOMA_ENC_DIRECT) {
        return soma__fail(SOMA_ERR_UNSUPPORTED, "rule ide takes a static current (encoding direct) "
                          "or spike frames (encoding frames), not encoding %s",
                          soma_encoding_name(c->encoding));
    } else if (c->sample_size && c->sample_size != n0) {
        return soma__fail(SOMA_ERR_ARG, "rule ide: static input takes samples of the net's %lld "
                          "inputs, they have %d (spike frames need encoding frames)", (long long)n0,
                          c->sample_size);
    }

    int K = 0, Cc = 0;
    if (e->conv) {
        Cc = cl->out_c;
        K = c->ide_fb_k ? c->ide_fb_k : cl->k;
        if (K % 2 == 0)
            return soma__fail(SOMA_ERR_ARG, "rule ide: the conv feedback kernel takes F's size %d, "
                              "which is even (no same-size output); set ide-fb-k to an odd size", K);
        if ((st = soma_conv_shape_init(&e->fcs, max_batch, cl->in_c, cl->in_h, cl->in_w, cl->out_c,
                                       cl->k, cl->k, cl->stride, cl->pad)))
            return st;
        if ((st = soma_conv_shape_init(&e->wcs, max_batch, Cc, cl->out_h, cl->out_w, Cc, K, K, 1,
                                       K / 2)))
            return st;
        e->wn = (size_t)Cc * Cc * K * K;
    } else {
        e->wn = (size_t)n1 * nH;
    }

    /* the feedback weight W, (n1, nH) or (C, C, K, K), and the spectral norm's tensors */
    soma_rng rng;
    soma_rng_seed(&rng, net->opts.seed ^ 0x49444546424bull);   /* "IDEFBK": its own stream */
    char name[48];
    snprintf(name, sizeof name, "%d.weight_fb", first);
    int64_t shape2[2] = { n1, nH }, shape4[4] = { Cc, Cc, K, K };
    int created;
    int idx = find_or_add(net, 1, name, e->conv ? 4 : 2, e->conv ? shape4 : shape2, &created);
    if (idx < 0) return (soma_status)idx;
    e->fb = idx;
    if (created) {
        /* the authors' init: U(-1, 1), every output unit's row (a dense row,
         * an output channel's filter) scaled to unit L2 norm */
        int rows = e->conv ? Cc : n1, cols = (int)(e->wn / (size_t)rows);
        float *w = soma__param_value(net, idx);
        for (int i = 0; i < rows; i++) {
            float *row = w + (size_t)i * cols;
            for (int j = 0; j < cols; j++) row[j] = 2.0f * soma_rng_uniform(&rng) - 1.0f;
            normalize(row, cols);
        }
    }
    int init_alpha = 0;
    if (c->ide_sn) {
        int64_t one = 1, su = n1, sv = nH;
        int cg, cu, cv;
        snprintf(name, sizeof name, "%d.weight_fb_g", first);
        if ((idx = find_or_add(net, 1, name, 1, &one, &cg)) < 0) return (soma_status)idx;
        e->sn_g = idx;
        snprintf(name, sizeof name, "%d.weight_fb_u", first);
        if ((idx = find_or_add(net, 0, name, 1, &su, &cu)) < 0) return (soma_status)idx;
        e->sn_u = idx;
        snprintf(name, sizeof name, "%d.weight_fb_v", first);
        if ((idx = find_or_add(net, 0, name, 1, &sv, &cv)) < 0) return (soma_status)idx;
        e->sn_v = idx;
        if (cu || cv) {
            float *u = soma__buffer_value(net, e->sn_u), *v = soma__buffer_value(net, e->sn_v);
            for (int i = 0; i < n1; i++) u[i] = soma_rng_normal(&rng);
            for (int j = 0; j < nH; j++) v[j] = soma_rng_normal(&rng);
            normalize(u, n1);
            normalize(v, nH);
        }
        init_alpha = cg;
    }

    /* buffers */
    int maxn = 0;
    for (int k = 0; k <= H; k++) if (e->n[k] > maxn) maxn = e->n[k];
    size_t B = (size_t)max_batch, S = 0;
    for (int k = 1; k <= H; k++) S += (size_t)e->n[k];
    e->mem = c->ide_max_iter < IDE_MEM ? c->ide_max_iter : IDE_MEM;
    size_t wn = e->wn, cws = 0;
    if (e->conv) {
        e->cws_threads = soma_get_threads();
        size_t a = soma_conv2d_workspace(&e->fcs, e->cws_threads);
        size_t b = soma_conv2d_workspace(&e->wcs, e->cws_threads);
        cws = a > b ? a : b;
    }
    size_t nbn = e->bn_g >= 0 ? 2 * B * n1 + 2 * (size_t)e->bn_c : 0;
    size_t nfr = e->frames ? 2 * B * (size_t)n0 + B * n1 : 0;   /* x-bar, a frame, its current */
    e->floats = 4 * B * S + B * n1 + 10 * B * nH + 2 * B * (size_t)e->mem * nH + 2 * B * maxn +
                3 * B * e->C + (c->ide_sn ? 2 * wn : 0) + cws + (e->conv ? B * n1 : 0) +
                (e->conv && c->ide_sn ? wn : 0) + nbn + nfr;
    float *p = soma__malloc_aligned(e->floats * sizeof(float));
    if (!p) return SOMA_ERR_NOMEM;
    memset(p, 0, e->floats * sizeof(float));
    e->block = p;
    for (int k = 1; k <= H; k++) {
        size_t m = B * e->n[k];
        e->u[k] = p; p += m;
        e->s[k] = p; p += m;
        e->pre[k] = p; p += m;
        e->act[k] = p; p += m;
    }
    e->fx = p; p += B * n1;
    float **vec[] = { &e->acc, &e->a, &e->gA, &e->beta, &e->best, &e->G, &e->Gn, &e->dx, &e->dg, &e->jt };
    for (size_t i = 0; i < sizeof vec / sizeof *vec; i++) { *vec[i] = p; p += B * nH; }
    e->U = p; p += B * e->mem * nH;
    e->V = p; p += B * e->mem * nH;
    e->d0 = p; p += B * maxn;
    e->d1 = p; p += B * maxn;
    e->logits = p; p += B * e->C;
    e->probs = p; p += B * e->C;
    e->dl = p; p += B * e->C;
    if (c->ide_sn) {
        e->weff = p; p += wn;
        e->gweff = p; p += wn;
    } else {
        e->weff = soma__param_value(net, e->fb);   /* stable: nothing is added after init */
    }
    if (e->conv) {
        e->cws = p; p += cws;
        e->cfb = p; p += B * n1;
        if (c->ide_sn) { e->dsig = p; p += wn; }
    }
    if (e->bn_g >= 0) {
        e->fpre = p; p += B * n1;
        e->bnc.xhat = p; p += B * n1;
        e->bnc.mean = p; p += e->bn_c;
        e->bnc.invstd = p; p += e->bn_c;
    }
    if (e->frames) {
        e->xbar = p; p += B * n0;
        e->xt = p; p += B * n0;
        e->fstep = p; p += B * n1;
    }
    if (init_alpha) {   /* alpha = sigma(W): 10 power iterations (from u, v, which they refine) */
        const float *w = soma__param_value(net, e->fb);
        float *u = soma__buffer_value(net, e->sn_u), *v = soma__buffer_value(net, e->sn_v);
        for (int it = 0; it < 10; it++) power_iter(e, w, u, v);
        soma__param_value(net, e->sn_g)[0] = (float)sn_sigma(e, w, u, v);
    }
    return SOMA_OK;
}

static void ide_release(soma_rule *r)
{
    ide_state *e = r->state;
    if (!e) return;
    soma__free_aligned(e->block);
    soma__free(e);
}

static void ide_plan(const soma_rule *r, soma_mem_plan *p)
{
    const ide_state *e = r->state;
    size_t B = (size_t)r->max_batch, S = 0;
    for (int k = 1; k <= e->H; k++) S += (size_t)e->n[k];
    /* activations: membranes, spikes, rates (flat in T); the rest is the solver's */
    p->activations = (2 * B * S + 2 * B * e->n[e->H]) * sizeof(float);
    p->workspace = e->floats * sizeof(float) - p->activations;
}

/* ---- forward: the spiking simulation ------------------------------------- */

static void spike_step(float *restrict u, float *restrict s, size_t m, float V, float lam)
{
    _Pragma("omp simd")
    for (size_t i = 0; i < m; i++) {
        const float ui = u[i];
        const float sp = ui >= V ? 1.0f : 0.0f;   /* test >= (the authors' code) */
        s[i] = sp;
        u[i] = (ui - V * sp) * lam;            /* reset by subtraction, then the leak */
    }
}

/* out (B, n1) <- F x + b_1 for x (B, n0): dense or conv */
static void linear_map(soma_rule *r, float *out, const float *x, int B)
{
    ide_state *e = r->state;
    soma_net *net = r->net;
    int n1 = e->n[1];
    if (e->conv) {
        soma_conv_shape s = e->fcs;
        s.B = B;
        soma_conv2d_forward(out, e->cws, x, soma__param_value(net, e->w[1]),
                            soma__param_value(net, e->b[1]), &s);
    } else {
        soma_dense_forward(out, x, soma__param_value(net, e->w[1]), soma__param_value(net, e->b[1]),
                           B, e->n[0], n1);
    }
}

/* e->fx (B, n1) <- F x: dense or conv (+ bias), then F's batchnorm if any:
 * mode 0 running statistics, 1 batch statistics and one update of the
 * running ones, 2 batch statistics only.  The statistics are those of F x
 * itself (spike input: x = x-bar), fixed for the whole simulation, the rate
 * map and the implicit solve (constant input: F x is the same at every
 * step; notes 2.5); e->bnc keeps the mean and 1/std used. */
static void input_map(soma_rule *r, const float *x, int B, int mode)
{
    ide_state *e = r->state;
    soma_net *net = r->net;
    float *out = e->bn_g >= 0 ? e->fpre : e->fx;
    linear_map(r, out, x, B);
    if (e->bn_g < 0) return;
    int upd = mode == 1;
    soma_batchnorm_forward(e->fx, &e->bnc, upd || !mode ? soma__buffer_value(net, e->bn_rm) : NULL,
                           upd || !mode ? soma__buffer_value(net, e->bn_rv) : NULL, e->fpre,
                           soma__param_value(net, e->bn_g), soma__param_value(net, e->bn_b), B,
                           e->bn_c, e->bn_s, e->bn_eps, e->bn_mom, mode != 0);
}

/* out (B, n1) += W a: the feedback (conv form: through the scratch e->cfb) */
static void feedback_add(ide_state *e, float *out, const float *a, int B)
{
    int n1 = e->n[1], nH = e->n[e->H];
    if (e->conv) {
        soma_conv_shape s = e->wcs;
        s.B = B;
        soma_conv2d_forward(e->cfb, e->cws, a, e->weff, NULL, &s);
        for (size_t i = 0; i < (size_t)B * n1; i++) out[i] += e->cfb[i];
        return;
    }
    soma_gemm(0, 1, B, n1, nH, 1.0f, a, nH, e->weff, nH, 1.0f, out, n1);
}

/* xbar (B, n0) <- sum_t lambda^(T-1-t) x_t / sum_{k<T} lambda^k for the
 * frames x (B, T, n0): the rates' weighting (Horner, acc = lambda acc + x_t,
 * in double; constant frames give x-bar = x exactly).  The authors' LIF
 * loop runs one index too far and scales it by (1 - lambda^2T) / (1 -
 * lambda^(T+1)) (notes 2.10): not copied. */
static void spike_average(soma_rule *r, float *xbar, const float *x, int B)
{
    ide_state *e = r->state;
    int T = r->cfg.T, n0 = e->n[0];
    double lam = r->cfg.ide_leak, norm = 0;
    for (int t = 0; t < T; t++) norm = lam * norm + 1.0;
    enum { BLK = 256 };
    double acc[BLK];
    for (int s = 0; s < B; s++) {
        const float *xs = x + (size_t)s * T * n0;
        for (int j0 = 0; j0 < n0; j0 += BLK) {
            int nj = n0 - j0 < BLK ? n0 - j0 : BLK;
            for (int j = 0; j < nj; j++) acc[j] = 0.0;
            for (int t = 0; t < T; t++) {
                const float *xt = xs + (size_t)t * n0 + j0;
                for (int j = 0; j < nj; j++) acc[j] = lam * acc[j] + xt[j];
            }
            for (int j = 0; j < nj; j++) xbar[(size_t)s * n0 + j0 + j] = (float)(acc[j] / norm);
        }
    }
}

/* e->fstep (B, n1) <- the input current of frame t of x (B, T, n0):
 * F x_t + b_1, then F's batchnorm with the statistics fixed by the last
 * input_map (those of F x-bar, or the running ones), the same arithmetic
 * as soma_batchnorm_forward. */
static void frame_current(soma_rule *r, const float *x, int t, int B)
{
    ide_state *e = r->state;
    soma_net *net = r->net;
    int T = r->cfg.T, n0 = e->n[0];
    for (int s = 0; s < B; s++)
        memcpy(e->xt + (size_t)s * n0, x + ((size_t)s * T + t) * n0, (size_t)n0 * sizeof(float));
    linear_map(r, e->fstep, e->xt, B);
    if (e->bn_g < 0) return;
    const float *g = soma__param_value(net, e->bn_g), *bt = soma__param_value(net, e->bn_b);
    int C = e->bn_c, S = e->bn_s;
    for (int s = 0; s < B; s++)
        for (int ch = 0; ch < C; ch++) {
            float *y = e->fstep + ((size_t)s * C + ch) * S;
            const float m = e->bnc.mean[ch], is = e->bnc.invstd[ch];
            for (int q = 0; q < S; q++) {
                float h = (y[q] - m) * is;
                y[q] = g[ch] * h + bt[ch];
            }
        }
}

/* u += c; acc = lam acc + s: vector loops (the state's buffers never alias) */
static void add_into(float *restrict u, const float *restrict c, size_t m)
{
    _Pragma("omp simd")
    for (size_t i = 0; i < m; i++) u[i] += c[i];
}

static void leaky_add(float *restrict acc, const float *restrict s, size_t m, float lam)
{
    _Pragma("omp simd")
    for (size_t i = 0; i < m; i++) acc[i] = lam * acc[i] + s[i];
}

void soma__ide_simulate(soma_rule *r, const float *x, int B)
{
    ide_state *e = r->state;
    soma_net *net = r->net;
    const soma_rule_config *c = &r->cfg;
    int H = e->H, n1 = e->n[1], nH = e->n[H];
    float V = c->ide_vth, lam = c->ide_leak;
    if (e->frames) {   /* F x-bar: f's input and F's batchnorm statistics */
        spike_average(r, e->xbar, x, B);
        input_map(r, e->xbar, B, e->sim_mode);
    } else {
        input_map(r, x, B, e->sim_mode);
    }
    for (int k = 1; k <= H; k++) {
        memset(e->u[k], 0, (size_t)B * e->n[k] * sizeof(float));
        memset(e->s[k], 0, (size_t)B * e->n[k] * sizeof(float));
    }
    memset(e->acc, 0, (size_t)B * nH * sizeof(float));
    size_t m1 = (size_t)B * n1, mH = (size_t)B * nH;
    for (int t = 0; t < c->T; t++) {
        const float *cur = e->fx;   /* constant current, or frame t's */
        if (e->frames) {
            frame_current(r, x, t, B);
            cur = e->fstep;
        }
        add_into(e->u[1], cur, m1);
        if (t > 0)   /* u_1 += W s_H(t-1) */
            feedback_add(e, e->u[1], e->s[H], B);
        spike_step(e->u[1], e->s[1], m1, V, lam);
        for (int k = 2; k <= H; k++) {
            int nk = e->n[k], np = e->n[k - 1];
            const float *bk = soma__param_value(net, e->b[k]);
            soma_gemm(0, 1, B, nk, np, 1.0f, e->s[k - 1], np, soma__param_value(net, e->w[k]), np,
                      1.0f, e->u[k], nk);
            for (int i = 0; i < B; i++)
                for (int j = 0; j < nk; j++) e->u[k][(size_t)i * nk + j] += bk[j];
            spike_step(e->u[k], e->s[k], (size_t)B * nk, V, lam);
        }
        leaky_add(e->acc, e->s[H], mH, lam);
    }
    /* IF: / T;  LIF: / sum_{k<T} lambda^k = (1 - lambda^T) / (1 - lambda) */
    double norm = 0, pw = 1;
    for (int t = 0; t < c->T; t++) { norm += pw; pw *= lam; }
    float inv = (float)(1.0 / norm);
    for (size_t i = 0; i < mH; i++) e->a[i] = e->acc[i] * inv;
}

/* ---- the rate map, its Jacobian products ---------------------------------- */

static void clamp_layer(float *pre, float *act, size_t m, float invV)
{
    for (size_t i = 0; i < m; i++) {
        float q = pre[i] * invV;
        pre[i] = q;
        act[i] = q < 0.0f ? 0.0f : q > 1.0f ? 1.0f : q;
    }
}

void soma__ide_map(soma_rule *r, float *out, const float *a, int B)
{
    ide_state *e = r->state;
    soma_net *net = r->net;
    int H = e->H, n1 = e->n[1], nH = e->n[H];
    float invV = 1.0f / r->cfg.ide_vth;
    /* pre_1 = (W a + F x + b_1) / V */
    memcpy(e->pre[1], e->fx, (size_t)B * n1 * sizeof(float));
    feedback_add(e, e->pre[1], a, B);
    clamp_layer(e->pre[1], e->act[1], (size_t)B * n1, invV);
    for (int k = 2; k <= H; k++) {
        soma_dense_forward(e->pre[k], e->act[k - 1], soma__param_value(net, e->w[k]),
                           soma__param_value(net, e->b[k]), B, e->n[k - 1], e->n[k]);
        clamp_layer(e->pre[k], e->act[k], (size_t)B * e->n[k], invV);
    }
    if (out) memcpy(out, e->act[H], (size_t)B * nH * sizeof(float));
}

/* e (B, n) <- [0 <= pre <= 1] d / V  (clamp passes the gradient on the closed interval) */
static void mask_layer(float *eo, const float *d, const float *pre, size_t m, float invV)
{
    for (size_t i = 0; i < m; i++) eo[i] = pre[i] >= 0.0f && pre[i] <= 1.0f ? d[i] * invV : 0.0f;
}

/* Backward through layers H..2 from d_H = v: returns e_1 = dL/d(pre_1 V) in
 * e->d0 or e->d1; with grads != 0 accumulates the S_k, b_k gradients. */
static float *chain_back(soma_rule *r, const float *v, int B, int grads)
{
    ide_state *e = r->state;
    soma_net *net = r->net;
    float invV = 1.0f / r->cfg.ide_vth;
    float *cur = e->d0, *nxt = e->d1;
    int H = e->H;
    mask_layer(cur, v, e->pre[H], (size_t)B * e->n[H], invV);
    for (int k = H; k >= 2; k--) {
        int nk = e->n[k], np = e->n[k - 1];
        memset(nxt, 0, (size_t)B * np * sizeof(float));
        soma_dense_backward(nxt, grads ? soma__param_grad(net, e->w[k]) : NULL,
                            grads ? soma__param_grad(net, e->b[k]) : NULL, cur, e->act[k - 1],
                            soma__param_value(net, e->w[k]), B, np, nk);
        mask_layer(nxt, nxt, e->pre[k - 1], (size_t)B * np, invV);
        float *t = cur; cur = nxt; nxt = t;
    }
    return cur;
}

void soma__ide_jt(soma_rule *r, float *out, const float *v, int B)
{
    ide_state *e = r->state;
    int n1 = e->n[1], nH = e->n[e->H];
    const float *e1 = chain_back(r, v, B, 0);
    if (e->conv) {   /* from pre_1 = W a: d a = W^T e_1, the transposed conv */
        soma_conv_shape s = e->wcs;
        s.B = B;
        memset(out, 0, (size_t)B * nH * sizeof(float));
        soma_conv2d_backward(out, NULL, NULL, e->cws, e1, NULL, e->weff, &s);
        return;
    }
    /* from pre_1 = a W^T: d a = e_1 W */
    soma_gemm(0, 0, B, nH, n1, 1.0f, e1, n1, e->weff, nH, 0.0f, out, nH);
}

/* beta^T df/dtheta at the last map point a: every parameter of f. */
static void ide_vjp(soma_rule *r, const float *beta, const float *x, const float *a, int B)
{
    ide_state *e = r->state;
    soma_net *net = r->net;
    int n1 = e->n[1], nH = e->n[e->H];
    const float *e1 = chain_back(r, beta, B, 1);
    const float *dF = e1;   /* dL/d(F x) before F's batchnorm */
    if (e->bn_g >= 0) {
        /* batch statistics in the backward graph (notes 2.5: the differentiable
         * f(a_T) has every batchnorm in training mode) */
        float *d = e1 == e->d0 ? e->d1 : e->d0;
        memset(d, 0, (size_t)B * n1 * sizeof(float));
        soma_batchnorm_backward(d, soma__param_grad(net, e->bn_g), soma__param_grad(net, e->bn_b), e1,
                                &e->bnc, soma__param_value(net, e->bn_g), B, e->bn_c, e->bn_s, 1);
        dF = d;
    }
    float *gw = e->sn_g >= 0 ? e->gweff : soma__param_grad(net, e->fb);
    if (e->sn_g >= 0) memset(gw, 0, e->wn * sizeof(float));
    if (e->conv) {
        soma_conv_shape fs = e->fcs, ws = e->wcs;
        fs.B = ws.B = B;
        soma_conv2d_backward(NULL, soma__param_grad(net, e->w[1]), soma__param_grad(net, e->b[1]),
                             e->cws, dF, x, soma__param_value(net, e->w[1]), &fs);
        soma_conv2d_backward(NULL, gw, NULL, e->cws, e1, a, e->weff, &ws);
    } else {
        soma_dense_backward(NULL, soma__param_grad(net, e->w[1]), soma__param_grad(net, e->b[1]), dF, x,
                            soma__param_value(net, e->w[1]), B, e->n[0], n1);
        soma_dense_backward(NULL, gw, NULL, e1, a, e->weff, B, nH, n1);
    }
    if (e->sn_g >= 0) sn_backward(r);
}

/* ---- the implicit solve ---------------------------------------------------- */

static double sumsq(const float *x, size_t n)
{
    double s = 0;
    _Pragma("omp simd reduction(+:s)")
    for (size_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    return s;
}

/* G = J^T beta - beta + g; returns |G|^2 */
static double residual(soma_rule *r, float *G, const float *beta, const float *g, int B)
{
    ide_state *e = r->state;
    size_t m = (size_t)B * e->n[e->H];
    soma__ide_jt(r, e->jt, beta, B);
    double ss = 0;
    for (size_t i = 0; i < m; i++) {
        G[i] = e->jt[i] - beta[i] + g[i];
        ss += (double)G[i] * G[i];
    }
    return ss;
}

/* Binv x for one sample, Binv = -I + sum_i U_i V_i^T (k pairs); out may not alias x */
static void bro_matvec(float *out, const float *U, const float *Vv, int k, const float *x, int D)
{
    for (int j = 0; j < D; j++) out[j] = -x[j];
    for (int i = 0; i < k; i++) {
        const float *ui = U + (size_t)i * D, *vi = Vv + (size_t)i * D;
        double dot = 0;
        _Pragma("omp simd reduction(+:dot)")
        for (int j = 0; j < D; j++) dot += (double)vi[j] * x[j];
        const float df = (float)dot;
        _Pragma("omp simd")
        for (int j = 0; j < D; j++) out[j] += df * ui[j];
    }
}

/* x^T Binv for one sample */
static void bro_rmatvec(float *out, const float *U, const float *Vv, int k, const float *x, int D)
{
    for (int j = 0; j < D; j++) out[j] = -x[j];
    for (int i = 0; i < k; i++) {
        const float *ui = U + (size_t)i * D, *vi = Vv + (size_t)i * D;
        double dot = 0;
        _Pragma("omp simd reduction(+:dot)")
        for (int j = 0; j < D; j++) dot += (double)ui[j] * x[j];
        const float df = (float)dot;
        _Pragma("omp simd")
        for (int j = 0; j < D; j++) out[j] += df * vi[j];
    }
}

double soma__ide_solve(soma_rule *r, const float *g, int B, int *iters)
{
    ide_state *e = r->state;
    const soma_rule_config *c = &r->cfg;
    int D = e->n[e->H];
    size_t m = (size_t)B * D, bytes = m * sizeof(float);
    double gn = sqrt(sumsq(g, m));
    *iters = 0;
    if (!(gn > 0)) { memset(e->beta, 0, bytes); return 0.0; }
    double tol = c->ide_tol, best = INFINITY;
    if (c->ide_iter) {
        /* damped fixed-point iteration from beta = g */
        float d = c->ide_damp;
        memcpy(e->beta, g, bytes);
        for (int it = 0; it < c->ide_max_iter; it++) {
            double res = sqrt(residual(r, e->G, e->beta, g, B)) / gn;
            (*iters)++;
            if (!isfinite(res)) break;
            if (res < best) { best = res; memcpy(e->best, e->beta, bytes); }
            if (res <= tol) break;
            for (size_t i = 0; i < m; i++) e->beta[i] += d * e->G[i];
        }
    } else {
        /* limited-memory good Broyden on G(beta) = J^T beta - beta + g = 0, from 0 */
        memset(e->beta, 0, bytes);
        memcpy(e->G, g, bytes);                 /* G(0) = g */
        best = 1.0;
        memcpy(e->best, e->beta, bytes);
        memcpy(e->dx, e->G, bytes);             /* -Binv G with Binv = -I */
        int k = 0, M = e->mem;
        float *bn = e->Gn;                      /* scratch for beta_new, then reused */
        for (int it = 0; it < c->ide_max_iter && best > tol; it++) {
            for (size_t i = 0; i < m; i++) e->dg[i] = e->beta[i] + e->dx[i];   /* beta_new */
            memcpy(e->beta, e->dg, bytes);
            double res = sqrt(residual(r, bn, e->beta, g, B)) / gn;              /* G_new */
            (*iters)++;
            if (!isfinite(res) || res > 1e6) break;   /* diverging: keep the best */
            if (res < best) { best = res; memcpy(e->best, e->beta, bytes); }
            if (res <= tol) break;
            int slot = k % M, kk = k + 1 < M ? k + 1 : M;
            /* samples are independent (each its own low-rank inverse): split across threads */
            #pragma omp parallel for schedule(static) if ((size_t)B * D * (size_t)(kk + 1) >= 65536)
            for (int b = 0; b < B; b++) {
                size_t o = (size_t)b * D;
                float *Ub = e->U + (size_t)b * M * D, *Vb = e->V + (size_t)b * M * D;
                float *dx = e->dx + o, *dg = e->dg + o, *Gb = e->G + o, *Gnb = bn + o;
                for (int j = 0; j < D; j++) dg[j] = Gnb[j] - Gb[j];
                float *us = Ub + (size_t)slot * D, *vs = Vb + (size_t)slot * D;
                float *vT = e->d0 + o, *Bdg = e->d1 + o;   /* free after the residual */
                int have = k < M ? k : M;
                /* vT = dx^T Binv, u = (dx - Binv dg) / (vT . dg), with the current Binv;
                 * then the pair replaces the oldest one (circular memory) */
                bro_rmatvec(vT, Ub, Vb, have, dx, D);
                bro_matvec(Bdg, Ub, Vb, have, dg, D);
                double den = 0;
                _Pragma("omp simd reduction(+:den)")
                for (int j = 0; j < D; j++) den += (double)vT[j] * dg[j];
                if (fabs(den) > 1e-30 && isfinite(den)) {
                    for (int j = 0; j < D; j++) {
                        us[j] = (float)((dx[j] - Bdg[j]) / den);
                        vs[j] = vT[j];
                    }
                } else {
                    memset(us, 0, D * sizeof(float));
                    memset(vs, 0, D * sizeof(float));
                }
                memcpy(Gb, Gnb, D * sizeof(float));
                bro_matvec(dx, Ub, Vb, kk, Gb, D);      /* dx = -Binv G */
                for (int j = 0; j < D; j++) dx[j] = -dx[j];
            }
            k++;
        }
    }
    memcpy(e->beta, e->best, bytes);
    return best;
}

/* ---- gradient, train, predict ------------------------------------------- */

/* The conv workspace was sized for cws_threads; spike frames for T; batch
 * statistics need more than one value per channel. */
static soma_status check_run(soma_rule *r, int B, int train)
{
    ide_state *e = r->state;
    if (e->conv && soma_get_threads() > e->cws_threads)
        return soma__fail(SOMA_ERR_ARG, "rule ide: %d threads, but the conv workspace was sized for "
                          "%d at init (set the threads before building the rule)", soma_get_threads(),
                          e->cws_threads);
    if (e->frames && (int64_t)r->cfg.T * e->n[0] != r->cfg.sample_size)
        return soma__fail(SOMA_ERR_ARG, "rule ide: T = %d no longer matches the %d-value spike "
                          "samples it was built for", r->cfg.T, r->cfg.sample_size);
    if (train && e->bn_g >= 0 && (int64_t)B * e->bn_s < 2)
        return soma__fail(SOMA_ERR_ARG, "rule ide: F's batchnorm needs more than one value per "
                          "channel in training (batch %d x %d)", B, e->bn_s);
    return SOMA_OK;
}

static void readout(soma_rule *r, const float *a, int B)
{
    ide_state *e = r->state;
    soma_net *net = r->net;
    int L = e->H + 1;
    soma_dense_forward(e->logits, a, soma__param_value(net, e->w[L]), soma__param_value(net, e->b[L]),
                       B, e->n[e->H], e->C);
}

soma_status soma__ide_grad(soma_rule *r, const soma_batch *b, int power_iter_on, soma_step_stats *st)
{
    ide_state *e = r->state;
    soma_status s = check_run(r, b->n, 1);
    if (s) return s;
    soma__ide_weight(r, power_iter_on);
    e->sim_mode = 1;   /* F's batchnorm: batch statistics, running ones updated once here */
    soma__ide_simulate(r, b->x, b->n);
    e->sim_mode = 0;
    return soma__ide_grad_at(r, b, e->a, st);
}

soma_status soma__ide_grad_at(soma_rule *r, const soma_batch *b, const float *a, soma_step_stats *st)
{
    ide_state *e = r->state;
    soma_net *net = r->net;
    const soma_rule_config *c = &r->cfg;
    int B = b->n, nH = e->n[e->H], L = e->H + 1;
    size_t mH = (size_t)B * nH;
    soma_status s = check_run(r, B, 1);
    if (s) return s;
    const float *x = b->x;   /* f's input: x, or x-bar of the frames */
    if (e->frames) {
        spike_average(r, e->xbar, b->x, B);
        x = e->xbar;
    }
    input_map(r, x, B, 2);
    readout(r, a, B);
    s = soma__loss_and_grad_t(e->dl, e->probs, e->logits, b->y, b->target, B, e->C, c->loss, st);
    if (s) return s;
    soma_net_zero_grad(net);
    /* readout: its own gradient, and g = dL/da */
    memset(e->gA, 0, mH * sizeof(float));
    soma_dense_backward(e->gA, soma__param_grad(net, e->w[L]), soma__param_grad(net, e->b[L]), e->dl,
                        a, soma__param_value(net, e->w[L]), B, nH, e->C);
    /* the equilibrium map at a: Jacobian point and the gap to the simulation */
    soma__ide_map(r, e->Gn, a, B);
    double gap = 0;
    for (size_t i = 0; i < mH; i++) gap += ((double)e->Gn[i] - a[i]) * ((double)e->Gn[i] - a[i]);
    e->gap = sqrt(gap / (double)mH);
    int iters;
    double res = soma__ide_solve(r, e->gA, B, &iters);
    e->res = res;
    e->iters = iters;
    e->batches++;
    e->sum_res += res;
    if (res > e->res_max) e->res_max = res;
    if (!(res <= c->ide_tol)) {
        e->unconverged++;
        if (c->ide_strict)
            return soma__fail(SOMA_ERR_NUMERIC, "IDE implicit solve did not converge: relative "
                              "residual %.3g > tolerance %.3g after %d iterations (%s)", res,
                              c->ide_tol, iters, c->ide_iter ? "fixed-point" : "Broyden");
    }
    ide_vjp(r, e->beta, x, a, B);
    return SOMA_OK;
}

static soma_status ide_train_batch(soma_rule *r, const soma_batch *b, float lr, soma_rng *rng,
                                   soma_step_stats *st)
{
    (void)rng;
    soma_step_stats local = { 0 };
    soma_status s = soma__ide_grad(r, b, 1, &local);
    if (s) return s;
    size_t np = soma_net_param_floats(r->net);
    float *g = soma_net_param_grads(r->net);
    if (!soma__all_finite(g, np)) return soma__fail(SOMA_ERR_NUMERIC, "IDE gradient contains NaN or Inf");
    if (r->cfg.clip_norm > 0) soma__clip_norm(g, np, r->cfg.clip_norm);
    soma_optim_step(r->optim, soma_net_param_values(r->net), g, lr);
    if (st) { st->loss += local.loss; st->correct += local.correct; st->n += local.n; }
    return SOMA_OK;
}

static soma_status ide_predict(soma_rule *r, const soma_batch *b, const float **scores,
                               soma_step_stats *st)
{
    ide_state *e = r->state;
    soma_status s = check_run(r, b->n, 0);
    if (s) return s;
    soma__ide_weight(r, 0);
    soma__ide_simulate(r, b->x, b->n);
    readout(r, e->a, b->n);
    *scores = e->logits;
    if (!st) return SOMA_OK;
    return soma__loss_and_grad_t(NULL, e->probs, e->logits, b->y, b->target, b->n, e->C, r->cfg.loss, st);
}

soma_status soma_ide_diagnostics(soma_rule *r, soma_ide_diag *d, int reset)
{
    if (!r || r->ops != &soma__rule_ide)
        return soma__fail(SOMA_ERR_ARG, "rule is '%s', not 'ide'", r ? r->ops->name : "(null)");
    ide_state *e = r->state;
    memset(d, 0, sizeof *d);
    d->residual = e->res;
    d->residual_max = e->res_max;
    d->rate_gap = e->gap;
    d->iters = e->iters;
    d->batches = e->batches;
    d->unconverged = e->unconverged;
    if (reset) { e->batches = e->unconverged = 0; e->sum_res = e->res_max = 0; }
    return SOMA_OK;
}

const soma_rule_ops soma__rule_ide = {
    .name = "ide",
    .about = "implicit differentiation on the equilibrium of a feedback SNN's firing rates (IF/LIF)",
    .init = ide_init,
    .train_batch = ide_train_batch,
    .predict = ide_predict,
    .plan = ide_plan,
    .release = ide_release,
};
