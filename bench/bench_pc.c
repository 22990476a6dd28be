/*
 * bench_pc.c - speed and memory of predictive-coding training (rule "pc",
 * docs/pc.md) next to BP on the same MLP, in one process (issue 4).
 *
 * Net: NET (default the paper's 3072-1024-1024-1024-10, L = 4 weight
 * layers), ReLU, CIFAR-10 pixels in [0,1] (no mean/std: the PC configs'
 * no-normalize), batch 64.  Variants (learning rates as the configs
 * configs/pc-*-mlp-cifar10.ini, except SGD for PC, 1e-3 so that many steps
 * stay finite; the rate does not change the work done):
 *   bp-sgd      rule bp, SGD lr 0.01 (no momentum)
 *   bp-adam     rule bp, Adam lr 1.8e-5
 *   seqil-sgd   rule pc, sequential (SeqIL), T = 3, SGD lr 1e-3
 *   seqil-mq    rule pc, SeqIL T = 3, MQ lr 3e-5
 *   seqil-adam  rule pc, SeqIL T = 3, Adam lr 3e-5
 *   il-sgd      rule pc, simultaneous (standard IL), T = 3, SGD lr 1e-3
 * PC keeps its defaults: gamma 0.05, soft clamp beta 100.
 *
 * Timing: a whole training iteration (soma_rule_train_batch, loader
 * included).  Each variant has its own net, rule and loader (same seeds,
 * so the same batches); after WARMUP steps of each, the REPEATS repeats are
 * interleaved (repeat r of every variant, then r+1), so that a noisy
 * machine slows every variant alike and the ratios, taken within one run,
 * stay meaningful.  step_ms is the median over repeats of STEPS steps,
 * min_ms the fastest repeat (the better estimate on a loaded machine).
 *
 * Memory: optim_state_bytes = soma_optim_size (MQ: one float per matrix;
 * Adam: two per parameter); plan_mib = soma_rule_plan's total;
 * rss_mib = growth of the resident set while the variant was built and
 * warmed up (each variant is built after the previous one, so this is its
 * own footprint); peak_rss_mib is the process's, the same on every line.
 *
 * Matrix multiplies per iteration: counted by the rule for pc
 * (soma__pc_matmuls, src/rule/pc.h), 3L-1 for bp (by construction: L
 * forward, L dW, L-1 dX; bp does not count).  The target of issue 4 is the
 * paper's Table 4: SeqIL 7L-1 against BP 3L-1, ceiling 1.1x that ratio on
 * the step time seqil/bp.  flop_ratio weighs each multiply by its size
 * (the first layer's input VJP is never needed, so PC's extra multiplies
 * are all on the smaller hidden layers).
 *
 * usage: bench_pc THREADS STEPS REPEATS [NET]
 * Prints one line per variant, then one per ratio.
 */
#include "soma.h"
#include "rule/pc.h"
#define BENCH_NAME "bench_pc"
#include "bench_util.h"

#define WARMUP 3

typedef struct variant {
    const char *name, *rule;
    soma_optim_kind opt;
    float lr;
    soma_pc_order order;
    /* filled at run time */
    soma_net *net;
    soma_rule *r;
    soma_loader *ld;
    int epoch;
    double times[MAX_REPEATS], step_s, rss, last_loss;
    int64_t matmuls;
} variant;

/* steps training iterations of v; the last one's mean loss into v->last_loss */
static int run_steps(variant *v, int steps)
{
    soma_batch b;
    for (int s = 0; s < steps; s++) {
        next_batch(v->ld, &v->epoch, &b);
        soma_step_stats st = { 0 };
        if (soma_rule_train_batch(v->r, &b, v->lr, NULL, &st)) return fail(v->name);
        v->last_loss = mean_loss(&st);
    }
    return 0;
}

static variant *find(variant *v, int nv, const char *name)
{
    for (int i = 0; i < nv; i++)
        if (!strcmp(v[i].name, name)) return &v[i];
    return NULL;
}

int main(int argc, char **argv)
{
    soma_exec_tuned(argv);   /* as the CLI: OMP_WAIT_POLICY, OPENBLAS_CORETYPE */
    if (argc < 4) {
        fprintf(stderr, "usage: %s THREADS STEPS REPEATS [NET]\n", argv[0]);
        return 2;
    }
    int threads = atoi(argv[1]), steps = atoi(argv[2]), repeats = atoi(argv[3]);
    const char *spec = argc > 4 ? argv[4] : "3072-1024-1024-1024-10";
    const int B = 64;
    if (threads <= 0 || steps <= 0 || repeats <= 0 || repeats > MAX_REPEATS) {
        fprintf(stderr, "bench_pc: THREADS, STEPS > 0 and REPEATS in 1..%d\n", MAX_REPEATS);
        return 2;
    }
    soma_set_threads(threads);

    soma_dataset *train;
    if (soma_dataset_open(&train, NULL, "cifar10", "data/cifar10", 0))
        return fail("cifar10 (run make data)");

    variant vs[] = {
        { .name = "bp-sgd", .rule = "bp", .opt = SOMA_OPTIM_SGD, .lr = 0.01f },
        { .name = "bp-adam", .rule = "bp", .opt = SOMA_OPTIM_ADAM, .lr = 1.8e-5f },
        { .name = "seqil-sgd", .rule = "pc", .opt = SOMA_OPTIM_SGD, .lr = 1e-3f,
          .order = SOMA_PC_SEQUENTIAL },
        { .name = "seqil-mq", .rule = "pc", .opt = SOMA_OPTIM_MQ, .lr = 3e-5f,
          .order = SOMA_PC_SEQUENTIAL },
        { .name = "seqil-adam", .rule = "pc", .opt = SOMA_OPTIM_ADAM, .lr = 3e-5f,
          .order = SOMA_PC_SEQUENTIAL },
        { .name = "il-sgd", .rule = "pc", .opt = SOMA_OPTIM_SGD, .lr = 1e-3f,
          .order = SOMA_PC_SIMULTANEOUS },
    };
    const int nv = (int)(sizeof vs / sizeof *vs);
    const int T = 3;

    for (int i = 0; i < nv; i++) {
        variant *v = &vs[i];
        double rss0 = cur_rss_mib();
        soma_net_options o;
        soma_net_options_default(&o);
        o.in_c = train->c; o.in_h = train->h; o.in_w = train->w;
        o.seed = 0;
        if (soma_net_new(&v->net, spec, &o)) return fail(spec);
        soma_rule_config rc;
        soma_rule_config_default(&rc);   /* pc_*: T 3, gamma 0.05, soft clamp beta 100 */
        soma_optim_config_default(&rc.optim, v->opt);
        rc.optim.lr = v->lr;
        rc.pc_T = T;
        rc.pc_order = v->order;
        if (soma_rule_new(&v->r, v->rule, v->net, &rc, B)) return fail(v->name);
        soma_loader_config lc = { .batch = B, .seed = 0, .shuffle = 1, .normalize = 0,
                                  .drop_last = 1 };
        if (soma_loader_new(&v->ld, train, &lc)) return fail("loader");
        soma_loader_start_epoch(v->ld, 0);
        if (run_steps(v, WARMUP)) return 1;   /* first touch of every buffer */
        v->rss = cur_rss_mib() - rss0;   /* the peak cannot be split between variants */
        v->matmuls = strcmp(v->rule, "pc") ? -1 : soma__pc_matmuls(v->r);
    }

    for (int r = 0; r < repeats; r++)
        for (int i = 0; i < nv; i++) {
            double t0 = now_s();
            if (run_steps(&vs[i], steps)) return 1;
            vs[i].times[r] = (now_s() - t0) / steps;
        }

    /* layer sizes, for the multiply counts and their FLOP weights */
    const soma_net *n = vs[0].net;
    int L = 0;
    double ff = 0, ff_first = 0;   /* sum of in*out over the dense layers; the first's */
    for (int i = 0; i < n->n_layers; i++) {
        const soma_layer *l = &n->layers[i];
        if (l->kind != SOMA_LAYER_DENSE && l->kind != SOMA_LAYER_CONV) continue;
        double mk = (double)l->in_size * (double)l->out_size;
        if (!L) ff_first = mk;
        ff += mk;
        L++;
    }
    const int bp_mm = 3 * L - 1;
    /* bp: forward + dW on every layer, dX on all but the first;
     * pc: forward + dW on every layer, and per iteration an input VJP and
     * a new prediction on every layer but the first (docs/pc.md, Cost) */
    const double bp_flops = 3 * ff - ff_first, pc_flops = (2 + 2.0 * T) * ff - 2.0 * T * ff_first;

    double peak = peak_rss_mib();
    for (int i = 0; i < nv; i++) {
        variant *v = &vs[i];
        v->step_s = sort_median(v->times, repeats);
        soma_mem_plan plan;
        soma_rule_plan(v->r, &plan);
        int is_pc = !strcmp(v->rule, "pc");
        printf("soma pc variant=%s T=%d batch=%d threads=%d steps=%d repeats=%d net=%s "
               "step_ms=%.3f min_ms=%.3f samples_per_s=%.1f matmuls=%lld optim_state_bytes=%zu "
               "plan_mib=%.1f rss_mib=%.1f peak_rss_mib=%.1f loss=%.4f\n",
               v->name, is_pc ? T : 0, B, threads, steps, repeats, spec, v->step_s * 1e3,
               v->times[0] * 1e3, B / v->step_s, (long long)(is_pc ? v->matmuls : bp_mm),
               soma_optim_size(soma_rule_optim(v->r)), plan.total / MIB, v->rss, peak,
               v->last_loss);
    }
    const double target = (7.0 * L - 1) / (3.0 * L - 1), ceiling = 1.1 * target;
    static const char *const pairs[][2] = {
        { "seqil-sgd", "bp-sgd" }, { "seqil-mq", "bp-sgd" }, { "seqil-adam", "bp-adam" },
        { "il-sgd", "bp-sgd" },
    };
    for (size_t k = 0; k < sizeof pairs / sizeof *pairs; k++) {
        variant *a = find(vs, nv, pairs[k][0]), *b = find(vs, nv, pairs[k][1]);
        double ratio = a->step_s / b->step_s;
        printf("soma pc ratio=%s/%s threads=%d L=%d step_ratio=%.3f matmul_ratio=%.3f "
               "flop_ratio=%.3f target=%.3f ceiling=%.3f within=%d\n",
               a->name, b->name, threads, L, ratio, (double)a->matmuls / bp_mm,
               pc_flops / bp_flops, target, ceiling, ratio <= ceiling);
    }

    for (int i = 0; i < nv; i++) {
        soma_loader_free(vs[i].ld);
        soma_rule_free(vs[i].r);
        soma_net_free(vs[i].net);
    }
    soma_dataset_free(train);
    return 0;
}
