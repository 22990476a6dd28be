/*
 * blas.c - the BLAS seam: row-major GEMM/GEMV through OpenBLAS's CBLAS,
 * with the plain-loop reference kept beside it (tests compare the two).
 */
#include "../soma_internal.h"
#include <cblas.h>

/* Rank-deficient shapes go to Level-2 BLAS: at batch 1 (online learning)
 * every dense forward is a GEMV and every weight gradient an outer product,
 * and sgemm's packing costs more than the arithmetic there. */
static void zero_or_scale(float *C, int ldc, int M, int N, float beta)
{
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            float *c = &C[(size_t)i * ldc + j];
            *c = beta == 0.0f ? 0.0f : beta * *c;   /* beta 0: ignore what C held (BLAS rule) */
        }
}

void soma_gemm(int trans_a, int trans_b, int M, int N, int K,
               float alpha, const float *A, int lda, const float *B, int ldb,
               float beta, float *C, int ldc)
{
    if (M <= 0 || N <= 0) return;
    if (K <= 0) { zero_or_scale(C, ldc, M, N, beta); return; }
    if (M == 1) {
        /* C(1,N) = alpha a op(B) + beta C, a = op(A)'s only row */
        int inca = trans_a ? lda : 1;
        if (beta == 0.0f) zero_or_scale(C, ldc, 1, N, 0.0f);
        if (trans_b) cblas_sgemv(CblasRowMajor, CblasNoTrans, N, K, alpha, B, ldb, A, inca, beta, C, 1);
        else cblas_sgemv(CblasRowMajor, CblasTrans, K, N, alpha, B, ldb, A, inca, beta, C, 1);
        return;
    }
    if (N == 1) {
        /* C(M,1) = alpha op(A) b + beta C, b = op(B)'s only column */
        int incb = trans_b ? 1 : ldb;
        if (beta == 0.0f) zero_or_scale(C, ldc, M, 1, 0.0f);
        if (trans_a) cblas_sgemv(CblasRowMajor, CblasTrans, K, M, alpha, A, lda, B, incb, beta, C, ldc);
        else cblas_sgemv(CblasRowMajor, CblasNoTrans, M, K, alpha, A, lda, B, incb, beta, C, ldc);
        return;
    }
    if (K == 1) {
        /* C(M,N) = alpha a b^T + beta C: an outer product */
        int inca = trans_a ? 1 : lda, incb = trans_b ? ldb : 1;
        if (beta != 1.0f) zero_or_scale(C, ldc, M, N, beta);
        cblas_sger(CblasRowMajor, M, N, alpha, A, inca, B, incb, C, ldc);
        return;
    }
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda, B,
                ldb, beta, C, ldc);
}

void soma_gemm_naive(int trans_a, int trans_b, int M, int N, int K,
                     float alpha, const float *A, int lda, const float *B, int ldb,
                     float beta, float *C, int ldc)
{
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double acc = 0;
            for (int k = 0; k < K; k++) {
                float a = trans_a ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k];
                float b = trans_b ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j];
                acc += (double)a * b;
            }
            float *c = &C[(size_t)i * ldc + j];
            *c = (float)(alpha * acc + (beta == 0.0f ? 0.0 : (double)beta * *c));
        }
}

void soma_gemv(int trans_a, int M, int N, float alpha, const float *A, int lda,
               const float *x, float beta, float *y)
{
    cblas_sgemv(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, M, N, alpha,
                A, lda, x, 1, beta, y, 1);
}
