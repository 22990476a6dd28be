/*
 * ep.h - equilibrium propagation's state (internal; tests read the phase
 * end states through it).  See ep.c and docs/ep.md.
 */
#ifndef SOMA_EP_H
#define SOMA_EP_H

#include "rule.h"

#define EP_MAXL SOMA_EP_MAX_LAYERS

/* A set of layer states: s[k] is (max_batch, n[k]) for k = 1..nd; s[0] is
 * unused (the input is clamped and read from rho(x)). */
typedef struct ep_set { float *s[EP_MAXL + 1]; } ep_set;

typedef struct ep_state {
    int L;                      /* weighted layers of the net: conv layers, then dense */
    int nd;                     /* dynamical layers: L (mse output) or L - 1 (ce readout) */
    int ce;                     /* softmax readout: dense layer L maps s_nd to logits */
    int C;                      /* net outputs */
    int n[EP_MAXL + 1];         /* n[0] inputs, n[k] units of layer k (1-based; a conv
                                   layer's: its pooled output C x PH x PW) */
    int w[EP_MAXL + 1], b[EP_MAXL + 1]; /* param indices of layer k */
    int layer[EP_MAXL + 1];     /* net layer index of layer k (the dense or conv layer) */
    int pool[EP_MAXL + 1];      /* conv layer k: net index of its max pool; dense: -1 */
    int nconv;                  /* conv layers (k = 1..nconv) */
    int fb[EP_MAXL + 1];        /* general: param index of the feedback weight carrying
                                   rho(s_k) to layer k-1, k = 2..nd; -1.  Dense layer k:
                                   a matrix (n[k-1], n[k]); conv layer k: a kernel shaped as
                                   W_k, applied as maxpool(conv) and its transposed conv */
    int particles;              /* buffer index of "ep.particles" (P, S), -1 */
    size_t S;                   /* floats per sample over the dynamical layers */
    float lr[EP_MAXL + 1];      /* per-layer factors, [1..L] */
    ep_set cur, nxt;            /* relaxation ping-pong */
    ep_set s0, sp, sm;          /* free point, +beta and -beta phase ends */
    ep_set r0, ra, rb;          /* rho of the above where an update needs it */
    ep_set rr;                  /* rho of the state a step starts from */
    ep_set adj[2];              /* soma_ep_grad_angle: adjoint ping-pong */
    ep_set tmp;                 /* per-layer scratch (the update's state difference) */
    float *rx;                  /* rho(x), (max_batch, n[0]) */
    float *drive1;              /* layer_1(rho(x)), (max_batch, n[1]): constant while the
                                   input is clamped and the weights fixed, so formed once
                                   per batch (idx[1] with it, for a conv layer 1) */
    float *drho;                /* (max_batch, max n): rho'(s_k) in a step */
    float *g;                   /* (max_batch, max n): readout force dC/d rho(s_nd) */
    float *logits, *probs, *dl; /* (max_batch, C) */
    float *onehot;              /* (max_batch, C) */
    float *gsave;               /* soma_ep_grad_angle: the EP update, (params) */
    float *z;                   /* conv: un-pooled scratch, (max_batch, max C x OH x OW) */
    float *pooled;              /* conv: pooled scratch, (max_batch, max n) */
    float *block;               /* one allocation holding all of the above */
    size_t floats;              /* its size */
    int32_t *idx[EP_MAXL + 1];  /* conv layer k: max-pool argmax of conv_k(rho(s_{k-1})) + b_k
                                   at the iterate a step starts from, (max_batch, n[k]) */
    int32_t *idxg;              /* conv feedback: argmax of conv_G(rho(s_k)), (max_batch, max n) */
    int32_t *iblock;            /* one allocation holding the argmaxes */
    size_t ints;                /* its size */
    float beta_used;            /* signed beta of the last one-sided update */
    double res_free, res_nudge; /* residuals of the last batch */
    double sum_free, sum_nudge, max_free;
    int last_steps;             /* Euler steps of the last ep_relax (ep_stop) */
    int64_t steps_free, steps_nudge;   /* summed over the batches since the last reset */
    int64_t batches, unconverged;
} ep_state;

#endif
