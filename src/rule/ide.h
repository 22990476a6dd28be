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
/* Simulation: a product whose input spikes are at most this fraction of its
 * input units takes the event-driven path (the rows of the transposed weight
 * of the units that fired), denser ones the GEMM.  Measured on F400's 400x400
 * feedback at batch 128, one thread (x86-64-v2 build): events 3x faster than
 * the GEMM at density 0.1, 1.5-1.9x at 0.2, even at about 0.3-0.4; F64C5's
 * 64x64x5x5 conv feedback on 14x14 maps: 3.5x at 0.1, 1.75x at 0.2, 1.2x at
 * 0.3. */
#define IDE_EVENT_DENSITY 0.3

/* The feedback operator W, from the last hidden layer H back to layer 1 */
typedef enum ide_fb_kind {
    IDE_FB_DENSE = 0,   /* dense forms: a matrix (n1, nH) */
    IDE_FB_CONV,        /* single-layer conv form: conv (C, C, K, K), stride 1, pad K/2 */
    IDE_FB_CONVT        /* multi-layer conv form: transposed conv (C_H, C_1, K, K), stride
                           s = h_1 / h_H, pad (K-1)/2, output padding s - 1 (AlexNet-F) */
} ide_fb_kind;

typedef struct ide_state {
    int H;                       /* hidden layers: dense layers of the net minus the readout,
                                    or the conv layers of the conv forms */
    int C;                       /* net outputs */
    int n[IDE_MAXH + 1];         /* n[0] inputs, n[k] units of hidden layer k (1..H) */
    int w[IDE_MAXH + 2], b[IDE_MAXH + 2]; /* param indices of layer k = 1..H+1
                                    (1: F, 2..H: S_k, H+1: the readout) */
    int fb;                      /* param index of the raw feedback weight */
    int sn_g, sn_u, sn_v;        /* spectral norm: param "..._g" (1), buffers u (sn_m),
                                    v (sn_n); -1 when off */
    int sn_m, sn_n;              /* the matrix whose norm sigma is: (n[1], n[H]) for the
                                    operator, (O, C K K) for the reshaped kernel */
    int sn_mat;                  /* 1: sigma of the matrix w (dense, or the reshaped kernel) */
    int mem;                     /* Broyden pairs per sample */
    /* conv forms (conv != 0): every hidden layer k is a conv map, cs[k]:
     * layer k-1's map (cs[1]: the input) -> layer k's (C_k, h_k, w_k) */
    int conv;
    ide_fb_kind fbk;
    soma_conv_shape cs[IDE_MAXH + 1];
    soma_conv_shape wcs;         /* IDE_FB_CONV: W itself, (C,h,w) -> (C,h,w); IDE_FB_CONVT:
                                    the conv W transposes, layer 1's map -> layer H's */
    size_t wn;                   /* floats of the feedback weight */
    float *cws;                  /* conv im2col workspace, for cws_threads threads */
    int cws_threads;
    float *cfb;                  /* (B, n[1]) W a before it is added (conv forms, dropout) */
    float *dsig;                 /* conv sn: d sigma / dw (wn) */
    /* batchnorm after layer k's linear map (k = 1: F's, k >= 2: S_k's), -1
     * when none: gamma, beta params; running mean / var buffers */
    int bn_g[IDE_MAXH + 2], bn_b[IDE_MAXH + 2], bn_rm[IDE_MAXH + 2], bn_rv[IDE_MAXH + 2];
    int bn_c[IDE_MAXH + 2], bn_s[IDE_MAXH + 2];  /* channels, values per channel per sample */
    float bn_eps[IDE_MAXH + 2], bn_mom[IDE_MAXH + 2];
    soma_bn_cache bnc[IDE_MAXH + 1]; /* k = 1: batch statistics of the last input map;
                                    k >= 2: of the last training map (with xhat) */
    soma_bn_cache bne[IDE_MAXH + 1]; /* k >= 2: running statistics of the last J map */
    int sbn;                     /* some S_k (k >= 2) has a batchnorm: two maps (below) */
    int sbn_update;              /* the next training map updates the S_k running statistics */
    float *fpre;                 /* F x before the batchnorm (B, n[1]) */
    int sim_mode;                /* F's batchnorm in soma__ide_simulate: 0 running
                                    statistics, 1 batch statistics + one running update */
    float *weff;                 /* effective feedback W (wn); sn off: the param itself */
    float *gweff;                /* dL/dW_eff with sn on (wn) */
    float sigma;                 /* sn: u^T w v of the last weight computation */
    float *u[IDE_MAXH + 1], *s[IDE_MAXH + 1];     /* simulation: membrane, spikes (B, n[k]) */
    float *pre[IDE_MAXH + 1], *act[IDE_MAXH + 1]; /* rate map at a: pre-activation / V_th
                                    and clamp of it per layer (B, n[k]); act[H] = f(a).
                                    With S_k batchnorm: the J map (running statistics) */
    float *pre_t[IDE_MAXH + 1], *act_t[IDE_MAXH + 1]; /* the training map (batch statistics
                                    of S_k), whose VJP gives the parameter gradient; the same
                                    buffers as pre, act when no S_k has a batchnorm */
    /* variational dropout (cfg.ide_dropout > 0, notes 2.6): one mask of 0 or
     * 1/(1-p) per layer output, drawn once per training batch and used at
     * every step, in f and in J; none at prediction */
    int drop_alloc;              /* masks allocated (ide_dropout > 0 at init) */
    int drop_on;                 /* masks applied now (inside a training gradient) */
    float *drop[IDE_MAXH + 1];   /* (B, n[k]): k = 1 F's output, k >= 2 S_k's */
    float *drop_fb;              /* (B, n[1]): the feedback's output */
    float *fx;                   /* F x + b_1 (then F's batchnorm, F's mask), (B, n[1]);
                                    spike input: of x-bar */
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
    float *d0, *d1, *d2;         /* backward scratch (B, max n) */
    /* event-driven products of the simulation (dense forms): spikes are 0 or
     * 1, so W s_H and S_k s_{k-1} are sums of the rows of W^T, S_k^T of the
     * units that fired, taken instead of the GEMM when the step's spikes are
     * at most IDE_EVENT_DENSITY of the inputs (same values up to the order of
     * the float sums).  Conv forms: every spike adds its kernel slice (all
     * output channels) at the output positions it reaches (W, the S_k, the
     * transposed conv alike).  The transposes are formed once per simulation,
     * when a step first takes the event path. */
    float *wt_fb;                /* W_eff^T (n[H], n[1]); conv forms: the kernel with the
                                    channel it adds into last (spike_conv) */
    float *wt[IDE_MAXH + 1];     /* k >= 2: S_k^T (n[k-1], n[k]), or S_k's kernel so */
    int wt_ok[IDE_MAXH + 1];     /* transposes formed in this simulation (index 1: W's) */
    int *sidx;                   /* dense forms: (B, max n[k]) spike index lists; conv forms:
                                    per thread, the spike scatter's row lists */
    size_t nsidx;                /* ints of sidx */
    float *zev;                  /* conv forms: channel-last accumulators, one map of
                                    max n[k] floats per thread (cws_threads) */
    size_t nzev;                 /* floats of one thread's accumulator */
    int event;                   /* test hook: 0 by the spike count, 1 always events,
                                    -1 always the GEMM */
    double ev_density;           /* the spike fraction up to which a product takes the
                                    event path (IDE_EVENT_DENSITY; tests move it) */
    int64_t ev_products, gemm_products; /* products of the last simulation by path */
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
/* Draws the dropout masks of a training batch of B samples from rng, in the
 * order F's output, S_2..S_H's, the feedback's (nothing when ide_dropout is
 * 0).  soma__ide_grad uses the masks as they are: the rule's train_batch
 * draws them first, tests may write their own into e->drop, e->drop_fb. */
void soma__ide_draw_masks(soma_rule *r, soma_rng *rng, int B);
/* T steps of the feedback SNN on x (B, n[0]) -> e->a (B, n[H]); spike
 * input (e->frames): x is (B, T, n[0]), frame t at step t.  F's batchnorm
 * (if any) per e->sim_mode: soma__ide_grad sets 1 (training, the running
 * statistics are updated here, once per batch), otherwise 0; with spike
 * input its statistics are those of F x-bar, applied at every step.  S_k's
 * batchnorm uses the running statistics.  The dropout masks apply when
 * e->drop_on (inside soma__ide_grad). */
void soma__ide_simulate(soma_rule *r, const float *x, int B);
/* out (B, n[H]) <- f(a) at a (B, n[H]) for the input of the last simulation
 * (e->fx: F x, or F x-bar with spike input); keeps the per-layer
 * pre-activations for the products below.  S_k's batchnorm: running
 * statistics (the map J is taken of, and the one the simulation follows). */
void soma__ide_map(soma_rule *r, float *out, const float *a, int B);
/* out (B, n[H]) <- J^T v, J = df/da at the point of the last soma__ide_map. */
void soma__ide_jt(soma_rule *r, float *out, const float *v, int B);
/* Solves (I - J^T) beta = g into e->beta; returns the relative residual of
 * the returned (best) iterate, *iters the number of J^T products. */
double soma__ide_solve(soma_rule *r, const float *g, int B, int *iters);
/* The whole gradient of the batch into the net's grad store (zeroed first):
 * simulation, readout loss, implicit solve, one VJP through f at a_T.
 * power_iter: advance the spectral norm's power iteration (training).  The
 * running statistics of F's and S_k's batchnorms move once. */
soma_status soma__ide_grad(soma_rule *r, const soma_batch *b, int power_iter, soma_step_stats *st);
/* soma__ide_grad in its two halves, to be called in this order on the same
 * batch (bench/bench_ide.c times them apart): the forward (the checks, W_eff
 * with power_iter, the training simulation: F x with its batch statistics,
 * the running ones moved once, the dropout masks on) and the backward
 * (readout, loss, f(a_T), the solve, the parameter VJPs), which reuses the
 * forward's F x (and x-bar) instead of computing them again. */
soma_status soma__ide_grad_forward(soma_rule *r, const soma_batch *b, int power_iter);
soma_status soma__ide_grad_backward(soma_rule *r, const soma_batch *b, soma_step_stats *st);
/* The same at a given rate point a (B, n[H]) instead of the simulation's
 * (the weight as it is: no power iteration).  The batchnorms use the batch
 * statistics of x (F) and of the map at a (S_k) without touching the running
 * statistics. */
soma_status soma__ide_grad_at(soma_rule *r, const soma_batch *b, const float *a, soma_step_stats *st);

#endif
