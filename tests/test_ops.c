/*
 * test_ops.c - the stateless kernels of src/ops against double-precision
 * references.
 *
 * Method, for every op with a backward pass: inputs are drawn as floats and
 * copied exactly into doubles; a plain-loop double forward (written here,
 * independently of the library) defines L = sum(forward(x) * r) for a random
 * float r.  Then (a) the float forward must match the double forward, and
 * (b) the float backward with dy = r must match the central finite
 * difference of L in double (eps 1e-6) for every input and parameter.
 * Gradient buffers start from random values, so the checks also prove that
 * backward ACCUMULATES.
 *
 * Also: conv2d against its naive reference and across thread counts,
 * soma_gemm against soma_gemm_naive, max-pool ties, activation kinks, loss
 * stability at extreme logits, dropout masks, initialiser statistics and
 * the shape validators.
 */
#include "check.h"
#include <float.h>
#include <stdlib.h>
#include <stdint.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define FD_EPS 1e-6

static soma_rng rng;

/* ------------------------------------------------------------------------ */
/* helpers                                                                  */
/* ------------------------------------------------------------------------ */

static void *xmalloc(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    if (!p) { fprintf(stderr, "test_ops: out of memory\n"); exit(2); }
    return p;
}
static float *fnew(size_t n) { return xmalloc(n * sizeof(float)); }
static double *dnew(size_t n) { return xmalloc(n * sizeof(double)); }

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
/* exact double copy of a float array */
static double *to_d(const float *a, size_t n)
{
    double *d = dnew(n);
    for (size_t i = 0; i < n; i++) d[i] = a[i];
    return d;
}
static float *fcopy(const float *a, size_t n)
{
    float *c = fnew(n);
    memcpy(c, a, n * sizeof(float));
    return c;
}
static double dot_d(const double *a, const double *b, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}
static double maxabs_d(const double *a, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) if (fabs(a[i]) > m) m = fabs(a[i]);
    return m;
}

/* Float forward vs double reference. */
static int check_fwd(const char *name, const float *got, const double *want, size_t n)
{
    double *g = to_d(got, n);
    int ok = check_close_d(name, g, want, n, 1e-5, 1e-6 * (1.0 + maxabs_d(want, n)));
    free(g);
    return ok;
}

/* Float gradient (after - before, so accumulation is checked) vs the finite
 * difference of the double reference.  Float sums carry ~1e-7 relative
 * error per term, hence 1e-4 relative plus a small floor scaled by the
 * largest gradient entry. */
static int check_grad(const char *name, const float *after, const float *before,
                      const double *want, size_t n)
{
    double *g = dnew(n);
    for (size_t i = 0; i < n; i++) g[i] = (double)after[i] - (before ? before[i] : 0.0);
    int ok = check_close_d(name, g, want, n, 1e-4, 1e-5 * maxabs_d(want, n) + 1e-7);
    free(g);
    return ok;
}

/* Central differences of f(ctx) with respect to each of p[0..n). */
typedef double (*loss_fn)(void *ctx);
static void fd_grad(double *g, double *p, size_t n, loss_fn f, void *ctx)
{
    for (size_t i = 0; i < n; i++) {
        double s = p[i];
        p[i] = s + FD_EPS;
        double lp = f(ctx);
        p[i] = s - FD_EPS;
        double lm = f(ctx);
        p[i] = s;
        g[i] = (lp - lm) / (2 * FD_EPS);
    }
}
/* fd_grad into a fresh array */
static double *fd_new(double *p, size_t n, loss_fn f, void *ctx)
{
    double *g = dnew(n);
    fd_grad(g, p, n, f, ctx);
    return g;
}

/* For inputs too big for a full finite difference: one central difference
 * along a random direction v must equal <grad, v>. */
static int check_grad_dir(const char *name, const float *after, const float *before,
                          double *p, size_t n, loss_fn f, void *ctx)
{
    double *p0 = dnew(n), *v = dnew(n), got = 0;
    memcpy(p0, p, n * sizeof(double));
    for (size_t i = 0; i < n; i++) {
        v[i] = 2.0 * soma_rng_uniform(&rng) - 1.0;
        got += ((double)after[i] - (before ? before[i] : 0.0)) * v[i];
    }
    for (size_t i = 0; i < n; i++) p[i] = p0[i] + FD_EPS * v[i];
    double lp = f(ctx);
    for (size_t i = 0; i < n; i++) p[i] = p0[i] - FD_EPS * v[i];
    double lm = f(ctx);
    memcpy(p, p0, n * sizeof(double));
    double want = (lp - lm) / (2 * FD_EPS);
    free(p0); free(v);
    return check_close_d(name, &got, &want, 1, 1e-4, 1e-6);
}

static int max_threads(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/* ------------------------------------------------------------------------ */
/* GEMM seam                                                                */
/* ------------------------------------------------------------------------ */

static void test_gemm_shape(int M, int N, int K)
{
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            /* leading dimensions larger than needed, to catch lda/ldb/ldc mixups */
            int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 2, ldc = N + 4;
            int arows = ta ? K : M, brows = tb ? N : K;
            float *A = frand_new((size_t)arows * lda, -1, 1);
            float *Bm = frand_new((size_t)brows * ldb, -1, 1);
            float *C1 = frand_new((size_t)M * ldc, -1, 1);
            float *C2 = fcopy(C1, (size_t)M * ldc);
            soma_gemm(ta, tb, M, N, K, 0.7f, A, lda, Bm, ldb, 0.3f, C1, ldc);
            soma_gemm_naive(ta, tb, M, N, K, 0.7f, A, lda, Bm, ldb, 0.3f, C2, ldc);
            char name[64];
            snprintf(name, sizeof name, "gemm %dx%dx%d ta=%d tb=%d", M, N, K, ta, tb);
            /* whole buffer: the padding columns of C must be untouched */
            check_close_f(name, C1, C2, (size_t)M * ldc, 1e-5, 1e-6);
            /* beta = 0 must ignore C, even NaN in it */
            for (size_t i = 0; i < (size_t)M * ldc; i++) C1[i] = C2[i] = NAN;
            soma_gemm(ta, tb, M, N, K, 1.0f, A, lda, Bm, ldb, 0.0f, C1, ldc);
            soma_gemm_naive(ta, tb, M, N, K, 1.0f, A, lda, Bm, ldb, 0.0f, C2, ldc);
            int finite = 1;
            for (int i = 0; i < M; i++)
                for (int j = 0; j < N; j++)
                    finite &= isfinite(C1[(size_t)i * ldc + j]) && isfinite(C2[(size_t)i * ldc + j]);
            CHECK(finite);
            /* beta = 1 (gradient accumulation; the outer-product path) */
            for (size_t i = 0; i < (size_t)M * ldc; i++) C1[i] = C2[i] = (float)(i % 7) * 0.1f;
            soma_gemm(ta, tb, M, N, K, 0.5f, A, lda, Bm, ldb, 1.0f, C1, ldc);
            soma_gemm_naive(ta, tb, M, N, K, 0.5f, A, lda, Bm, ldb, 1.0f, C2, ldc);
            check_close_f(name, C1, C2, (size_t)M * ldc, 1e-5, 1e-6);
            free(A); free(Bm); free(C1); free(C2);
        }
}

/* The general shape and every degenerate one soma_gemm routes to Level-2
 * BLAS (M = 1 or N = 1: GEMV; K = 1: outer product). */
static void test_gemm(void)
{
    static const int shapes[][3] = { { 7, 5, 9 }, { 1, 5, 9 }, { 7, 1, 9 }, { 7, 5, 1 },
                                     { 1, 1, 9 }, { 1, 5, 1 }, { 7, 1, 1 } };
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++)
        test_gemm_shape(shapes[i][0], shapes[i][1], shapes[i][2]);
}

/* ------------------------------------------------------------------------ */
/* dense                                                                    */
/* ------------------------------------------------------------------------ */

typedef struct dense_ctx {
    int B, I, O;
    double *x, *w, *b, *r, *y;
} dense_ctx;

static void ref_dense(dense_ctx *c)
{
    for (int i = 0; i < c->B; i++)
        for (int o = 0; o < c->O; o++) {
            double acc = c->b[o];
            for (int k = 0; k < c->I; k++) acc += c->x[i * c->I + k] * c->w[o * c->I + k];
            c->y[i * c->O + o] = acc;
        }
}
static double loss_dense(void *p)
{
    dense_ctx *c = p;
    ref_dense(c);
    return dot_d(c->y, c->r, (size_t)c->B * c->O);
}

static void test_dense(void)
{
    const int B = 4, I = 7, O = 5;
    size_t nx = (size_t)B * I, nw = (size_t)O * I, ny = (size_t)B * O;
    float *x = frand_new(nx, -1, 1), *w = frand_new(nw, -1, 1), *b = frand_new(O, -1, 1);
    float *r = frand_new(ny, -1, 1), *y = fnew(ny);
    dense_ctx c = { B, I, O, to_d(x, nx), to_d(w, nw), to_d(b, O), to_d(r, ny), dnew(ny) };

    soma_dense_forward(y, x, w, b, B, I, O);
    ref_dense(&c);
    check_fwd("dense forward", y, c.y, ny);

    float *dx0 = frand_new(nx, -1, 1), *dw0 = frand_new(nw, -1, 1), *db0 = frand_new(O, -1, 1);
    float *dx = fcopy(dx0, nx), *dw = fcopy(dw0, nw), *db = fcopy(db0, O);
    soma_dense_backward(dx, dw, db, r, x, w, B, I, O);
    double *gx = fd_new(c.x, nx, loss_dense, &c), *gw = fd_new(c.w, nw, loss_dense, &c);
    double *gb = fd_new(c.b, O, loss_dense, &c);
    check_grad("dense dx", dx, dx0, gx, nx);
    check_grad("dense dw", dw, dw0, gw, nw);
    check_grad("dense db", db, db0, gb, O);

    /* NULL gradients skip work; dw alone must equal dw of the full call */
    float *dw2 = fcopy(dw0, nw);
    soma_dense_backward(NULL, NULL, NULL, r, x, w, B, I, O);
    soma_dense_backward(NULL, dw2, NULL, r, x, w, B, I, O);
    CHECK(memcmp(dw2, dw, nw * sizeof(float)) == 0);

    /* no bias */
    soma_dense_forward(y, x, w, NULL, B, I, O);
    for (int o = 0; o < O; o++) c.b[o] = 0;
    ref_dense(&c);
    check_fwd("dense forward, no bias", y, c.y, ny);

    free(x); free(w); free(b); free(r); free(y); free(dx0); free(dw0); free(db0);
    free(dx); free(dw); free(db); free(dw2); free(gx); free(gw); free(gb);
    free(c.x); free(c.w); free(c.b); free(c.r); free(c.y);
}

/* ------------------------------------------------------------------------ */
/* conv2d                                                                   */
/* ------------------------------------------------------------------------ */

typedef struct conv_ctx {
    soma_conv_shape s;
    double *x, *w, *b, *r, *y;
} conv_ctx;

static void ref_conv(conv_ctx *c)
{
    const soma_conv_shape *s = &c->s;
    for (int n = 0; n < s->B; n++)
        for (int o = 0; o < s->O; o++)
            for (int oh = 0; oh < s->OH; oh++)
                for (int ow = 0; ow < s->OW; ow++) {
                    double acc = c->b[o];
                    for (int ch = 0; ch < s->C; ch++)
                        for (int i = 0; i < s->KH; i++)
                            for (int j = 0; j < s->KW; j++) {
                                int h = oh * s->stride - s->pad + i;
                                int v = ow * s->stride - s->pad + j;
                                if (h < 0 || h >= s->H || v < 0 || v >= s->W) continue;
                                acc += c->w[((o * s->C + ch) * s->KH + i) * s->KW + j] *
                                       c->x[((n * s->C + ch) * s->H + h) * s->W + v];
                            }
                    c->y[((n * s->O + o) * s->OH + oh) * s->OW + ow] = acc;
                }
}
static double loss_conv(void *p)
{
    conv_ctx *c = p;
    ref_conv(c);
    const soma_conv_shape *s = &c->s;
    return dot_d(c->y, c->r, (size_t)s->B * s->O * s->OH * s->OW);
}

static void test_conv_grad(int B, int C, int H, int W, int O, int KH, int KW, int stride,
                           int pad)
{
    conv_ctx c;
    char name[128];
    if (!CHECK(soma_conv_shape_init(&c.s, B, C, H, W, O, KH, KW, stride, pad) == SOMA_OK))
        return;
    const soma_conv_shape *s = &c.s;
    size_t nx = (size_t)B * C * H * W, nw = (size_t)O * C * KH * KW;
    size_t ny = (size_t)B * O * s->OH * s->OW;
    float *x = frand_new(nx, -1, 1), *w = frand_new(nw, -1, 1), *b = frand_new(O, -1, 1);
    float *r = frand_new(ny, -1, 1), *y = fnew(ny), *yn = fnew(ny);
    float *ws = fnew(soma_conv2d_workspace(s, max_threads()));
    c.x = to_d(x, nx); c.w = to_d(w, nw); c.b = to_d(b, O); c.r = to_d(r, ny);
    c.y = dnew(ny);

    snprintf(name, sizeof name, "conv2d B%d C%d %dx%d O%d k%dx%d s%d p%d", B, C, H, W, O,
             KH, KW, stride, pad);
    soma_conv2d_forward(y, ws, x, w, b, s);
    ref_conv(&c);
    check_fwd(name, y, c.y, ny);
    soma_conv2d_forward_naive(yn, x, w, b, s);
    check_fwd("conv2d naive forward", yn, c.y, ny);

    float *dx0 = frand_new(nx, -1, 1), *dw0 = frand_new(nw, -1, 1), *db0 = frand_new(O, -1, 1);
    float *dx = fcopy(dx0, nx), *dw = fcopy(dw0, nw), *db = fcopy(db0, O);
    soma_conv2d_backward(dx, dw, db, ws, r, x, w, s);
    double *gx = fd_new(c.x, nx, loss_conv, &c), *gw = fd_new(c.w, nw, loss_conv, &c);
    double *gb = fd_new(c.b, O, loss_conv, &c);
    snprintf(name, sizeof name, "conv2d dx B%d C%d %dx%d k%dx%d s%d p%d", B, C, H, W, KH,
             KW, stride, pad);
    check_grad(name, dx, dx0, gx, nx);
    snprintf(name, sizeof name, "conv2d dw B%d C%d %dx%d k%dx%d s%d p%d", B, C, H, W, KH,
             KW, stride, pad);
    check_grad(name, dw, dw0, gw, nw);
    check_grad("conv2d db", db, db0, gb, O);

    /* deterministic: the same call again gives the same bits; NULL skips */
    float *dx2 = fcopy(dx0, nx), *dw2 = fcopy(dw0, nw), *db2 = fcopy(db0, O);
    soma_conv2d_backward(NULL, NULL, NULL, ws, r, x, w, s);
    soma_conv2d_backward(dx2, NULL, NULL, ws, r, x, w, s);
    soma_conv2d_backward(NULL, dw2, db2, ws, r, x, w, s);
    CHECK(memcmp(dx2, dx, nx * sizeof(float)) == 0);
    CHECK(memcmp(dw2, dw, nw * sizeof(float)) == 0);
    CHECK(memcmp(db2, db, O * sizeof(float)) == 0);

    free(x); free(w); free(b); free(r); free(y); free(yn); free(ws);
    free(dx0); free(dw0); free(db0); free(dx); free(dw); free(db);
    free(dx2); free(dw2); free(db2); free(gx); free(gw); free(gb);
    free(c.x); free(c.w); free(c.b); free(c.r); free(c.y);
}

/* Larger shapes: fast forward vs naive; fwd+bwd at 1 thread vs 3 threads. */
static void test_conv_naive_threads(int B, int C, int H, int W, int O, int K, int stride,
                                    int pad)
{
    soma_conv_shape s;
    if (!CHECK(soma_conv_shape_init(&s, B, C, H, W, O, K, K, stride, pad) == SOMA_OK)) return;
    size_t nx = (size_t)B * C * H * W, nw = (size_t)O * C * K * K;
    size_t ny = (size_t)B * O * s.OH * s.OW;
    float *x = frand_new(nx, -1, 1), *w = frand_new(nw, -1, 1), *b = frand_new(O, -1, 1);
    float *dy = frand_new(ny, -1, 1), *y1 = fnew(ny), *y3 = fnew(ny), *yn = fnew(ny);
    float *dx1 = calloc(nx, sizeof(float)), *dx3 = calloc(nx, sizeof(float));
    float *dw1 = calloc(nw, sizeof(float)), *dw3 = calloc(nw, sizeof(float));
    float *db1 = calloc(O, sizeof(float)), *db3 = calloc(O, sizeof(float));
    /* soma_conv2d_workspace(s, 0): sized for omp_get_max_threads() now */
    float *ws = fnew(soma_conv2d_workspace(&s, 3 > max_threads() ? 3 : max_threads()));
    char name[128];
    snprintf(name, sizeof name, "conv2d vs naive B%d C%d %dx%d O%d k%d s%d p%d", B, C, H,
             W, O, K, stride, pad);

    int saved = max_threads();
#ifdef _OPENMP
    omp_set_num_threads(1);
#endif
    CHECK(soma_conv2d_workspace(&s, 0) == soma_conv2d_workspace(&s, 1));
    soma_conv2d_forward(y1, ws, x, w, b, &s);
    soma_conv2d_backward(dx1, dw1, db1, ws, dy, x, w, &s);
#ifdef _OPENMP
    omp_set_num_threads(3);
    CHECK(soma_conv2d_workspace(&s, 0) == soma_conv2d_workspace(&s, 3));
#endif
    soma_conv2d_forward(y3, ws, x, w, b, &s);
    soma_conv2d_backward(dx3, dw3, db3, ws, dy, x, w, &s);
#ifdef _OPENMP
    omp_set_num_threads(saved);
#endif
    (void)saved;
    soma_conv2d_forward_naive(yn, x, w, b, &s);
    check_close_f(name, y1, yn, ny, 1e-4, 1e-5);
    /* each sample is computed the same way whichever thread runs it, and
     * dw/db are summed in batch order, so the bits agree */
    CHECK(memcmp(y1, y3, ny * sizeof(float)) == 0);
    CHECK(memcmp(dx1, dx3, nx * sizeof(float)) == 0);
    CHECK(memcmp(dw1, dw3, nw * sizeof(float)) == 0);
    CHECK(memcmp(db1, db3, O * sizeof(float)) == 0);

    free(x); free(w); free(b); free(dy); free(y1); free(y3); free(yn);
    free(dx1); free(dx3); free(dw1); free(dw3); free(db1); free(db3); free(ws);
}

/* im2col / col2im on every edge case of the padding and stride: the forward
 * against the naive loops, and the dx path as the forward's adjoint,
 * <conv(x'), r> = <x', dx(r)> in double, over small shapes where the taps
 * fall off either side (pad up to the kernel size, inputs narrower than the
 * kernel, strides 1-3). */
static void test_conv_edges(void)
{
    int bad_f = 0, bad_a = 0, shapes = 0;
    for (int k = 1; k <= 4; k++)
        for (int st = 1; st <= 3; st++)
            for (int pd = 0; pd <= k; pd++)
                for (int w = 1; w <= 6; w++) {
                    soma_conv_shape s;
                    if (soma_conv_shape_init(&s, 2, 2, w + 1, w, 3, k, k, st, pd) != SOMA_OK) continue;
                    shapes++;
                    size_t nx = (size_t)2 * 2 * (w + 1) * w, ny = (size_t)2 * 3 * s.OH * s.OW, nw = (size_t)3 * 2 * k * k;
                    float *x = frand_new(nx, -1, 1), *wt = frand_new(nw, -1, 1), *r = frand_new(ny, -1, 1);
                    float *y = fnew(ny), *yn = fnew(ny), *dx = fnew(nx);
                    float *ws = fnew(soma_conv2d_workspace(&s, max_threads()));
                    soma_conv2d_forward(y, ws, x, wt, NULL, &s);
                    soma_conv2d_forward_naive(yn, x, wt, NULL, &s);
                    for (size_t i = 0; i < ny; i++) bad_f += fabsf(y[i] - yn[i]) > 1e-5f * (1 + fabsf(yn[i]));
                    memset(dx, 0, nx * sizeof(float));
                    soma_conv2d_backward(dx, NULL, NULL, ws, r, x, wt, &s);
                    double lhs = 0, rhs = 0;
                    for (size_t i = 0; i < ny; i++) lhs += (double)yn[i] * r[i];
                    for (size_t i = 0; i < nx; i++) rhs += (double)x[i] * dx[i];
                    bad_a += fabs(lhs - rhs) > 1e-5 * (1 + fabs(lhs));
                    free(x); free(wt); free(r); free(y); free(yn); free(dx); free(ws);
                }
    if (bad_f || bad_a) fprintf(stderr, "conv edges: %d forward values, %d adjoint checks off\n", bad_f, bad_a);
    CHECK(shapes > 200 && bad_f == 0 && bad_a == 0);
}

static void test_conv(void)
{
    test_conv_edges();
    test_conv_grad(2, 3, 5, 5, 4, 3, 3, 1, 0);   /* stride 1, no pad */
    test_conv_grad(2, 2, 7, 6, 3, 3, 3, 2, 1);   /* stride 2, pad 1, non-square input */
    test_conv_grad(3, 2, 6, 9, 2, 2, 3, 1, 1);   /* non-square kernel */
    test_conv_grad(2, 3, 4, 5, 2, 1, 1, 1, 0);   /* 1x1: the no-im2col path */
    test_conv_grad(1, 2, 5, 4, 3, 3, 3, 3, 2);   /* batch 1, stride 3, pad 2 */
    test_conv_naive_threads(5, 8, 12, 12, 16, 3, 1, 1);
    test_conv_naive_threads(4, 3, 17, 13, 6, 5, 2, 2);
    test_conv_naive_threads(3, 16, 8, 8, 8, 1, 1, 0);
}

/* ------------------------------------------------------------------------ */
/* pooling                                                                  */
/* ------------------------------------------------------------------------ */

typedef struct pool_ctx {
    soma_pool_shape s;
    int max;
    double *x, *r, *y;
    int32_t *idx;   /* reference argmax, first maximum in row-major order */
} pool_ctx;

static void ref_pool(pool_ctx *c)
{
    const soma_pool_shape *s = &c->s;
    for (int pl = 0; pl < s->B * s->C; pl++)
        for (int oh = 0; oh < s->OH; oh++)
            for (int ow = 0; ow < s->OW; ow++) {
                const double *xp = c->x + (size_t)pl * s->H * s->W;
                double m = -INFINITY, sum = 0;
                int best = -1;
                for (int i = 0; i < s->k; i++)
                    for (int j = 0; j < s->k; j++) {
                        int at = (oh * s->stride + i) * s->W + ow * s->stride + j;
                        sum += xp[at];
                        if (best < 0 || xp[at] > m) { m = xp[at]; best = at; }
                    }
                size_t o = ((size_t)pl * s->OH + oh) * s->OW + ow;
                c->y[o] = c->max ? m : sum / (s->k * s->k);
                c->idx[o] = best;
            }
}
static double loss_pool(void *p)
{
    pool_ctx *c = p;
    ref_pool(c);
    return dot_d(c->y, c->r, (size_t)c->s.B * c->s.C * c->s.OH * c->s.OW);
}

static void test_pool_grad(int max, int B, int C, int H, int W, int k, int stride)
{
    pool_ctx c = { .max = max };
    if (!CHECK(soma_pool_shape_init(&c.s, B, C, H, W, k, stride) == SOMA_OK)) return;
    size_t nx = (size_t)B * C * H * W, ny = (size_t)B * C * c.s.OH * c.s.OW;
    float *x = frand_new(nx, -1, 1), *r = frand_new(ny, -1, 1), *y = fnew(ny);
    int32_t *idx = xmalloc(ny * sizeof(int32_t));
    c.x = to_d(x, nx); c.r = to_d(r, ny); c.y = dnew(ny);
    c.idx = xmalloc(ny * sizeof(int32_t));
    char name[96];
    snprintf(name, sizeof name, "%s B%d C%d %dx%d k%d s%d", max ? "maxpool" : "avgpool",
             B, C, H, W, k, stride);

    if (max) soma_maxpool_forward(y, idx, x, &c.s);
    else soma_avgpool_forward(y, x, &c.s);
    ref_pool(&c);
    check_fwd(name, y, c.y, ny);
    if (max) CHECK(memcmp(idx, c.idx, ny * sizeof(int32_t)) == 0);

    float *dx0 = frand_new(nx, -1, 1), *dx = fcopy(dx0, nx);
    if (max) soma_maxpool_backward(dx, r, idx, &c.s);
    else soma_avgpool_backward(dx, r, &c.s);
    double *gx = fd_new(c.x, nx, loss_pool, &c);
    check_grad(name, dx, dx0, gx, nx);

    free(x); free(r); free(y); free(idx); free(dx0); free(dx); free(gx);
    free(c.x); free(c.r); free(c.y); free(c.idx);
}

/* Exact ties: the first maximum in row-major window order must win, and the
 * gradient must land there only. */
static void test_maxpool_ties(void)
{
    /* one 4x4 plane; k2 s2 windows: all-equal, tie on the second row,
     * tie between top-right and bottom-left, and a NaN-free negative tie */
    const float x[16] = {
        1, 1,   0, 2,
        1, 1,   2, 2,
        0, 3,  -1, -5,
        3, 3,  -5, -1,
    };
    soma_pool_shape s;
    CHECK(soma_pool_shape_init(&s, 1, 1, 4, 4, 2, 2) == SOMA_OK);
    float y[4], dy[4] = { 1, 2, 3, 4 }, dx[16] = { 0 };
    int32_t idx[4];
    soma_maxpool_forward(y, idx, x, &s);
    CHECK(y[0] == 1 && idx[0] == 0);          /* first of four equal */
    CHECK(y[1] == 2 && idx[1] == 3);          /* (0,3) before (1,2),(1,3) */
    CHECK(y[2] == 3 && idx[2] == 9);          /* (2,1) before (3,0),(3,1) */
    CHECK(y[3] == -1 && idx[3] == 10);        /* (2,2) before (3,3) */
    soma_maxpool_backward(dx, dy, idx, &s);
    const float want[16] = { 1, 0, 0, 2,  0, 0, 0, 0,  0, 3, 4, 0,  0, 0, 0, 0 };
    check_close_f("maxpool ties dx", dx, want, 16, 0, 0);

    /* overlapping windows (k3 s1) over a constant plane: every window picks
     * its own top-left corner */
    float xc[25], dyc[9], dxc[25] = { 0 }, yc[9];
    int32_t ic[9];
    for (int i = 0; i < 25; i++) xc[i] = 0.5f;
    for (int i = 0; i < 9; i++) dyc[i] = (float)(i + 1);
    CHECK(soma_pool_shape_init(&s, 1, 1, 5, 5, 3, 1) == SOMA_OK);
    soma_maxpool_forward(yc, ic, xc, &s);
    int ok = 1;
    for (int oh = 0; oh < 3; oh++)
        for (int ow = 0; ow < 3; ow++) ok &= ic[oh * 3 + ow] == oh * 5 + ow;
    CHECK(ok);
    soma_maxpool_backward(dxc, dyc, ic, &s);
    float wantc[25] = { 0 };
    for (int oh = 0; oh < 3; oh++)
        for (int ow = 0; ow < 3; ow++) wantc[oh * 5 + ow] = dyc[oh * 3 + ow];
    check_close_f("maxpool overlapping ties dx", dxc, wantc, 25, 0, 0);

    /* NaN propagates */
    float xn[4] = { 1, NAN, 2, 0 }, yn1;
    int32_t in1;
    CHECK(soma_pool_shape_init(&s, 1, 1, 2, 2, 2, 2) == SOMA_OK);
    soma_maxpool_forward(&yn1, &in1, xn, &s);
    CHECK(isnan(yn1) && in1 == 1);
}

static void test_pool(void)
{
    test_pool_grad(1, 2, 2, 6, 6, 2, 2);
    test_pool_grad(1, 1, 3, 7, 5, 3, 2);     /* overlapping, remainder dropped */
    test_pool_grad(1, 2, 1, 5, 6, 2, 1);
    test_pool_grad(0, 2, 2, 6, 6, 2, 2);
    test_pool_grad(0, 1, 3, 7, 5, 3, 2);
    test_maxpool_ties();

    /* a large input takes the parallel path: same as the reference */
    pool_ctx c = { .max = 1 };
    CHECK(soma_pool_shape_init(&c.s, 8, 16, 32, 32, 2, 2) == SOMA_OK);
    size_t nx = (size_t)8 * 16 * 32 * 32, ny = (size_t)8 * 16 * 16 * 16;
    float *x = frand_new(nx, -1, 1), *y = fnew(ny);
    int32_t *idx = xmalloc(ny * sizeof(int32_t));
    c.x = to_d(x, nx); c.y = dnew(ny); c.idx = xmalloc(ny * sizeof(int32_t));
    soma_maxpool_forward(y, idx, x, &c.s);
    ref_pool(&c);
    check_fwd("maxpool large", y, c.y, ny);
    CHECK(memcmp(idx, c.idx, ny * sizeof(int32_t)) == 0);
    soma_avgpool_forward(y, x, &c.s);
    c.max = 0;
    ref_pool(&c);
    check_fwd("avgpool large", y, c.y, ny);
    free(x); free(y); free(idx); free(c.x); free(c.y); free(c.idx);
}

/* ------------------------------------------------------------------------ */
/* activations and softmax                                                  */
/* ------------------------------------------------------------------------ */

static double ref_act1(double x, soma_act a)
{
    switch (a) {
    case SOMA_ACT_RELU: return x > 0 ? x : 0;
    case SOMA_ACT_SIGMOID: return 1.0 / (1.0 + exp(-x));
    case SOMA_ACT_TANH: return tanh(x);
    case SOMA_ACT_HARDSIGMOID: return fmin(fmax(x / 6 + 0.5, 0), 1);
    case SOMA_ACT_CLAMP01: return fmin(fmax(x, 0), 1);
    default: return x;
    }
}

typedef struct act_ctx {
    soma_act a;
    size_t n;
    double *x, *r;
} act_ctx;
static double loss_act(void *p)
{
    act_ctx *c = p;
    double s = 0;
    for (size_t i = 0; i < c->n; i++) s += ref_act1(c->x[i], c->a) * c->r[i];
    return s;
}

/* Whether x is within 1e-3 of a kink of f (finite differences invalid). */
static int near_kink(float x, soma_act a)
{
    switch (a) {
    case SOMA_ACT_RELU: return fabsf(x) < 1e-3f;
    case SOMA_ACT_HARDSIGMOID: return fabsf(fabsf(x) - 3) < 1e-3f;
    case SOMA_ACT_CLAMP01: return fabsf(x) < 1e-3f || fabsf(x - 1) < 1e-3f;
    default: return 0;
    }
}

static void test_activations(void)
{
    const size_t n = 200;
    for (int ai = 0; ai < SOMA_ACT_COUNT; ai++) {
        soma_act a = (soma_act)ai;
        char name[64];
        float *x = fnew(n), *r = frand_new(n, -1, 1), *y = fnew(n), *d = fnew(n);
        for (size_t i = 0; i < n; i++) {
            do x[i] = -4.5f + 9.0f * soma_rng_uniform(&rng); while (near_kink(x[i], a));
            /* clamp01 lives on [0,1]: put half the points there */
            if (a == SOMA_ACT_CLAMP01 && i % 2) x[i] = 0.01f + 0.98f * soma_rng_uniform(&rng);
        }
        act_ctx c = { a, n, to_d(x, n), to_d(r, n) };
        double *yr = dnew(n);
        for (size_t i = 0; i < n; i++) yr[i] = ref_act1(c.x[i], a);

        snprintf(name, sizeof name, "act %s forward", soma_act_name(a));
        soma_act_forward(y, x, n, a);
        check_fwd(name, y, yr, n);

        float *dx0 = frand_new(n, -1, 1), *dx = fcopy(dx0, n);
        soma_act_backward(dx, r, x, y, n, a);
        double *g = fd_new(c.x, n, loss_act, &c);
        snprintf(name, sizeof name, "act %s backward", soma_act_name(a));
        check_grad(name, dx, dx0, g, n);

        /* deriv is f' bare: times r it is the finite difference again */
        soma_act_deriv(d, x, y, n, a);
        for (size_t i = 0; i < n; i++) d[i] *= r[i];
        snprintf(name, sizeof name, "act %s deriv", soma_act_name(a));
        check_grad(name, d, NULL, g, n);

        /* the pointer a derivative does not read may be NULL */
        float *dxn = fcopy(dx0, n);
        int uses_y = a == SOMA_ACT_SIGMOID || a == SOMA_ACT_TANH;
        soma_act_backward(dxn, r, uses_y ? NULL : x, uses_y ? y : NULL, n, a);
        CHECK(memcmp(dxn, dx, n * sizeof(float)) == 0);
        soma_act_backward(NULL, r, x, y, n, a);

        /* in place */
        float *xi = fcopy(x, n);
        soma_act_forward(xi, xi, n, a);
        CHECK(memcmp(xi, y, n * sizeof(float)) == 0);

        /* names round-trip */
        soma_act back;
        CHECK(soma_act_from_name(&back, soma_act_name(a)) == SOMA_OK && back == a);

        free(x); free(r); free(y); free(d); free(dx0); free(dx); free(dxn); free(xi);
        free(g); free(yr); free(c.x); free(c.r);
    }

    /* derivatives exactly at the kinks, as PyTorch's autograd */
    const float xk[] = { 0.0f, -3.0f, 3.0f, 2.999f, -2.999f, 1.0f, -1e-7f, 1.0000001f };
    float dk[8];
    soma_act_deriv(dk, xk, NULL, 1, SOMA_ACT_RELU);
    CHECK(dk[0] == 0.0f);                                  /* relu'(0) = 0 */
    soma_act_deriv(dk, xk, NULL, 5, SOMA_ACT_HARDSIGMOID);
    CHECK(dk[1] == 0.0f && dk[2] == 0.0f);                 /* hardsigmoid'(+-3) = 0 */
    CHECK(dk[3] == 1.0f / 6.0f && dk[4] == 1.0f / 6.0f && dk[0] == 1.0f / 6.0f);
    soma_act_deriv(dk, xk, NULL, 8, SOMA_ACT_CLAMP01);
    CHECK(dk[0] == 1.0f && dk[5] == 1.0f);                 /* clamp inclusive */
    CHECK(dk[6] == 0.0f && dk[7] == 0.0f);

    /* sigmoid saturates without overflow */
    const float xs[4] = { -100.0f, 100.0f, -1e30f, 1e30f };
    float ys[4];
    soma_act_forward(ys, xs, 4, SOMA_ACT_SIGMOID);
    CHECK(ys[0] >= 0.0f && ys[0] < 1e-40f && ys[1] == 1.0f && ys[2] == 0.0f && ys[3] == 1.0f);

    /* names */
    soma_act a;
    soma_clear_error();
    CHECK(soma_act_from_name(&a, "gelu") == SOMA_ERR_ARG);
    CHECK(strstr(soma_last_error(), "gelu") && strstr(soma_last_error(), "hardsigmoid"));
    CHECK(soma_act_from_name(&a, NULL) == SOMA_ERR_ARG);
    CHECK(strcmp(soma_act_name(SOMA_ACT_COUNT), "unknown") == 0);

    /* a large array takes the parallel path: same values elementwise */
    const size_t big = (size_t)1 << 17;
    float *x = frand_new(big, -5, 5), *y = fnew(big), *d = fnew(big);
    for (int ai = 0; ai < SOMA_ACT_COUNT; ai++) {
        soma_act_forward(y, x, big, (soma_act)ai);
        soma_act_deriv(d, x, y, big, (soma_act)ai);
        int same = 1;
        for (size_t i = 0; i < big; i += 4099) {
            float y1, d1;
            soma_act_forward(&y1, &x[i], 1, (soma_act)ai);
            soma_act_deriv(&d1, &x[i], &y1, 1, (soma_act)ai);
            same &= y1 == y[i] && d1 == d[i];
        }
        CHECK(same);
    }
    free(x); free(y); free(d);
}

typedef struct softmax_ctx {
    int B, C;
    double *x, *r, *y;
} softmax_ctx;
static void ref_softmax(softmax_ctx *c)
{
    for (int b = 0; b < c->B; b++) {
        const double *x = c->x + b * c->C;
        double m = x[0], s = 0;
        for (int i = 1; i < c->C; i++) m = fmax(m, x[i]);
        for (int i = 0; i < c->C; i++) s += exp(x[i] - m);
        for (int i = 0; i < c->C; i++) c->y[b * c->C + i] = exp(x[i] - m) / s;
    }
}
static double loss_softmax(void *p)
{
    softmax_ctx *c = p;
    ref_softmax(c);
    return dot_d(c->y, c->r, (size_t)c->B * c->C);
}

static void test_softmax(void)
{
    const int B = 4, C = 6;
    const size_t n = (size_t)B * C;
    float *x = frand_new(n, -3, 3), *r = frand_new(n, -1, 1), *y = fnew(n);
    x[C] += 1000.0f;             /* stability: would overflow without the max */
    x[C + 1] = x[C] - 1.0f;
    softmax_ctx c = { B, C, to_d(x, n), to_d(r, n), dnew(n) };
    soma_softmax_forward(y, x, B, C);
    ref_softmax(&c);
    check_fwd("softmax forward", y, c.y, n);
    float *dx0 = frand_new(n, -1, 1), *dx = fcopy(dx0, n);
    soma_softmax_backward(dx, r, y, B, C);
    double *g = fd_new(c.x, n, loss_softmax, &c);
    check_grad("softmax backward", dx, dx0, g, n);
    free(x); free(r); free(y); free(dx0); free(dx); free(g); free(c.x); free(c.r); free(c.y);
}

/* ------------------------------------------------------------------------ */
/* dropout                                                                  */
/* ------------------------------------------------------------------------ */

static void test_dropout(void)
{
    const size_t n = 100000;
    const float p = 0.3f, keep = 1.0f / (1.0f - p);
    float *m = fnew(n), *m2 = fnew(n);
    soma_rng r1, r2;
    soma_rng_seed(&r1, 42);
    soma_rng_seed(&r2, 42);
    soma_dropout_mask(m, n, p, &r1);
    soma_dropout_mask(m2, n, p, &r2);
    CHECK(memcmp(m, m2, n * sizeof(float)) == 0);      /* same seed, same mask */
    size_t kept = 0;
    int values_ok = 1;
    for (size_t i = 0; i < n; i++) {
        values_ok &= m[i] == 0.0f || m[i] == keep;
        kept += m[i] != 0.0f;
    }
    CHECK(values_ok);
    /* binomial sd is sqrt(n p (1-p)) ~ 145, i.e. 0.0015 of n */
    CHECK(fabs((double)kept / n - (1.0 - p)) < 0.01);

    soma_dropout_mask(m2, n, 0.0f, &r2);
    int ones = 1;
    for (size_t i = 0; i < n; i++) ones &= m2[i] == 1.0f;
    CHECK(ones);

    /* forward multiplies, backward accumulates dy * mask (the exact derivative) */
    float *x = frand_new(n, -1, 1), *y = fnew(n), *dy = frand_new(n, -1, 1);
    float *dx0 = frand_new(n, -1, 1), *dx = fcopy(dx0, n), *want = fnew(n), *wy = fnew(n);
    soma_dropout_forward(y, x, m, n);
    soma_dropout_backward(dx, dy, m, n);
    for (size_t i = 0; i < n; i++) { wy[i] = x[i] * m[i]; want[i] = dx0[i] + dy[i] * m[i]; }
    check_close_f("dropout forward", y, wy, n, 0, 0);
    check_close_f("dropout backward", dx, want, n, 0, 0);
    soma_dropout_backward(NULL, dy, m, n);
    free(m); free(m2); free(x); free(y); free(dy); free(dx0); free(dx); free(want); free(wy);
}

/* ------------------------------------------------------------------------ */
/* batchnorm                                                                */
/* ------------------------------------------------------------------------ */

typedef struct bn_ctx {
    int B, C, S, train;
    double eps;
    double *x, *gamma, *beta, *rm, *rv, *r, *y;
} bn_ctx;
static void ref_bn(bn_ctx *c)
{
    const int B = c->B, C = c->C, S = c->S;
    const double n = (double)B * S;
    for (int ch = 0; ch < C; ch++) {
        double mean, var;
        if (c->train) {
            double s = 0, ss = 0;
            for (int b = 0; b < B; b++)
                for (int i = 0; i < S; i++) s += c->x[(b * C + ch) * S + i];
            mean = s / n;
            for (int b = 0; b < B; b++)
                for (int i = 0; i < S; i++) {
                    double d = c->x[(b * C + ch) * S + i] - mean;
                    ss += d * d;
                }
            var = ss / n;
        } else {
            mean = c->rm[ch];
            var = c->rv[ch];
        }
        for (int b = 0; b < B; b++)
            for (int i = 0; i < S; i++) {
                size_t at = (size_t)(b * C + ch) * S + i;
                c->y[at] = c->gamma[ch] * (c->x[at] - mean) / sqrt(var + c->eps) + c->beta[ch];
            }
    }
}
static double loss_bn(void *p)
{
    bn_ctx *c = p;
    ref_bn(c);
    return dot_d(c->y, c->r, (size_t)c->B * c->C * c->S);
}

static void test_bn_case(int B, int C, int S, int train)
{
    const size_t n = (size_t)B * C * S;
    const float eps = 1e-5f, mom = 0.1f;
    char name[96];
    float *x = frand_new(n, -2, 3), *r = frand_new(n, -1, 1), *y = fnew(n);
    float *gamma = frand_new(C, 0.5f, 1.5f), *beta = frand_new(C, -1, 1);
    float *rm = frand_new(C, -0.5f, 0.5f), *rv = frand_new(C, 0.5f, 2.0f);
    float *rm0 = fcopy(rm, C), *rv0 = fcopy(rv, C);
    float *mean = fnew(C), *invstd = fnew(C), *xhat = fnew(n);
    soma_bn_cache cache = { mean, invstd, xhat };
    bn_ctx c = { B, C, S, train, eps, to_d(x, n), to_d(gamma, C), to_d(beta, C),
                 to_d(rm, C), to_d(rv, C), to_d(r, n), dnew(n) };

    snprintf(name, sizeof name, "batchnorm %s B%d C%d S%d", train ? "train" : "frozen", B, C, S);
    soma_batchnorm_forward(y, &cache, rm, rv, x, gamma, beta, B, C, S, eps, mom, train);
    ref_bn(&c);
    check_fwd(name, y, c.y, n);

    /* running statistics: PyTorch's momentum convention, unbiased variance */
    double *wm = dnew(C), *wv = dnew(C);
    for (int ch = 0; ch < C; ch++) {
        double s = 0, ss = 0, cnt = (double)B * S;
        for (int b = 0; b < B; b++)
            for (int i = 0; i < S; i++) s += c.x[(b * C + ch) * S + i];
        for (int b = 0; b < B; b++)
            for (int i = 0; i < S; i++) {
                double d = c.x[(b * C + ch) * S + i] - s / cnt;
                ss += d * d;
            }
        wm[ch] = train ? 0.9 * rm0[ch] + 0.1 * (s / cnt) : rm0[ch];
        wv[ch] = train ? 0.9 * rv0[ch] + 0.1 * (ss / (cnt - 1)) : rv0[ch];
    }
    check_fwd("batchnorm running mean", rm, wm, C);
    check_fwd("batchnorm running var", rv, wv, C);

    float *dx0 = frand_new(n, -1, 1), *dg0 = frand_new(C, -1, 1), *db0 = frand_new(C, -1, 1);
    float *dx = fcopy(dx0, n), *dg = fcopy(dg0, C), *db = fcopy(db0, C);
    soma_batchnorm_backward(dx, dg, db, r, &cache, gamma, B, C, S, train);
    /* full finite differences cost O(n^2): big inputs get a directional one */
    const int full = n <= 4096;
    double *gx = full ? fd_new(c.x, n, loss_bn, &c) : dnew(n);
    double *gg = fd_new(c.gamma, C, loss_bn, &c), *gb = fd_new(c.beta, C, loss_bn, &c);
    if (full) check_grad(name, dx, dx0, gx, n);
    else check_grad_dir(name, dx, dx0, c.x, n, loss_bn, &c);
    check_grad("batchnorm dgamma", dg, dg0, gg, C);
    check_grad("batchnorm dbeta", db, db0, gb, C);

    /* gamma/beta NULL mean 1/0; run stats may be NULL in training */
    if (train) {
        for (int ch = 0; ch < C; ch++) { c.gamma[ch] = 1; c.beta[ch] = 0; }
        soma_batchnorm_forward(y, &cache, NULL, NULL, x, NULL, NULL, B, C, S, eps, mom, 1);
        ref_bn(&c);
        check_fwd("batchnorm train, no affine", y, c.y, n);
        float *dx1 = fcopy(dx0, n);
        soma_batchnorm_backward(dx1, NULL, NULL, r, &cache, NULL, B, C, S, 1);
        if (full) {
            fd_grad(gx, c.x, n, loss_bn, &c);
            check_grad("batchnorm train, no affine, dx", dx1, dx0, gx, n);
        } else {
            check_grad_dir("batchnorm train, no affine, dx", dx1, dx0, c.x, n, loss_bn, &c);
        }
        free(dx1);
        /* no cache at all (evaluation of a training-mode net) */
        float *y2 = fnew(n);
        soma_batchnorm_forward(y2, NULL, NULL, NULL, x, NULL, NULL, B, C, S, eps, mom, 1);
        CHECK(memcmp(y2, y, n * sizeof(float)) == 0);
        free(y2);
    }

    free(x); free(r); free(y); free(gamma); free(beta); free(rm); free(rv); free(rm0);
    free(rv0); free(mean); free(invstd); free(xhat); free(wm); free(wv);
    free(dx0); free(dg0); free(db0); free(dx); free(dg); free(db); free(gx); free(gg); free(gb);
    free(c.x); free(c.gamma); free(c.beta); free(c.rm); free(c.rv); free(c.r); free(c.y);
}

static void test_batchnorm(void)
{
    test_bn_case(4, 3, 5, 1);    /* conv-style, S = H*W */
    test_bn_case(6, 4, 1, 1);    /* dense-style */
    test_bn_case(4, 3, 5, 0);    /* frozen */
    test_bn_case(3, 2, 1, 0);
    test_bn_case(64, 8, 64, 1);  /* large: the parallel path */
}

/* ------------------------------------------------------------------------ */
/* losses                                                                   */
/* ------------------------------------------------------------------------ */

typedef struct loss_ctx {
    int B, N;
    double scale;
    double *z, *t;
    const int32_t *labels;
} loss_ctx;

static double ref_ce(void *p)
{
    loss_ctx *c = p;
    double total = 0;
    for (int b = 0; b < c->B; b++) {
        const double *z = c->z + b * c->N;
        double m = z[0], s = 0;
        for (int i = 1; i < c->N; i++) m = fmax(m, z[i]);
        for (int i = 0; i < c->N; i++) s += exp(z[i] - m);
        total += m + log(s) - z[c->labels[b]];
    }
    return c->scale * total / c->B;
}
static double ref_mse(void *p)
{
    loss_ctx *c = p;
    double s = 0;
    for (int i = 0; i < c->B * c->N; i++) s += (c->z[i] - c->t[i]) * (c->z[i] - c->t[i]);
    return c->scale * s / (c->B * c->N);
}
static double ref_bce(void *p)
{
    loss_ctx *c = p;
    double s = 0;
    for (int i = 0; i < c->B * c->N; i++) {
        /* the textbook form, fine in double for moderate z */
        double sg = 1.0 / (1.0 + exp(-c->z[i]));
        s += -(c->t[i] * log(sg) + (1 - c->t[i]) * log(1 - sg));
    }
    return c->scale * s / (c->B * c->N);
}

static void test_losses(void)
{
    const int B = 5, N = 4;
    const size_t n = (size_t)B * N;
    const float scale = 0.7f;
    float *z = frand_new(n, -3, 3), *t = frand_new(n, 0, 1), *p = fnew(n);
    int32_t labels[5] = { 0, 3, 1, 3, 2 };
    loss_ctx c = { B, N, 1.0, to_d(z, n), to_d(t, n), labels };

    /* cross-entropy */
    float ce = soma_ce_forward(p, z, labels, B, N);
    CHECK(fabs(ce - ref_ce(&c)) < 1e-6 * (1 + fabs(ref_ce(&c))));
    softmax_ctx sc = { B, N, c.z, NULL, dnew(n) };
    ref_softmax(&sc);
    check_fwd("ce probs", p, sc.y, n);
    CHECK(soma_ce_forward(NULL, z, labels, B, N) == ce);
    float *d0 = frand_new(n, -1, 1), *d = fcopy(d0, n);
    soma_ce_backward(d, p, labels, B, N, scale);
    c.scale = scale;
    double *g = fd_new(c.z, n, ref_ce, &c);
    check_grad("ce backward", d, d0, g, n);

    /* MSE */
    c.scale = 1;
    float mse = soma_mse_forward(z, t, B, N);
    CHECK(fabs(mse - ref_mse(&c)) < 1e-6 * (1 + ref_mse(&c)));
    memcpy(d, d0, n * sizeof(float));
    soma_mse_backward(d, z, t, B, N, scale);
    c.scale = scale;
    fd_grad(g, c.z, n, ref_mse, &c);
    check_grad("mse backward", d, d0, g, n);

    /* BCE with logits */
    c.scale = 1;
    float bce = soma_bce_logits_forward(z, t, B, N);
    CHECK(fabs(bce - ref_bce(&c)) < 1e-6 * (1 + ref_bce(&c)));
    memcpy(d, d0, n * sizeof(float));
    soma_bce_logits_backward(d, z, t, B, N, scale);
    c.scale = scale;
    fd_grad(g, c.z, n, ref_bce, &c);
    check_grad("bce backward", d, d0, g, n);

    /* stability at extreme logits */
    const float zbig[4] = { 1e4f, -1e4f, 200.0f, -200.0f };
    const float tbig[4] = { 1, 0, 0, 1 };
    float bbig = soma_bce_logits_forward(zbig, tbig, 1, 4);
    CHECK(isfinite(bbig) && fabs(bbig - 100.0) < 1e-3);   /* (0 + 0 + 200 + 200) / 4 */
    float dbig[4] = { 0 };
    soma_bce_logits_backward(dbig, zbig, tbig, 1, 4, 1.0f);
    CHECK(dbig[0] == 0.0f && dbig[1] == 0.0f && fabsf(dbig[2] - 0.25f) < 1e-7f &&
          fabsf(dbig[3] + 0.25f) < 1e-7f);
    const float lbig[6] = { 1e4f, -1e4f, 0.0f,   -5e3f, 5e3f, 5e3f };
    const int32_t lab2[2] = { 0, 1 };
    float pbig[6];
    float cbig = soma_ce_forward(pbig, lbig, lab2, 2, 3);
    CHECK(isfinite(cbig) && fabs(cbig - log(2.0) / 2) < 1e-6);
    CHECK(pbig[0] == 1.0f && fabsf(pbig[4] - 0.5f) < 1e-7f);

    /* a label out of range: NaN loss, and backward must not index with it */
    const int32_t badl[5] = { 0, 4, 1, -1, 2 };
    CHECK(isnan(soma_ce_forward(p, z, badl, B, N)));
    memcpy(d, d0, n * sizeof(float));
    soma_ce_backward(d, p, badl, B, N, 1.0f);
    soma_ce_backward(NULL, p, labels, B, N, 1.0f);
    soma_mse_backward(NULL, z, t, B, N, 1.0f);
    soma_bce_logits_backward(NULL, z, t, B, N, 1.0f);

    free(z); free(t); free(p); free(d0); free(d); free(g); free(c.z); free(c.t); free(sc.y);
}

/* ------------------------------------------------------------------------ */
/* initialisers                                                             */
/* ------------------------------------------------------------------------ */

static void test_init(void)
{
    const size_t n = 200000;
    const int fi = 300, fo = 100;
    float *w = fnew(n), *w2 = fnew(n);
    for (int k = 0; k < SOMA_INIT_COUNT; k++) {
        double var, bound = 0;
        switch (k) {
        case SOMA_INIT_TORCH: bound = 1 / sqrt(fi); var = bound * bound / 3; break;
        case SOMA_INIT_XAVIER_UNIFORM: bound = sqrt(6.0 / (fi + fo)); var = bound * bound / 3; break;
        case SOMA_INIT_XAVIER_NORMAL: var = 2.0 / (fi + fo); break;
        case SOMA_INIT_KAIMING_UNIFORM: bound = sqrt(6.0 / fi); var = bound * bound / 3; break;
        case SOMA_INIT_UNIT: var = 1.0 / fi; break;   /* fi squares sum to 1 */
        default: var = 2.0 / fi; break;
        }
        soma_rng r1, r2;
        soma_rng_seed(&r1, 7);
        soma_rng_seed(&r2, 7);
        soma_init_fill(w, n, fi, fo, (soma_init)k, &r1);
        soma_init_fill(w2, n, fi, fo, (soma_init)k, &r2);
        CHECK(memcmp(w, w2, n * sizeof(float)) == 0);
        soma_rng_seed(&r2, 8);
        soma_init_fill(w2, n, fi, fo, (soma_init)k, &r2);
        CHECK(memcmp(w, w2, n * sizeof(float)) != 0);

        double s = 0, ss = 0, mx = 0;
        for (size_t i = 0; i < n; i++) {
            s += w[i];
            ss += (double)w[i] * w[i];
            if (fabs(w[i]) > mx) mx = fabs(w[i]);
        }
        double mean = s / n, v = ss / n - mean * mean, sd = sqrt(var);
        /* 5 standard errors: sd/sqrt(n) for the mean, ~sqrt(2/n) relative for var */
        if (!CHECK(fabs(mean) < 5 * sd / sqrt((double)n) && fabs(v / var - 1) < 0.02))
            fprintf(stderr, "  init %s: mean %g var %g, want 0 and %g\n",
                    soma_init_name((soma_init)k), mean, v, var);
        if (bound > 0) CHECK(mx <= bound * (1 + 1e-6) && mx > 0.99 * bound);
        if (k == SOMA_INIT_UNIT) {   /* every run of fi values a unit vector; the last, short one too */
            double worst = 0;
            for (size_t r = 0; r < n; r += fi) {
                double q = 0;
                for (size_t j = r; j < n && j < r + fi; j++) q += (double)w[j] * w[j];
                if (fabs(q - 1) > worst) worst = fabs(q - 1);
            }
            if (!CHECK(n % fi != 0 && worst < 1e-5)) fprintf(stderr, "  init unit: |norm^2 - 1| %g\n", worst);
        }

        soma_init back;
        CHECK(soma_init_from_name(&back, soma_init_name((soma_init)k)) == SOMA_OK &&
              back == (soma_init)k);
    }
    soma_init back;
    CHECK(soma_init_from_name(&back, "he") == SOMA_ERR_ARG &&
          strstr(soma_last_error(), "kaiming_normal"));
    CHECK(strcmp(soma_init_name(SOMA_INIT_COUNT), "unknown") == 0);
    free(w); free(w2);
}

/* ------------------------------------------------------------------------ */
/* shape validation                                                         */
/* ------------------------------------------------------------------------ */

static int rejects(soma_status st)
{
    int ok = st == SOMA_ERR_SHAPE && soma_last_error()[0] != 0;
    soma_clear_error();
    return ok;
}

static void test_shapes(void)
{
    soma_conv_shape s;
    CHECK(soma_conv_shape_init(&s, 2, 3, 7, 6, 4, 3, 3, 2, 1) == SOMA_OK);
    CHECK(s.OH == 4 && s.OW == 3 && s.B == 2 && s.C == 3 && s.O == 4 && s.pad == 1);
    CHECK(soma_conv_shape_init(&s, 1, 1, 2, 2, 1, 4, 4, 1, 1) == SOMA_OK && s.OH == 1);
    CHECK(rejects(soma_conv_shape_init(&s, 1, 1, 2, 2, 1, 3, 3, 1, 0)));  /* empty output */
    CHECK(rejects(soma_conv_shape_init(&s, 1, 1, 5, 2, 1, 3, 3, 1, 0)));  /* W too small */
    CHECK(rejects(soma_conv_shape_init(&s, 0, 1, 5, 5, 1, 3, 3, 1, 0)));  /* B */
    CHECK(rejects(soma_conv_shape_init(&s, 1, 1, 5, 5, 0, 3, 3, 1, 0)));  /* O */
    CHECK(rejects(soma_conv_shape_init(&s, 1, 1, 5, 5, 1, 3, 3, 0, 0)));  /* stride */
    CHECK(rejects(soma_conv_shape_init(&s, 1, 1, 5, 5, 1, 3, 3, 1, -1))); /* pad */
    CHECK(rejects(soma_conv_shape_init(&s, 1, 1, 5, 5, 1, 0, 3, 1, 0)));  /* kernel */

    soma_pool_shape p;
    CHECK(soma_pool_shape_init(&p, 2, 3, 7, 5, 3, 2) == SOMA_OK);
    CHECK(p.OH == 3 && p.OW == 2 && p.k == 3 && p.stride == 2);
    CHECK(rejects(soma_pool_shape_init(&p, 1, 1, 2, 5, 3, 1)));    /* window > H */
    CHECK(rejects(soma_pool_shape_init(&p, 1, 1, 5, 2, 3, 1)));    /* window > W */
    CHECK(rejects(soma_pool_shape_init(&p, 1, 1, 5, 5, 2, 0)));    /* stride */
    CHECK(rejects(soma_pool_shape_init(&p, 1, 1, 5, 5, 0, 1)));    /* window */
    CHECK(rejects(soma_pool_shape_init(&p, 1, 0, 5, 5, 2, 2)));    /* C */
}

/* soma_flush_denormals: a product below FLT_MIN becomes 0 with it, stays a
 * denormal without it, in this thread and in the OpenMP workers. */
static void test_denormals(void)
{
    volatile float tiny = 1e-30f, scale = 1e-10f;
    int set = soma_flush_denormals(1);
#if defined(__x86_64__) || defined(__i386__)
    CHECK(set == 1);
    CHECK(tiny * scale == 0.0f);
    int zero_in_all = 1;
#pragma omp parallel num_threads(2) reduction(&& : zero_in_all)
    zero_in_all = zero_in_all && (tiny * scale == 0.0f);
    CHECK(zero_in_all);
    soma_flush_denormals(0);
    CHECK(tiny * scale > 0.0f && tiny * scale < FLT_MIN);
    /* on < 0: the environment's SOMA_DENORMALS=1 keeps them, anything else flushes */
    setenv("SOMA_DENORMALS", "1", 1);
    soma_flush_denormals(-1);
    CHECK(tiny * scale > 0.0f);
    unsetenv("SOMA_DENORMALS");
    soma_flush_denormals(-1);
    CHECK(tiny * scale == 0.0f);
    soma_flush_denormals(0);
#else
    CHECK(set == 0);
#endif
}

int main(void)
{
    soma_rng_seed(&rng, 20240601);
    test_denormals();
    test_shapes();
    test_gemm();
    test_dense();
    test_conv();
    test_pool();
    test_activations();
    test_softmax();
    test_dropout();
    test_batchnorm();
    test_losses();
    test_init();
    return check_report("test_ops");
}
