/*
 * bench_ep.c - speed of equilibrium propagation (rule "ep", docs/ep.md) on
 * the seed's MLP 784-512-512-10 at batch 20 (issue 5), next to OpenBLAS
 * sgemm on the same GEMM shapes in the same process; the PyTorch side is
 * bench/torch_ep.py.
 *
 * Variants, exactly as `soma train --config` builds them (tools/soma.c,
 * src/train/train.c): MNIST pixels in [0,1] (train.c feeds rule ep raw
 * pixels), net 784-512-512-10, act clamp01 (rho = the hard sigmoid), init
 * xavier_uniform (biases 0), seed 0, loss mse (the output layer is
 * dynamical), SGD lr 1 momentum 0 (so the per-layer rates are the papers'
 * alphas), batch 20, loader shuffled (seed 0), the rule's keys through
 * soma_rule_options_parse as the config files spell them:
 *   general  configs/ep-general-2h-mnist.ini: ep-variant general, ep-fb
 *            random, one-sided, ep-free 200, ep-nudge 100 (FREE, NUDGE),
 *            ep-eps 0.5, ep-beta 1, ep-lrs 0.4,0.1,0.01
 *   fast     configs/ep-general-2h-fast-mnist.ini: the same with ep-free 60,
 *            ep-nudge 20 (FREE, NUDGE do not apply); res_free (the mean
 *            free residual, soma_ep_diagnostics) says how converged it was.
 *
 * GEMMs.  One Euler step of src/rule/ep.c's ep_step (general, mse, L = 3
 * dense layers n = 784, 512, 512, 10; B = 20) does, per layer k, the drive
 * W_k rho(s_{k-1}) (soma_dense_forward) and, below the top, the feedback
 * F_{k+1} rho(s_{k+1}) accumulated into it:
 *   k=1  (B,784)x(784,512)   (B,512)x(512,512)
 *   k=2  (B,512)x(512,512)   (B,10)x(10,512)
 *   k=3  (B,512)x(512,10)
 * but the input layer's W_1 rho(x) + b_1 is constant over every phase of a
 * batch (x clamped, weights fixed), so ep.c forms it once per batch: 2L-2 = 4
 * GEMMs per step, 2B(2*512*512 + 2*512*10) = 21.4 MFLOP (ep_step runs every
 * drive first, then the feedbacks with the clipped steps; the reference keeps
 * that order).  A batch runs FREE + phases * NUDGE steps (phases 1, or 2
 * when symmetric), then the update (ep_update, eq. 56) does 2L-1 = 5 more,
 * dW_k = D_k^T rho(s0_{k-1}) (512,B)x(B,784) (512,B)x(B,512) (10,B)x(B,512)
 * and dF_{k+1} = D_k^T rho(s0_{k+1}) (512,B)x(B,512) (512,B)x(B,10).
 * The mse output needs no other product (the ce readout would).  The sgemm
 * reference times exactly that sequence (per step: drive with beta 0, then
 * the feedback accumulating with beta 1 into the same output, as ep_step)
 * with cblas_sgemm on distinct buffers of the same shapes, one set per
 * matrix as in training; effective GFLOP/s = GEMM FLOPs / batch time, and
 * ratio = sgemm time / batch time = the fraction of the pure-GEMM rate that
 * a whole training batch keeps (elementwise work, clipping, residuals,
 * loader and optimizer included); the per-batch products (layer 1's drive,
 * the update) are timed once per batch.  If ep.c changes its schedule,
 * ref_plan_build() must follow.
 *
 * Timing: every variant has its own net, rule and loader; after one warm-up
 * batch of each, the REPEATS repeats are interleaved (repeat r of general's
 * soma batches, its sgemm sequence, then fast's, then r+1), so a loaded
 * machine slows both sides alike.  step_ms is the median over repeats of
 * STEPS training batches (soma_rule_train_batch, loader included), min_ms
 * the fastest repeat; sgemm_ms the same for the reference sequence.
 * peak_rss_mib is the process's (both variants and the reference buffers).
 *
 * check: VARIANT (general or fast) from the seed's initial weights, one
 * training batch on the first, unshuffled training batch (B = 20), written to
 * FILE (safetensors) for bench/torch_ep.py --check: "x" (B, 784), "y" (B),
 * per parameter NAME (net order; metadata "params"): "w.NAME" before,
 * "g.NAME" the grad store (-lr_k * EP update), "after.NAME" after the SGD
 * step; the phase end states "s0.K", "sp.K" (and "sm.K" when symmetric),
 * K = 1..3, (B, n_K) (read through the rule's internal ep.h, as
 * tests/test_ep.c does); metadata: the rule options (soma_rule_options_format),
 * lr, the residuals and the loss.
 *
 * usage: bench_ep THREADS STEPS REPEATS [FREE NUDGE]   (one line per variant)
 *        bench_ep check FILE general|fast [FREE NUDGE]
 * FREE and NUDGE set general's iteration counts (default 200 100); in check
 * mode those of the variant checked.
 */
#include "soma.h"
#include "rule/ep.h"
#define BENCH_NAME "bench_ep"
#define BENCH_CBLAS
#include "bench_util.h"   /* after rule/ep.h: see there */

#define SPEC "784-512-512-10"
#define BATCH 20
#define MAXL 3   /* dense layers of SPEC */

typedef struct variant {
    const char *name;
    int free, nudge, symmetric;
    char opts[512];   /* rule options, config-file keys */
    /* filled at run time */
    soma_net *net;
    soma_rule *r;
    soma_loader *ld;
    int epoch;
    double times[MAX_REPEATS], gtimes[MAX_REPEATS], last_loss;
} variant;

/* The variants' rule keys as the config files give them (general's FREE/NUDGE). */
static void variant_init(variant *v, const char *name, int free_steps, int nudge_steps)
{
    memset(v, 0, sizeof *v);
    v->name = name;
    if (!strcmp(name, "fast")) {
        v->free = free_steps ? free_steps : 60;
        v->nudge = nudge_steps ? nudge_steps : 20;
        snprintf(v->opts, sizeof v->opts, "ep-variant=general ep-fb=random ep-symmetric=0 "
                 "ep-free=%d ep-nudge=%d ep-eps=0.5 ep-beta=1 ep-lrs=0.4,0.1,0.01 ep-tol=0",
                 v->free, v->nudge);
    } else {
        v->free = free_steps ? free_steps : 200;
        v->nudge = nudge_steps ? nudge_steps : 100;
        snprintf(v->opts, sizeof v->opts, "ep-variant=general ep-fb=random ep-symmetric=0 "
                 "ep-free=%d ep-nudge=%d ep-eps=0.5 ep-beta=1 ep-lrs=0.4,0.1,0.01 ep-tol=0",
                 v->free, v->nudge);
    }
}

/* Net, rule (and its config into *rc), as train.c builds them from the ini. */
static int variant_build(variant *v, const soma_dataset *train, soma_rule_config *rc)
{
    soma_net_options o;
    soma_net_options_default(&o);
    o.in_c = train->c; o.in_h = train->h; o.in_w = train->w;
    o.act = SOMA_ACT_CLAMP01;
    o.init = SOMA_INIT_XAVIER_UNIFORM;
    o.seed = 0;
    if (soma_net_new(&v->net, SPEC, &o)) return fail(SPEC);
    soma_rule_config_default(rc);
    soma_optim_config_default(&rc->optim, SOMA_OPTIM_SGD);
    rc->optim.lr = 1.0f;
    rc->optim.momentum = 0.0f;
    rc->loss = SOMA_LOSS_MSE;
    rc->sample_size = train->c * train->h * train->w;
    if (soma_rule_options_parse(rc, v->opts)) return fail(v->opts);
    if (soma_rule_new(&v->r, "ep", v->net, rc, BATCH)) return fail(v->name);
    return 0;
}

static int run_batches(variant *v, int n)
{
    soma_batch b;
    for (int s = 0; s < n; s++) {
        next_batch(v->ld, &v->epoch, &b);
        soma_step_stats st = { 0 };
        if (soma_rule_train_batch(v->r, &b, 1.0f, NULL, &st)) return fail(v->name);
        v->last_loss = mean_loss(&st);
    }
    return 0;
}

/* ---- the sgemm reference ---------------------------------------------------- */

typedef struct gemm_op {
    int ta, tb, m, n, k;
    const float *a, *b;
    float *c;
    float beta;
} gemm_op;

typedef struct ref_plan {
    gemm_op step[2 * MAXL], update[2 * MAXL + 1];
    int n_step, n_update;
    double step_flops, update_flops;
    float *bufs[64];
    int n_bufs;
} ref_plan;

static float *ref_buf(ref_plan *p, size_t rows, size_t cols, int seed)
{
    float *x = malloc(rows * cols * sizeof(float));
    if (!x) return NULL;
    for (size_t j = 0; j < rows * cols; j++) x[j] = (float)((j + (size_t)seed) % 7) * 0.01f;
    p->bufs[p->n_bufs++] = x;
    return x;
}

static double op_flops(const gemm_op *g) { return 2.0 * g->m * g->n * g->k; }

/* ep_step's and ep_update's products for the general variant with the mse
 * output over dense layers n[0..L] (see the header); one buffer per matrix. */
static int ref_plan_build(ref_plan *p, const int *n, int L, int B)
{
    memset(p, 0, sizeof *p);
    float *rho[MAXL + 1], *W[MAXL + 1], *F[MAXL + 1] = { 0 }, *a[MAXL + 1], *d[MAXL + 1];
    float *gW[MAXL + 1], *gF[MAXL + 1] = { 0 };
    for (int k = 0; k <= L; k++) {
        if (!(rho[k] = ref_buf(p, B, n[k], k))) return 1;
        if (k == 0) continue;
        if (!(W[k] = ref_buf(p, n[k], n[k - 1], 10 + k)) || !(a[k] = ref_buf(p, B, n[k], 20 + k)) ||
            !(d[k] = ref_buf(p, B, n[k], 30 + k)) || !(gW[k] = ref_buf(p, n[k], n[k - 1], 40 + k)))
            return 1;
        if (k >= 2 && (!(F[k] = ref_buf(p, n[k - 1], n[k], 50 + k)) ||
                       !(gF[k] = ref_buf(p, n[k - 1], n[k], 60 + k))))
            return 1;
    }
    /* once per batch: layer 1's drive a_1 = rho(x) W_1^T (+ b_1) */
    p->update[p->n_update++] = (gemm_op){ 0, 1, B, n[1], n[0], rho[0], W[1], a[1], 0.0f };
    /* ep_step's pass 1: the other drives a_k = rho_{k-1} W_k^T (+ b_k, elementwise) */
    for (int k = 2; k <= L; k++)
        p->step[p->n_step++] = (gemm_op){ 0, 1, B, n[k], n[k - 1], rho[k - 1], W[k], a[k], 0.0f };
    /* pass 2: a_k += rho_{k+1} F_{k+1}^T below the top (then the clipped step) */
    for (int k = 1; k < L; k++)
        p->step[p->n_step++] = (gemm_op){ 0, 1, B, n[k], n[k + 1], rho[k + 1], F[k + 1], a[k], 1.0f };
    for (int k = 1; k <= L; k++) {
        /* dW_k = D_k^T rho(s0_{k-1}), dF_{k+1} = D_k^T rho(s0_{k+1}) */
        p->update[p->n_update++] = (gemm_op){ 1, 0, n[k], n[k - 1], B, d[k], rho[k - 1], gW[k], 0.0f };
        if (k < L)
            p->update[p->n_update++] = (gemm_op){ 1, 0, n[k], n[k + 1], B, d[k], rho[k + 1], gF[k + 1], 0.0f };
    }
    for (int i = 0; i < p->n_step; i++) p->step_flops += op_flops(&p->step[i]);
    for (int i = 0; i < p->n_update; i++) p->update_flops += op_flops(&p->update[i]);
    return 0;
}

static void ref_free(ref_plan *p)
{
    for (int i = 0; i < p->n_bufs; i++) free(p->bufs[i]);
}

static void run_ops(const gemm_op *g, int n)
{
    for (int i = 0; i < n; i++)
        sgemm_rm(g[i].ta, g[i].tb, g[i].m, g[i].n, g[i].k, g[i].a, g[i].b, g[i].beta, g[i].c);
}

/* The GEMMs of `batches` training batches of Euler steps each. */
static void ref_batches(const ref_plan *p, int euler, int batches)
{
    for (int s = 0; s < batches; s++) {
        for (int t = 0; t < euler; t++) run_ops(p->step, p->n_step);
        run_ops(p->update, p->n_update);
    }
}

/* ---- check: one batch dumped for torch_ep.py --check ------------------------- */

static soma_status add_set(soma_st_writer *w, const ep_state *e, const ep_set *s, const char *prefix,
                           int B)
{
    for (int k = 1; k <= e->nd; k++) {
        char key[64];
        snprintf(key, sizeof key, "%s.%d", prefix, k);
        int64_t shape[2] = { B, e->n[k] };
        soma_status st = soma_st_writer_add(w, key, SOMA_F32, 2, shape, s->s[k]);
        if (st) return st;
    }
    return SOMA_OK;
}

static int check_dump(const char *path, const char *which, int free_steps, int nudge_steps,
                      soma_dataset *train)
{
    soma_set_threads(1);
    variant v;
    variant_init(&v, which, free_steps, nudge_steps);
    soma_rule_config rc;
    if (variant_build(&v, train, &rc)) return 1;
    soma_loader *ld;
    soma_batch b;
    if (first_batch(&ld, train, BATCH, 0, &b)) return 1;
    soma_st_writer *w;
    if (soma_st_writer_new(&w)) return fail("writer");
    char names[1024] = "", meta[1024];
    if (add_batch(w, &b) || add_params(w, v.net, "w", 0, names, sizeof names)) return fail("dump");
    soma_step_stats st = { 0 };
    if (soma_rule_train_batch(v.r, &b, rc.optim.lr, NULL, &st)) return fail("train batch");
    const ep_state *e = v.r->state;
    if (add_params(w, v.net, "g", 1, NULL, 0) || add_params(w, v.net, "after", 0, NULL, 0) ||
        add_set(w, e, &e->s0, "s0", b.n) || add_set(w, e, &e->sp, "sp", b.n) ||
        (rc.ep_symmetric && add_set(w, e, &e->sm, "sm", b.n)))
        return fail("dump after");
    soma_ep_diag dg;
    if (soma_ep_diagnostics(v.r, &dg, 0)) return fail("diagnostics");
    soma_st_writer_meta(w, "params", names);
    soma_st_writer_meta(w, "variant", which);
    soma_rule_options_format(&rc, meta, sizeof meta);
    soma_st_writer_meta(w, "rule_options", meta);
    meta_g(w, "lr", rc.optim.lr);
    meta_g(w, "res_free", dg.res_free);
    meta_g(w, "res_nudge", dg.res_nudge);
    meta_g(w, "loss", mean_loss(&st));
    if (soma_st_writer_save(w, path)) return fail("save");
    printf("soma ep check variant=%s batch=%d free=%d nudge=%d symmetric=%d res_free=%.3g "
           "res_nudge=%.3g loss=%.4f params=%s file=%s\n", which, b.n, v.free, v.nudge,
           v.symmetric, dg.res_free, dg.res_nudge, mean_loss(&st), names, path);
    soma_st_writer_free(w);
    soma_loader_free(ld);
    soma_rule_free(v.r);
    soma_net_free(v.net);
    return 0;
}

/* ---- bench --------------------------------------------------------------------- */

static int bench(int threads, int steps, int repeats, int free_steps, int nudge_steps,
                 soma_dataset *train)
{
    soma_set_threads(threads);
    variant vs[2];
    variant_init(&vs[0], "general", free_steps, nudge_steps);
    variant_init(&vs[1], "fast", 0, 0);
    const int nv = 2;
    for (int i = 0; i < nv; i++) {
        variant *v = &vs[i];
        soma_rule_config rc;
        if (variant_build(v, train, &rc)) return 1;
        soma_loader_config lc = { .batch = BATCH, .seed = 0, .shuffle = 1, .normalize = 0,
                                  .drop_last = 1 };
        if (soma_loader_new(&v->ld, train, &lc)) return fail("loader");
        soma_loader_start_epoch(v->ld, 0);
    }
    /* dense sizes of the net, for the reference */
    int n[MAXL + 1], L = 0;
    n[0] = soma_net_inputs(vs[0].net);
    for (int i = 0; i < vs[0].net->n_layers; i++) {
        const soma_layer *l = &vs[0].net->layers[i];
        if (l->kind != SOMA_LAYER_DENSE) continue;
        if (L == MAXL) { fprintf(stderr, "bench_ep: more than %d dense layers\n", MAXL); return 1; }
        n[++L] = l->out_c;
    }
    ref_plan ref;
    if (ref_plan_build(&ref, n, L, BATCH)) { fprintf(stderr, "bench_ep: out of memory\n"); return 1; }

    for (int i = 0; i < nv; i++) {   /* warm-up: one batch of each, and its GEMMs */
        if (run_batches(&vs[i], 1)) return 1;
        ref_batches(&ref, vs[i].free + (1 + vs[i].symmetric) * vs[i].nudge, 1);
    }
    soma_ep_diag dg;
    for (int i = 0; i < nv; i++) soma_ep_diagnostics(vs[i].r, &dg, 1);
    for (int r = 0; r < repeats; r++)
        for (int i = 0; i < nv; i++) {
            variant *v = &vs[i];
            double t0 = now_s();
            if (run_batches(v, steps)) return 1;
            double t1 = now_s();
            ref_batches(&ref, v->free + (1 + v->symmetric) * v->nudge, steps);
            v->times[r] = (t1 - t0) / steps;
            v->gtimes[r] = (now_s() - t1) / steps;
        }

    double peak = peak_rss_mib();
    for (int i = 0; i < nv; i++) {
        variant *v = &vs[i];
        double step_s = sort_median(v->times, repeats), gemm_s = sort_median(v->gtimes, repeats);
        int phases = 1 + v->symmetric, euler = v->free + phases * v->nudge;
        double flops = euler * ref.step_flops + ref.update_flops;
        soma_ep_diagnostics(v->r, &dg, 0);
        printf("soma ep variant=%s net=%s batch=%d threads=%d free=%d nudge=%d phases=%d "
               "steps=%d repeats=%d euler_steps=%d gemms_per_euler=%d gemms=%d gflop=%.3f "
               "step_ms=%.3f min_ms=%.3f samples_per_s=%.1f gflops=%.2f sgemm_ms=%.3f "
               "sgemm_gflops=%.2f ratio=%.3f res_free=%.3g peak_rss_mib=%.1f loss=%.4f\n",
               v->name, SPEC, BATCH, threads, v->free, v->nudge, phases, steps, repeats, euler,
               ref.n_step, euler * ref.n_step + ref.n_update, flops * 1e-9, step_s * 1e3,
               v->times[0] * 1e3, BATCH / step_s, flops / step_s * 1e-9, gemm_s * 1e3,
               flops / gemm_s * 1e-9, gemm_s / step_s, dg.res_free, peak, v->last_loss);
    }
    ref_free(&ref);
    for (int i = 0; i < nv; i++) {
        soma_loader_free(vs[i].ld);
        soma_rule_free(vs[i].r);
        soma_net_free(vs[i].net);
    }
    return 0;
}

static int usage(const char *argv0)
{
    fprintf(stderr, "usage: %s THREADS STEPS REPEATS [FREE NUDGE]\n"
                    "       %s check FILE general|fast [FREE NUDGE]\n", argv0, argv0);
    return 2;
}

int main(int argc, char **argv)
{
    soma_exec_tuned(argv);   /* as the CLI: OMP_WAIT_POLICY, OPENBLAS_CORETYPE */
    if (argc < 4) return usage(argv[0]);
    int check = !strcmp(argv[1], "check");
    int free_steps = argc > 4 ? atoi(argv[4]) : 0, nudge_steps = argc > 5 ? atoi(argv[5]) : 0;
    if (free_steps < 0 || nudge_steps < 0) return usage(argv[0]);
    int threads = 0, steps = 0, repeats = 0;
    if (check) {
        if (strcmp(argv[3], "general") && strcmp(argv[3], "fast")) return usage(argv[0]);
    } else {
        threads = atoi(argv[1]);
        steps = atoi(argv[2]);
        repeats = atoi(argv[3]);
        if (threads <= 0 || steps <= 0 || repeats <= 0 || repeats > MAX_REPEATS) {
            fprintf(stderr, "bench_ep: THREADS, STEPS > 0 and REPEATS in 1..%d\n", MAX_REPEATS);
            return 2;
        }
    }
    soma_dataset *train;
    if (soma_dataset_open(&train, NULL, "mnist", "data/mnist", 0)) return fail("mnist (run make data)");
    int rc = check ? check_dump(argv[2], argv[3], free_steps, nudge_steps, train)
                   : bench(threads, steps, repeats, free_steps, nudge_steps, train);
    soma_dataset_free(train);
    return rc;
}
