/*
 * adding.c - the adding problem (Hochreiter & Schmidhuber 1997), as the
 * FPTT experiments generate it.
 *
 * Both FPTT code bases (anilkagak2/FPTT and byin-cwi/sFPTT, datasets.py,
 * adding_problem_generator; notes/fptt.md 1 and 2.6) draw, per sequence of
 * length T: T values uniform in [0, 1), one marker position uniform in
 * [0, floor(T/2)) and one uniform in [ceil(T/2), T); the target is the sum
 * of the two marked values.  For odd T the middle step can never be marked;
 * we keep that, so a given T means the same task as in the reference.
 *
 * Layout: x(B, T, 2) with x[b, t, 0] the value and x[b, t, 1] the marker
 * (0 or 1), matching the reference's np.append(X_num, X_mask, axis=2);
 * y(B).  Draw order, per sequence: its T values, then the first position,
 * then the second, so a seed fixes the whole batch.
 */
#include "../soma_internal.h"

soma_status soma_adding_batch(float *x, float *y, int B, int T, soma_rng *rng)
{
    if (!x || !y || !rng)
        return soma__fail(SOMA_ERR_ARG, "soma_adding_batch: %s is NULL",
                          !x ? "x" : !y ? "y" : "rng");
    if (B <= 0) return soma__fail(SOMA_ERR_ARG, "adding task: B must be > 0, got %d", B);
    /* Each half must hold a marker: floor(T/2) >= 1. */
    if (T < 2)
        return soma__fail(SOMA_ERR_ARG, "adding task: T must be >= 2 (one marker per half), got %d", T);

    const uint32_t first_end = (uint32_t)T / 2;              /* floor(T/2) */
    const uint32_t second_start = (uint32_t)T - (uint32_t)T / 2; /* ceil(T/2) */
    for (int b = 0; b < B; b++) {
        float *xb = x + (size_t)b * (size_t)T * 2;
        for (int t = 0; t < T; t++) {
            xb[2 * t] = soma_rng_uniform(rng);
            xb[2 * t + 1] = 0.0f;
        }
        uint32_t p1 = soma_rng_below(rng, first_end);
        uint32_t p2 = second_start + soma_rng_below(rng, (uint32_t)T - second_start);
        xb[2 * (size_t)p1 + 1] = 1.0f;
        xb[2 * (size_t)p2 + 1] = 1.0f;
        y[b] = xb[2 * (size_t)p1] + xb[2 * (size_t)p2];
    }
    return SOMA_OK;
}
