/*
 * bench_bp.c - speed of BP training on the MLP 784-512-512-10 (ReLU, SGD
 * momentum 0.9) on MNIST, next to OpenBLAS sgemm on the same GEMM shapes.
 *
 * One training step does these GEMMs (B = batch):
 *   forward   (B,784)x(784,512)  (B,512)x(512,512)  (B,512)x(512,10)
 *   backward  dW: (512,B)x(B,784) (512,B)x(B,512) (10,B)x(B,512)
 *             dX: (B,10)x(10,512) (B,512)x(512,512)      (no dX for the input)
 * Effective GFLOP/s = 2 * sum(M*N*K) / step time.  The sgemm reference times
 * exactly that GEMM sequence with cblas_sgemm on the same buffers' sizes, so
 * the ratio is "fraction of the pure-GEMM rate that a whole training step
 * keeps" (elementwise work, loss, optimizer and data included).
 *
 * usage: bench_bp BATCH THREADS STEPS [REPEATS [RULE [CLIP]]]   (one result line)
 *   RULE: bp (default) or lfp (LFP-epsilon: same net, same optimizer, its
 *   relevance pass in place of the gradient); CLIP: global-norm clip, 0 = off.
 */
#define BENCH_NAME "bench_bp"
#define BENCH_CBLAS
#include "bench_util.h"

typedef struct { int m, n, k, ta, tb; } gemm_shape;

int main(int argc, char **argv)
{
    soma_exec_tuned(argv);   /* as the CLI: OMP_WAIT_POLICY, OPENBLAS_CORETYPE */
    if (argc < 4) {
        fprintf(stderr, "usage: %s BATCH THREADS STEPS [REPEATS]\n", argv[0]);
        return 2;
    }
    int B = atoi(argv[1]), threads = atoi(argv[2]), steps = atoi(argv[3]);
    int repeats = argc > 4 ? atoi(argv[4]) : 5;
    const char *rule_name = argc > 5 ? argv[5] : "bp";
    float clip = argc > 6 ? (float)atof(argv[6]) : 0.0f;
    if (B <= 0 || threads <= 0 || steps <= 0 || repeats <= 0 || repeats > MAX_REPEATS) {
        fprintf(stderr, "bench_bp: arguments must be positive\n");
        return 2;
    }
    soma_set_threads(threads);

    soma_dataset *train, *test;
    if (open_mnist(&train, &test)) return 1;
    soma_net_options o;
    soma_net_options_default(&o);
    soma_net *net;
    if (soma_net_new(&net, "784-512-512-10", &o)) { fprintf(stderr, "%s\n", soma_last_error()); return 1; }
    soma_rule_config rc;
    soma_rule_config_default(&rc);
    rc.optim.lr = 0.001f; /* small enough that batch 1 with momentum stays finite */
    rc.optim.momentum = 0.9f;
    rc.clip_norm = clip;
    soma_rule *rule;
    if (soma_rule_new(&rule, rule_name, net, &rc, B)) { fprintf(stderr, "%s\n", soma_last_error()); return 1; }
    soma_loader_config lc = { .batch = B, .seed = 0, .shuffle = 1, .normalize = 1, .drop_last = 1 };
    soma_loader *ld;
    if (soma_loader_new(&ld, train, &lc)) { fprintf(stderr, "%s\n", soma_last_error()); return 1; }

    /* --- soma: whole training steps (loader included) --- */
    double times[MAX_REPEATS];
    int epoch = 0;
    soma_loader_start_epoch(ld, epoch);
    soma_batch b;
    for (int r = -1; r < repeats; r++) {          /* r = -1: warm-up */
        double t0 = now_s();
        for (int s = 0; s < steps; s++) {
            next_batch(ld, &epoch, &b);
            if (soma_rule_train_batch(rule, &b, rc.optim.lr, NULL, NULL)) {
                fprintf(stderr, "%s\n", soma_last_error());
                return 1;
            }
        }
        if (r >= 0) times[r] = (now_s() - t0) / steps;
    }
    double step_s = sort_median(times, repeats);

    /* --- sgemm alone on the same shapes --- */
    const gemm_shape g[] = {
        { B, 512, 784, 0, 1 }, { B, 512, 512, 0, 1 }, { B, 10, 512, 0, 1 },      /* forward */
        { 512, 784, B, 1, 0 }, { 512, 512, B, 1, 0 }, { 10, 512, B, 1, 0 },      /* dW */
        { B, 512, 10, 0, 0 }, { B, 512, 512, 0, 0 },                              /* dX */
    };
    int ng = (int)(sizeof g / sizeof *g);
    /* Distinct operands per GEMM, as in training (each layer has its own
     * weights and activations), so the reference is not flattered by one
     * cache-hot buffer reused eight times. */
    double flops = 0;
    float *A[8], *Bm[8], *C[8];
    for (int i = 0; i < ng; i++) {
        flops += 2.0 * g[i].m * g[i].n * g[i].k;
        size_t na = (size_t)g[i].m * g[i].k, nb = (size_t)g[i].k * g[i].n, nc = (size_t)g[i].m * g[i].n;
        A[i] = malloc(na * 4); Bm[i] = malloc(nb * 4); C[i] = calloc(nc, 4);
        if (!A[i] || !Bm[i] || !C[i]) return 1;
        for (size_t j = 0; j < na; j++) A[i][j] = (float)(j % 7) * 0.01f;
        for (size_t j = 0; j < nb; j++) Bm[i][j] = (float)(j % 5) * 0.01f;
    }
    double gt[MAX_REPEATS];
    for (int r = -1; r < repeats; r++) {
        double t0 = now_s();
        for (int s = 0; s < steps; s++)
            for (int i = 0; i < ng; i++)   /* the dW GEMMs accumulate (beta 1), the others overwrite */
                sgemm_rm(g[i].ta, g[i].tb, g[i].m, g[i].n, g[i].k, A[i], Bm[i],
                         i >= 3 && i <= 5 ? 1.0f : 0.0f, C[i]);
        if (r >= 0) gt[r] = (now_s() - t0) / steps;
    }
    double gemm_s = sort_median(gt, repeats);
    printf("soma rule=%s clip=%g ", rule_name, clip);
    printf("batch=%d threads=%d steps=%d repeats=%d step_ms=%.4f samples_per_s=%.1f "
           "gflops=%.2f sgemm_gflops=%.2f ratio=%.3f peak_rss_mib=%.1f\n",
           B, threads, steps, repeats, step_s * 1e3, B / step_s, flops / step_s * 1e-9,
           flops / gemm_s * 1e-9, gemm_s / step_s, peak_rss_mib());
    for (int i = 0; i < ng; i++) { free(A[i]); free(Bm[i]); free(C[i]); }
    soma_loader_free(ld);
    soma_rule_free(rule);
    soma_net_free(net);
    soma_dataset_free(train);
    soma_dataset_free(test);
    return 0;
}
