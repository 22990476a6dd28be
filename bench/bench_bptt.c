/*
 * bench_bptt.c - speed and memory of BPTT training of spiking nets.
 *
 * Cells as in configs/bptt-lif-mnist.ini: LIF hidden cells (alpha 0.9,
 * threshold 1, reset by subtraction, fast-sigmoid surrogate slope 25), a
 * leaky-integrator readout (alpha 0.9), class scores = mean of the readout
 * over the T steps, cross-entropy, Adam lr 1e-3, rule "bptt" (full BPTT).
 * The same models in PyTorch: bench/torch_snn.py (same output format).
 *
 *   mlp     784-1000-10 on MNIST, direct encoding (the normalised image is
 *           the input current at every step; rule bptt then runs the stateless
 *           input layer once per sequence), T = 25, batch 128 by default.
 *           Times whole training steps (soma_rule_train_batch, loader included).
 *   smnist  1-r512-10 (one recurrent LIF layer of 512) on sequential MNIST:
 *           one pixel per step, T = 784, batch 32 by default.  Same timing;
 *           also prints ms per sample.
 *   rss     1-rH-10 (H = 512 by default) with BPTT over T steps of a synthetic
 *           sequential batch (random inputs and labels, no dataset): one
 *           training step (no warm-up), then the planned bytes (soma_rule_plan)
 *           next to the measured peak RSS and its growth over the RSS before
 *           the rule was built.  Run each T in a fresh process (bench/run.sh
 *           does) so the peaks do not mask one another.
 *
 * Timing (mlp, smnist): one warm-up training step (it touches every cache
 * page), then REPEATS repeats of STEPS steps; step_ms is the median over the
 * repeats; loss is the last step's mean loss (a sign that training runs).
 *
 * usage: bench_bptt mlp    THREADS STEPS [REPEATS] [BATCH]
 *        bench_bptt smnist THREADS STEPS [REPEATS] [BATCH]
 *        bench_bptt rss    T [HIDDEN] [BATCH] [THREADS]
 * Prints one result line.
 */
#define BENCH_NAME "bench_bptt"
#include "bench_util.h"

/* The spiking net of every mode: LIF hidden cells, LI readout. */
static soma_status make_net(soma_net **net, const char *spec, int inputs)
{
    soma_net_options o;
    soma_net_options_default(&o);
    if (inputs == 1) { o.in_c = 1; o.in_h = 1; o.in_w = 1; }
    o.spiking = 1;
    soma_cell_params_default(&o.cell, SOMA_NEURON_LIF);
    o.cell.alpha = 0.9f;
    o.cell.threshold = 1.0f;
    o.cell.reset = SOMA_RESET_SUBTRACT;
    soma_surrogate_default(&o.cell.surr, SOMA_SURR_FAST_SIGMOID);
    o.cell.surr.slope = 25.0f;
    o.readout = SOMA_READOUT_LI;
    soma_cell_params_default(&o.readout_cell, SOMA_NEURON_LI);
    o.readout_cell.alpha = 0.9f;
    return soma_net_new(net, spec, &o);
}

static void rule_config(soma_rule_config *rc, int T, soma_encoding enc, int sample_size)
{
    soma_rule_config_default(rc);
    soma_optim_config_default(&rc->optim, SOMA_OPTIM_ADAM);
    rc->optim.lr = 1e-3f;
    rc->loss = SOMA_LOSS_CE;
    rc->T = T;
    rc->encoding = enc;
    rc->reduce = SOMA_REDUCE_MEAN;
    rc->trunc = 0;
    rc->sample_size = sample_size;
}

/* mlp / smnist: training steps on MNIST batches. */
static int bench_mnist(int smnist, int threads, int steps, int repeats, int B)
{
    const char *spec = smnist ? "1-r512-10" : "784-1000-10";
    int T = smnist ? 784 : 25;
    soma_set_threads(threads);
    soma_dataset *train;
    if (open_mnist(&train, NULL)) return 1;
    soma_net *net;
    if (make_net(&net, spec, smnist ? 1 : 784)) return fail("net");
    soma_rule_config rc;
    rule_config(&rc, T, smnist ? SOMA_ENC_SEQUENTIAL : SOMA_ENC_DIRECT, smnist ? 784 : 0);
    soma_rule *rule;
    if (soma_rule_new(&rule, "bptt", net, &rc, B)) return fail("rule");
    soma_loader_config lc = { .batch = B, .seed = 0, .shuffle = 1, .normalize = 1, .drop_last = 1 };
    soma_loader *ld;
    if (soma_loader_new(&ld, train, &lc)) return fail("loader");

    double times[MAX_REPEATS];
    int epoch = 0;
    soma_loader_start_epoch(ld, epoch);
    soma_batch b;
    soma_step_stats last = { 0 };
    for (int r = -1; r < repeats; r++) {          /* r = -1: one warm-up step */
        int n = r < 0 ? 1 : steps;
        double t0 = now_s();
        for (int s = 0; s < n; s++) {
            next_batch(ld, &epoch, &b);
            soma_step_stats st = { 0 };
            if (soma_rule_train_batch(rule, &b, rc.optim.lr, NULL, &st)) return fail("train step");
            last = st;
        }
        if (r >= 0) times[r] = (now_s() - t0) / n;
    }
    double step_s = sort_median(times, repeats);
    soma_mem_plan plan;
    soma_rule_plan(rule, &plan);
    printf("soma %s net=%s batch=%d T=%d threads=%d steps=%d repeats=%d step_ms=%.3f "
           "ms_per_sample=%.3f samples_per_s=%.1f peak_rss_mib=%.1f plan_mib=%.1f loss=%.4f\n",
           smnist ? "smnist" : "mlp", spec, B, T, threads, steps, repeats, step_s * 1e3,
           step_s * 1e3 / B, B / step_s, peak_rss_mib(), plan.total / MIB,
           mean_loss(&last));
    soma_loader_free(ld);
    soma_rule_free(rule);
    soma_net_free(net);
    soma_dataset_free(train);
    return 0;
}

/* rss: one BPTT training step over T steps of synthetic data. */
static int bench_rss(int T, int H, int B, int threads)
{
    soma_set_threads(threads);
    char spec[64];
    snprintf(spec, sizeof spec, "1-r%d-10", H);
    soma_net *net;
    if (make_net(&net, spec, 1)) return fail("net");
    blas_warmup();   /* before the baseline, so the delta is the rule's memory */
    double base = cur_rss_mib();

    /* a sequential sample of T values, one per step */
    float *x = malloc((size_t)B * T * sizeof(float));
    int32_t *y = malloc((size_t)B * sizeof(int32_t));
    if (!x || !y) { fprintf(stderr, "bench_bptt: out of memory\n"); return 1; }
    soma_rng rng;
    soma_rng_seed(&rng, 1);
    for (size_t i = 0; i < (size_t)B * T; i++) x[i] = 2.0f * soma_rng_normal(&rng);
    for (int i = 0; i < B; i++) y[i] = (int32_t)soma_rng_below(&rng, 10);
    soma_batch b = { .n = B, .c = 1, .h = 1, .w = T, .x = x, .y = y, .index = NULL };

    soma_rule_config rc;
    rule_config(&rc, T, SOMA_ENC_SEQUENTIAL, T);
    soma_rule *rule;
    if (soma_rule_new(&rule, "bptt", net, &rc, B)) return fail("rule");
    double t0 = now_s();
    soma_step_stats st = { 0 };
    if (soma_rule_train_batch(rule, &b, rc.optim.lr, NULL, &st)) return fail("train step");
    double step_s = now_s() - t0;
    soma_mem_plan plan;
    soma_rule_plan(rule, &plan);
    double peak = peak_rss_mib();
    printf("soma rss net=%s batch=%d T=%d threads=%d step_ms=%.1f plan_act_mib=%.1f "
           "plan_mib=%.1f base_rss_mib=%.1f peak_rss_mib=%.1f delta_rss_mib=%.1f\n",
           spec, B, T, threads, step_s * 1e3, plan.activations / MIB, plan.total / MIB, base,
           peak, peak - base);
    soma_rule_free(rule);
    soma_net_free(net);
    free(x);
    free(y);
    return 0;
}

static int usage(const char *argv0)
{
    fprintf(stderr, "usage: %s mlp|smnist THREADS STEPS [REPEATS] [BATCH]\n"
                    "       %s rss T [HIDDEN] [BATCH] [THREADS]\n", argv0, argv0);
    return 2;
}

int main(int argc, char **argv)
{
    soma_exec_tuned(argv);   /* as the CLI: OMP_WAIT_POLICY, OPENBLAS_CORETYPE */
    if (argc < 3) return usage(argv[0]);
    const char *mode = argv[1];
    if (!strcmp(mode, "mlp") || !strcmp(mode, "smnist")) {
        int smnist = !strcmp(mode, "smnist");
        if (argc < 4) return usage(argv[0]);
        int threads = atoi(argv[2]), steps = atoi(argv[3]);
        int repeats = argc > 4 ? atoi(argv[4]) : 3;
        int B = argc > 5 ? atoi(argv[5]) : smnist ? 32 : 128;
        if (threads <= 0 || steps <= 0 || repeats <= 0 || repeats > MAX_REPEATS || B <= 0) {
            fprintf(stderr, "bench_bptt: arguments must be positive (repeats <= 64)\n");
            return 2;
        }
        return bench_mnist(smnist, threads, steps, repeats, B);
    }
    if (!strcmp(mode, "rss")) {
        int T = atoi(argv[2]);
        int H = argc > 3 ? atoi(argv[3]) : 512;
        int B = argc > 4 ? atoi(argv[4]) : 32;
        int threads = argc > 5 ? atoi(argv[5]) : 1;
        if (T <= 0 || H <= 0 || B <= 0 || threads <= 0) {
            fprintf(stderr, "bench_bptt: arguments must be positive\n");
            return 2;
        }
        return bench_rss(T, H, B, threads);
    }
    return usage(argv[0]);
}
