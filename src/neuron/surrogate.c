/*
 * surrogate.c - surrogate derivatives g(x) ~ dH/dx of the spike step
 * H(x) = [x > 0], with x = membrane - threshold.
 *
 *   multigauss    gamma [ (1+h) N(x; 0, sig) - h N(x; sig, k sig) - h N(x; -sig, k sig) ]
 *                 N(x; mu, s) = exp(-(x-mu)^2 / (2 s^2)) / (sqrt(2 pi) s)
 *                 (Yin et al., FPTT/sFPTT ActFun_adp; sig 0.3, h 0.15, k 6, gamma 0.5;
 *                 integral gamma (1 - h) = 0.425; small negative side lobes, intended)
 *   fast-sigmoid  1 / (slope |x| + 1)^2                  (SuperSpike / snnTorch; peak 1,
 *                 integral 2/slope: the derivative of x / (1 + slope |x|))
 *   arctan        (alpha/2) / (1 + (pi alpha x / 2)^2)   (snnTorch atan; integral 1)
 *   triangle      max(0, 1 - |x|/width) / width         (integral 1)
 *   straight      1                                     (straight-through)
 *   none          0                                     (the true derivative of H off 0)
 *
 * Parameters live in soma_surrogate: slope (fast-sigmoid slope, arctan
 * alpha), width (triangle width, multigauss sigma), height, scale, gamma
 * (multigauss).  Everything is computed in float; the scalar and the block
 * function share one inline formula per kind, so they agree bit for bit.
 */
#include "neuron.h"
#include <math.h>
#include <string.h>

static const char *const surr_names[SOMA_SURR_COUNT] = {
    [SOMA_SURR_MULTIGAUSS] = "multigauss",
    [SOMA_SURR_FAST_SIGMOID] = "fast-sigmoid",
    [SOMA_SURR_ARCTAN] = "arctan",
    [SOMA_SURR_TRIANGLE] = "triangle",
    [SOMA_SURR_STRAIGHT] = "straight",
    [SOMA_SURR_NONE] = "none",
};

/* Defaults per kind; fields a kind does not use stay 0. */
static const soma_surrogate surr_defaults[SOMA_SURR_COUNT] = {
    [SOMA_SURR_MULTIGAUSS] = { .kind = SOMA_SURR_MULTIGAUSS, .width = 0.3f, .height = 0.15f,
                               .scale = 6.0f, .gamma = 0.5f },
    [SOMA_SURR_FAST_SIGMOID] = { .kind = SOMA_SURR_FAST_SIGMOID, .slope = 25.0f },
    [SOMA_SURR_ARCTAN] = { .kind = SOMA_SURR_ARCTAN, .slope = 2.0f },
    [SOMA_SURR_TRIANGLE] = { .kind = SOMA_SURR_TRIANGLE, .width = 1.0f },
    [SOMA_SURR_STRAIGHT] = { .kind = SOMA_SURR_STRAIGHT },
    [SOMA_SURR_NONE] = { .kind = SOMA_SURR_NONE },
};

const char *soma_surrogate_name(soma_surrogate_kind k)
{
    return ((unsigned)k < SOMA_SURR_COUNT) ? surr_names[k] : "unknown";
}

/* An unknown kind gets all-zero parameters with that kind, which
 * soma_surrogate_check then rejects. */
void soma_surrogate_default(soma_surrogate *out, soma_surrogate_kind k)
{
    if ((unsigned)k < SOMA_SURR_COUNT) { *out = surr_defaults[k]; return; }
    memset(out, 0, sizeof *out);
    out->kind = k;
}

soma_status soma_surrogate_from_name(soma_surrogate *out, const char *name)
{
    for (int i = 0; name && i < SOMA_SURR_COUNT; i++)
        if (strcmp(name, surr_names[i]) == 0) {
            soma_surrogate_default(out, (soma_surrogate_kind)i);
            return SOMA_OK;
        }
    return soma__fail(SOMA_ERR_ARG, "unknown surrogate '%s' (valid: multigauss, fast-sigmoid, "
                      "arctan, triangle, straight, none)", name ? name : "(null)");
}

/* Only the fields the kind uses are checked.  `!(x > 0)` also rejects NaN. */
soma_status soma_surrogate_check(const soma_surrogate *s)
{
    if (!s) return soma__fail(SOMA_ERR_ARG, "surrogate is NULL");
    switch (s->kind) {
    case SOMA_SURR_MULTIGAUSS:
        if (!(s->width > 0.0f) || isinf(s->width))
            return soma__fail(SOMA_ERR_ARG, "multigauss surrogate width (sigma) must be > 0, "
                              "got %g", (double)s->width);
        if (!(s->height >= 0.0f) || isinf(s->height))
            return soma__fail(SOMA_ERR_ARG, "multigauss surrogate height must be >= 0, got %g",
                              (double)s->height);
        if (!(s->scale > 0.0f) || isinf(s->scale))
            return soma__fail(SOMA_ERR_ARG, "multigauss surrogate scale must be > 0, got %g",
                              (double)s->scale);
        if (!(s->gamma > 0.0f) || isinf(s->gamma))
            return soma__fail(SOMA_ERR_ARG, "multigauss surrogate gamma must be > 0, got %g",
                              (double)s->gamma);
        return SOMA_OK;
    case SOMA_SURR_FAST_SIGMOID:
    case SOMA_SURR_ARCTAN:
        if (!(s->slope > 0.0f) || isinf(s->slope))
            return soma__fail(SOMA_ERR_ARG, "%s surrogate slope must be > 0, got %g",
                              surr_names[s->kind], (double)s->slope);
        return SOMA_OK;
    case SOMA_SURR_TRIANGLE:
        if (!(s->width > 0.0f) || isinf(s->width))
            return soma__fail(SOMA_ERR_ARG, "triangle surrogate width must be > 0, got %g",
                              (double)s->width);
        return SOMA_OK;
    case SOMA_SURR_STRAIGHT:
    case SOMA_SURR_NONE:
        return SOMA_OK;
    default:
        return soma__fail(SOMA_ERR_ARG, "unknown surrogate kind %d (valid: 0..%d: multigauss, "
                          "fast-sigmoid, arctan, triangle, straight, none)", (int)s->kind,
                          SOMA_SURR_COUNT - 1);
    }
}

/* ------------------------------------------------------------------------ */
/* One formula per kind, shared by the scalar and the block function.       */
/* ------------------------------------------------------------------------ */

/* multigauss constants, folded once: g = c0 e^{-x^2 i0} - c1 (e^{-(x-sig)^2 i1} + e^{-(x+sig)^2 i1}) */
typedef struct mg_consts { float sig, c0, c1, i0, i1; } mg_consts;

static mg_consts mg_prepare(const soma_surrogate *s)
{
    const double sig = s->width, h = s->height, ks = (double)s->scale * s->width;
    const double r2pi = sqrt(2.0 * 3.14159265358979323846);
    mg_consts c;
    c.sig = s->width;
    c.c0 = (float)(s->gamma * (1.0 + h) / (r2pi * sig));
    c.c1 = (float)(s->gamma * h / (r2pi * ks));
    c.i0 = (float)(1.0 / (2.0 * sig * sig));
    c.i1 = (float)(1.0 / (2.0 * ks * ks));
    return c;
}

static inline __attribute__((always_inline)) float mg1(float x, const mg_consts *c)
{
    const float dp = x - c->sig, dm = x + c->sig;
    return c->c0 * soma__exp_nonpos(-(x * x) * c->i0) -
           c->c1 * (soma__exp_nonpos(-(dp * dp) * c->i1) + soma__exp_nonpos(-(dm * dm) * c->i1));
}

static inline float fast_sigmoid1(float x, float slope)
{
    const float d = slope * fabsf(x) + 1.0f;
    return 1.0f / (d * d);
}

/* c = pi alpha / 2, h = alpha / 2 */
static inline float arctan1(float x, float c, float h)
{
    const float z = c * x;
    return h / (1.0f + z * z);
}

static inline float triangle1(float x, float width)
{
    const float t = 1.0f - fabsf(x) / width;
    return t > 0.0f ? t / width : 0.0f;
}

float soma_surrogate_grad(const soma_surrogate *s, float x)
{
    switch (s->kind) {
    case SOMA_SURR_MULTIGAUSS: {
        const mg_consts c = mg_prepare(s);
        return mg1(x, &c);
    }
    case SOMA_SURR_FAST_SIGMOID: return fast_sigmoid1(x, s->slope);
    case SOMA_SURR_ARCTAN:
        return arctan1(x, (float)(3.14159265358979323846 * s->slope / 2.0), 0.5f * s->slope);
    case SOMA_SURR_TRIANGLE: return triangle1(x, s->width);
    case SOMA_SURR_STRAIGHT: return 1.0f;
    case SOMA_SURR_NONE:
    default: return 0.0f;
    }
}

SOMA_SIMD_CLONES
void soma__surrogate_grad_n(float *g, const float *x, size_t n, const soma_surrogate *s)
{
    switch (s->kind) {
    case SOMA_SURR_MULTIGAUSS: {
        const mg_consts c = mg_prepare(s);
        _Pragma("omp simd")
        for (size_t i = 0; i < n; i++) g[i] = mg1(x[i], &c);
        break;
    }
    case SOMA_SURR_FAST_SIGMOID: {
        const float slope = s->slope;
        for (size_t i = 0; i < n; i++) g[i] = fast_sigmoid1(x[i], slope);
        break;
    }
    case SOMA_SURR_ARCTAN: {
        const float c = (float)(3.14159265358979323846 * s->slope / 2.0), h = 0.5f * s->slope;
        for (size_t i = 0; i < n; i++) g[i] = arctan1(x[i], c, h);
        break;
    }
    case SOMA_SURR_TRIANGLE: {
        const float w = s->width;
        for (size_t i = 0; i < n; i++) g[i] = triangle1(x[i], w);
        break;
    }
    case SOMA_SURR_STRAIGHT:
        for (size_t i = 0; i < n; i++) g[i] = 1.0f;
        break;
    case SOMA_SURR_NONE:
    default:
        for (size_t i = 0; i < n; i++) g[i] = 0.0f;
        break;
    }
}
