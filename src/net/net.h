/*
 * net.h - the network as the rules see it (internal).
 *
 * A network is a list of layers in the order of nn.Sequential, with one
 * parameter store (flat value and grad arrays, named entries) and one
 * buffer store (non-trainable state: batchnorm running statistics).  Every
 * layer's output for the current batch is cached, so BP reads it in
 * backward, LFP reads the per-layer inputs for its relevance rules, and the
 * local rules (EP, PC) read weights by name and call the same kernels.
 */
#ifndef SOMA_NET_H
#define SOMA_NET_H

#include "../soma_internal.h"
#include "../neuron/neuron.h"
#include "../neuron/ltc.h"

typedef enum soma_layer_kind {
    SOMA_LAYER_DENSE = 0,
    SOMA_LAYER_CONV,
    SOMA_LAYER_MAXPOOL,
    SOMA_LAYER_AVGPOOL,
    SOMA_LAYER_FLATTEN,
    SOMA_LAYER_ACT,
    SOMA_LAYER_DROPOUT,
    SOMA_LAYER_BATCHNORM,
    SOMA_LAYER_CELL,           /* a neuron cell (spiking nets): stateful over time */
    SOMA_LAYER_COUNT
} soma_layer_kind;

/* One named tensor in a store: values at store->value + offset. */
typedef struct soma_param {
    char    name[48];          /* "0.weight": nn.Sequential state_dict names */
    int     ndim;
    int64_t shape[SOMA_MAX_DIMS];
    size_t  offset, n;
} soma_param;

typedef struct soma_store {
    soma_param *p;
    int         count;
    size_t      total;         /* floats */
    size_t      cap;           /* floats allocated for value (and grad), >= total */
    float      *value;         /* (total) */
    float      *grad;          /* (total), NULL for buffer stores */
} soma_store;

typedef struct soma_layer {
    soma_layer_kind kind;
    int in_c, in_h, in_w;      /* per-sample input shape (dense: in_c = features) */
    int out_c, out_h, out_w;   /* per-sample output shape */
    size_t in_size, out_size;  /* c*h*w */
    /* parameters: indices into net->params (-1 if none) */
    int w, b;                  /* dense/conv weight and bias; batchnorm gamma/beta */
    int rec;                   /* DENSE: recurrent weight (N,N) on rec_src's s_{t-1}, -1 */
    int rec_src;               /* DENSE with rec: the cell layer fed back */
    int run_mean, run_var;     /* batchnorm: indices into net->buffers */
    soma_act act;              /* ACT */
    float p;                   /* DROPOUT probability */
    int k, stride, pad;        /* CONV, POOL */
    float eps, momentum;       /* BATCHNORM; CELL ltc == 2: its map BN */
    int bn_steps;              /* BATCHNORM in a temporal net (bnN): running statistics per
                                * time step, rows (N, C), step t >= N uses row N - 1;
                                * 0: one row shared by all steps */
    /* BATCHNORM sbn / sbnN after a recurrent dense (the authors'
     * SeparatedBatchNorm1d pair, notes/fptt.md 2.2): out = BN(W x + b) +
     * BN_rec(R s_{t-1}), each with its own affine and running statistics
     * ("<i>.rec.weight" ...); the dense layer before it (rec_sep) keeps
     * R s_{t-1} apart in rout.  -1 / 0 when absent. */
    int bn_sep, w2, b2, run_mean2, run_var2;
    soma_bn_cache bn2;
    int rec_sep;               /* DENSE with rec: R s_{t-1} into rout, not into out */
    float *rout, *grec;        /* DENSE rec_sep: R s_{t-1} per slot; dL/d(rout) of this step */
    soma_cell_params cell;     /* CELL */
    /* CELL with liquid time constants (ltcN, rltcN, the LTC readout): the
     * rates are tau = sigmoid(k (W [I_t, x_{t-1}] + b)) (ltc.h); tau_m
     * (x = u) gives alpha_v = 1 - tau_m, tau_adp (x = eta, ALIF only) gives
     * rho_v.  Parameter indices, -1 if absent: "<i>.tau_m.weight" (N,2N),
     * "<i>.tau_m.bias" (N), "<i>.tau_m.k" (1), the same for tau_adp. */
    int ltc;
    int tm_w, tm_b, tm_k, ta_w, ta_b, ta_k;
    float   *chm, *cha;        /* CELL ltc: h of tau_m / tau_adp per slot (after the map's BN) */
    float   *lsc;              /* CELL ltc: scratch, 4 x (max_batch, N); conv cells 6 (7 with map BN) */
    /* CELL ltc == 2 with cell.map_bn > 0: the authors' batchnorm inside the
     * tau maps, tau = sigmoid(BN(conv(...))), per map m (0 tau_m, 1 tau_adp;
     * -1 if absent): params "<i>.tau_m.bn.weight", "<i>.tau_m.bn.bias" (C),
     * buffers "<i>.tau_m.bn.running_mean", "<i>.tau_m.bn.running_var", (C)
     * shared by all steps (map_bn 1) or (N, C) one row per step (map_bn N > 1,
     * steps from N on use row N - 1, as bnN).  eps, momentum: 1e-5, 0.1. */
    int mbn_w[2], mbn_b[2], mbn_rm[2], mbn_rv[2];
    soma_bn_cache mbn[2];      /* mean, invstd (C) and xhat (max_batch, out_size) per slot */
    /* caches, net->slots copies of (max_batch, out_size) each: slot 0 in a
     * static net; in a temporal net step t uses slot (t+1) % slots and the
     * slot of t = -1 holds the initial state. */
    float   *out;              /* layer output (a cell's: its spikes, or LI membrane) */
    int32_t *idx;              /* MAXPOOL argmax */
    float   *mask;             /* DROPOUT keep mask, one per sequence (variational) */
    soma_bn_cache bn;          /* BATCHNORM: mean, invstd (C) and xhat per slot */
    float   *cu, *ca, *cv, *cth; /* CELL: membrane u, adaptation a, v_t, th_t per slot */
    float   *gu[2], *ga[2], *gs[2]; /* CELL: state-gradient carries (this step, previous) */
    float   *delta;            /* DENSE, static nets: dL/d(output) kept by the fused update */
} soma_layer;

struct soma_net {
    int no_carry;   /* backward of a window's first step: its state gradients are discarded */
    char       *spec;
    int         in_c, in_h, in_w;
    soma_act    act;            /* hidden activation */
    soma_init   init;
    int         n_layers;
    soma_layer *layers;
    soma_store  params;
    soma_store  buffers;
    int         max_batch;      /* caches sized for this; 0 before prepare */
    float      *dbuf[2];        /* backward ping-pong, (max_batch, max layer size) */
    float      *ws;             /* conv im2col workspace */
    size_t      ws_floats, act_bytes;
    int         ws_threads;     /* threads the conv workspace was sized for */
    int         fusable;        /* static, only flatten/dense/act/dropout layers */
    float      *rowbuf;         /* fused update: one gradient row per thread */
    size_t      rowbuf_stride;
    int         train;          /* dropout on, batchnorm batch statistics */
    int         spiking;        /* has CELL layers: use soma_net_step */
    soma_net_options opts;      /* as built (checkpoints record them) */
    soma__spike spike;          /* STEP; tests switch to a smooth sigmoid for finite differences */
    int         slots;          /* cache copies: 1 static, window + 1 temporal */
    int         t;              /* temporal: steps taken since soma_net_reset_state */
    int         cur_b;          /* temporal: batch of the current sequence */
    const float **xs;           /* input of each slot (caller-owned; backward reads it) */
    int         prefix;         /* leading layers with no state and no recurrence */
    int         static_input;   /* the caller feeds the same x every step of a sequence */
    float      *psum;           /* static input: dL/d(prefix output) summed over the window */
};

static inline float *soma__slot(const soma_net *n, const soma_layer *l, float *base, int slot)
{
    return base + (size_t)slot * n->max_batch * l->out_size;
}
static inline int soma__slot_of(const soma_net *n, int t) { return (t + 1) % n->slots; }
static inline int32_t *soma__slot_idx(const soma_net *n, const soma_layer *l, int slot)
{
    return l->idx + (size_t)slot * n->max_batch * l->out_size;
}

/* Pointer to a parameter's values / grads. */
static inline float *soma__param_value(soma_net *n, int i) { return n->params.value + n->params.p[i].offset; }
static inline float *soma__param_grad(soma_net *n, int i) { return n->params.grad + n->params.p[i].offset; }

/* A rule's own tensors, added in its init (see net.c). */
int soma__net_add_tensor(soma_net *n, int is_param, const char *name, int ndim, const int64_t *shape);
/* "dense", "conv", "maxpool", ... (the names soma_net_describe prints) */
const char *soma__layer_kind_name(soma_layer_kind k);
/* Makes room for `floats` more values in a store, so the tensors added next
 * (up to that size) need no reallocation: one block, not a heap of freed
 * copies (a rule adding a tensor per parameter calls it first). */
soma_status soma__net_reserve(soma_net *n, int is_param, size_t floats);
static inline float *soma__buffer_value(soma_net *n, int i) { return n->buffers.value + n->buffers.p[i].offset; }

/* Small-batch BP step that never stores the gradient (see net.c). */
#define SOMA__FUSED_MAX_BATCH 8
soma_status soma__net_fused_update(soma_net *n, const float *dlogits, int B, soma_optim *o, float lr);

#endif
