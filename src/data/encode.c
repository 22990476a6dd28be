/*
 * encode.c - static samples x(B, D) into T time steps for recurrent and
 * spiking networks.
 *
 *   DIRECT      x_t = x                      (analog current every step)
 *   POISSON     x_t = [u < clamp(gain x)]    (rate coding, R-MNIST style)
 *   SEQUENTIAL  x_t = x[:, t], T = D         (S-MNIST: one pixel per step)
 *   PERMUTED    x_t = x[:, perm[t]], T = D   (PS-MNIST)
 *   FRAMES      x_t = x[:, tF : (t+1)F]      (F = D/T: a sample is T frames
 *                                            stored one after another, N-MNIST)
 *
 * S/PS-MNIST follow the FPTT code (notes/fptt.md 2.2): pixels in [0,1] fed
 * row-major, one value per step; PS-MNIST applies one fixed permutation.
 * The reference draws that permutation from numpy's unseeded global RNG, so
 * it changes between runs; soma draws it from soma_rng seeded with the
 * encoder's seed (Fisher-Yates via soma_rng_shuffle_u32), so a seed names
 * the permutation and a resumed or re-evaluated run sees the same one.
 *
 * Poisson coding draws exactly one uniform per element per step, in
 * row-major (b, i) order, whatever the rate: the stream a caller's rng
 * advances by is B*D per step, so runs are reproducible independent of
 * the pixel values.  u in [0,1) with 24 bits makes p = 0 never fire and
 * p = 1 always fire.
 */
#include "../soma_internal.h"
#include <math.h>
#include <string.h>

struct soma_encoder {
    soma_encoding kind;
    int D, T;
    float gain;
    uint32_t *perm;   /* D entries, PERMUTED only */
};

static const char *const enc_names[SOMA_ENC_COUNT] = {
    [SOMA_ENC_DIRECT] = "direct",
    [SOMA_ENC_POISSON] = "poisson",
    [SOMA_ENC_SEQUENTIAL] = "sequential",
    [SOMA_ENC_PERMUTED] = "permuted",
    [SOMA_ENC_FRAMES] = "frames",
};

#define VALID_ENCODINGS "direct, poisson, sequential, permuted, frames"

const char *soma_encoding_name(soma_encoding e)
{
    if ((int)e < 0 || (int)e >= SOMA_ENC_COUNT) return "unknown";
    return enc_names[e];
}

soma_status soma_encoding_from_name(soma_encoding *out, const char *name)
{
    if (!out) return soma__fail(SOMA_ERR_ARG, "soma_encoding_from_name: out is NULL");
    for (int k = 0; name && k < SOMA_ENC_COUNT; k++)
        if (strcmp(name, enc_names[k]) == 0) { *out = (soma_encoding)k; return SOMA_OK; }
    return soma__fail(SOMA_ERR_ARG, "unknown encoding '%s' (valid: " VALID_ENCODINGS ")",
                      name ? name : "(null)");
}

soma_status soma_encoder_new(soma_encoder **out, soma_encoding kind, int D, int T,
                             uint64_t seed, float gain)
{
    if (!out) return soma__fail(SOMA_ERR_ARG, "soma_encoder_new: out is NULL");
    *out = NULL;
    if ((int)kind < 0 || (int)kind >= SOMA_ENC_COUNT)
        return soma__fail(SOMA_ERR_ARG, "encoding %d is not one of " VALID_ENCODINGS, (int)kind);
    if (D <= 0) return soma__fail(SOMA_ERR_ARG, "encoder: D (values per sample) must be > 0, got %d", D);
    if (T <= 0) return soma__fail(SOMA_ERR_ARG, "encoder: T must be > 0, got %d", T);
    /* One value per step: a T other than D would drop or invent pixels. */
    if ((kind == SOMA_ENC_SEQUENTIAL || kind == SOMA_ENC_PERMUTED) && T != D)
        return soma__fail(SOMA_ERR_ARG,
                          "encoder %s: T must equal D (one value per step), got T=%d, D=%d",
                          enc_names[kind], T, D);
    /* T equal blocks: a remainder would be dropped or split unevenly. */
    if (kind == SOMA_ENC_FRAMES && D % T)
        return soma__fail(SOMA_ERR_ARG,
                          "encoder frames: D must be a multiple of T (T frames of D/T values), "
                          "got D=%d, T=%d", D, T);
    /* gain is read only by POISSON; other kinds ignore it, so a caller that
     * passes 0 for "unused" is not refused.  !(gain > 0) also catches NaN. */
    if (kind == SOMA_ENC_POISSON && (!(gain > 0) || isinf(gain)))
        return soma__fail(SOMA_ERR_ARG, "encoder poisson: gain must be > 0 and finite, got %g",
                          (double)gain);

    soma_encoder *e = soma__calloc(1, sizeof *e);
    if (!e) return SOMA_ERR_NOMEM;
    e->kind = kind;
    e->D = D;
    e->T = T;
    e->gain = gain;
    if (kind == SOMA_ENC_PERMUTED) {
        e->perm = soma__malloc((size_t)D * sizeof *e->perm);
        if (!e->perm) { soma__free(e); return SOMA_ERR_NOMEM; }
        for (int i = 0; i < D; i++) e->perm[i] = (uint32_t)i;
        soma_rng r;
        soma_rng_seed(&r, seed);
        soma_rng_shuffle_u32(&r, e->perm, (size_t)D);
    }
    *out = e;
    return SOMA_OK;
}

void soma_encoder_free(soma_encoder *e)
{
    if (!e) return;
    soma__free(e->perm);
    soma__free(e);
}

int soma_encoder_steps(const soma_encoder *e) { return e ? e->T : 0; }

int soma_encoder_step_size(const soma_encoder *e)
{
    if (!e) return 0;
    if (e->kind == SOMA_ENC_SEQUENTIAL || e->kind == SOMA_ENC_PERMUTED) return 1;
    if (e->kind == SOMA_ENC_FRAMES) return e->D / e->T;
    return e->D;
}

const uint32_t *soma_encoder_permutation(const soma_encoder *e)
{
    return e ? e->perm : NULL;
}

void soma_encode_step(const soma_encoder *e, float *xt, const float *x, int B, int t,
                      soma_rng *rng)
{
    /* The API returns nothing (this runs once per step in the hot loop), so
     * a broken precondition writes zeros where it can and records an error
     * rather than reading out of bounds. */
    if (!e || !xt || !x || B < 0 || t < 0 || t >= e->T ||
        (e->kind == SOMA_ENC_POISSON && !rng)) {
        if (e && xt && B > 0) memset(xt, 0, (size_t)B * (size_t)soma_encoder_step_size(e) * sizeof *xt);
        soma__fail(SOMA_ERR_ARG, "soma_encode_step: %s",
                   !e ? "encoder is NULL" : !xt ? "xt is NULL" : !x ? "x is NULL"
                   : B < 0 ? "B < 0" : (t < 0 || t >= e->T) ? "step t outside [0, T)"
                   : "rng is NULL (POISSON needs one)");
        return;
    }
    const size_t D = (size_t)e->D, nb = (size_t)B;
    switch (e->kind) {
    case SOMA_ENC_DIRECT:
        memmove(xt, x, nb * D * sizeof *xt);   /* x == xt is harmless */
        break;
    case SOMA_ENC_POISSON:
        for (size_t i = 0; i < nb * D; i++) {
            float p = e->gain * x[i];
            /* clamp; NaN (p > 0 false) never fires */
            p = p > 0 ? (p < 1 ? p : 1) : 0;
            xt[i] = soma_rng_uniform(rng) < p ? 1.0f : 0.0f;
        }
        break;
    case SOMA_ENC_SEQUENTIAL:
        for (size_t b = 0; b < nb; b++) xt[b] = x[b * D + (size_t)t];
        break;
    case SOMA_ENC_PERMUTED: {
        const size_t j = e->perm[t];
        for (size_t b = 0; b < nb; b++) xt[b] = x[b * D + j];
        break;
    }
    case SOMA_ENC_FRAMES: {
        const size_t F = D / (size_t)e->T, off = (size_t)t * F;
        for (size_t b = 0; b < nb; b++) memcpy(xt + b * F, x + b * D + off, F * sizeof *xt);
        break;
    }
    default:
        break;
    }
}
