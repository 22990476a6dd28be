/*
 * activation.c - elementwise activations f(x) and their derivatives, and
 * the row softmax.
 *
 *   identity     x                        1
 *   relu         max(x, 0)                1 if x > 0, else 0 (0 at x = 0, as PyTorch)
 *   sigmoid      1 / (1 + e^-x)           y (1 - y)
 *   tanh         tanh x                   1 - y^2
 *   hardsigmoid  clamp(x/6 + 1/2, 0, 1)   1/6 if -3 < x < 3, else 0 (PyTorch)
 *   clamp01      clamp(x, 0, 1)           1 if 0 <= x <= 1, else 0
 *
 * clamp01's derivative is 1 on the closed interval [0, 1] because that is
 * what autograd gives for torch.clamp(x, 0, 1) (its backward passes the
 * gradient where min <= x <= max); hardsigmoid's kinks, by contrast, get 0,
 * again matching PyTorch.  sigmoid and tanh take the derivative from y.
 *
 * Elementwise loops run in parallel for large n; each element is computed
 * the same way on any thread, so results do not depend on the thread count.
 * The softmax sums each row on one thread, for the same reason.
 */
#include "../soma_internal.h"
#include <math.h>
#include <string.h>

/* Below this many elements a parallel region costs more than it saves. */
enum { PAR_MIN = 1 << 15 };

static const char *const act_names[SOMA_ACT_COUNT] = {
    [SOMA_ACT_IDENTITY] = "identity",
    [SOMA_ACT_RELU] = "relu",
    [SOMA_ACT_SIGMOID] = "sigmoid",
    [SOMA_ACT_TANH] = "tanh",
    [SOMA_ACT_HARDSIGMOID] = "hardsigmoid",
    [SOMA_ACT_CLAMP01] = "clamp01",
};

/* "unknown" for a value outside the enum (as soma_status_string does). */
const char *soma_act_name(soma_act a)
{
    return ((unsigned)a < SOMA_ACT_COUNT) ? act_names[a] : "unknown";
}

soma_status soma_act_from_name(soma_act *out, const char *name)
{
    for (int i = 0; name && i < SOMA_ACT_COUNT; i++)
        if (strcmp(name, act_names[i]) == 0) { *out = (soma_act)i; return SOMA_OK; }
    return soma__fail(SOMA_ERR_ARG, "unknown activation '%s' (valid: identity, relu, "
                      "sigmoid, tanh, hardsigmoid, clamp01)", name ? name : "(null)");
}

static inline float clampf(float v, float lo, float hi)
{
    return v < lo ? lo : (v > hi ? hi : v);
}

static inline float act1(float x, soma_act a)
{
    switch (a) {
    case SOMA_ACT_RELU: return x > 0.0f ? x : 0.0f;
    case SOMA_ACT_SIGMOID:
        /* only ever exponentiate a non-positive number: no overflow */
        if (x >= 0.0f) return 1.0f / (1.0f + expf(-x));
        else { float e = expf(x); return e / (1.0f + e); }
    case SOMA_ACT_TANH: return tanhf(x);
    case SOMA_ACT_HARDSIGMOID: return clampf(x / 6.0f + 0.5f, 0.0f, 1.0f);
    case SOMA_ACT_CLAMP01: return clampf(x, 0.0f, 1.0f);
    case SOMA_ACT_IDENTITY:
    default: return x;
    }
}

/* f'(x) at element i; reads x[i] or y[i], whichever the formula needs. */
static inline float deriv1(const float *x, const float *y, size_t i, soma_act a)
{
    switch (a) {
    case SOMA_ACT_RELU: return x[i] > 0.0f ? 1.0f : 0.0f;
    case SOMA_ACT_SIGMOID: return y[i] * (1.0f - y[i]);
    case SOMA_ACT_TANH: return 1.0f - y[i] * y[i];
    case SOMA_ACT_HARDSIGMOID: return (x[i] > -3.0f && x[i] < 3.0f) ? 1.0f / 6.0f : 0.0f;
    case SOMA_ACT_CLAMP01: return (x[i] >= 0.0f && x[i] <= 1.0f) ? 1.0f : 0.0f;
    case SOMA_ACT_IDENTITY:
    default: return 1.0f;
    }
}

/* The kind is dispatched once per range, not per element, so each loop is
 * a plain vectorisable pass. */
static void act_forward_range(float *y, const float *x, size_t n, soma_act a)
{
    switch (a) {
    case SOMA_ACT_RELU:
        _Pragma("omp simd")
        for (size_t i = 0; i < n; i++) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
        break;
    case SOMA_ACT_CLAMP01:
        _Pragma("omp simd")
        for (size_t i = 0; i < n; i++) y[i] = clampf(x[i], 0.0f, 1.0f);
        break;
    case SOMA_ACT_HARDSIGMOID:
        _Pragma("omp simd")
        for (size_t i = 0; i < n; i++) y[i] = clampf(x[i] / 6.0f + 0.5f, 0.0f, 1.0f);
        break;
    case SOMA_ACT_IDENTITY:
        if (y != x) memmove(y, x, n * sizeof *y);
        break;
    default:
        for (size_t i = 0; i < n; i++) y[i] = act1(x[i], a);
        break;
    }
}

static void act_backward_range(float *dx, const float *dy, const float *x, const float *y,
                               size_t n, soma_act a)
{
    switch (a) {
    case SOMA_ACT_RELU:
        _Pragma("omp simd")
        for (size_t i = 0; i < n; i++) dx[i] += x[i] > 0.0f ? dy[i] : 0.0f;
        break;
    case SOMA_ACT_SIGMOID:
        _Pragma("omp simd")
        for (size_t i = 0; i < n; i++) dx[i] += dy[i] * (y[i] * (1.0f - y[i]));
        break;
    case SOMA_ACT_TANH:
        _Pragma("omp simd")
        for (size_t i = 0; i < n; i++) dx[i] += dy[i] * (1.0f - y[i] * y[i]);
        break;
    case SOMA_ACT_IDENTITY:
        _Pragma("omp simd")
        for (size_t i = 0; i < n; i++) dx[i] += dy[i];
        break;
    default:
        for (size_t i = 0; i < n; i++) dx[i] += dy[i] * deriv1(x, y, i, a);
        break;
    }
}

/* y(n) = f(x(n)); y may alias x. */
void soma_act_forward(float *y, const float *x, size_t n, soma_act a)
{
    if (n < PAR_MIN) { act_forward_range(y, x, n, a); return; }
#pragma omp parallel
    {
        size_t lo, hi;
        soma__thread_range(n, &lo, &hi);
        act_forward_range(y + lo, x + lo, hi - lo, a);
    }
}

/* dx(n) += dy(n) * f'(x).  x is read by relu, hardsigmoid and clamp01, y by
 * sigmoid and tanh; the one not read may be NULL.  dx NULL: nothing. */
void soma_act_backward(float *dx, const float *dy, const float *x, const float *y,
                       size_t n, soma_act a)
{
    if (!dx) return;
    if (n < PAR_MIN) { act_backward_range(dx, dy, x, y, n, a); return; }
#pragma omp parallel
    {
        size_t lo, hi;
        soma__thread_range(n, &lo, &hi);
        act_backward_range(dx + lo, dy + lo, x ? x + lo : NULL, y ? y + lo : NULL, hi - lo, a);
    }
}

static void act_deriv_range(float *d, const float *x, const float *y, size_t n, soma_act a)
{
    switch (a) {
    case SOMA_ACT_RELU:
        _Pragma("omp simd")
        for (size_t i = 0; i < n; i++) d[i] = x[i] > 0.0f ? 1.0f : 0.0f;
        break;
    case SOMA_ACT_SIGMOID:
        _Pragma("omp simd")
        for (size_t i = 0; i < n; i++) d[i] = y[i] * (1.0f - y[i]);
        break;
    case SOMA_ACT_CLAMP01:
        _Pragma("omp simd")
        for (size_t i = 0; i < n; i++) d[i] = (x[i] >= 0.0f && x[i] <= 1.0f) ? 1.0f : 0.0f;
        break;
    default:
        for (size_t i = 0; i < n; i++) d[i] = deriv1(x, y, i, a);
        break;
    }
}

/* d(n) = f'(x), written, not accumulated.  x/y as for the backward pass. */
void soma_act_deriv(float *d, const float *x, const float *y, size_t n, soma_act a)
{
    if (n < PAR_MIN) { act_deriv_range(d, x, y, n, a); return; }
#pragma omp parallel
    {
        size_t lo, hi;
        soma__thread_range(n, &lo, &hi);
        act_deriv_range(d + lo, x ? x + lo : NULL, y ? y + lo : NULL, hi - lo, a);
    }
}

/* x(B,C) -> y(B,C), each row exp(x - max) / sum: subtracting the row max
 * keeps every exponent <= 0, so nothing overflows.  y may alias x. */
void soma_softmax_forward(float *y, const float *x, int B, int C)
{
#pragma omp parallel for schedule(static) if ((size_t)B * C >= PAR_MIN)
    for (int r = 0; r < B; r++) {
        const float *xr = x + (size_t)r * C;
        float *yr = y + (size_t)r * C;
        float m = xr[0];
        for (int c = 1; c < C; c++) if (xr[c] > m) m = xr[c];
        double sum = 0.0;
        for (int c = 0; c < C; c++) { yr[c] = expf(xr[c] - m); sum += yr[c]; }
        float inv = (float)(1.0 / sum);
        for (int c = 0; c < C; c++) yr[c] *= inv;
    }
}

/* dy(B,C), y(B,C) from the forward pass -> dx(B,C) += y * (dy - sum(dy*y)),
 * the Jacobian-vector product of softmax (diag(y) - y y^T) dy. */
void soma_softmax_backward(float *dx, const float *dy, const float *y, int B, int C)
{
    if (!dx) return;
#pragma omp parallel for schedule(static) if ((size_t)B * C >= PAR_MIN)
    for (int r = 0; r < B; r++) {
        const float *dyr = dy + (size_t)r * C, *yr = y + (size_t)r * C;
        float *dxr = dx + (size_t)r * C;
        double dot = 0.0;
        for (int c = 0; c < C; c++) dot += (double)dyr[c] * yr[c];
        for (int c = 0; c < C; c++) dxr[c] += yr[c] * (dyr[c] - (float)dot);
    }
}
