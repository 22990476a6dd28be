/*
 * cell.c - one time step of a spiking (or leaky-integrator) cell, forward
 * and backward, elementwise over n = B*N cells.
 *
 * Forward, for each element (scalars from soma_cell_params unless alpha_v /
 * rho_v give per-element values):
 *
 *   a_t  = rho a_{t-1} + (1 - rho) s_{t-1}      ALIF only (Bellec et al. 2018); the
 *                                               PREVIOUS step's spikes.  Else a_t = 0.
 *   th_t = threshold + beta_a a_t               non-ALIF: th_t = threshold
 *   v_t  = alpha u_{t-1} + g I_t                g = 1, or 1 - alpha with input_scale;
 *                                               IF: alpha = 1 (p->alpha, alpha_v ignored)
 *   s_t  = H(v_t - th_t)                        H(x) = 1 if x > 0 else 0 (strict: H(0) = 0)
 *   u_t  = v_t - th_t s_t                       SUBTRACT
 *          v_t (1 - s_t)                        ZERO
 *          v_t                                  NONE
 *   LI:  s_t = 0 and u_t = v_t (no threshold, no reset).
 *
 * The FPTT Liquid-Time-Constant neuron (notes/fptt.md 2.1) is this cell
 * with kind ALIF, reset ZERO, input_scale 1, alpha_v = 1 - tau_m and
 * rho_v = tau_adp per element, threshold b0 = 0.1, beta_a = 1.8; its
 * readout is LI with input_scale 1 and alpha_v = 1 - tau_o.
 *
 * Backward.  Given dL/du_t, dL/da_t, dL/ds_t (dnext; NULL = 0) it
 * differentiates the lines above in reverse, with ds_t/dx replaced by the
 * surrogate g(x) at x = v_t - th_t:
 *
 *   ds~   = dL/ds_t + [reset path, unless detach_reset]
 *             SUBTRACT: - th_t dL/du_t     ZERO: - v_t dL/du_t     NONE: 0
 *   dx    = ds~ g(v_t - th_t)
 *   dv    = dL/du_t (1 - s_t if ZERO, else 1) + dx            LI: dv = dL/du_t
 *   dth   = - dx  (- s_t dL/du_t if SUBTRACT)                  ALIF only
 *   da~   = dL/da_t + beta_a dth                               ALIF only
 *   dprev->u += alpha dv            dI    += g dv
 *   dalpha   += dv (u_{t-1} - [input_scale] I_t)              not for IF (alpha is fixed)
 *   dprev->a += rho da~             dprev->s += (1 - rho) da~  ALIF only
 *   drho     += da~ (a_{t-1} - s_{t-1})                        ALIF only
 *
 * With detach_reset the s_t inside the reset term is a constant: the reset
 * still multiplies (ZERO's 1 - s_t, SUBTRACT's th_t s_t, so ALIF's dth keeps
 * its - s_t dL/du_t term), but no gradient reaches the surrogate through it.
 * dalpha / drho are per element; with the scalar p->alpha / p->rho the
 * caller sums them.  Every output accumulates (+=); a NULL one is skipped.
 *
 * The cache holds v_t and (ALIF) th_t; the backward recomputes s_t =
 * H(v_t - th_t) from them, bit for bit as the forward did.  A forward that
 * no backward follows may pass cache = NULL (or NULL fields), and next->s =
 * NULL when the spikes are not wanted.
 *
 * Layout of the work: elements go in blocks of BLK with scratch on the
 * stack, and each line above is one plain loop over the block (kind, reset,
 * detach and surrogate are dispatched per block, never per element).  Full
 * blocks have a constant trip count, which GCC's -O2 cost model wants before
 * it vectorises; -O3 vectorises every loop here.  The spike nonlinearity has
 * two entries (spike_fwd / spike_grad, neuron.h): the step with its
 * surrogate, used by the public functions, and a smooth sigmoid with its
 * exact derivative, which the tests use to check the whole backward against
 * finite differences of the very same code.  Above PAR_MIN elements the
 * range is split over OpenMP threads; every element is computed the same
 * way wherever it lands, so results do not depend on the thread count.
 */
#include "neuron.h"
#include <math.h>
#include <string.h>

/* Below this many elements a parallel region costs more than it saves. */
enum { PAR_MIN = 1 << 15, BLK = 256 };

/* ------------------------------------------------------------------------ */
/* Names, defaults, validation                                              */
/* ------------------------------------------------------------------------ */

static const char *const neuron_names[SOMA_NEURON_COUNT] = {
    [SOMA_NEURON_LIF] = "lif",
    [SOMA_NEURON_IF] = "if",
    [SOMA_NEURON_ALIF] = "alif",
    [SOMA_NEURON_LI] = "li",
};

static const char *const reset_names[SOMA_RESET_COUNT] = {
    [SOMA_RESET_SUBTRACT] = "subtract",
    [SOMA_RESET_ZERO] = "zero",
    [SOMA_RESET_NONE] = "none",
};

const char *soma_neuron_name(soma_neuron_kind k)
{
    return ((unsigned)k < SOMA_NEURON_COUNT) ? neuron_names[k] : "unknown";
}

soma_status soma_neuron_from_name(soma_neuron_kind *out, const char *name)
{
    for (int i = 0; name && i < SOMA_NEURON_COUNT; i++)
        if (strcmp(name, neuron_names[i]) == 0) { *out = (soma_neuron_kind)i; return SOMA_OK; }
    return soma__fail(SOMA_ERR_ARG, "unknown neuron '%s' (valid: lif, if, alif, li)",
                      name ? name : "(null)");
}

const char *soma_reset_name(soma_reset r)
{
    return ((unsigned)r < SOMA_RESET_COUNT) ? reset_names[r] : "unknown";
}

soma_status soma_reset_from_name(soma_reset *out, const char *name)
{
    for (int i = 0; name && i < SOMA_RESET_COUNT; i++)
        if (strcmp(name, reset_names[i]) == 0) { *out = (soma_reset)i; return SOMA_OK; }
    return soma__fail(SOMA_ERR_ARG, "unknown reset '%s' (valid: subtract, zero, none)",
                      name ? name : "(null)");
}

/* Every field gets its default whatever the kind, so switching kind later
 * leaves a valid set; IF's alpha is 1 (the value it forces). */
void soma_cell_params_default(soma_cell_params *p, soma_neuron_kind kind)
{
    memset(p, 0, sizeof *p);
    p->kind = kind;
    p->alpha = kind == SOMA_NEURON_IF ? 1.0f : 0.9f;
    p->threshold = 1.0f;
    p->reset = SOMA_RESET_SUBTRACT;
    p->detach_reset = 0;
    p->input_scale = 0;
    p->rho = 0.95f;
    p->beta_a = 1.8f;
    soma_surrogate_default(&p->surr, SOMA_SURR_FAST_SIGMOID);
}

/* alpha = exp(-dt / tau), in double then rounded once. */
soma_status soma_alpha_from_tau(float *alpha, float tau, float dt)
{
    if (!(tau > 0.0f)) return soma__fail(SOMA_ERR_ARG, "tau must be > 0, got %g", (double)tau);
    if (!(dt > 0.0f)) return soma__fail(SOMA_ERR_ARG, "dt must be > 0, got %g", (double)dt);
    *alpha = (float)exp(-(double)dt / (double)tau);
    return SOMA_OK;
}

/* Checks the fields the kind uses: alpha (not IF, which forces 1) and
 * input_scale for all; threshold, reset and surrogate for the spiking
 * kinds; rho and beta_a for ALIF.  `!(x >= lo && x <= hi)` rejects NaN. */
soma_status soma_cell_params_check(const soma_cell_params *p)
{
    if (!p) return soma__fail(SOMA_ERR_ARG, "cell params is NULL");
    if ((unsigned)p->kind >= SOMA_NEURON_COUNT)
        return soma__fail(SOMA_ERR_ARG, "unknown neuron kind %d (valid: lif, if, alif, li)",
                          (int)p->kind);
    if (p->map_bn < 0 || p->map_bn > 1 << 24)
        return soma__fail(SOMA_ERR_ARG, "map_bn (--ltc-map-bn) must be 0 (off), 1 (shared running "
                          "statistics) or N > 1 (per step), got %d", p->map_bn);
    if (p->kind != SOMA_NEURON_IF && !(p->alpha >= 0.0f && p->alpha <= 1.0f))
        return soma__fail(SOMA_ERR_ARG, "alpha must be in [0, 1], got %g", (double)p->alpha);
    if (p->kind == SOMA_NEURON_IF && p->input_scale)
        return soma__fail(SOMA_ERR_ARG, "input_scale needs a leak: IF has alpha 1, so its "
                          "input gain 1 - alpha would be 0");
    if (p->kind == SOMA_NEURON_LI) return SOMA_OK;
    if (!(p->threshold > 0.0f) || isinf(p->threshold))
        return soma__fail(SOMA_ERR_ARG, "threshold must be > 0 and finite, got %g",
                          (double)p->threshold);
    if ((unsigned)p->reset >= SOMA_RESET_COUNT)
        return soma__fail(SOMA_ERR_ARG, "unknown reset %d (valid: subtract, zero, none)",
                          (int)p->reset);
    if (p->kind == SOMA_NEURON_ALIF) {
        if (!(p->rho >= 0.0f && p->rho <= 1.0f))
            return soma__fail(SOMA_ERR_ARG, "rho must be in [0, 1], got %g", (double)p->rho);
        if (!(p->beta_a >= 0.0f) || isinf(p->beta_a))
            return soma__fail(SOMA_ERR_ARG, "beta_a must be >= 0 and finite, got %g",
                              (double)p->beta_a);
    }
    return soma_surrogate_check(&p->surr);
}

/* ------------------------------------------------------------------------ */
/* The step, forward and backward                                           */
/* ------------------------------------------------------------------------ */

/* The call's scalars, resolved once. */
typedef struct cell_k {
    soma_neuron_kind kind;
    soma_reset reset;
    int detach, alif, li;
    float alpha;               /* IF: 1 */
    float gs;                  /* 1 with input_scale, else 0: input gain g = 1 - gs alpha */
    float thr, beta, rho;
    const float *alpha_v;      /* NULL: the scalar (always NULL for IF) */
    const float *rho_v;        /* NULL: the scalar */
    soma__spike_fn spike;
    float k;
    const soma_surrogate *surr;
} cell_k;

static cell_k cell_resolve(const soma_cell_params *p, const float *alpha_v, const float *rho_v,
                           const soma__spike *sp)
{
    cell_k c;
    c.kind = p->kind;
    c.reset = p->reset;
    c.detach = p->detach_reset != 0;
    c.alif = p->kind == SOMA_NEURON_ALIF;
    c.li = p->kind == SOMA_NEURON_LI;
    c.alpha = p->kind == SOMA_NEURON_IF ? 1.0f : p->alpha;
    c.alpha_v = p->kind == SOMA_NEURON_IF ? NULL : alpha_v;
    c.gs = p->input_scale ? 1.0f : 0.0f;
    c.thr = p->threshold;
    c.beta = p->beta_a;
    c.rho = p->rho;
    c.rho_v = rho_v;
    c.spike = sp->fn == SOMA__SPIKE_SIGMOID ? SOMA__SPIKE_SIGMOID : SOMA__SPIKE_STEP;
    c.k = sp->k;
    c.surr = &p->surr;
    return c;
}

/* The spike nonlinearity, its two entries side by side:
 *   STEP     s = H(x) = [x > 0]          ds/dx := surrogate g(x)  (production)
 *   SIGMOID  s = 1 / (1 + e^{-k x})      ds/dx  = k s (1 - s)     (tests only) */

/* only ever exponentiate a non-positive number: no overflow */
static inline float sigmoid1(float z)
{
    if (z >= 0.0f) return 1.0f / (1.0f + expf(-z));
    const float e = expf(z);
    return e / (1.0f + e);
}

/* s(m) = S(x(m)) */
static inline void spike_fwd(float *restrict s, const float *restrict x, size_t m,
                             const cell_k *c)
{
    if (c->spike == SOMA__SPIKE_SIGMOID) {
        const float k = c->k;
        for (size_t j = 0; j < m; j++) s[j] = sigmoid1(k * x[j]);
    } else {
        for (size_t j = 0; j < m; j++) s[j] = x[j] > 0.0f ? 1.0f : 0.0f;
    }
}

/* sd(m) = dS/dx at x(m); sd may alias x */
static void spike_grad(float *sd, const float *x, size_t m, const cell_k *c)
{
    if (c->spike == SOMA__SPIKE_SIGMOID) {
        const float k = c->k;
        for (size_t j = 0; j < m; j++) {
            const float s = sigmoid1(k * x[j]);
            sd[j] = k * s * (1.0f - s);
        }
    } else {
        soma__surrogate_grad_n(sd, x, m, c->surr);
    }
}

static void fill(float *a, size_t m, float x)
{
    for (size_t j = 0; j < m; j++) a[j] = x;
}

/* Per-range constants: a scalar that stands in for a NULL per-element
 * array is spread over a block once, so every loop reads arrays. */
typedef struct cell_bufs {
    float al[BLK];    /* alpha, when alpha_v is NULL */
    float rho[BLK];   /* rho, when rho_v is NULL (ALIF) */
    float th[BLK];    /* threshold (non-ALIF) */
    float zero[BLK];  /* a NULL incoming gradient */
} cell_bufs;

static void cell_bufs_init(cell_bufs *k, const cell_k *c)
{
    if (!c->alpha_v) fill(k->al, BLK, c->alpha);
    if (c->alif && !c->rho_v) fill(k->rho, BLK, c->rho);
    if (!c->alif) fill(k->th, BLK, c->thr);
    fill(k->zero, BLK, 0.0f);
}

/* Forward of elements [b, b + m), m <= BLK.  Inlined twice, with m = BLK
 * and for the tail: a constant trip count lets GCC's -O2 cost model
 * vectorise the loops. */
static inline __attribute__((always_inline))
void cell_forward_block(soma_cell_state *next, float *cv, float *cth,
                        const soma_cell_state *prev, const float *I, const cell_k *c,
                        const cell_bufs *kb, size_t b, size_t m)
{
    float vbuf[BLK], sbuf[BLK], xbuf[BLK], thbuf[BLK];
    const float thr = c->thr, beta = c->beta, gs = c->gs;
    const float *restrict al = c->alpha_v ? c->alpha_v + b : kb->al;
    const float *restrict pu = prev->u + b, *restrict in = I + b;
    float *restrict u = next->u + b;
    float *restrict v = cv ? cv + b : vbuf;
    const float *th = kb->th;

    if (c->alif) {
        const float *restrict r = c->rho_v ? c->rho_v + b : kb->rho;
        const float *restrict pa = prev->a + b, *restrict ps = prev->s + b;
        float *restrict a = next->a + b;
        float *restrict tht = cth ? cth + b : thbuf;
        /* a_t = rho a_{t-1} + (1 - rho) s_{t-1};  th_t = threshold + beta_a a_t */
        for (size_t j = 0; j < m; j++) {
            a[j] = r[j] * pa[j] + (1.0f - r[j]) * ps[j];
            tht[j] = thr + beta * a[j];
        }
        th = tht;
    } else if (next->a) {
        memset(next->a + b, 0, m * sizeof(float));   /* a_t = 0 */
    }

    /* v_t = alpha u_{t-1} + g I_t,  g = 1 - gs alpha */
    for (size_t j = 0; j < m; j++) v[j] = al[j] * pu[j] + (1.0f - gs * al[j]) * in[j];

    if (c->li) {   /* u_t = v_t, s_t = 0 */
        memcpy(u, v, m * sizeof(float));
        if (next->s) memset(next->s + b, 0, m * sizeof(float));
        return;
    }

    /* s_t = H(v_t - th_t) */
    float *restrict s = next->s ? next->s + b : sbuf;
    for (size_t j = 0; j < m; j++) xbuf[j] = v[j] - th[j];
    spike_fwd(s, xbuf, m, c);

    /* u_t = reset(v_t, s_t, th_t) */
    switch (c->reset) {
    case SOMA_RESET_SUBTRACT:
        for (size_t j = 0; j < m; j++) u[j] = v[j] - th[j] * s[j];
        break;
    case SOMA_RESET_ZERO:
        for (size_t j = 0; j < m; j++) u[j] = v[j] * (1.0f - s[j]);
        break;
    case SOMA_RESET_NONE:
    default:
        memcpy(u, v, m * sizeof(float));
        break;
    }
}

static void cell_forward_range(soma_cell_state *next, soma_cell_cache *cache,
                               const soma_cell_state *prev, const float *I, const cell_k *c,
                               size_t lo, size_t hi)
{
    cell_bufs kb;
    float *cv = cache ? cache->v : NULL, *cth = cache ? cache->th : NULL;
    cell_bufs_init(&kb, c);
    size_t b = lo;
    for (; b + BLK <= hi; b += BLK) cell_forward_block(next, cv, cth, prev, I, c, &kb, b, BLK);
    if (b < hi) cell_forward_block(next, cv, cth, prev, I, c, &kb, b, hi - b);
}

/* The outputs of one backward call (NULL = not needed). */
typedef struct cell_grads { float *pu, *pa, *ps, *I, *alpha, *rho; } cell_grads;

/* Backward of elements [b, b + m), m <= BLK; inlined as the forward is. */
static inline __attribute__((always_inline))
void cell_backward_block(const cell_grads *g, const soma_cell_state *dnext,
                         const soma_cell_cache *cache, const soma_cell_state *prev,
                         const float *I, const cell_k *c, const cell_bufs *kb, size_t b, size_t m)
{
    float sbuf[BLK], dxbuf[BLK], dvbuf[BLK], dthbuf[BLK];
    const float beta = c->beta, gs = c->gs;
    const float *restrict al = c->alpha_v ? c->alpha_v + b : kb->al;
    const float *restrict du = dnext->u ? dnext->u + b : kb->zero;
    const float *restrict da = dnext->a ? dnext->a + b : kb->zero;
    const float *restrict ds = dnext->s ? dnext->s + b : kb->zero;
    const float *restrict v = cache->v + b;
    const float *restrict th = c->alif ? cache->th + b : kb->th;
    const float *dv = du;   /* LI: u_t = v_t */

    if (!c->li) {
        float *restrict s = sbuf, *restrict dx = dxbuf, *restrict dvw = dvbuf;
        /* s_t = S(x), x = v_t - th_t, recomputed; dx <- S'(x) for now */
        for (size_t j = 0; j < m; j++) dx[j] = v[j] - th[j];
        spike_fwd(s, dx, m, c);
        spike_grad(dx, dx, m, c);

        /* dx = ds~ S'(x), ds~ = dL/ds_t plus the reset path's, unless detached:
         *   u = v - th s: -th du;   u = v (1 - s): -v du */
        if (c->detach || c->reset == SOMA_RESET_NONE)
            for (size_t j = 0; j < m; j++) dx[j] *= ds[j];
        else if (c->reset == SOMA_RESET_SUBTRACT)
            for (size_t j = 0; j < m; j++) dx[j] *= ds[j] - th[j] * du[j];
        else
            for (size_t j = 0; j < m; j++) dx[j] *= ds[j] - v[j] * du[j];

        /* dv: the reset with s_t held fixed, plus dx (x = v - th) */
        if (c->reset == SOMA_RESET_ZERO)
            for (size_t j = 0; j < m; j++) dvw[j] = du[j] * (1.0f - s[j]) + dx[j];
        else
            for (size_t j = 0; j < m; j++) dvw[j] = du[j] + dx[j];
        dv = dvw;

        /* dth (ALIF): -dx, and SUBTRACT's u = v - th s gives -s du */
        if (c->alif) {
            if (c->reset == SOMA_RESET_SUBTRACT)
                for (size_t j = 0; j < m; j++) dthbuf[j] = -dx[j] - s[j] * du[j];
            else
                for (size_t j = 0; j < m; j++) dthbuf[j] = -dx[j];
        }
    }

    /* v_t = alpha u_{t-1} + g I_t,  g = 1 - gs alpha */
    if (g->pu) {
        float *restrict o = g->pu + b;
        for (size_t j = 0; j < m; j++) o[j] += al[j] * dv[j];
    }
    if (g->I) {
        float *restrict o = g->I + b;
        for (size_t j = 0; j < m; j++) o[j] += (1.0f - gs * al[j]) * dv[j];
    }
    if (g->alpha) {   /* dv/dalpha = u_{t-1} - gs I_t */
        float *restrict o = g->alpha + b;
        const float *restrict pu = prev->u + b;
        if (gs != 0.0f) {
            const float *restrict in = I + b;
            for (size_t j = 0; j < m; j++) o[j] += dv[j] * (pu[j] - in[j]);
        } else {
            for (size_t j = 0; j < m; j++) o[j] += dv[j] * pu[j];
        }
    }

    if (c->alif && (g->pa || g->ps || g->rho)) {
        /* th_t = threshold + beta_a a_t:  da~ = dL/da_t + beta_a dth */
        float *restrict dat = dthbuf;
        for (size_t j = 0; j < m; j++) dat[j] = da[j] + beta * dat[j];
        /* a_t = rho a_{t-1} + (1 - rho) s_{t-1} */
        const float *restrict r = c->rho_v ? c->rho_v + b : kb->rho;
        if (g->pa) {
            float *restrict o = g->pa + b;
            for (size_t j = 0; j < m; j++) o[j] += r[j] * dat[j];
        }
        if (g->ps) {
            float *restrict o = g->ps + b;
            for (size_t j = 0; j < m; j++) o[j] += (1.0f - r[j]) * dat[j];
        }
        if (g->rho) {
            float *restrict o = g->rho + b;
            const float *restrict pa = prev->a + b, *restrict ps = prev->s + b;
            for (size_t j = 0; j < m; j++) o[j] += dat[j] * (pa[j] - ps[j]);
        }
    }
}

static void cell_backward_range(const cell_grads *g, const soma_cell_state *dnext,
                                const soma_cell_cache *cache, const soma_cell_state *prev,
                                const float *I, const cell_k *c, size_t lo, size_t hi)
{
    cell_bufs kb;
    cell_bufs_init(&kb, c);
    size_t b = lo;
    for (; b + BLK <= hi; b += BLK) cell_backward_block(g, dnext, cache, prev, I, c, &kb, b, BLK);
    if (b < hi) cell_backward_block(g, dnext, cache, prev, I, c, &kb, b, hi - b);
}

void soma__cell_forward_spike(soma_cell_state *next, soma_cell_cache *cache,
                              const soma_cell_state *prev, const float *I,
                              const float *alpha_v, const float *rho_v,
                              const soma_cell_params *p, const soma__spike *sp, size_t n)
{
    const cell_k c = cell_resolve(p, alpha_v, rho_v, sp);
    if (n < PAR_MIN) { cell_forward_range(next, cache, prev, I, &c, 0, n); return; }
#pragma omp parallel
    {
        size_t lo, hi;
        soma__thread_range(n, &lo, &hi);
        cell_forward_range(next, cache, prev, I, &c, lo, hi);
    }
}

void soma__cell_backward_spike(soma_cell_state *dprev, float *dI, float *dalpha, float *drho,
                               const soma_cell_state *dnext, const soma_cell_cache *cache,
                               const soma_cell_state *prev, const float *I,
                               const float *alpha_v, const float *rho_v,
                               const soma_cell_params *p, const soma__spike *sp, size_t n)
{
    const cell_k c = cell_resolve(p, alpha_v, rho_v, sp);
    cell_grads g = { dprev ? dprev->u : NULL, dprev ? dprev->a : NULL, dprev ? dprev->s : NULL,
                     dI, dalpha, drho };
    if (!c.alif) g.pa = g.ps = g.rho = NULL;              /* no a_{t-1}, s_{t-1} in this step */
    if (p->kind == SOMA_NEURON_IF) g.alpha = NULL;        /* alpha is fixed at 1 */
    if (!(g.pu || g.pa || g.ps || g.I || g.alpha || g.rho)) return;
    if (n < PAR_MIN) { cell_backward_range(&g, dnext, cache, prev, I, &c, 0, n); return; }
#pragma omp parallel
    {
        size_t lo, hi;
        soma__thread_range(n, &lo, &hi);
        cell_backward_range(&g, dnext, cache, prev, I, &c, lo, hi);
    }
}

/* Shapes: every array n values.  Reads prev->u, I, alpha_v (and prev->a,
 * prev->s, rho_v for ALIF); writes next->u, next->s (LI: zeros; NULL: not
 * stored), next->a (ALIF: a_t, required; other kinds: zeros if non-NULL),
 * cache->v and, for ALIF, cache->th (each NULL: not stored).  No output may
 * alias an input.  p is assumed valid (soma_cell_params_check). */
void soma_cell_forward(soma_cell_state *next, soma_cell_cache *cache,
                       const soma_cell_state *prev, const float *I,
                       const float *alpha_v, const float *rho_v,
                       const soma_cell_params *p, size_t n)
{
    const soma__spike step = { SOMA__SPIKE_STEP, 0.0f };
    soma__cell_forward_spike(next, cache, prev, I, alpha_v, rho_v, p, &step, n);
}

/* The same shapes; cache as written by the forward of this step (v, and th
 * for ALIF, required), prev, I, alpha_v, rho_v its inputs (prev->u is read
 * only for dalpha, I only for dalpha with input_scale, prev->a/prev->s only
 * for drho: prev and I may be NULL when not read). */
void soma_cell_backward(soma_cell_state *dprev, float *dI, float *dalpha, float *drho,
                        const soma_cell_state *dnext, const soma_cell_cache *cache,
                        const soma_cell_state *prev, const float *I,
                        const float *alpha_v, const float *rho_v,
                        const soma_cell_params *p, size_t n)
{
    const soma__spike step = { SOMA__SPIKE_STEP, 0.0f };
    soma__cell_backward_spike(dprev, dI, dalpha, drho, dnext, cache, prev, I, alpha_v, rho_v,
                              p, &step, n);
}
