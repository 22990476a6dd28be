/*
 * conv2d.c - 2-D convolution (cross-correlation, as torch.nn.Conv2d) as
 * im2col + GEMM, with its backward and a plain-loop reference.
 *
 *   y[b,o,oh,ow] = bias[o] + sum_{c,kh,kw} w[o,c,kh,kw] *
 *                  x[b, c, oh*stride - pad + kh, ow*stride - pad + kw]
 *
 * (zero outside the input).  Per sample, im2col unrolls x into
 * col(K, P) with K = C*KH*KW rows ordered (c,kh,kw) like w's last three
 * dimensions and P = OH*OW columns, so the layer is one GEMM:
 * y_b(O,P) = w(O,K) col(K,P).
 *
 * Threads and workspace: the forward pass and the dx part of the backward
 * pass run `#pragma omp parallel for` over the batch, and the thread with
 * OpenMP number t uses floats [t*K*P, (t+1)*K*P) of ws.  A team never has
 * more threads than omp_get_max_threads() of the calling thread, so ws must
 * hold soma_conv2d_workspace(s, omp_get_max_threads()) floats, which is what
 * soma_conv2d_workspace(s, 0) returns.  (soma_set_threads(n) makes that n.)
 * dw is accumulated over the batch sequentially, one GEMM with beta = 1 per
 * sample, so its summation order is fixed: the result does not depend on
 * how OpenMP schedules the samples, and there are no races on dw.
 *
 * A 1x1 kernel with stride 1 and no padding needs no im2col: col is x_b.
 */
#include "../soma_internal.h"
#ifdef _OPENMP
#include <omp.h>
#endif

static int thread_num(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

static int max_threads(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

soma_status soma_conv_shape_init(soma_conv_shape *s, int B, int C, int H, int W,
                                 int O, int KH, int KW, int stride, int pad)
{
    if (B <= 0 || C <= 0 || H <= 0 || W <= 0)
        return soma__fail(SOMA_ERR_SHAPE, "conv2d: input (B,C,H,W) = (%d,%d,%d,%d) "
                          "must be positive", B, C, H, W);
    if (O <= 0 || KH <= 0 || KW <= 0)
        return soma__fail(SOMA_ERR_SHAPE, "conv2d: filters (O,KH,KW) = (%d,%d,%d) "
                          "must be positive", O, KH, KW);
    if (stride <= 0 || pad < 0)
        return soma__fail(SOMA_ERR_SHAPE, "conv2d: stride %d must be > 0 and pad %d "
                          ">= 0", stride, pad);
    /* int64 so that H + 2*pad cannot overflow */
    int64_t hp = (int64_t)H + 2 * (int64_t)pad, wp = (int64_t)W + 2 * (int64_t)pad;
    if (hp < KH || wp < KW)
        return soma__fail(SOMA_ERR_SHAPE, "conv2d: output would be empty: padded input "
                          "%lldx%lld (H %d, W %d, pad %d) is smaller than the kernel "
                          "%dx%d", (long long)hp, (long long)wp, H, W, pad, KH, KW);
    int64_t oh = (hp - KH) / stride + 1, ow = (wp - KW) / stride + 1;
    /* the GEMM dimensions are ints: K = C*KH*KW and P = OH*OW must fit */
    if (oh * ow > INT32_MAX || (int64_t)C * KH * KW > INT32_MAX)
        return soma__fail(SOMA_ERR_SHAPE, "conv2d: output %lldx%lld or kernel volume "
                          "%dx%dx%d too large", (long long)oh, (long long)ow, C, KH, KW);
    *s = (soma_conv_shape){ .B = B, .C = C, .H = H, .W = W, .O = O, .KH = KH,
                            .KW = KW, .stride = stride, .pad = pad,
                            .OH = (int)oh, .OW = (int)ow };
    return SOMA_OK;
}

/* threads <= 0 means omp_get_max_threads() of the calling thread now. */
size_t soma_conv2d_workspace(const soma_conv_shape *s, int threads)
{
    if (threads <= 0) threads = max_threads();
    return (size_t)threads * s->C * s->KH * s->KW * s->OH * s->OW;
}

static int is_pointwise(const soma_conv_shape *s)
{
    return s->KH == 1 && s->KW == 1 && s->stride == 1 && s->pad == 0;
}

/* The output columns ow of a kernel tap kw whose input column
 * iw = ow stride - pad + kw falls inside [0, W): [*lo, *hi). */
static void tap_columns(int kw, const soma_conv_shape *s, int *lo, int *hi)
{
    const int st = s->stride, off = kw - s->pad;
    int a, b;
    if (st == 1) {   /* no divisions: this runs C*KH*KW times per sample (profiled: 8 % of IDE) */
        a = off >= 0 ? 0 : -off;
        b = s->W - off < 0 ? 0 : s->W - off;
    } else {
        a = off >= 0 ? 0 : (-off + st - 1) / st;             /* first ow with iw >= 0 */
        b = s->W - 1 - off < 0 ? 0 : (s->W - 1 - off) / st + 1;   /* past the last iw < W */
    }
    *lo = a < s->OW ? a : s->OW;
    *hi = b < s->OW ? b : s->OW;
    if (*hi < *lo) *hi = *lo;
}

/* x(C,H,W) of one sample -> col(C*KH*KW, OH*OW), zeros where the window
 * hangs over the padding.  Branch-free inner loops over the valid columns (the padding ones are
 * zero / dropped), so they vectorise; every value and sum is the one the
 * per-column test gave. */
SOMA_SIMD_CLONES
static void im2col(float *restrict col, const float *restrict x, const soma_conv_shape *s)
{
    const int OH = s->OH, OW = s->OW, H = s->H, W = s->W, st = s->stride;
    const size_t P = (size_t)OH * OW;
    for (int c = 0; c < s->C; c++)
        for (int kh = 0; kh < s->KH; kh++)
            for (int kw = 0; kw < s->KW; kw++) {
                float *dst = col + ((size_t)(c * s->KH + kh) * s->KW + kw) * P;
                const float *xc = x + (size_t)c * H * W;
                int lo, hi;
                tap_columns(kw, s, &lo, &hi);
                const int off = kw - s->pad;
                for (int oh = 0; oh < OH; oh++) {
                    int ih = oh * st - s->pad + kh;
                    float *restrict d = dst + (size_t)oh * OW;
                    if (ih < 0 || ih >= H) {
                        for (int ow = 0; ow < OW; ow++) d[ow] = 0.0f;
                        continue;
                    }
                    const float *restrict xr = xc + (size_t)ih * W;
                    for (int ow = 0; ow < lo; ow++) d[ow] = 0.0f;
                    if (st == 1) {
                        _Pragma("omp simd")
                        for (int ow = lo; ow < hi; ow++) d[ow] = xr[ow + off];
                    } else {
                        for (int ow = lo; ow < hi; ow++) d[ow] = xr[ow * st + off];
                    }
                    for (int ow = hi; ow < OW; ow++) d[ow] = 0.0f;
                }
            }
}

/* The adjoint of im2col: dx(C,H,W) += scatter of dcol(C*KH*KW, OH*OW).
 * Entries that fell on the padding are dropped. */
SOMA_SIMD_CLONES
static void col2im_add(float *restrict dx, const float *restrict dcol, const soma_conv_shape *s)
{
    const int OH = s->OH, OW = s->OW, H = s->H, W = s->W, st = s->stride;
    const size_t P = (size_t)OH * OW;
    for (int c = 0; c < s->C; c++)
        for (int kh = 0; kh < s->KH; kh++)
            for (int kw = 0; kw < s->KW; kw++) {
                const float *src = dcol + ((size_t)(c * s->KH + kh) * s->KW + kw) * P;
                float *dxc = dx + (size_t)c * H * W;
                int lo, hi;
                tap_columns(kw, s, &lo, &hi);
                const int off = kw - s->pad;
                for (int oh = 0; oh < OH; oh++) {
                    int ih = oh * st - s->pad + kh;
                    if (ih < 0 || ih >= H) continue;
                    const float *restrict sr = src + (size_t)oh * OW;
                    float *restrict dr = dxc + (size_t)ih * W;
                    if (st == 1) {
                        _Pragma("omp simd")
                        for (int ow = lo; ow < hi; ow++) dr[ow + off] += sr[ow];
                    } else {
                        for (int ow = lo; ow < hi; ow++) dr[ow * st + off] += sr[ow];
                    }
                }
            }
}

/* x(B,C,H,W), w(O,C,KH,KW), b(O) or NULL -> y(B,O,OH,OW).
 * ws: soma_conv2d_workspace(s, omp_get_max_threads()) floats (see top). */
void soma_conv2d_forward(float *y, float *ws, const float *x, const float *w,
                         const float *b, const soma_conv_shape *s)
{
    const int K = s->C * s->KH * s->KW, P = s->OH * s->OW, O = s->O;
    const size_t xstride = (size_t)s->C * s->H * s->W, ystride = (size_t)O * P;
    const int direct = is_pointwise(s);

#pragma omp parallel for schedule(static) if (s->B > 1)
    for (int bi = 0; bi < s->B; bi++) {
        const float *xb = x + bi * xstride;
        float *yb = y + bi * ystride;
        const float *col = xb;
        if (!direct) {
            float *mine = ws + (size_t)thread_num() * K * P;
            im2col(mine, xb, s);
            col = mine;
        }
        /* y_b(O,P) = w(O,K) col(K,P) */
        soma_gemm(0, 0, O, P, K, 1.0f, w, K, col, P, 0.0f, yb, P);
        if (b)
            for (int o = 0; o < O; o++) {
                float *yo = yb + (size_t)o * P;
                for (int p = 0; p < P; p++) yo[p] += b[o];
            }
    }
}

/* dy(B,O,OH,OW), x(B,C,H,W), w(O,C,KH,KW) ->
 * dx(B,C,H,W) += conv-transpose of dy ; dw(O,C,KH,KW) += sum_b dy_b col_b^T ;
 * db(O) += sum over b,oh,ow of dy.  NULL outputs are skipped.
 * ws: as for the forward pass. */
void soma_conv2d_backward(float *dx, float *dw, float *db, float *ws,
                          const float *dy, const float *x, const float *w,
                          const soma_conv_shape *s)
{
    const int K = s->C * s->KH * s->KW, P = s->OH * s->OW, O = s->O;
    const size_t xstride = (size_t)s->C * s->H * s->W, ystride = (size_t)O * P;
    const int direct = is_pointwise(s);

    /* from y += b: sum each output plane; batch in order (deterministic) */
    if (db)
        for (int bi = 0; bi < s->B; bi++)
            for (int o = 0; o < O; o++) {
                const float *d = dy + bi * ystride + (size_t)o * P;
                float acc = 0.0f;
                for (int p = 0; p < P; p++) acc += d[p];
                db[o] += acc;
            }

    /* from y_b = w col_b: dcol_b = w^T dy_b, then col2im adds it into dx_b.
     * Samples touch disjoint parts of dx, so they can run in parallel. */
    if (dx) {
#pragma omp parallel for schedule(static) if (s->B > 1)
        for (int bi = 0; bi < s->B; bi++) {
            const float *dyb = dy + bi * ystride;
            float *dxb = dx + bi * xstride;
            if (direct) {
                soma_gemm(1, 0, K, P, O, 1.0f, w, K, dyb, P, 1.0f, dxb, P);
            } else {
                float *dcol = ws + (size_t)thread_num() * K * P;
                soma_gemm(1, 0, K, P, O, 1.0f, w, K, dyb, P, 0.0f, dcol, P);
                col2im_add(dxb, dcol, s);
            }
        }
    }

    /* from y_b = w col_b: dw += dy_b col_b^T, one sample after another so the
     * order of the float sums is fixed (and nothing races on dw). */
    if (dw)
        for (int bi = 0; bi < s->B; bi++) {
            const float *xb = x + bi * xstride;
            const float *col = xb;
            if (!direct) {
                im2col(ws, xb, s);
                col = ws;
            }
            soma_gemm(0, 1, O, K, P, 1.0f, dy + bi * ystride, P, col, P, 1.0f, dw, K);
        }
}

/* Same contract as soma_conv2d_forward, seven plain loops, double sums. */
void soma_conv2d_forward_naive(float *y, const float *x, const float *w,
                               const float *b, const soma_conv_shape *s)
{
    for (int bi = 0; bi < s->B; bi++)
        for (int o = 0; o < s->O; o++)
            for (int oh = 0; oh < s->OH; oh++)
                for (int ow = 0; ow < s->OW; ow++) {
                    double acc = b ? b[o] : 0.0;
                    for (int c = 0; c < s->C; c++)
                        for (int kh = 0; kh < s->KH; kh++)
                            for (int kw = 0; kw < s->KW; kw++) {
                                int ih = oh * s->stride - s->pad + kh;
                                int iw = ow * s->stride - s->pad + kw;
                                if (ih < 0 || ih >= s->H || iw < 0 || iw >= s->W) continue;
                                acc += (double)w[((size_t)(o * s->C + c) * s->KH + kh) * s->KW + kw] *
                                       x[(((size_t)bi * s->C + c) * s->H + ih) * s->W + iw];
                            }
                    y[(((size_t)bi * s->O + o) * s->OH + oh) * s->OW + ow] = (float)acc;
                }
}
