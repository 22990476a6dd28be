/*
 * loss.c - losses with PyTorch's reduction='mean', and their gradients.
 *
 *   cross-entropy  mean_b [ logsumexp(z_b) - z_b[label_b] ]        over B rows
 *   MSE            mean_{b,i} (y - t)^2                             over B*N
 *   BCE (logits)   mean_{b,i} max(z,0) - z t + log(1 + e^-|z|)      over B*N
 *
 * The stable forms never exponentiate a positive number.  Forward sums run
 * sequentially in double so the loss does not depend on the thread count.
 * Backward passes scale the gradient by `scale` (1 for a plain loss; a rule
 * may weight it, e.g. EP's beta) and accumulate.
 *
 * Labels are not checked against [0, C) here in a way the caller can see:
 * the data loader validates them.  As a last line of defence a label out of
 * range makes soma_ce_forward return NaN (caught by the NaN check on the
 * loss) and is skipped, never used as an index, by soma_ce_backward.
 */
#include "../soma_internal.h"
#include <math.h>

/* Below this many elements a parallel region costs more than it saves. */
enum { PAR_MIN = 1 << 15 };

/* logits(B,C), labels(B) -> probs(B,C) = softmax (may be NULL); returns the
 * mean cross-entropy. */
float soma_ce_forward(float *probs, const float *logits, const int32_t *labels,
                      int B, int C)
{
    double total = 0.0;
    int bad = 0;
    for (int r = 0; r < B; r++) {
        const float *z = logits + (size_t)r * C;
        float m = z[0];
        for (int c = 1; c < C; c++) if (z[c] > m) m = z[c];
        double sum = 0.0;
        for (int c = 0; c < C; c++) sum += exp((double)z[c] - m);
        double lse = m + log(sum);
        if (probs) {
            float *p = probs + (size_t)r * C;
            for (int c = 0; c < C; c++) p[c] = (float)(exp((double)z[c] - lse));
        }
        int32_t l = labels[r];
        if (l < 0 || l >= C) { bad = 1; continue; }
        total += lse - z[l];
    }
    return bad ? NAN : (float)(total / B);
}

/* probs(B,C) from the forward pass -> dlogits(B,C) += scale (probs - onehot) / B */
void soma_ce_backward(float *dlogits, const float *probs, const int32_t *labels,
                      int B, int C, float scale)
{
    if (!dlogits) return;
    const float k = scale / (float)B;
#pragma omp parallel for schedule(static) if ((size_t)B * C >= PAR_MIN)
    for (int r = 0; r < B; r++) {
        const float *p = probs + (size_t)r * C;
        float *d = dlogits + (size_t)r * C;
        int32_t l = labels[r];
        for (int c = 0; c < C; c++) d[c] += k * (p[c] - (c == l ? 1.0f : 0.0f));
    }
}

/* y(B,N), t(B,N) -> mean (y - t)^2 over all B*N values. */
float soma_mse_forward(const float *y, const float *t, int B, int N)
{
    const size_t n = (size_t)B * N;
    double acc = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)y[i] - t[i];
        acc += d * d;
    }
    return (float)(acc / (double)n);
}

/* dy(B,N) += scale * 2 (y - t) / (B*N) */
void soma_mse_backward(float *dy, const float *y, const float *t, int B, int N, float scale)
{
    if (!dy) return;
    const size_t n = (size_t)B * N;
    const float k = 2.0f * scale / (float)n;
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) dy[i] += k * (y[i] - t[i]);
}

/* z(B,N) logits, t(B,N) targets in [0,1] -> mean BCE(sigmoid(z), t) computed
 * as max(z,0) - z t + log1p(e^-|z|), which equals
 * -t log s(z) - (1-t) log(1 - s(z)) without overflow or log(0). */
float soma_bce_logits_forward(const float *z, const float *t, int B, int N)
{
    const size_t n = (size_t)B * N;
    double acc = 0.0;
    for (size_t i = 0; i < n; i++) {
        double zi = z[i];
        acc += (zi > 0.0 ? zi : 0.0) - zi * t[i] + log1p(exp(-fabs(zi)));
    }
    return (float)(acc / (double)n);
}

/* dz(B,N) += scale * (sigmoid(z) - t) / (B*N) */
void soma_bce_logits_backward(float *dz, const float *z, const float *t, int B, int N,
                              float scale)
{
    if (!dz) return;
    const size_t n = (size_t)B * N;
    const float k = scale / (float)n;
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        /* stable sigmoid: exponentiate -|z| only */
        float e = expf(-fabsf(z[i]));
        float s = z[i] >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
        dz[i] += k * (s - t[i]);
    }
}
