/*
 * dense.c - fully connected layer: y = x w^T + b, and its backward.
 *
 * All three products go through the BLAS seam (soma_gemm); the weight is
 * stored (O,I) like torch.nn.Linear so checkpoints map one to one.  Backward
 * accumulates with beta = 1, so a caller summing gradients over time steps
 * (BPTT) just calls it once per step.
 */
#include "../soma_internal.h"

/* y(B,O) = x(B,I) w(O,I)^T + b(O); b may be NULL (no bias). */
void soma_dense_forward(float *y, const float *x, const float *w, const float *b,
                        int B, int I, int O)
{
    soma_gemm(0, 1, B, O, I, 1.0f, x, I, w, I, 0.0f, y, O);
    if (!b) return;
    for (int r = 0; r < B; r++) {
        float *yr = y + (size_t)r * O;
        for (int o = 0; o < O; o++) yr[o] += b[o];
    }
}

/* dy(B,O), x(B,I), w(O,I) -> dx(B,I) += dy w ; dw(O,I) += dy^T x ;
 * db(O) += sum over the batch of dy.  NULL outputs are skipped. */
void soma_dense_backward(float *dx, float *dw, float *db, const float *dy,
                         const float *x, const float *w, int B, int I, int O)
{
    /* from y = x w^T: dL/dx = dy w */
    if (dx) soma_gemm(0, 0, B, I, O, 1.0f, dy, O, w, I, 1.0f, dx, I);
    /* from y = x w^T: dL/dw = dy^T x */
    if (dw) soma_gemm(1, 0, O, I, B, 1.0f, dy, O, x, I, 1.0f, dw, I);
    /* from y += b: column sums, batch in order so the result is deterministic */
    if (db)
        for (int r = 0; r < B; r++) {
            const float *dyr = dy + (size_t)r * O;
            for (int o = 0; o < O; o++) db[o] += dyr[o];
        }
}
