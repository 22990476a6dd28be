/*
 * bench_ide.c - speed and memory of IDE training (rule "ide", docs/ide.md:
 * a T-step feedback-SNN simulation with no graph kept, then the implicit
 * backward at the simulated rates) on F400 (issue 7); the PyTorch side is
 * bench/torch_ide.py.
 *
 * Setting, exactly as `soma train --config configs/ide-f400-fashion.ini`
 * builds it (tools/soma.c, src/train/train.c): Fashion-MNIST from
 * data/fashion (MNIST from data/mnist if it cannot be opened: data= in the
 * output says which), normalised by the data set's mean/std (train.c's
 * loader for rule ide), net 784-400-bn-10 (act relu, unused by ide; init
 * torch; seed 0), loss ce, SGD lr 0.05 momentum 0.9 weight decay 5e-4 (the
 * schedule's first epoch: constant lr), batch 128, loader shuffled (seed 0),
 * the rule's keys through soma_rule_options_parse as the config spells them:
 * ide-vth=2 ide-leak=0.95 ide-max-iter=30 ide-sn=1 ide-sn-c=1 (Broyden, tol
 * 1e-6); T from the command line (the config's is 5).
 *
 * Timing, per T: every T has its own net, rule and loader (same seeds, so
 * the same weights and batches); after WARMUP iterations of each, the REPEATS
 * repeats are interleaved (repeat r of every T, then r+1), so a loaded
 * machine slows every T alike.
 *   step_ms      whole training iterations, soma_rule_train_batch (loader
 *                included), median over repeats of the mean of STEPS; min_ms
 *                the fastest repeat.
 *   sim_ms, backward_ms, update_ms: the same iteration split into phases.
 *                ide.c has no timing hooks, so the phases are timed from
 *                outside through the internal entry points of src/rule/ide.h
 *                (as tests/test_ide.c calls them), in ide_train_batch's
 *                order: sim = soma__ide_grad_forward (one power iteration,
 *                W_eff, soma__ide_simulate in training mode: F x and its
 *                batch statistics, the running ones updated once, T LIF
 *                steps, a_T); backward = soma__ide_grad_backward at that a_T
 *                (readout, loss, f(a_T), the Broyden solve, the parameter
 *                VJPs), the two halves of soma__ide_grad;
 *                update = the finite check and the optimizer step.  The
 *                split iterations are real training iterations on the same
 *                net (STEPS of them per repeat, after the whole ones);
 *                split_ms = sim + backward + update.  `check` verifies that
 *                this replica of ide_train_batch leaves the net bit-identical
 *                to soma_rule_train_batch (split_replica=exact); if ide.c's
 *                iteration changes, that check fails and this file must
 *                follow.  Backward flat in T: the backward never sees T.
 *   iters, residual, rate_gap: soma_ide_diagnostics of the timed
 *                iterations (mean solver products, mean relative residual,
 *                mean RMS |f(a_T) - a_T|).
 *   plan_mib     soma_rule_plan's total for the T (activations: membranes,
 *                spikes, rates; flat in T by construction).
 *   proc_peak_rss_mib: the process's peak (every T's net together).
 *
 * rss: one T in a fresh process: base_rss_mib after the data set is loaded
 * and OpenBLAS set up, then the net and rule are built and WARMUP + 2
 * training iterations run; peak_rss_mib is the process's peak, rss_mib the
 * growth of the resident set over the base, plan_* soma_rule_plan's bytes.
 * Memory flat in T: run it once per T (bench/run_ide.sh does).
 *
 * check: T (default 5), threads 1, from the initial weights (seed 0) on
 * the first, unshuffled training batch (B = 128), one training iteration
 * (soma_rule_train_batch) written to FILE (safetensors) for
 * bench/torch_ide.py --check: "x" (B, 784), "y" (B); per parameter NAME
 * (metadata "params"): "w.NAME" before, "g.NAME" the grad store (the raw
 * gradient, no weight decay), "after.NAME" after the SGD step; per buffer
 * NAME (metadata "buffers": the spectral norm's u, v, F's batchnorm running
 * statistics): "buf.NAME" before, "bufafter.NAME" after; the rule's state
 * after the iteration (through rule/ide.h): "a" the simulated rates a_T
 * (B, 400), "beta" the implicit solution, "weff" the effective feedback
 * W_eff (400, 400); metadata: the rule options (soma_rule_options_format),
 * T, lr, momentum, weight_decay, data, loss, residual, iters, rate_gap and
 * split_replica.  Exit 1 if the replica is not exact.
 *
 * IDE_NET=f64c5 (environment): the same on F64C5 (configs/ide-f64c5-mnist.ini's
 * net and rule keys, MNIST); default f400.
 *
 * usage: bench_ide THREADS STEPS REPEATS [T...]   (default T: 5 30 100;
 *                                                  one line per T;
 *                                                  BENCH_CLOCK=cpu: CPU time)
 *        bench_ide rss T [THREADS]
 *        bench_ide check FILE [T]
 */
#include "soma.h"
#include "rule/ide.h"
#define BENCH_NAME "bench_ide"
#include "bench_util.h"   /* after rule/ide.h: see there */

/* IDE_NET=f400 (default) or f64c5 (configs/ide-f64c5-mnist.ini's net and
 * rule keys on MNIST: conv F 1->64 5x5 stride 2 + batchnorm, 64->64 5x5
 * conv feedback, its operator norm bounded at c = 1, readout 12544->10) */
static const char *SPEC = "784-400-bn-10";
#define BATCH 128
#define WARMUP 1
#define MAX_T 16
#define LR 0.05f
#define MOMENTUM 0.9f
#define WEIGHT_DECAY 5e-4f
/* configs/ide-f400-fashion.ini's rule keys (T apart) */
static const char *RULE_OPTS = "ide-vth=2 ide-leak=0.95 ide-max-iter=30 ide-sn=1 ide-sn-c=1";
static int conv_net;   /* IDE_NET=f64c5 */

typedef struct variant {
    int T;
    soma_net *net;
    soma_rule *r;
    soma_rule_config rc;
    soma_loader *ld;
    int epoch;
    double total[MAX_REPEATS], sim[MAX_REPEATS], bwd[MAX_REPEATS], upd[MAX_REPEATS];
    double last_loss, sum_iters, sum_res, sum_gap;
    long n_diag;
} variant;

static const char *data_name = "fashion";

/* every time below: bench_clock_s (BENCH_CLOCK=cpu or BENCH_CLOCK=cpu: CPU time) */
#define clock_s bench_clock_s
#define cpu_clock bench_cpu_clock()

/* Fashion-MNIST, or MNIST when data/fashion cannot be opened. */
static int open_data(soma_dataset **train)
{
    if (conv_net) { data_name = "mnist"; return open_mnist(train, NULL); }
    if (soma_dataset_open(train, NULL, "fashion", "data/fashion", 0) == SOMA_OK) return 0;
    fprintf(stderr, "bench_ide: fashion: %s; using MNIST\n", soma_last_error());
    data_name = "mnist";
    return open_mnist(train, NULL);
}

/* Net and rule as train.c builds them from configs/ide-f400-fashion.ini. */
static int build(variant *v, int T, const soma_dataset *train)
{
    v->T = T;
    soma_net_options o;
    soma_net_options_default(&o);
    o.in_c = train->c; o.in_h = train->h; o.in_w = train->w;
    o.act = SOMA_ACT_RELU;        /* soma_train_config_default's; ide does not use it */
    o.init = SOMA_INIT_TORCH;
    o.seed = 0;
    if (soma_net_new(&v->net, SPEC, &o)) return fail(SPEC);
    soma_rule_config *rc = &v->rc;
    soma_rule_config_default(rc);   /* loss ce */
    soma_optim_config_default(&rc->optim, SOMA_OPTIM_SGD);
    rc->optim.lr = LR;
    rc->optim.momentum = MOMENTUM;
    rc->optim.weight_decay = WEIGHT_DECAY;
    rc->T = T;
    rc->sample_size = train->c * train->h * train->w;
    if (soma_rule_options_parse(rc, RULE_OPTS)) return fail(RULE_OPTS);
    if (soma_rule_new(&v->r, "ide", v->net, rc, BATCH)) return fail("rule ide");
    return 0;
}

static int open_loader(variant *v, const soma_dataset *train)
{
    soma_loader_config lc = { .batch = BATCH, .seed = 0, .shuffle = 1, .normalize = 1,
                              .drop_last = 1 };
    if (soma_loader_new(&v->ld, train, &lc)) return fail("loader");
    soma_loader_start_epoch(v->ld, 0);
    return 0;
}

static void release(variant *v)
{
    soma_loader_free(v->ld);
    soma_rule_free(v->r);
    soma_net_free(v->net);
}

static void diag(variant *v)
{
    soma_ide_diag d;
    if (soma_ide_diagnostics(v->r, &d, 0)) return;
    v->sum_iters += d.iters;
    v->sum_res += d.residual;
    v->sum_gap += d.rate_gap;
    v->n_diag++;
}

/* n whole training iterations */
static int run_whole(variant *v, int n, int keep_diag)
{
    soma_batch b;
    for (int s = 0; s < n; s++) {
        next_batch(v->ld, &v->epoch, &b);
        soma_step_stats st = { 0 };
        if (soma_rule_train_batch(v->r, &b, LR, NULL, &st)) return fail("train batch");
        v->last_loss = mean_loss(&st);
        if (keep_diag) diag(v);
    }
    return 0;
}

/* One training iteration on b through ide.h's entry points, in
 * ide_train_batch's order (soma__ide_grad, then the finite check, no clip,
 * the optimizer step); adds the phases' seconds to t[0..2]. */
static int split_iteration(variant *v, const soma_batch *b, double *t, soma_step_stats *st)
{
    soma_rule *r = v->r;
    double t0 = clock_s();
    if (soma__ide_grad_forward(r, b, 1)) return fail("ide grad forward");
    double t1 = clock_s();
    if (soma__ide_grad_backward(r, b, st)) return fail("ide grad backward");
    double t2 = clock_s();
    size_t np = soma_net_param_floats(r->net);
    float *g = soma_net_param_grads(r->net);
    if (!soma__all_finite(g, np)) { fprintf(stderr, "bench_ide: gradient not finite\n"); return 1; }
    if (r->cfg.clip_norm > 0) soma__clip_norm(g, np, r->cfg.clip_norm);
    soma_optim_step(soma_rule_optim(r), soma_net_param_values(r->net), g, LR);
    double t3 = clock_s();
    t[0] += t1 - t0;
    t[1] += t2 - t1;
    t[2] += t3 - t2;
    return 0;
}

static int run_split(variant *v, int n, double *t, int keep_diag)
{
    soma_batch b;
    for (int s = 0; s < n; s++) {
        next_batch(v->ld, &v->epoch, &b);
        soma_step_stats st = { 0 };
        if (split_iteration(v, &b, t, &st)) return 1;
        v->last_loss = mean_loss(&st);
        if (keep_diag) diag(v);
    }
    return 0;
}

static double plan_bytes(const soma_rule *r, soma_mem_plan *p)
{
    soma_rule_plan(r, p);
    return (double)p->total;
}

/* ---- bench ----------------------------------------------------------------------- */

static int bench(int threads, int steps, int repeats, const int *Ts, int nT, soma_dataset *train)
{
    soma_set_threads(threads);
    variant *vs = calloc((size_t)nT, sizeof *vs);
    if (!vs) return fail("out of memory");
    for (int i = 0; i < nT; i++)
        if (build(&vs[i], Ts[i], train) || open_loader(&vs[i], train)) return 1;
    for (int i = 0; i < nT; i++) {   /* warm-up: both paths */
        double t[3] = { 0 };
        if (run_whole(&vs[i], WARMUP, 0) || run_split(&vs[i], 1, t, 0)) return 1;
    }
    for (int r = 0; r < repeats; r++)
        for (int i = 0; i < nT; i++) {
            variant *v = &vs[i];
            double t0 = clock_s();
            if (run_whole(v, steps, 1)) return 1;
            v->total[r] = (clock_s() - t0) / steps;
            double t[3] = { 0 };
            if (run_split(v, steps, t, 1)) return 1;
            v->sim[r] = t[0] / steps;
            v->bwd[r] = t[1] / steps;
            v->upd[r] = t[2] / steps;
        }
    double peak = peak_rss_mib();
    for (int i = 0; i < nT; i++) {
        variant *v = &vs[i];
        soma_mem_plan p;
        double plan = plan_bytes(v->r, &p);
        double step = sort_median(v->total, repeats), sim = sort_median(v->sim, repeats);
        double bwd = sort_median(v->bwd, repeats), upd = sort_median(v->upd, repeats);
        double nd = v->n_diag ? (double)v->n_diag : 1.0;
        printf("soma ide net=%s data=%s batch=%d threads=%d T=%d steps=%d repeats=%d "
               "step_ms=%.3f min_ms=%.3f sim_ms=%.3f backward_ms=%.3f update_ms=%.3f "
               "split_ms=%.3f samples_per_s=%.1f iters=%.1f residual=%.3g rate_gap=%.4f "
               "plan_bytes=%zu plan_mib=%.2f plan_activation_bytes=%zu proc_peak_rss_mib=%.1f "
               "loss=%.4f clock=%s\n",
               SPEC, data_name, BATCH, threads, v->T, steps, repeats, step * 1e3,
               v->total[0] * 1e3, sim * 1e3, bwd * 1e3, upd * 1e3, (sim + bwd + upd) * 1e3,
               BATCH / step, v->sum_iters / nd, v->sum_res / nd, v->sum_gap / nd, p.total,
               plan / MIB, p.activations, peak, v->last_loss, cpu_clock ? "cpu" : "wall");
    }
    for (int i = 0; i < nT; i++) release(&vs[i]);
    free(vs);
    return 0;
}

/* ---- rss: one T in a fresh process ----------------------------------------------- */

static int rss(int T, int threads, soma_dataset *train)
{
    soma_set_threads(threads);
    blas_warmup();
    double base = cur_rss_mib();
    variant v;
    memset(&v, 0, sizeof v);
    if (build(&v, T, train) || open_loader(&v, train) || run_whole(&v, WARMUP + 2, 0)) return 1;
    double now = cur_rss_mib(), peak = peak_rss_mib();
    soma_mem_plan p;
    plan_bytes(v.r, &p);
    printf("soma ide rss net=%s data=%s batch=%d threads=%d T=%d plan_bytes=%zu plan_mib=%.2f "
           "plan_activation_bytes=%zu plan_workspace_bytes=%zu base_rss_mib=%.1f rss_mib=%.1f "
           "peak_rss_mib=%.1f\n",
           SPEC, data_name, BATCH, threads, T, p.total, p.total / MIB, p.activations, p.workspace,
           base, now - base, peak);
    release(&v);
    return 0;
}

/* ---- check: one iteration dumped for torch_ide.py --check ------------------------ */

/* Adds every buffer of net as PREFIX.NAME; with names, appends each NAME. */
static soma_status add_buffers(soma_st_writer *w, soma_net *net, const char *prefix, char *names,
                               size_t names_size)
{
    for (int i = 0; i < soma_net_tensor_count(net); i++) {
        const char *name;
        int ndim, is_param;
        int64_t shape[SOMA_MAX_DIMS];
        float *data = soma_net_tensor(net, i, &name, &ndim, shape, &is_param);
        if (is_param) continue;
        char key[256];
        snprintf(key, sizeof key, "%s.%s", prefix, name);
        soma_status st = soma_st_writer_add(w, key, SOMA_F32, ndim, shape, data);
        if (st) return st;
        if (names) {
            size_t len = strlen(names);
            snprintf(names + len, names_size - len, "%s%s", len ? "," : "", name);
        }
    }
    return SOMA_OK;
}

/* Every tensor of a and b (values, grads, buffers, optimizer state aside)
 * bit-identical? */
static int same_net(soma_net *a, soma_net *b)
{
    size_t np = soma_net_param_floats(a);
    if (np != soma_net_param_floats(b)) return 0;
    if (memcmp(soma_net_param_values(a), soma_net_param_values(b), np * sizeof(float)) ||
        memcmp(soma_net_param_grads(a), soma_net_param_grads(b), np * sizeof(float)))
        return 0;
    int nt = soma_net_tensor_count(a);
    if (nt != soma_net_tensor_count(b)) return 0;
    for (int i = 0; i < nt; i++) {
        const char *na, *nb;
        int da, db, pa, pb;
        int64_t sa[SOMA_MAX_DIMS], sb[SOMA_MAX_DIMS];
        float *x = soma_net_tensor(a, i, &na, &da, sa, &pa);
        float *y = soma_net_tensor(b, i, &nb, &db, sb, &pb);
        if (strcmp(na, nb) || da != db || pa != pb) return 0;
        size_t n = 1;
        for (int d = 0; d < da; d++) n *= (size_t)sa[d];
        if (memcmp(x, y, n * sizeof(float))) return 0;
    }
    return 1;
}

static int check_dump(const char *path, int T, soma_dataset *train)
{
    soma_set_threads(1);
    variant v, twin;
    memset(&v, 0, sizeof v);
    memset(&twin, 0, sizeof twin);
    if (build(&v, T, train) || build(&twin, T, train)) return 1;
    if (!same_net(v.net, twin.net)) { fprintf(stderr, "bench_ide: two builds differ\n"); return 1; }
    soma_loader *ld;
    soma_batch b;
    if (first_batch(&ld, train, BATCH, 1, &b)) return 1;
    soma_st_writer *w;
    if (soma_st_writer_new(&w)) return fail("writer");
    char names[1024] = "", bnames[1024] = "", meta[2048];
    if (add_batch(w, &b) || add_params(w, v.net, "w", 0, names, sizeof names) ||
        add_buffers(w, v.net, "buf", bnames, sizeof bnames))
        return fail("dump");
    soma_step_stats st = { 0 };
    if (soma_rule_train_batch(v.r, &b, LR, NULL, &st)) return fail("train batch");
    /* the split iteration of the bench on the twin: the same computation? */
    double t[3] = { 0 };
    soma_step_stats st2 = { 0 };
    if (split_iteration(&twin, &b, t, &st2)) return 1;
    int exact = same_net(v.net, twin.net) && st.loss == st2.loss && st.correct == st2.correct;
    const ide_state *e = v.r->state;
    int nH = e->n[e->H];
    int64_t as[2] = { b.n, nH }, ws[2] = { e->n[1], nH };
    if (add_params(w, v.net, "g", 1, NULL, 0) || add_params(w, v.net, "after", 0, NULL, 0) ||
        add_buffers(w, v.net, "bufafter", NULL, 0) ||
        soma_st_writer_add(w, "a", SOMA_F32, 2, as, e->a) ||
        soma_st_writer_add(w, "beta", SOMA_F32, 2, as, e->beta) ||
        soma_st_writer_add(w, "weff", SOMA_F32, 2, ws, e->weff))
        return fail("dump after");
    soma_ide_diag dg;
    if (soma_ide_diagnostics(v.r, &dg, 0)) return fail("diagnostics");
    soma_st_writer_meta(w, "params", names);
    soma_st_writer_meta(w, "buffers", bnames);
    soma_rule_options_format(&v.rc, meta, sizeof meta);
    soma_st_writer_meta(w, "rule_options", meta);
    soma_st_writer_meta(w, "data", data_name);
    soma_st_writer_meta(w, "split_replica", exact ? "exact" : "differs");
    meta_g(w, "T", T);
    meta_g(w, "lr", LR);
    meta_g(w, "momentum", v.rc.optim.momentum);
    meta_g(w, "weight_decay", v.rc.optim.weight_decay);
    meta_g(w, "loss", mean_loss(&st));
    meta_g(w, "residual", dg.residual);
    meta_g(w, "iters", dg.iters);
    meta_g(w, "rate_gap", dg.rate_gap);
    if (soma_st_writer_save(w, path)) return fail("save");
    printf("soma ide check net=%s data=%s batch=%d T=%d residual=%.3g iters=%d rate_gap=%.4f "
           "loss=%.5f split_replica=%s params=%s buffers=%s file=%s\n", SPEC, data_name, b.n, T,
           dg.residual, dg.iters, dg.rate_gap, mean_loss(&st), exact ? "exact" : "differs", names,
           bnames, path);
    if (!exact)
        fprintf(stderr, "bench_ide: the split iteration (ide.h's entry points) no longer matches "
                        "soma_rule_train_batch bit for bit: ide.c changed, follow it here\n");
    soma_st_writer_free(w);
    soma_loader_free(ld);
    release(&v);
    release(&twin);
    return exact ? 0 : 1;
}

static int usage(const char *argv0)
{
    fprintf(stderr, "usage: %s THREADS STEPS REPEATS [T...]   (default T: 5 30 100)\n"
                    "       %s rss T [THREADS]\n"
                    "       %s check FILE [T]\n", argv0, argv0, argv0);
    return 2;
}

int main(int argc, char **argv)
{
    soma_exec_tuned(argv);   /* as the CLI: OMP_WAIT_POLICY, OPENBLAS_CORETYPE */
    if (argc < 3) return usage(argv[0]);
    int mode = !strcmp(argv[1], "check") ? 1 : !strcmp(argv[1], "rss") ? 2 : 0;
    int Ts[MAX_T] = { 5, 30, 100 }, nT = 3, threads = 1, steps = 0, repeats = 0;
    if (mode == 1) {
        Ts[0] = argc > 3 ? atoi(argv[3]) : 5;
    } else if (mode == 2) {
        Ts[0] = atoi(argv[2]);
        threads = argc > 3 ? atoi(argv[3]) : 1;
    } else {
        if (argc < 4) return usage(argv[0]);
        threads = atoi(argv[1]);
        steps = atoi(argv[2]);
        repeats = atoi(argv[3]);
        if (steps <= 0 || repeats <= 0 || repeats > MAX_REPEATS) {
            fprintf(stderr, "bench_ide: STEPS > 0 and REPEATS in 1..%d\n", MAX_REPEATS);
            return 2;
        }
        if (argc > 4) {
            if (argc - 4 > MAX_T) { fprintf(stderr, "bench_ide: at most %d T values\n", MAX_T); return 2; }
            nT = argc - 4;
            for (int i = 0; i < nT; i++) Ts[i] = atoi(argv[4 + i]);
        }
    }
    if (threads <= 0) { fprintf(stderr, "bench_ide: THREADS must be > 0\n"); return 2; }
    for (int i = 0; i < (mode ? 1 : nT); i++)
        if (Ts[i] <= 0) { fprintf(stderr, "bench_ide: T must be > 0\n"); return 2; }
    const char *net = getenv("IDE_NET");
    if (net && !strcmp(net, "f64c5")) {
        conv_net = 1;
        SPEC = "conv5x64s2p2-bn-10";
        RULE_OPTS = "ide-vth=2 ide-leak=0.95 ide-max-iter=30 ide-sn=1 ide-sn-c=1 ide-fb-k=5";
    } else if (net && strcmp(net, "f400")) {
        fprintf(stderr, "bench_ide: IDE_NET must be f400 or f64c5, got '%s'\n", net);
        return 2;
    }
    soma_dataset *train;
    if (open_data(&train)) return 1;
    int rc = mode == 1 ? check_dump(argv[2], Ts[0], train)
           : mode == 2 ? rss(Ts[0], threads, train)
                       : bench(threads, steps, repeats, Ts, nT, train);
    soma_dataset_free(train);
    return rc;
}
