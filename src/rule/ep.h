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
    int L;                      /* dense layers of the net */
    int nd;                     /* dynamical layers: L (mse output) or L - 1 (ce readout) */
    int ce;                     /* softmax readout: dense layer L maps s_nd to logits */
    int C;                      /* net outputs */
    int n[EP_MAXL + 1];         /* n[0] inputs, n[k] units of dense layer k (1-based) */
    int w[EP_MAXL + 1], b[EP_MAXL + 1]; /* param indices of dense layer k */
    int fb[EP_MAXL + 1];        /* general: param index of the feedback matrix
                                   (n[k-1], n[k]) carrying rho(s_k) to layer k-1, k = 2..nd; -1 */
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
    float *drho;                /* (max_batch, max n): rho'(s_k) in a step */
    float *g;                   /* (max_batch, max n): readout force dC/d rho(s_nd) */
    float *logits, *probs, *dl; /* (max_batch, C) */
    float *onehot;              /* (max_batch, C) */
    float *gsave;               /* soma_ep_grad_angle: the EP update, (params) */
    float *block;               /* one allocation holding all of the above */
    size_t floats;              /* its size */
    float beta_used;            /* signed beta of the last one-sided update */
    double res_free, res_nudge; /* residuals of the last batch */
    double sum_free, sum_nudge, max_free;
    int64_t batches, unconverged;
} ep_state;

#endif
