/*
 * pool.c - max and average pooling over square windows, no padding
 * (torch.nn.MaxPool2d / AvgPool2d with padding 0, ceil_mode False).
 *
 *   OH = (H - k) / stride + 1, OW = (W - k) / stride + 1
 *
 * Work is split over the B*C planes; windows may overlap (stride < k), but
 * every write of a backward pass stays inside its own plane, so the planes
 * can run in parallel without races and with a fixed order inside each.
 */
#include "../soma_internal.h"
#include <math.h>

/* Below this many reads a parallel region costs more than it saves. */
enum { PAR_MIN = 1 << 15 };

soma_status soma_pool_shape_init(soma_pool_shape *s, int B, int C, int H, int W,
                                 int k, int stride)
{
    if (B <= 0 || C <= 0 || H <= 0 || W <= 0)
        return soma__fail(SOMA_ERR_SHAPE, "pool: input (B,C,H,W) = (%d,%d,%d,%d) "
                          "must be positive", B, C, H, W);
    if (k <= 0 || stride <= 0)
        return soma__fail(SOMA_ERR_SHAPE, "pool: window %d and stride %d must be > 0",
                          k, stride);
    if (k > H || k > W)
        return soma__fail(SOMA_ERR_SHAPE, "pool: output would be empty: input %dx%d "
                          "is smaller than the window %dx%d", H, W, k, k);
    /* max-pool indices are int32 offsets within a plane */
    if ((int64_t)H * W > INT32_MAX)
        return soma__fail(SOMA_ERR_SHAPE, "pool: plane %dx%d too large", H, W);
    *s = (soma_pool_shape){ .B = B, .C = C, .H = H, .W = W, .k = k, .stride = stride,
                            .OH = (H - k) / stride + 1, .OW = (W - k) / stride + 1 };
    return SOMA_OK;
}

/* x(B,C,H,W) -> y(B,C,OH,OW) and idx(B,C,OH,OW) = h*W+w of the winner.
 * Window scanned row-major with a strict '>', so the first maximum wins
 * ties; a NaN wins over numbers, so NaN propagates as in PyTorch.
 * idx may be NULL when no backward pass follows (evaluation). */
void soma_maxpool_forward(float *y, int32_t *idx, const float *x, const soma_pool_shape *s)
{
    const int planes = s->B * s->C, H = s->H, W = s->W, OH = s->OH, OW = s->OW;
    const size_t in = (size_t)H * W, out = (size_t)OH * OW;
#pragma omp parallel for schedule(static) if ((size_t)planes * out * s->k * s->k >= PAR_MIN)
    for (int pl = 0; pl < planes; pl++) {
        const float *xp = x + pl * in;
        for (int oh = 0; oh < OH; oh++)
            for (int ow = 0; ow < OW; ow++) {
                int h0 = oh * s->stride, w0 = ow * s->stride;
                int best = h0 * W + w0;
                float m = xp[best];
                for (int i = 0; i < s->k; i++)
                    for (int j = 0; j < s->k; j++) {
                        int at = (h0 + i) * W + (w0 + j);
                        float v = xp[at];
                        if (v > m || (isnan(v) && !isnan(m))) { m = v; best = at; }
                    }
                y[pl * out + (size_t)oh * OW + ow] = m;
                if (idx) idx[pl * out + (size_t)oh * OW + ow] = best;
            }
    }
}

/* dy(B,C,OH,OW), idx from the forward pass -> dx(B,C,H,W) += dy at idx. */
void soma_maxpool_backward(float *dx, const float *dy, const int32_t *idx,
                           const soma_pool_shape *s)
{
    const int planes = s->B * s->C;
    const size_t in = (size_t)s->H * s->W, out = (size_t)s->OH * s->OW;
    /* from y = x[idx]: the gradient goes to the winner only */
#pragma omp parallel for schedule(static) if ((size_t)planes * out >= PAR_MIN)
    for (int pl = 0; pl < planes; pl++)
        for (size_t o = 0; o < out; o++)
            dx[pl * in + (size_t)idx[pl * out + o]] += dy[pl * out + o];
}

/* x(B,C,H,W) -> y(B,C,OH,OW) = mean of each k x k window. */
void soma_avgpool_forward(float *y, const float *x, const soma_pool_shape *s)
{
    const int planes = s->B * s->C, W = s->W, OH = s->OH, OW = s->OW, k = s->k;
    const size_t in = (size_t)s->H * W, out = (size_t)OH * OW;
    const float inv = 1.0f / (float)(k * k);
#pragma omp parallel for schedule(static) if ((size_t)planes * out * k * k >= PAR_MIN)
    for (int pl = 0; pl < planes; pl++) {
        const float *xp = x + pl * in;
        for (int oh = 0; oh < OH; oh++)
            for (int ow = 0; ow < OW; ow++) {
                const float *x0 = xp + (size_t)oh * s->stride * W + (size_t)ow * s->stride;
                float acc = 0.0f;
                for (int i = 0; i < k; i++)
                    for (int j = 0; j < k; j++) acc += x0[(size_t)i * W + j];
                y[pl * out + (size_t)oh * OW + ow] = acc * inv;
            }
    }
}

/* dy(B,C,OH,OW) -> dx(B,C,H,W) += dy / k^2 over each window. */
void soma_avgpool_backward(float *dx, const float *dy, const soma_pool_shape *s)
{
    const int planes = s->B * s->C, W = s->W, OH = s->OH, OW = s->OW, k = s->k;
    const size_t in = (size_t)s->H * W, out = (size_t)OH * OW;
    const float inv = 1.0f / (float)(k * k);
    /* from y = inv * sum(window): each window member gets inv * dy */
#pragma omp parallel for schedule(static) if ((size_t)planes * out * k * k >= PAR_MIN)
    for (int pl = 0; pl < planes; pl++) {
        float *dxp = dx + pl * in;
        for (int oh = 0; oh < OH; oh++)
            for (int ow = 0; ow < OW; ow++) {
                float g = dy[pl * out + (size_t)oh * OW + ow] * inv;
                float *d0 = dxp + (size_t)oh * s->stride * W + (size_t)ow * s->stride;
                for (int i = 0; i < k; i++)
                    for (int j = 0; j < k; j++) d0[(size_t)i * W + j] += g;
            }
    }
}
