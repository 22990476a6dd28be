/*
 * optim.h - the table every optimizer file fills in (internal to src/optim).
 *
 * An optimizer is one file defining one soma__optim_impl; optim.c keeps the
 * registry keyed by soma_optim_kind and does everything shared (defaults,
 * validation of the common fields, state allocation, the step counter).  A
 * new optimizer is therefore one new file plus one line in that registry.
 */
#ifndef SOMA_OPTIM_H
#define SOMA_OPTIM_H

#include "../soma_internal.h"

#define SOMA__OPTIM_MAX_STATE 4

/* Above this many parameters an update loop is split across OpenMP threads.
 * Every update is elementwise, so the result does not depend on the split. */
#define SOMA__OPTIM_PAR_MIN 32768

/* Put before each update loop.  The loops themselves are serial: updates
 * are elementwise, so soma_optim_step splits a large array across OpenMP
 * threads and runs each thread's share through the same loop (no parallel
 * region per call: the small-batch path updates one weight row at a time,
 * thousands of calls per step).  gcc's -O2 vectorizer skips loops of unknown
 * length unless `simd` asks for it (and stays scalar on sqrtf unless
 * -fno-math-errno); clang vectorizes them unasked and warns about a `simd`
 * it cannot honour, so it gets none. */
#define SOMA__PRAGMA(x) _Pragma(#x)
#if defined(__clang__)
#define SOMA__OPTIM_FOR(n)
#else
#define SOMA__OPTIM_FOR(n) SOMA__PRAGMA(omp simd)
#endif

struct soma_optim {
    soma_optim_config cfg;
    const struct soma__optim_impl *impl;
    size_t n;                               /* parameters */
    int64_t t;                              /* steps taken; the step being run is t */
    int n_state;
    float *state[SOMA__OPTIM_MAX_STATE];    /* n floats each, zeroed at creation */
    float *block;                           /* one aligned allocation behind state[] */
    /* beta1, beta2, dampening as the decimals they were written as (see
     * soma__optim_decimal): the doubles torch would hold for the same input. */
    double beta1, beta2, dampening;
    /* Parameter groups (soma_optim_set_groups): contiguous ranges of the
     * flat array; per-group state (impl->group_state floats per group). */
    int     n_groups;
    size_t *g_off, *g_len;
    float  *g_state;
};

typedef struct soma__optim_impl {
    const char *name;                       /* for messages and soma_optim_name */
    /* Fills the torch defaults of this kind's own fields. */
    void (*defaults)(soma_optim_config *c);
    /* Checks this kind's own fields; lr and weight decay are checked by optim.c.
     * Returns SOMA_ERR_ARG naming the field and value. */
    soma_status (*check)(const soma_optim_config *c);
    /* How many state arrays this configuration needs, and their names
     * (torch's state_dict keys, so checkpoints read the same in both). */
    int (*state_count)(const soma_optim_config *c);
    const char *state_names[SOMA__OPTIM_MAX_STATE];
    /* w[0..n) -= update(g[0..n)) for the parameters off..off+n of the flat
     * array (w and g already point at element off; state is indexed off+i);
     * o->t already counts this step (1 on the first). */
    void (*step)(soma_optim *o, float *w, const float *g, float lr, size_t off, size_t n);
    /* Kinds that work per group (MQ): floats of state per group and its name;
     * such a kind cannot step without groups nor on a part of the array
     * (soma__optim_range), and soma_optim_step calls group_step instead. */
    int group_state;
    const char *group_state_name;
    void (*group_step)(soma_optim *o, float *w, const float *g, float lr);
} soma__optim_impl;

extern const soma__optim_impl soma__optim_sgd;
extern const soma__optim_impl soma__optim_adam;
extern const soma__optim_impl soma__optim_adamax;
extern const soma__optim_impl soma__optim_mq;

/* The shortest decimal that rounds to x, as a double: 0.999f -> 0.999, not
 * 0.99900001287.  torch keeps hyperparameters as Python doubles; soma's config
 * holds floats, and 1 - 0.999f differs from 1 - 0.999 by 1.3e-5 relative,
 * which would show in the Adam state (not in the weights, where the bias
 * correction cancels it).  Recovering the decimal makes both match torch. */
double soma__optim_decimal(float x);

/* Shared check of the Adam-family fields (beta1, beta2, eps). */
soma_status soma__optim_check_betas(const soma_optim_config *c);

#endif /* SOMA_OPTIM_H */
