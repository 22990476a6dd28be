/*
 * fptt.c - Forward Propagation Through Time (Kag & Saligrama 2021), as used
 * to train LTC spiking nets online by Yin, Corradi & Bohte 2023
 * (notes/fptt.md 2.6; the update order of the authors' code).
 *
 * Per sequence of T steps, cut into P = T / K windows of K steps (K = 1:
 * every step, the state detached between steps; K > 1: FPTT-K, BPTT inside
 * each window, the state detached at window boundaries).  The state itself
 * runs on across windows; it is reset only at the start of a sequence.
 * For window p = 0..P-1, after its K forward steps:
 *
 *   l_p  = (p+1)/P * loss(out_{last step of the window}, y)
 *   g    = dl_p/dW (backward through the window)  +  alpha (W - Wbar) - lam
 *   g    = clip(g, clip_norm)                     (global L2 norm, the sum)
 *   W    = optimizer(W, g)                        (the shared optimizer, per window)
 *   lam  = lam - alpha (W - Wbar)                 (new W, old Wbar)
 *   Wbar = (1 - beta) Wbar + beta W - (beta/alpha) lam     (new lam)
 *
 * At the end of every epoch (soma_rule_epoch_end): W = Wbar; lam is kept
 * (as byin-cwi/sFPTT does).  Every trainable tensor is regularised.  Wbar
 * and lam are net buffers named "fptt.wbar.<param>" and "fptt.lam.<param>"
 * (same shapes), so checkpoints carry them and --resume restores them; Wbar
 * starts as a copy of W and lam at 0 when the rule is created.
 *
 * The loss of window p is taken at its last step only (K = 1: every step,
 * the S-MNIST code; K > 1: the chunk's end, the adding-task code with the
 * intended (p+1)/P weight, and every chunk trained).  Classification: CE or
 * MSE against one-hot labels; regression batches (b->target): MSE.  The
 * reported loss/accuracy are those of the reduced outputs (cfg.reduce over
 * all T steps, as bptt and predict), the outputs of a sequence whose
 * weights changed along the way.
 *
 * The auxiliary "oracle" divergence loss (notes 2.7, --fptt-aux 1, for
 * classification): l_p = w_p CE(y, yhat_p) + (1 - w_p) mean_{b,c}(-O[b,c]
 * log yhat_p[b,c]) with w_p = (p+1)/P and O[b,:] = Pest[y_b, p, :], read
 * before this window refreshes the table; then, per class c, the first
 * sample of the batch labelled c and misclassified at this window copies
 * its softmax into Pest[c, p, :].  Pest (C x P x C, zero at first: the term
 * is then 0) is the net buffer "fptt.pest", so --resume carries it.
 *
 * Per-time-step batchnorm statistics are the net's (bnN layers).  The
 * stateless prefix is recomputed at every step (static-input caching is
 * off): its weights change between windows.
 *
 * Memory: the net keeps K steps (window K) and the encoded inputs of one
 * window: O(K), independent of T.  Per parameter: W, grad, Wbar, lam and
 * the optimizer's moments.
 *
 * Errors: SOMA_ERR_ARG for alpha <= 0, beta outside (0, 1], K < 1, or a T
 * that is not a multiple of K.  SOMA_ERR_NUMERIC if a loss or gradient is
 * NaN/Inf: the windows before it have already updated the parameters.
 */
#include "rule.h"
#include <math.h>
#include <string.h>

typedef struct fptt_state {
    soma_encoder *enc;
    float  *xs;                 /* (K, B, step_size) encoded inputs of one window; NULL for DIRECT */
    float  *scores, *probs, *dstep;   /* (B, C) each */
    const float **dout;         /* (K) per-step gradient pointers of a window */
    int     wbar, lam;          /* buffer index of the first fptt.wbar.* / fptt.lam.* tensor */
    int     pest;               /* buffer index of "fptt.pest" (C, P, C), -1 without --fptt-aux */
    float  *oracle;             /* (B, C) the oracle rows of this window */
    double *ss_part;            /* (ceil(params / SS_BLOCK)) the norm pass's block sums */
    size_t  xs_bytes;
} fptt_state;

/* The per-parameter work of an update (fptt_update) goes over the flat array
 * in blocks of SS_BLOCK; above PAR_MIN parameters the blocks are split over
 * the OpenMP threads in one parallel region per update (on 2 shared cores
 * every extra region costs a wake-up and a barrier).  The sum of squares is
 * summed per block, then over the blocks in order, and every other step is
 * elementwise, so the results do not depend on the thread count. */
enum { SS_BLOCK = 8192, PAR_MIN = 1 << 15 };

static float *wbar_of(soma_rule *r) { return soma__buffer_value(r->net, ((fptt_state *)r->state)->wbar); }
static float *lam_of(soma_rule *r) { return soma__buffer_value(r->net, ((fptt_state *)r->state)->lam); }

/* Adds "<prefix><param name>" for every parameter; returns the first index. */
static int add_mirror(soma_net *net, const char *prefix)
{
    int np = net->params.count, first = -1;
    for (int i = 0; i < np; i++) {
        const soma_param *p = &net->params.p[i];
        char name[96];
        snprintf(name, sizeof name, "%s%s", prefix, p->name);
        if (strlen(name) >= sizeof p->name)
            return soma__fail(SOMA_ERR_ARG, "fptt: tensor name '%s' is too long", name);
        int idx = soma__net_add_tensor(net, 0, name, p->ndim, p->shape);
        if (idx < 0) return idx;
        if (i == 0) first = idx;
        /* one block mirroring the parameter layout: flat loops index it */
        if (net->buffers.p[idx].offset != net->buffers.p[first].offset + p->offset)
            return soma__fail(SOMA_ERR_ARG, "fptt: buffer layout of '%s' does not mirror the parameters", name);
    }
    return first;
}

static soma_status fptt_init(soma_rule *r, int max_batch)
{
    const soma_rule_config *c = &r->cfg;
    soma_net *net = r->net;
    if (!soma_net_is_spiking(net))
        return soma__fail(SOMA_ERR_ARG, "rule fptt needs a temporal net (give --neuron, or ltcN layers)");
    if (c->T <= 0) return soma__fail(SOMA_ERR_ARG, "--T must be > 0, got %d", c->T);
    if (!(c->fptt_alpha > 0) || isinf(c->fptt_alpha))
        return soma__fail(SOMA_ERR_ARG, "--fptt-alpha must be > 0 and finite, got %g", (double)c->fptt_alpha);
    if (!(c->fptt_beta > 0 && c->fptt_beta <= 1))
        return soma__fail(SOMA_ERR_ARG, "--fptt-beta must be in (0, 1], got %g", (double)c->fptt_beta);
    if (c->fptt_k < 1) return soma__fail(SOMA_ERR_ARG, "--fptt-k must be >= 1, got %d", c->fptt_k);
    if (c->fptt_aux && c->loss != SOMA_LOSS_CE)
        return soma__fail(SOMA_ERR_ARG, "--fptt-aux needs the ce loss (it mixes in a divergence to class distributions)");
    if (c->T % c->fptt_k)
        return soma__fail(SOMA_ERR_ARG, "--T %d is not a multiple of the FPTT window --fptt-k %d", c->T, c->fptt_k);
    if ((unsigned)c->reduce >= SOMA_REDUCE_COUNT) return soma__fail(SOMA_ERR_ARG, "unknown reduce %d", (int)c->reduce);
    if (net->params.count == 0) return soma__fail(SOMA_ERR_ARG, "rule fptt: net '%s' has no parameters", soma_net_spec(net));
    fptt_state *s = soma__calloc(1, sizeof *s);
    if (!s) return SOMA_ERR_NOMEM;
    r->state = s;
    const int K = c->fptt_k;
    int D = c->sample_size ? c->sample_size : soma_net_inputs(net);
    soma_status st = soma_encoder_new(&s->enc, c->encoding, D, c->T, c->enc_seed, c->gain > 0 ? c->gain : 1.0f);
    if (st) return st;
    int step = soma_encoder_step_size(s->enc);
    if (step != soma_net_inputs(net))
        return soma__fail(SOMA_ERR_SHAPE, "encoding %s gives %d value(s) per step, net '%s' takes %d",
                          soma_encoding_name(c->encoding), step, soma_net_spec(net), soma_net_inputs(net));
    if ((st = soma_net_prepare_time(net, max_batch, K))) return st;
    /* the weights change between windows: the prefix must be recomputed */
    soma_net_set_static_input(net, 0);
    int C = soma_net_outputs(net);
    size_t bc = (size_t)max_batch * C;
    if (c->encoding != SOMA_ENC_DIRECT) {
        s->xs_bytes = (size_t)K * max_batch * step * sizeof(float);
        if (!(s->xs = soma__malloc_aligned(s->xs_bytes))) return SOMA_ERR_NOMEM;
    }
    s->scores = soma__malloc(bc * sizeof(float));
    s->probs = soma__malloc(bc * sizeof(float));
    s->dstep = soma__malloc(bc * sizeof(float));
    s->dout = soma__calloc((size_t)K, sizeof *s->dout);
    s->ss_part = soma__malloc((soma_net_param_floats(net) + SS_BLOCK - 1) / SS_BLOCK * sizeof(double));
    if (!s->scores || !s->probs || !s->dstep || !s->dout || !s->ss_part) return SOMA_ERR_NOMEM;
    /* W-bar, lambda (and the class table) in one allocation */
    soma_status e = soma__net_reserve(net, 0, 2 * soma_net_param_floats(net) +
                                      (c->fptt_aux ? (size_t)C * (size_t)(c->T / K) * (size_t)C : 0));
    if (e) return e;
    if ((s->wbar = add_mirror(net, "fptt.wbar.")) < 0) return (soma_status)s->wbar;
    if ((s->lam = add_mirror(net, "fptt.lam.")) < 0) return (soma_status)s->lam;
    s->pest = -1;
    if (c->fptt_aux) {
        int64_t shape[3] = { C, c->T / K, C };
        if ((s->pest = soma__net_add_tensor(net, 0, "fptt.pest", 3, shape)) < 0) return (soma_status)s->pest;
        if (!(s->oracle = soma__malloc(bc * sizeof(float)))) return SOMA_ERR_NOMEM;
    }
    memcpy(wbar_of(r), soma_net_param_values(net), soma_net_param_floats(net) * sizeof(float));
    return SOMA_OK;
}

static void fptt_release(soma_rule *r)
{
    fptt_state *s = r->state;
    if (!s) return;
    soma_encoder_free(s->enc);
    soma__free_aligned(s->xs);
    soma__free(s->scores);
    soma__free(s->probs);
    soma__free(s->dstep);
    soma__free(s->oracle);
    soma__free(s->ss_part);
    soma__free((void *)s->dout);
    soma__free(s);
}

/* Step t of the sequence: encodes x_t into the window's slot t % K. */
static soma_status step_once(soma_rule *r, const soma_batch *b, int t, soma_rng *rng, const float **out)
{
    fptt_state *s = r->state;
    float *slot = s->xs ? s->xs + (size_t)(t % r->cfg.fptt_k) * b->n * soma_encoder_step_size(s->enc) : NULL;
    return soma_net_step(r->net, soma__encode_input(s->enc, slot, b, t, rng), b->n, out);
}

/* After the optimizer step, in this order (notes 2.6):
 *   lam  <- lam - alpha (W - Wbar)                          (old Wbar)
 *   Wbar <- (1 - beta) Wbar + beta W - (beta/alpha) lam     (new lam) */
SOMA_SIMD_CLONES
static void post_range(float *restrict lam, float *restrict wbar, const float *restrict w, size_t lo,
                       size_t hi, float alpha, float beta)
{
    const float ba = beta / alpha;
    _Pragma("omp simd")
    for (size_t i = lo; i < hi; i++) {
        lam[i] -= alpha * (w[i] - wbar[i]);
        wbar[i] = (1.0f - beta) * wbar[i] + beta * w[i] - ba * lam[i];
    }
}

void soma__fptt_post_update(float *lam, float *wbar, const float *w, size_t n, float alpha, float beta)
{
    post_range(lam, wbar, w, 0, n, alpha, beta);
}

/* g += alpha (W - Wbar) - lam over blocks [b0, b1), each block's sum of
 * squares (in double) into part[b].  The sum runs in eight fixed lanes
 * (index mod 8), added pairwise at the end, so every SIMD width gives the
 * same bits. */
SOMA_SIMD_CLONES
static void reg_blocks(float *restrict g, const float *restrict w, const float *restrict wb,
                       const float *restrict lam, double *part, size_t np, size_t b0, size_t b1,
                       float alpha)
{
    for (size_t b = b0; b < b1; b++) {
        const size_t lo = b * SS_BLOCK, hi = np - lo < SS_BLOCK ? np : lo + SS_BLOCK;
        double lane[8] = { 0 };
        size_t i = lo;
        for (; i + 8 <= hi; i += 8) {
            _Pragma("omp simd")
            for (int k = 0; k < 8; k++) {
                const float gi = g[i + k] + (alpha * (w[i + k] - wb[i + k]) - lam[i + k]);
                g[i + k] = gi;
                lane[k] += (double)gi * gi;
            }
        }
        for (int k = 0; i < hi; i++, k++) {
            const float gi = g[i] + (alpha * (w[i] - wb[i]) - lam[i]);
            g[i] = gi;
            lane[k] += (double)gi * gi;
        }
        part[b] = ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
    }
}

/* g += alpha (W - Wbar) - lam; check; clip; optimizer; then lam and Wbar.
 * One pass over the parameters for the regulariser and the norm (which is
 * finite, in double, exactly when every gradient is), then per block range
 * the clip, the optimizer (soma__optim_range, the kinds' own step) and the
 * lam/Wbar update, in the same parallel region.  MQ scales whole matrices:
 * it takes the whole array at once (soma_optim_step). */
static soma_status fptt_update(soma_rule *r, float lr)
{
    const soma_rule_config *c = &r->cfg;
    fptt_state *s = r->state;
    soma_net *net = r->net;
    const size_t np = soma_net_param_floats(net), nb = (np + SS_BLOCK - 1) / SS_BLOCK;
    float *w = soma_net_param_values(net), *g = soma_net_param_grads(net);
    float *wb = wbar_of(r), *lam = lam_of(r);
    const float alpha = c->fptt_alpha, beta = c->fptt_beta;
    const int ranges = c->optim.kind != SOMA_OPTIM_MQ;
    double ss = 0;
    int ok = 0;
#pragma omp parallel if (np >= PAR_MIN)
    {
        size_t b0, b1;
        soma__thread_range(nb, &b0, &b1);
        reg_blocks(g, w, wb, lam, s->ss_part, np, b0, b1, alpha);
#pragma omp barrier
#pragma omp single
        {
            for (size_t b = 0; b < nb; b++) ss += s->ss_part[b];
            ok = isfinite(ss);
            if (ok && ranges) soma__optim_begin(r->optim);
        }
        /* block by block, so the clip's g and the optimizer's w are still in
         * cache for the next pass */
        for (size_t b = b0; ok && ranges && b < b1; b++) {
            const size_t lo = b * SS_BLOCK, hi = np - lo < SS_BLOCK ? np : lo + SS_BLOCK;
            if (c->clip_norm > 0) soma__clip_scale(g + lo, hi - lo, c->clip_norm, ss);
            soma__optim_range(r->optim, w, g + lo, lr, lo, hi - lo);
            post_range(lam, wb, w, lo, hi, alpha, beta);
        }
    }
    if (!ok) return soma__fail(SOMA_ERR_NUMERIC, "gradient contains NaN or Inf");
    if (!ranges) {
        if (c->clip_norm > 0) soma__clip_scale(g, np, c->clip_norm, ss);
        soma_optim_step(r->optim, w, g, lr);
        post_range(lam, wb, w, 0, np, alpha, beta);
    }
    return SOMA_OK;
}

/* The oracle term's gradient on the logits, added to dlogits (B, C):
 *   L_aux = -(1/(B C)) sum_b sum_c O[b,c] log softmax(o_b)_c
 *   dL_aux/do[b,k] = (1/(B C)) (S_b p[b,k] - O[b,k]),  S_b = sum_c O[b,c]
 * scaled by weight.  Returns L_aux. */
double soma__fptt_aux_grad(float *dlogits, const float *probs, const float *oracle, int B, int C,
                           float weight)
{
    double L = 0;
    const double inv = 1.0 / ((double)B * C);
    for (int b = 0; b < B; b++) {
        const float *o = oracle + (size_t)b * C, *pr = probs + (size_t)b * C;
        double S = 0;
        for (int k = 0; k < C; k++) {
            S += o[k];
            /* log p from the softmax the CE just computed; p > 0 in float */
            if (o[k] != 0) L -= inv * o[k] * log((double)pr[k] > 1e-38 ? (double)pr[k] : 1e-38);
        }
        for (int k = 0; k < C; k++)
            dlogits[(size_t)b * C + k] += (float)(weight * inv * (S * pr[k] - o[k]));
    }
    return L;
}

/* Window p of the sequence in progress (p = 0 resets the state and the
 * scores): K steps forward, the loss at the last one, backward through the
 * window, one update.  *loss (may be NULL) receives the window's unweighted
 * loss (mean over the batch). */
soma_status soma__fptt_window(soma_rule *r, const soma_batch *b, int p, float lr, soma_rng *rng,
                              double *loss)
{
    fptt_state *s = r->state;
    const soma_rule_config *c = &r->cfg;
    soma_net *net = r->net;
    const int B = b->n, C = soma_net_outputs(net), K = c->fptt_k, P = c->T / K;
    const size_t bc = (size_t)B * C;
    soma_status e;
    if (p < 0 || p >= P) return soma__fail(SOMA_ERR_ARG, "fptt: window %d outside 0..%d", p, P - 1);
    if (p == 0) {
        soma_net_set_train(net, 1);
        if ((e = soma_net_reset_state(net, B, rng))) return e;
        memset(s->scores, 0, bc * sizeof(float));
    } else if (soma_net_time(net) != p * K) {
        return soma__fail(SOMA_ERR_ARG, "fptt: window %d out of order (%d steps taken)", p, soma_net_time(net));
    }
    for (int j = 0; j < K - 1; j++) s->dout[j] = NULL;
    s->dout[K - 1] = s->dstep;
    const float *out = NULL;
    for (int j = 0; j < K; j++) {
        int t = p * K + j;
        if ((e = step_once(r, b, t, rng, &out))) return e;
        soma__reduce_add(c, s->scores, out, t, bc);
    }
    /* l_p = (p+1)/P loss(out, y) at the window's last step */
    soma_step_stats one = { 0 };
    if ((e = soma__loss_and_grad_t(s->dstep, s->probs, out, b->y, b->target, B, C, c->loss, &one)))
        return e;
    if (loss) *loss = one.loss / B;
    const float wgt = (float)(p + 1) / (float)P;
    for (size_t i = 0; i < bc; i++) s->dstep[i] *= wgt;
    if (s->pest >= 0 && !b->target) {
        float *pest = soma__buffer_value(net, s->pest);
        const size_t row = (size_t)p * C;   /* Pest[c, p, :] at (c * P + p) * C */
        for (int i = 0; i < B; i++)          /* read before the refresh */
            memcpy(s->oracle + (size_t)i * C, pest + ((size_t)b->y[i] * P) * C + row, C * sizeof(float));
        for (int cls = 0; cls < C; cls++)
            for (int i = 0; i < B; i++) {
                if (b->y[i] != cls) continue;
                const float *o = out + (size_t)i * C;
                int best = 0;
                for (int k = 1; k < C; k++) if (o[k] > o[best]) best = k;
                if (best == cls) continue;
                memcpy(pest + ((size_t)cls * P) * C + row, s->probs + (size_t)i * C, C * sizeof(float));
                break;
            }
        soma__fptt_aux_grad(s->dstep, s->probs, s->oracle, B, C, 1.0f - wgt);
    }
    soma_net_zero_grad(net);
    if ((e = soma_net_backward_time(net, K, s->dout, B, 0))) return e;
    return fptt_update(r, lr);
}

static soma_status fptt_train_batch(soma_rule *r, const soma_batch *b, float lr, soma_rng *rng,
                                    soma_step_stats *st)
{
    fptt_state *s = r->state;
    const soma_rule_config *c = &r->cfg;
    const int B = b->n, C = soma_net_outputs(r->net), P = c->T / c->fptt_k;
    soma_status e;
    for (int p = 0; p < P; p++)
        if ((e = soma__fptt_window(r, b, p, lr, rng, NULL))) return e;
    soma_step_stats local = { 0 };
    if ((e = soma__loss_and_grad_t(NULL, s->probs, s->scores, b->y, b->target, B, C, c->loss, &local)))
        return e;
    if (st) { st->loss += local.loss; st->correct += local.correct; st->n += local.n; }
    return SOMA_OK;
}

static soma_status fptt_predict(soma_rule *r, const soma_batch *b, const float **scores,
                                soma_step_stats *st)
{
    fptt_state *s = r->state;
    const soma_rule_config *c = &r->cfg;
    soma_net *net = r->net;
    size_t bc = (size_t)b->n * soma_net_outputs(net);
    soma_net_set_train(net, 0);
    /* Poisson inputs in evaluation draw from a fixed stream (as bptt) */
    soma_rng rng;
    soma_rng_seed(&rng, SOMA__EVAL_SEED);
    soma_status e = soma_net_reset_state(net, b->n, &rng);
    if (e) return e;
    memset(s->scores, 0, bc * sizeof(float));
    for (int t = 0; t < c->T; t++) {
        const float *out;
        if ((e = step_once(r, b, t, &rng, &out))) return e;
        soma__reduce_add(c, s->scores, out, t, bc);
    }
    *scores = s->scores;
    if (st) e = soma__loss_and_grad_t(NULL, s->probs, s->scores, b->y, b->target, b->n,
                                      soma_net_outputs(net), c->loss, st);
    return e;
}

/* W <- Wbar (lam kept). */
static void fptt_epoch_end(soma_rule *r)
{
    memcpy(soma_net_param_values(r->net), wbar_of(r), soma_net_param_floats(r->net) * sizeof(float));
}

static void fptt_plan(const soma_rule *r, soma_mem_plan *p)
{
    const fptt_state *s = r->state;
    p->activations = r->net->act_bytes + (s ? s->xs_bytes : 0);
    p->workspace = r->net->ws_floats * sizeof(float) +
                   3 * (size_t)r->max_batch * soma_net_outputs(r->net) * sizeof(float);
}

const soma_rule_ops soma__rule_fptt = {
    .name = "fptt",
    .about = "forward propagation through time: an update every --fptt-k steps, memory O(k) in T",
    .init = fptt_init,
    .train_batch = fptt_train_batch,
    .predict = fptt_predict,
    .plan = fptt_plan,
    .release = fptt_release,
    .epoch_end = fptt_epoch_end,
};
