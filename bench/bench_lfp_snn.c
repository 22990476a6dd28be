/*
 * bench_lfp_snn.c - speed of LFP through time on a Heaviside LIF MLP, next
 * to surrogate BPTT on the same net (issue 6: "the LIF-MLP step vs the same
 * model in PyTorch in refs/"; the PyTorch side is bench/torch_lfp_snn.py).
 *
 * The model is exactly configs/lfp-lif-mnist.ini as `soma train --config`
 * builds it (tools/soma.c, src/train/train.c): net 784-1000-10 on MNIST
 * (input shape 1x28x28, torch init, seed 0), LIF cells alpha 0.9, threshold
 * 1, reset by subtraction, no detach, --surrogate none, --readout spike (the
 * output layer is a LIF cell of the hidden kind), reduce sum (spike counts
 * are the scores), T = 25, direct encoding (static input: the input layer
 * runs once per sequence), CE loss (reported only), rule "lfp" with its
 * defaults (epsilon rule, eps 1e-6, denominator |v_t|, no norm, no AGC),
 * SGD lr 0.02 momentum 0.9, clip 3, batch 128; loader normalised, shuffled
 * (seed 0).  The cosine schedule is left out: the learning rate stays 0.02.
 *
 * rule=bptt: the same net with the fast-sigmoid surrogate (slope 25; with
 * "none" BPTT's gradient would be 0), same readout, reduce, loss, optimizer
 * and clip, rule "bptt" (full BPTT), built fresh from the same seed.  The
 * ratio lfp/bptt is therefore like for like: only the rule differs.
 *
 * Timing: one warm-up training step, then REPEATS repeats of STEPS steps of
 * soma_rule_train_batch (loader included); step_ms is the median over the
 * repeats; loss / acc are the last repeat's mean CE on the spike counts and
 * its training accuracy.  peak_rss_mib is the process's peak so far: with
 * RULE "both" the bptt line's peak includes the lfp run's (give RULE lfp or
 * bptt for a process of its own).
 *
 * check: WARM (default 100) LFP training steps of batch BATCH (default 32)
 * on shuffled batches (their counts then near T/2, where the reward's
 * sigmoids are not flat), then with a fresh rule (no momentum yet) one LFP
 * feedback (soma_lfp_feedback) on the first, unshuffled training batch and
 * one training step on the same batch, written to FILE
 * (safetensors) for bench/torch_lfp_snn.py --check: "x" (B, 784) the
 * normalised batch, "y" (B) labels, "counts" (B, 10) the output spike counts
 * (soma_rule_predict), and per parameter NAME (net order, also in the
 * metadata key "params"): "w.NAME" before, "fb.NAME" = fb (LFP's ascent
 * direction, = -grad store, before clipping), "after.NAME" after the step.
 *
 * usage: bench_lfp_snn THREADS STEPS [REPEATS] [BATCH] [lfp|bptt|both]
 *        bench_lfp_snn check FILE [BATCH] [WARM]
 * Prints one result line per rule.
 */
#define BENCH_NAME "bench_lfp_snn"
#include "bench_util.h"

#define SPEC "784-1000-10"
#define T_STEPS 25
#define LR 0.02f

/* configs/lfp-lif-mnist.ini's net; bptt: the fast-sigmoid surrogate (slope 25). */
static soma_status make_net(soma_net **net, int bptt)
{
    soma_net_options o;
    soma_net_options_default(&o);   /* 1x28x28, relu (unused), torch init, seed 0 */
    o.in_c = 1; o.in_h = 28; o.in_w = 28;
    o.seed = 0;
    o.spiking = 1;
    soma_cell_params_default(&o.cell, SOMA_NEURON_LIF);
    o.cell.alpha = 0.9f;
    o.cell.threshold = 1.0f;
    o.cell.reset = SOMA_RESET_SUBTRACT;
    if (bptt) {
        soma_surrogate_default(&o.cell.surr, SOMA_SURR_FAST_SIGMOID);
        o.cell.surr.slope = 25.0f;
    } else {
        soma_surrogate_default(&o.cell.surr, SOMA_SURR_NONE);
    }
    o.readout = SOMA_READOUT_SPIKE;  /* a cell of the hidden kind (o.cell) */
    return soma_net_new(net, SPEC, &o);
}

static void rule_config(soma_rule_config *rc)
{
    soma_rule_config_default(rc);   /* lfp: epsilon, eps 1e-6, denom 0, no norm, no agc */
    soma_optim_config_default(&rc->optim, SOMA_OPTIM_SGD);
    rc->optim.lr = LR;
    rc->optim.momentum = 0.9f;
    rc->loss = SOMA_LOSS_CE;
    rc->clip_norm = 3.0f;
    rc->T = T_STEPS;
    rc->encoding = SOMA_ENC_DIRECT;
    rc->reduce = SOMA_REDUCE_SUM;
    rc->trunc = 0;
    rc->sample_size = 784;
}

static int bench_rule(const char *rule_name, soma_dataset *train, int threads, int steps,
                      int repeats, int B)
{
    int bptt = !strcmp(rule_name, "bptt");
    soma_net *net;
    if (make_net(&net, bptt)) return fail("net");
    soma_rule_config rc;
    rule_config(&rc);
    soma_rule *rule;
    if (soma_rule_new(&rule, rule_name, net, &rc, B)) return fail("rule");
    soma_loader_config lc = { .batch = B, .seed = 0, .shuffle = 1, .normalize = 1, .drop_last = 1 };
    soma_loader *ld;
    if (soma_loader_new(&ld, train, &lc)) return fail("loader");

    double times[MAX_REPEATS];
    int epoch = 0;
    soma_loader_start_epoch(ld, epoch);
    soma_batch b;
    soma_step_stats rep = { 0 };
    for (int r = -1; r < repeats; r++) {          /* r = -1: one warm-up step */
        int n = r < 0 ? 1 : steps;
        soma_step_stats st = { 0 };
        double t0 = now_s();
        for (int s = 0; s < n; s++) {
            next_batch(ld, &epoch, &b);
            if (soma_rule_train_batch(rule, &b, rc.optim.lr, NULL, &st)) return fail("train step");
        }
        if (r >= 0) times[r] = (now_s() - t0) / n;
        rep = st;
    }
    double step_s = sort_median(times, repeats);
    soma_mem_plan plan;
    soma_rule_plan(rule, &plan);
    printf("soma lfp_snn rule=%s net=%s batch=%d threads=%d T=%d steps=%d repeats=%d step_ms=%.3f "
           "ms_per_sample=%.4f samples_per_s=%.1f peak_rss_mib=%.1f plan_mib=%.1f loss=%.4f acc=%.3f\n",
           rule_name, SPEC, B, threads, T_STEPS, steps, repeats, step_s * 1e3, step_s * 1e3 / B,
           B / step_s, peak_rss_mib(), plan.total / MIB, mean_loss(&rep),
           rep.n ? (double)rep.correct / rep.n : 0.0);
    fflush(stdout);
    soma_loader_free(ld);
    soma_rule_free(rule);
    soma_net_free(net);
    return 0;
}

static int check_dump(const char *path, soma_dataset *train, int B, int warm)
{
    soma_set_threads(1);
    soma_net *net;
    if (make_net(&net, 0)) return fail("net");
    soma_rule_config rc;
    rule_config(&rc);
    soma_rule *rule;
    soma_batch b;
    if (warm > 0) {
        /* train a little first: at init the output counts are far from T/2,
         * where the reward's sigmoids are flat; then a fresh rule (a fresh
         * optimizer: the dumped step starts without momentum) */
        soma_loader_config wc = { .batch = B, .seed = 1, .shuffle = 1, .normalize = 1, .drop_last = 1 };
        soma_loader *wl;
        if (soma_rule_new(&rule, "lfp", net, &rc, B)) return fail("rule");
        if (soma_loader_new(&wl, train, &wc)) return fail("loader");
        soma_loader_start_epoch(wl, 0);
        for (int s = 0; s < warm && soma_loader_next(wl, &b); s++)
            if (soma_rule_train_batch(rule, &b, rc.optim.lr, NULL, NULL)) return fail("warm-up step");
        soma_loader_free(wl);
        soma_rule_free(rule);
    }
    if (soma_rule_new(&rule, "lfp", net, &rc, B)) return fail("rule");
    soma_loader *ld;
    if (first_batch(&ld, train, B, 1, &b)) return 1;
    soma_st_writer *w;
    if (soma_st_writer_new(&w)) return fail("writer");
    char names[1024] = "", meta[128];
    if (add_batch(w, &b) || add_params(w, net, "w", 0, names, sizeof names)) return fail("dump");
    soma_step_stats st = { 0 };
    if (soma_lfp_feedback(rule, &b, NULL, NULL, &st)) return fail("lfp feedback");
    /* fb = -(the grad store) */
    if (add_params(w, net, "fb", -1, NULL, 0)) return fail("dump fb");
    const float *scores;
    if (soma_rule_predict(rule, &b, &scores, NULL)) return fail("predict");
    int64_t cs[2] = { b.n, soma_net_outputs(net) };
    if (soma_st_writer_add(w, "counts", SOMA_F32, 2, cs, scores)) return fail("dump counts");
    if (soma_rule_train_batch(rule, &b, rc.optim.lr, NULL, NULL)) return fail("train step");
    if (add_params(w, net, "after", 0, NULL, 0)) return fail("dump after");
    soma_st_writer_meta(w, "params", names);
    snprintf(meta, sizeof meta, "%d", T_STEPS);
    soma_st_writer_meta(w, "T", meta);
    meta_g(w, "lr", rc.optim.lr);
    meta_g(w, "momentum", rc.optim.momentum);
    meta_g(w, "clip", rc.clip_norm);
    meta_g(w, "loss", mean_loss(&st));
    if (soma_st_writer_save(w, path)) return fail("save");
    printf("soma lfp_snn check batch=%d T=%d warm=%d loss=%.4f params=%s file=%s\n", b.n, T_STEPS,
           warm, mean_loss(&st), names, path);
    soma_st_writer_free(w);
    soma_loader_free(ld);
    soma_rule_free(rule);
    soma_net_free(net);
    return 0;
}

static int usage(const char *argv0)
{
    fprintf(stderr, "usage: %s THREADS STEPS [REPEATS] [BATCH] [lfp|bptt|both]\n"
                    "       %s check FILE [BATCH] [WARM]\n", argv0, argv0);
    return 2;
}

int main(int argc, char **argv)
{
    soma_exec_tuned(argv);   /* as the CLI: OMP_WAIT_POLICY, OPENBLAS_CORETYPE */
    if (argc < 3) return usage(argv[0]);
    int check = !strcmp(argv[1], "check");
    int threads = 1, steps = 0, repeats = 3, B = 128, warm = 0;
    const char *which = "both";
    if (check) {
        B = argc > 3 ? atoi(argv[3]) : 32;
        warm = argc > 4 ? atoi(argv[4]) : 100;
        if (B <= 0 || warm < 0) return usage(argv[0]);
    } else {
        threads = atoi(argv[1]);
        steps = atoi(argv[2]);
        repeats = argc > 3 ? atoi(argv[3]) : 3;
        B = argc > 4 ? atoi(argv[4]) : 128;
        which = argc > 5 ? argv[5] : "both";
        if (threads <= 0 || steps <= 0 || repeats <= 0 || repeats > MAX_REPEATS || B <= 0) {
            fprintf(stderr, "bench_lfp_snn: arguments must be positive (repeats <= 64)\n");
            return 2;
        }
        if (strcmp(which, "lfp") && strcmp(which, "bptt") && strcmp(which, "both")) return usage(argv[0]);
    }
    soma_dataset *train;
    if (open_mnist(&train, NULL)) return 1;
    int rc = 0;
    if (check) {
        rc = check_dump(argv[2], train, B, warm);
    } else {
        soma_set_threads(threads);
        if (!strcmp(which, "lfp") || !strcmp(which, "both")) rc = bench_rule("lfp", train, threads, steps, repeats, B);
        if (!rc && (!strcmp(which, "bptt") || !strcmp(which, "both")))
            rc = bench_rule("bptt", train, threads, steps, repeats, B);
    }
    soma_dataset_free(train);
    return rc;
}
