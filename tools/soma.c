/*
 * soma.c - the command-line tool: train, eval, info.
 *
 * Parses options, prints progress and results, maps errors to exit codes
 * (0 ok, 1 runtime error, 2 usage error).  Everything else is the library.
 */
#include "soma.h"
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef SOMA_GIT
#define SOMA_GIT "unknown"
#endif

#define EXIT_RUNTIME 1
#define EXIT_USAGE 2

/* ===== small helpers ===================================================== */

static const char *prog = "soma";

static int usage_error(const char *fmt, const char *a, const char *b)
{
    fprintf(stderr, "%s: ", prog);
    fprintf(stderr, fmt, a, b);
    fprintf(stderr, "\n(see '%s --help')\n", prog);
    return EXIT_USAGE;
}

static int runtime_error(soma_status st)
{
    fprintf(stderr, "%s: error: %s\n", prog, soma_last_error()[0] ? soma_last_error() : soma_status_string(st));
    return st == SOMA_ERR_ARG ? EXIT_USAGE : EXIT_RUNTIME;
}

static int parse_long(const char *opt, const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (!*s || *end || errno) { usage_error("%s: '%s' is not an integer", opt, s); return 0; }
    if (v < lo || v > hi) {
        char range[64];
        snprintf(range, sizeof range, "%s must be in [%ld, %ld]", s, lo, hi);
        usage_error("%s: %s", opt, range);
        return 0;
    }
    *out = v;
    return 1;
}

static int parse_float(const char *opt, const char *s, float *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (!*s || *end || errno || !isfinite(v)) { usage_error("%s: '%s' is not a finite number", opt, s); return 0; }
    *out = (float)v;
    return 1;
}

static void list_names(FILE *f, const char *(*name_at)(int), int count)
{
    for (int i = 0; i < count; i++) fprintf(f, "%s%s", i ? ", " : "", name_at(i));
}

static const char *act_at(int i) { return soma_act_name((soma_act)i); }
static const char *optim_at(int i) { return soma_optim_name((soma_optim_kind)i); }
static const char *sched_at(int i) { return soma_sched_name((soma_sched_kind)i); }
static const char *init_at(int i) { return soma_init_name((soma_init)i); }

/* ===== soma train ======================================================== */

enum {
    O_DATA = 256, O_DATA_DIR, O_NET, O_ACT, O_INIT, O_RULE, O_LOSS, O_OPT, O_LR, O_MOMENTUM,
    O_NESTEROV, O_WD, O_BETA1, O_BETA2, O_EPS, O_SCHED, O_STEP_SIZE, O_GAMMA, O_MILESTONES,
    O_WARMUP, O_MIN_LR, O_CLIP, O_EPOCHS, O_BATCH, O_SEED, O_THREADS, O_TRAIN_LIMIT,
    O_TEST_LIMIT, O_VAL, O_AUGMENT, O_NO_VERIFY, O_SAVE, O_RESUME, O_METRICS, O_DRY_RUN,
    O_CONFIG, O_QUIET, O_HELP, O_DAMPENING,
    O_NEURON, O_T, O_ENCODING, O_GAIN, O_READOUT, O_REDUCE, O_ALPHA, O_TAU, O_THRESHOLD,
    O_RESET, O_DETACH_RESET, O_RHO, O_BETA_A, O_SURROGATE, O_SLOPE, O_WIDTH, O_READOUT_ALPHA,
    O_TRUNC, O_ENC_SEED, O_BINARY_FRAMES, O_NO_NORMALIZE, O_LR_MIN, O_RHO_MAX,
    O_LTC_NEURON, O_LTC_THRESHOLD, O_LTC_BETA_A, O_INIT_FROM, O_LTC_INIT, O_BN_GAMMA, O_AUTOENCODER, O_DIAG_EVERY, O_EVAL_EVERY, O_WARMUP_STEPS,
    O_LTC_MAP_BN, O_SHIFT,
    O_RULE_OPT = 1000   /* + index of soma_rule_option_key */
};

static const struct option train_opts[] = {
    { "data", 1, 0, O_DATA }, { "data-dir", 1, 0, O_DATA_DIR }, { "net", 1, 0, O_NET },
    { "act", 1, 0, O_ACT }, { "init", 1, 0, O_INIT }, { "rule", 1, 0, O_RULE },
    { "loss", 1, 0, O_LOSS }, { "opt", 1, 0, O_OPT }, { "lr", 1, 0, O_LR },
    { "momentum", 1, 0, O_MOMENTUM }, { "dampening", 1, 0, O_DAMPENING },
    { "nesterov", 0, 0, O_NESTEROV }, { "weight-decay", 1, 0, O_WD },
    { "beta1", 1, 0, O_BETA1 }, { "beta2", 1, 0, O_BETA2 }, { "eps", 1, 0, O_EPS },
    { "sched", 1, 0, O_SCHED }, { "step-size", 1, 0, O_STEP_SIZE }, { "gamma", 1, 0, O_GAMMA },
    { "milestones", 1, 0, O_MILESTONES }, { "warmup", 1, 0, O_WARMUP },
    { "warmup-steps", 1, 0, O_WARMUP_STEPS },
    { "min-lr", 1, 0, O_MIN_LR }, { "clip", 1, 0, O_CLIP }, { "epochs", 1, 0, O_EPOCHS },
    { "batch", 1, 0, O_BATCH }, { "seed", 1, 0, O_SEED }, { "threads", 1, 0, O_THREADS },
    { "train-limit", 1, 0, O_TRAIN_LIMIT }, { "test-limit", 1, 0, O_TEST_LIMIT },
    { "val", 1, 0, O_VAL }, { "augment", 0, 0, O_AUGMENT }, { "shift", 1, 0, O_SHIFT }, { "no-verify", 0, 0, O_NO_VERIFY },
    { "save", 1, 0, O_SAVE }, { "resume", 1, 0, O_RESUME }, { "metrics", 1, 0, O_METRICS },
    { "dry-run", 0, 0, O_DRY_RUN }, { "config", 1, 0, O_CONFIG }, { "quiet", 0, 0, O_QUIET },
    { "help", 0, 0, O_HELP },
    { "neuron", 1, 0, O_NEURON }, { "T", 1, 0, O_T }, { "encoding", 1, 0, O_ENCODING },
    { "gain", 1, 0, O_GAIN }, { "readout", 1, 0, O_READOUT }, { "reduce", 1, 0, O_REDUCE },
    { "alpha", 1, 0, O_ALPHA }, { "tau", 1, 0, O_TAU }, { "threshold", 1, 0, O_THRESHOLD },
    { "reset", 1, 0, O_RESET }, { "detach-reset", 0, 0, O_DETACH_RESET }, { "rho", 1, 0, O_RHO },
    { "beta-a", 1, 0, O_BETA_A }, { "surrogate", 1, 0, O_SURROGATE }, { "slope", 1, 0, O_SLOPE },
    { "width", 1, 0, O_WIDTH }, { "readout-alpha", 1, 0, O_READOUT_ALPHA },
    { "trunc", 1, 0, O_TRUNC }, { "enc-seed", 1, 0, O_ENC_SEED },
    { "binary-frames", 0, 0, O_BINARY_FRAMES }, { "no-normalize", 0, 0, O_NO_NORMALIZE },
    { "lr-min", 1, 0, O_LR_MIN }, { "rho-max", 1, 0, O_RHO_MAX },
    { "ltc-neuron", 1, 0, O_LTC_NEURON }, { "ltc-threshold", 1, 0, O_LTC_THRESHOLD },
    { "ltc-beta-a", 1, 0, O_LTC_BETA_A }, { "init-from", 1, 0, O_INIT_FROM }, { "ltc-init", 1, 0, O_LTC_INIT },
    { "bn-gamma", 1, 0, O_BN_GAMMA },
    { "ltc-map-bn", 1, 0, O_LTC_MAP_BN },
    { "autoencoder", 0, 0, O_AUTOENCODER }, { "diag-every", 1, 0, O_DIAG_EVERY },
    { "eval-every", 1, 0, O_EVAL_EVERY },
    { 0, 0, 0, 0 }
};

static void train_help(void)
{
    printf("usage: soma train [options]\n"
           "Trains a network and prints the test accuracy. Every option can also be given\n"
           "in a config file (--config FILE, lines 'key = value'); the command line wins.\n\n"
           "data:\n"
           "  --data NAME          mnist, fashion, cifar10, cifar10-4k, nmnist, adding (default mnist;\n"
           "                       nmnist: events binned into --T frames; adding: the adding task of\n"
           "                       length --T, generated; both need --encoding frames)\n"
           "  --data-dir DIR       where the files are (default data/NAME; see make data)\n"
           "  --train-limit N      train on the first N samples only (default 0 = all)\n"
           "  --test-limit N       evaluate on the first N test samples (default 0 = all)\n"
           "  --val N              hold out the last N training samples for validation (0)\n"
           "  --augment            random crop (pad 4) and horizontal flip (CIFAR)\n"
           "  --shift N            random translation by up to N pixels, no flip (digits; 0)\n"
           "  --no-verify          skip the SHA-256 check of the data files\n"
           "network:\n"
           "  --net SPEC           e.g. 784-512-512-10 or conv5x32-pool2-conv5x64-pool2-fc512-fc10\n"
           "                       (tokens: N fcN convKxC[sS][pP] poolK avgpoolK bn dropP)\n"
           "  --act NAME           hidden activation (default relu): ");
    list_names(stdout, act_at, SOMA_ACT_COUNT);
    printf("\n  --init NAME          weight init (default torch): ");
    list_names(stdout, init_at, SOMA_INIT_COUNT);
    printf("\nspiking nets (rule bptt):\n"
           "  --neuron NAME        hidden cells: lif, if, alif (makes the net spiking)\n"
           "  --T N                time steps per sample (default 25)\n"
           "  --encoding NAME      direct, poisson, sequential, permuted, frames (default direct;\n"
           "                       frames: event data, one binned frame per step)\n"
           "  --binary-frames      nmnist: 0/1 frames instead of event counts\n"
           "  --gain F             poisson rate scale (default 1)\n"
           "  --enc-seed N         permutation seed for permuted (default 0)\n"
           "  --readout NAME       li, none, spike: what follows the last layer (default li)\n"
           "  --reduce NAME        mean, last, sum: outputs over time -> scores; each: a loss at\n"
           "                       every step, averaged (default mean)\n"
           "  --alpha F            membrane decay per step (default 0.9); or --tau F (dt = 1)\n"
           "  --threshold F        firing threshold (default 1)\n"
           "  --reset NAME         subtract, zero, none (default subtract)\n"
           "  --detach-reset       no gradient through the reset term\n"
           "  --rho F --beta-a F   alif adaptation decay and strength (defaults 0.95 1.8)\n"
           "  --surrogate NAME     multigauss, fast-sigmoid, arctan, triangle, straight, none\n"
           "                       (default fast-sigmoid)\n"
           "  --slope F            fast-sigmoid slope / arctan alpha (defaults 25 / 2)\n"
           "  --width F            triangle width / multigauss sigma (defaults 1 / 0.3)\n"
           "  --readout-alpha F    li readout decay (default 0.9)\n"
           "  --trunc K            bptt: detach the state every K steps (default 0 = full)\n");
    printf("rule options (rules fptt, lfp, ep, pc, ide; see docs/*.md):\n");
    for (int i = 0; i < soma_rule_option_count(); i++)
        printf("  --%-18s %s\n", soma_rule_option_key(i), soma_rule_option_help(i));
    printf("  --ltc-neuron NAME    ltc/rltc cells: alif (adaptive threshold) or lif (default alif)\n"
           "  --ltc-threshold F    ltc threshold b0 (default 0.1)\n"
           "  --ltc-beta-a F       ltc adaptation strength (default 1.8)\n"
           "  --ltc-init NAME      ltc state at each sequence start: zero, or uniform\n"
           "                       (u ~ U[0,1), eta = b0, as the authors' S-MNIST code; default zero)\n"
           "  --bn-gamma F         initial scale of every bn/bnN layer (default 1; the authors'\n"
           "                       S-MNIST net 0.1)\n"
           "  --ltc-map-bn N       cltc cells: batchnorm inside the tau maps, sigmoid(BN(conv)) (the\n"
           "                       authors' conv cell): 0 off, 1 running statistics shared by all\n"
           "                       steps (BatchNorm2d), N > 1 one row per step as bnN (default 0)\n"
           "  --lr-min F --rho-max F   MQ optimizer (defaults 1e-3, 0.9999; --eps is its r)\n"
           "  --no-normalize       feed pixels in [0,1] (no mean/std; rule ep always does)\n");
    printf("learning:\n  --rule NAME          learning rule (default bp):\n");
    for (int i = 0; i < soma_rule_count(); i++)
        printf("                         %-8s %s\n", soma_rule_name_at(i), soma_rule_about_at(i));
    printf("  --loss NAME          ce, mse or bce (default ce; bce: sigmoid BCE summed over the\n"
           "                       outputs, with --autoencoder)\n"
           "  --autoencoder        the target is the input, in [0,1]; net outputs = inputs;\n"
           "                       test loss instead of accuracy (rule pc: pc-autoencoder)\n"
           "  --opt NAME           optimizer (default sgd): ");
    list_names(stdout, optim_at, SOMA_OPTIM_COUNT);
    printf("\n  --lr F               learning rate (default 0.05)\n"
           "  --momentum F         SGD momentum (default 0.9)\n"
           "  --dampening F        SGD dampening (default 0)\n"
           "  --nesterov           SGD Nesterov momentum\n"
           "  --weight-decay F     L2 weight decay (default 0)\n"
           "  --beta1 F --beta2 F --eps F   Adam/Adamax (defaults 0.9 0.999 1e-8)\n"
           "  --sched NAME         lr schedule (default constant): ");
    list_names(stdout, sched_at, SOMA_SCHED_COUNT);
    printf("\n  --step-size N        step: epochs between decays (default 1)\n"
           "  --gamma F            step/multistep decay factor (default 0.1)\n"
           "  --milestones A,B,..  multistep epochs\n"
           "  --min-lr F           cosine floor (default 0)\n"
           "  --warmup F           linear warmup epochs (default 0)\n"
           "  --warmup-steps N     rate x (i+1)/N over the first N steps i (default 0)\n"
           "  --clip F             clip the global gradient norm (default 0 = off)\n"
           "  --epochs N           (default 1)\n"
           "  --batch N            (default 64)\n"
           "run:\n"
           "  --seed N             (default 0)\n"
           "  --threads N          (default $SOMA_THREADS or 1)\n"
           "  --save PATH          checkpoint after every epoch (atomic)\n"
           "  --resume PATH        continue from a checkpoint to --epochs\n"
           "  --init-from PATH     start from a checkpoint's weights (fresh optimizer and epochs;\n"
           "                       any rule: e.g. BP pre-training, then --rule lfp)\n"
           "  --metrics PATH       JSONL log (default runs/DATA-RULE-sSEED.jsonl)\n"
           "  --diag-every N       ep, ide: log the rule's diagnostics every N steps too\n"
           "                       (alignment, residuals, update angle; default: per epoch)\n"
           "  --eval-every N       also evaluate on the test split (--test-limit) every N batches\n"
           "                       (long epochs: S-MNIST; FPTT with W, not W-bar; default 0)\n"
           "  --dry-run            print the network and the memory plan, do not train\n"
           "  --quiet              no progress line\n");
}

/* train_opts plus one option per rule option of the library (--ep-beta ...). */
static struct option all_opts[sizeof train_opts / sizeof *train_opts + 64];

static const struct option *train_options(void)
{
    if (all_opts[0].name) return all_opts;
    size_t n = 0;
    for (const struct option *o = train_opts; o->name; o++) all_opts[n++] = *o;
    for (int i = 0; i < soma_rule_option_count() && n + 1 < sizeof all_opts / sizeof *all_opts; i++)
        all_opts[n++] = (struct option){ soma_rule_option_key(i), 1, 0, O_RULE_OPT + i };
    all_opts[n] = (struct option){ 0, 0, 0, 0 };
    return all_opts;
}

typedef struct train_cli {
    soma_train_config c;
    int dry_run, quiet;
    int lr_set, momentum_set;
    char metrics_buf[512];
    /* strings owned here (config file values live as long as the run) */
    char *owned[64];
    int n_owned;
} train_cli;

static int apply_train_option(train_cli *t, int code, const char *name, const char *arg);

/* Reads "key = value" lines; '#' starts a comment. */
static int load_config(train_cli *t, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "%s: --config %s: %s\n", prog, path, strerror(errno));
        return EXIT_USAGE;
    }
    char line[1024];
    int lineno = 0, rc = 0;
    while (!rc && fgets(line, sizeof line, f)) {
        lineno++;
        char *hash = strchr(line, '#');
        if (hash) *hash = 0;
        char *s = line;
        while (*s == ' ' || *s == '\t') s++;
        char *e = s + strlen(s);
        while (e > s && (e[-1] == '\n' || e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t')) *--e = 0;
        if (!*s || *s == '[') continue; /* blank or [section] */
        char *eq = strchr(s, '=');
        char key[64], *val = NULL;
        if (eq) {
            char *k = eq;
            while (k > s && (k[-1] == ' ' || k[-1] == '\t')) k--;
            snprintf(key, sizeof key, "%.*s", (int)(k - s), s);
            val = eq + 1;
            while (*val == ' ' || *val == '\t') val++;
        } else {
            snprintf(key, sizeof key, "%.63s", s);
        }
        const struct option *o = NULL;
        for (const struct option *p = train_options(); p->name; p++)
            if (!strcmp(p->name, key)) o = p;
        if (!o || o->val == O_CONFIG) {
            fprintf(stderr, "%s: %s:%d: unknown key '%s'\n", prog, path, lineno, key);
            rc = EXIT_USAGE;
            break;
        }
        if (o->has_arg && (!val || !*val)) {
            fprintf(stderr, "%s: %s:%d: key '%s' needs a value\n", prog, path, lineno, key);
            rc = EXIT_USAGE;
            break;
        }
        if (!o->has_arg && val && strcmp(val, "1") && strcmp(val, "true") && strcmp(val, "yes")) {
            if (!strcmp(val, "0") || !strcmp(val, "false") || !strcmp(val, "no")) continue;
            fprintf(stderr, "%s: %s:%d: key '%s' is a switch (true/false)\n", prog, path, lineno, key);
            rc = EXIT_USAGE;
            break;
        }
        char *copy = NULL;
        if (o->has_arg) {
            if (t->n_owned == 64) { fprintf(stderr, "%s: %s: too many keys\n", prog, path); rc = EXIT_USAGE; break; }
            copy = strdup(val);
            if (!copy) { rc = EXIT_RUNTIME; break; }
            t->owned[t->n_owned++] = copy;
        }
        rc = apply_train_option(t, o->val, key, copy);
        if (rc) fprintf(stderr, "%s: (in %s:%d)\n", prog, path, lineno);
    }
    fclose(f);
    return rc;
}

static int apply_train_option(train_cli *t, int code, const char *name, const char *arg)
{
    soma_train_config *c = &t->c;
    char opt[80];
    snprintf(opt, sizeof opt, "--%s", name);
    long v;
    float f;
    soma_status st;
    switch (code) {
    case O_DATA: c->data = arg; break;
    case O_DATA_DIR: c->data_dir = arg; break;
    case O_NET: c->net = arg; break;
    case O_ACT: if ((st = soma_act_from_name(&c->act, arg))) return usage_error("%s: %s", opt, soma_last_error()); break;
    case O_INIT: if ((st = soma_init_from_name(&c->init, arg))) return usage_error("%s: %s", opt, soma_last_error()); break;
    case O_RULE: c->rule = arg; break;
    case O_LOSS: if ((st = soma_loss_from_name(&c->rule_cfg.loss, arg))) return usage_error("%s: %s", opt, soma_last_error()); break;
    case O_OPT: {
        soma_optim_kind k;
        if ((st = soma_optim_from_name(&k, arg))) return usage_error("%s: %s", opt, soma_last_error());
        soma_optim_config keep = c->rule_cfg.optim;
        soma_optim_config_default(&c->rule_cfg.optim, k);
        if (t->momentum_set) c->rule_cfg.optim.momentum = keep.momentum;
        else if (k == SOMA_OPTIM_SGD) c->rule_cfg.optim.momentum = 0.9f;
        c->rule_cfg.optim.weight_decay = keep.weight_decay;
        if (!t->lr_set) c->sched.base_lr = c->rule_cfg.optim.lr;
        break;
    }
    case O_LR: if (!parse_float(opt, arg, &f)) return EXIT_USAGE; c->sched.base_lr = f; t->lr_set = 1; break;
    case O_MOMENTUM: if (!parse_float(opt, arg, &f)) return EXIT_USAGE; c->rule_cfg.optim.momentum = f; t->momentum_set = 1; break;
    case O_DAMPENING: if (!parse_float(opt, arg, &f)) return EXIT_USAGE; c->rule_cfg.optim.dampening = f; break;
    case O_NESTEROV: c->rule_cfg.optim.nesterov = 1; break;
    case O_WD: if (!parse_float(opt, arg, &f)) return EXIT_USAGE; c->rule_cfg.optim.weight_decay = f; break;
    case O_BETA1: if (!parse_float(opt, arg, &f)) return EXIT_USAGE; c->rule_cfg.optim.beta1 = f; break;
    case O_BETA2: if (!parse_float(opt, arg, &f)) return EXIT_USAGE; c->rule_cfg.optim.beta2 = f; break;
    case O_EPS: if (!parse_float(opt, arg, &f)) return EXIT_USAGE; c->rule_cfg.optim.eps = f; break;
    case O_SCHED: if ((st = soma_sched_from_name(&c->sched.kind, arg))) return usage_error("%s: %s", opt, soma_last_error()); break;
    case O_STEP_SIZE: if (!parse_long(opt, arg, 1, INT_MAX, &v)) return EXIT_USAGE; c->sched.step_size = (int)v; break;
    case O_GAMMA: if (!parse_float(opt, arg, &f)) return EXIT_USAGE; c->sched.gamma = f; break;
    case O_MILESTONES: {
        c->sched.n_milestones = 0;
        char buf[256];
        snprintf(buf, sizeof buf, "%s", arg);
        for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
            if (c->sched.n_milestones == SOMA_MAX_MILESTONES) return usage_error("%s: more than %s milestones", opt, "16");
            if (!parse_long(opt, tok, 1, INT_MAX, &v)) return EXIT_USAGE;
            c->sched.milestones[c->sched.n_milestones++] = (int)v;
        }
        break;
    }
    case O_WARMUP: if (!parse_float(opt, arg, &f)) return EXIT_USAGE; c->sched.warmup = f; break;
    case O_WARMUP_STEPS: if (!parse_long(opt, arg, 0, INT_MAX, &v)) return EXIT_USAGE; c->warmup_steps = (int)v; break;
    case O_MIN_LR: if (!parse_float(opt, arg, &f)) return EXIT_USAGE; c->sched.min_lr = f; break;
    case O_CLIP: if (!parse_float(opt, arg, &f)) return EXIT_USAGE; c->rule_cfg.clip_norm = f; break;
    case O_EPOCHS: if (!parse_long(opt, arg, LONG_MIN, LONG_MAX, &v)) return EXIT_USAGE;
        if (v <= 0 || v > 100000) return usage_error("%s: must be in 1..100000, got %s", opt, arg);
        c->epochs = (int)v; break;
    case O_BATCH: if (!parse_long(opt, arg, LONG_MIN, LONG_MAX, &v)) return EXIT_USAGE;
        if (v <= 0 || v > 65536) return usage_error("%s: must be in 1..65536, got %s", opt, arg);
        c->batch = (int)v; break;
    case O_SEED: if (!parse_long(opt, arg, 0, LONG_MAX, &v)) return EXIT_USAGE; c->seed = (uint64_t)v; break;
    case O_THREADS: if (!parse_long(opt, arg, 1, 1024, &v)) return EXIT_USAGE; c->threads = (int)v; break;
    case O_TRAIN_LIMIT: if (!parse_long(opt, arg, 0, INT_MAX, &v)) return EXIT_USAGE; c->train_limit = (int)v; break;
    case O_TEST_LIMIT: if (!parse_long(opt, arg, 0, INT_MAX, &v)) return EXIT_USAGE; c->test_limit = (int)v; break;
    case O_VAL: if (!parse_long(opt, arg, 0, INT_MAX, &v)) return EXIT_USAGE; c->val = (int)v; break;
    case O_AUGMENT: c->augment = 1; break;
    case O_SHIFT: if (!parse_long(opt, arg, 0, 8, &v)) return EXIT_USAGE; c->shift = (int)v; break;
    case O_NO_VERIFY: c->verify = 0; break;
    case O_SAVE: c->save = arg; break;
    case O_RESUME: c->resume = arg; break;
    case O_INIT_FROM: c->init_from = arg; break;
    case O_METRICS: c->metrics = arg; break;
    case O_EVAL_EVERY: if (!parse_long(opt, arg, 0, INT_MAX, &v)) return EXIT_USAGE; c->eval_every = (int)v; break;
    case O_DIAG_EVERY: if (!parse_long(opt, arg, 0, INT_MAX, &v)) return EXIT_USAGE; c->diag_every = (int)v; break;
    case O_DRY_RUN: t->dry_run = 1; break;
    case O_NEURON: {
        soma_neuron_kind k;
        if ((st = soma_neuron_from_name(&k, arg))) return usage_error("%s: %s", opt, soma_last_error());
        if (k == SOMA_NEURON_LI) return usage_error("%s: %s", opt, "hidden cells must spike (lif, if, alif)");
        c->cell.kind = k;
        if (k == SOMA_NEURON_IF) c->cell.alpha = 1.0f;
        c->spiking = 1;
        break;
    }
    case O_T: if (!parse_long(opt, arg, LONG_MIN, LONG_MAX, &v)) return EXIT_USAGE;
        if (v <= 0 || v > 100000) return usage_error("%s: must be in 1..100000, got %s", opt, arg);
        c->rule_cfg.T = (int)v; break;
    case O_ENCODING: if ((st = soma_encoding_from_name(&c->rule_cfg.encoding, arg))) return usage_error("%s: %s", opt, soma_last_error()); break;
    case O_GAIN: if (!parse_float(opt, arg, &f)) return EXIT_USAGE;
        if (!(f > 0)) return usage_error("%s: must be > 0, got %s", opt, arg);
        c->rule_cfg.gain = f; break;
    case O_ENC_SEED: if (!parse_long(opt, arg, 0, LONG_MAX, &v)) return EXIT_USAGE; c->rule_cfg.enc_seed = (uint64_t)v; break;
    case O_READOUT: if ((st = soma_readout_from_name(&c->readout, arg))) return usage_error("%s: %s", opt, soma_last_error()); break;
    case O_REDUCE: if ((st = soma_reduce_from_name(&c->rule_cfg.reduce, arg))) return usage_error("%s: %s", opt, soma_last_error()); break;
    case O_ALPHA: if (!parse_float(opt, arg, &f)) return EXIT_USAGE; c->cell.alpha = f; break;
    case O_TAU: if (!parse_float(opt, arg, &f)) return EXIT_USAGE;
        if ((st = soma_alpha_from_tau(&c->cell.alpha, f, 1.0f))) return usage_error("%s: %s", opt, soma_last_error());
        break;
    case O_THRESHOLD: if (!parse_float(opt, arg, &f)) return EXIT_USAGE; c->cell.threshold = f; break;
    case O_RESET: if ((st = soma_reset_from_name(&c->cell.reset, arg))) return usage_error("%s: %s", opt, soma_last_error()); break;
    case O_DETACH_RESET: c->cell.detach_reset = 1; break;
    case O_RHO: if (!parse_float(opt, arg, &f)) return EXIT_USAGE; c->cell.rho = f; break;
    case O_BETA_A: if (!parse_float(opt, arg, &f)) return EXIT_USAGE; c->cell.beta_a = f; break;
    case O_SURROGATE: {
        if ((st = soma_surrogate_from_name(&c->cell.surr, arg))) return usage_error("%s: %s", opt, soma_last_error());
        break;
    }
    case O_SLOPE: if (!parse_float(opt, arg, &f)) return EXIT_USAGE; c->cell.surr.slope = f; break;
    case O_WIDTH: if (!parse_float(opt, arg, &f)) return EXIT_USAGE; c->cell.surr.width = f; break;
    case O_READOUT_ALPHA: if (!parse_float(opt, arg, &f)) return EXIT_USAGE; c->readout_cell.alpha = f; break;
    case O_BINARY_FRAMES: c->binary_frames = 1; break;
    case O_NO_NORMALIZE: c->raw_pixels = 1; break;
    case O_AUTOENCODER: c->autoencoder = 1; break;
    case O_LR_MIN: if (!parse_float(opt, arg, &f)) return EXIT_USAGE; c->rule_cfg.optim.lr_min = f; break;
    case O_RHO_MAX: if (!parse_float(opt, arg, &f)) return EXIT_USAGE; c->rule_cfg.optim.rho_max = f; break;
    case O_LTC_NEURON: {
        soma_neuron_kind k;
        if ((st = soma_neuron_from_name(&k, arg))) return usage_error("%s: %s", opt, soma_last_error());
        if (k != SOMA_NEURON_ALIF && k != SOMA_NEURON_LIF) return usage_error("%s: %s", opt, "ltc cells are alif (adaptive) or lif (fixed threshold)");
        c->ltc.kind = k;
        break;
    }
    case O_LTC_THRESHOLD: if (!parse_float(opt, arg, &f)) return EXIT_USAGE; c->ltc.threshold = f; break;
    case O_LTC_BETA_A: if (!parse_float(opt, arg, &f)) return EXIT_USAGE; c->ltc.beta_a = f; break;
    case O_LTC_INIT:
        if ((st = soma_state_init_from_name(&c->ltc.init, arg))) return usage_error("%s: %s", opt, soma_last_error());
        break;
    case O_BN_GAMMA: if (!parse_float(opt, arg, &f)) return EXIT_USAGE; c->bn_gamma = f; break;
    case O_LTC_MAP_BN: if (!parse_long(opt, arg, 0, 1 << 24, &v)) return EXIT_USAGE; c->ltc.map_bn = (int)v; break;
    case O_TRUNC: if (!parse_long(opt, arg, 0, INT_MAX, &v)) return EXIT_USAGE; c->rule_cfg.trunc = (int)v; break;
    case O_QUIET: t->quiet = 1; break;
    default:
        if (code >= O_RULE_OPT && code < O_RULE_OPT + soma_rule_option_count()) {
            if ((st = soma_rule_option_set(&c->rule_cfg, soma_rule_option_key(code - O_RULE_OPT), arg))) {
                const char *m = soma_last_error();
                return m[0] == '-' ? usage_error("%s%s", m, "") : usage_error("%s: %s", opt, m);
            }
            break;
        }
        return EXIT_USAGE;
    }
    return 0;
}

static void fmt_bytes(char *buf, size_t n, size_t bytes)
{
    if (bytes >= (1u << 20)) snprintf(buf, n, "%.2f MiB", bytes / 1048576.0);
    else snprintf(buf, n, "%.1f KiB", bytes / 1024.0);
}

static void print_plan(const soma_mem_plan *p)
{
    struct { const char *name; size_t v; } rows[] = {
        { "parameters", p->params }, { "gradients", p->grads }, { "optimizer", p->optim },
        { "buffers", p->buffers }, { "activations", p->activations },
        { "workspace", p->workspace }, { "total", p->total },
    };
    printf("memory plan:\n");
    for (size_t i = 0; i < sizeof rows / sizeof *rows; i++) {
        char b[32];
        fmt_bytes(b, sizeof b, rows[i].v);
        printf("  %-12s %12zu bytes (%s)\n", rows[i].name, rows[i].v, b);
    }
}

static void progress_cb(void *user, const soma_progress *p)
{
    int tty = *(int *)user;
    if (p->epoch_done && p->regression) {
        if (tty) fprintf(stderr, "\r\033[K");
        const char *ln = p->loss_kind == SOMA_LOSS_BCE ? "BCE" : "MSE";
        printf("epoch %d/%d  train %s %.5f  test %s %.5f  lr %.4g  %.0f samples/s  %.1fs\n", p->epoch,
               p->epochs, ln, p->loss, ln, p->test_loss, p->lr, p->samples_per_s, p->seconds);
        fflush(stdout);
        return;
    }
    if (p->epoch_done) {
        if (tty) fprintf(stderr, "\r\033[K");
        printf("epoch %d/%d  loss %.4f  train acc %.2f%%  test loss %.4f  test acc %.2f%%%s  "
               "lr %.4g  %.0f samples/s  %.1fs\n", p->epoch, p->epochs, p->loss, 100 * p->acc,
               p->test_loss, 100 * p->test_acc, "", p->lr, p->samples_per_s, p->seconds);
        fflush(stdout);
        return;
    }
    if (!tty) return;
    fprintf(stderr, "\r\033[Kepoch %d/%d  step %lld/%lld  loss %.4f  acc %.2f%%  %.0f samples/s  ETA %.0fs",
            p->epoch, p->epochs, (long long)p->step, (long long)p->steps, p->loss, 100 * p->acc,
            p->samples_per_s, p->eta_s);
    fflush(stderr);
}

static int cmd_train(int argc, char **argv)
{
    train_cli t;
    memset(&t, 0, sizeof t);
    soma_train_config_default(&t.c);
    t.c.git = SOMA_GIT;
    /* First pass: --config and --help, so the command line overrides the file. */
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { train_help(); return 0; }
        if (!strcmp(argv[i], "--config") && i + 1 < argc) {
            int rc = load_config(&t, argv[i + 1]);
            if (rc) return rc;
        } else if (!strncmp(argv[i], "--config=", 9)) {
            int rc = load_config(&t, argv[i] + 9);
            if (rc) return rc;
        }
    }
    optind = 1;
    opterr = 0;
    int code, idx;
    while ((code = getopt_long(argc, argv, ":h", train_options(), &idx)) != -1) {
        if (code == '?') return usage_error("train: unknown option '%s'%s", argv[optind - 1], "");
        if (code == ':') return usage_error("train: option '%s' needs a value%s", argv[optind - 1], "");
        if (code == O_CONFIG) continue;
        const char *name = NULL;
        for (const struct option *o = train_options(); o->name; o++) if (o->val == code) name = o->name;
        int rc = apply_train_option(&t, code, name, optarg);
        if (rc) return rc;
    }
    if (optind < argc) return usage_error("train: unexpected argument '%s'%s", argv[optind], "");
    soma_train_config *c = &t.c;
    if (!t.momentum_set && c->rule_cfg.optim.kind != SOMA_OPTIM_SGD) c->rule_cfg.optim.momentum = 0;
    if (!c->metrics) {
        mkdir("runs", 0777);
        snprintf(t.metrics_buf, sizeof t.metrics_buf, "runs/%s-%s-s%llu.jsonl", c->data, c->rule,
                 (unsigned long long)c->seed);
        c->metrics = t.metrics_buf;
    }
    char argv_line[2048] = "";
    for (int i = 0; i < argc; i++) {
        strncat(argv_line, i ? " " : "soma ", sizeof argv_line - strlen(argv_line) - 1);
        strncat(argv_line, argv[i], sizeof argv_line - strlen(argv_line) - 1);
    }
    c->argv_line = argv_line;
    soma_status st = soma_train_config_check(c);
    if (st) { fprintf(stderr, "%s: %s\n(see 'soma train --help')\n", prog, soma_last_error()); return EXIT_USAGE; }
    int rc = 0;
    if (t.dry_run) {
        soma_mem_plan plan;
        char desc[8192];
        soma_set_threads(c->threads);
        if ((st = soma_train_plan(c, &plan, desc, sizeof desc))) rc = runtime_error(st);
        else {
            printf("%s", desc);
            printf("rule %s, batch %d\n", c->rule, c->batch);
            print_plan(&plan);
        }
    } else {
        int tty = !t.quiet && isatty(2);
        soma_train_result res;
        st = soma_train(c, t.quiet ? NULL : progress_cb, &tty, &res);
        if (st) rc = runtime_error(st);
        else if (res.regression) {
            printf("test %s: %.5f after %d epoch%s, %.1fs; log %s%s%s\n",
                   res.loss_kind == SOMA_LOSS_BCE ? "BCE" : "MSE", res.test_loss, res.epochs_done,
                   res.epochs_done == 1 ? "" : "s", res.seconds, c->metrics, c->save ? ", checkpoint " : "",
                   c->save ? c->save : "");
        } else {
            printf("test accuracy: %.2f%% (loss %.4f) after %d epoch%s, %.1fs; log %s%s%s\n",
                   100 * res.test_acc, res.test_loss, res.epochs_done, res.epochs_done == 1 ? "" : "s",
                   res.seconds, c->metrics, c->save ? ", checkpoint " : "", c->save ? c->save : "");
        }
    }
    for (int i = 0; i < t.n_owned; i++) free(t.owned[i]);
    return rc;
}

/* ===== soma eval ========================================================= */

static int cmd_eval(int argc, char **argv)
{
    static const struct option opts[] = {
        { "ckpt", 1, 0, 'c' }, { "data", 1, 0, 'd' }, { "data-dir", 1, 0, 'D' },
        { "batch", 1, 0, 'b' }, { "test-limit", 1, 0, 'l' }, { "threads", 1, 0, 't' },
        { "no-verify", 0, 0, 'n' }, { "help", 0, 0, 'h' }, { "prune", 1, 0, 'p' },
        { "prune-per-layer", 0, 0, 'P' }, { "ide-gap", 1, 0, 'g' }, { 0, 0, 0, 0 }
    };
    int gapT[32], ngap = 0;
    const char *ckpt = NULL, *data = "mnist", *dir = NULL;
    float prune = 0;
    int per_layer = 0;
    long batch = 256, limit = 0, threads = 0;
    int verify = 1, code;
    optind = 1;
    opterr = 0;
    while ((code = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (code) {
        case 'c': ckpt = optarg; break;
        case 'd': data = optarg; break;
        case 'D': dir = optarg; break;
        case 'b': if (!parse_long("--batch", optarg, 1, 65536, &batch)) return EXIT_USAGE; break;
        case 'l': if (!parse_long("--test-limit", optarg, 0, INT_MAX, &limit)) return EXIT_USAGE; break;
        case 't': if (!parse_long("--threads", optarg, 1, 1024, &threads)) return EXIT_USAGE; break;
        case 'n': verify = 0; break;
        case 'p':
            if (!parse_float("--prune", optarg, &prune)) return EXIT_USAGE;
            if (!(prune >= 0 && prune <= 1)) return usage_error("--prune: must be a fraction in [0, 1], got %s%s", optarg, "");
            break;
        case 'P': per_layer = 1; break;
        case 'g': {
            char buf[256];
            snprintf(buf, sizeof buf, "%s", optarg);
            ngap = 0;
            for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
                long v;
                if (ngap == 32) return usage_error("--ide-gap: more than %s values%s", "32", "");
                if (!parse_long("--ide-gap", tok, 1, 100000, &v)) return EXIT_USAGE;
                gapT[ngap++] = (int)v;
            }
            if (!ngap) return usage_error("--ide-gap: no T given%s%s", "", "");
            break;
        }
        case 'h':
            printf("usage: soma eval --ckpt PATH [--data NAME] [options]\n"
                   "Evaluates a checkpoint on the test split: accuracy, loss, confusion matrix.\n"
                   "  --ckpt PATH          checkpoint written by soma train --save\n"
                   "  --data NAME          mnist, fashion, cifar10, cifar10-4k, nmnist, adding (default mnist;\n"
           "                       nmnist: events binned into --T frames; adding: the adding task of\n"
           "                       length --T, generated; both need --encoding frames)\n"
                   "  --data-dir DIR       (default data/NAME)\n"
                   "  --batch N            (default 256)\n"
                   "  --test-limit N       first N test samples (default 0 = all)\n"
                   "  --threads N          (default $SOMA_THREADS or 1)\n"
                   "  --no-verify          skip the SHA-256 check of the data files\n"
                   "  --prune F            first zero the fraction F of dense/conv weights with the\n"
                   "                       smallest |w| (global; no fine-tuning)\n"
                   "  --prune-per-layer    prune F of each layer instead\n"
                   "  --ide-gap T1,T2,..   rule ide: instead, the RMS gap |a[T] - a*| between the\n"
                   "                       T-step average rates and the fixed point of the rate map,\n"
                   "                       on the first test batch (the supplement's Fig. 2); spike\n"
                   "                       frames (nmnist) are binned again into T frames per T\n");
            return 0;
        case ':': return usage_error("eval: option '%s' needs a value%s", argv[optind - 1], "");
        default: return usage_error("eval: unknown option '%s'%s", argv[optind - 1], "");
        }
    }
    if (optind < argc) return usage_error("eval: unexpected argument '%s'%s", argv[optind], "");
    if (!ckpt) return usage_error("eval: --ckpt is required%s%s", "", "");
    soma_set_threads((int)threads);
    if (ngap) {
        double gaps[32], change = 0;
        soma_status st = soma_evaluate_ide_gap(ckpt, data, dir, (int)batch, verify, gapT, ngap, gaps, &change);
        if (st) return runtime_error(st);
        printf("fixed point: largest rate change of the last map %.3g\n", change);
        printf("%8s %12s\n", "T", "rms_gap");
        for (int q = 0; q < ngap; q++) printf("%8d %12.6g\n", gapT[q], gaps[q]);
        return 0;
    }
    soma_eval_result *r = malloc(sizeof *r);
    if (!r) return EXIT_RUNTIME;
    soma_status st = soma_evaluate(ckpt, data, dir, (int)batch, (int)limit, verify, prune, per_layer, r);
    if (st) { free(r); return runtime_error(st); }
    if (r->regression) {
        printf("test %s %.5f (%d samples), weight gini %.4f", r->loss_kind == SOMA_LOSS_BCE ? "BCE" : "MSE",
               r->loss, r->n, r->gini);
        if (prune > 0) printf(", pruned %zu weights (%g%%%s)", r->pruned, 100.0 * prune, per_layer ? " per layer" : "");
        printf("\n");
        free(r);
        return 0;
    }
    printf("accuracy %.2f%% (%d samples), loss %.4f, weight gini %.4f", 100 * r->acc, r->n, r->loss, r->gini);
    if (prune > 0) printf(", pruned %zu weights (%g%%%s)", r->pruned, 100.0 * prune, per_layer ? " per layer" : "");
    printf("\nconfusion matrix (rows: true class, columns: predicted):\n");
    printf("      ");
    for (int j = 0; j < r->classes; j++) printf("%6d", j);
    printf("\n");
    for (int i = 0; i < r->classes; i++) {
        printf("%6d", i);
        for (int j = 0; j < r->classes; j++) printf("%6lld", (long long)r->confusion[i * r->classes + j]);
        printf("\n");
    }
    free(r);
    return 0;
}

/* ===== soma info ========================================================= */

static int cmd_info(int argc, char **argv)
{
    if (argc != 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        printf("usage: soma info CHECKPOINT\nPrints a checkpoint's metadata, tensors and network.\n");
        return argc == 2 ? 0 : EXIT_USAGE;
    }
    soma_st *st;
    soma_status e = soma_st_read(&st, argv[1]);
    if (e) return runtime_error(e);
    printf("%s\nmetadata:\n", argv[1]);
    for (int i = 0; i < soma_st_meta_count(st); i++)
        printf("  %-18s %s\n", soma_st_meta_key(st, i), soma_st_meta(st, soma_st_meta_key(st, i)));
    static const char *const dt[] = { "F32", "I32", "I64", "U8", "F64" };
    printf("tensors:\n");
    size_t total = 0;
    for (int i = 0; i < soma_st_count(st); i++) {
        const soma_st_tensor *t = soma_st_at(st, i);
        char shape[64] = "";
        int o = 0;
        for (int d = 0; d < t->ndim; d++) o += snprintf(shape + o, sizeof shape - o, "%s%lld", d ? "x" : "", (long long)t->shape[d]);
        printf("  %-24s %-4s %s\n", t->name, dt[t->dtype], t->ndim ? shape : "scalar");
        total += t->nbytes;
    }
    printf("%d tensors, %zu bytes of data\n", soma_st_count(st), total);
    soma_st_free(st);
    soma_net *net;
    if ((e = soma_checkpoint_load(&net, &st, argv[1]))) return runtime_error(e);
    char desc[8192];
    soma_net_describe(net, desc, sizeof desc);
    printf("%s", desc);
    soma_net_free(net);
    soma_st_free(st);
    return 0;
}

/* ===== main ============================================================== */

static void main_help(void)
{
    printf("soma %s - train rate, recurrent and spiking networks with BP and local rules\n\n"
           "usage: soma COMMAND [options]\n"
           "  train    train a network (soma train --help)\n"
           "  eval     evaluate a checkpoint (soma eval --help)\n"
           "  info     show a checkpoint's contents\n"
           "  version  print the version\n\n"
           "Environment: SOMA_THREADS (default threads), SOMA_DENORMALS=1 keeps IEEE\n"
           "denormal floats (default: flushed to zero, much faster on some x86 CPUs).\n"
           "OMP_WAIT_POLICY (default PASSIVE) and OPENBLAS_CORETYPE (default: OpenBLAS's\n"
           "choice, or the widest kernels the CPU runs where OpenBLAS does not know it;\n"
           "'soma version' prints the one in use) are honoured when set.\n"
           "Exit codes: 0 ok, 1 runtime error, 2 usage error.\n", soma_version());
}

int main(int argc, char **argv)
{
    soma_exec_tuned(argv);      /* OMP_WAIT_POLICY, OPENBLAS_CORETYPE (include/soma.h) */
    soma_flush_denormals(-1);   /* flushed to zero unless SOMA_DENORMALS=1 */
    if (argc < 2) { main_help(); return EXIT_USAGE; }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) { main_help(); return 0; }
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        printf("soma %s (%s)\nopenblas %s\n", soma_version(), SOMA_GIT, soma_blas_core());
        return 0;
    }
    if (!strcmp(cmd, "train")) { prog = "soma train"; return cmd_train(argc - 1, argv + 1); }
    if (!strcmp(cmd, "eval")) { prog = "soma eval"; return cmd_eval(argc - 1, argv + 1); }
    if (!strcmp(cmd, "info")) { prog = "soma info"; return cmd_info(argc - 1, argv + 1); }
    fprintf(stderr, "soma: unknown command '%s' (train, eval, info, version)\n", cmd);
    return EXIT_USAGE;
}
