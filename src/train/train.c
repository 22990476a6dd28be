/*
 * train.c - the training and evaluation drivers behind `soma train` and
 * `soma eval`: data -> loader -> rule -> optimizer -> metrics -> checkpoint.
 *
 * Reproducibility: the batch order and augmentation of epoch e depend only on
 * (seed, e) (see loader.c) and the dropout stream of epoch e is seeded from
 * (seed, e) too, so a run resumed from the checkpoint of epoch e continues
 * bit-identically to one that never stopped (same thread count).
 */
#include "../rule/rule.h"
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

void soma_train_config_default(soma_train_config *c)
{
    memset(c, 0, sizeof *c);
    c->data = "mnist";
    c->net = NULL;
    c->rule = "bp";
    c->act = SOMA_ACT_RELU;
    c->init = SOMA_INIT_TORCH;
    soma_rule_config_default(&c->rule_cfg);
    soma_net_options no;
    soma_net_options_default(&no);
    c->ltc = no.ltc;
    c->bn_gamma = no.bn_gamma;
    c->rule_cfg.optim.lr = 0.05f;
    c->rule_cfg.optim.momentum = 0.9f;
    c->sched.kind = SOMA_SCHED_CONSTANT;
    c->sched.base_lr = 0.05f;
    c->sched.gamma = 0.1f;
    c->sched.step_size = 1;
    c->epochs = 1;
    c->batch = 64;
    soma_cell_params_default(&c->cell, SOMA_NEURON_LIF);
    soma_cell_params_default(&c->readout_cell, SOMA_NEURON_LI);
    c->readout = SOMA_READOUT_LI;
    c->threads = 0;
    c->verify = 1;
}

soma_status soma_train_config_check(const soma_train_config *c)
{
    if (c->epochs <= 0) return soma__fail(SOMA_ERR_ARG, "--epochs must be > 0, got %d", c->epochs);
    if (c->batch <= 0) return soma__fail(SOMA_ERR_ARG, "--batch must be > 0, got %d", c->batch);
    if (c->batch > 1 << 16) return soma__fail(SOMA_ERR_ARG, "--batch must be <= 65536, got %d", c->batch);
    if (!(c->sched.base_lr > 0) || !isfinite(c->sched.base_lr))
        return soma__fail(SOMA_ERR_ARG, "--lr must be > 0, got %g", c->sched.base_lr);
    if (c->train_limit < 0) return soma__fail(SOMA_ERR_ARG, "--train-limit must be >= 0, got %d", c->train_limit);
    if (c->test_limit < 0) return soma__fail(SOMA_ERR_ARG, "--test-limit must be >= 0, got %d", c->test_limit);
    if (c->eval_every < 0) return soma__fail(SOMA_ERR_ARG, "--eval-every must be >= 0, got %d", c->eval_every);
    if (c->val < 0) return soma__fail(SOMA_ERR_ARG, "--val must be >= 0, got %d", c->val);
    if (c->shift < 0 || c->shift > 8) return soma__fail(SOMA_ERR_ARG, "--shift must be in [0, 8], got %d", c->shift);
    if (c->shift && c->augment) return soma__fail(SOMA_ERR_ARG, "--shift and --augment exclude each other (--augment crops with pad 4)");
    if (c->threads < 0) return soma__fail(SOMA_ERR_ARG, "--threads must be >= 0, got %d", c->threads);
    if (!c->net && !c->resume) return soma__fail(SOMA_ERR_ARG, "--net is required (or --resume)");
    if (!c->data || !*c->data) return soma__fail(SOMA_ERR_ARG, "--data is required");
    if (c->autoencoder && c->rule_cfg.loss == SOMA_LOSS_CE)
        return soma__fail(SOMA_ERR_ARG, "--autoencoder needs --loss bce or mse (ce needs class labels)");
    if (c->rule_cfg.loss == SOMA_LOSS_BCE && !c->autoencoder)
        return soma__fail(SOMA_ERR_ARG, "--loss bce needs targets: use it with --autoencoder");
    if (c->autoencoder && !strcmp(c->rule, "pc") && c->rule_cfg.loss != SOMA_LOSS_BCE)
        return soma__fail(SOMA_ERR_ARG, "--autoencoder with rule pc needs --loss bce (its top energy)");
    if (c->rule_cfg.pc_autoencoder && !c->autoencoder)
        return soma__fail(SOMA_ERR_ARG, "--pc-autoencoder needs --autoencoder (the driver then feeds the "
                          "input as the target, pixels in [0,1])");
    if (c->autoencoder && !strcmp(c->data, "adding"))
        return soma__fail(SOMA_ERR_ARG, "--autoencoder does not apply to --data adding");
    if (c->warmup_steps < 0)
        return soma__fail(SOMA_ERR_ARG, "--warmup-steps must be >= 0, got %d", c->warmup_steps);
    soma_schedule sc = c->sched;
    if (sc.kind == SOMA_SCHED_COSINE && sc.t_max <= 0) sc.t_max = (float)c->epochs;
    soma_status st = soma_schedule_check(&sc);
    if (st) return st;
    soma_optim *o;
    soma_optim_config oc = c->rule_cfg.optim;
    oc.lr = c->sched.base_lr;
    if ((st = soma_optim_new(&o, &oc, 1))) return st;
    soma_optim_free(o);
    return SOMA_OK;
}

static void dataset_shape(const soma_dataset *d, soma_net_options *o)
{
    o->in_c = d->c; o->in_h = d->h; o->in_w = d->w;
}

/* Per-epoch seeds: distinct streams for dropout and the loader. */
static uint64_t epoch_seed(uint64_t seed, int epoch)
{
    return seed * 0x9E3779B97F4A7C15ULL + 0x632BE59BD9B4E019ULL * (uint64_t)(epoch + 1);
}

/* Writes s as a JSON string literal. */
static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; s && *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') fprintf(f, "\\%c", ch);
        else if (ch == '\n') fputs("\\n", f);
        else if (ch == '\t') fputs("\\t", f);
        else if (ch < 0x20) fprintf(f, "\\u%04x", ch);
        else fputc(ch, f);
    }
    fputc('"', f);
}

/* Number, or null when not finite (JSON has no NaN). */
static void json_num(FILE *f, double v)
{
    if (isfinite(v)) fprintf(f, "%.6g", v);
    else fputs("null", f);
}

typedef struct run {
    const soma_train_config *c;
    soma_dataset *train_all, *test_all, *train, *val, *test;
    soma_net *net;
    soma_rule *rule;
    soma_loader *ltrain, *lval, *ltest;
    soma_st *resume_st;
    int start_epoch;
    int regression;      /* targets, not classes (adding: MSE; --autoencoder): no accuracy */
    int spiking;         /* temporal net: --neuron, ltc layers or the ltc readout */
    int ide_frames;      /* rule ide on spike frames: it runs its own T steps of a rate net */
} run;

static void run_free(run *r)
{
    soma_loader_free(r->ltrain);
    soma_loader_free(r->lval);
    soma_loader_free(r->ltest);
    soma_rule_free(r->rule);
    soma_net_free(r->net);
    soma_st_free(r->resume_st);
    if (r->train != r->train_all) soma_dataset_free(r->train);
    if (r->test != r->test_all) soma_dataset_free(r->test);
    soma_dataset_free(r->val);
    soma_dataset_free(r->train_all);
    soma_dataset_free(r->test_all);
}

static soma_status open_data(run *r)
{
    const soma_train_config *c = r->c;
    r->spiking = c->spiking || c->readout == SOMA_READOUT_LTC || (c->net && strstr(c->net, "ltc"));
    r->ide_frames = !strcmp(c->rule, "ide") && c->rule_cfg.encoding == SOMA_ENC_FRAMES;
    char dir[512];
    if (c->data_dir) snprintf(dir, sizeof dir, "%s", c->data_dir);
    else snprintf(dir, sizeof dir, "data/%s", !strncmp(c->data, "cifar10", 7) ? "cifar10" : c->data);
    soma_status st;
    if (!strcmp(c->data, "adding")) {
        /* generated sequences: two descriptors that only carry the shape and
         * count; build() makes generating loaders for them */
        if (!r->spiking || c->rule_cfg.encoding != SOMA_ENC_FRAMES)
            return soma__fail(SOMA_ERR_ARG, "--data adding needs a spiking net (--neuron) with --encoding frames");
        if (c->val) return soma__fail(SOMA_ERR_ARG, "--val does not apply to --data adding (the test set is generated)");
        if (c->rule_cfg.T < 2) return soma__fail(SOMA_ERR_ARG, "--data adding needs --T >= 2, got %d", c->rule_cfg.T);
        soma_dataset **d[2] = { &r->train_all, &r->test_all };
        int n[2] = { c->train_limit ? c->train_limit : 10000, c->test_limit ? c->test_limit : 1000 };
        for (int k = 0; k < 2; k++) {
            if (!(*d[k] = soma__calloc(1, sizeof **d[k]))) return SOMA_ERR_NOMEM;
            snprintf((*d[k])->name, sizeof (*d[k])->name, "adding");
            (*d[k])->n = n[k];
            (*d[k])->c = 2 * c->rule_cfg.T; (*d[k])->h = 1; (*d[k])->w = 1;
            (*d[k])->owns = 1;
        }
        r->train = r->train_all;
        r->test = r->test_all;
        r->regression = 1;
        return SOMA_OK;
    }
    if (!strcmp(c->data, "nmnist")) {
        /* events are binned into T frames at load time: the frames encoding
         * then feeds one (2, 34, 34) frame per step (rule ide: its input map
         * gets frame t at step t) */
        if (!(r->spiking || r->ide_frames) || c->rule_cfg.encoding != SOMA_ENC_FRAMES)
            return soma__fail(SOMA_ERR_ARG, "--data nmnist needs a spiking net (--neuron) or rule ide, "
                              "with --encoding frames");
        st = soma_dataset_open_nmnist(&r->train_all, &r->test_all, dir, c->rule_cfg.T, c->binary_frames,
                                      c->verify);
    } else {
        st = soma_dataset_open(&r->train_all, &r->test_all, c->data, dir, c->verify);
    }
    if (st) return st;
    int n = r->train_all->n;
    if (c->train_limit && c->train_limit < n) n = c->train_limit;
    if (c->val >= n) return soma__fail(SOMA_ERR_ARG, "--val %d leaves no training samples (%d available)", c->val, n);
    r->train = r->train_all;
    if (n != r->train_all->n || c->val) {
        if ((st = soma_dataset_subset(&r->train, r->train_all, 0, n - c->val))) return st;
    }
    if (c->val && (st = soma_dataset_subset(&r->val, r->train_all, n - c->val, c->val))) return st;
    r->test = r->test_all;
    if (c->test_limit && c->test_limit < r->test_all->n &&
        (st = soma_dataset_subset(&r->test, r->test_all, 0, c->test_limit)))
        return st;
    return SOMA_OK;
}

static soma_status build(run *r)
{
    const soma_train_config *c = r->c;
    soma_status st = open_data(r);
    if (st) return st;
    soma_net_options o;
    soma_net_options_default(&o);
    dataset_shape(r->train, &o);
    o.act = c->act;
    o.init = c->init;
    o.seed = c->seed;
    o.spiking = r->spiking;
    o.cell = c->cell;
    o.readout = c->readout;
    o.readout_cell = c->readout_cell;
    o.ltc = c->ltc;
    o.bn_gamma = c->bn_gamma;
    int sample = o.in_c * o.in_h * o.in_w;
    if (r->spiking && (c->rule_cfg.encoding == SOMA_ENC_SEQUENTIAL ||
                       c->rule_cfg.encoding == SOMA_ENC_PERMUTED)) {
        /* one pixel per step: the net sees a 1-value input */
        o.in_c = 1; o.in_h = 1; o.in_w = 1;
    } else if ((r->spiking || r->ide_frames) && c->rule_cfg.encoding == SOMA_ENC_FRAMES) {
        /* a sample is T frames stacked on the channel axis: one frame per step */
        if (c->rule_cfg.T <= 0 || o.in_c % c->rule_cfg.T)
            return soma__fail(SOMA_ERR_ARG, "--encoding frames: %d channels are not T = %d frames",
                              o.in_c, c->rule_cfg.T);
        o.in_c /= c->rule_cfg.T;
    }
    if (c->resume) {
        soma_net *ck;
        if ((st = soma_checkpoint_load(&ck, &r->resume_st, c->resume))) return st;
        const char *spec = c->net ? c->net : soma_net_spec(ck);
        if (c->net && strcmp(c->net, soma_net_spec(ck))) {
            /* a different spec: build it and let the restore name the first
             * tensor whose shape disagrees */
            soma_net_free(ck);
            if ((st = soma_net_new(&r->net, spec, &o))) return st;
            if ((st = soma_checkpoint_restore_net(r->net, r->resume_st, c->resume))) return st;
        } else {
            r->net = ck;
        }
        const char *ep = soma_st_meta(r->resume_st, "soma.epoch");
        char *end;
        long e = ep ? strtol(ep, &end, 10) : -1;
        if (!ep || *end || e < 0)
            return soma__fail(SOMA_ERR_FORMAT, "%s: metadata soma.epoch missing or bad", c->resume);
        r->start_epoch = (int)e;
        const char *rule = soma_st_meta(r->resume_st, "soma.rule");
        if (rule && strcmp(rule, c->rule))
            return soma__fail(SOMA_ERR_ARG, "%s was trained with rule '%s', not '%s'", c->resume, rule, c->rule);
    } else {
        if ((st = soma_net_new(&r->net, c->net, &o))) return st;
        if (c->init_from) {
            /* warm start: the weights (and buffers) of another run, a fresh
             * optimizer and epoch count; any rule (e.g. BP pre-training,
             * then LFP) */
            soma_st *ist;
            if ((st = soma_st_read(&ist, c->init_from))) return st;
            st = soma_checkpoint_restore_net(r->net, ist, c->init_from);
            soma_st_free(ist);
            if (st) return st;
        }
    }
    if (!r->spiking && soma_net_inputs(r->net) != o.in_c * o.in_h * o.in_w)
        return soma__fail(SOMA_ERR_SHAPE, "net '%s' takes %d inputs, %s %s have %d",
                          soma_net_spec(r->net), soma_net_inputs(r->net), c->data,
                          r->ide_frames ? "frames" : "samples", o.in_c * o.in_h * o.in_w);
    if (soma_net_outputs(r->net) < r->train->classes)
        return soma__fail(SOMA_ERR_SHAPE, "net '%s' has %d outputs, %s has %d classes",
                          soma_net_spec(r->net), soma_net_outputs(r->net), c->data, r->train->classes);
    if (c->autoencoder && soma_net_outputs(r->net) != soma_net_inputs(r->net))
        return soma__fail(SOMA_ERR_SHAPE, "--autoencoder: net '%s' has %d outputs but %d inputs "
                          "(an autoencoder reconstructs its input)", soma_net_spec(r->net),
                          soma_net_outputs(r->net), soma_net_inputs(r->net));
    soma_rule_config rc = c->rule_cfg;
    rc.optim.lr = c->sched.base_lr;
    if (c->autoencoder) { rc.pc_autoencoder = 1; r->regression = 1; }
    rc.sample_size = sample;
    if (rc.ep_particles) rc.ep_particles = r->train->n; /* one persistent state per sample */
    if ((st = soma_rule_new(&r->rule, c->rule, r->net, &rc, c->batch))) return st;
    if (r->resume_st) {
        /* again, now that the rule's own tensors exist */
        if ((st = soma_checkpoint_restore_net(r->net, r->resume_st, c->resume))) return st;
        const char *on = soma_st_meta(r->resume_st, "soma.optim");
        if (on && strcmp(on, soma_optim_name(rc.optim.kind)))
            return soma__fail(SOMA_ERR_ARG, "%s was trained with optimizer '%s', not '%s'", c->resume,
                              on, soma_optim_name(rc.optim.kind));
        if ((st = soma_checkpoint_restore_optim(soma_rule_optim(r->rule), r->resume_st, c->resume)))
            return st;
    }
    /* Poisson rates need pixels in [0,1]: no mean/std normalisation there */
    int poisson = r->spiking && c->rule_cfg.encoding == SOMA_ENC_POISSON;
    /* EP's input passes through rho (clamp to [0,1]): raw pixels there too */
    /* autoencoders reconstruct pixels in [0,1] (BCE targets) */
    int raw = poisson || c->raw_pixels || c->autoencoder || !strcmp(c->rule, "ep");
    soma_loader_config lc = { .batch = c->batch, .seed = c->seed, .shuffle = 1,
                              .normalize = !raw, .crop_pad = c->augment ? 4 : c->shift, .hflip = c->augment,
                              .target_is_input = c->autoencoder };
    if (r->regression && !c->autoencoder) { /* the adding task: generated */
        if ((st = soma_loader_new_adding(&r->ltrain, c->rule_cfg.T, r->train->n, c->batch, c->seed, 0)) ||
            (st = soma_loader_new_adding(&r->ltest, c->rule_cfg.T, r->test->n, c->batch,
                                         c->seed ^ 0x7e57ULL, 1)))
            return st;
        return SOMA_OK;
    }
    if ((st = soma_loader_new(&r->ltrain, r->train, &lc))) return st;
    lc.shuffle = 0; lc.crop_pad = 0; lc.hflip = 0;
    if ((st = soma_loader_new(&r->ltest, r->test, &lc))) return st;
    if (r->val && (st = soma_loader_new(&r->lval, r->val, &lc))) return st;
    return SOMA_OK;
}

static soma_status evaluate_loader(soma_rule *rule, soma_loader *l, soma_step_stats *st,
                                   int64_t *confusion, int classes)
{
    soma_batch b;
    soma_loader_start_epoch(l, 0);
    memset(st, 0, sizeof *st);
    int C = soma_net_outputs(rule->net);
    while (soma_loader_next(l, &b)) {
        const float *scores;
        soma_status e = soma_rule_predict(rule, &b, &scores, st);
        if (e) return e;
        if (confusion)
            for (int i = 0; i < b.n; i++) {
                const float *s = scores + (size_t)i * C;
                int best = 0;
                for (int k = 1; k < C; k++) if (s[k] > s[best]) best = k;
                if (best < classes) confusion[b.y[i] * classes + best]++;
            }
    }
    return SOMA_OK;
}

static soma_status save_checkpoint(run *r, int epochs_done)
{
    const soma_train_config *c = r->c;
    char ep[32], seed[32], batch[32];
    snprintf(ep, sizeof ep, "%d", epochs_done);
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)c->seed);
    snprintf(batch, sizeof batch, "%d", c->batch);
    char T[32], gain[32], eseed[32], trunc[32], ropts[2048];
    soma_rule_options_format(&c->rule_cfg, ropts, sizeof ropts);
    snprintf(T, sizeof T, "%d", c->rule_cfg.T);
    snprintf(gain, sizeof gain, "%.9g", c->rule_cfg.gain);
    snprintf(eseed, sizeof eseed, "%llu", (unsigned long long)c->rule_cfg.enc_seed);
    snprintf(trunc, sizeof trunc, "%d", c->rule_cfg.trunc);
    const char *meta[] = {
        "soma.epoch", ep, "soma.seed", seed, "soma.rule", c->rule,
        "soma.optim", soma_optim_name(c->rule_cfg.optim.kind), "soma.data", c->data,
        "soma.batch", batch, "soma.git", c->git ? c->git : "",
        "soma.T", T, "soma.encoding", soma_encoding_name(c->rule_cfg.encoding),
        "soma.gain", gain, "soma.enc_seed", eseed, "soma.reduce", soma_reduce_name(c->rule_cfg.reduce),
        "soma.trunc", trunc, "soma.loss", soma_loss_name(c->rule_cfg.loss),
        "soma.binary_frames", c->binary_frames ? "1" : "0",
        "soma.raw_pixels", c->raw_pixels ? "1" : "0",
        "soma.autoencoder", c->autoencoder ? "1" : "0",
        "soma.rule_options", ropts,
    };
    return soma_checkpoint_save(c->save, r->net, soma_rule_optim(r->rule), meta,
                                (int)(sizeof meta / sizeof *meta / 2));
}

static FILE *open_metrics(const soma_train_config *c, const run *r)
{
    FILE *f = fopen(c->metrics, c->resume ? "a" : "w");
    if (!f) return NULL;
    fprintf(f, "{\"type\":\"run\",\"soma\":");
    json_str(f, SOMA_VERSION);
    fprintf(f, ",\"git\":");
    json_str(f, c->git ? c->git : "");
    fprintf(f, ",\"argv\":");
    json_str(f, c->argv_line ? c->argv_line : "");
    fprintf(f, ",\"data\":");
    json_str(f, c->data);
    fprintf(f, ",\"net\":");
    json_str(f, soma_net_spec(r->net));
    fprintf(f, ",\"rule\":");
    json_str(f, c->rule);
    fprintf(f, ",\"optim\":");
    json_str(f, soma_optim_name(c->rule_cfg.optim.kind));
    fprintf(f, ",\"sched\":");
    json_str(f, soma_sched_name(c->sched.kind));
    fprintf(f, ",\"act\":");
    json_str(f, soma_act_name(c->act));
    fprintf(f, ",\"lr\":");
    json_num(f, c->sched.base_lr);
    fprintf(f, ",\"momentum\":");
    json_num(f, c->rule_cfg.optim.momentum);
    fprintf(f, ",\"weight_decay\":");
    json_num(f, c->rule_cfg.optim.weight_decay);
    fprintf(f, ",\"blas\":");
    json_str(f, soma_blas_core());
    fprintf(f, ",\"epochs\":%d,\"batch\":%d,\"seed\":%llu,\"threads\":%d,\"train_samples\":%d,"
            "\"test_samples\":%d,\"val_samples\":%d,\"augment\":%d,\"shift\":%d,\"start_epoch\":%d,"
            "\"params\":%zu}\n",
            c->epochs, c->batch, (unsigned long long)c->seed, soma_get_threads(), r->train->n,
            r->test->n, r->val ? r->val->n : 0, c->augment, c->shift, r->start_epoch, soma_net_param_floats(r->net));
    fflush(f);
    return f;
}

/* The rule's own diagnostics as JSON fields appended to the current record:
 * EP's alignment tr(W F) per pair, relaxation residuals and, on the first
 * test batch, the angle between its update and the true gradient (dense nets);
 * IDE's implicit-solve residual and rate gap.  Counters cover the batches
 * since the previous record (read with reset). */
/* ,"key":v */
static void json_field(FILE *f, const char *key, double v)
{
    fprintf(f, ",\"%s\":", key);
    json_num(f, v);
}

static void json_array(FILE *f, const char *key, const double *v, int n)
{
    fprintf(f, "\"%s\":[", key);
    for (int i = 0; i < n; i++) {
        if (i) fputc(',', f);
        json_num(f, v[i]);
    }
    fputc(']', f);
}

static void log_rule_diag(FILE *f, run *r)
{
    const char *name = soma_rule_name(r->rule);
    if (!strcmp(name, "ep")) {
        soma_ep_diag d;
        if (soma_ep_diagnostics(r->rule, &d, 1)) return;
        fputs(",\"ep\":{", f);
        json_array(f, "align", d.align, d.pairs);
        fputc(',', f);
        json_array(f, "align_cos", d.align_cos, d.pairs);
        json_field(f, "res_free", d.res_free);
        json_field(f, "res_free_max", d.res_free_max);
        json_field(f, "res_nudge", d.res_nudge);
        json_field(f, "batches", (double)d.batches);
        json_field(f, "unconverged", (double)d.unconverged);
        json_field(f, "steps_free", d.steps_free);
        json_field(f, "steps_nudge", d.steps_nudge);
        soma_batch b;
        double deg, rbp;
        soma_loader_start_epoch(r->ltest, 0);
        if (soma_loader_next(r->ltest, &b)) {
            soma_status st = soma_ep_grad_angle(r->rule, &b, &deg, &rbp);
            if (st == SOMA_OK) {
                json_field(f, "angle_deg", deg);
                json_field(f, "rbp_residual", rbp);
            } else if (st != SOMA_ERR_UNSUPPORTED) {   /* conv nets: no angle */
                fputs(",\"angle_error\":", f);
                json_str(f, soma_last_error());
            }
        }
        fputc('}', f);
    } else if (!strcmp(name, "ide")) {
        soma_ide_diag d;
        if (soma_ide_diagnostics(r->rule, &d, 1)) return;
        fprintf(f, ",\"ide\":{\"iters\":%d", d.iters);
        json_field(f, "residual", d.residual);
        json_field(f, "residual_max", d.residual_max);
        json_field(f, "rate_gap", d.rate_gap);
        json_field(f, "batches", (double)d.batches);
        json_field(f, "unconverged", (double)d.unconverged);
        fputc('}', f);
    }
}

/* A "diag" record: the rule's diagnostics after step steps of epoch e (0-based). */
static void log_diag_record(FILE *f, run *r, int e, int64_t step, double train_loss)
{
    fprintf(f, "{\"type\":\"diag\",\"epoch\":%d,\"step\":%lld", e + 1, (long long)step);
    if (isfinite(train_loss)) json_field(f, "train_loss", train_loss);
    log_rule_diag(f, r);
    fputs("}\n", f);
    fflush(f);
}

/* A mid-epoch evaluation on the test split (--eval-every), with the
 * weights as they are (FPTT: W, not W-bar; the swap is at the epoch's end),
 * beside the running training figures so far. */
static soma_status log_eval_record(FILE *f, run *r, int e, int64_t step, const soma_step_stats *ts)
{
    soma_step_stats tes;
    soma_status st = evaluate_loader(r->rule, r->ltest, &tes, NULL, 0);
    if (st) return st;
    fprintf(f, "{\"type\":\"eval\",\"epoch\":%d,\"step\":%lld", e + 1, (long long)step);
    if (ts->n) {
        json_field(f, "train_loss", ts->loss / ts->n);
        json_field(f, "train_acc", (double)ts->correct / ts->n);
    }
    json_field(f, "test_loss", tes.loss / tes.n);
    json_field(f, "test_acc", (double)tes.correct / tes.n);
    fputs("}\n", f);
    fflush(f);
    return SOMA_OK;
}

soma_status soma_train_plan(const soma_train_config *c, soma_mem_plan *plan, char *describe,
                            size_t describe_size)
{
    soma_status st = soma_train_config_check(c);
    if (st) return st;
    run r = { .c = c };
    if (!(st = build(&r))) {
        soma_rule_plan(r.rule, plan);
        if (describe) soma_net_describe(r.net, describe, describe_size);
    }
    run_free(&r);
    return st;
}

soma_status soma_train(const soma_train_config *c, soma_progress_fn progress, void *user,
                       soma_train_result *res)
{
    memset(res, 0, sizeof *res);
    soma_status st = soma_train_config_check(c);
    if (st) return st;
    if (!c->metrics) return soma__fail(SOMA_ERR_ARG, "a metrics log path is required");
    soma_set_threads(c->threads);
    run r = { .c = c };
    double t_start = now_s();
    FILE *log = NULL;
    float *prev_w = NULL;
    if ((st = build(&r))) goto done;
    soma_rule_plan(r.rule, &res->plan);
    res->regression = r.regression;
    res->loss_kind = r.regression ? (c->autoencoder ? c->rule_cfg.loss : SOMA_LOSS_MSE) : SOMA_LOSS_CE;
    if (!(log = open_metrics(c, &r))) {
        st = soma__fail(SOMA_ERR_IO, "%s: cannot open metrics log: %s", c->metrics, strerror(errno));
        goto done;
    }
    int64_t steps = soma_loader_batches(r.ltrain);
    prev_w = soma__malloc((soma_net_param_floats(r.net) ? soma_net_param_floats(r.net) : 1) * sizeof(float));
    if (!prev_w) { st = SOMA_ERR_NOMEM; goto done; }
    soma_schedule sched = c->sched;
    if (sched.kind == SOMA_SCHED_COSINE && sched.t_max <= 0) sched.t_max = (float)c->epochs;
    res->epochs_done = r.start_epoch;
    if (c->diag_every > 0 && r.start_epoch == 0) log_diag_record(log, &r, 0, 0, NAN);   /* untrained */
    for (int e = r.start_epoch; e < c->epochs; e++) {
        soma_loader_start_epoch(r.ltrain, e);
        /* parameter sign changes over the epoch (the LFP paper's measure) */
        if (prev_w) memcpy(prev_w, soma_net_param_values(r.net), soma_net_param_floats(r.net) * sizeof(float));
        soma_rng rng;
        soma_rng_seed(&rng, epoch_seed(c->seed, e));
        soma_step_stats ts = { 0 };
        soma_batch b;
        double t0 = now_s(), last_report = 0;
        int64_t step = 0;
        float lr = c->sched.base_lr;
        while (soma_loader_next(r.ltrain, &b)) {
            lr = soma_schedule_lr(&sched, e + (double)step / (double)steps);
            int64_t gstep = (int64_t)e * steps + step;   /* counted from epoch 0: a resume continues it */
            if (gstep < c->warmup_steps) lr *= (float)((double)(gstep + 1) / c->warmup_steps);
            st = soma_rule_train_batch(r.rule, &b, lr, &rng, &ts);
            if (st == SOMA_ERR_NUMERIC) {
                st = soma__fail(SOMA_ERR_NUMERIC, "epoch %d step %lld: %s; training stopped%s%s%s",
                                e + 1, (long long)step + 1, soma_last_error(),
                                c->save ? " (last good checkpoint " : "", c->save ? c->save : "",
                                c->save ? " kept)" : "");
                if (log) {
                    fprintf(log, "{\"type\":\"error\",\"epoch\":%d,\"step\":%lld,\"message\":", e + 1,
                            (long long)step + 1);
                    json_str(log, soma_last_error());
                    fputs("}\n", log);
                }
                goto done;
            }
            if (st) goto done;
            step++;
            if (c->diag_every > 0 && step % c->diag_every == 0 && step < steps)
                log_diag_record(log, &r, e, step, ts.n ? ts.loss / ts.n : NAN);
            if (c->eval_every > 0 && step % c->eval_every == 0 && step < steps &&
                (st = log_eval_record(log, &r, e, step, &ts)))
                goto done;
            double t = now_s();
            if (progress && (t - last_report > 0.1 || step == steps)) {
                last_report = t;
                soma_progress p = { .epoch = e + 1, .epochs = c->epochs, .step = step, .steps = steps,
                                    .loss = ts.loss / ts.n, .acc = (double)ts.correct / ts.n,
                                    .samples_per_s = ts.n / (t - t0 + 1e-9), .lr = lr,
                                    .regression = r.regression, .loss_kind = res->loss_kind };
                p.eta_s = (steps - step) * (t - t0) / step;
                progress(user, &p);
            }
        }
        soma_rule_epoch_end(r.rule); /* FPTT: W <- Wbar before evaluating and saving */
        double train_s = now_s() - t0;
        soma_step_stats vs = { 0 }, tes = { 0 };
        if (r.lval && (st = evaluate_loader(r.rule, r.lval, &vs, NULL, 0))) goto done;
        if ((st = evaluate_loader(r.rule, r.ltest, &tes, NULL, 0))) goto done;
        res->epochs_done = e + 1;
        res->test_acc = (double)tes.correct / tes.n;
        res->test_loss = tes.loss / tes.n;
        res->val_acc = vs.n ? (double)vs.correct / vs.n : 0;
        fprintf(log, "{\"type\":\"epoch\",\"epoch\":%d,\"steps\":%lld,\"lr\":", e + 1, (long long)step);
        json_num(log, lr);
        fprintf(log, ",\"train_loss\":");
        json_num(log, ts.n ? ts.loss / ts.n : NAN);
        fprintf(log, ",\"train_acc\":");
        json_num(log, ts.n ? (double)ts.correct / ts.n : NAN);
        if (vs.n) {
            fprintf(log, ",\"val_loss\":");
            json_num(log, vs.loss / vs.n);
            fprintf(log, ",\"val_acc\":");
            json_num(log, res->val_acc);
        }
        fprintf(log, ",\"test_loss\":");
        json_num(log, res->test_loss);
        fprintf(log, ",\"test_acc\":");
        json_num(log, res->test_acc);
        if (prev_w) {
            const float *w = soma_net_param_values(r.net);
            size_t np = soma_net_param_floats(r.net), flips = 0;
            for (size_t k = 0; k < np; k++) flips += (prev_w[k] > 0) != (w[k] > 0) || (prev_w[k] < 0) != (w[k] < 0);
            fprintf(log, ",\"sign_changes\":%zu", flips);
        }
        log_rule_diag(log, &r);
        fprintf(log, ",\"train_seconds\":");
        json_num(log, train_s);
        fprintf(log, ",\"samples_per_s\":");
        json_num(log, ts.n / (train_s + 1e-9));
        fputs("}\n", log);
        fflush(log);
        if (c->save && (st = save_checkpoint(&r, e + 1))) goto done;
        if (progress) {
            soma_progress p = { .epoch = e + 1, .epochs = c->epochs, .step = step, .steps = steps,
                                .loss = ts.loss / ts.n, .acc = (double)ts.correct / ts.n,
                                .samples_per_s = ts.n / (train_s + 1e-9), .epoch_done = 1,
                                .test_loss = res->test_loss, .test_acc = res->test_acc,
                                .val_acc = res->val_acc, .lr = lr, .seconds = train_s,
                                .regression = r.regression, .loss_kind = res->loss_kind };
            progress(user, &p);
        }
    }
    if (r.start_epoch >= c->epochs) {
        /* nothing left to train: report the checkpoint's test accuracy */
        soma_step_stats tes = { 0 };
        if ((st = evaluate_loader(r.rule, r.ltest, &tes, NULL, 0))) goto done;
        res->test_acc = (double)tes.correct / tes.n;
        res->test_loss = tes.loss / tes.n;
    }
done:
    res->seconds = now_s() - t_start;
    soma__free(prev_w);
    if (log) fclose(log);
    run_free(&r);
    return st;
}

/* Builds the net and rule of a checkpoint for evaluation on data's test
 * split (c and rule_buf must outlive r). */
static soma_status eval_build(run *r, soma_train_config *c, char *rule_buf, const char *checkpoint,
                              const char *data, const char *data_dir, int batch, int limit, int verify,
                              int T)
{
    soma_train_config_default(c);
    c->data = data;
    c->data_dir = data_dir;
    c->batch = batch;
    c->test_limit = limit;
    c->verify = verify;
    c->resume = checkpoint;
    c->epochs = 1;
    r->c = c;
    soma_status st;
    /* The rule only matters for training; inference is the net's forward. */
    soma_st *probe;
    if ((st = soma_st_read(&probe, checkpoint))) return st;
    const char *rule = soma_st_meta(probe, "soma.rule");
    const char *optim = soma_st_meta(probe, "soma.optim");
    snprintf(rule_buf, 32, "%s", rule ? rule : "bp");
    soma_optim_kind ok = SOMA_OPTIM_SGD;
    if (optim && soma_optim_from_name(&ok, optim)) ok = SOMA_OPTIM_SGD;
    /* temporal settings the net was trained with */
    const char *v;
    if ((v = soma_st_meta(probe, "soma.T"))) c->rule_cfg.T = atoi(v);
    if (T > 0) c->rule_cfg.T = T;   /* spike frames binned again (soma_evaluate_ide_gap) */
    if ((v = soma_st_meta(probe, "soma.gain"))) c->rule_cfg.gain = strtof(v, NULL);
    if ((v = soma_st_meta(probe, "soma.enc_seed"))) c->rule_cfg.enc_seed = strtoull(v, NULL, 10);
    if ((v = soma_st_meta(probe, "soma.encoding")) && soma_encoding_from_name(&c->rule_cfg.encoding, v)) {
        soma_st_free(probe);
        return soma__fail(SOMA_ERR_FORMAT, "%s: %s", checkpoint, soma_last_error());
    }
    if ((v = soma_st_meta(probe, "soma.reduce")) && soma_reduce_from_name(&c->rule_cfg.reduce, v)) {
        soma_st_free(probe);
        return soma__fail(SOMA_ERR_FORMAT, "%s: %s", checkpoint, soma_last_error());
    }
    if ((v = soma_st_meta(probe, "soma.loss")) && soma_loss_from_name(&c->rule_cfg.loss, v)) {
        soma_st_free(probe);
        return soma__fail(SOMA_ERR_FORMAT, "%s: %s", checkpoint, soma_last_error());
    }
    c->spiking = soma_st_meta(probe, "soma.cell") != NULL;
    if ((v = soma_st_meta(probe, "soma.binary_frames"))) c->binary_frames = !strcmp(v, "1");
    if ((v = soma_st_meta(probe, "soma.raw_pixels"))) c->raw_pixels = !strcmp(v, "1");
    if ((v = soma_st_meta(probe, "soma.autoencoder"))) c->autoencoder = !strcmp(v, "1");
    if ((v = soma_st_meta(probe, "soma.rule_options")) && soma_rule_options_parse(&c->rule_cfg, v)) {
        soma_st_free(probe);
        return soma__fail(SOMA_ERR_FORMAT, "%s: %s", checkpoint, soma_last_error());
    }
    soma_st_free(probe);
    c->rule = rule_buf;
    soma_optim_config_default(&c->rule_cfg.optim, ok);
    return build(r);
}

soma_status soma_evaluate(const char *checkpoint, const char *data, const char *data_dir,
                          int batch, int limit, int verify, double prune, int prune_per_layer,
                          soma_eval_result *res)
{
    memset(res, 0, sizeof *res);
    if (batch <= 0) return soma__fail(SOMA_ERR_ARG, "--batch must be > 0, got %d", batch);
    if (limit < 0) return soma__fail(SOMA_ERR_ARG, "--test-limit must be >= 0, got %d", limit);
    soma_train_config c;
    char rule_buf[32];
    run r = { .c = &c };
    soma_status st;
    if ((st = eval_build(&r, &c, rule_buf, checkpoint, data, data_dir, batch, limit, verify, 0))) goto done;
    if (prune > 0 && (st = soma_net_prune(r.net, prune, prune_per_layer, &res->pruned))) goto done;
    res->gini = soma_net_weight_gini(r.net);
    res->classes = r.test->classes;
    if (res->classes > SOMA_MAX_CLASSES) {
        st = soma__fail(SOMA_ERR_UNSUPPORTED, "%d classes exceed %d", res->classes, SOMA_MAX_CLASSES);
        goto done;
    }
    res->regression = r.regression;
    res->loss_kind = r.regression ? (c.autoencoder ? c.rule_cfg.loss : SOMA_LOSS_MSE) : SOMA_LOSS_CE;
    soma_step_stats ts;
    if ((st = evaluate_loader(r.rule, r.ltest, &ts, r.regression ? NULL : res->confusion, res->classes)))
        goto done;
    res->n = ts.n;
    res->acc = (double)ts.correct / ts.n;
    res->loss = ts.loss / ts.n;
done:
    run_free(&r);
    return st;
}

/* One build of an IDE checkpoint's net and test data at T (0: as trained)
 * and the rate gap for Ts on its first test batch.  *frames: whether the
 * data are spike frames; the first call (T = 0) only finds that out for
 * frames, whose every T needs a build of its own. */
static soma_status ide_gap_build(const char *checkpoint, const char *data, const char *data_dir,
                                 int batch, int verify, int T, const int *Ts, int nT, double *gaps,
                                 double *change, int *frames)
{
    soma_train_config c;
    char rule_buf[32];
    run r = { .c = &c };
    soma_batch b;
    soma_status st = eval_build(&r, &c, rule_buf, checkpoint, data, data_dir, batch, batch, verify, T);
    if (st) goto done;
    if (strcmp(rule_buf, "ide")) {
        st = soma__fail(SOMA_ERR_ARG, "%s was trained with rule '%s': the rate gap needs rule ide",
                        checkpoint, rule_buf);
        goto done;
    }
    *frames = r.ide_frames;
    if (*frames && T == 0) goto done;
    soma_loader_start_epoch(r.ltest, 0);
    if (!soma_loader_next(r.ltest, &b)) {
        st = soma__fail(SOMA_ERR_ARG, "%s: the test split is empty", data);
        goto done;
    }
    st = soma_ide_rate_gap(r.rule, &b, Ts, nT, gaps, change);
done:
    run_free(&r);
    return st;
}

soma_status soma_evaluate_ide_gap(const char *checkpoint, const char *data, const char *data_dir,
                                  int batch, int verify, const int *Ts, int nT, double *gaps,
                                  double *fp_change)
{
    if (batch <= 0) return soma__fail(SOMA_ERR_ARG, "--batch must be > 0, got %d", batch);
    double change = 0, worst = 0;
    int frames = 0;
    /* static input: one build, every T; spike frames: one build per T, the
     * events binned into T frames each time */
    soma_status st = ide_gap_build(checkpoint, data, data_dir, batch, verify, 0, Ts, nT, gaps, &worst, &frames);
    for (int q = 0; !st && frames && q < nT; q++) {
        st = ide_gap_build(checkpoint, data, data_dir, batch, verify, Ts[q], &Ts[q], 1, &gaps[q], &change,
                           &frames);
        if (change > worst) worst = change;
    }
    if (fp_change) *fp_change = st ? 0 : worst;
    return st;
}
