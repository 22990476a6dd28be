/*
 * test_neuron.c - surrogates and the spiking-cell step (src/neuron).
 *
 * Method.  The spike H(x) is a step, so finite differences of the real
 * forward say nothing about the spike paths.  The kernel therefore has a
 * second spike entry (src/neuron/neuron.h): s = sigmoid(k x) with its exact
 * derivative, run through the very same forward/backward code.  With it:
 *
 *  - a double-precision reference of the cell, written here from the
 *    equations in soma.h (not from cell.c), is chained over T = 8 steps and
 *    defines L = sum_t (wu_t u_t + ws_t s_t + wa_t a_t) for random weights;
 *  - the float kernel runs the same 8 steps forward (keeping caches) and
 *    then backward in reverse (a small BPTT over the cell alone), and every
 *    gradient it returns (inputs I_t, initial u/a/s, per-element or scalar
 *    alpha and rho) must match the central difference of L in double;
 *  - detach_reset is not a property of the forward, so its reference is
 *    the same forward with the reset's s_t frozen at the unperturbed run's
 *    values (stop-gradient), while the spike outputs still move.
 *
 * This runs for every kind x reset x detach x {scalar, per-element decays}
 * x {input_scale 0, 1}.  The production step is checked on its own too:
 * with the NONE surrogate its backward is the exact derivative of the
 * piecewise-smooth real forward away from the thresholds, so finite
 * differences of the step reference check every non-spike path of the
 * production code; spot checks then pin where the surrogate enters
 * (x = v - th, sign into th).  Gradient buffers start from random values,
 * so the checks also prove that backward accumulates.
 *
 * Also: surrogate values (FPTT's multi-Gaussian reference numbers), each
 * kind's formula and integral, forward semantics (IF spike times, resets,
 * ALIF threshold, LI), the LTC neuron of notes/fptt.md 2.1 over 3 steps
 * by hand, validation messages, and bitwise equality across thread counts.
 */
#include "check.h"
#include "neuron/neuron.h"
#include <stdint.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define FD_EPS 1e-6
#define PI 3.14159265358979323846

static soma_rng rng;

/* ------------------------------------------------------------------------ */
/* helpers                                                                  */
/* ------------------------------------------------------------------------ */

static void *xmalloc(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    if (!p) { fprintf(stderr, "test_neuron: out of memory\n"); exit(2); }
    return p;
}
static float *fnew(size_t n) { return xmalloc(n * sizeof(float)); }
static float *fzeros(size_t n) { float *a = fnew(n); memset(a, 0, n * sizeof *a); return a; }

static void frand(float *a, size_t n, float lo, float hi)
{
    for (size_t i = 0; i < n; i++) a[i] = lo + (hi - lo) * soma_rng_uniform(&rng);
}
static float *frand_new(size_t n, float lo, float hi)
{
    float *a = fnew(n);
    frand(a, n, lo, hi);
    return a;
}

/* the last error contains want */
static int err_has(const char *want)
{
    const char *e = soma_last_error();
    if (strstr(e, want)) return 1;
    fprintf(stderr, "  last error \"%s\" lacks \"%s\"\n", e, want);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* surrogates                                                               */
/* ------------------------------------------------------------------------ */

static double normal_pdf(double x, double mu, double s)
{
    return exp(-(x - mu) * (x - mu) / (2.0 * s * s)) / (sqrt(2.0 * PI) * s);
}

/* Double reference of every surrogate, from the formulas in soma.h. */
static double ref_surr(const soma_surrogate *s, double x)
{
    switch (s->kind) {
    case SOMA_SURR_MULTIGAUSS: {
        double sig = s->width, h = s->height, k = s->scale;
        return s->gamma * ((1 + h) * normal_pdf(x, 0, sig) - h * normal_pdf(x, sig, k * sig) -
                           h * normal_pdf(x, -sig, k * sig));
    }
    case SOMA_SURR_FAST_SIGMOID: return 1.0 / ((s->slope * fabs(x) + 1) * (s->slope * fabs(x) + 1));
    case SOMA_SURR_ARCTAN: {
        double z = PI * s->slope * x / 2;
        return (s->slope / 2) / (1 + z * z);
    }
    case SOMA_SURR_TRIANGLE: return fmax(0.0, 1 - fabs(x) / s->width) / s->width;
    case SOMA_SURR_STRAIGHT: return 1.0;
    default: return 0.0;
    }
}

static void test_surrogate_multigauss_reference(void)
{
    soma_surrogate s;
    CHECK(soma_surrogate_from_name(&s, "multigauss") == SOMA_OK);
    CHECK(s.kind == SOMA_SURR_MULTIGAUSS && s.width == 0.3f && s.height == 0.15f &&
          s.scale == 6.0f && s.gamma == 0.5f);
    /* notes/fptt.md 2.5, measured on the authors' code */
    const float xs[] = { 0.0f, 0.1f, -0.1f, 0.3f, -0.3f, 0.5f, 1.0f, 2.0f };
    const float want[] = { 0.731853f, 0.690580f, 0.690580f, 0.431430f, 0.431430f,
                           0.159085f, -0.025263f, -0.017989f };
    float got[8];
    for (int i = 0; i < 8; i++) got[i] = soma_surrogate_grad(&s, xs[i]);
    check_close_f("multigauss vs FPTT reference values", got, want, 8, 0, 1e-5);
    /* zero crossing near |v| = 0.764, minimum -0.02644 near 1.118 */
    CHECK(soma_surrogate_grad(&s, 0.75f) > 0 && soma_surrogate_grad(&s, 0.78f) < 0);
    CHECK(fabsf(soma_surrogate_grad(&s, 1.118f) - -0.02644f) < 2e-5f);
}

static void test_surrogate_formulas(void)
{
    const float xs[] = { -3.0f, -1.0f, -0.7f, -0.1f, 0.0f, 0.02f, 0.05f, 0.3f, 0.99f, 1.0f,
                         1.5f, 3.0f };
    const size_t nx = sizeof xs / sizeof *xs;
    for (int k = 0; k < SOMA_SURR_COUNT; k++) {
        soma_surrogate s[2];
        soma_surrogate_default(&s[0], (soma_surrogate_kind)k);
        s[1] = s[0];   /* non-default parameters */
        s[1].slope *= 1.7f; s[1].width *= 0.6f; s[1].height *= 2.0f; s[1].scale *= 0.5f;
        s[1].gamma *= 1.3f;
        for (int v = 0; v < 2; v++) {
            CHECK(soma_surrogate_check(&s[v]) == SOMA_OK);
            double got[16], want[16];
            for (size_t i = 0; i < nx; i++) {
                got[i] = soma_surrogate_grad(&s[v], xs[i]);
                want[i] = ref_surr(&s[v], xs[i]);
            }
            char name[96];
            snprintf(name, sizeof name, "surrogate %s (params %d) vs formula",
                     soma_surrogate_name((soma_surrogate_kind)k), v);
            check_close_d(name, got, want, nx, 2e-6, 1e-7);
            /* symmetric, bit for bit */
            int sym = 1;
            for (size_t i = 0; i < nx; i++)
                sym &= soma_surrogate_grad(&s[v], xs[i]) == soma_surrogate_grad(&s[v], -xs[i]);
            CHECK(sym);
        }
    }
    /* hand values */
    soma_surrogate s;
    soma_surrogate_default(&s, SOMA_SURR_FAST_SIGMOID);
    CHECK(s.slope == 25.0f);
    CHECK(fabsf(soma_surrogate_grad(&s, 0.1f) - 1.0f / 12.25f) < 1e-7f);   /* 1/(2.5+1)^2 */
    CHECK(soma_surrogate_grad(&s, 0.0f) == 1.0f);
    soma_surrogate_default(&s, SOMA_SURR_ARCTAN);
    CHECK(s.slope == 2.0f);
    CHECK(fabsf(soma_surrogate_grad(&s, 0.5f) - (float)(1.0 / (1.0 + PI * PI / 4))) < 1e-7f);
    CHECK(soma_surrogate_grad(&s, 0.0f) == 1.0f);
    soma_surrogate_default(&s, SOMA_SURR_TRIANGLE);
    CHECK(s.width == 1.0f);
    CHECK(soma_surrogate_grad(&s, 0.25f) == 0.75f && soma_surrogate_grad(&s, -0.25f) == 0.75f);
    CHECK(soma_surrogate_grad(&s, 1.0f) == 0.0f && soma_surrogate_grad(&s, 1.5f) == 0.0f);
    s.width = 2.0f;
    CHECK(soma_surrogate_grad(&s, 1.0f) == 0.25f);
    soma_surrogate_default(&s, SOMA_SURR_STRAIGHT);
    CHECK(soma_surrogate_grad(&s, 0.0f) == 1.0f && soma_surrogate_grad(&s, -7.0f) == 1.0f);
    soma_surrogate_default(&s, SOMA_SURR_NONE);
    int zero = 1;
    const float odd[] = { 0.0f, -0.0f, 1e-30f, -5.0f, 0.3f, INFINITY, -INFINITY, NAN };
    for (int i = 0; i < 8; i++) {
        float g = soma_surrogate_grad(&s, odd[i]);
        zero &= g == 0.0f && !signbit(g);
    }
    CHECK(zero);
}

/* the block function the kernel uses equals the scalar one, bit for bit */
static void test_surrogate_block(void)
{
    enum { N = 1031 };
    float *x = frand_new(N, -3.0f, 3.0f), *g = fnew(N);
    x[0] = 0.0f; x[1] = 0.3f; x[2] = -1.0f;
    for (int k = 0; k < SOMA_SURR_COUNT; k++) {
        soma_surrogate s;
        soma_surrogate_default(&s, (soma_surrogate_kind)k);
        soma__surrogate_grad_n(g, x, N, &s);
        int same = 1;
        for (int i = 0; i < N; i++) same &= g[i] == soma_surrogate_grad(&s, x[i]);
        if (!same) fprintf(stderr, "  surrogate %s\n", soma_surrogate_name(s.kind));
        CHECK(same);
    }
    free(x); free(g);
}

/* midpoint rule over [-L, L], in double */
static double integrate(const soma_surrogate *s, double L, long steps)
{
    double h = 2 * L / (double)steps, sum = 0;
    for (long i = 0; i < steps; i++) sum += soma_surrogate_grad(s, (float)(-L + (i + 0.5) * h));
    return sum * h;
}

static void test_surrogate_integrals(void)
{
    soma_surrogate s;
    soma_surrogate_default(&s, SOMA_SURR_FAST_SIGMOID);   /* d/dx of x / (1 + slope |x|) */
    double L = 40, want = 2.0 / s.slope * (1 - 1 / (1 + s.slope * L));
    double got = integrate(&s, L, 400000);
    CHECK(fabs(got - want) < 1e-4 * want);
    CHECK(fabs(got - 2.0 / 25) < 1e-3);
    soma_surrogate_default(&s, SOMA_SURR_ARCTAN);
    L = 200;
    want = 2 / PI * atan(PI * s.slope * L / 2);
    got = integrate(&s, L, 400000);
    CHECK(fabs(got - want) < 1e-4 && fabs(got - 1) < 2e-3);
    soma_surrogate_default(&s, SOMA_SURR_TRIANGLE);
    got = integrate(&s, 2, 200000);
    CHECK(fabs(got - 1) < 1e-5);
    s.width = 0.25f;
    got = integrate(&s, 2, 200000);
    CHECK(fabs(got - 1) < 1e-4);
    soma_surrogate_default(&s, SOMA_SURR_MULTIGAUSS);     /* gamma (1 - h) */
    got = integrate(&s, 20, 200000);
    CHECK(fabs(got - 0.5 * 0.85) < 1e-5);
    soma_surrogate_default(&s, SOMA_SURR_NONE);
    CHECK(integrate(&s, 5, 1000) == 0.0);
}

static void test_surrogate_names_and_checks(void)
{
    const char *names[] = { "multigauss", "fast-sigmoid", "arctan", "triangle", "straight",
                            "none" };
    for (int k = 0; k < SOMA_SURR_COUNT; k++) {
        soma_surrogate s, d;
        CHECK(strcmp(soma_surrogate_name((soma_surrogate_kind)k), names[k]) == 0);
        CHECK(soma_surrogate_from_name(&s, names[k]) == SOMA_OK && (int)s.kind == k);
        soma_surrogate_default(&d, (soma_surrogate_kind)k);
        CHECK(memcmp(&s, &d, sizeof s) == 0);
    }
    CHECK(strcmp(soma_surrogate_name(SOMA_SURR_COUNT), "unknown") == 0);
    soma_surrogate s;
    CHECK(soma_surrogate_from_name(&s, "sigmoid") == SOMA_ERR_ARG);
    CHECK(err_has("unknown surrogate 'sigmoid'") && err_has("multigauss, fast-sigmoid, arctan, "
                                                            "triangle, straight, none"));
    CHECK(soma_surrogate_from_name(&s, NULL) == SOMA_ERR_ARG);

    soma_surrogate_default(&s, SOMA_SURR_FAST_SIGMOID);
    s.slope = 0;
    CHECK(soma_surrogate_check(&s) == SOMA_ERR_ARG && err_has("fast-sigmoid surrogate slope "
                                                              "must be > 0, got 0"));
    soma_surrogate_default(&s, SOMA_SURR_ARCTAN);
    s.slope = NAN;
    CHECK(soma_surrogate_check(&s) == SOMA_ERR_ARG && err_has("arctan surrogate slope"));
    soma_surrogate_default(&s, SOMA_SURR_TRIANGLE);
    s.width = -1;
    CHECK(soma_surrogate_check(&s) == SOMA_ERR_ARG && err_has("triangle surrogate width must "
                                                              "be > 0, got -1"));
    soma_surrogate_default(&s, SOMA_SURR_MULTIGAUSS);
    s.width = 0;
    CHECK(soma_surrogate_check(&s) == SOMA_ERR_ARG && err_has("width (sigma)"));
    soma_surrogate_default(&s, SOMA_SURR_MULTIGAUSS);
    s.height = -0.1f;
    CHECK(soma_surrogate_check(&s) == SOMA_ERR_ARG && err_has("height must be >= 0"));
    soma_surrogate_default(&s, SOMA_SURR_MULTIGAUSS);
    s.scale = 0;
    CHECK(soma_surrogate_check(&s) == SOMA_ERR_ARG && err_has("scale must be > 0"));
    soma_surrogate_default(&s, SOMA_SURR_MULTIGAUSS);
    s.gamma = INFINITY;
    CHECK(soma_surrogate_check(&s) == SOMA_ERR_ARG && err_has("gamma must be > 0"));
    soma_surrogate_default(&s, (soma_surrogate_kind)17);
    CHECK(soma_surrogate_check(&s) == SOMA_ERR_ARG && err_has("unknown surrogate kind 17"));
    CHECK(soma_surrogate_check(NULL) == SOMA_ERR_ARG);
    soma_surrogate_default(&s, SOMA_SURR_STRAIGHT);
    CHECK(soma_surrogate_check(&s) == SOMA_OK);
}

/* ------------------------------------------------------------------------ */
/* the cell: a double reference written from the equations in soma.h        */
/* ------------------------------------------------------------------------ */

/* One step in double over n elements.  al, rh: the decays per element (the
 * scalar spread out when the kernel gets NULL).  k > 0 replaces H(x) by
 * sigmoid(k x).  sfix non-NULL: the reset term uses sfix (a spike frozen
 * by detach) instead of s.  v, th may be NULL. */
static void ref_step(double *u, double *a, double *s, double *v, double *th, const double *pu,
                     const double *pa, const double *ps, const double *I, const double *al,
                     const double *rh, const double *sfix, const soma_cell_params *p, double k,
                     int n)
{
    for (int i = 0; i < n; i++) {
        const double alpha = p->kind == SOMA_NEURON_IF ? 1.0 : al[i];
        double ai = 0, thi = p->threshold;
        if (p->kind == SOMA_NEURON_ALIF) {
            ai = rh[i] * pa[i] + (1 - rh[i]) * ps[i];
            thi = p->threshold + p->beta_a * ai;
        }
        const double vi = alpha * pu[i] + (p->input_scale ? 1 - alpha : 1.0) * I[i];
        double si = 0, ui = vi;
        if (p->kind != SOMA_NEURON_LI) {
            const double x = vi - thi;
            si = k > 0 ? 1 / (1 + exp(-k * x)) : (x > 0 ? 1.0 : 0.0);
            const double sr = sfix ? sfix[i] : si;
            if (p->reset == SOMA_RESET_SUBTRACT) ui = vi - thi * sr;
            else if (p->reset == SOMA_RESET_ZERO) ui = vi * (1 - sr);
        }
        u[i] = ui; a[i] = ai; s[i] = si;
        if (v) v[i] = vi;
        if (th) th[i] = thi;
    }
}

/* A test problem: n cells over T steps. */
enum { T = 8, NC = 6 };
typedef struct problem {
    soma_cell_params p;
    double k;           /* > 0: sigmoid spikes; 0: the production step */
    int per_elem;       /* alpha_v / rho_v given (they differ per step) */
    float u0[NC], a0[NC], s0[NC];
    float I[T * NC], al[T * NC], rh[T * NC];
    float wu[T * NC], ws[T * NC], wa[T * NC];
} problem;

/* Double copies of what finite differences perturb. */
typedef struct dvars { double u0[NC], a0[NC], s0[NC], I[T * NC], al[T * NC], rh[T * NC]; } dvars;

static void dvars_from(dvars *d, const problem *q)
{
    for (int i = 0; i < NC; i++) { d->u0[i] = q->u0[i]; d->a0[i] = q->a0[i]; d->s0[i] = q->s0[i]; }
    for (int i = 0; i < T * NC; i++) { d->I[i] = q->I[i]; d->al[i] = q->al[i]; d->rh[i] = q->rh[i]; }
}

/* L over the whole sequence in double.  sfix (T*NC, detach only): frozen
 * reset spikes; s_out (T*NC): the spikes, recorded; xmin: min |v - th|. */
static double ref_loss(const problem *q, const dvars *d, const double *sfix, double *s_out,
                       double *u_out, double *a_out, double *xmin)
{
    double u[NC], a[NC], s[NC], pu[NC], pa[NC], ps[NC], v[NC], th[NC], L = 0;
    memcpy(pu, d->u0, sizeof pu); memcpy(pa, d->a0, sizeof pa); memcpy(ps, d->s0, sizeof ps);
    if (xmin) *xmin = INFINITY;
    for (int t = 0; t < T; t++) {
        ref_step(u, a, s, v, th, pu, pa, ps, d->I + t * NC, d->al + t * NC, d->rh + t * NC,
                 sfix ? sfix + t * NC : NULL, &q->p, q->k, NC);
        for (int i = 0; i < NC; i++) {
            L += q->wu[t * NC + i] * u[i] + q->ws[t * NC + i] * s[i] + q->wa[t * NC + i] * a[i];
            if (xmin && fabs(v[i] - th[i]) < *xmin) *xmin = fabs(v[i] - th[i]);
        }
        if (s_out) memcpy(s_out + t * NC, s, sizeof s);
        if (u_out) memcpy(u_out + t * NC, u, sizeof u);
        if (a_out) memcpy(a_out + t * NC, a, sizeof a);
        memcpy(pu, u, sizeof u); memcpy(pa, a, sizeof a); memcpy(ps, s, sizeof s);
    }
    return L;
}

/* dL/dx by central differences; `group` > 1 moves x[i], x[i+stride], ...
 * together (a scalar alpha shared by all steps). */
static void fd_grad(double *out, double *x, int count, int group, int stride, const problem *q,
                    dvars *d, const double *sfix)
{
    for (int i = 0; i < count; i++) {
        for (int g = 0; g < group; g++) x[i + g * stride] += FD_EPS;
        double Lp = ref_loss(q, d, sfix, NULL, NULL, NULL, NULL);
        for (int g = 0; g < group; g++) x[i + g * stride] -= 2 * FD_EPS;
        double Lm = ref_loss(q, d, sfix, NULL, NULL, NULL, NULL);
        for (int g = 0; g < group; g++) x[i + g * stride] += FD_EPS;
        out[i] = (Lp - Lm) / (2 * FD_EPS);
    }
}

/* What the kernel returns for a problem: forward trajectory and gradients
 * (with the random initial values of the gradient buffers subtracted). */
typedef struct kout {
    float u[T * NC], a[T * NC], s[T * NC];
    float dI[T * NC], dal[T * NC], drh[T * NC], du0[NC], da0[NC], ds0[NC];
} kout;

/* Forward T steps keeping caches, then backward in reverse. */
static void kernel_run(kout *o, const problem *q, const soma__spike *sp)
{
    const int alif = q->p.kind == SOMA_NEURON_ALIF;
    float u[(T + 1) * NC], a[(T + 1) * NC], s[(T + 1) * NC], v[T * NC], th[T * NC];
    memcpy(u, q->u0, sizeof q->u0); memcpy(a, q->a0, sizeof q->a0); memcpy(s, q->s0, sizeof q->s0);
    for (int t = 1; t <= T; t++) {
        soma_cell_state next = { u + t * NC, alif ? a + t * NC : NULL, s + t * NC };
        soma_cell_state prev = { u + (t - 1) * NC, alif ? a + (t - 1) * NC : NULL, s + (t - 1) * NC };
        soma_cell_cache cache = { v + (t - 1) * NC, alif ? th + (t - 1) * NC : NULL };
        soma__cell_forward_spike(&next, &cache, &prev, q->I + (t - 1) * NC,
                                 q->per_elem ? q->al + (t - 1) * NC : NULL,
                                 q->per_elem ? q->rh + (t - 1) * NC : NULL, &q->p, sp, NC);
    }
    memcpy(o->u, u + NC, sizeof o->u);
    memcpy(o->s, s + NC, sizeof o->s);
    if (alif) memcpy(o->a, a + NC, sizeof o->a);
    else memset(o->a, 0, sizeof o->a);

    /* gradient buffers start random: backward must add to them */
    float init_I[T * NC], init_al[T * NC], init_rh[T * NC];
    frand(init_I, T * NC, -1, 1); frand(init_al, T * NC, -1, 1); frand(init_rh, T * NC, -1, 1);
    memcpy(o->dI, init_I, sizeof init_I);
    memcpy(o->dal, init_al, sizeof init_al);
    memcpy(o->drh, init_rh, sizeof init_rh);
    float cu[NC] = { 0 }, ca[NC] = { 0 }, cs[NC] = { 0 };   /* carried dL/d(state_t) */
    for (int t = T; t >= 1; t--) {
        float du[NC], da[NC], ds[NC], nu[NC], na[NC], ns[NC], r[3][NC];
        for (int i = 0; i < NC; i++) {
            du[i] = q->wu[(t - 1) * NC + i] + cu[i];
            da[i] = q->wa[(t - 1) * NC + i] + ca[i];
            ds[i] = q->ws[(t - 1) * NC + i] + cs[i];
        }
        frand(r[0], NC, -1, 1); frand(r[1], NC, -1, 1); frand(r[2], NC, -1, 1);
        memcpy(nu, r[0], sizeof nu); memcpy(na, r[1], sizeof na); memcpy(ns, r[2], sizeof ns);
        soma_cell_state dnext = { du, alif ? da : NULL, ds };
        soma_cell_state dprev = { nu, na, ns };
        soma_cell_state prev = { u + (t - 1) * NC, alif ? a + (t - 1) * NC : NULL, s + (t - 1) * NC };
        soma_cell_cache cache = { v + (t - 1) * NC, alif ? th + (t - 1) * NC : NULL };
        soma__cell_backward_spike(&dprev, o->dI + (t - 1) * NC, o->dal + (t - 1) * NC,
                                  o->drh + (t - 1) * NC, &dnext, &cache, &prev,
                                  q->I + (t - 1) * NC, q->per_elem ? q->al + (t - 1) * NC : NULL,
                                  q->per_elem ? q->rh + (t - 1) * NC : NULL, &q->p, sp, NC);
        for (int i = 0; i < NC; i++) {
            cu[i] = nu[i] - r[0][i]; ca[i] = na[i] - r[1][i]; cs[i] = ns[i] - r[2][i];
        }
    }
    memcpy(o->du0, cu, sizeof cu); memcpy(o->da0, ca, sizeof ca); memcpy(o->ds0, cs, sizeof cs);
    for (int i = 0; i < T * NC; i++) {
        o->dI[i] -= init_I[i]; o->dal[i] -= init_al[i]; o->drh[i] -= init_rh[i];
    }
}

static void problem_init(problem *q, soma_neuron_kind kind, soma_reset reset, int detach,
                         int per_elem, int input_scale, double k)
{
    soma_cell_params_default(&q->p, kind);
    q->p.reset = reset;
    q->p.detach_reset = detach;
    q->p.input_scale = input_scale;
    q->p.threshold = 0.7f;
    q->p.alpha = 0.8f;
    q->p.rho = 0.85f;
    q->p.beta_a = 0.6f;
    q->k = k;
    q->per_elem = per_elem;
    frand(q->u0, NC, 0, 1); frand(q->a0, NC, 0, 0.5f); frand(q->s0, NC, 0, 1);
    if (k == 0) for (int i = 0; i < NC; i++) q->s0[i] = q->s0[i] > 0.5f ? 1.0f : 0.0f;
    frand(q->I, T * NC, input_scale ? 0.0f : -0.2f, input_scale ? 2.5f : 0.8f);
    if (per_elem) { frand(q->al, T * NC, 0.3f, 0.95f); frand(q->rh, T * NC, 0.5f, 0.95f); }
    else {
        for (int i = 0; i < T * NC; i++) { q->al[i] = q->p.alpha; q->rh[i] = q->p.rho; }
    }
    frand(q->wu, T * NC, -1, 1); frand(q->ws, T * NC, -1, 1); frand(q->wa, T * NC, -1, 1);
}

static void fgot(double *dst, const float *src, int n)
{
    for (int i = 0; i < n; i++) dst[i] = src[i];
}

/* Compares every kernel gradient with finite differences of ref_loss. */
static void compare_grads(const problem *q, const kout *o, const char *tag, double rtol,
                          double atol)
{
    static dvars d;
    static double sfix[T * NC], fd[T * NC], got[T * NC], zero[T * NC];
    const int is_if = q->p.kind == SOMA_NEURON_IF;
    char name[160];
    dvars_from(&d, q);
    const double *fix = NULL;
    if (q->p.detach_reset) {   /* the reset's spikes, frozen at the unperturbed values */
        ref_loss(q, &d, NULL, sfix, NULL, NULL, NULL);
        fix = sfix;
    }
    memset(zero, 0, sizeof zero);

    fd_grad(fd, d.I, T * NC, 1, 0, q, &d, fix);
    fgot(got, o->dI, T * NC);
    snprintf(name, sizeof name, "%s: dI", tag);
    check_close_d(name, got, fd, T * NC, rtol, atol);

    fd_grad(fd, d.u0, NC, 1, 0, q, &d, fix);
    fgot(got, o->du0, NC);
    snprintf(name, sizeof name, "%s: du0", tag);
    check_close_d(name, got, fd, NC, rtol, atol);

    fd_grad(fd, d.a0, NC, 1, 0, q, &d, fix);   /* zero unless ALIF */
    fgot(got, o->da0, NC);
    snprintf(name, sizeof name, "%s: da0", tag);
    check_close_d(name, got, fd, NC, rtol, atol);

    fd_grad(fd, d.s0, NC, 1, 0, q, &d, fix);   /* zero unless ALIF */
    fgot(got, o->ds0, NC);
    snprintf(name, sizeof name, "%s: ds0", tag);
    check_close_d(name, got, fd, NC, rtol, atol);

    /* alpha: per step and element, or the scalar moved at every step for
     * element i against the sum over steps of dalpha[i].  IF: no gradient. */
    if (q->per_elem) {
        fd_grad(fd, d.al, T * NC, 1, 0, q, &d, fix);
        fgot(got, o->dal, T * NC);
        snprintf(name, sizeof name, "%s: dalpha_v", tag);
        check_close_d(name, got, is_if ? zero : fd, T * NC, rtol, atol);
    } else {
        fd_grad(fd, d.al, NC, T, NC, q, &d, fix);
        for (int i = 0; i < NC; i++) {
            got[i] = 0;
            for (int t = 0; t < T; t++) got[i] += o->dal[t * NC + i];
        }
        snprintf(name, sizeof name, "%s: dalpha", tag);
        check_close_d(name, got, is_if ? zero : fd, NC, rtol, atol);
    }
    if (is_if) {   /* IF ignores alpha: the reference must not move either */
        fd_grad(fd, d.al, NC, T, NC, q, &d, fix);
        check_close_d("IF: L independent of alpha", fd, zero, NC, 0, 1e-9);
    }
    if (q->per_elem) {
        fd_grad(fd, d.rh, T * NC, 1, 0, q, &d, fix);
        fgot(got, o->drh, T * NC);
        snprintf(name, sizeof name, "%s: drho_v", tag);
        check_close_d(name, got, fd, T * NC, rtol, atol);
    } else {
        fd_grad(fd, d.rh, NC, T, NC, q, &d, fix);
        for (int i = 0; i < NC; i++) {
            got[i] = 0;
            for (int t = 0; t < T; t++) got[i] += o->drh[t * NC + i];
        }
        snprintf(name, sizeof name, "%s: drho", tag);
        check_close_d(name, got, fd, NC, rtol, atol);
    }
}

static const char *kind_tag(const problem *q)
{
    static char buf[128];
    snprintf(buf, sizeof buf, "%s/%s%s/%s/input_scale %d/%s", soma_neuron_name(q->p.kind),
             soma_reset_name(q->p.reset), q->p.detach_reset ? "+detach" : "",
             q->per_elem ? "alpha_v,rho_v" : "scalar decays", q->p.input_scale,
             q->k > 0 ? "sigmoid spikes" : "step, surrogate none");
    return buf;
}

/* Every combination with smooth spikes: all paths, the spike ones included. */
static void test_cell_fd_smooth(void)
{
    const soma__spike sp = { SOMA__SPIKE_SIGMOID, 4.0f };
    static problem q;
    static kout o;
    int nonzero_spike_grad = 0;
    for (int kind = 0; kind < SOMA_NEURON_COUNT; kind++)
        for (int reset = 0; reset < SOMA_RESET_COUNT; reset++)
            for (int detach = 0; detach < 2; detach++)
                for (int per = 0; per < 2; per++)
                    for (int isc = 0; isc < 2; isc++) {
                        if (kind == SOMA_NEURON_IF && isc) continue;   /* rejected by check */
                        problem_init(&q, (soma_neuron_kind)kind, (soma_reset)reset, detach, per,
                                     isc, sp.k);
                        CHECK(soma_cell_params_check(&q.p) == SOMA_OK);
                        kernel_run(&o, &q, &sp);
                        /* the kernel's smooth forward is the reference's */
                        static dvars d;
                        static double su[T * NC], sa[T * NC], ss[T * NC], gu[T * NC],
                            ga[T * NC], gs[T * NC];
                        dvars_from(&d, &q);
                        ref_loss(&q, &d, NULL, ss, su, sa, NULL);
                        fgot(gu, o.u, T * NC); fgot(ga, o.a, T * NC); fgot(gs, o.s, T * NC);
                        char name[192];
                        snprintf(name, sizeof name, "%s: forward u", kind_tag(&q));
                        check_close_d(name, gu, su, T * NC, 1e-5, 1e-6);
                        snprintf(name, sizeof name, "%s: forward a", kind_tag(&q));
                        check_close_d(name, ga, sa, T * NC, 1e-5, 1e-6);
                        snprintf(name, sizeof name, "%s: forward s", kind_tag(&q));
                        check_close_d(name, gs, ss, T * NC, 1e-5, 1e-6);
                        compare_grads(&q, &o, kind_tag(&q), 1e-3, 1e-4);
                        /* the spike path is exercised: an output gradient of s matters */
                        if (kind != SOMA_NEURON_LI) {
                            double mx = 0;
                            for (int i = 0; i < NC; i++) mx = fmax(mx, fabs(o.dI[i]));
                            nonzero_spike_grad += mx > 1e-3;
                        }
                    }
    CHECK(nonzero_spike_grad > 0);
}

/* The production step with the NONE surrogate: the exact derivative of the
 * real (piecewise smooth) forward, so finite differences apply. */
static void test_cell_fd_step(void)
{
    const soma__spike sp = { SOMA__SPIKE_STEP, 0.0f };
    static problem q;
    static kout o;
    int spikes = 0;
    for (int kind = 0; kind < SOMA_NEURON_COUNT; kind++)
        for (int reset = 0; reset < SOMA_RESET_COUNT; reset++)
            for (int detach = 0; detach < 2; detach++)
                for (int per = 0; per < 2; per++)
                    for (int isc = 0; isc < 2; isc++) {
                        if (kind == SOMA_NEURON_IF && isc) continue;
                        problem_init(&q, (soma_neuron_kind)kind, (soma_reset)reset, detach, per,
                                     isc, 0.0);
                        soma_surrogate_default(&q.p.surr, SOMA_SURR_NONE);
                        kernel_run(&o, &q, &sp);
                        static dvars d;
                        static double su[T * NC], sa[T * NC], ss[T * NC], gu[T * NC],
                            ga[T * NC], gs[T * NC];
                        double xmin;
                        dvars_from(&d, &q);
                        ref_loss(&q, &d, NULL, ss, su, sa, &xmin);
                        /* FD must not cross a threshold: a step of 1e-6 moves x by a
                         * few 1e-6 at most */
                        if (kind != SOMA_NEURON_LI && !CHECK(xmin > 1e-5))
                            fprintf(stderr, "  %s: min |v - th| = %g\n", kind_tag(&q), xmin);
                        fgot(gu, o.u, T * NC); fgot(ga, o.a, T * NC); fgot(gs, o.s, T * NC);
                        char name[192];
                        snprintf(name, sizeof name, "%s: forward u", kind_tag(&q));
                        check_close_d(name, gu, su, T * NC, 1e-5, 1e-6);
                        snprintf(name, sizeof name, "%s: forward a", kind_tag(&q));
                        check_close_d(name, ga, sa, T * NC, 1e-5, 1e-6);
                        snprintf(name, sizeof name, "%s: forward s", kind_tag(&q));
                        check_close_d(name, gs, ss, T * NC, 0, 0);
                        for (int i = 0; i < T * NC; i++) spikes += o.s[i] != 0.0f;
                        compare_grads(&q, &o, kind_tag(&q), 1e-4, 1e-5);
                    }
    CHECK(spikes > 50);   /* the resets were exercised */
}

/* Where the surrogate enters the production backward: one step, by hand. */
static void test_cell_surrogate_paths(void)
{
    enum { N = 5 };
    soma_cell_params p;
    float pu[N] = { 0.9f, 0.2f, 1.3f, 0.5f, 0.05f }, pa[N] = { 0.1f, 0.4f, 0.0f, 0.3f, 0.2f };
    float ps[N] = { 1, 0, 0, 1, 0 }, I[N] = { 0.4f, 0.9f, 0.1f, -0.2f, 0.6f };
    float u[N], a[N], s[N], v[N], th[N];
    soma_cell_state prev = { pu, pa, ps };
    for (int kind = 0; kind < 3; kind++)   /* LIF, IF, ALIF */
        for (int reset = 0; reset < SOMA_RESET_COUNT; reset++)
            for (int detach = 0; detach < 2; detach++) {
                soma_cell_params_default(&p, (soma_neuron_kind)kind);
                soma_surrogate_default(&p.surr, SOMA_SURR_MULTIGAUSS);
                p.reset = (soma_reset)reset;
                p.detach_reset = detach;
                p.threshold = 0.8f;
                const int alif = kind == SOMA_NEURON_ALIF;
                soma_cell_state next = { u, a, s };
                soma_cell_cache cache = { v, th };
                soma_cell_forward(&next, &cache, &prev, I, NULL, NULL, &p, N);
                float du[N], ds[N], dpu[N] = { 0 }, dpa[N] = { 0 }, dps[N] = { 0 }, dI[N] = { 0 };
                frand(du, N, -1, 1); frand(ds, N, -1, 1);
                soma_cell_state dnext = { du, NULL, ds }, dprev = { dpu, dpa, dps };
                soma_cell_backward(&dprev, dI, NULL, NULL, &dnext, &cache, &prev, NULL, NULL,
                                   NULL, &p, N);
                double want_pu[N], want_pa[N], want_ps[N], want_I[N], got[4][N];
                for (int i = 0; i < N; i++) {
                    const double alpha = kind == SOMA_NEURON_IF ? 1 : p.alpha;
                    const double ai = alif ? p.rho * pa[i] + (1 - p.rho) * ps[i] : 0;
                    const double thi = p.threshold + (alif ? p.beta_a * ai : 0);
                    const double vi = alpha * pu[i] + I[i], x = vi - thi;
                    const double si = x > 0, g = ref_surr(&p.surr, x);
                    double dst = ds[i], dv, dth;   /* ds~, then the chain of soma.h */
                    if (!detach && reset == SOMA_RESET_SUBTRACT) dst -= thi * du[i];
                    if (!detach && reset == SOMA_RESET_ZERO) dst -= vi * du[i];
                    dv = du[i] * (reset == SOMA_RESET_ZERO ? 1 - si : 1) + dst * g;
                    dth = -dst * g - (reset == SOMA_RESET_SUBTRACT ? si * du[i] : 0);
                    want_pu[i] = alpha * dv;
                    want_I[i] = dv;
                    want_pa[i] = alif ? p.rho * p.beta_a * dth : 0;
                    want_ps[i] = alif ? (1 - p.rho) * p.beta_a * dth : 0;
                    got[0][i] = dpu[i]; got[1][i] = dI[i]; got[2][i] = dpa[i]; got[3][i] = dps[i];
                }
                char name[128];
                snprintf(name, sizeof name, "%s/%s%s multigauss by hand: dprev u",
                         soma_neuron_name(p.kind), soma_reset_name(p.reset), detach ? "+detach" : "");
                check_close_d(name, got[0], want_pu, N, 1e-5, 1e-6);
                check_close_d(name, got[1], want_I, N, 1e-5, 1e-6);
                check_close_d(name, got[2], want_pa, N, 1e-5, 1e-6);
                check_close_d(name, got[3], want_ps, N, 1e-5, 1e-6);
            }
}

/* ------------------------------------------------------------------------ */
/* forward semantics                                                        */
/* ------------------------------------------------------------------------ */

/* Runs `steps` steps of one cell (n = 1) with constant input; records u, s
 * and th (ALIF). */
static void run1(const soma_cell_params *p, float I, float u0, int steps, float *u, float *s,
                 float *th)
{
    float cu = u0, ca = 0, cs = 0;
    for (int t = 0; t < steps; t++) {
        float nu, na = -1, ns = -1, v, nth = -1;
        soma_cell_state next = { &nu, &na, &ns }, prev = { &cu, &ca, &cs };
        soma_cell_cache cache = { &v, &nth };
        soma_cell_forward(&next, &cache, &prev, &I, NULL, NULL, p, 1);
        u[t] = nu; s[t] = ns;
        if (th) th[t] = nth;
        cu = nu; ca = na; cs = ns;
    }
}

static void test_cell_semantics(void)
{
    soma_cell_params p;
    float u[16], s[16], th[16];

    /* IF, input 0.3, threshold 1, subtract: v = 0.3, 0.6, 0.9, 1.2 -> spike
     * (u 0.2), 0.5, 0.8, 1.1 -> spike (u 0.1), 0.4, 0.7 */
    soma_cell_params_default(&p, SOMA_NEURON_IF);
    p.alpha = 0.5f;   /* ignored: IF forces 1 */
    CHECK(soma_cell_params_check(&p) == SOMA_OK);
    run1(&p, 0.3f, 0.0f, 9, u, s, NULL);
    const float s_if[9] = { 0, 0, 0, 1, 0, 0, 1, 0, 0 };
    const float u_if[9] = { 0.3f, 0.6f, 0.9f, 0.2f, 0.5f, 0.8f, 0.1f, 0.4f, 0.7f };
    check_close_f("IF 0.3: spikes at steps 4 and 7", s, s_if, 9, 0, 0);
    check_close_f("IF 0.3: membrane after subtract reset", u, u_if, 9, 0, 1e-6);

    /* H(0) = 0: 0.25 is exact in binary, so v reaches exactly 1.0 at step 4
     * without spiking, and spikes at step 5 with u = 0.25 */
    run1(&p, 0.25f, 0.0f, 10, u, s, NULL);
    const float s_q[10] = { 0, 0, 0, 0, 1, 0, 0, 0, 1, 0 };
    check_close_f("IF 0.25: strict threshold, H(0) = 0", s, s_q, 10, 0, 0);
    CHECK(u[3] == 1.0f && u[4] == 0.25f);

    /* zero reset: u = 0 exactly after a spike; none: u = v */
    soma_cell_params_default(&p, SOMA_NEURON_LIF);
    p.reset = SOMA_RESET_ZERO;
    run1(&p, 0.7f, 0.0f, 4, u, s, NULL);   /* v = 0.7, 1.33 -> spike, 0.7 */
    CHECK(s[0] == 0 && s[1] == 1 && s[2] == 0 && u[1] == 0.0f);
    CHECK(fabsf(u[0] - 0.7f) < 1e-7f && fabsf(u[2] - 0.7f) < 1e-7f);
    p.reset = SOMA_RESET_NONE;
    run1(&p, 0.7f, 0.0f, 3, u, s, NULL);
    CHECK(s[1] == 1 && fabsf(u[1] - (0.9f * 0.7f + 0.7f)) < 1e-6f && s[2] == 1);
    p.reset = SOMA_RESET_SUBTRACT;
    run1(&p, 0.7f, 0.0f, 2, u, s, NULL);
    CHECK(s[1] == 1 && fabsf(u[1] - (0.9f * 0.7f + 0.7f - 1.0f)) < 1e-6f);

    /* ALIF: after a spike the threshold rises by beta_a (1 - rho), then
     * relaxes by rho per step */
    soma_cell_params_default(&p, SOMA_NEURON_ALIF);
    p.rho = 0.9f;
    p.beta_a = 1.8f;
    run1(&p, 1.5f, 0.0f, 3, u, s, th);   /* spike at step 1 (v 1.5 > 1) */
    CHECK(s[0] == 1 && th[0] == 1.0f);
    CHECK(fabsf(th[1] - (1.0f + 1.8f * 0.1f)) < 1e-6f);
    /* step 2: u 0.5, v 0.45 + 1.5 = 1.95 > 1.18: spikes again; step 3: a = 0.9 * 0.1 + 0.1 */
    CHECK(s[1] == 1 && fabsf(th[2] - (1.0f + 1.8f * 0.19f)) < 1e-6f);
    /* a non-ALIF cell leaves th_t at the threshold and a_t at 0 */
    soma_cell_params_default(&p, SOMA_NEURON_LIF);
    {
        float pu = 0, pa = 5, ps = 1, I = 0.5f, nu, na = 7, ns, v;
        soma_cell_state next = { &nu, &na, &ns }, prev = { &pu, &pa, &ps };
        soma_cell_cache cache = { &v, NULL };
        soma_cell_forward(&next, &cache, &prev, &I, NULL, NULL, &p, 1);
        CHECK(na == 0.0f && nu == 0.5f && ns == 0.0f && v == 0.5f);
    }

    /* LI integrates and never spikes, even far above threshold */
    soma_cell_params_default(&p, SOMA_NEURON_LI);
    p.alpha = 0.5f;
    run1(&p, 1.0f, 0.0f, 4, u, s, NULL);
    const float u_li[4] = { 1.0f, 1.5f, 1.75f, 1.875f }, zeros[4] = { 0 };
    check_close_f("LI integrates", u, u_li, 4, 0, 0);
    check_close_f("LI never spikes", s, zeros, 4, 0, 0);
    p.input_scale = 1;
    run1(&p, 1.0f, 0.0f, 4, u, s, NULL);
    const float u_lis[4] = { 0.5f, 0.75f, 0.875f, 0.9375f };
    check_close_f("LI with input_scale: (1 - alpha) I", u, u_lis, 4, 0, 0);
    p.input_scale = 0;
    run1(&p, 3.0f, 0.0f, 2, u, s, NULL);
    CHECK(u[1] == 4.5f && s[1] == 0.0f);

    /* inference: no cache, no spike buffer */
    soma_cell_params_default(&p, SOMA_NEURON_ALIF);
    {
        float pu = 0.5f, pa = 0.2f, ps = 1, I = 0.9f, nu, na, nu2, na2, ns2, v2, th2;
        soma_cell_state next = { &nu, &na, NULL }, prev = { &pu, &pa, &ps };
        soma_cell_forward(&next, NULL, &prev, &I, NULL, NULL, &p, 1);
        soma_cell_state next2 = { &nu2, &na2, &ns2 };
        soma_cell_cache cache2 = { &v2, &th2 };
        soma_cell_forward(&next2, &cache2, &prev, &I, NULL, NULL, &p, 1);
        CHECK(nu == nu2 && na == na2);
    }
}

/* detach_reset: the forward is unchanged, the gradient is not */
static void test_cell_detach(void)
{
    enum { N = 64 };
    float *pu = frand_new(N, 0, 1), *I = frand_new(N, 0, 1), *du = frand_new(N, -1, 1);
    float *ds = frand_new(N, -1, 1);
    float u[2][N], s[2][N], v[2][N], dI[2][N];
    soma_cell_params p;
    for (int reset = 0; reset < 2; reset++) {   /* SUBTRACT, ZERO */
        for (int d = 0; d < 2; d++) {
            soma_cell_params_default(&p, SOMA_NEURON_LIF);
            soma_surrogate_default(&p.surr, SOMA_SURR_ARCTAN);
            p.reset = (soma_reset)reset;
            p.detach_reset = d;
            soma_cell_state next = { u[d], NULL, s[d] }, prev = { pu, NULL, NULL };
            soma_cell_cache cache = { v[d], NULL };
            soma_cell_forward(&next, &cache, &prev, I, NULL, NULL, &p, N);
            memset(dI[d], 0, sizeof dI[d]);
            soma_cell_state dnext = { du, NULL, ds };
            soma_cell_backward(NULL, dI[d], NULL, NULL, &dnext, &cache, &prev, I, NULL, NULL,
                               &p, N);
        }
        CHECK(memcmp(u[0], u[1], sizeof u[0]) == 0 && memcmp(s[0], s[1], sizeof s[0]) == 0 &&
              memcmp(v[0], v[1], sizeof v[0]) == 0);
        int spikes = 0;
        double diff = 0;
        for (int i = 0; i < N; i++) { spikes += s[0][i] != 0; diff += fabs(dI[0][i] - dI[1][i]); }
        CHECK(spikes > 0 && spikes < N);
        CHECK(diff > 1e-2);
    }
    free(pu); free(I); free(du); free(ds);
}

/* NULL incoming gradients are zeros; NULL outputs are skipped */
static void test_cell_nulls(void)
{
    enum { N = 300 };   /* more than one block, with a tail */
    soma_cell_params p;
    soma_cell_params_default(&p, SOMA_NEURON_ALIF);
    soma_surrogate_default(&p.surr, SOMA_SURR_MULTIGAUSS);
    float *pu = frand_new(N, 0, 1), *pa = frand_new(N, 0, 1), *ps = frand_new(N, 0, 1);
    float *I = frand_new(N, 0, 2), *du = frand_new(N, -1, 1), *z = fzeros(N);
    float *u = fnew(N), *a = fnew(N), *s = fnew(N), *v = fnew(N), *th = fnew(N);
    for (int i = 0; i < N; i++) ps[i] = ps[i] > 0.5f;
    soma_cell_state next = { u, a, s }, prev = { pu, pa, ps };
    soma_cell_cache cache = { v, th };
    soma_cell_forward(&next, &cache, &prev, I, NULL, NULL, &p, N);
    float *g1[6], *g2[6];
    for (int k = 0; k < 6; k++) { g1[k] = fzeros(N); g2[k] = fzeros(N); }
    soma_cell_state dn1 = { du, NULL, NULL }, dn2 = { du, z, z };
    soma_cell_state dp1 = { g1[0], g1[1], g1[2] }, dp2 = { g2[0], g2[1], g2[2] };
    soma_cell_backward(&dp1, g1[3], g1[4], g1[5], &dn1, &cache, &prev, I, NULL, NULL, &p, N);
    soma_cell_backward(&dp2, g2[3], g2[4], g2[5], &dn2, &cache, &prev, I, NULL, NULL, &p, N);
    int same = 1;
    for (int k = 0; k < 6; k++) same &= memcmp(g1[k], g2[k], N * sizeof(float)) == 0;
    CHECK(same);
    /* each output alone equals its value when all are asked for */
    for (int k = 0; k < 6; k++) {
        float *o = fzeros(N);
        soma_cell_state dp = { k == 0 ? o : NULL, k == 1 ? o : NULL, k == 2 ? o : NULL };
        soma_cell_backward(&dp, k == 3 ? o : NULL, k == 4 ? o : NULL, k == 5 ? o : NULL, &dn1,
                           &cache, k == 4 || k == 5 ? &prev : NULL, k == 4 ? I : NULL, NULL,
                           NULL, &p, N);
        CHECK(memcmp(o, g1[k], N * sizeof(float)) == 0);
        free(o);
    }
    soma_cell_backward(NULL, NULL, NULL, NULL, &dn1, &cache, NULL, NULL, NULL, NULL, &p, N);
    for (int k = 0; k < 6; k++) { free(g1[k]); free(g2[k]); }
    free(pu); free(pa); free(ps); free(I); free(du); free(z);
    free(u); free(a); free(s); free(v); free(th);
}

/* notes/fptt.md 2.1: tau_m, tau_adp per element, hard reset, b0 0.1, beta 1.8:
 *   eta_t = tau_adp eta_{t-1} + (1 - tau_adp) s_{t-1};  theta_t = 0.1 + 1.8 eta_t
 *   u'_t = u_{t-1} + tau_m (I_t - u_{t-1});  s_t = [u'_t > theta_t];  u_t = (1 - s_t) u'_t
 * Element 0 by hand (u0 0.5, eta0 0.1, s0 0):
 *   t1: eta 0.09,  theta 0.262,  u' 0.65  -> s 1, u 0
 *   t2: eta 0.272, theta 0.5896, u' 0.05  -> s 0, u 0.05
 *   t3: eta 0.136, theta 0.3448, u' 0.525 -> s 1, u 0
 * Element 1 (u0 0, eta0 0.1, s0 1):
 *   t1: eta 0.5*0.1 + 0.5 = 0.55, theta 1.09, u' 0.9*0.5 = 0.45 (tau_m 0.9, I 0.5) -> s 0, u 0.45
 *   t2: eta 0.5*0.55 = 0.275, theta 0.595, u' 0.45 + 0.9 (1.2 - 0.45) = 1.125 -> s 1, u 0
 *   t3: eta 0.5*0.275 + 0.5 = 0.6375, theta 1.2475, u' 0.1*0 + 0.9*0.2 = 0.18 -> s 0, u 0.18 */
static void test_cell_ltc(void)
{
    enum { N = 2 };
    const float tau_m[3][N] = { { 0.5f, 0.9f }, { 0.25f, 0.9f }, { 0.5f, 0.9f } };
    const float tau_adp[3][N] = { { 0.9f, 0.5f }, { 0.8f, 0.5f }, { 0.5f, 0.5f } };
    const float I[3][N] = { { 0.8f, 0.5f }, { 0.2f, 1.2f }, { 1.0f, 0.2f } };
    const float want_s[3][N] = { { 1, 0 }, { 0, 1 }, { 1, 0 } };
    const float want_u[3][N] = { { 0, 0.45f }, { 0.05f, 0 }, { 0, 0.18f } };
    const float want_eta[3][N] = { { 0.09f, 0.55f }, { 0.272f, 0.275f }, { 0.136f, 0.6375f } };
    const float want_th[3][N] = { { 0.262f, 1.09f }, { 0.5896f, 0.595f }, { 0.3448f, 1.2475f } };
    soma_cell_params p;
    soma_cell_params_default(&p, SOMA_NEURON_ALIF);
    p.reset = SOMA_RESET_ZERO;
    p.input_scale = 1;
    p.threshold = 0.1f;
    p.beta_a = 1.8f;
    soma_surrogate_default(&p.surr, SOMA_SURR_MULTIGAUSS);
    CHECK(soma_cell_params_check(&p) == SOMA_OK);
    float u[N] = { 0.5f, 0.0f }, a[N] = { 0.1f, 0.1f }, s[N] = { 0, 1 };
    for (int t = 0; t < 3; t++) {
        float alpha_v[N], nu[N], na[N], ns[N], v[N], th[N];
        for (int i = 0; i < N; i++) alpha_v[i] = 1.0f - tau_m[t][i];
        soma_cell_state next = { nu, na, ns }, prev = { u, a, s };
        soma_cell_cache cache = { v, th };
        soma_cell_forward(&next, &cache, &prev, I[t], alpha_v, tau_adp[t], &p, N);
        char name[64];
        snprintf(name, sizeof name, "LTC step %d: spikes", t + 1);
        check_close_f(name, ns, want_s[t], N, 0, 0);
        snprintf(name, sizeof name, "LTC step %d: membrane", t + 1);
        check_close_f(name, nu, want_u[t], N, 0, 1e-6);
        snprintf(name, sizeof name, "LTC step %d: eta", t + 1);
        check_close_f(name, na, want_eta[t], N, 0, 1e-6);
        snprintf(name, sizeof name, "LTC step %d: theta", t + 1);
        check_close_f(name, th, want_th[t], N, 0, 1e-6);
        memcpy(u, nu, sizeof u); memcpy(a, na, sizeof a); memcpy(s, ns, sizeof s);
    }
}

/* ------------------------------------------------------------------------ */
/* names, defaults, validation                                              */
/* ------------------------------------------------------------------------ */

static void test_cell_params(void)
{
    const char *kinds[] = { "lif", "if", "alif", "li" }, *resets[] = { "subtract", "zero", "none" };
    for (int k = 0; k < SOMA_NEURON_COUNT; k++) {
        soma_neuron_kind nk;
        CHECK(strcmp(soma_neuron_name((soma_neuron_kind)k), kinds[k]) == 0);
        CHECK(soma_neuron_from_name(&nk, kinds[k]) == SOMA_OK && (int)nk == k);
        soma_cell_params p;
        soma_cell_params_default(&p, (soma_neuron_kind)k);
        CHECK(soma_cell_params_check(&p) == SOMA_OK);
        CHECK(p.kind == (soma_neuron_kind)k && p.threshold == 1.0f &&
              p.reset == SOMA_RESET_SUBTRACT && !p.detach_reset && !p.input_scale &&
              p.rho == 0.95f && p.beta_a == 1.8f && p.surr.kind == SOMA_SURR_FAST_SIGMOID &&
              p.surr.slope == 25.0f);
        CHECK(p.alpha == (k == SOMA_NEURON_IF ? 1.0f : 0.9f));
    }
    for (int r = 0; r < SOMA_RESET_COUNT; r++) {
        soma_reset rr;
        CHECK(strcmp(soma_reset_name((soma_reset)r), resets[r]) == 0);
        CHECK(soma_reset_from_name(&rr, resets[r]) == SOMA_OK && (int)rr == r);
    }
    CHECK(strcmp(soma_neuron_name(SOMA_NEURON_COUNT), "unknown") == 0);
    CHECK(strcmp(soma_reset_name((soma_reset)-1), "unknown") == 0);
    soma_neuron_kind nk;
    soma_reset rr;
    CHECK(soma_neuron_from_name(&nk, "adex") == SOMA_ERR_ARG &&
          err_has("unknown neuron 'adex' (valid: lif, if, alif, li)"));
    CHECK(soma_reset_from_name(&rr, "hard") == SOMA_ERR_ARG &&
          err_has("unknown reset 'hard' (valid: subtract, zero, none)"));
    CHECK(soma_neuron_from_name(&nk, NULL) == SOMA_ERR_ARG);

    float alpha = 0;
    CHECK(soma_alpha_from_tau(&alpha, 20.0f, 1.0f) == SOMA_OK &&
          fabsf(alpha - (float)exp(-0.05)) < 1e-7f);
    CHECK(soma_alpha_from_tau(&alpha, 0.0f, 1.0f) == SOMA_ERR_ARG && err_has("tau must be > 0, got 0"));
    CHECK(soma_alpha_from_tau(&alpha, -3.0f, 1.0f) == SOMA_ERR_ARG && err_has("got -3"));
    CHECK(soma_alpha_from_tau(&alpha, NAN, 1.0f) == SOMA_ERR_ARG && err_has("tau must be > 0"));
    CHECK(soma_alpha_from_tau(&alpha, 5.0f, 0.0f) == SOMA_ERR_ARG && err_has("dt must be > 0, got 0"));

    soma_cell_params p;
    soma_cell_params_default(&p, SOMA_NEURON_LIF);
    p.alpha = 1.5f;
    CHECK(soma_cell_params_check(&p) == SOMA_ERR_ARG && err_has("alpha must be in [0, 1], got 1.5"));
    p.alpha = -0.1f;
    CHECK(soma_cell_params_check(&p) == SOMA_ERR_ARG && err_has("alpha must be in [0, 1], got -0.1"));
    p.alpha = NAN;
    CHECK(soma_cell_params_check(&p) == SOMA_ERR_ARG && err_has("alpha must be in [0, 1]"));
    soma_cell_params_default(&p, SOMA_NEURON_IF);
    p.alpha = 7;   /* IF ignores alpha */
    CHECK(soma_cell_params_check(&p) == SOMA_OK);
    p.input_scale = 1;
    CHECK(soma_cell_params_check(&p) == SOMA_ERR_ARG && err_has("input_scale needs a leak"));
    soma_cell_params_default(&p, SOMA_NEURON_LIF);
    p.threshold = 0;
    CHECK(soma_cell_params_check(&p) == SOMA_ERR_ARG && err_has("threshold must be > 0 and finite, got 0"));
    p.threshold = -1;
    CHECK(soma_cell_params_check(&p) == SOMA_ERR_ARG && err_has("got -1"));
    p.threshold = INFINITY;
    CHECK(soma_cell_params_check(&p) == SOMA_ERR_ARG && err_has("threshold"));
    soma_cell_params_default(&p, SOMA_NEURON_LIF);
    p.reset = (soma_reset)9;
    CHECK(soma_cell_params_check(&p) == SOMA_ERR_ARG &&
          err_has("unknown reset 9 (valid: subtract, zero, none)"));
    soma_cell_params_default(&p, (soma_neuron_kind)4);
    CHECK(soma_cell_params_check(&p) == SOMA_ERR_ARG &&
          err_has("unknown neuron kind 4 (valid: lif, if, alif, li)"));
    soma_cell_params_default(&p, SOMA_NEURON_ALIF);
    p.rho = 1.01f;
    CHECK(soma_cell_params_check(&p) == SOMA_ERR_ARG && err_has("rho must be in [0, 1], got 1.01"));
    soma_cell_params_default(&p, SOMA_NEURON_ALIF);
    p.beta_a = -0.5f;
    CHECK(soma_cell_params_check(&p) == SOMA_ERR_ARG && err_has("beta_a must be >= 0 and finite, got -0.5"));
    soma_cell_params_default(&p, SOMA_NEURON_LIF);
    p.rho = 3;   /* only ALIF uses rho, beta_a */
    p.beta_a = -1;
    CHECK(soma_cell_params_check(&p) == SOMA_OK);
    p.surr.slope = 0;
    CHECK(soma_cell_params_check(&p) == SOMA_ERR_ARG && err_has("fast-sigmoid surrogate slope"));
    soma_cell_params_default(&p, SOMA_NEURON_LI);   /* LI: no threshold, reset or surrogate */
    p.threshold = 0; p.reset = (soma_reset)9; p.surr.slope = 0;
    CHECK(soma_cell_params_check(&p) == SOMA_OK);
    p.alpha = 2;
    CHECK(soma_cell_params_check(&p) == SOMA_ERR_ARG && err_has("alpha"));
    CHECK(soma_cell_params_check(NULL) == SOMA_ERR_ARG);
}

/* ------------------------------------------------------------------------ */
/* thread-count independence                                                */
/* ------------------------------------------------------------------------ */

#ifdef _OPENMP
static float *fcopy(const float *a, size_t n)
{
    float *c = fnew(n);
    memcpy(c, a, n * sizeof *c);
    return c;
}
#endif

static void test_cell_threads(void)
{
#ifdef _OPENMP
    const size_t n = (1u << 17) + 37;   /* parallel, with uneven shares and block tails */
    float *pu = frand_new(n, 0, 1), *pa = frand_new(n, 0, 0.5f), *ps = frand_new(n, 0, 1);
    float *I = frand_new(n, 0, 1.5f), *al = frand_new(n, 0.3f, 0.95f), *rh = frand_new(n, 0.5f, 0.95f);
    float *du = frand_new(n, -1, 1), *da = frand_new(n, -1, 1), *ds = frand_new(n, -1, 1);
    float *g0 = frand_new(n, -1, 1);
    for (size_t i = 0; i < n; i++) ps[i] = ps[i] > 0.7f;
    const int saved = omp_get_max_threads();
    for (int cfg = 0; cfg < 2; cfg++) {
        soma_cell_params p;
        soma_cell_params_default(&p, cfg ? SOMA_NEURON_LIF : SOMA_NEURON_ALIF);
        soma_surrogate_default(&p.surr, cfg ? SOMA_SURR_TRIANGLE : SOMA_SURR_MULTIGAUSS);
        p.reset = cfg ? SOMA_RESET_ZERO : SOMA_RESET_SUBTRACT;
        p.input_scale = cfg;
        p.threshold = 0.6f;
        float *out[3][11];
        const int threads[3] = { 1, 2, 3 };
        for (int r = 0; r < 3; r++) {
            float **o = out[r];
            for (int k = 0; k < 11; k++) o[k] = fcopy(g0, n);   /* gradients accumulate onto g0 */
            omp_set_num_threads(threads[r]);
            soma_cell_state next = { o[0], o[1], o[2] }, prev = { pu, pa, ps };
            soma_cell_cache cache = { o[3], o[4] };
            soma_cell_forward(&next, &cache, &prev, I, cfg ? NULL : al, cfg ? NULL : rh, &p, n);
            soma_cell_state dnext = { du, da, ds }, dprev = { o[5], o[6], o[7] };
            soma_cell_backward(&dprev, o[8], o[9], o[10], &dnext, &cache, &prev, I,
                               cfg ? NULL : al, cfg ? NULL : rh, &p, n);
        }
        int same = 1;
        for (int r = 1; r < 3; r++)
            for (int k = 0; k < 11; k++) same &= memcmp(out[0][k], out[r][k], n * sizeof(float)) == 0;
        if (!same) fprintf(stderr, "  config %d differs across thread counts\n", cfg);
        CHECK(same);
        /* and equals the same elements run as small (serial) pieces */
        {
            const size_t lo = 70001, m = 777;
            float u[777], a[777], s[777], v[777], th[777];
            soma_cell_state next = { u, a, s }, prev = { pu + lo, pa + lo, ps + lo };
            soma_cell_cache cache = { v, th };
            soma_cell_forward(&next, &cache, &prev, I + lo, cfg ? NULL : al + lo,
                              cfg ? NULL : rh + lo, &p, m);
            CHECK(memcmp(u, out[1][0] + lo, sizeof u) == 0 && memcmp(s, out[1][2] + lo, sizeof s) == 0);
        }
        int spikes = 0;
        for (size_t i = 0; i < n; i++) spikes += out[0][2][i] != 0;
        CHECK(spikes > (int)(n / 20) && spikes < (int)n);
        for (int r = 0; r < 3; r++)
            for (int k = 0; k < 11; k++) free(out[r][k]);
    }
    omp_set_num_threads(saved);
    free(pu); free(pa); free(ps); free(I); free(al); free(rh); free(du); free(da); free(ds);
    free(g0);
#endif
}

int main(void)
{
    soma_rng_seed(&rng, 20240611);
    test_surrogate_multigauss_reference();
    test_surrogate_formulas();
    test_surrogate_block();
    test_surrogate_integrals();
    test_surrogate_names_and_checks();
    test_cell_params();
    test_cell_semantics();
    test_cell_ltc();
    test_cell_detach();
    test_cell_nulls();
    test_cell_surrogate_paths();
    test_cell_fd_smooth();
    test_cell_fd_step();
    test_cell_threads();
    return check_report("test_neuron");
}
