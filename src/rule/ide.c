/*
 * ide.c - feedback spiking networks trained by implicit differentiation on
 * the equilibrium state of their average firing rates (Xiao, Meng, Zhang,
 * Wang, Lin, NeurIPS 2021; notes: shared/notes/ide.md; docs/ide.md).
 *
 * Network: hidden layers 1..H, the input map F (layer 1's linear map, from
 * the input), feed-forward maps S_k (layer k-1 -> k, k = 2..H, bias), the
 * readout on the last hidden layer's rates, and a feedback operator W
 * without bias from layer H back to layer 1, stored as "<i>.weight_fb"
 * beside the first layer i.  Dense forms: the net's dense layers D_1..D_L,
 * F = D_1, S_k = D_k, the readout D_L, W a matrix (n1, nH); H = 1 is the
 * single-layer form (W square).  Conv forms: the net's conv layers are F
 * and the S_k, one dense readout follows; H = 1: W a conv (C, C, K, K),
 * stride 1, pad K/2; H > 1 (AlexNet-F): W a transposed conv (C_H, C_1, K,
 * K), stride s = h_1 / h_H, pad (K-1)/2, output padding s - 1.  Every linear
 * map (F, S_k) may be followed by a batchnorm; W has none.
 *
 * Forward, no graph kept, constant input current F x + b_1 (direct input),
 * T steps of IF / LIF with threshold V, test u >= V, reset by subtraction:
 *   layer 1:  u_1 += D_W (W s_H(t-1)) + D_F BN_1(F x + b_1)   (no feedback at t = 0)
 *   layer k:  u_k += D_k BN_k(S_k s_{k-1}(t) + b_k)     (k = 2..H, same step, in order)
 *   each:     s = [u >= V];  u = u - V s;  LIF: u = lambda u
 *   a_T = sum_t lambda^(T-1-t) s_H(t) / sum_{k<T} lambda^k   (IF: lambda = 1)
 * Prediction: logits = readout(a_T).  D_* are the variational dropout
 * masks (training with ide_dropout > 0; else 1), BN_k the batchnorms (the
 * identity where there is none).
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
 *   f(a) = a_H,  a_1 = clamp((D_W (W a) + D_F BN_1(F x + b_1)) / V, 0, 1),
 *                a_k = clamp(D_k BN_k(S_k a_{k-1} + b_k) / V, 0, 1)
 * Backward at a = a_T, with g = dL/da from the readout:
 *   beta solves (I - J^T) beta = g,  J = df/da(a_T)   (clamp' = 1 on [0, 1])
 *   dL/dtheta = beta^T df(a_T)/dtheta    (one VJP of f; the readout: its own)
 * by limited-memory good Broyden per sample (the authors' solver: inverse
 * Jacobian estimate -I + U V^T, 27 pairs, step 1, best iterate kept), or by
 * the damped fixed-point iteration beta <- (1-d) beta + d (J^T beta + g)
 * (the correct form: the reference's halved one solves (2I - J^T) beta = g).
 * Unlike the authors' code the first Broyden step is the Newton step of the
 * initial estimate (+G, the fixed-point step), and the multi-layer Jacobian
 * is taken at a_T, not at f(a_T).  W a, W^T v and dL/dW are the conv kernels'
 * forward, backward-data (dx) and backward-weight (dw) paths: for the conv
 * W = conv, W^T = its dx path; for the transposed conv W = the dx path of
 * the conv it transposes, W^T = that conv's forward.
 *
 * Batchnorm (notes 2.5).  F's (a bn right after F, as in F400 / F64C5):
 * with constant input F x is the same at every step, so its batch statistics
 * are computed once per batch and stay fixed through the simulation, the map
 * and the solve (F is not in J); the running statistics are updated once per
 * training batch (the authors' code does it twice: its save/restore is a
 * no-op), the parameter VJP goes through the batch statistics, prediction
 * uses the running ones.  Spike input: the statistics are those of
 * F x-bar + b_1 (the authors' code: the linear response to the weighted
 * average input, computed once), applied to every step's F x_t + b_1 and
 * used by f; unlike the authors' simulation (unbiased variance, eps 1e-8)
 * the normalisation is the layer's own (biased variance, its eps), the same
 * as in f, so constant frames reproduce the static path exactly.
 * S_k's (AlexNet-F), the authors' three modes: the simulation uses the
 * running statistics (BN_k is a fixed affine map of every step's current);
 * the training map f_t at a_T uses the batch statistics of S_k a_{k-1} + b_k
 * and updates the running statistics once; J is taken of the map with the
 * (updated) running statistics, and beta^T df_t/dtheta goes through the
 * batch statistics.  So with S_k batchnorm the gradient is the authors'
 * mixture, not the exact gradient of one map; without it it is exact.
 *
 * Variational dropout (ide_dropout = p, notes 2.6: VariationalHidDropout2d,
 * spatial=False): in training one mask of 0 or 1/(1-p) per element of the
 * outputs of F (after its batchnorm), of every S_k (after its batchnorm) and
 * of W, drawn once per batch from the training rng and used at every step,
 * in f and in J; prediction uses none.  p = 0 draws nothing and multiplies
 * by nothing (the path without dropout, bit for bit).
 *
 * Spectral norm (ide_sn): W = clamp(alpha, -c, c) w / sigma, sigma = u^T W v
 * after one power iteration v = W^T u / |.|, u = W v / |.| per training
 * batch (u, v persistent buffers, no gradient through them); alpha starts
 * at sigma(w) (10 power iterations).  Predict reuses u, v unchanged.  Conv
 * forms: the power iteration runs on the operator (the conv or transposed
 * conv and its adjoint), so sigma is its operator norm; ide_sn_kernel takes
 * instead the authors' sigma, the norm of the kernel reshaped to
 * (O, C K K) (notes 2.4), which does not bound the operator: with it
 * |alpha| <= c no longer guarantees the contraction of Theorems 1-2.
 * Every product goes through soma_gemm / soma_dense_* / soma_conv2d_*,
 * except the simulation's on sparse spikes: a product whose input spikes are
 * at most IDE_EVENT_DENSITY of its inputs sums the weights of the units that
 * fired instead (spike_gather, spike_conv: the same terms in another order
 * of the float sums).  Broyden takes its next step from the last one
 * (soma__ide_solve), one pass over each sample's pairs per iteration.
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
    c->ide_sn_kernel = 0;
    c->ide_fb_k = 0;
    c->ide_dropout = 0.0f;
}

static soma_status check_config(const soma_rule_config *c)
{
    if (c->T < 1) return soma__fail(SOMA_ERR_ARG, "IDE needs T >= 1 simulation steps, got %d", c->T);
    if (!(c->ide_vth > 0.0f) || !isfinite(c->ide_vth))
        return soma__fail(SOMA_ERR_ARG, "IDE threshold V_th (ide-vth) must be > 0 and finite, got %g",
                          c->ide_vth);
    if (!(c->ide_leak > 0.0f && c->ide_leak <= 1.0f))
        return soma__fail(SOMA_ERR_ARG, "IDE leak lambda (ide-leak) must be in (0, 1] (1 = IF), got %g",
                          c->ide_leak);
    if (c->ide_max_iter < 1)
        return soma__fail(SOMA_ERR_ARG, "IDE solver iterations (ide-max-iter) must be >= 1, got %d",
                          c->ide_max_iter);
    if (!(c->ide_tol > 0.0f) || !isfinite(c->ide_tol))
        return soma__fail(SOMA_ERR_ARG, "IDE solver tolerance (ide-tol) must be > 0, got %g", c->ide_tol);
    if (!(c->ide_damp > 0.0f && c->ide_damp <= 1.0f))
        return soma__fail(SOMA_ERR_ARG, "IDE fixed-point damping (ide-damp) must be in (0, 1], got %g",
                          c->ide_damp);
    if (c->ide_sn && (!(c->ide_sn_c > 0.0f) || !isfinite(c->ide_sn_c)))
        return soma__fail(SOMA_ERR_ARG, "IDE spectral-norm clip c (ide-sn-c) must be > 0, got %g",
                          c->ide_sn_c);
    if (c->ide_fb_k < 0 || (c->ide_fb_k > 0 && c->ide_fb_k % 2 == 0))
        return soma__fail(SOMA_ERR_ARG, "IDE conv feedback kernel (ide-fb-k) must be odd (pad "
                          "(K-1)/2), or 0 for F's kernel; got %d", c->ide_fb_k);
    if (!(c->ide_dropout >= 0.0f && c->ide_dropout < 1.0f))
        return soma__fail(SOMA_ERR_ARG, "IDE dropout rate (ide-dropout) must be in [0, 1), got %g",
                          c->ide_dropout);
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
            char want[64] = "", have[64] = "";
            for (int d = 0; d < ndim; d++)
                snprintf(want + strlen(want), sizeof want - strlen(want), "%s%lld", d ? "x" : "",
                         (long long)shape[d]);
            for (int d = 0; d < s->p[i].ndim; d++)
                snprintf(have + strlen(have), sizeof have - strlen(have), "%s%lld", d ? "x" : "",
                         (long long)s->p[i].shape[d]);
            return soma__fail(SOMA_ERR_SHAPE, "rule ide: tensor '%s' is %s, but this net and rule "
                              "need %s (the feedback weight maps the last hidden layer to the first; "
                              "the spectral norm's u, v follow ide-sn-kernel)", name, have, want);
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

/* Floats of a conv's kernel (O, C, KH, KW) */
static size_t conv_wn(const soma_conv_shape *s)
{
    return (size_t)s->O * s->C * s->KH * s->KW;
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
 * conv backward's dx path.  Transposed conv: W = A^T for the conv A of
 * e->wcs (layer 1's map -> layer H's), so W^T = A is the conv forward and W
 * its dx path.  So sigma is the operator norm, not the norm of the reshaped
 * kernel as in the authors' code (notes 2.4). */
static void power_iter(ide_state *e, const float *w, float *u, float *v)
{
    int m = e->sn_m, n = e->sn_n;
    soma_conv_shape s = one_sample(e->wcs);
    switch (e->sn_mat ? IDE_FB_DENSE : e->fbk) {
    case IDE_FB_CONV:
        memset(v, 0, (size_t)n * sizeof(float));
        soma_conv2d_backward(v, NULL, NULL, e->cws, u, NULL, w, &s);
        normalize(v, n);
        soma_conv2d_forward(u, e->cws, v, w, NULL, &s);
        normalize(u, m);
        return;
    case IDE_FB_CONVT:
        soma_conv2d_forward(v, e->cws, u, w, NULL, &s);
        normalize(v, n);
        memset(u, 0, (size_t)m * sizeof(float));
        soma_conv2d_backward(u, NULL, NULL, e->cws, v, NULL, w, &s);
        normalize(u, m);
        return;
    case IDE_FB_DENSE:
        break;
    }
    soma_gemv(1, m, n, 1.0f, w, n, u, 0.0f, v);
    normalize(v, n);
    soma_gemv(0, m, n, 1.0f, w, n, v, 0.0f, u);
    normalize(u, m);
}

/* sigma = u^T W v, in double (conv forms: W v into the scratch e->cfb) */
static double sn_sigma(ide_state *e, const float *w, const float *u, const float *v)
{
    int m = e->sn_m, n = e->sn_n;
    double s = 0;
    soma_conv_shape cs = one_sample(e->wcs);
    if (!e->sn_mat) {
        if (e->fbk == IDE_FB_CONV) {
            soma_conv2d_forward(e->cfb, e->cws, v, w, NULL, &cs);
        } else {
            memset(e->cfb, 0, (size_t)m * sizeof(float));
            soma_conv2d_backward(e->cfb, NULL, NULL, e->cws, v, NULL, w, &cs);
        }
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
 * dsigma/dw = u v^T (dense); conv: the kernel gradient of <u, conv(v; w)>
 * (the conv backward's dw with dy = u, x = v); transposed conv: of
 * <u, A^T v> = <A u, v> (dw with dy = v, x = u);
 * dalpha = <G,w> / sigma where |alpha| <= c (clamp passes on the closed interval). */
static void sn_backward(soma_rule *r)
{
    ide_state *e = r->state;
    soma_net *net = r->net;
    int m = e->sn_m, n = e->sn_n;
    const float *w = soma__param_value(net, e->fb);
    const float *u = soma__buffer_value(net, e->sn_u), *v = soma__buffer_value(net, e->sn_v);
    float *dw = soma__param_grad(net, e->fb);
    float c = r->cfg.ide_sn_c, g = soma__param_value(net, e->sn_g)[0];
    float gc = g < -c ? -c : g > c ? c : g;
    double sig = e->sigma, gw = 0;
    for (size_t i = 0; i < e->wn; i++) gw += (double)e->gweff[i] * w[i];
    double k1 = gc / sig, k2 = gc * gw / (sig * sig);
    if (!e->sn_mat) {
        soma_conv_shape s = one_sample(e->wcs);
        memset(e->dsig, 0, e->wn * sizeof(float));
        if (e->fbk == IDE_FB_CONV) soma_conv2d_backward(NULL, e->dsig, NULL, e->cws, u, v, w, &s);
        else soma_conv2d_backward(NULL, e->dsig, NULL, e->cws, v, u, w, &s);
        for (size_t q = 0; q < e->wn; q++) dw[q] += (float)(k1 * e->gweff[q] - k2 * e->dsig[q]);
    } else for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            size_t q = (size_t)i * n + j;
            dw[q] += (float)(k1 * e->gweff[q] - k2 * u[i] * v[j]);
        }
    if (g >= -c && g <= c) soma__param_grad(net, e->sn_g)[0] += (float)(gw / sig);
}

/* ---- init / release ------------------------------------------------------ */

/* Layer k's batchnorm from net layer l */
static void set_bn(ide_state *e, int k, const soma_layer *l)
{
    e->bn_g[k] = l->w;
    e->bn_b[k] = l->b;
    e->bn_rm[k] = l->run_mean;
    e->bn_rv[k] = l->run_var;
    e->bn_c[k] = l->in_c;
    e->bn_s[k] = l->in_h * l->in_w;
    e->bn_eps[k] = l->eps;
    e->bn_mom[k] = l->momentum;
}

/* Reads the net: dense form D_1 [bn] D_2 [bn] .. D_L (hidden layers 1..L-1,
 * the readout D_L); conv forms conv [bn] conv [bn] .. flatten D (the conv
 * layers are the hidden layers, one dense readout).  Fills H, n, w, b,
 * cs, the batchnorms; *first is the net index of the first layer. */
static soma_status read_net(ide_state *e, soma_net *net, int max_batch, int *first)
{
    int L = 0, nconv = 0, bn_k = 0;   /* bn_k: the layer a bn would follow, 0 = none */
    *first = -1;
    for (int i = 0; i < net->n_layers; i++) {
        const soma_layer *l = &net->layers[i];
        if (l->kind == SOMA_LAYER_ACT || l->kind == SOMA_LAYER_FLATTEN) continue;
        if (l->kind == SOMA_LAYER_CONV) {
            if (L > 0)
                return soma__fail(SOMA_ERR_UNSUPPORTED, "rule ide: conv layer %d of '%s' follows a "
                                  "dense layer; the conv forms take conv layers (F, then the S_k), "
                                  "then one dense readout", i, soma_net_spec(net));
            if (nconv == IDE_MAXH)
                return soma__fail(SOMA_ERR_UNSUPPORTED, "rule ide takes at most %d conv layers "
                                  "(layer %d of '%s')", IDE_MAXH, i, soma_net_spec(net));
            int k = ++nconv;
            if (*first < 0) *first = i;
            e->conv = 1;
            e->w[k] = l->w;
            e->b[k] = l->b;
            e->n[k] = (int)l->out_size;
            soma_status st = soma_conv_shape_init(&e->cs[k], max_batch, l->in_c, l->in_h, l->in_w,
                                                  l->out_c, l->k, l->k, l->stride, l->pad);
            if (st) return st;
            bn_k = k;
            continue;
        }
        if (l->kind == SOMA_LAYER_BATCHNORM) {
            if (bn_k == 0 || e->bn_g[bn_k] >= 0)
                return soma__fail(SOMA_ERR_UNSUPPORTED, "rule ide: batchnorm only right after F or "
                                  "a feed-forward map S_k (a hidden layer's dense / conv layer), not "
                                  "after the readout; layer %d of '%s'", i, soma_net_spec(net));
            set_bn(e, bn_k, l);
            continue;
        }
        if (l->kind != SOMA_LAYER_DENSE)
            return soma__fail(SOMA_ERR_UNSUPPORTED, "rule ide runs over dense layers, or conv layers "
                              "and a dense readout; layer %d of '%s' is neither (pooling, dropout "
                              "layers are not implemented: see ide-dropout)", i, soma_net_spec(net));
        if (l->rec >= 0)
            return soma__fail(SOMA_ERR_UNSUPPORTED, "rule ide: layer %d has a recurrent weight; the "
                              "feedback matrix is the rule's own", i);
        if (e->conv && L == 1)
            return soma__fail(SOMA_ERR_UNSUPPORTED, "rule ide: the convolutional forms take one "
                              "dense readout after the conv layers; '%s' has more (layer %d)",
                              soma_net_spec(net), i);
        if (L == IDE_MAXH + 1)
            return soma__fail(SOMA_ERR_UNSUPPORTED, "rule ide takes at most %d dense layers", IDE_MAXH + 1);
        L++;
        if (*first < 0) *first = i;
        int k = e->conv ? nconv + 1 : L;
        e->w[k] = l->w;
        e->b[k] = l->b;
        if (!e->conv && L <= IDE_MAXH) e->n[L] = l->out_c;
        bn_k = e->conv ? 0 : L;   /* after the conv forms' readout: none */
    }
    if (e->conv ? L != 1 : L < 2)
        return soma__fail(SOMA_ERR_ARG, "rule ide needs a feedback (hidden) layer and a readout: "
                          "'%s' has %d dense layer (e.g. 784-400-10, conv5x64s2p2-bn-10)",
                          soma_net_spec(net), L);
    e->H = e->conv ? nconv : L - 1;
    if (e->bn_g[e->H + 1] >= 0)
        return soma__fail(SOMA_ERR_UNSUPPORTED, "rule ide: batchnorm only right after F or a "
                          "feed-forward map S_k, not after the readout ('%s')", soma_net_spec(net));
    for (int k = 1; k <= e->H; k++)
        if (e->bn_g[k] >= 0 && e->bn_c[k] * e->bn_s[k] != e->n[k])
            return soma__fail(SOMA_ERR_SHAPE, "rule ide: the batchnorm of hidden layer %d has %d x %d "
                              "values, the layer %d", k, e->bn_c[k], e->bn_s[k], e->n[k]);
    for (int k = 2; k <= e->H; k++) e->sbn |= e->bn_g[k] >= 0;
    return SOMA_OK;
}

/* The feedback operator's kind and shape from the layers: dense (n1, nH);
 * single conv layer: a same-size conv (C, C, K, K); several: the transposed
 * conv (C_H, C_1, K, K) of the conv layer 1 -> layer H with stride s =
 * h_1 / h_H and pad (K-1)/2 (output padding s - 1: h_1 = s h_H exactly). */
static soma_status feedback_shape(ide_state *e, const soma_rule_config *c, int max_batch,
                                  int64_t shape[4], int *ndim)
{
    int H = e->H;
    if (!e->conv) {
        e->fbk = IDE_FB_DENSE;
        e->wn = (size_t)e->n[1] * e->n[H];
        shape[0] = e->n[1];
        shape[1] = e->n[H];
        *ndim = 2;
        return SOMA_OK;
    }
    const soma_conv_shape *f = &e->cs[1], *h = &e->cs[H];
    int K = c->ide_fb_k ? c->ide_fb_k : f->KH;
    if (K % 2 == 0)
        return soma__fail(SOMA_ERR_ARG, "rule ide: the conv feedback kernel takes F's size %d, "
                          "which is even (no pad (K-1)/2); set ide-fb-k to an odd size", K);
    int C1 = f->O, h1 = f->OH, w1 = f->OW;
    soma_status st;
    if (H == 1) {
        e->fbk = IDE_FB_CONV;
        if ((st = soma_conv_shape_init(&e->wcs, max_batch, C1, h1, w1, C1, K, K, 1, K / 2))) return st;
        shape[0] = shape[1] = C1;
    } else {
        e->fbk = IDE_FB_CONVT;
        int CH = h->O, hH = h->OH, wH = h->OW, s = hH > 0 ? h1 / hH : 0;
        if (s < 1 || h1 != s * hH || w1 != s * wH)
            return soma__fail(SOMA_ERR_SHAPE, "rule ide: the transposed-conv feedback maps the last "
                              "hidden layer's %dx%dx%d rates back to layer 1's %dx%dx%d, so layer 1's "
                              "map must be the same integer multiple of layer %d's in height and width",
                              CH, hH, wH, C1, h1, w1, H);
        if ((st = soma_conv_shape_init(&e->wcs, max_batch, C1, h1, w1, CH, K, K, s, (K - 1) / 2)))
            return st;
        if (e->wcs.OH != hH || e->wcs.OW != wH)
            return soma__fail(SOMA_ERR_SHAPE, "rule ide: transposed-conv feedback %dx%d stride %d "
                              "gives %dx%d, not layer %d's %dx%d", K, K, s, e->wcs.OH, e->wcs.OW, H,
                              hH, wH);
        shape[0] = CH;
        shape[1] = C1;
    }
    shape[2] = shape[3] = K;
    *ndim = 4;
    e->wn = (size_t)shape[0] * shape[1] * K * K;
    return SOMA_OK;
}

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
    e->ev_density = IDE_EVENT_DENSITY;
    for (int k = 0; k < IDE_MAXH + 2; k++) e->bn_g[k] = e->bn_b[k] = e->bn_rm[k] = e->bn_rv[k] = -1;
    int first;
    if ((st = read_net(e, net, max_batch, &first))) return st;
    e->n[0] = soma_net_inputs(net);
    e->C = soma_net_outputs(net);
    int H = e->H, n1 = e->n[1], nH = e->n[H];
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

    /* the feedback weight W, (n1, nH), (C, C, K, K) or (C_H, C_1, K, K), and
     * the spectral norm's tensors */
    int64_t shape[4] = { 0, 0, 0, 0 };
    int ndim = 0;
    if ((st = feedback_shape(e, c, max_batch, shape, &ndim))) return st;
    e->sn_mat = !e->conv || c->ide_sn_kernel;
    e->sn_m = e->sn_mat ? (int)shape[0] : n1;
    e->sn_n = e->sn_mat ? (int)(e->wn / (size_t)shape[0]) : nH;
    soma_rng rng;
    soma_rng_seed(&rng, net->opts.seed ^ 0x49444546424bull);   /* "IDEFBK": its own stream */
    char name[48];
    snprintf(name, sizeof name, "%d.weight_fb", first);
    int created;
    int idx = find_or_add(net, 1, name, ndim, shape, &created);
    if (idx < 0) return (soma_status)idx;
    e->fb = idx;
    if (created) {
        /* the authors' init: U(-1, 1), every output unit's weights (a dense
         * row, an output channel's filter; of the transposed conv the
         * weight[:, j] of output channel j) scaled to unit L2 norm */
        float *w = soma__param_value(net, idx);
        if (e->fbk == IDE_FB_CONVT) {
            int CH = (int)shape[0], C1 = (int)shape[1], KK = (int)(shape[2] * shape[3]);
            for (size_t i = 0; i < e->wn; i++) w[i] = 2.0f * soma_rng_uniform(&rng) - 1.0f;
            for (int j = 0; j < C1; j++) {
                double ss = 0;
                for (int ci = 0; ci < CH; ci++)
                    for (int q = 0; q < KK; q++) {
                        double x = w[((size_t)ci * C1 + j) * KK + q];
                        ss += x * x;
                    }
                double inv = 1.0 / (sqrt(ss) > 1e-12 ? sqrt(ss) : 1e-12);
                for (int ci = 0; ci < CH; ci++)
                    for (int q = 0; q < KK; q++) {
                        float *x = &w[((size_t)ci * C1 + j) * KK + q];
                        *x = (float)(*x * inv);
                    }
            }
        } else {
            int rows = (int)shape[0], cols = (int)(e->wn / (size_t)rows);
            for (int i = 0; i < rows; i++) {
                float *row = w + (size_t)i * cols;
                for (int j = 0; j < cols; j++) row[j] = 2.0f * soma_rng_uniform(&rng) - 1.0f;
                normalize(row, cols);
            }
        }
    }
    int init_alpha = 0;
    if (c->ide_sn) {
        int64_t one = 1, su = e->sn_m, sv = e->sn_n;
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
            for (int i = 0; i < e->sn_m; i++) u[i] = soma_rng_normal(&rng);
            for (int j = 0; j < e->sn_n; j++) v[j] = soma_rng_normal(&rng);
            normalize(u, e->sn_m);
            normalize(v, e->sn_n);
        }
        init_alpha = cg;
    }

    /* buffers */
    int maxn = 0;
    for (int k = 0; k <= H; k++) if (e->n[k] > maxn) maxn = e->n[k];
    size_t B = (size_t)max_batch, S = 0;
    for (int k = 1; k <= H; k++) S += (size_t)e->n[k];
    e->mem = c->ide_max_iter < IDE_MEM ? c->ide_max_iter : IDE_MEM;
    e->drop_alloc = c->ide_dropout > 0.0f;
    size_t wn = e->wn, cws = 0;
    if (e->conv) {
        e->cws_threads = soma_get_threads();
        cws = soma_conv2d_workspace(&e->wcs, e->cws_threads);
        for (int k = 1; k <= H; k++) {
            size_t a = soma_conv2d_workspace(&e->cs[k], e->cws_threads);
            if (a > cws) cws = a;
        }
    }
    size_t nbn = 0;   /* F's: its input, xhat, mean, invstd; S_k's: xhat, 2 x (mean, invstd) */
    if (e->bn_g[1] >= 0) nbn += 2 * B * n1 + 2 * (size_t)e->bn_c[1];
    for (int k = 2; k <= H; k++)
        if (e->bn_g[k] >= 0) nbn += B * e->n[k] + 4 * (size_t)e->bn_c[k];
    size_t nfr = e->frames ? 2 * B * (size_t)n0 + B * n1 : 0;   /* x-bar, a frame, its current */
    int need_cfb = e->conv || e->drop_alloc;
    size_t nwt = 0;   /* the transposes of the event-driven simulation */
    int maxh = 0;     /* widest hidden layer */
    for (int k = 1; k <= H; k++) if (e->n[k] > maxh) maxh = e->n[k];
    size_t nzev = 0;  /* conv forms: the channel-last accumulators, one per thread */
    if (!e->conv) {
        nwt = wn;
        for (int k = 2; k <= H; k++) nwt += (size_t)e->n[k - 1] * e->n[k];
    } else {
        nwt = wn;
        for (int k = 2; k <= H; k++) nwt += conv_wn(&e->cs[k]);
        e->nzev = (size_t)maxh;
        nzev = e->nzev * (size_t)e->cws_threads;
    }
    e->floats = 4 * B * S + (e->sbn ? 2 * B * S : 0) + B * n1 + 10 * B * nH + nwt + nzev +
                2 * B * (size_t)e->mem * nH + 3 * B * maxn + 3 * B * e->C + (c->ide_sn ? 2 * wn : 0) +
                cws + (need_cfb ? B * n1 : 0) + (e->conv && c->ide_sn ? wn : 0) + nbn + nfr +
                (e->drop_alloc ? B * S + B * n1 : 0);
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
        if (e->sbn) {
            e->pre_t[k] = p; p += m;
            e->act_t[k] = p; p += m;
        } else {
            e->pre_t[k] = e->pre[k];
            e->act_t[k] = e->act[k];
        }
    }
    e->fx = p; p += B * n1;
    float **vec[] = { &e->acc, &e->a, &e->gA, &e->beta, &e->best, &e->G, &e->Gn, &e->dx, &e->dg, &e->jt };
    for (size_t i = 0; i < sizeof vec / sizeof *vec; i++) { *vec[i] = p; p += B * nH; }
    e->U = p; p += B * e->mem * nH;
    e->V = p; p += B * e->mem * nH;
    e->d0 = p; p += B * maxn;
    e->d1 = p; p += B * maxn;
    e->d2 = p; p += B * maxn;
    e->logits = p; p += B * e->C;
    e->probs = p; p += B * e->C;
    e->dl = p; p += B * e->C;
    if (c->ide_sn) {
        e->weff = p; p += wn;
        e->gweff = p; p += wn;
    } else {
        e->weff = soma__param_value(net, e->fb);   /* stable: nothing is added after init */
    }
    if (e->conv) { e->cws = p; p += cws; }
    if (need_cfb) { e->cfb = p; p += B * n1; }
    if (e->conv && c->ide_sn) { e->dsig = p; p += wn; }
    if (e->bn_g[1] >= 0) {
        e->fpre = p; p += B * n1;
        e->bnc[1].xhat = p; p += B * n1;
        e->bnc[1].mean = p; p += e->bn_c[1];
        e->bnc[1].invstd = p; p += e->bn_c[1];
    }
    for (int k = 2; k <= H; k++) {
        if (e->bn_g[k] < 0) continue;
        e->bnc[k].xhat = p; p += B * e->n[k];
        e->bnc[k].mean = p; p += e->bn_c[k];
        e->bnc[k].invstd = p; p += e->bn_c[k];
        e->bne[k].mean = p; p += e->bn_c[k];
        e->bne[k].invstd = p; p += e->bn_c[k];
    }
    if (e->frames) {
        e->xbar = p; p += B * n0;
        e->xt = p; p += B * n0;
        e->fstep = p; p += B * n1;
    }
    if (e->drop_alloc) {
        for (int k = 1; k <= H; k++) { e->drop[k] = p; p += B * e->n[k]; }
        e->drop_fb = p; p += B * n1;
    }
    e->wt_fb = p; p += wn;
    for (int k = 2; k <= H; k++) {
        e->wt[k] = p;
        p += e->conv ? conv_wn(&e->cs[k]) : (size_t)e->n[k - 1] * e->n[k];
    }
    /* spike index lists: dense forms (B, maxh); conv forms, per thread, those
     * of conv_scatter_sample: C H + 1 row offsets and C H W column indices */
    if (e->conv) {
        e->zev = p; p += nzev;
        e->nsidx = (2 * (size_t)maxh + 2) * (size_t)e->cws_threads;
    } else {
        e->nsidx = B * (size_t)maxh;
    }
    e->sidx = soma__malloc_aligned(e->nsidx * sizeof(int));
    if (!e->sidx) return SOMA_ERR_NOMEM;
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
    soma__free_aligned(e->sidx);
    soma__free(e);
}

static void ide_plan(const soma_rule *r, soma_mem_plan *p)
{
    const ide_state *e = r->state;
    size_t B = (size_t)r->max_batch, S = 0;
    for (int k = 1; k <= e->H; k++) S += (size_t)e->n[k];
    /* activations: membranes, spikes, rates (flat in T); the rest is the solver's */
    p->activations = (2 * B * S + 2 * B * e->n[e->H]) * sizeof(float);
    p->workspace = e->floats * sizeof(float) - p->activations + e->nsidx * sizeof(int);
}

void soma__ide_draw_masks(soma_rule *r, soma_rng *rng, int B)
{
    ide_state *e = r->state;
    float p = r->cfg.ide_dropout;
    if (!(p > 0.0f) || !e->drop_alloc) return;
    for (int k = 1; k <= e->H; k++) soma_dropout_mask(e->drop[k], (size_t)B * e->n[k], p, rng);
    soma_dropout_mask(e->drop_fb, (size_t)B * e->n[1], p, rng);
}

/* ---- forward: the spiking simulation ------------------------------------- */

/* returns the number of spikes; acc (the last layer's rate accumulator, or
 * NULL): acc = lam acc + s in the same pass */
SOMA_SIMD_CLONES
static int64_t spike_step(float *restrict u, float *restrict s, float *restrict acc, size_t m,
                          float V, float lam)
{
    int64_t n = 0;
    if (acc) {
        _Pragma("omp simd reduction(+:n)")
        for (size_t i = 0; i < m; i++) {
            const float ui = u[i];
            const int fire = ui >= V;
            const float sp = fire ? 1.0f : 0.0f;
            s[i] = sp;
            u[i] = (ui - V * sp) * lam;
            acc[i] = lam * acc[i] + sp;
            n += fire;
        }
        return n;
    }
    _Pragma("omp simd reduction(+:n)")
    for (size_t i = 0; i < m; i++) {
        const float ui = u[i];
        const int fire = ui >= V;                 /* test >= (the authors' code) */
        const float sp = fire ? 1.0f : 0.0f;
        s[i] = sp;
        u[i] = (ui - V * sp) * lam;            /* reset by subtraction, then the leak */
        n += fire;
    }
    return n;
}

/* dst (cols, rows) <- src (rows, cols)^T, in tiles */
static void transpose(float *restrict dst, const float *restrict src, int rows, int cols)
{
    enum { TB = 32 };
    for (int i0 = 0; i0 < rows; i0 += TB)
        for (int j0 = 0; j0 < cols; j0 += TB) {
            int i1 = i0 + TB < rows ? i0 + TB : rows, j1 = j0 + TB < cols ? j0 + TB : cols;
            for (int j = j0; j < j1; j++)
                for (int i = i0; i < i1; i++) dst[(size_t)j * rows + i] = src[(size_t)i * cols + j];
        }
}

/* y (B, O) += c + s (B, I) w^T for spikes s (every entry 0 or 1), from wt =
 * w^T (I, O); c (B, O) may be NULL: y + c is added first (the same sum as
 * add_into before, in the same pass as the first rows).  Each sample adds
 * the rows of wt of its inputs that fired, in index order, eight rows a
 * pass (y + w_j1 + w_j2 + ..., evaluated left to right: the same sums as
 * one row at a time).  These are exactly the dense product's nonzero terms
 * (1 * w = w), so the result differs from soma_gemm's only by the order of
 * the float sums.  idx: B * I ints. */
/* one sample of spike_gather: yb (O) += cb + the rows of wt of the spikes in
 * sb (I); ib: I ints */
SOMA_SIMD_CLONES
static void gather_sample(float *restrict yb, const float *cb, const float *restrict sb,
                          const float *restrict wt, int I, int O, int *restrict ib)
{
    int n = 0;
    for (int j = 0; j < I; j++) {   /* branch-free compaction of the spike list */
        ib[n] = j;
        n += sb[j] != 0.0f;
    }
    int q = 0;
    if (cb) {   /* y + c, with the first eight rows when there are as many */
        if (n >= 8) {
            const float *w0 = wt + (size_t)ib[0] * O, *w1 = wt + (size_t)ib[1] * O;
            const float *w2 = wt + (size_t)ib[2] * O, *w3 = wt + (size_t)ib[3] * O;
            const float *w4 = wt + (size_t)ib[4] * O, *w5 = wt + (size_t)ib[5] * O;
            const float *w6 = wt + (size_t)ib[6] * O, *w7 = wt + (size_t)ib[7] * O;
            _Pragma("omp simd")
            for (int o = 0; o < O; o++)
                yb[o] = yb[o] + cb[o] + w0[o] + w1[o] + w2[o] + w3[o] + w4[o] + w5[o] + w6[o] + w7[o];
            q = 8;
        } else {
            _Pragma("omp simd")
            for (int o = 0; o < O; o++) yb[o] += cb[o];
        }
    }
    for (; q + 8 <= n; q += 8) {
        const float *w0 = wt + (size_t)ib[q] * O, *w1 = wt + (size_t)ib[q + 1] * O;
        const float *w2 = wt + (size_t)ib[q + 2] * O, *w3 = wt + (size_t)ib[q + 3] * O;
        const float *w4 = wt + (size_t)ib[q + 4] * O, *w5 = wt + (size_t)ib[q + 5] * O;
        const float *w6 = wt + (size_t)ib[q + 6] * O, *w7 = wt + (size_t)ib[q + 7] * O;
        _Pragma("omp simd")
        for (int o = 0; o < O; o++)
            yb[o] = yb[o] + w0[o] + w1[o] + w2[o] + w3[o] + w4[o] + w5[o] + w6[o] + w7[o];
    }
    for (; q < n; q++) {
        const float *w0 = wt + (size_t)ib[q] * O;
        _Pragma("omp simd")
        for (int o = 0; o < O; o++) yb[o] += w0[o];
    }
}

static void spike_gather(float *y, const float *c, const float *s, const float *wt, int B, int I,
                         int O, int *idx)
{
    #pragma omp parallel for schedule(static) if ((size_t)B * I >= 8192 && soma_get_threads() > 1)
    for (int b = 0; b < B; b++)
        gather_sample(y + (size_t)b * O, c ? c + (size_t)b * O : NULL, s + (size_t)b * I, wt, I, O,
                      idx + (size_t)b * I);
}

static int thread_id(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* The kernel w (O, C, KH, KW) of the conv s laid out for spike_conv:
 * transposed == 0 (the conv itself, input channel c -> every output
 * channel): wt (C, KH, KW, O), with kw reversed at stride 1 (reversed_kw);
 * transposed != 0 (its dx path, the transposed conv, output channel o ->
 * every input channel): wt (O, KH, KW, C).  Either way, for one spike and one
 * kernel row, the taps it reaches along an output row are then one contiguous
 * run of wt matching one of the accumulator (conv_scatter_sample). */
static int reversed_kw(const soma_conv_shape *s, int transposed) { return !transposed && s->stride == 1; }

static void conv_layout(float *restrict wt, const float *restrict w, const soma_conv_shape *s,
                        int transposed)
{
    const int O = s->O, C = s->C, KH = s->KH, KW = s->KW, rev = reversed_kw(s, transposed);
    for (int o = 0; o < O; o++)
        for (int c = 0; c < C; c++)
            for (int kh = 0; kh < KH; kh++)
                for (int kw = 0; kw < KW; kw++) {
                    float v = w[(((size_t)o * C + c) * KH + kh) * KW + kw];
                    if (transposed) wt[(((size_t)o * KH + kh) * KW + kw) * C + c] = v;
                    else wt[(((size_t)c * KH + kh) * KW + (rev ? KW - 1 - kw : kw)) * O + o] = v;
                }
}

/* y += mask (conv of the spikes in), every entry of `in` 0 or 1, no bias,
 * event-driven.  transposed == 0: the conv s itself, in (B, C, H, W) -> y
 * (B, O, OH, OW); transposed != 0: its dx path (the transposed conv), in (B,
 * O, OH, OW) -> y (B, C, H, W).  wt: conv_layout's.  Each spike adds its
 * kernel slice (a run of every output channel) at each output position it
 * reaches, into a channel-last accumulator (one map per thread, zev, nzev
 * floats apart), added into y (times mask, which may be NULL) at the end:
 * the dense conv's nonzero terms, in another order of the float sums. */
/* one sample of spike_conv: z (P, co) <- the spikes sb (ci, hi, wi)
 * scattered through wt; then yb (co, P) += mb z^T (mb may be NULL) */
SOMA_SIMD_CLONES
static void conv_scatter_sample(float *restrict yb, const float *restrict mb, const float *restrict sb,
                                const float *restrict wt, const soma_conv_shape *s, int transposed,
                                float *restrict z, int *restrict lists)
{
    const int KH = s->KH, KW = s->KW, st = s->stride, pd = s->pad;
    const int ci = transposed ? s->O : s->C, hi = transposed ? s->OH : s->H, wi = transposed ? s->OW : s->W;
    const int co = transposed ? s->C : s->O, ho = transposed ? s->H : s->OH, wo = transposed ? s->W : s->OW;
    const size_t P = (size_t)ho * wo, nout = (size_t)co * P;
    memset(z, 0, nout * sizeof(float));
    if (transposed || st == 1) {
        /* One output row at a time, so its accumulator row (wo co floats)
         * stays in L1 while the kernel rows stream from L2: spike by spike,
         * the whole accumulator (64 x 14 x 14 floats for F64C5) would go
         * through L2 twice per spike.  Along the row, xo rises with the
         * layout's tap index r (transposed: xo = xi st - pd + r; reversed
         * stride 1: r = KW-1-dx, xo = xi + pd - (KW-1) + r), so the taps of
         * a kernel row are one run, r in [r0, r1), added in one loop.  For
         * each output entry the terms come in the order (c, yi, xi), as a
         * spike-by-spike scatter adds them: the same float sums. */
        /* the spikes of each input row (c, yi) as a list of xi, written
         * without a branch (each output row reads up to KH input rows, so a
         * test per input entry there would mispredict KH times as often) */
        int *restrict off = lists, *restrict xs = lists + (size_t)ci * hi + 1;
        int nsp = 0;
        for (size_t r = 0; r < (size_t)ci * hi; r++) {
            const float *restrict srow = sb + r * wi;
            off[r] = nsp;
            for (int xi = 0; xi < wi; xi++) { xs[nsp] = xi; nsp += srow[xi] != 0.0f; }
        }
        off[(size_t)ci * hi] = nsp;
        for (int yo = 0; yo < ho; yo++) {
            int ylo, yhi;   /* the input rows reaching yo, with dy in [0, KH) */
            if (transposed) {   /* dy = yo + pd - yi st */
                int num = yo + pd - KH + 1;
                ylo = num <= 0 ? 0 : (num + st - 1) / st;
                yhi = (yo + pd) / st;
            } else {            /* dy = yi + pd - yo */
                ylo = yo - pd;
                yhi = yo - pd + KH - 1;
            }
            if (ylo < 0) ylo = 0;
            if (yhi > hi - 1) yhi = hi - 1;
            float *restrict zrow = z + (size_t)yo * wo * co;
            for (int c = 0; c < ci; c++)
                for (int yi = ylo; yi <= yhi; yi++) {
                    const int dy = transposed ? yo + pd - yi * st : yi + pd - yo;
                    const size_t r = (size_t)c * hi + yi;
                    const float *restrict wdy = wt + ((size_t)c * KH + dy) * KW * co;
                    for (int q = off[r]; q < off[r + 1]; q++) {
                        const int xi = xs[q];
                        const int base = transposed ? xi * st - pd : xi + pd - (KW - 1);
                        const int r0 = base < 0 ? -base : 0, r1 = wo - base < KW ? wo - base : KW;
                        if (r1 <= r0) continue;
                        const size_t len = (size_t)(r1 - r0) * co;
                        float *restrict zr = zrow + (size_t)(base + r0) * co;
                        const float *restrict wr = wdy + (size_t)r0 * co;
                        _Pragma("omp simd")
                        for (size_t j = 0; j < len; j++) zr[j] += wr[j];
                    }
                }
        }
    } else {
        /* stride > 1 forward (spike frames into F): spike by spike, every
         * st-th tap.  The taps (dy, dx) and output positions (yo, xo) a
         * spike reaches: yo st + dy - pd = yi, i.e. dy = (yi + pd) mod st,
         * + st, ..., with yo = (yi + pd) / st, - 1, ... (xo likewise) */
        for (int c = 0; c < ci; c++)
            for (int yi = 0; yi < hi; yi++)
                for (int xi = 0; xi < wi; xi++) {
                    if (sb[((size_t)c * hi + yi) * wi + xi] == 0.0f) continue;
                    const int dy0 = (yi + pd) % st, yo0 = (yi + pd) / st;
                    const int dx0 = (xi + pd) % st, xo0 = (xi + pd) / st;
                    for (int dy = dy0, yo = yo0; dy < KH; dy += st, yo--) {
                        if (yo < 0 || yo >= ho) continue;
                        for (int dx = dx0, xo = xo0; dx < KW; dx += st, xo--) {
                            if (xo < 0 || xo >= wo) continue;
                            float *restrict zr = z + ((size_t)yo * wo + xo) * co;
                            const float *restrict wr = wt + (((size_t)c * KH + dy) * KW + dx) * co;
                            _Pragma("omp simd")
                            for (int o = 0; o < co; o++) zr[o] += wr[o];
                        }
                    }
                }
    }
    for (int o = 0; o < co; o++) {
        float *yr = yb + (size_t)o * P;
        if (mb)
            for (size_t q = 0; q < P; q++) yr[q] += mb[(size_t)o * P + q] * z[q * co + o];
        else
            for (size_t q = 0; q < P; q++) yr[q] += z[q * co + o];
    }
}

/* the calling thread's spike lists (conv forms; thread tid of cws_threads) */
static int *scatter_lists(ide_state *e, int tid)
{
    return e->sidx + (size_t)tid * (2 * e->nzev + 2);
}

static void spike_conv(float *y, const float *mask, const float *in, const float *wt,
                       const soma_conv_shape *s, int transposed, int B, ide_state *e)
{
    const size_t nin = transposed ? (size_t)s->O * s->OH * s->OW : (size_t)s->C * s->H * s->W;
    const size_t nout = transposed ? (size_t)s->C * s->H * s->W : (size_t)s->O * s->OH * s->OW;
    #pragma omp parallel if (B > 1 && soma_get_threads() > 1)
    {
        size_t lo, hi_b;
        soma__thread_range((size_t)B, &lo, &hi_b);
        float *z = e->zev + (size_t)thread_id() * e->nzev;
        int *lists = scatter_lists(e, thread_id());
        for (size_t b = lo; b < hi_b; b++)
            conv_scatter_sample(y + b * nout, mask ? mask + b * nout : NULL, in + b * nin, wt, s,
                                transposed, z, lists);
    }
}

/* Takes a product on `count` spikes of B x n inputs the event-driven path? */
static int use_events(ide_state *e, int64_t count, int B, int n)
{
    if (e->event < 0) return 0;
    return e->event > 0 || (double)count <= e->ev_density * (double)B * n;
}

/* x *= mask, elementwise (a dropout mask) */
static void mul_into(float *restrict x, const float *restrict mask, size_t m)
{
    _Pragma("omp simd")
    for (size_t i = 0; i < m; i++) x[i] *= mask[i];
}

/* u += c: a vector loop (the state's buffers never alias) */
static void add_into(float *restrict u, const float *restrict c, size_t m)
{
    _Pragma("omp simd")
    for (size_t i = 0; i < m; i++) u[i] += c[i];
}

/* u += mask c */
static void add_masked(float *restrict u, const float *restrict c, const float *restrict mask, size_t m)
{
    _Pragma("omp simd")
    for (size_t i = 0; i < m; i++) u[i] += mask[i] * c[i];
}

/* out (B, n[k]) <- layer k's linear map with its bias on in (B, n[k-1]):
 * F (k = 1, from the input) or S_k; dense or conv */
static void lin_map(soma_rule *r, int k, float *out, const float *in, int B)
{
    ide_state *e = r->state;
    soma_net *net = r->net;
    if (e->conv) {
        soma_conv_shape s = e->cs[k];
        s.B = B;
        soma_conv2d_forward(out, e->cws, in, soma__param_value(net, e->w[k]),
                            soma__param_value(net, e->b[k]), &s);
    } else {
        soma_dense_forward(out, in, soma__param_value(net, e->w[k]), soma__param_value(net, e->b[k]),
                           B, e->n[k - 1], e->n[k]);
    }
}

/* layer k's batchnorm (k >= 2) with its running statistics, in place on
 * x (B, n[k]); cache (may be NULL) keeps the mean and 1/std used */
static void bn_running(soma_rule *r, int k, float *x, soma_bn_cache *cache, int B)
{
    ide_state *e = r->state;
    soma_net *net = r->net;
    soma_batchnorm_forward(x, cache, soma__buffer_value(net, e->bn_rm[k]),
                           soma__buffer_value(net, e->bn_rv[k]), x, soma__param_value(net, e->bn_g[k]),
                           soma__param_value(net, e->bn_b[k]), B, e->bn_c[k], e->bn_s[k], e->bn_eps[k],
                           e->bn_mom[k], 0);
}

/* e->fx (B, n1) <- F x: dense or conv (+ bias), then F's batchnorm if any:
 * mode 0 running statistics, 1 batch statistics and one update of the
 * running ones, 2 batch statistics only.  The statistics are those of F x
 * itself (spike input: x = x-bar), fixed for the whole simulation, the rate
 * map and the implicit solve (constant input: F x is the same at every
 * step; notes 2.5); e->bnc[1] keeps the mean and 1/std used.  Then F's
 * dropout mask (in training). */
static void input_map(soma_rule *r, const float *x, int B, int mode)
{
    ide_state *e = r->state;
    soma_net *net = r->net;
    float *out = e->bn_g[1] >= 0 ? e->fpre : e->fx;
    lin_map(r, 1, out, x, B);
    if (e->bn_g[1] >= 0) {
        int upd = mode == 1;
        soma_batchnorm_forward(e->fx, &e->bnc[1], upd || !mode ? soma__buffer_value(net, e->bn_rm[1]) : NULL,
                               upd || !mode ? soma__buffer_value(net, e->bn_rv[1]) : NULL, e->fpre,
                               soma__param_value(net, e->bn_g[1]), soma__param_value(net, e->bn_b[1]), B,
                               e->bn_c[1], e->bn_s[1], e->bn_eps[1], e->bn_mom[1], mode != 0);
    }
    if (e->drop_on) mul_into(e->fx, e->drop[1], (size_t)B * e->n[1]);
}

/* out (B, n1) += D_W (W a): the feedback (through the scratch e->cfb for the
 * conv forms and with dropout) */
static void feedback_add(ide_state *e, float *out, const float *a, int B)
{
    int n1 = e->n[1], nH = e->n[e->H];
    size_t m1 = (size_t)B * n1;
    soma_conv_shape s = e->wcs;
    s.B = B;
    switch (e->fbk) {
    case IDE_FB_DENSE:
        if (!e->drop_on) {
            soma_gemm(0, 1, B, n1, nH, 1.0f, a, nH, e->weff, nH, 1.0f, out, n1);
            return;
        }
        soma_gemm(0, 1, B, n1, nH, 1.0f, a, nH, e->weff, nH, 0.0f, e->cfb, n1);
        break;
    case IDE_FB_CONV:
        soma_conv2d_forward(e->cfb, e->cws, a, e->weff, NULL, &s);
        break;
    case IDE_FB_CONVT:   /* the transposed conv: the dx path of the conv layer 1 -> H */
        memset(e->cfb, 0, m1 * sizeof(float));
        soma_conv2d_backward(e->cfb, NULL, NULL, e->cws, a, NULL, e->weff, &s);
        break;
    }
    if (e->drop_on) add_masked(out, e->cfb, e->drop_fb, m1);
    else add_into(out, e->cfb, m1);
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
 * as soma_batchnorm_forward, then F's dropout mask (in training). */
static void frame_current(soma_rule *r, const float *x, int t, int B)
{
    ide_state *e = r->state;
    soma_net *net = r->net;
    int T = r->cfg.T, n0 = e->n[0];
    for (int s = 0; s < B; s++)
        memcpy(e->xt + (size_t)s * n0, x + ((size_t)s * T + t) * n0, (size_t)n0 * sizeof(float));
    lin_map(r, 1, e->fstep, e->xt, B);
    if (e->bn_g[1] >= 0) {
        const float *g = soma__param_value(net, e->bn_g[1]), *bt = soma__param_value(net, e->bn_b[1]);
        int C = e->bn_c[1], S = e->bn_s[1];
        for (int s = 0; s < B; s++)
            for (int ch = 0; ch < C; ch++) {
                float *y = e->fstep + ((size_t)s * C + ch) * S;
                const float m = e->bnc[1].mean[ch], is = e->bnc[1].invstd[ch];
                for (int q = 0; q < S; q++) {
                    float h = (y[q] - m) * is;
                    y[q] = g[ch] * h + bt[ch];
                }
            }
    }
    if (e->drop_on) mul_into(e->fstep, e->drop[1], (size_t)B * e->n[1]);
}

/* One sample b of a single-layer net (H = 1, dense or conv), all T steps,
 * every feedback product event-driven: what the batch loop below computes
 * for it when every product takes the event path (the same calls on the
 * same rows, so the same bits), with no step-by-step synchronisation between
 * samples.  z: the calling thread's conv accumulator (conv forms). */
static void simulate_sample(ide_state *e, const float *cur, size_t b, int T, float V, float lam, float *z)
{
    const int n = e->n[1];
    const size_t o = b * (size_t)n;
    float *u = e->u[1] + o, *sp = e->s[1] + o, *acc = e->acc + o;
    const float *c = cur + o;
    for (int t = 0; t < T; t++) {
        if (t == 0) {
            add_into(u, c, (size_t)n);
        } else if (e->conv) {
            add_into(u, c, (size_t)n);
            conv_scatter_sample(u, e->drop_on ? e->drop_fb + o : NULL, sp, e->wt_fb, &e->wcs,
                                e->fbk == IDE_FB_CONVT, z, scatter_lists(e, thread_id()));
        } else if (e->drop_on) {
            float *cfb = e->cfb + o;
            add_into(u, c, (size_t)n);
            memset(cfb, 0, (size_t)n * sizeof(float));
            gather_sample(cfb, NULL, sp, e->wt_fb, n, n, e->sidx + o);
            add_masked(u, cfb, e->drop_fb + o, (size_t)n);
        } else {
            gather_sample(u, c, sp, e->wt_fb, n, n, e->sidx + o);
        }
        spike_step(u, sp, acc, (size_t)n, V, lam);
    }
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
    int64_t cnt[IDE_MAXH + 1] = { 0 };   /* spikes of each layer in the last step */
    memset(e->wt_ok, 0, sizeof e->wt_ok);
    e->ev_products = e->gemm_products = 0;
    /* Several threads, a single layer, static input: each thread runs its
     * samples through all T steps on the event path, with no parallel region
     * or barrier per step (under the passive wait policy the CLI sets, each
     * one wakes the other threads: most of a 2-thread step's time).  Dense:
     * a sample's rows of W^T never cost more than its share of the batched
     * GEMM's reads; conv: the scatter wins below ~0.35 of the units firing
     * (docs/ide.md), and the trained nets fire at 0.1-0.2.  So the spike
     * count is not consulted here; one thread keeps the per-step choice
     * below (so its runs are as before). */
    int per_sample = H == 1 && !e->frames && e->event >= 0 && B > 1 && soma_get_threads() > 1 &&
                     (!e->conv || soma_get_threads() <= e->cws_threads);
    if (per_sample) {
        if (e->conv) conv_layout(e->wt_fb, e->weff, &e->wcs, e->fbk == IDE_FB_CONVT);
        else transpose(e->wt_fb, e->weff, n1, nH);
        e->wt_ok[1] = 1;
        const float *cur = e->fx;
        #pragma omp parallel
        {
            size_t lo, hi;
            soma__thread_range((size_t)B, &lo, &hi);
            float *z = e->conv ? e->zev + (size_t)thread_id() * e->nzev : NULL;
            for (size_t b = lo; b < hi; b++) simulate_sample(e, cur, b, c->T, V, lam, z);
        }
        e->ev_products = c->T - 1;
    }
    for (int t = 0; t < c->T && !per_sample; t++) {
        const float *cur = e->fx;   /* constant current, or frame t's */
        if (e->frames) {
            frame_current(r, x, t, B);
            cur = e->fstep;
        }
        /* u_1 += current, then (t > 0) += D_W (W s_H(t-1)) */
        if (t > 0 && use_events(e, cnt[H], B, nH) && e->conv) {
            if (!e->wt_ok[1]) {
                conv_layout(e->wt_fb, e->weff, &e->wcs, e->fbk == IDE_FB_CONVT);
                e->wt_ok[1] = 1;
            }
            add_into(e->u[1], cur, m1);
            spike_conv(e->u[1], e->drop_on ? e->drop_fb : NULL, e->s[H], e->wt_fb, &e->wcs,
                       e->fbk == IDE_FB_CONVT, B, e);
            e->ev_products++;
        } else if (t > 0 && use_events(e, cnt[H], B, nH)) {
            if (!e->wt_ok[1]) { transpose(e->wt_fb, e->weff, n1, nH); e->wt_ok[1] = 1; }
            if (e->drop_on) {
                add_into(e->u[1], cur, m1);
                memset(e->cfb, 0, m1 * sizeof(float));
                spike_gather(e->cfb, NULL, e->s[H], e->wt_fb, B, nH, n1, e->sidx);
                add_masked(e->u[1], e->cfb, e->drop_fb, m1);
            } else {   /* (u_1 + current) + the rows, in one pass */
                spike_gather(e->u[1], cur, e->s[H], e->wt_fb, B, nH, n1, e->sidx);
            }
            e->ev_products++;
        } else {
            add_into(e->u[1], cur, m1);
            if (t > 0) {
                feedback_add(e, e->u[1], e->s[H], B);
                e->gemm_products++;
            }
        }
        cnt[1] = spike_step(e->u[1], e->s[1], H == 1 ? e->acc : NULL, m1, V, lam);
        for (int k = 2; k <= H; k++) {
            int nk = e->n[k], np = e->n[k - 1];
            size_t mk = (size_t)B * nk;
            int ev = use_events(e, cnt[k - 1], B, np);
            if (ev && !e->wt_ok[k]) {
                if (e->conv) conv_layout(e->wt[k], soma__param_value(net, e->w[k]), &e->cs[k], 0);
                else transpose(e->wt[k], soma__param_value(net, e->w[k]), nk, np);
                e->wt_ok[k] = 1;
            }
            e->ev_products += ev;
            e->gemm_products += !ev;
            const float *bk = soma__param_value(net, e->b[k]);
            if (!e->conv && e->bn_g[k] < 0 && !e->drop_on) {   /* u_k += S_k s + b_k in place */
                if (ev) spike_gather(e->u[k], NULL, e->s[k - 1], e->wt[k], B, np, nk, e->sidx);
                else soma_gemm(0, 1, B, nk, np, 1.0f, e->s[k - 1], np, soma__param_value(net, e->w[k]),
                               np, 1.0f, e->u[k], nk);
                for (int i = 0; i < B; i++)
                    for (int j = 0; j < nk; j++) e->u[k][(size_t)i * nk + j] += bk[j];
            } else {   /* u_k += D_k BN_k(S_k s + b_k), BN_k with the running statistics */
                if (ev && e->conv) {   /* lin_map's conv + bias, event-driven */
                    int O = e->cs[k].O, P = e->cs[k].OH * e->cs[k].OW;
                    memset(e->d0, 0, mk * sizeof(float));
                    spike_conv(e->d0, NULL, e->s[k - 1], e->wt[k], &e->cs[k], 0, B, e);
                    for (int i = 0; i < B; i++)
                        for (int o = 0; o < O; o++) {
                            float *d = e->d0 + ((size_t)i * O + o) * P;
                            for (int q = 0; q < P; q++) d[q] += bk[o];
                        }
                } else if (ev) {   /* lin_map's S_k s + b_k, the product event-driven */
                    memset(e->d0, 0, mk * sizeof(float));
                    spike_gather(e->d0, NULL, e->s[k - 1], e->wt[k], B, np, nk, e->sidx);
                    for (int i = 0; i < B; i++)
                        for (int j = 0; j < nk; j++) e->d0[(size_t)i * nk + j] += bk[j];
                } else {
                    lin_map(r, k, e->d0, e->s[k - 1], B);
                }
                if (e->bn_g[k] >= 0) bn_running(r, k, e->d0, NULL, B);
                if (e->drop_on) add_masked(e->u[k], e->d0, e->drop[k], mk);
                else add_into(e->u[k], e->d0, mk);
            }
            cnt[k] = spike_step(e->u[k], e->s[k], k == H ? e->acc : NULL, mk, V, lam);
        }
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

/* f at a (B, n[H]) into e->pre / e->act (train == 0: S_k's batchnorm with
 * the running statistics, the map of the simulation and of J) or into
 * e->pre_t / e->act_t (train != 0: S_k's batchnorm with the batch
 * statistics, kept in e->bnc[k] for the VJP; the running statistics move
 * once when e->sbn_update).  Without S_k batchnorm both are the same map
 * in the same buffers. */
static void map_at(soma_rule *r, const float *a, int B, int train)
{
    ide_state *e = r->state;
    soma_net *net = r->net;
    int H = e->H, n1 = e->n[1];
    float invV = 1.0f / r->cfg.ide_vth;
    float **pre = train ? e->pre_t : e->pre, **act = train ? e->act_t : e->act;
    /* pre_1 = (D_W (W a) + F x) / V, F x with its batchnorm and mask */
    memcpy(pre[1], e->fx, (size_t)B * n1 * sizeof(float));
    feedback_add(e, pre[1], a, B);
    clamp_layer(pre[1], act[1], (size_t)B * n1, invV);
    for (int k = 2; k <= H; k++) {
        size_t mk = (size_t)B * e->n[k];
        lin_map(r, k, pre[k], act[k - 1], B);
        if (e->bn_g[k] >= 0) {
            if (train) {
                int upd = e->sbn_update;
                soma_batchnorm_forward(pre[k], &e->bnc[k], upd ? soma__buffer_value(net, e->bn_rm[k]) : NULL,
                                       upd ? soma__buffer_value(net, e->bn_rv[k]) : NULL, pre[k],
                                       soma__param_value(net, e->bn_g[k]), soma__param_value(net, e->bn_b[k]),
                                       B, e->bn_c[k], e->bn_s[k], e->bn_eps[k], e->bn_mom[k], 1);
            } else {
                bn_running(r, k, pre[k], &e->bne[k], B);
            }
        }
        if (e->drop_on) mul_into(pre[k], e->drop[k], mk);
        clamp_layer(pre[k], act[k], mk, invV);
    }
}

void soma__ide_map(soma_rule *r, float *out, const float *a, int B)
{
    ide_state *e = r->state;
    map_at(r, a, B, 0);
    if (out) memcpy(out, e->act[e->H], (size_t)B * e->n[e->H] * sizeof(float));
}

/* e (B, n) <- [0 <= pre <= 1] d / V  (clamp passes the gradient on the closed interval);
 * eo may be d.  Branch-free, so it vectorises (the && form compiled to two
 * unpredictable branches per element: a tenth of a training iteration). */
static void mask_layer(float *eo, const float *d, const float *pre, size_t m, float invV)
{
    _Pragma("omp simd")
    for (size_t i = 0; i < m; i++) {
        const float p = pre[i], v = d[i] * invV;
        eo[i] = (p >= 0.0f) & (p <= 1.0f) ? v : 0.0f;
    }
}

/* Backward through layers H..2 from d_H = v: returns e_1 = dL/d(pre_1 V)
 * in e->d0 or e->d1 (e->d2 is scratch).  grads == 0: through the J map
 * (e->pre, S_k's batchnorm as the running statistics' affine map);
 * grads != 0: through the training map (e->pre_t, the batch statistics),
 * accumulating the S_k, b_k and S_k batchnorm gradients. */
static float *chain_back(soma_rule *r, const float *v, int B, int grads)
{
    ide_state *e = r->state;
    soma_net *net = r->net;
    float invV = 1.0f / r->cfg.ide_vth;
    float *cur = e->d0, *nxt = e->d1;
    float **pre = grads ? e->pre_t : e->pre, **act = grads ? e->act_t : e->act;
    int H = e->H;
    mask_layer(cur, v, pre[H], (size_t)B * e->n[H], invV);
    for (int k = H; k >= 2; k--) {
        int nk = e->n[k], np = e->n[k - 1];
        size_t mk = (size_t)B * nk;
        /* cur = dL/dz_k, z_k = D_k BN_k(S_k a_{k-1} + b_k) */
        if (e->drop_on) mul_into(cur, e->drop[k], mk);
        const float *dlin = cur;
        if (e->bn_g[k] >= 0) {
            memset(e->d2, 0, mk * sizeof(float));
            soma_batchnorm_backward(e->d2, grads ? soma__param_grad(net, e->bn_g[k]) : NULL,
                                    grads ? soma__param_grad(net, e->bn_b[k]) : NULL, cur,
                                    grads ? &e->bnc[k] : &e->bne[k], soma__param_value(net, e->bn_g[k]),
                                    B, e->bn_c[k], e->bn_s[k], grads);
            dlin = e->d2;
        }
        memset(nxt, 0, (size_t)B * np * sizeof(float));
        if (e->conv) {
            soma_conv_shape s = e->cs[k];
            s.B = B;
            soma_conv2d_backward(nxt, grads ? soma__param_grad(net, e->w[k]) : NULL,
                                 grads ? soma__param_grad(net, e->b[k]) : NULL, e->cws, dlin, act[k - 1],
                                 soma__param_value(net, e->w[k]), &s);
        } else {
            soma_dense_backward(nxt, grads ? soma__param_grad(net, e->w[k]) : NULL,
                                grads ? soma__param_grad(net, e->b[k]) : NULL, dlin, act[k - 1],
                                soma__param_value(net, e->w[k]), B, np, nk);
        }
        mask_layer(nxt, nxt, pre[k - 1], (size_t)B * np, invV);
        float *t = cur; cur = nxt; nxt = t;
    }
    return cur;
}

/* out (B, nH) <- W^T e1 for e1 (B, n1) (e1 already carries D_W) */
static void feedback_t(ide_state *e, float *out, const float *e1, int B)
{
    int n1 = e->n[1], nH = e->n[e->H];
    soma_conv_shape s = e->wcs;
    s.B = B;
    switch (e->fbk) {
    case IDE_FB_CONV:    /* from pre_1 = conv(a): d a = its dx path, the transposed conv */
        memset(out, 0, (size_t)B * nH * sizeof(float));
        soma_conv2d_backward(out, NULL, NULL, e->cws, e1, NULL, e->weff, &s);
        return;
    case IDE_FB_CONVT:   /* from pre_1 = A^T a: d a = A e1, the conv forward */
        soma_conv2d_forward(out, e->cws, e1, e->weff, NULL, &s);
        return;
    case IDE_FB_DENSE:   /* from pre_1 = a W^T: d a = e_1 W */
        soma_gemm(0, 0, B, nH, n1, 1.0f, e1, n1, e->weff, nH, 0.0f, out, nH);
        return;
    }
}

void soma__ide_jt(soma_rule *r, float *out, const float *v, int B)
{
    ide_state *e = r->state;
    float *e1 = chain_back(r, v, B, 0);
    if (e->drop_on) mul_into(e1, e->drop_fb, (size_t)B * e->n[1]);
    feedback_t(e, out, e1, B);
}

/* beta^T df/dtheta at the last training-map point a: every parameter of f. */
static void ide_vjp(soma_rule *r, const float *beta, const float *x, const float *a, int B)
{
    ide_state *e = r->state;
    soma_net *net = r->net;
    int n1 = e->n[1], nH = e->n[e->H];
    size_t m1 = (size_t)B * n1;
    float *e1 = chain_back(r, beta, B, 1);
    float *other = e1 == e->d0 ? e->d1 : e->d0;
    /* F's path: dL/d(F x) = BN_1' (D_F e_1) */
    const float *dF = e1;
    if (e->drop_on) {
        for (size_t i = 0; i < m1; i++) e->d2[i] = e1[i] * e->drop[1][i];
        dF = e->d2;
    }
    if (e->bn_g[1] >= 0) {
        /* batch statistics in the backward graph (notes 2.5: the differentiable
         * f(a_T) has every batchnorm in training mode) */
        memset(other, 0, m1 * sizeof(float));
        soma_batchnorm_backward(other, soma__param_grad(net, e->bn_g[1]), soma__param_grad(net, e->bn_b[1]),
                                dF, &e->bnc[1], soma__param_value(net, e->bn_g[1]), B, e->bn_c[1],
                                e->bn_s[1], 1);
        dF = other;
    }
    if (e->conv) {
        soma_conv_shape fs = e->cs[1];
        fs.B = B;
        soma_conv2d_backward(NULL, soma__param_grad(net, e->w[1]), soma__param_grad(net, e->b[1]),
                             e->cws, dF, x, soma__param_value(net, e->w[1]), &fs);
    } else {
        soma_dense_backward(NULL, soma__param_grad(net, e->w[1]), soma__param_grad(net, e->b[1]), dF, x,
                            soma__param_value(net, e->w[1]), B, e->n[0], n1);
    }
    /* W's path: dL/d(W a) = D_W e_1 */
    if (e->drop_on) mul_into(e1, e->drop_fb, m1);
    float *gw = e->sn_g >= 0 ? e->gweff : soma__param_grad(net, e->fb);
    if (e->sn_g >= 0) memset(gw, 0, e->wn * sizeof(float));
    soma_conv_shape ws = e->wcs;
    ws.B = B;
    switch (e->fbk) {
    case IDE_FB_CONV: soma_conv2d_backward(NULL, gw, NULL, e->cws, e1, a, e->weff, &ws); break;
    case IDE_FB_CONVT: soma_conv2d_backward(NULL, gw, NULL, e->cws, a, e1, e->weff, &ws); break;
    case IDE_FB_DENSE: soma_dense_backward(NULL, gw, NULL, e1, a, e->weff, B, nH, n1); break;
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

/* x . y in double, one sample's vectors of D */
static double bro_dot(const float *x, const float *y, int D)
{
    double s = 0;
    _Pragma("omp simd reduction(+:s)")
    for (int j = 0; j < D; j++) s += (double)x[j] * y[j];
    return s;
}

/* With Binv = -I + sum_i U_i V_i^T (k pairs) of one sample, in one pass over
 * the pairs (each read once): vT = x^T Binv and bd = Binv d.  The outputs
 * may not alias the inputs. */
static void bro_pass(float *restrict vT, float *restrict bd, const float *restrict U,
                     const float *restrict Vv, int k, const float *restrict x,
                     const float *restrict d, int D)
{
    _Pragma("omp simd")
    for (int j = 0; j < D; j++) {
        vT[j] = -x[j];
        bd[j] = -d[j];
    }
    for (int i = 0; i < k; i++) {
        const float *ui = U + (size_t)i * D, *vi = Vv + (size_t)i * D;
        double a = 0, c = 0;
        _Pragma("omp simd reduction(+:a, c)")
        for (int j = 0; j < D; j++) {
            a += (double)ui[j] * x[j];
            c += (double)vi[j] * d[j];
        }
        const float fa = (float)a, fc = (float)c;
        _Pragma("omp simd")
        for (int j = 0; j < D; j++) {
            vT[j] += fa * vi[j];
            bd[j] += fc * ui[j];
        }
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
            int slot = k % M, have = k < M ? k : M;
            /* samples are independent (each its own low-rank inverse): split across threads */
            #pragma omp parallel for schedule(static) if ((size_t)B * D * (size_t)(have + 1) >= 65536)
            for (int b = 0; b < B; b++) {
                size_t o = (size_t)b * D;
                float *Ub = e->U + (size_t)b * M * D, *Vb = e->V + (size_t)b * M * D;
                float *dx = e->dx + o, *dg = e->dg + o, *Gb = e->G + o, *Gnb = bn + o;
                float *us = Ub + (size_t)slot * D, *vs = Vb + (size_t)slot * D;
                float *vT = e->d0 + o, *t = e->d1 + o;   /* free after the residual */
                for (int j = 0; j < D; j++) dg[j] = Gnb[j] - Gb[j];
                /* vT = dx^T Binv and t = Binv dg with the current Binv, one pass over its pairs */
                bro_pass(vT, t, Ub, Vb, have, dx, dg, D);
                double den = 0;
                _Pragma("omp simd reduction(+:den)")
                for (int j = 0; j < D; j++) den += (double)vT[j] * dg[j];
                _Pragma("omp simd")
                for (int j = 0; j < D; j++) t[j] = dx[j] - t[j];   /* dx - Binv dg */
                /* the next step -Binv' G_new from this one, without another pass over the
                 * pairs: dx = -Binv G (the last step), so -Binv G_new = dx - Binv dg = t;
                 * the new pair (u, v) adds -u (v . G_new), the oldest one, when it is
                 * replaced (k >= M), gives back its +u_old (v_old . G_new) */
                if (k >= M) {
                    const float cold = (float)bro_dot(vs, Gnb, D);
                    _Pragma("omp simd")
                    for (int j = 0; j < D; j++) dx[j] = t[j] + cold * us[j];
                } else {
                    memcpy(dx, t, D * sizeof(float));
                }
                /* u = (dx - Binv dg) / (vT . dg), v = vT: the pair goes into the slot of the
                 * oldest (circular memory); a zero or non-finite denominator skips it */
                if (fabs(den) > 1e-30 && isfinite(den)) {
                    const double inv = 1.0 / den;
                    _Pragma("omp simd")
                    for (int j = 0; j < D; j++) {
                        us[j] = (float)(t[j] * inv);
                        vs[j] = vT[j];
                    }
                    const float cnew = (float)bro_dot(vs, Gnb, D);
                    _Pragma("omp simd")
                    for (int j = 0; j < D; j++) dx[j] -= cnew * us[j];
                } else {
                    memset(us, 0, D * sizeof(float));
                    memset(vs, 0, D * sizeof(float));
                }
                memcpy(Gb, Gnb, D * sizeof(float));
            }
            k++;
        }
    }
    memcpy(e->beta, e->best, bytes);
    return best;
}

/* ---- gradient, train, predict ------------------------------------------- */

/* The conv workspace was sized for cws_threads; spike frames for T; batch
 * statistics need more than one value per channel; dropout needs its masks. */
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
    for (int k = 1; train && k <= e->H; k++)
        if (e->bn_g[k] >= 0 && (int64_t)B * e->bn_s[k] < 2)
            return soma__fail(SOMA_ERR_ARG, "rule ide: the batchnorm of hidden layer %d needs more "
                              "than one value per channel in training (batch %d x %d)", k, B, e->bn_s[k]);
    if (train && r->cfg.ide_dropout != 0.0f && (!e->drop_alloc || !(r->cfg.ide_dropout > 0.0f) ||
                                                !(r->cfg.ide_dropout < 1.0f)))
        return soma__fail(SOMA_ERR_ARG, "rule ide: ide-dropout %g, but the rule was built with %s",
                          r->cfg.ide_dropout, e->drop_alloc ? "dropout (the rate must stay in (0, 1))"
                                                            : "none (no mask buffers)");
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

static soma_status grad_at(soma_rule *r, const soma_batch *b, const float *a, soma_step_stats *st,
                           int fx_ready);

soma_status soma__ide_grad_forward(soma_rule *r, const soma_batch *b, int power_iter_on)
{
    ide_state *e = r->state;
    soma_status s = check_run(r, b->n, 1);
    if (s) return s;
    soma__ide_weight(r, power_iter_on);
    e->drop_on = r->cfg.ide_dropout > 0.0f;
    e->sim_mode = 1;   /* F's batchnorm: batch statistics, running ones updated once here */
    soma__ide_simulate(r, b->x, b->n);
    e->sim_mode = 0;
    return SOMA_OK;
}

soma_status soma__ide_grad_backward(soma_rule *r, const soma_batch *b, soma_step_stats *st)
{
    ide_state *e = r->state;
    e->sbn_update = 1; /* S_k's batchnorm: the running statistics move once, in the training map */
    soma_status s = grad_at(r, b, e->a, st, 1);
    e->sbn_update = 0;
    e->drop_on = 0;
    return s;
}

soma_status soma__ide_grad(soma_rule *r, const soma_batch *b, int power_iter_on, soma_step_stats *st)
{
    soma_status s = soma__ide_grad_forward(r, b, power_iter_on);
    return s ? s : soma__ide_grad_backward(r, b, st);
}

soma_status soma__ide_grad_at(soma_rule *r, const soma_batch *b, const float *a, soma_step_stats *st)
{
    ide_state *e = r->state;
    soma_status s = check_run(r, b->n, 1);
    if (s) return s;
    e->drop_on = r->cfg.ide_dropout > 0.0f;
    s = grad_at(r, b, a, st, 0);
    e->drop_on = 0;
    return s;
}

/* fx_ready: the training simulation of this batch has just run, so e->fx
 * (F x with the batch statistics in e->bnc[1], F's mask) and e->xbar are
 * what input_map (mode 2) and spike_average would compute again: the same
 * arithmetic on the same input, so they are reused (bit for bit the same). */
static soma_status grad_at(soma_rule *r, const soma_batch *b, const float *a, soma_step_stats *st,
                           int fx_ready)
{
    ide_state *e = r->state;
    soma_net *net = r->net;
    const soma_rule_config *c = &r->cfg;
    int B = b->n, nH = e->n[e->H], L = e->H + 1;
    size_t mH = (size_t)B * nH;
    const float *x = b->x;   /* f's input: x, or x-bar of the frames */
    if (e->frames) {
        if (!fx_ready) spike_average(r, e->xbar, b->x, B);
        x = e->xbar;
    }
    if (!fx_ready) input_map(r, x, B, 2);
    readout(r, a, B);
    soma_status s = soma__loss_and_grad_t(e->dl, e->probs, e->logits, b->y, b->target, B, e->C, c->loss, st);
    if (s) return s;
    soma_net_zero_grad(net);
    /* readout: its own gradient, and g = dL/da */
    memset(e->gA, 0, mH * sizeof(float));
    soma_dense_backward(e->gA, soma__param_grad(net, e->w[L]), soma__param_grad(net, e->b[L]), e->dl,
                        a, soma__param_value(net, e->w[L]), B, nH, e->C);
    /* S_k batchnorm: the training map first (batch statistics; its running
     * update comes before J, as the authors' twin copies the updated ones) */
    if (e->sbn) map_at(r, a, B, 1);
    /* the equilibrium map at a: Jacobian point and the gap to the simulation */
    map_at(r, a, B, 0);
    const float *fa = e->act[e->H];
    double gap = 0;
    for (size_t i = 0; i < mH; i++) gap += ((double)fa[i] - a[i]) * ((double)fa[i] - a[i]);
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
    if (r->cfg.ide_dropout > 0.0f) {   /* one mask per layer output for the whole batch */
        if (!rng) return soma__fail(SOMA_ERR_ARG, "rule ide: ide-dropout draws its masks from the "
                                    "rng of soma_rule_train_batch, which is NULL");
        soma_status s = check_run(r, b->n, 1);
        if (s) return s;
        soma__ide_draw_masks(r, rng, b->n);
    }
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
    e->drop_on = 0;   /* no dropout at prediction */
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

/* A <- the fixed point of the rate map (with the F x of the last simulation),
 * iterated from A until no rate moves by 1e-6 (at most 2,000 maps); t: scratch.
 * Returns the last largest move. */
static double map_fixed_point(soma_rule *r, float *A, float *t, int B)
{
    ide_state *e = r->state;
    size_t m = (size_t)B * e->n[e->H];
    double change = INFINITY;
    for (int k = 0; k < 2000 && change > 1e-6; k++) {
        soma__ide_map(r, t, A, B);
        change = 0;
        for (size_t i = 0; i < m; i++) {
            double d = fabs((double)t[i] - A[i]);
            if (d > change) change = d;
            A[i] = t[i];
        }
    }
    return change;
}

static double rms_gap(const float *a, const float *A, size_t m)
{
    double ss = 0;
    for (size_t i = 0; i < m; i++) ss += ((double)a[i] - A[i]) * ((double)a[i] - A[i]);
    return sqrt(ss / (double)m);
}

soma_status soma_ide_rate_gap(soma_rule *r, const soma_batch *b, const int *Ts, int nT,
                              double *gaps, double *fp_change)
{
    if (!r || r->ops != &soma__rule_ide)
        return soma__fail(SOMA_ERR_ARG, "rule is '%s', not 'ide'", r ? r->ops->name : "(null)");
    ide_state *e = r->state;
    if (nT < 1 || !Ts || !gaps) return soma__fail(SOMA_ERR_ARG, "rate gap: no T given");
    int tmax = 0;
    for (int q = 0; q < nT; q++) {
        if (Ts[q] < 1) return soma__fail(SOMA_ERR_ARG, "rate gap: T must be >= 1, got %d", Ts[q]);
        if (Ts[q] > tmax) tmax = Ts[q];
    }
    if (e->frames && (nT != 1 || Ts[0] != r->cfg.T))
        return soma__fail(SOMA_ERR_UNSUPPORTED, "rate gap: spike-frame input has T = %d frames, the only "
                          "T it can be simulated for (bin the data again for another T)", r->cfg.T);
    int B = b->n, T0 = r->cfg.T;
    if (B < 1 || B > r->max_batch)
        return soma__fail(SOMA_ERR_ARG, "batch of %d samples outside 1..%d", B, r->max_batch);
    soma_status s = check_run(r, B, 0);
    if (s) return s;
    e->drop_on = 0;
    soma__ide_weight(r, 0);
    size_t m = (size_t)B * e->n[e->H];
    float *A = e->best, *t = e->G;     /* solver scratch, free outside a solve */
    /* a*: the rate map iterated from the longest simulation's rates.  Spike
     * input: the map of this T's average frame x-bar, so the one simulation
     * gives both its rates and (through F x-bar) its fixed point */
    r->cfg.T = tmax;
    soma__ide_simulate(r, b->x, B);
    memcpy(A, e->a, m * sizeof(float));
    double change = map_fixed_point(r, A, t, B);
    if (fp_change) *fp_change = change;
    if (e->frames) {
        gaps[0] = rms_gap(e->a, A, m);
        return SOMA_OK;
    }
    for (int q = 0; q < nT; q++) {
        r->cfg.T = Ts[q];
        soma__ide_simulate(r, b->x, B);
        gaps[q] = rms_gap(e->a, A, m);
    }
    r->cfg.T = T0;
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
