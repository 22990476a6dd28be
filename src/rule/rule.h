/*
 * rule.h - the table every learning rule implements (internal).
 *
 * A rule turns the shared network and a batch into parameter updates.  One
 * file per rule fills a soma_rule_ops; registering it is one line in
 * rule.c.  Rules that update once per batch compute a gradient-like
 * direction into the net's grad store and call the shared optimizer; rules
 * that learn inside a sequence (FPTT) call it per step.
 */
#ifndef SOMA_RULE_H
#define SOMA_RULE_H

#include "../net/net.h"

typedef struct soma_rule_ops {
    const char *name;
    const char *about;
    /* Allocates r->state; every buffer sized for max_batch here.  May add
     * tensors to the net (soma__net_add_tensor: trainable ones join the
     * optimizer, all are checkpointed); runs before r->optim exists. */
    soma_status (*init)(soma_rule *r, int max_batch);
    soma_status (*train_batch)(soma_rule *r, const soma_batch *b, float lr, soma_rng *rng,
                               soma_step_stats *st);
    soma_status (*predict)(soma_rule *r, const soma_batch *b, const float **scores,
                           soma_step_stats *st);
    void (*plan)(const soma_rule *r, soma_mem_plan *plan);  /* fills activations/workspace */
    void (*release)(soma_rule *r);
    /* Optional: the end of a training epoch (FPTT: W <- Wbar).  NULL: nothing. */
    void (*epoch_end)(soma_rule *r);
} soma_rule_ops;

struct soma_rule {
    const soma_rule_ops *ops;
    soma_net        *net;
    soma_rule_config cfg;
    soma_optim      *optim;
    int              max_batch;
    void            *state;      /* the rule's own buffers */
};

extern const soma_rule_ops soma__rule_bp;
/* Shared by the temporal rules (bptt, fptt, lfp through time). */
/* Seed of the stream that evaluation draws Poisson inputs from, so a
 * checkpoint always scores the same. */
#define SOMA__EVAL_SEED 0x5eed0fULL
/* Input of step t: b->x itself (direct encoding: xs == NULL), or step t of
 * it encoded into xs (B, step) and returned. */
const float *soma__encode_input(const soma_encoder *enc, float *xs, const soma_batch *b, int t,
                                soma_rng *rng);
/* scores(bc) += step t's contribution of out to the reduced scores (mean,
 * sum, each: the mean, or last: a copy at t = T-1). */
void soma__reduce_add(const soma_rule_config *c, float *scores, const float *out, int t, size_t bc);

/* LFP through time for step-function spiking nets (lfp_snn.c), called by
 * lfp.c when the net has cells. */
#define SOMA_LFP_SNN_MAX_CELLS 8
soma_status soma__lfp_snn_init(soma_rule *r, int max_batch, void **state);
void        soma__lfp_snn_free(void *state);
size_t      soma__lfp_snn_bytes(const void *state);
soma_status soma__lfp_snn_feedback(soma_rule *r, void *state, const soma_batch *b, soma_rng *rng,
                                   soma_step_stats *st);
soma_status soma__lfp_snn_predict(soma_rule *r, void *state, const soma_batch *b,
                                  const float **scores, soma_step_stats *st);
/* FPTT's oracle-divergence gradient (fptt.c; tests check it against FD). */
double soma__fptt_aux_grad(float *dlogits, const float *probs, const float *oracle, int B, int C,
                           float weight);
extern const soma_rule_ops soma__rule_bptt;
extern const soma_rule_ops soma__rule_ep;
extern const soma_rule_ops soma__rule_fptt;
extern const soma_rule_ops soma__rule_ide;
/* FPTT internals for tests (fptt.c): one window of a training sequence,
 * and the post-step update of lam and Wbar. */
soma_status soma__fptt_window(soma_rule *r, const soma_batch *b, int p, float lr, soma_rng *rng,
                              double *loss);
void soma__fptt_post_update(float *lam, float *wbar, const float *w, size_t n, float alpha, float beta);
extern const soma_rule_ops soma__rule_lfp;
extern const soma_rule_ops soma__rule_pc;

/* Shared helpers for rules: loss forward+backward on the class scores, and
 * accuracy counting; NaN/Inf checks. */
soma_status soma__loss_and_grad(float *dscores, float *probs, const float *scores,
                                const int32_t *labels, int B, int C, soma_loss_kind kind,
                                soma_step_stats *st);
/* The same with regression targets (B, C): MSE against them when non-NULL. */
soma_status soma__loss_and_grad_t(float *dscores, float *probs, const float *scores,
                                  const int32_t *labels, const float *target, int B, int C,
                                  soma_loss_kind kind, soma_step_stats *st);
int  soma__all_finite(const float *x, size_t n);
/* Scales g so its L2 norm is at most max_norm (torch clip_grad_norm_). */
void soma__clip_norm(float *g, size_t n, float max_norm);
/* The clip of soma__clip_norm with the sum of squares ss already known. */
void soma__clip_scale(float *g, size_t n, float max_norm, double ss);

#endif
