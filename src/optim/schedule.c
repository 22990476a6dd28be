/*
 * schedule.c - learning rate as a pure function of training progress.
 *
 * torch's schedulers are stateful objects stepped once per epoch; soma's is
 * a closed form of t = epochs completed BEFORE the current step (e + i/B for
 * batch i of B in epoch e), so resuming needs no scheduler state and the rate
 * can change per batch.  At integer t = e the value equals what torch's
 * scheduler gives during epoch e (refs/optim_ref.py records those):
 *   STEP       base * gamma^floor(floor(t) / step_size)      = StepLR
 *   MULTISTEP  base * gamma^#{milestones <= floor(t)}         = MultiStepLR
 *   COSINE     min + (base - min)(1 + cos(pi t / t_max)) / 2  = CosineAnnealingLR
 *              (not clamped: past t_max it rises again, as torch's does)
 *   warmup W   factor s + (1 - s) min(t, W) / W, s = 1/W     = LinearLR(start_factor=1/W,
 *              end_factor=1, total_iters=W), multiplying the above (ChainedScheduler)
 * The warmup starts at 1/W of the rate, never 0, because torch's does; that
 * is why W must be >= 1 epoch (s would exceed 1 below that).
 *
 * With a warmup, soma's rate is always the product warmup(t) * schedule(t).
 * torch's ChainedScheduler gives that product for StepLR and MultiStepLR, and
 * for CosineAnnealingLR with eta_min = 0; with eta_min > 0 its recursive
 * cosine update is not multiplicative and drifts from the product (0.1% for
 * W = 4, t_max = 10, eta_min = 1e-3).  soma keeps the closed form.
 */
#include "../soma_internal.h"
#include <math.h>
#include <string.h>

static const char *const sched_names[SOMA_SCHED_COUNT] = {
    [SOMA_SCHED_CONSTANT] = "constant",
    [SOMA_SCHED_STEP] = "step",
    [SOMA_SCHED_MULTISTEP] = "multistep",
    [SOMA_SCHED_COSINE] = "cosine",
};

#define VALID_SCHEDS "constant, step, multistep, cosine"

const char *soma_sched_name(soma_sched_kind k)
{
    if ((int)k < 0 || (int)k >= SOMA_SCHED_COUNT) return "unknown";
    return sched_names[k];
}

soma_status soma_sched_from_name(soma_sched_kind *out, const char *name)
{
    if (!out) return soma__fail(SOMA_ERR_ARG, "soma_sched_from_name: out is NULL");
    for (int k = 0; name && k < SOMA_SCHED_COUNT; k++)
        if (strcmp(name, sched_names[k]) == 0) { *out = (soma_sched_kind)k; return SOMA_OK; }
    return soma__fail(SOMA_ERR_ARG, "unknown schedule '%s' (valid: " VALID_SCHEDS ")",
                      name ? name : "(null)");
}

static int finite_pos(float x) { return x > 0.0f && !isinf(x); }

soma_status soma_schedule_check(const soma_schedule *s)
{
    if (!s) return soma__fail(SOMA_ERR_ARG, "soma_schedule_check: schedule is NULL");
    if ((int)s->kind < 0 || (int)s->kind >= SOMA_SCHED_COUNT)
        return soma__fail(SOMA_ERR_ARG, "schedule kind %d is not one of: " VALID_SCHEDS,
                          (int)s->kind);
    const char *k = sched_names[s->kind];
    if (!finite_pos(s->base_lr))
        return soma__fail(SOMA_ERR_ARG, "%s schedule: base_lr must be > 0 and finite, got %g",
                          k, s->base_lr);
    if (!(s->warmup == 0.0f || (s->warmup >= 1.0f && !isinf(s->warmup))))
        return soma__fail(SOMA_ERR_ARG, "%s schedule: warmup must be 0 (off) or >= 1 epoch "
                          "(it starts at 1/warmup of the rate), got %g", k, s->warmup);
    switch (s->kind) {
    case SOMA_SCHED_STEP:
        if (s->step_size < 1)
            return soma__fail(SOMA_ERR_ARG, "step schedule: step_size must be >= 1 epoch, got %d",
                              s->step_size);
        if (!finite_pos(s->gamma))
            return soma__fail(SOMA_ERR_ARG, "step schedule: gamma must be > 0 and finite, got %g",
                              s->gamma);
        break;
    case SOMA_SCHED_MULTISTEP:
        if (!finite_pos(s->gamma))
            return soma__fail(SOMA_ERR_ARG, "multistep schedule: gamma must be > 0 and finite, "
                              "got %g", s->gamma);
        if (s->n_milestones < 1 || s->n_milestones > SOMA_MAX_MILESTONES)
            return soma__fail(SOMA_ERR_ARG, "multistep schedule: n_milestones must be in [1, %d], "
                              "got %d", SOMA_MAX_MILESTONES, s->n_milestones);
        for (int i = 0; i < s->n_milestones; i++) {
            if (s->milestones[i] < 0)
                return soma__fail(SOMA_ERR_ARG, "multistep schedule: milestones[%d] must be >= 0, "
                                  "got %d", i, s->milestones[i]);
            /* Equal neighbours are allowed: gamma applies twice, as torch's Counter does. */
            if (i && s->milestones[i] < s->milestones[i - 1])
                return soma__fail(SOMA_ERR_ARG, "multistep schedule: milestones must ascend, "
                                  "got %d after %d", s->milestones[i], s->milestones[i - 1]);
        }
        break;
    case SOMA_SCHED_COSINE:
        if (!finite_pos(s->t_max))
            return soma__fail(SOMA_ERR_ARG, "cosine schedule: t_max must be > 0 and finite, got %g",
                              s->t_max);
        if (!(s->min_lr >= 0.0f) || isinf(s->min_lr))
            return soma__fail(SOMA_ERR_ARG, "cosine schedule: min_lr must be >= 0 and finite, "
                              "got %g", s->min_lr);
        break;
    default:
        break;
    }
    return SOMA_OK;
}

float soma_schedule_lr(const soma_schedule *s, double t)
{
    if (!(t > 0.0)) t = 0.0;   /* before the first step, and NaN */
    const double base = s->base_lr, e = floor(t);
    double lr = base;
    switch (s->kind) {
    case SOMA_SCHED_STEP:
        lr = base * pow(s->gamma, floor(e / s->step_size));
        break;
    case SOMA_SCHED_MULTISTEP: {
        int passed = 0;
        for (int i = 0; i < s->n_milestones; i++) passed += s->milestones[i] <= e;
        lr = base * pow(s->gamma, passed);
        break;
    }
    case SOMA_SCHED_COSINE: {
        const double pi = 3.14159265358979323846;
        lr = s->min_lr + (base - s->min_lr) * (1.0 + cos(pi * t / s->t_max)) / 2.0;
        break;
    }
    default:
        break;
    }
    if (s->warmup > 0.0f && t < s->warmup) {
        const double w = s->warmup, start = 1.0 / w;
        lr *= start + (1.0 - start) * t / w;
    }
    return (float)lr;
}
