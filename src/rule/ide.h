/*
 * ide.h - IDE's state and internals (internal; tests reach the simulation,
 * the rate map, the Jacobian products and the solver through it).  See
 * ide.c and docs/ide.md.
 */
#ifndef SOMA_IDE_H
#define SOMA_IDE_H

#include "rule.h"

#define IDE_MAXH 8   /* hidden (spiking) layers at most */
#define IDE_MEM 27   /* Broyden: rank-1 pairs kept per sample (the authors' min(30, 27)) */

typedef struct ide_state {
    int H;                       /* hidden layers: dense layers of the net minus the readout */
    int C;                       /* net outputs */
    int n[IDE_MAXH + 1];         /* n[0] inputs, n[k] units of hidden layer k (1..H) */
    int w[IDE_MAXH + 2], b[IDE_MAXH + 2]; /* param indices of dense layer k = 1..H+1
                                    (1: F, 2..H: S_k, H+1: the readout) */
    int fb;                      /* param index of the raw feedback w (n[1], n[H]) */
    int sn_g, sn_u, sn_v;        /* spectral norm: param "..._g" (1), buffers u (n[1]),
                                    v (n[H]); -1 when off */
    int mem;                     /* Broyden pairs per sample */
    /* convolutional form (conv != 0): H = 1, F = the net's first conv layer,
     * the rates are its (C, OH, OW) output map (n[1] = C*OH*OW), W is a conv
     * kernel "<i>.weight_fb" (C, C, K, K), stride 1, pad K/2, no bias */
    int conv;
    soma_conv_shape fcs;         /* F: x (B, Cin, Hin, Win) -> (B, C, OH, OW) */
    soma_conv_shape wcs;         /* W: (B, C, OH, OW) -> (B, C, OH, OW) */
    size_t wn;                   /* floats of the feedback weight */
    float *cws;                  /* conv im2col workspace, for cws_threads threads */
    int cws_threads;
    float *cfb;                  /* (B, n[1]) conv mode: W a before it is added */
    float *dsig;                 /* conv sn: d sigma / dw (wn) */
    /* batchnorm on F (the layer right after the first dense / conv), -1 when
     * none: gamma, beta params; running mean / var buffers */
    int bn_g, bn_b, bn_rm, bn_rv;
    int bn_c, bn_s;              /* channels, values per channel per sample */
    float bn_eps, bn_mom;
    soma_bn_cache bnc;           /* batch statistics of the last input map */
    float *fpre;                 /* F x before the batchnorm (B, n[1]) */
    int sim_mode;                /* F's batchnorm in soma__ide_simulate: 0 running
                                    statistics, 1 batch statistics + one running update */
    float *weff;                 /* effective feedback W (n[1], n[H]); sn off: the param itself */
    float *gweff;                /* dL/dW_eff with sn on (n[1] * n[H]) */
    float sigma;                 /* sn: u^T w v of the last weight computation */
    float *u[IDE_MAXH + 1], *s[IDE_MAXH + 1];     /* simulation: membrane, spikes (B, n[k]) */
    float *pre[IDE_MAXH + 1], *act[IDE_MAXH + 1]; /* rate map at a: pre-activation / V_th
                                    and clamp of it per layer (B, n[k]); act[H] = f(a) */
    float *fx;                   /* F x + b_1, (B, n[1]); spike input: of x-bar */
    /* spike input (cfg.encoding frames): a sample is T frames of n[0] values,
     * frame t contiguous; layer 1 gets F x_t + b_1 at step t, the map f the
     * (lambda-weighted) average input x-bar (notes 2.2, 2.5) */
    int frames;
    float *xbar;                 /* (B, n[0]) x-bar of the last simulation / map */
    float *xt;                   /* (B, n[0]) frame t, gathered */
    float *fstep;                /* (B, n[1]) F x_t + b_1 (then F's batchnorm) */
    float *acc, *a;              /* spike accumulator and rates a_T, (B, n[H]) */
    float *gA;                   /* dL/da from the readout, (B, n[H]) */
    float *beta, *best, *G, *Gn, *dx, *dg, *jt; /* solver, (B, n[H]) each */
    float *U, *V;                /* Broyden factors (B, mem, n[H]) each */
    float *d0, *d1;              /* backward scratch (B, max n) */
    float *logits, *probs, *dl;  /* (B, C) */
    float *block;
    size_t floats;
    /* diagnostics */
    double res, res_max, sum_res, gap;
    int iters;
    int64_t batches, unconverged;
} ide_state;

/* Recomputes W_eff from the raw weight (spectral norm on: one power
 * iteration first when power_iter != 0). */
void soma__ide_weight(soma_rule *r, int power_iter);
/* T steps of the feedback SNN on x (B, n[0]) -> e->a (B, n[H]); spike
 * input (e->frames): x is (B, T, n[0]), frame t at step t.  F's batchnorm
 * (if any) per e->sim_mode: soma__ide_grad sets 1 (training, the running
 * statistics are updated here, once per batch), otherwise 0; with spike
 * input its statistics are those of F x-bar, applied at every step. */
void soma__ide_simulate(soma_rule *r, const float *x, int B);
/* out (B, n[H]) <- f(a) at a (B, n[H]) for the input of the last simulation
 * (e->fx: F x, or F x-bar with spike input); keeps the per-layer
 * pre-activations for the products below. */
void soma__ide_map(soma_rule *r, float *out, const float *a, int B);
/* out (B, n[H]) <- J^T v, J = df/da at the point of the last soma__ide_map. */
void soma__ide_jt(soma_rule *r, float *out, const float *v, int B);
/* Solves (I - J^T) beta = g into e->beta; returns the relative residual of
 * the returned (best) iterate, *iters the number of J^T products. */
double soma__ide_solve(soma_rule *r, const float *g, int B, int *iters);
/* The whole gradient of the batch into the net's grad store (zeroed first):
 * simulation, readout loss, implicit solve, one VJP through f at a_T.
 * power_iter: advance the spectral norm's power iteration (training). */
soma_status soma__ide_grad(soma_rule *r, const soma_batch *b, int power_iter, soma_step_stats *st);
/* The same at a given rate point a (B, n[H]) instead of the simulation's
 * (the weight as it is: no power iteration).  F's batchnorm uses the batch
 * statistics of x without touching the running statistics. */
soma_status soma__ide_grad_at(soma_rule *r, const soma_batch *b, const float *a, soma_step_stats *st);

#endif
