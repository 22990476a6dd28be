/*
 * init.c - weight initialisers, drawn from the library's one RNG so a seed
 * gives the same weights on every platform.
 *
 *   torch            U(-a, a), a = 1/sqrt(fan_in)
 *   xavier_uniform   U(-a, a), a = sqrt(6 / (fan_in + fan_out))
 *   xavier_normal    N(0, s^2), s = sqrt(2 / (fan_in + fan_out))
 *   kaiming_uniform  U(-a, a), a = sqrt(6 / fan_in)       (gain sqrt(2), ReLU)
 *   kaiming_normal   N(0, s^2), s = sqrt(2 / fan_in)
 *   unit             U(-1, 1), then every run of fan_in values (an output
 *                    unit's weights: a dense row, a conv filter) scaled to
 *                    unit L2 norm (Xiao et al.'s IDE code; the net applies
 *                    it to all but its readout layer, see net.c)
 *
 * "torch" is PyTorch's default for nn.Linear and nn.Conv2d weights,
 * kaiming_uniform_(a = sqrt(5)): gain sqrt(2 / (1 + 5)) times sqrt(3/fan_in)
 * is 1/sqrt(fan_in).  PyTorch draws the bias from the same U(-a, a); callers
 * do that by filling the bias with kind SOMA_INIT_TORCH and the weight's
 * fan_in.  For a conv weight (O,C,KH,KW), fan_in = C*KH*KW and
 * fan_out = O*KH*KW, as PyTorch computes them.
 *
 * Preconditions: fan_in > 0, and fan_in + fan_out > 0 for the xavier kinds.
 * Values are drawn in index order: w[i] = (2u - 1) a for the uniform kinds.
 */
#include "../soma_internal.h"
#include <math.h>
#include <string.h>

static const char *const init_names[SOMA_INIT_COUNT] = {
    [SOMA_INIT_TORCH] = "torch",
    [SOMA_INIT_XAVIER_UNIFORM] = "xavier_uniform",
    [SOMA_INIT_XAVIER_NORMAL] = "xavier_normal",
    [SOMA_INIT_KAIMING_UNIFORM] = "kaiming_uniform",
    [SOMA_INIT_KAIMING_NORMAL] = "kaiming_normal",
    [SOMA_INIT_UNIT] = "unit",
};

/* "unknown" for a value outside the enum. */
const char *soma_init_name(soma_init i)
{
    return ((unsigned)i < SOMA_INIT_COUNT) ? init_names[i] : "unknown";
}

soma_status soma_init_from_name(soma_init *out, const char *name)
{
    for (int i = 0; name && i < SOMA_INIT_COUNT; i++)
        if (strcmp(name, init_names[i]) == 0) { *out = (soma_init)i; return SOMA_OK; }
    return soma__fail(SOMA_ERR_ARG, "unknown initialiser '%s' (valid: torch, "
                      "xavier_uniform, xavier_normal, kaiming_uniform, kaiming_normal, unit)",
                      name ? name : "(null)");
}

void soma_init_fill(float *w, size_t n, int fan_in, int fan_out, soma_init kind,
                    soma_rng *rng)
{
    double scale;   /* the uniform bound a, or the normal standard deviation */
    int normal = 0;
    switch (kind) {
    case SOMA_INIT_XAVIER_UNIFORM: scale = sqrt(6.0 / ((double)fan_in + fan_out)); break;
    case SOMA_INIT_XAVIER_NORMAL:
        scale = sqrt(2.0 / ((double)fan_in + fan_out)); normal = 1; break;
    case SOMA_INIT_KAIMING_UNIFORM: scale = sqrt(6.0 / fan_in); break;
    case SOMA_INIT_KAIMING_NORMAL: scale = sqrt(2.0 / fan_in); normal = 1; break;
    case SOMA_INIT_UNIT:
        for (size_t i = 0; i < n; i++) w[i] = 2.0f * soma_rng_uniform(rng) - 1.0f;
        for (size_t r = 0; r < n; r += (size_t)fan_in) {   /* a short last run: its own unit */
            size_t len = n - r < (size_t)fan_in ? n - r : (size_t)fan_in;
            double ss = 0;
            for (size_t j = 0; j < len; j++) ss += (double)w[r + j] * w[r + j];
            double inv = ss > 1e-24 ? 1.0 / sqrt(ss) : 1.0;
            for (size_t j = 0; j < len; j++) w[r + j] = (float)(w[r + j] * inv);
        }
        return;
    case SOMA_INIT_TORCH:
    default: scale = 1.0 / sqrt((double)fan_in); break;
    }
    const float k = (float)scale;
    if (normal)
        for (size_t i = 0; i < n; i++) w[i] = k * soma_rng_normal(rng);
    else
        for (size_t i = 0; i < n; i++) w[i] = (2.0f * soma_rng_uniform(rng) - 1.0f) * k;
}
