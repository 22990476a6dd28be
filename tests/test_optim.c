/*
 * test_optim.c - optimizers and learning-rate schedules against PyTorch.
 *
 * tests/fixtures/optim.safetensors comes from refs/optim_ref.py: for each
 * optimizer configuration, the parameters after every one of 5 steps taken
 * with a per-step learning rate, torch's final state arrays, and the lr that
 * torch's schedulers give in each of 12 epochs.  Then the validation errors,
 * the names, the step counter and the state access a checkpoint relies on.
 */
#include "check.h"
#include "soma_internal.h"   /* soma__fault_after */
#include <math.h>

#define FIXTURE "tests/fixtures/optim.safetensors"
#define RTOL 1e-5
#define ATOL 1e-7

static const soma_st *fx;

/* The fixture tensor `name` as floats, checking it holds `want` of them. */
static const float *tensor(const char *name, size_t want)
{
    const soma_st_tensor *t = soma_st_find(fx, name);
    if (!t) { fprintf(stderr, "fixture lacks %s\n", name); CHECK(0); return NULL; }
    if (t->dtype != SOMA_F32 || t->nbytes != want * sizeof(float)) {
        fprintf(stderr, "fixture %s: %zu bytes, want %zu floats\n", name, t->nbytes, want);
        CHECK(0);
        return NULL;
    }
    return t->data;
}

/* ------------------------------------------------------------------------ */
/* Every step of every configuration vs torch.                              */
/* ------------------------------------------------------------------------ */

static const char *const configs[] = {
    "sgd", "sgd_mom", "sgd_nesterov", "sgd_damp", "sgd_wd_mom", "sgd_wd",
    "adam", "adam_wd", "adam_betas", "adamax", "adamax_wd", "adamax_betas",
};

static void test_against_torch(void)
{
    const soma_st_tensor *tw = soma_st_find(fx, "w0");
    if (!CHECK(tw && tw->ndim == 1)) return;
    const size_t n = (size_t)tw->shape[0];
    const soma_st_tensor *tg = soma_st_find(fx, "grads");
    if (!CHECK(tg && tg->ndim == 2 && (size_t)tg->shape[1] == n)) return;
    const int steps = (int)tg->shape[0];
    const float *w0 = tensor("w0", n), *grads = tensor("grads", (size_t)steps * n);
    const float *lrs = tensor("lrs", (size_t)steps);
    if (!w0 || !grads || !lrs) return;

    float *w = malloc(n * sizeof *w);
    if (!CHECK(w)) return;
    for (size_t c = 0; c < sizeof configs / sizeof *configs; c++) {
        char name[96];
        snprintf(name, sizeof name, "opt.%s.hyper", configs[c]);
        const float *h = tensor(name, 8);
        snprintf(name, sizeof name, "opt.%s.w", configs[c]);
        const float *want = tensor(name, (size_t)steps * n);
        if (!h || !want) continue;

        /* hyper = [momentum, dampening, nesterov, wd, beta1, beta2, eps, kind] */
        soma_optim_config cfg;
        soma_optim_config_default(&cfg, (soma_optim_kind)(int)h[7]);
        if (cfg.kind == SOMA_OPTIM_SGD) {
            cfg.momentum = h[0];
            cfg.dampening = h[1];
            cfg.nesterov = h[2] != 0.0f;
        } else {
            cfg.beta1 = h[4];
            cfg.beta2 = h[5];
            cfg.eps = h[6];
        }
        cfg.weight_decay = h[3];
        soma_optim *o = NULL;
        if (!CHECK(soma_optim_new(&o, &cfg, n) == SOMA_OK)) {
            fprintf(stderr, "  %s: %s\n", configs[c], soma_last_error());
            continue;
        }
        memcpy(w, w0, n * sizeof *w);
        for (int s = 0; s < steps; s++) {
            soma_optim_step(o, w, grads + (size_t)s * n, lrs[s]);
            snprintf(name, sizeof name, "%s step %d", configs[c], s + 1);
            check_close_f(name, w, want + (size_t)s * n, n, RTOL, ATOL);
        }
        CHECK(soma_optim_get_step(o) == steps);

        /* torch's final state, found under torch's names */
        int found = 0;
        for (int i = 0; i < soma_optim_state_count(o); i++) {
            const char *sname = NULL;
            float *st = soma_optim_state(o, i, &sname);
            if (!CHECK(st && sname)) continue;
            snprintf(name, sizeof name, "opt.%s.%s", configs[c], sname);
            const float *ref = tensor(name, n);
            if (ref) {
                check_close_f(name, st, ref, n, RTOL, ATOL);
                found++;
            }
        }
        CHECK(found == soma_optim_state_count(o));
        soma_optim_free(o);
    }
    free(w);
}

/* ------------------------------------------------------------------------ */
/* Schedules vs torch's per-epoch lr.                                       */
/* ------------------------------------------------------------------------ */

static void check_schedule(const char *fname, const soma_schedule *s)
{
    char name[96];
    snprintf(name, sizeof name, "sched.%s.lr", fname);
    const soma_st_tensor *t = soma_st_find(fx, name);
    if (!CHECK(t && t->ndim == 1)) return;
    const int epochs = (int)t->shape[0];
    const float *want = tensor(name, (size_t)epochs);
    if (!want) return;
    if (!CHECK(soma_schedule_check(s) == SOMA_OK)) {
        fprintf(stderr, "  %s: %s\n", fname, soma_last_error());
        return;
    }
    double got[64], ref[64];
    if (!CHECK(epochs <= 64)) return;
    for (int e = 0; e < epochs; e++) {
        got[e] = soma_schedule_lr(s, e);
        ref[e] = want[e];
    }
    check_close_d(name, got, ref, (size_t)epochs, RTOL, ATOL);
}

static void test_schedules(void)
{
    const float base = 0.1f;
    const float *a;

    soma_schedule s = {.kind = SOMA_SCHED_STEP, .base_lr = base};
    if ((a = tensor("sched.step.args", 2))) {
        s.step_size = (int)a[0];
        s.gamma = a[1];
        check_schedule("step", &s);
    }

    s = (soma_schedule){.kind = SOMA_SCHED_MULTISTEP, .base_lr = base};
    const soma_st_tensor *ma = soma_st_find(fx, "sched.multistep.args");
    if (CHECK(ma && ma->ndim == 1) && (a = tensor("sched.multistep.args", (size_t)ma->shape[0]))) {
        s.gamma = a[0];
        s.n_milestones = (int)ma->shape[0] - 1;
        for (int i = 0; i < s.n_milestones; i++) s.milestones[i] = (int)a[1 + i];
        check_schedule("multistep", &s);
    }

    s = (soma_schedule){.kind = SOMA_SCHED_COSINE, .base_lr = base};
    if ((a = tensor("sched.cosine.args", 2))) {
        s.t_max = a[0];
        s.min_lr = a[1];
        check_schedule("cosine", &s);
    }

    s = (soma_schedule){.kind = SOMA_SCHED_CONSTANT, .base_lr = base};
    if ((a = tensor("sched.warmup.args", 1))) {
        s.warmup = a[0];
        check_schedule("warmup", &s);
    }

    s = (soma_schedule){.kind = SOMA_SCHED_STEP, .base_lr = base};
    if ((a = tensor("sched.warmup_step.args", 3))) {
        s.warmup = a[0];
        s.step_size = (int)a[1];
        s.gamma = a[2];
        check_schedule("warmup_step", &s);
    }

    s = (soma_schedule){.kind = SOMA_SCHED_COSINE, .base_lr = base};
    if ((a = tensor("sched.warmup_cosine.args", 2))) {
        s.warmup = a[0];
        s.t_max = a[1];
        check_schedule("warmup_cosine", &s);
    }

    /* Fractional progress: step schedules hold within an epoch, cosine and
     * warmup move continuously, warmup never gives 0 and ends at exactly 1. */
    s = (soma_schedule){.kind = SOMA_SCHED_STEP, .base_lr = base, .step_size = 2, .gamma = 0.5f};
    CHECK(soma_schedule_lr(&s, 1.999) == soma_schedule_lr(&s, 0.0));
    CHECK(soma_schedule_lr(&s, 2.0) == soma_schedule_lr(&s, 3.5));
    s = (soma_schedule){.kind = SOMA_SCHED_COSINE, .base_lr = base, .t_max = 10, .min_lr = 0};
    double mid = soma_schedule_lr(&s, 5.0);
    CHECK(fabs(mid - 0.05) < 1e-7);
    CHECK(soma_schedule_lr(&s, 4.5) > mid && soma_schedule_lr(&s, 5.5) < mid);
    s = (soma_schedule){.kind = SOMA_SCHED_CONSTANT, .base_lr = base, .warmup = 2};
    CHECK(soma_schedule_lr(&s, 0.0) == base / 2);
    CHECK(fabs(soma_schedule_lr(&s, 1.0) - 0.075) < 1e-8);
    CHECK(soma_schedule_lr(&s, 2.0) == base && soma_schedule_lr(&s, 7.3) == base);
    CHECK(soma_schedule_lr(&s, -1.0) == soma_schedule_lr(&s, 0.0));
}

/* ------------------------------------------------------------------------ */
/* Validation: each bad field is rejected with a message naming it.         */
/* ------------------------------------------------------------------------ */

/* Expects soma_optim_new to fail with SOMA_ERR_ARG and a message containing `word`. */
static void bad_optim(const soma_optim_config *c, const char *word, int line)
{
    static char sentinel;
    soma_optim *o = (soma_optim *)(void *)&sentinel; /* must be overwritten with NULL */
    soma_clear_error();
    soma_status st = soma_optim_new(&o, c, 10);
    int ok = st == SOMA_ERR_ARG && o == NULL && strstr(soma_last_error(), word) != NULL;
    if (!ok) {
        fprintf(stderr, "  line %d: status %d, message '%s', wanted '%s'\n", line, (int)st,
                soma_last_error(), word);
        if (st == SOMA_OK) soma_optim_free(o);
    }
    check_true(ok, "optimizer config rejected", __FILE__, line);
}
#define BAD_OPTIM(c, word) bad_optim(&(c), word, __LINE__)

static void test_optim_validation(void)
{
    soma_optim_config c, sgd, adam;
    soma_optim_config_default(&sgd, SOMA_OPTIM_SGD);
    soma_optim_config_default(&adam, SOMA_OPTIM_ADAM);

    c = sgd; c.lr = 0;              BAD_OPTIM(c, "lr");
    c = sgd; c.lr = -1e-3f;         BAD_OPTIM(c, "-0.001");
    c = adam; c.lr = NAN;           BAD_OPTIM(c, "lr");
    c = adam; c.lr = INFINITY;      BAD_OPTIM(c, "lr");
    c = sgd; c.momentum = -0.1f;    BAD_OPTIM(c, "momentum");
    c = sgd; c.momentum = 1.0f;     BAD_OPTIM(c, "momentum");
    c = sgd; c.nesterov = 1;        BAD_OPTIM(c, "nesterov");
    c = sgd; c.nesterov = 1; c.momentum = 0.9f; c.dampening = 0.1f; BAD_OPTIM(c, "nesterov");
    c = sgd; c.dampening = 1.5f;    BAD_OPTIM(c, "dampening");
    c = sgd; c.weight_decay = -1e-4f; BAD_OPTIM(c, "weight_decay");
    c = adam; c.weight_decay = -1e-4f; BAD_OPTIM(c, "weight_decay");
    c = adam; c.beta1 = 1.0f;       BAD_OPTIM(c, "beta1");
    c = adam; c.beta1 = -0.1f;      BAD_OPTIM(c, "beta1");
    c = adam; c.beta2 = 1.0f;       BAD_OPTIM(c, "beta2");
    c = adam; c.eps = 0;            BAD_OPTIM(c, "eps");
    c = adam; c.eps = -1e-8f;       BAD_OPTIM(c, "eps");
    c = adam; c.kind = SOMA_OPTIM_ADAMAX; c.beta2 = 1.5f; BAD_OPTIM(c, "beta2");
    /* an option of another optimizer is refused, not ignored */
    c = adam; c.momentum = 0.9f;    BAD_OPTIM(c, "momentum");
    c = sgd; c.beta1 = 0.9f;        BAD_OPTIM(c, "beta1");
    c = sgd; c.kind = SOMA_OPTIM_COUNT; BAD_OPTIM(c, "sgd, adam, adamax");

    soma_optim *o = NULL;
    CHECK(soma_optim_new(&o, &sgd, 0) == SOMA_ERR_ARG && o == NULL);
    CHECK(soma_optim_new(&o, NULL, 5) == SOMA_ERR_ARG);
    c = sgd; c.nesterov = 1; c.momentum = 0.9f;
    CHECK(soma_optim_new(&o, &c, 3) == SOMA_OK);
    soma_optim_free(o);
    soma_optim_free(NULL);
}

static void test_names(void)
{
    for (int k = 0; k < SOMA_OPTIM_COUNT; k++) {
        soma_optim_kind got = SOMA_OPTIM_COUNT;
        CHECK(soma_optim_from_name(&got, soma_optim_name((soma_optim_kind)k)) == SOMA_OK);
        CHECK(got == (soma_optim_kind)k);
    }
    CHECK(strcmp(soma_optim_name(SOMA_OPTIM_ADAMAX), "adamax") == 0);
    soma_optim_kind k;
    CHECK(soma_optim_from_name(&k, "rmsprop") == SOMA_ERR_ARG);
    CHECK(strstr(soma_last_error(), "rmsprop") && strstr(soma_last_error(), "sgd, adam, adamax"));
    CHECK(soma_optim_from_name(&k, NULL) == SOMA_ERR_ARG);

    for (int i = 0; i < SOMA_SCHED_COUNT; i++) {
        soma_sched_kind got = SOMA_SCHED_COUNT;
        CHECK(soma_sched_from_name(&got, soma_sched_name((soma_sched_kind)i)) == SOMA_OK);
        CHECK(got == (soma_sched_kind)i);
    }
    soma_sched_kind sk;
    CHECK(soma_sched_from_name(&sk, "onecycle") == SOMA_ERR_ARG);
    CHECK(strstr(soma_last_error(), "onecycle") &&
          strstr(soma_last_error(), "constant, step, multistep, cosine"));

    soma_optim_config c;
    soma_optim_config_default(&c, SOMA_OPTIM_ADAMAX);
    CHECK(c.kind == SOMA_OPTIM_ADAMAX && c.lr == 2e-3f && c.beta1 == 0.9f &&
          c.beta2 == 0.999f && c.eps == 1e-8f && c.weight_decay == 0 && c.momentum == 0);
    soma_optim_config_default(&c, SOMA_OPTIM_ADAM);
    CHECK(c.lr == 1e-3f && c.beta2 == 0.999f);
    soma_optim_config_default(&c, SOMA_OPTIM_SGD);
    CHECK(c.lr == 1e-3f && c.momentum == 0 && c.eps == 0 && !c.nesterov);
}

static void bad_sched(const soma_schedule *s, const char *word, int line)
{
    soma_clear_error();
    soma_status st = soma_schedule_check(s);
    int ok = st == SOMA_ERR_ARG && strstr(soma_last_error(), word) != NULL;
    if (!ok)
        fprintf(stderr, "  line %d: status %d, message '%s', wanted '%s'\n", line, (int)st,
                soma_last_error(), word);
    check_true(ok, "schedule rejected", __FILE__, line);
}
#define BAD_SCHED(s, word) bad_sched(&(s), word, __LINE__)

static void test_schedule_validation(void)
{
    const soma_schedule step = {.kind = SOMA_SCHED_STEP, .base_lr = 0.1f, .step_size = 2,
                                .gamma = 0.5f};
    const soma_schedule multi = {.kind = SOMA_SCHED_MULTISTEP, .base_lr = 0.1f, .gamma = 0.1f,
                                 .milestones = {3, 3, 8}, .n_milestones = 3};
    const soma_schedule cos = {.kind = SOMA_SCHED_COSINE, .base_lr = 0.1f, .t_max = 10};
    soma_schedule s;
    CHECK(soma_schedule_check(&step) == SOMA_OK);
    CHECK(soma_schedule_check(&multi) == SOMA_OK);
    CHECK(soma_schedule_check(&cos) == SOMA_OK);
    /* a repeated milestone applies gamma twice, as torch's MultiStepLR */
    CHECK(fabs(soma_schedule_lr(&multi, 3.0) - 0.001) < 1e-9);

    s = step; s.base_lr = 0;        BAD_SCHED(s, "base_lr");
    s = step; s.step_size = 0;      BAD_SCHED(s, "step_size");
    s = step; s.gamma = 0;          BAD_SCHED(s, "gamma");
    s = step; s.warmup = 0.5f;      BAD_SCHED(s, "warmup");
    s = step; s.warmup = -1;        BAD_SCHED(s, "warmup");
    s = multi; s.n_milestones = 0;  BAD_SCHED(s, "n_milestones");
    s = multi; s.n_milestones = SOMA_MAX_MILESTONES + 1; BAD_SCHED(s, "n_milestones");
    s = multi; s.milestones[2] = 1; BAD_SCHED(s, "ascend");
    s = multi; s.milestones[0] = -1; BAD_SCHED(s, "milestones[0]");
    s = cos; s.t_max = 0;           BAD_SCHED(s, "t_max");
    s = cos; s.min_lr = -1e-4f;     BAD_SCHED(s, "min_lr");
    s = cos; s.kind = SOMA_SCHED_COUNT; BAD_SCHED(s, "constant, step, multistep, cosine");
    CHECK(soma_schedule_check(NULL) == SOMA_ERR_ARG);
}

/* ------------------------------------------------------------------------ */
/* Step counter, state access, resume.                                      */
/* ------------------------------------------------------------------------ */

static void test_state_and_resume(void)
{
    enum { N = 1000, STEPS = 6, CUT = 3 };
    static float w[N], w2[N], g[STEPS][N];
    for (int i = 0; i < N; i++) {
        w[i] = w2[i] = sinf(0.37f * (float)i);
        for (int s = 0; s < STEPS; s++) g[s][i] = cosf(0.11f * (float)(i * (s + 1)));
    }
    const char *want_names[SOMA_OPTIM_COUNT][2] = {
        {"momentum_buffer", NULL}, {"exp_avg", "exp_avg_sq"}, {"exp_avg", "exp_inf"}, {NULL, NULL}};

    for (int k = 0; k < SOMA_OPTIM_COUNT; k++) {
        if (k == SOMA_OPTIM_MQ) continue; /* per-matrix state and groups: test_pc covers it */
        soma_optim_config c;
        soma_optim_config_default(&c, (soma_optim_kind)k);
        if (k == SOMA_OPTIM_SGD) c.momentum = 0.9f;
        soma_optim *a = NULL, *b = NULL;
        if (!CHECK(soma_optim_new(&a, &c, N) == SOMA_OK)) continue;
        int ns = soma_optim_state_count(a);
        CHECK(ns == (k == SOMA_OPTIM_SGD ? 1 : 2));
        CHECK(soma_optim_size(a) == (size_t)ns * N * sizeof(float));
        for (int i = 0; i < ns; i++) {
            const char *name = NULL;
            float *st = soma_optim_state(a, i, &name);
            CHECK(st && name && strcmp(name, want_names[k][i]) == 0);
            int zero = 1;
            for (int j = 0; st && j < N; j++) zero &= st[j] == 0.0f;
            CHECK(zero);
        }
        const char *name = "x";
        CHECK(soma_optim_state(a, ns, &name) == NULL && name == NULL);
        CHECK(soma_optim_state(a, -1, NULL) == NULL);

        /* Run a for all steps; run b to CUT, "checkpoint" it into a fresh
         * optimizer through the public state/step API, and finish there. */
        for (int i = 0; i < N; i++) w[i] = w2[i] = sinf(0.37f * (float)i);
        for (int s = 0; s < STEPS; s++) soma_optim_step(a, w, g[s], 0.01f);
        soma_optim *tmp = NULL;
        CHECK(soma_optim_new(&tmp, &c, N) == SOMA_OK);
        for (int s = 0; s < CUT; s++) soma_optim_step(tmp, w2, g[s], 0.01f);
        CHECK(soma_optim_new(&b, &c, N) == SOMA_OK);
        if (tmp && b) {
            for (int i = 0; i < ns; i++)
                memcpy(soma_optim_state(b, i, NULL), soma_optim_state(tmp, i, NULL),
                       N * sizeof(float));
            soma_optim_set_step(b, soma_optim_get_step(tmp));
            CHECK(soma_optim_get_step(b) == CUT);
            for (int s = CUT; s < STEPS; s++) soma_optim_step(b, w2, g[s], 0.01f);
            CHECK(soma_optim_get_step(b) == STEPS);
            CHECK(memcmp(w, w2, sizeof w) == 0);   /* bit-identical resume */
        }
        soma_optim_set_step(a, 123456789012LL);
        CHECK(soma_optim_get_step(a) == 123456789012LL);
        soma_optim_free(tmp);
        soma_optim_free(b);
        soma_optim_free(a);
    }

    /* Plain SGD keeps no state at all. */
    soma_optim_config c;
    soma_optim_config_default(&c, SOMA_OPTIM_SGD);
    soma_optim *o = NULL;
    CHECK(soma_optim_new(&o, &c, N) == SOMA_OK);
    CHECK(soma_optim_state_count(o) == 0 && soma_optim_size(o) == 0);
    soma_optim_free(o);
}

/* Large n takes the OpenMP path: its result must equal the serial one. */
static void test_threads_agree(void)
{
    const size_t n = 3 * 32768 + 7;
    float *w1 = malloc(n * sizeof *w1), *w2 = malloc(n * sizeof *w2), *g = malloc(n * sizeof *g);
    if (!CHECK(w1 && w2 && g)) { free(w1); free(w2); free(g); return; }
    for (int k = 0; k < SOMA_OPTIM_COUNT; k++) {
        if (k == SOMA_OPTIM_MQ) continue; /* per-matrix state and groups: test_pc covers it */
        soma_optim_config c;
        soma_optim_config_default(&c, (soma_optim_kind)k);
        if (k == SOMA_OPTIM_SGD) { c.momentum = 0.9f; c.nesterov = 1; }
        c.weight_decay = 1e-3f;
        soma_optim *a = NULL, *b = NULL;
        if (!CHECK(soma_optim_new(&a, &c, n) == SOMA_OK && soma_optim_new(&b, &c, n) == SOMA_OK)) {
            soma_optim_free(a);
            soma_optim_free(b);
            continue;
        }
        for (size_t i = 0; i < n; i++) w1[i] = w2[i] = sinf((float)i);
        for (int s = 0; s < 3; s++) {
            for (size_t i = 0; i < n; i++) g[i] = cosf((float)(i * (size_t)(s + 2)));
            soma_set_threads(1);
            soma_optim_step(a, w1, g, 0.01f);
            soma_set_threads(4);
            soma_optim_step(b, w2, g, 0.01f);
        }
        soma_set_threads(1);
        CHECK(memcmp(w1, w2, n * sizeof *w1) == 0);
        soma_optim_free(a);
        soma_optim_free(b);
    }
    free(w1); free(w2); free(g);
}

/* Allocation failure is reported, and leaks nothing (ASan checks). */
static void test_nomem(void)
{
    soma_optim_config c;
    soma_optim_config_default(&c, SOMA_OPTIM_ADAM);
    for (long fail = 1; fail <= 2; fail++) {
        soma_optim *o = NULL;
        soma__fault_after(fail);
        soma_status st = soma_optim_new(&o, &c, 100);
        soma__fault_after(0);
        CHECK(st == SOMA_ERR_NOMEM && o == NULL);
    }
}

int main(void)
{
    soma_st *st = NULL;
    if (soma_st_read(&st, FIXTURE) != SOMA_OK) {
        fprintf(stderr, "cannot read %s: %s (run from the repository root; "
                "regenerate with /usr/bin/python3 refs/optim_ref.py tests/fixtures)\n",
                FIXTURE, soma_last_error());
        CHECK(0);
    } else {
        fx = st;
        const char *tv = soma_st_meta(st, "torch");
        printf("test_optim: fixture from torch %s\n", tv ? tv : "?");
        test_against_torch();
        test_schedules();
    }
    test_optim_validation();
    test_names();
    test_schedule_validation();
    test_state_and_resume();
    test_threads_agree();
    test_nomem();
    soma_st_free(st);
    return check_report("test_optim");
}
