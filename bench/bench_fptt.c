/*
 * bench_fptt.c - memory and speed of FPTT (rule "fptt", docs/fptt.md) next to
 * BPTT on the same LTC spiking nets (issue 8).
 *
 * Nets (notes/fptt.md 2.1-2.3):
 *   smnist  1-rltc256-rltc256-10, the liquid readout (--readout ltc): two
 *           recurrent LTC layers (adaptive threshold 0.1 + 1.8 eta, hard
 *           reset, multi-Gaussian surrogate, sigmoid tau maps of [I, state]),
 *           state u ~ U[0,1), eta = b0 at each sequence start (--ltc-init
 *           uniform, the authors' S-MNIST init); one pixel per step
 *           (sequential encoding), CE on the readout's last step (reduce
 *           last), Adamax 3e-3, clip 1, FPTT alpha 0.1, beta 0.5, K = 1, no
 *           auxiliary loss.  Data: a synthetic batch of T random pixels in
 *           [0,1) and random labels (sequential encoding needs T = the
 *           sample length, so any T works).
 *   adding  2-ltc128-1, no readout (the last dense is the output), the
 *           adding-task cell (--ltc-neuron lif --ltc-threshold 0.5: fixed
 *           threshold), frames encoding (value, marker) per step, MSE on the
 *           last step, Adam 3e-3, clip 1, FPTT alpha 0.5, beta 0.5, K = T/10
 *           (the seed's "10 parts"), batch 128; one batch of soma's adding
 *           loader (soma_loader_new_adding).
 *
 * Modes:
 *   rss RULE T [BATCH]            RULE fptt or bptt on the smnist net (batch
 *                                 32 by default): one training sequence
 *                                 (soma_rule_train_batch, no warm-up), then
 *                                 the planned bytes (soma_rule_plan) next to
 *                                 the measured peak RSS and its growth over
 *                                 the RSS before the rule was built (the
 *                                 data, the net and OpenBLAS's buffers exist
 *                                 by then, so the delta is the rule's).
 *   rss-adding RULE T [K] [BATCH] the same on the adding net; K (fptt only)
 *                                 defaults to T/10, or to the divisor of T
 *                                 nearest T/10 when 10 does not divide T.
 *   speed THREADS STEPS REPEATS [T] [BATCH] [fptt|bptt|both]
 *                                 whole training sequences of FPTT K = 1 and
 *                                 BPTT on the smnist net, each with its own
 *                                 net (same seed) and rule, on one fixed
 *                                 synthetic batch.  Defaults T = 100, batch
 *                                 32 (about a second per FPTT sequence on the
 *                                 2 shared cores here; T = 784 at batch 64 is
 *                                 the S-MNIST setting but takes ~10-15x longer).
 *                                 One warm-up sequence of each, then REPEATS
 *                                 repeats of STEPS sequences, interleaved
 *                                 (fptt, bptt, fptt, ...) so a noisy machine
 *                                 slows both alike; seq_ms is the median over
 *                                 the repeats of the time per sequence batch.
 *                                 A last argument fptt or bptt runs that rule
 *                                 alone (for profiling; no ratio line).
 * Run each rss case in a fresh process (bench/run_fptt.sh does): the peak
 * RSS is the process's.  The same model in PyTorch: bench/torch_fptt.py.
 *
 * Prints one result line per rule (speed: then a ratio line).
 */
#define BENCH_NAME "bench_fptt"
#include "bench_util.h"

#define SMNIST_NET "1-rltc256-rltc256-10"
#define ADDING_NET "2-ltc128-1"

/* The S-MNIST LTC net: one input per step, liquid readout, uniform init. */
static soma_status make_smnist_net(soma_net **net)
{
    soma_net_options o;
    soma_net_options_default(&o);
    o.in_c = 1; o.in_h = 1; o.in_w = 1;
    o.spiking = 1;
    o.readout = SOMA_READOUT_LTC;
    o.ltc.init = SOMA_STATE_UNIFORM;
    return soma_net_new(net, SMNIST_NET, &o);
}

/* The adding-task LTC net: (value, marker) per step, fixed threshold 0.5. */
static soma_status make_adding_net(soma_net **net)
{
    soma_net_options o;
    soma_net_options_default(&o);
    o.in_c = 2; o.in_h = 1; o.in_w = 1;
    o.spiking = 1;
    o.readout = SOMA_READOUT_NONE;
    o.ltc.kind = SOMA_NEURON_LIF;
    o.ltc.threshold = 0.5f;
    return soma_net_new(net, ADDING_NET, &o);
}

static void smnist_config(soma_rule_config *rc, int T)
{
    soma_rule_config_default(rc);
    soma_optim_config_default(&rc->optim, SOMA_OPTIM_ADAMAX);
    rc->optim.lr = 3e-3f;
    rc->loss = SOMA_LOSS_CE;
    rc->clip_norm = 1.0f;
    rc->T = T;
    rc->encoding = SOMA_ENC_SEQUENTIAL;
    rc->sample_size = T;
    rc->reduce = SOMA_REDUCE_LAST;
    rc->trunc = 0;
    rc->fptt_alpha = 0.1f;
    rc->fptt_beta = 0.5f;
    rc->fptt_k = 1;
    rc->fptt_aux = 0;
}

static void adding_config(soma_rule_config *rc, int T, int K)
{
    soma_rule_config_default(rc);
    soma_optim_config_default(&rc->optim, SOMA_OPTIM_ADAM);
    rc->optim.lr = 3e-3f;
    rc->loss = SOMA_LOSS_MSE;
    rc->clip_norm = 1.0f;
    rc->T = T;
    rc->encoding = SOMA_ENC_FRAMES;
    rc->sample_size = 2 * T;
    rc->reduce = SOMA_REDUCE_LAST;
    rc->trunc = 0;
    rc->fptt_alpha = 0.5f;
    rc->fptt_beta = 0.5f;
    rc->fptt_k = K;
    rc->fptt_aux = 0;
}

/* The divisor of T nearest T/10 (T/10 itself when 10 divides T). */
static int tenth_window(int T)
{
    int best = 1;
    double want = T / 10.0, bd = 1e30;
    for (int k = 1; k <= T; k++) {
        if (T % k) continue;
        double d = k > want ? k - want : want - k;
        if (d < bd) { bd = d; best = k; }
    }
    return best;
}

/* A synthetic S-MNIST-style batch: B sequences of T pixels in [0,1). */
static int synth_batch(soma_batch *b, float **x, int32_t **y, int B, int T, uint64_t seed)
{
    *x = malloc((size_t)B * T * sizeof(float));
    *y = malloc((size_t)B * sizeof(int32_t));
    if (!*x || !*y) { fprintf(stderr, "bench_fptt: out of memory\n"); return 1; }
    soma_rng rng;
    soma_rng_seed(&rng, seed);
    for (size_t i = 0; i < (size_t)B * T; i++) (*x)[i] = soma_rng_uniform(&rng);
    for (int i = 0; i < B; i++) (*y)[i] = (int32_t)soma_rng_below(&rng, 10);
    *b = (soma_batch){ .n = B, .c = 1, .h = 1, .w = T, .x = *x, .y = *y, .target = NULL, .index = NULL };
    return 0;
}

static int check_rule(const char *rule)
{
    if (strcmp(rule, "fptt") && strcmp(rule, "bptt")) {
        fprintf(stderr, "bench_fptt: RULE must be fptt or bptt, got '%s'\n", rule);
        return 0;
    }
    return 1;
}

/* One training sequence of `rule` on batch b (built before the baseline);
 * prints plan, peak and delta. */
static int rss_run(const char *task, const char *rule, soma_net *net, soma_rule_config *rc,
                   const soma_batch *b, double base)
{
    soma_rule *r;
    if (soma_rule_new(&r, rule, net, rc, b->n)) return fail("rule");
    soma_rng rng;
    soma_rng_seed(&rng, 7);
    soma_step_stats st = { 0 };
    double t0 = now_s();
    if (soma_rule_train_batch(r, b, rc->optim.lr, &rng, &st)) return fail("train sequence");
    double seq_s = now_s() - t0;
    soma_mem_plan plan;
    soma_rule_plan(r, &plan);
    double peak = peak_rss_mib();
    int K = strcmp(rule, "fptt") ? rc->T : rc->fptt_k;
    printf("soma fptt-rss task=%s rule=%s net=%s batch=%d T=%d K=%d threads=%d seq_ms=%.1f "
           "updates=%d plan_act_mib=%.2f plan_mib=%.2f base_rss_mib=%.1f peak_rss_mib=%.1f "
           "delta_rss_mib=%.1f loss=%.4f\n",
           task, rule, soma_net_spec(net), b->n, rc->T, K, soma_get_threads(), seq_s * 1e3,
           rc->T / K, plan.activations / MIB, plan.total / MIB, base, peak, peak - base,
           mean_loss(&st));
    soma_rule_free(r);
    return 0;
}

static int bench_rss(const char *rule, int T, int B)
{
    soma_set_threads(1);
    soma_batch b;
    float *x;
    int32_t *y;
    if (synth_batch(&b, &x, &y, B, T, 1)) return 1;
    soma_net *net;
    if (make_smnist_net(&net)) return fail("net");
    blas_warmup();
    double base = cur_rss_mib();
    soma_rule_config rc;
    smnist_config(&rc, T);
    int e = rss_run("smnist", rule, net, &rc, &b, base);
    soma_net_free(net);
    free(x);
    free(y);
    return e;
}

static int bench_rss_adding(const char *rule, int T, int K, int B)
{
    soma_set_threads(1);
    soma_loader *ld;
    if (soma_loader_new_adding(&ld, T, B, B, 1, 1)) return fail("adding loader");
    soma_loader_start_epoch(ld, 0);
    soma_batch b;
    if (!soma_loader_next(ld, &b)) return fail("adding batch");
    soma_net *net;
    if (make_adding_net(&net)) return fail("net");
    blas_warmup();
    double base = cur_rss_mib();
    soma_rule_config rc;
    adding_config(&rc, T, strcmp(rule, "fptt") ? 1 : K);
    int e = rss_run("adding", rule, net, &rc, &b, base);
    soma_net_free(net);
    soma_loader_free(ld);
    return e;
}

/* which: bit 0 fptt, bit 1 bptt (the ratio line needs both). */
static int bench_speed(int threads, int steps, int repeats, int T, int B, int which)
{
    soma_set_threads(threads);
    soma_batch b;
    float *x;
    int32_t *y;
    if (synth_batch(&b, &x, &y, B, T, 1)) return 1;
    const char *names[2] = { "fptt", "bptt" };
    soma_net *net[2];
    soma_rule *rule[2];
    soma_rule_config rc;
    smnist_config(&rc, T);
    soma_rng rng[2];
    for (int k = 0; k < 2; k++) {
        net[k] = NULL;
        rule[k] = NULL;
        if (!(which >> k & 1)) continue;
        if (make_smnist_net(&net[k])) return fail("net");
        if (soma_rule_new(&rule[k], names[k], net[k], &rc, B)) return fail("rule");
        soma_rng_seed(&rng[k], 7);
    }
    double times[2][MAX_REPEATS];
    soma_step_stats last[2];
    memset(last, 0, sizeof last);
    for (int r = -1; r < repeats; r++) {           /* r = -1: one warm-up sequence each */
        int n = r < 0 ? 1 : steps;
        for (int k = 0; k < 2; k++) {
            if (!rule[k]) continue;
            double t0 = bench_clock_s();
            for (int s = 0; s < n; s++) {
                soma_step_stats st = { 0 };
                if (soma_rule_train_batch(rule[k], &b, rc.optim.lr, &rng[k], &st)) return fail("train sequence");
                last[k] = st;
            }
            if (r >= 0) times[k][r] = (bench_clock_s() - t0) / n;
        }
    }
    double seq_s[2];
    for (int k = 0; k < 2; k++) {
        if (!rule[k]) continue;
        seq_s[k] = sort_median(times[k], repeats);
        soma_mem_plan plan;
        soma_rule_plan(rule[k], &plan);
        printf("soma fptt-speed rule=%s net=%s batch=%d T=%d K=%d threads=%d steps=%d repeats=%d "
               "seq_ms=%.3f ms_per_sample=%.3f samples_per_s=%.2f updates_per_seq=%d "
               "ms_per_update=%.4f plan_mib=%.2f loss=%.4f clock=%s\n",
               names[k], SMNIST_NET, B, T, k ? T : 1, threads, steps, repeats, seq_s[k] * 1e3,
               seq_s[k] * 1e3 / B, B / seq_s[k], k ? 1 : T, seq_s[k] * 1e3 / (k ? 1 : T),
               plan.total / MIB, mean_loss(&last[k]), bench_cpu_clock() ? "cpu" : "wall");
    }
    if (which == 3)
        printf("soma fptt-speed ratio=fptt/bptt batch=%d T=%d threads=%d seq_ratio=%.3f peak_rss_mib=%.1f\n",
               B, T, threads, seq_s[0] / seq_s[1], peak_rss_mib());
    for (int k = 0; k < 2; k++) {
        soma_rule_free(rule[k]);
        soma_net_free(net[k]);
    }
    free(x);
    free(y);
    return 0;
}

static int usage(const char *argv0)
{
    fprintf(stderr, "usage: %s rss fptt|bptt T [BATCH]\n"
                    "       %s rss-adding fptt|bptt T [K] [BATCH]\n"
                    "       %s speed THREADS STEPS REPEATS [T] [BATCH] [fptt|bptt|both]\n",
            argv0, argv0, argv0);
    return 2;
}

int main(int argc, char **argv)
{
    soma_exec_tuned(argv);   /* as the CLI: OMP_WAIT_POLICY, OPENBLAS_CORETYPE */
    if (argc < 3) return usage(argv[0]);
    /* as the CLI (SOMA_DENORMALS=1 keeps them); torch_fptt.py does the same */
    soma_flush_denormals(-1);
    const char *mode = argv[1];
    if (!strcmp(mode, "rss") || !strcmp(mode, "rss-adding")) {
        int adding = !strcmp(mode, "rss-adding");
        if (argc < 4) return usage(argv[0]);
        const char *rule = argv[2];
        if (!check_rule(rule)) return 2;
        int T = atoi(argv[3]);
        if (T < 2) { fprintf(stderr, "bench_fptt: T must be >= 2\n"); return 2; }
        if (!adding) {
            int B = argc > 4 ? atoi(argv[4]) : 32;
            if (B <= 0) { fprintf(stderr, "bench_fptt: BATCH must be > 0\n"); return 2; }
            return bench_rss(rule, T, B);
        }
        int K = argc > 4 ? atoi(argv[4]) : 0;
        int B = argc > 5 ? atoi(argv[5]) : 128;
        if (K == 0) K = tenth_window(T);
        if (K < 0 || T % K || B <= 0) {
            fprintf(stderr, "bench_fptt: K must divide T (%d), BATCH > 0\n", T);
            return 2;
        }
        return bench_rss_adding(rule, T, K, B);
    }
    if (!strcmp(mode, "speed")) {
        if (argc < 5) return usage(argv[0]);
        int threads = atoi(argv[2]), steps = atoi(argv[3]), repeats = atoi(argv[4]);
        int T = argc > 5 ? atoi(argv[5]) : 100;
        int B = argc > 6 ? atoi(argv[6]) : 32;
        const char *which = argc > 7 ? argv[7] : "both";
        int w = !strcmp(which, "fptt") ? 1 : !strcmp(which, "bptt") ? 2 : !strcmp(which, "both") ? 3 : 0;
        if (!w) { fprintf(stderr, "bench_fptt: speed RULES must be fptt, bptt or both\n"); return 2; }
        if (threads <= 0 || steps <= 0 || repeats <= 0 || repeats > MAX_REPEATS || T < 2 || B <= 0) {
            fprintf(stderr, "bench_fptt: THREADS, STEPS, BATCH > 0, REPEATS in 1..%d, T >= 2\n", MAX_REPEATS);
            return 2;
        }
        return bench_speed(threads, steps, repeats, T, B, w);
    }
    return usage(argv[0]);
}
