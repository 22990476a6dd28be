/*
 * soma.h - the whole public API of libsoma.
 *
 * soma trains rate-based, recurrent and spiking networks with BP and with
 * learning rules beyond it (FPTT, IDE, EP, LFP, PC), on a CPU, in C11.
 * If a symbol is not in this header it is not API.
 *
 * Conventions (stated once, used everywhere):
 *  - float32 data, row-major, last dimension contiguous.
 *  - Kernels take outputs first, then inputs, then dimensions.  Gradient
 *    arguments carry a `d` prefix and backward kernels ACCUMULATE (+=) into
 *    them, so a caller zeroes gradient buffers once per step.  A NULL
 *    gradient pointer means "not needed" and skips that work.
 *  - Fallible functions return soma_status (SOMA_OK == 0, errors < 0); the
 *    message of the last error on the calling thread is soma_last_error().
 *    The library never prints and never exits.
 *  - Objects are opaque handles created by the _new, _open or _load functions and released
 *    by the matching _free, which accepts NULL.
 */
#ifndef SOMA_H
#define SOMA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SOMA_VERSION_MAJOR 0
#define SOMA_VERSION_MINOR 1
#define SOMA_VERSION_PATCH 0
#define SOMA_VERSION "0.1.0"

/* Returns SOMA_VERSION of the library actually linked. */
const char *soma_version(void);

/* ======================================================================== */
/* Errors                                                                    */
/* ======================================================================== */

typedef enum soma_status {
    SOMA_OK = 0,
    SOMA_ERR_NOMEM = -1,      /* allocation failed */
    SOMA_ERR_IO = -2,         /* open/read/write/rename failed */
    SOMA_ERR_FORMAT = -3,     /* a file is malformed (magic, header, truncation) */
    SOMA_ERR_ARG = -4,        /* an argument or option is out of range */
    SOMA_ERR_SHAPE = -5,      /* shapes do not agree */
    SOMA_ERR_CHECKSUM = -6,   /* a file's size or SHA-256 is not the recorded one */
    SOMA_ERR_NUMERIC = -7,    /* NaN or Inf appeared */
    SOMA_ERR_UNSUPPORTED = -8 /* valid request this build or rule cannot serve */
} soma_status;

/* Short fixed description of a status code ("out of memory", ...). */
const char *soma_status_string(soma_status s);
/* Detailed message of the last error raised on this thread ("" if none).
 * Names the file/option and what is wrong.  Valid until the next error. */
const char *soma_last_error(void);
/* Clears the last error message of this thread. */
void soma_clear_error(void);

/* ======================================================================== */
/* Random numbers: one generator type (xoshiro128**, seeded by splitmix64). */
/* Same seed -> same stream on every platform.                              */
/* ======================================================================== */

typedef struct soma_rng { uint32_t s[4]; } soma_rng;

void     soma_rng_seed(soma_rng *r, uint64_t seed);
uint32_t soma_rng_u32(soma_rng *r);
float    soma_rng_uniform(soma_rng *r);              /* [0, 1) with 24 bits */
float    soma_rng_normal(soma_rng *r);               /* N(0,1), Box-Muller */
uint32_t soma_rng_below(soma_rng *r, uint32_t n);    /* [0, n), unbiased; n > 0 */
void     soma_rng_shuffle_u32(soma_rng *r, uint32_t *a, size_t n); /* Fisher-Yates */

/* ======================================================================== */
/* Threads                                                                   */
/* ======================================================================== */

/* Sets the number of threads used by OpenMP loops and by OpenBLAS.
 * n <= 0 picks SOMA_THREADS from the environment, or 1 if unset.
 * Returns the number actually set. Same seed + same thread count gives
 * bit-identical training. */
int soma_set_threads(int n);
int soma_get_threads(void);

/* on != 0: flush denormal floats to zero (results and inputs) in SSE/AVX
 * arithmetic, for the calling thread and the current OpenMP team; threads
 * created later inherit it.  Why: surrogate gradients and decaying traces
 * leave denormals, which some x86 CPUs compute ~100x slower (FPTT training
 * 2.7x slower on an Intel Xeon, docs/results.md session 7).  on == 0 restores
 * IEEE denormals; on < 0 flushes unless the environment has SOMA_DENORMALS=1.  Process-wide state, so a library never sets it by itself:
 * the CLI does.  Returns 1 when set, 0 where unsupported (not x86). */
int soma_flush_denormals(int on);

/* The OpenBLAS kernel set in use (its core name, e.g. "SkylakeX"). */
const char *soma_blas_core(void);
/* Where OpenBLAS did not know this CPU and fell back to its SSE3 kernels
 * ("Prescott"): the OPENBLAS_CORETYPE value of the widest kernel set the CPU
 * runs ("SkylakeX", "Haswell", "Sandybridge"); NULL otherwise.  OpenBLAS
 * reads that variable when it loads, so a program sets it and runs itself
 * again (soma_exec_tuned); a library never does it by itself. */
const char *soma_blas_core_better(void);
/* For programs, first thing in main: sets OMP_WAIT_POLICY=PASSIVE (spinning
 * OpenMP threads on shared cores cost 20-40x) and OPENBLAS_CORETYPE to
 * soma_blas_core_better(), each only where the environment does not set it,
 * and if it set one, executes the program again (its own file, same argv)
 * so that the runtimes read them.  Returns when nothing needed setting or the
 * exec failed.  The CLI and the benchmarks call it. */
void soma_exec_tuned(char **argv);

/* ======================================================================== */
/* Arena: a bump allocator over one block; reset frees everything at once.  */
/* ======================================================================== */

typedef struct soma_arena soma_arena;

soma_status soma_arena_new(soma_arena **out, size_t bytes);
void        soma_arena_free(soma_arena *a);
/* 64-byte aligned; NULL (and an error set) if the arena is exhausted. */
void       *soma_arena_alloc(soma_arena *a, size_t bytes);
void        soma_arena_reset(soma_arena *a);
size_t      soma_arena_used(const soma_arena *a);
size_t      soma_arena_peak(const soma_arena *a);
size_t      soma_arena_capacity(const soma_arena *a);

/* ======================================================================== */
/* Tensors: float32, contiguous, up to 4-D.                                  */
/* ======================================================================== */

#define SOMA_MAX_DIMS 4

typedef struct soma_tensor {
    float  *data;
    int     ndim;
    int64_t shape[SOMA_MAX_DIMS];   /* unused dims are 1 */
} soma_tensor;

int64_t soma_tensor_numel(const soma_tensor *t);
/* Describes existing memory (not owned) as a tensor of the given shape. */
soma_tensor soma_tensor_view(float *data, int ndim, const int64_t *shape);

/* ======================================================================== */
/* BLAS seam: GEMM through OpenBLAS, with a naive reference kept beside it.  */
/* C(M,N) = alpha * op(A)(M,K) op(B)(K,N) + beta * C, row-major.             */
/* ======================================================================== */

void soma_gemm(int trans_a, int trans_b, int M, int N, int K,
               float alpha, const float *A, int lda, const float *B, int ldb,
               float beta, float *C, int ldc);
void soma_gemm_naive(int trans_a, int trans_b, int M, int N, int K,
                     float alpha, const float *A, int lda, const float *B, int ldb,
                     float beta, float *C, int ldc);
/* y(M) = alpha * op(A) x + beta * y, A is (M,N) row-major before op. */
void soma_gemv(int trans_a, int M, int N, float alpha, const float *A, int lda,
               const float *x, float beta, float *y);

/* ======================================================================== */
/* Ops: stateless kernels, forward and backward side by side.               */
/* ======================================================================== */

/* --- dense: y(B,O) = x(B,I) w(O,I)^T + b(O); b may be NULL ---------------- */
void soma_dense_forward(float *y, const float *x, const float *w, const float *b,
                        int B, int I, int O);
/* dx(B,I) += dy w ; dw(O,I) += dy^T x ; db(O) += sum_b dy.  Any d* may be NULL. */
void soma_dense_backward(float *dx, float *dw, float *db, const float *dy,
                         const float *x, const float *w, int B, int I, int O);

/* --- conv2d: x(B,C,H,W) * w(O,C,KH,KW) + b(O) -> y(B,O,OH,OW) -------------- */
typedef struct soma_conv_shape {
    int B, C, H, W;      /* input */
    int O, KH, KW;       /* filters */
    int stride, pad;     /* same in both directions; zero padding */
    int OH, OW;          /* output, filled by soma_conv_shape_init */
} soma_conv_shape;

/* Validates and fills OH, OW.  SOMA_ERR_SHAPE if the output would be empty. */
soma_status soma_conv_shape_init(soma_conv_shape *s, int B, int C, int H, int W,
                                 int O, int KH, int KW, int stride, int pad);
/* Floats of scratch the conv kernels need (im2col of one sample, per thread).
 * The kernels run OpenMP over the batch, thread t using slice t, so threads
 * must be >= omp_get_max_threads() at the time of the call (that is n after
 * soma_set_threads(n)); threads <= 0 means omp_get_max_threads() now. */
size_t soma_conv2d_workspace(const soma_conv_shape *s, int threads);
void soma_conv2d_forward(float *y, float *ws, const float *x, const float *w,
                         const float *b, const soma_conv_shape *s);
void soma_conv2d_backward(float *dx, float *dw, float *db, float *ws,
                          const float *dy, const float *x, const float *w,
                          const soma_conv_shape *s);
/* Plain-loop reference of the forward pass (tests compare against it). */
void soma_conv2d_forward_naive(float *y, const float *x, const float *w,
                               const float *b, const soma_conv_shape *s);

/* --- pooling: x(B,C,H,W) -> y(B,C,OH,OW), window k, stride st, no padding -- */
typedef struct soma_pool_shape { int B, C, H, W, k, stride, OH, OW; } soma_pool_shape;
soma_status soma_pool_shape_init(soma_pool_shape *s, int B, int C, int H, int W,
                                 int k, int stride);
/* idx(B,C,OH,OW) records the flat h*W+w of the chosen input; on ties the
 * first maximum in row-major window order wins (PyTorch's choice). */
void soma_maxpool_forward(float *y, int32_t *idx, const float *x, const soma_pool_shape *s);
void soma_maxpool_backward(float *dx, const float *dy, const int32_t *idx,
                           const soma_pool_shape *s);
void soma_avgpool_forward(float *y, const float *x, const soma_pool_shape *s);
void soma_avgpool_backward(float *dx, const float *dy, const soma_pool_shape *s);

/* --- activations, elementwise over n values ------------------------------- */
typedef enum soma_act {
    SOMA_ACT_IDENTITY = 0,
    SOMA_ACT_RELU,
    SOMA_ACT_SIGMOID,
    SOMA_ACT_TANH,
    SOMA_ACT_HARDSIGMOID,   /* clamp(x/6 + 1/2, 0, 1), PyTorch's Hardsigmoid */
    SOMA_ACT_CLAMP01,       /* clamp(x, 0, 1): IDE's and EP's rho */
    SOMA_ACT_COUNT
} soma_act;

const char *soma_act_name(soma_act a);
/* Returns SOMA_ERR_ARG with a message listing the valid names if unknown. */
soma_status soma_act_from_name(soma_act *out, const char *name);
void soma_act_forward(float *y, const float *x, size_t n, soma_act a);
/* dx += dy * f'(x); y = f(x) is passed too since some derivatives use it. */
void soma_act_backward(float *dx, const float *dy, const float *x, const float *y,
                       size_t n, soma_act a);
/* f'(x) alone, written (not accumulated) into d: PC and EP need it bare. */
void soma_act_deriv(float *d, const float *x, const float *y, size_t n, soma_act a);

/* --- softmax over rows: y(B,C) ------------------------------------------ */
void soma_softmax_forward(float *y, const float *x, int B, int C);
/* dx += y * (dy - sum(dy*y)) */
void soma_softmax_backward(float *dx, const float *dy, const float *y, int B, int C);

/* --- dropout ------------------------------------------------------------- */
/* Writes a keep-mask of 0 or 1/(1-p) values; reuse it across time steps for
 * "variational" dropout.  p in [0,1). */
void soma_dropout_mask(float *mask, size_t n, float p, soma_rng *rng);
void soma_dropout_forward(float *y, const float *x, const float *mask, size_t n);
void soma_dropout_backward(float *dx, const float *dy, const float *mask, size_t n);

/* --- batch normalisation over x(B,C,S) (S = 1 for dense, H*W for conv) ---- */
typedef struct soma_bn_cache {
    float *mean;    /* (C) batch mean used in forward   */
    float *invstd;  /* (C) 1/sqrt(var + eps) used        */
    float *xhat;    /* (B,C,S) normalised input          */
} soma_bn_cache;
/* train != 0: batch statistics, running stats updated with momentum
 * (running = (1-m) running + m batch, unbiased var as PyTorch);
 * train == 0: frozen running statistics.  gamma/beta may be NULL (1, 0). */
void soma_batchnorm_forward(float *y, soma_bn_cache *cache, float *run_mean,
                            float *run_var, const float *x, const float *gamma,
                            const float *beta, int B, int C, int S, float eps,
                            float momentum, int train);
void soma_batchnorm_backward(float *dx, float *dgamma, float *dbeta,
                             const float *dy, const soma_bn_cache *cache,
                             const float *gamma, int B, int C, int S, int train);

/* --- losses (mean over the batch) -------------------------------------- */
/* Cross-entropy from logits(B,C) with integer labels; probs(B,C) receives the
 * softmax (needed by backward).  Returns the mean loss.  Callers validate
 * labels (the loader does); one outside [0,C) makes the loss NaN. */
float soma_ce_forward(float *probs, const float *logits, const int32_t *labels,
                      int B, int C);
/* dlogits += scale * (probs - onehot) / B */
void  soma_ce_backward(float *dlogits, const float *probs, const int32_t *labels,
                       int B, int C, float scale);
/* 0.5-free MSE as PyTorch: mean over all B*N elements of (y - t)^2. */
float soma_mse_forward(const float *y, const float *t, int B, int N);
void  soma_mse_backward(float *dy, const float *y, const float *t, int B, int N, float scale);
/* BCE with logits, mean over all elements, numerically stable. */
float soma_bce_logits_forward(const float *z, const float *t, int B, int N);
void  soma_bce_logits_backward(float *dz, const float *z, const float *t, int B, int N, float scale);

/* ======================================================================== */
/* Relevance (LRP): a layer's output relevance split over its inputs and    */
/* connections, as layer-wise feedback propagation (rule "lfp") uses it.    */
/* src/ops/relevance.c; Weber et al. 2023, eqs. 8-13; notes/lfp.md.         */
/* ======================================================================== */

/* For an output unit j with z_j = sum_i z_ij + b_j, z_ij = w_ij a_i, incoming
 * relevance R_j, stab(z) = z + eps sgn0(z) with sgn0(0) = +1, and x/0 := 0:
 *   ZERO, EPSILON  s_j = R_j / stab(z_j)          (ZERO: eps taken as 0)
 *                  R_i = sum_j z_ij s_j,  fb_ij = |w_ij| a_i s_j,  fb_b = |b_j| s_j
 *   ALPHABETA      z+_j (z-_j): the sum of the z_ij >= 0 (< 0) and of b_j if
 *                  >= 0 (< 0); s+_j = alpha sgn0(z_j) R_j / stab(z+_j),
 *                  s-_j = -beta sgn0(z_j) R_j / (z-_j - eps);  each connection
 *                  uses s+ if z_ij >= 0 else s- (the bias by the sign of b_j):
 *                  R_i = sum_j z_ij s(+/-)_j,  fb_ij = |w_ij| a_i s(+/-)_j
 *   ZPLUSMINUS     s_j = sgn0(z_j) R_j / (z+_j - z-_j + eps);
 *                  R_i = sum_j |z_ij| s_j,  fb_ij = |w_ij| a_i s_j
 * fb (parameter feedback) is summed over the batch: an ascent direction.
 * For ReLU nets with ZERO, s is BP's error signal, so fb = |theta| (-dL/dtheta). */
typedef enum soma_lrp_rule {
    SOMA_LRP_EPSILON = 0,   /* "epsilon" (default) */
    SOMA_LRP_ZERO,          /* "zero": LRP-0 */
    SOMA_LRP_ALPHABETA,     /* "alphabeta": alpha - beta = 1 (default alpha 2, beta 1) */
    SOMA_LRP_ZPLUSMINUS,    /* "zplusminus": z+z- */
    SOMA_LRP_COUNT
} soma_lrp_rule;

typedef struct soma_lrp_params {
    soma_lrp_rule rule;
    float eps;              /* >= 0 */
    float alpha, beta;      /* ALPHABETA only: alpha - beta = 1, beta >= 0 */
} soma_lrp_params;

const char *soma_lrp_rule_name(soma_lrp_rule r);
/* Also accepts "0" (zero), "eps", "ab" and "zpzm"; SOMA_ERR_ARG listing the names. */
soma_status soma_lrp_rule_from_name(soma_lrp_rule *out, const char *name);
/* SOMA_ERR_ARG naming the field: unknown rule, eps < 0 or not finite,
 * alpha - beta != 1 (to 1e-6) or beta < 0 for ALPHABETA. */
soma_status soma_lrp_params_check(const soma_lrp_params *p);

/* Every kernel: R_in += relevance of the inputs, fbw/fbb += parameter
 * feedback (NULL skips that part); ws is scratch of the size its
 * _workspace function gives (conv: with the im2col slices of `threads`
 * threads, as soma_conv2d_workspace); z/y is the layer's forward output
 * (with the bias), a its input.  Shapes as the forward kernels. */
size_t soma_dense_relevance_workspace(int B, int I, int O, const soma_lrp_params *p);
void soma_dense_relevance(float *R_in, float *fbw, float *fbb, float *ws, const float *R_out,
                          const float *z, const float *a, const float *w, const float *b,
                          int B, int I, int O, const soma_lrp_params *p);
size_t soma_conv2d_relevance_workspace(const soma_conv_shape *s, const soma_lrp_params *p,
                                       int threads);
/* The conv backward kernels carry the normalised signal s in place of dL/dy. */
void soma_conv2d_relevance(float *R_in, float *fbw, float *fbb, float *ws, const float *R_out,
                           const float *z, const float *a, const float *w, const float *b,
                           const soma_conv_shape *s, const soma_lrp_params *p);
/* Max pooling: the window's winner (idx from the forward pass) takes it all, whatever the rule. */
void soma_maxpool_relevance(float *R_in, const float *R_out, const int32_t *idx,
                            const soma_pool_shape *s);
/* Average pooling: the rule over fixed weights 1/k^2 and no bias. */
size_t soma_avgpool_relevance_workspace(const soma_pool_shape *s, const soma_lrp_params *p);
void soma_avgpool_relevance(float *R_in, float *ws, const float *R_out, const float *y,
                            const float *a, const soma_pool_shape *s, const soma_lrp_params *p);
/* Batchnorm as the per-channel affine map it is for fixed statistics,
 * y = gamma xhat + beta with xhat = (x - mean) invstd (from the forward
 * cache), always with the epsilon rule: s = R / stab(y),
 * R_in += gamma invstd x s, fbg += |gamma| sum xhat s, fbb += |beta| sum s.
 * x, y, xhat: (B,C,S). */
void soma_batchnorm_relevance(float *R_in, float *fbg, float *fbb, const float *R_out,
                              const float *y, const float *x, const float *xhat,
                              const float *gamma, const float *beta, const float *invstd,
                              int B, int C, int S, float eps);

/* Feedback functions at the output: r(B,C) from logits o(B,C) and labels. */
typedef enum soma_lfp_reward_kind {
    SOMA_LFP_REWARD_SOFTMAX = 0, /* "softmax": o (y - softmax(o)), so s = -dCE/do (default) */
    SOMA_LFP_REWARD_SIGMOID,     /* "sigmoid": o (y - sigmoid(o)), the seed's eq. 7; s = -dBCE/do */
    SOMA_LFP_REWARD_PM1,         /* "pm1": the label's unit only, +1 if the argmax is right, else -1 */
    SOMA_LFP_REWARD_COUNT
} soma_lfp_reward_kind;
const char *soma_lfp_reward_name(soma_lfp_reward_kind k);
soma_status soma_lfp_reward_from_name(soma_lfp_reward_kind *out, const char *name);
void soma_lfp_reward(float *r, const float *o, const int32_t *labels, int B, int C,
                     soma_lfp_reward_kind k);

/* ======================================================================== */
/* Initialisers                                                             */
/* ======================================================================== */

typedef enum soma_init {
    SOMA_INIT_TORCH = 0,     /* PyTorch default for Linear/Conv: U(-1/sqrt(fan_in), +) for w and b */
    SOMA_INIT_XAVIER_UNIFORM,/* U(-a, a), a = sqrt(6/(fan_in+fan_out)) */
    SOMA_INIT_XAVIER_NORMAL, /* N(0, 2/(fan_in+fan_out)) */
    SOMA_INIT_KAIMING_UNIFORM, /* U(-a, a), a = sqrt(6/fan_in) (ReLU gain) */
    SOMA_INIT_KAIMING_NORMAL,  /* N(0, 2/fan_in) */
    SOMA_INIT_UNIT,          /* U(-1, 1), then each output unit's fan_in weights scaled to unit
                                L2 norm, biases 0 (the IDE authors'); a net's last dense/conv
                                layer (its readout) keeps torch, as their nn.Linear classifier */
    SOMA_INIT_COUNT
} soma_init;
const char *soma_init_name(soma_init i);
soma_status soma_init_from_name(soma_init *out, const char *name);
/* Fills w (n values) for a weight with the given fans. */
void soma_init_fill(float *w, size_t n, int fan_in, int fan_out, soma_init kind,
                    soma_rng *rng);


/* ======================================================================== */
/* Optimizers: operate on one flat parameter array of n floats.             */
/* Each matches torch.optim's update exactly (same order of operations).    */
/* ======================================================================== */

typedef enum soma_optim_kind {
    SOMA_OPTIM_SGD = 0,   /* momentum, dampening, Nesterov, weight decay (torch.optim.SGD) */
    SOMA_OPTIM_ADAM,      /* torch.optim.Adam (L2 weight decay added to the gradient) */
    SOMA_OPTIM_ADAMAX,    /* torch.optim.Adamax */
    SOMA_OPTIM_MQ,        /* Matrix Update eQualization (Alonso et al. 2023): one scalar per
                             parameter group (weight matrix + bias); needs soma_optim_set_groups */
    SOMA_OPTIM_COUNT
} soma_optim_kind;

typedef struct soma_optim_config {
    soma_optim_kind kind;
    float lr;            /* > 0 */
    float momentum;      /* SGD, [0,1) */
    float dampening;     /* SGD, [0,1] */
    int   nesterov;      /* SGD, 0 or 1; needs momentum > 0 and dampening == 0 */
    float weight_decay;  /* >= 0 */
    float beta1, beta2;  /* Adam/Adamax, [0,1) */
    float eps;           /* Adam/Adamax, > 0; MQ: r, the denominator's floor (1e-6) */
    float lr_min;        /* MQ: the plain SGD floor added to every step, >= 0 (1e-3) */
    float rho_max;       /* MQ: cap of the averaging rate, [0,1) (0.9999 MLP; 0.999 conv) */
} soma_optim_config;

/* Fills the PyTorch defaults for the kind (lr 1e-3, betas 0.9/0.999,
 * eps 1e-8, Adamax lr 2e-3) and zeroes the fields the kind does not use:
 * soma_optim_new rejects a nonzero one (momentum for Adam, eps for SGD, ...)
 * rather than ignore it. */
void soma_optim_config_default(soma_optim_config *c, soma_optim_kind kind);
const char *soma_optim_name(soma_optim_kind k);
soma_status soma_optim_from_name(soma_optim_kind *out, const char *name);

typedef struct soma_optim soma_optim;

/* Validates cfg (SOMA_ERR_ARG naming the field) and allocates state for n > 0
 * parameters, zeroed. */
soma_status soma_optim_new(soma_optim **out, const soma_optim_config *cfg, size_t n);
void soma_optim_free(soma_optim *o);
/* One update of w(n) with gradient g(n) at learning rate lr (the schedule's
 * value; cfg.lr is only the default).  Increments the step counter first, as
 * torch does; SGD takes its momentum buffer as a copy of the gradient on the
 * step that brings the counter to 1 (torch's "no buffer yet"). */
void soma_optim_step(soma_optim *o, float *w, const float *g, float lr);
/* Number of per-parameter state arrays (SGD 1 with momentum, 0 without; Adam 2,
 * Adamax 2) and access to them by index, n floats each, under torch's state
 * names ("momentum_buffer"; "exp_avg", "exp_avg_sq"; "exp_avg", "exp_inf"), for
 * checkpoints.  Out of range: NULL (and *name NULL).  set_step needs t >= 0.
 * soma_optim_size is the bytes of state: state_count * n * sizeof(float). */
int    soma_optim_state_count(const soma_optim *o);
float *soma_optim_state(soma_optim *o, int i, const char **name);
int64_t soma_optim_get_step(const soma_optim *o);
void    soma_optim_set_step(soma_optim *o, int64_t t);
/* Bytes of state: per-parameter (state_count * n * sizeof(float)) plus
 * per-group (MQ: one float per group). */
size_t  soma_optim_size(const soma_optim *o);
/* Parameter groups: count contiguous, non-overlapping ranges of the flat
 * array, group i = [offsets[i], offsets[i] + sizes[i]), sizes > 0, within n
 * (the arrays are copied; calling again replaces the groups and resets the
 * group state).  MQ keeps one scalar v per group, initialised to cfg.lr:
 *   N = step counter (after the increment); step = lr / (v + eps) + lr_min;
 *   w -= step * g over the group; rho = min(N / (N+1), rho_max);
 *   v = rho v + (1 - rho) mean_group |g|.
 * Parameters outside every group are left untouched by MQ.  MQ refuses to
 * step without groups: soma_optim_step then changes nothing, does not count
 * the step, and sets soma_last_error.  The other kinds accept groups and
 * ignore them.  SOMA_ERR_ARG for a bad range, SOMA_ERR_NOMEM. */
soma_status soma_optim_set_groups(soma_optim *o, int count, const size_t *offsets,
                                  const size_t *sizes);
int    soma_optim_group_count(const soma_optim *o);
/* Per-group state (MQ: "v", group_count floats), NULL for the other kinds. */
float *soma_optim_group_state(soma_optim *o, const char **name);

/* --- learning-rate schedules, as a function of progress t in epochs ------ */
typedef enum soma_sched_kind {
    SOMA_SCHED_CONSTANT = 0,
    SOMA_SCHED_STEP,       /* lr * gamma^floor(t / step_size)                 */
    SOMA_SCHED_MULTISTEP,  /* lr * gamma^(number of milestones <= t)           */
    SOMA_SCHED_COSINE,     /* min + (lr - min)(1 + cos(pi t / t_max)) / 2,
                              not clamped: rises again past t_max, as torch's */
    SOMA_SCHED_COUNT
} soma_sched_kind;

#define SOMA_MAX_MILESTONES 16
typedef struct soma_schedule {
    soma_sched_kind kind;
    float base_lr;
    float gamma;                 /* STEP, MULTISTEP */
    int   step_size;             /* STEP, in epochs */
    int   milestones[SOMA_MAX_MILESTONES]; int n_milestones; /* MULTISTEP, ascending */
    float t_max, min_lr;         /* COSINE */
    float warmup;                /* linear warmup over this many epochs: 0 = none, or >= 1 */
} soma_schedule;

const char *soma_sched_name(soma_sched_kind k);
soma_status soma_sched_from_name(soma_sched_kind *out, const char *name);
soma_status soma_schedule_check(const soma_schedule *s);
/* Learning rate at progress t = epochs completed BEFORE the step (e + i/B for
 * batch i of B in epoch e; negative counts as 0).  STEP/MULTISTEP use floor(t),
 * COSINE t itself; a warmup W multiplies by s + (1 - s) min(t, W) / W with
 * s = 1/W, torch's LinearLR(start_factor=1/W, total_iters=W), so the first step
 * has lr/W, never 0.  At integer t = e each equals what torch's scheduler
 * (StepLR, MultiStepLR, CosineAnnealingLR, LinearLR, and ChainedScheduler of
 * the warmup with one of them) gives in epoch e, except warmup x COSINE with
 * min_lr > 0, which torch's recursive chaining does not keep a product. */
float soma_schedule_lr(const soma_schedule *s, double t);

/* ======================================================================== */
/* Data                                                                      */
/* ======================================================================== */

/* SHA-256 of a file, as 64 lowercase hex chars + NUL. */
soma_status soma_sha256_file(const char *path, char hex[65], uint64_t *size);
void soma_sha256(const void *data, size_t n, unsigned char out[32]);
/* Checks a file against a recorded size and SHA-256; the error names the
 * file and says "missing", "size X, expected Y" or "SHA-256 ... expected ...". */
soma_status soma_verify_file(const char *path, uint64_t size, const char *sha256_hex);
/* Checks a file against the library's table of recorded files, looked up by
 * dataset ("mnist", "fashion", "cifar10") and the file's basename; a name
 * may have several recorded copies (npm, Debian, upstream) and any one
 * matches.  A name not in the table is not checked and not an error:
 * *known (may be NULL) is set to 1 if the name is recorded, else 0. */
soma_status soma_verify_known(const char *dataset, const char *path, int *known);

/* An IDX file (MNIST family), unsigned-byte data only, raw or .gz (zlib). */
typedef struct soma_idx {
    int ndim;
    int64_t dims[4];
    uint8_t *data;  /* owned; prod(dims) bytes */
} soma_idx;
soma_status soma_idx_read(soma_idx *out, const char *path);
/* Same parser over a memory buffer (the fuzzer's entry point). */
soma_status soma_idx_parse(soma_idx *out, const uint8_t *buf, size_t n, const char *name);
void soma_idx_free(soma_idx *x);

/* An in-memory image classification set: raw bytes, converted per batch. */
typedef struct soma_dataset {
    char     name[32];   /* "mnist", "fashion", "cifar10" */
    int      n;          /* samples */
    int      c, h, w;    /* per-sample shape */
    int      classes;
    uint8_t *pixels;     /* (n, c*h*w) */
    int32_t *labels;     /* (n) */
    float    mean[3], std[3]; /* per-channel normalisation applied by the loader */
    int      owns;       /* 0 for views made by soma_dataset_subset */
    int      raw;        /* 1: the loader yields each byte's value as is (event
                            counts), with no /255 and no mean/std whatever
                            normalize says; any c >= 1 (0: images, c <= 3) */
} soma_dataset;

/* Images + labels IDX pair (MNIST, Fashion-MNIST). Checks counts agree,
 * labels < 10, images 28x28. */
soma_status soma_dataset_load_idx(soma_dataset **out, const char *name,
                                  const char *images, const char *labels);
/* CIFAR-10 binary batches (3073-byte records), each file raw or .xz. */
soma_status soma_dataset_load_cifar10(soma_dataset **out, const char *const *files,
                                      int nfiles);
/* Opens a named dataset under dir: "mnist" and "fashion" look for the four
 * IDX files (raw or .gz); "cifar10" for data_batch_1..5 and test_batch
 * (.bin or .bin.xz); "cifar10-4k" for the exact 4000-record subset (train)
 * with the test batch of dir.  When verify is non-zero, files whose name is
 * in the recorded checksum table are verified first.  train or test may be
 * NULL to skip that split. */
soma_status soma_dataset_open(soma_dataset **train, soma_dataset **test,
                              const char *name, const char *dir, int verify);
/* N-MNIST (Orchard et al. 2015) from dir, which holds the listings
 * train1K.txt and test100.txt and one event file per listed sample (the
 * layout of shared/data/nmnist-subset; `make data` links data/nmnist to it).
 * A listing has '#' comment lines and "<sample> <label>" lines (tab or
 * spaces, LF or CRLF); <sample> is an id naming dir/<id>.bs2, or a path
 * relative to dir when it contains '.' or '/'; labels are 0..9.  Each
 * sample's events are binned over its own span into T frames
 * (soma_events_to_frames with t1 <= t0) and kept as bytes: event counts
 * clipped to 255, or 0/1 when binary != 0.  The dataset is "nmnist" with
 * c = 2T, h = w = 34 (a sample is (T, 2, 34, 34): frame t, then polarity
 * OFF/ON, then y, x), classes 10, raw = 1 (the loader gives the counts).
 * When verify is non-zero, the listings and every event file must match
 * dir/SHA256SUMS (sha256sum's format).  Errors name the file (and the
 * listing line): a missing listing or event file, a bad label, a corrupt
 * event file, a checksum mismatch; T <= 0 is SOMA_ERR_ARG.  train or test
 * may be NULL to skip that split. */
soma_status soma_dataset_open_nmnist(soma_dataset **train, soma_dataset **test,
                                     const char *dir, int T, int binary, int verify);
/* A view of count samples from start (no copy). */
soma_status soma_dataset_subset(soma_dataset **out, const soma_dataset *ds,
                                int start, int count);
void soma_dataset_free(soma_dataset *ds);

typedef struct soma_loader_config {
    int      batch;       /* > 0 */
    uint64_t seed;
    int      shuffle;     /* permutation per epoch from (seed, epoch) */
    int      drop_last;
    int      crop_pad;    /* random crop with this zero padding (CIFAR: 4), 0 = off */
    int      hflip;       /* random horizontal flip */
    int      normalize;   /* subtract mean, divide std (else pixels/255 in [0,1]);
                             a raw dataset gives the bytes as they are either way */
    int      target_is_input; /* autoencoders: every batch's target is its own input */
} soma_loader_config;

typedef struct soma_batch {
    int      n;           /* samples in this batch (last may be smaller) */
    int      c, h, w;
    float   *x;           /* (n, c, h, w), owned by the loader */
    int32_t *y;           /* (n) class labels (classification) */
    const float *target;  /* (n, outputs) regression targets, or NULL (classification) */
    const uint32_t *index;/* dataset indices of the samples */
} soma_batch;

typedef struct soma_loader soma_loader;
soma_status soma_loader_new(soma_loader **out, const soma_dataset *ds,
                            const soma_loader_config *cfg);
void soma_loader_free(soma_loader *l);
/* A loader over generated sequences instead of a dataset: the adding task
 * (soma_adding_batch) of length T, n sequences per epoch, as samples of
 * c = 2T values ((value, marker) per step: the frames encoding with T
 * steps feeds 2 per step) with a regression target (n, 1).  The sequences
 * of epoch e depend only on (seed, e), or only on seed when fixed != 0 (a
 * test set). */
soma_status soma_loader_new_adding(soma_loader **out, int T, int n, int batch, uint64_t seed,
                                   int fixed);
/* Starts epoch e: the order (and augmentation draws) depend only on
 * (seed, e), so a resumed run sees the same batches. */
void soma_loader_start_epoch(soma_loader *l, int epoch);
/* Fills b with the next batch; returns 1, or 0 when the epoch is done. */
int  soma_loader_next(soma_loader *l, soma_batch *b);
int64_t soma_loader_batches(const soma_loader *l);

/* ======================================================================== */
/* Checkpoints and fixtures: the safetensors format.                        */
/* ======================================================================== */

typedef enum soma_dtype { SOMA_F32 = 0, SOMA_I32, SOMA_I64, SOMA_U8, SOMA_F64 } soma_dtype;

typedef struct soma_st_tensor {
    const char *name;
    soma_dtype  dtype;
    int         ndim;
    int64_t     shape[SOMA_MAX_DIMS];
    const void *data;     /* into the reader's buffer, little-endian, 64-byte aligned
                             (safe to read as float*, int64_t*...); valid until soma_st_free */
    size_t      nbytes;
} soma_st_tensor;

typedef struct soma_st soma_st;   /* a file read into memory */
soma_status soma_st_read(soma_st **out, const char *path);
/* Parses a buffer (copied); name is used in messages. */
soma_status soma_st_parse(soma_st **out, const uint8_t *buf, size_t n, const char *name);
void  soma_st_free(soma_st *st);
int   soma_st_count(const soma_st *st);
/* Tensors in name (strcmp) order; NULL if i is out of range. */
const soma_st_tensor *soma_st_at(const soma_st *st, int i);
/* NULL if absent. */
const soma_st_tensor *soma_st_find(const soma_st *st, const char *name);
/* __metadata__ string value, NULL if absent. */
const char *soma_st_meta(const soma_st *st, const char *key);
int   soma_st_meta_count(const soma_st *st);
/* Keys in strcmp order; NULL if i is out of range. */
const char *soma_st_meta_key(const soma_st *st, int i);

typedef struct soma_st_writer soma_st_writer;
soma_status soma_st_writer_new(soma_st_writer **out);
void soma_st_writer_free(soma_st_writer *w);
/* Data is copied at add time. Names must be unique. */
soma_status soma_st_writer_add(soma_st_writer *w, const char *name, soma_dtype dt,
                               int ndim, const int64_t *shape, const void *data);
/* Setting a key again replaces its value. */
soma_status soma_st_writer_meta(soma_st_writer *w, const char *key, const char *value);
/* Writes path.tmp, fsyncs, renames over path, fsyncs the directory: a crash
 * at any point leaves either the old or the new file, never a torn one. */
soma_status soma_st_writer_save(soma_st_writer *w, const char *path);


/* ======================================================================== */
/* Neurons: stateful cells stepped one time step at a time.                 */
/* State lives in caller-owned buffers; forward and backward of one step    */
/* side by side (src/neuron/).                                              */
/* ======================================================================== */

/* Surrogate derivative of the spike function H(v) (v = membrane - threshold). */
typedef enum soma_surrogate_kind {
    SOMA_SURR_MULTIGAUSS = 0, /* FPTT/Yin et al.: gamma[(1+h)N(v;0,s) - hN(v;s,k s) - hN(v;-s,k s)] */
    SOMA_SURR_FAST_SIGMOID,   /* SuperSpike / snnTorch: 1 / (slope |v| + 1)^2 */
    SOMA_SURR_ARCTAN,         /* snnTorch atan: (alpha/2) / (1 + (pi alpha v / 2)^2) */
    SOMA_SURR_TRIANGLE,       /* max(0, 1 - |v|/width) / width */
    SOMA_SURR_STRAIGHT,       /* straight-through: 1 */
    SOMA_SURR_NONE,           /* the true derivative of a step: 0 */
    SOMA_SURR_COUNT
} soma_surrogate_kind;

typedef struct soma_surrogate {
    soma_surrogate_kind kind;
    float slope;   /* FAST_SIGMOID (25), ARCTAN alpha (2) */
    float width;   /* TRIANGLE (1); MULTIGAUSS sigma (0.3) */
    float height;  /* MULTIGAUSS h (0.15) */
    float scale;   /* MULTIGAUSS side-lobe width factor k (6) */
    float gamma;   /* MULTIGAUSS overall gain (0.5) */
} soma_surrogate;

const char *soma_surrogate_name(soma_surrogate_kind k);
/* Fills the defaults above for the named kind; SOMA_ERR_ARG listing the
 * valid names if unknown. */
soma_status soma_surrogate_from_name(soma_surrogate *out, const char *name);
void  soma_surrogate_default(soma_surrogate *out, soma_surrogate_kind k);
/* SOMA_ERR_ARG naming the parameter if a width/slope is <= 0, etc. */
soma_status soma_surrogate_check(const soma_surrogate *s);
float soma_surrogate_grad(const soma_surrogate *s, float v);

typedef enum soma_neuron_kind {
    SOMA_NEURON_LIF = 0,  /* leaky integrate-and-fire */
    SOMA_NEURON_IF,       /* no leak (decay 1) */
    SOMA_NEURON_ALIF,     /* adaptive threshold (Bellec et al. 2018) */
    SOMA_NEURON_LI,       /* leaky integrator, no spikes (readout) */
    SOMA_NEURON_COUNT
} soma_neuron_kind;

typedef enum soma_reset {
    SOMA_RESET_SUBTRACT = 0,  /* u = v - theta s */
    SOMA_RESET_ZERO,          /* u = v (1 - s) */
    SOMA_RESET_NONE,          /* u = v */
    SOMA_RESET_COUNT
} soma_reset;

/* A cell's state when a sequence starts (soma_net_reset_state). */
typedef enum soma_state_init {
    SOMA_STATE_ZERO = 0,   /* u = a = s = 0 */
    SOMA_STATE_UNIFORM,    /* u ~ U[0,1) drawn per sequence from the reset's rng, a = threshold
                              (eta = b0), s = 0: the FPTT authors' S-MNIST init_hidden */
    SOMA_STATE_COUNT
} soma_state_init;
const char *soma_state_init_name(soma_state_init k);
/* "zero" or "uniform"; SOMA_ERR_ARG listing them otherwise. */
soma_status soma_state_init_from_name(soma_state_init *out, const char *name);

/* One step of a cell, elementwise over n = B*N values:
 *   a_t = rho a_{t-1} + (1 - rho) s_{t-1}          (ALIF only; else a = 0)
 *   th_t = threshold + beta_a a_t
 *   v_t = alpha u_{t-1} + g I_t,  g = 1, or (1 - alpha) when input_scale
 *   s_t = H(v_t - th_t)          (H(0) = 0; LI: no spike, s_t = 0)
 *   u_t = reset(v_t, s_t, th_t)  (LI: u_t = v_t)
 * alpha is the membrane decay (exp(-dt/tau)), rho the adaptation decay.
 * detach_reset: the s_t inside the reset term passes no gradient (snnTorch's
 * reset detach); the spike output still does, through the surrogate. */
typedef struct soma_cell_params {
    soma_neuron_kind kind;
    float alpha;        /* in [0,1]; IF forces 1 */
    float threshold;    /* > 0 */
    soma_reset reset;
    int   detach_reset;
    int   input_scale;
    float rho;          /* ALIF, in [0,1] */
    float beta_a;       /* ALIF, >= 0 */
    soma_surrogate surr;
    soma_state_init init; /* initial state of a sequence (nets only; default ZERO) */
    int   map_bn;       /* conv LTC cells (cltcKxC) only: batchnorm inside the tau maps,
                           tau = sigmoid(BN(conv(...))) (notes/fptt.md 2.4): 0 off (default),
                           1 running statistics shared by all steps (BatchNorm2d), N > 1
                           one row per step for N steps (as bnN); see docs/spec.md */
} soma_cell_params;

const char *soma_neuron_name(soma_neuron_kind k);
soma_status soma_neuron_from_name(soma_neuron_kind *out, const char *name);
const char *soma_reset_name(soma_reset r);
soma_status soma_reset_from_name(soma_reset *out, const char *name);
/* Defaults: LIF, alpha 0.9, threshold 1, subtract, no detach, rho 0.95,
 * beta_a 1.8 (ALIF), fast-sigmoid surrogate. */
void soma_cell_params_default(soma_cell_params *p, soma_neuron_kind kind);
/* alpha from a time constant: exp(-dt/tau); SOMA_ERR_ARG if tau <= 0 or dt <= 0. */
soma_status soma_alpha_from_tau(float *alpha, float tau, float dt);
/* SOMA_ERR_ARG naming the field for alpha outside [0,1], threshold <= 0, ... */
soma_status soma_cell_params_check(const soma_cell_params *p);

/* State of n cells at one step.  a is used by ALIF only (may be NULL
 * otherwise); s is the spike output (0/1). */
typedef struct soma_cell_state { float *u, *a, *s; } soma_cell_state;

/* Per-step cache a backward needs: v_t and th_t (th only for ALIF). */
typedef struct soma_cell_cache { float *v, *th; } soma_cell_cache;

/* Step forward: next <- f(prev, I).  alpha_v / rho_v: per-element decays
 * (n values, e.g. LTC's input-dependent ones) or NULL for the scalars in p.
 * next may not alias prev.  With no backward to follow, cache (or its
 * fields) may be NULL; next->s may be NULL when the spikes are not wanted. */
void soma_cell_forward(soma_cell_state *next, soma_cell_cache *cache,
                       const soma_cell_state *prev, const float *I,
                       const float *alpha_v, const float *rho_v,
                       const soma_cell_params *p, size_t n);
/* Step backward.  dnext holds dL/du_t, dL/da_t and dL/ds_t (all paths into
 * this step's outputs; any may be NULL = 0).  Accumulates (+=) into
 * dprev->u, dprev->a, dprev->s (any may be NULL), dI, dalpha, drho (NULL =
 * not needed).  Spikes differentiate through p->surr. */
void soma_cell_backward(soma_cell_state *dprev, float *dI, float *dalpha, float *drho,
                        const soma_cell_state *dnext, const soma_cell_cache *cache,
                        const soma_cell_state *prev, const float *I,
                        const float *alpha_v, const float *rho_v,
                        const soma_cell_params *p, size_t n);

/* ======================================================================== */
/* Encoders: static samples and event streams into time steps.             */
/* ======================================================================== */

typedef enum soma_encoding {
    SOMA_ENC_DIRECT = 0,   /* x_t = x for every t (analog current) */
    SOMA_ENC_POISSON,      /* x_t = Bernoulli(clamp(gain * x, 0, 1)), x in [0,1] */
    SOMA_ENC_SEQUENTIAL,   /* x_t = x[:, t], one value per step (S-MNIST: T = D) */
    SOMA_ENC_PERMUTED,     /* x_t = x[:, perm[t]] with a fixed permutation (PS-MNIST) */
    SOMA_ENC_FRAMES,       /* x_t = x[:, t F : (t+1) F], F = D / T (event frames, N-MNIST) */
    SOMA_ENC_COUNT
} soma_encoding;

typedef struct soma_encoder soma_encoder;
const char *soma_encoding_name(soma_encoding e);
soma_status soma_encoding_from_name(soma_encoding *out, const char *name);
/* D: values per sample; T: steps (> 0; SEQUENTIAL/PERMUTED need T == D,
 * FRAMES a D that is a multiple of T); seed: the permutation's; gain:
 * POISSON rate scale (> 0). */
soma_status soma_encoder_new(soma_encoder **out, soma_encoding kind, int D, int T,
                             uint64_t seed, float gain);
void soma_encoder_free(soma_encoder *e);
int  soma_encoder_steps(const soma_encoder *e);
int  soma_encoder_step_size(const soma_encoder *e);   /* values per step: D, 1 or D/T */
/* NULL unless PERMUTED. */
const uint32_t *soma_encoder_permutation(const soma_encoder *e);
/* xt(B, step_size) <- step t of x(B, D).  rng: POISSON draws (else unused).
 * For FRAMES, xt must not overlap x. */
void soma_encode_step(const soma_encoder *e, float *xt, const float *x, int B, int t,
                      soma_rng *rng);

/* Adding task (Hochreiter & Schmidhuber; as in FPTT): x(B, T, 2) holds a
 * uniform [0,1) value and a 0/1 marker per step, exactly two markers per
 * sequence (one in each half); y(B) = the sum of the two marked values. */
soma_status soma_adding_batch(float *x, float *y, int B, int T, soma_rng *rng);

/* Address events (N-MNIST: 34x34, 2 polarities, microseconds). */
typedef struct soma_event { uint16_t x, y; uint8_t p; uint32_t t; } soma_event;
/* Reads an N-MNIST binary file: 5 bytes per event, x(8) y(8) p(1)t(23 bits,
 * big-endian).  SOMA_ERR_FORMAT naming the file if the size is not a
 * multiple of 5 or a coordinate is outside width x height.  *ev is owned by
 * the caller (free with soma_events_free). */
soma_status soma_nmnist_read(soma_event **ev, size_t *n, const char *path,
                             int width, int height);
soma_status soma_nmnist_parse(soma_event **ev, size_t *n, const uint8_t *buf, size_t len,
                              const char *name, int width, int height);
void soma_events_free(soma_event *ev);
/* Bins events into T frames (T, 2, H, W) over [t0, t1): frame k holds the
 * events with t0 + k (t1-t0)/T <= t < t0 + (k+1)(t1-t0)/T; binary != 0 marks
 * presence, else counts.  t1 <= t0 uses the stream's own span. */
soma_status soma_events_to_frames(float *frames, const soma_event *ev, size_t n, int T,
                                  int H, int W, uint32_t t0, uint32_t t1, int binary);

/* ======================================================================== */
/* Networks                                                                  */
/* ======================================================================== */

/* Spec grammar (tokens joined by '-'; see docs/spec.md):
 *   N          first token: input features (must match the data);
 *              later: a dense layer of N units (same as fcN)
 *   fcN        dense layer of N units
 *   convKxC[sS][pP]  KxK convolution, C filters, stride S (1), padding P (0)
 *   convKxC[sS][pP]mM  the same, then an MxM max pool before its activation or
 *                    neuron cell (spiking nets: the cell integrates pooled currents)
 *   poolK / avgpoolK  KxK max / average pooling with stride K
 *   bn         batch normalisation of the previous conv/dense output
 *              (after ltcN / rltcN / cltcKxC: of that token's dense/conv,
 *              before its cell)
 *   bnN        temporal nets: the same with running statistics per time
 *              step, rows (N, C) (notes/fptt.md 2.2)
 *   dropP      dropout with probability P (e.g. drop0.5)
 *   ltcN       dense layer of N units followed by a Liquid-Time-Constant
 *              spiking cell (FPTT paper, eq. 9; cell params o->ltc), whose
 *              update rates are sigmoid maps of [input current, state]
 *   rltcN      the same with a recurrent weight on the cell's own spikes
 *              (an LTC layer makes the net spiking even without o->spiking)
 *   cltcKxC[sS][pP][mM]  convKxC[sS][pP], an MxM max pool if mM, then a
 *              convolutional LTC cell: tau maps are KxK same-padding convs
 *              of C_t + u_{t-1} / C_t + eta_{t-1} (notes/fptt.md 2.4; the
 *              authors' BN inside the maps with o->ltc.map_bn)
 * Each dense/conv layer except the last is followed by the hidden activation
 * (after its bn, if any); a flatten is inserted before the first dense layer
 * that follows a conv/pool. Examples: "784-512-512-10",
 * "conv5x32-pool2-conv5x64-pool2-fc512-fc10". */
typedef struct soma_net soma_net;

/* What follows the last dense layer of a spiking net, per time step. */
typedef enum soma_readout {
    SOMA_READOUT_NONE = 0,   /* its output itself */
    SOMA_READOUT_LI,         /* a leaky-integrator membrane (readout cell) */
    SOMA_READOUT_SPIKE,      /* a spiking cell of the hidden kind (count its spikes) */
    SOMA_READOUT_LTC,        /* a leaky integrator whose rate is liquid (FPTT paper's output
                                neuron): o_t = (1 - tau_o) o_{t-1} + tau_o z_t,
                                tau_o = sigmoid(k_o (W_to [z_t, o_{t-1}] + b_to)) */
    SOMA_READOUT_COUNT
} soma_readout;

typedef struct soma_net_options {
    int       in_c, in_h, in_w;  /* per-sample input shape, e.g. 1, 28, 28 */
    soma_act  act;               /* hidden activation (default relu) */
    soma_init init;              /* weight init (default torch) */
    uint64_t  seed;              /* init seed */
    /* Spiking nets: when spiking != 0 every hidden activation is a neuron
     * cell with parameters `cell`, `rN` tokens add recurrent weights on the
     * layer's own previous spikes, and the net runs step by step
     * (soma_net_step).  The readout follows the last dense layer. */
    int              spiking;
    soma_cell_params cell;
    soma_readout     readout;
    soma_cell_params readout_cell;   /* LI: its alpha is the readout's leak */
    /* ltcN / rltcN cells: kind ALIF (adaptive threshold b0 + beta_a eta) or
     * LIF (fixed threshold: the adding-task variant, no tau_adp map).
     * Default: ALIF, threshold b0 = 0.1, beta_a 1.8, reset ZERO,
     * input_scale 1, multi-Gaussian surrogate, map_bn 0; alpha and rho are
     * unused (per element from the tau maps). */
    soma_cell_params ltc;
    /* initial scale (gamma) of every bn / bnN layer (default 1, BatchNorm's;
     * the FPTT authors' S-MNIST net starts at 0.1); beta starts at 0 */
    float bn_gamma;
} soma_net_options;

void soma_net_options_default(soma_net_options *o);
const char *soma_readout_name(soma_readout r);
soma_status soma_readout_from_name(soma_readout *out, const char *name);
/* Parses spec, builds the layers and initialises the parameters.  Errors
 * (SOMA_ERR_ARG) quote the offending token and its position. */
soma_status soma_net_new(soma_net **out, const char *spec, const soma_net_options *o);
void soma_net_free(soma_net *n);
/* Allocates the per-batch caches for batches of up to max_batch samples.
 * Called once; forward/backward never allocate. */
soma_status soma_net_prepare(soma_net *n, int max_batch);
/* train != 0: dropout active, batchnorm uses (and updates) batch statistics. */
void soma_net_set_train(soma_net *n, int train);
/* x is (B, in_c*in_h*in_w) and must stay valid until the matching backward
 * (the first layer's backward reads it); *logits receives (B, outputs),
 * owned by the net, valid until the next forward.  rng drives dropout (may
 * be NULL in eval). */
soma_status soma_net_forward(soma_net *n, const float *x, int B, soma_rng *rng,
                             const float **logits);
void soma_net_zero_grad(soma_net *n);
/* Backward of the last forward: accumulates parameter gradients; writes
 * dx(B, inputs) when dx is non-NULL. */
soma_status soma_net_backward(soma_net *n, const float *dlogits, int B, float *dx);
/* --- spiking / temporal nets: one time step at a time ------------------ */
/* Caches for batches of up to max_batch and a backward window of `window`
 * steps (BPTT: the sequence length T; truncated BPTT / FPTT: k).  Memory
 * grows linearly with window: soma_rule_plan reports it. */
soma_status soma_net_prepare_time(soma_net *n, int max_batch, int window);
/* Starts a sequence of batch B: every state 0 (a cell whose params have
 * init = SOMA_STATE_UNIFORM: u ~ U[0,1) from rng, a = its threshold), a
 * fresh dropout mask (kept for the whole sequence: variational dropout).
 * rng may be NULL when neither is drawn. */
soma_status soma_net_reset_state(soma_net *n, int B, soma_rng *rng);
/* One step: x_t (B, inputs) must stay valid until the backward that covers
 * this step; *out (B, outputs) is the readout at this step, owned by the net. */
soma_status soma_net_step(soma_net *n, const float *x_t, int B, const float **out);
/* Backward through the last `steps` steps (<= window): dout[j] (B, outputs)
 * is dL/d(out) at step (t - steps + j), or NULL for no loss there (dout
 * itself may be NULL).  Parameter gradients accumulate.  The state entering
 * the window is treated as a constant; with trunc > 0 the state is also
 * detached entering every step that is a multiple of trunc. */
soma_status soma_net_backward_time(soma_net *n, int steps, const float *const *dout, int B,
                                   int trunc);
int soma_net_time(const soma_net *n);       /* steps since the last reset */
/* A promise that every step of a sequence gets the same x pointer and values
 * (direct encoding).  The leading layers that hold no state (before the first
 * cell or recurrent layer) then run once per sequence in forward, and once
 * per window in backward on the summed gradient, which is exact because they
 * are linear in their output gradient for a fixed input.  soma_net_step
 * rejects a different x while it is on. */
void soma_net_set_static_input(soma_net *n, int on);
int soma_net_is_spiking(const soma_net *n);

int    soma_net_inputs(const soma_net *n);
int    soma_net_outputs(const soma_net *n);
const char *soma_net_spec(const soma_net *n);
/* Parameter store access: flat arrays (for optimizers) and named tensors. */
size_t soma_net_param_floats(const soma_net *n);
float *soma_net_param_values(soma_net *n);
float *soma_net_param_grads(soma_net *n);
int    soma_net_tensor_count(const soma_net *n);   /* params then buffers */
/* i-th named tensor: name, shape, data (params first, then buffers).
 * *is_param is 1 for trainable parameters, 0 for buffers. */
float *soma_net_tensor(soma_net *n, int i, const char **name, int *ndim,
                       int64_t shape[SOMA_MAX_DIMS], int *is_param);
/* Magnitude pruning: zeroes the fraction (in [0,1]) of dense/conv weights
 * with the smallest |w|, over all of them (per_layer 0) or in each layer;
 * *pruned (may be NULL) receives the count.  Biases stay. */
soma_status soma_net_prune(soma_net *n, double fraction, int per_layer, size_t *pruned);
/* Gini index of |w| over the dense/conv weights: 0 all equal, towards 1 sparse. */
double soma_net_weight_gini(const soma_net *n);
/* Writes a human-readable layer table (kind, shapes, parameters). */
void   soma_net_describe(const soma_net *n, char *buf, size_t size);

typedef struct soma_mem_plan {
    size_t params, grads, optim, buffers, activations, workspace, total; /* bytes */
} soma_mem_plan;


/* ======================================================================== */
/* Learning rules                                                            */
/* ======================================================================== */

/* CE: softmax cross-entropy against class labels; MSE: against one-hot labels or
 * the batch's targets; BCE: sigmoid binary cross-entropy against targets in [0,1]
 * (autoencoders), summed over the outputs and averaged over the batch, so that its
 * gradient is PC's top error h_L - sigmoid(p_L) over B. */
typedef enum soma_loss_kind { SOMA_LOSS_CE = 0, SOMA_LOSS_MSE, SOMA_LOSS_BCE, SOMA_LOSS_COUNT } soma_loss_kind;
const char *soma_loss_name(soma_loss_kind k);
soma_status soma_loss_from_name(soma_loss_kind *out, const char *name);

/* How a temporal net's per-step outputs become class scores. */
typedef enum soma_reduce {
    SOMA_REDUCE_MEAN = 0,   /* mean over the T steps */
    SOMA_REDUCE_LAST,       /* the last step's output */
    SOMA_REDUCE_SUM,        /* sum over steps (spike count with a spiking readout) */
    SOMA_REDUCE_EACH,       /* a loss at every step, averaged over T (online-style);
                               scores for accuracy are the mean over steps */
    SOMA_REDUCE_COUNT
} soma_reduce;
const char *soma_reduce_name(soma_reduce r);
soma_status soma_reduce_from_name(soma_reduce *out, const char *name);

/* Equilibrium propagation (rule "ep", docs/ep.md): which dynamics, and how
 * the feedback matrices of the general (untied) variant start. */
#define SOMA_EP_MAX_LAYERS 8
typedef enum soma_ep_variant {
    SOMA_EP_GENERAL = 0,  /* untied forward/feedback weights, ds/dt = W rho(s) - s
                             (Scellier, Goyal, Binas, Mesnard, Bengio 2018) */
    SOMA_EP_CLASSIC,      /* tied weights, Hopfield energy: ds/dt = -dE/ds
                             (Scellier & Bengio 2017) */
    SOMA_EP_VARIANT_COUNT
} soma_ep_variant;
const char *soma_ep_variant_name(soma_ep_variant v);   /* "general", "classic" */
soma_status soma_ep_variant_from_name(soma_ep_variant *out, const char *name);
typedef enum soma_ep_fb_init {
    SOMA_EP_FB_RANDOM = 0,  /* drawn with the net's init scheme (fans of the feedback matrix) */
    SOMA_EP_FB_TRANSPOSE,   /* the transpose of the feedforward matrix (a symmetric start) */
    SOMA_EP_FB_COUNT
} soma_ep_fb_init;
const char *soma_ep_fb_init_name(soma_ep_fb_init f);   /* "random", "transpose" */
soma_status soma_ep_fb_init_from_name(soma_ep_fb_init *out, const char *name);

/* Predictive coding (rule "pc", docs/pc.md): the order in which inference
 * updates the hidden activities, and how the output is clamped. */
typedef enum soma_pc_order {
    SOMA_PC_SEQUENTIAL = 0, /* "sequential": SeqIL, a top-down sweep per iteration (default) */
    SOMA_PC_SIMULTANEOUS,   /* "simultaneous": standard IL, every error from one snapshot */
    SOMA_PC_INCREMENTAL,    /* "incremental": iPC, simultaneous + a weight step every iteration */
    SOMA_PC_ORDER_COUNT
} soma_pc_order;
const char *soma_pc_order_name(soma_pc_order o);
/* Also accepts "seq", "sim", "inc"; SOMA_ERR_ARG listing the names. */
soma_status soma_pc_order_from_name(soma_pc_order *out, const char *name);
typedef enum soma_pc_clamp {
    SOMA_PC_SOFT = 0,       /* "soft": h_L = (softmax(p_L) + beta y) / (1 + beta) (default) */
    SOMA_PC_HARD,           /* "hard": h_L = y */
    SOMA_PC_CLAMP_COUNT
} soma_pc_clamp;
const char *soma_pc_clamp_name(soma_pc_clamp c);
soma_status soma_pc_clamp_from_name(soma_pc_clamp *out, const char *name);

typedef struct soma_rule_config {
    soma_optim_config optim;
    soma_loss_kind    loss;       /* CE on logits, or MSE against one-hot */
    float             clip_norm;  /* global gradient-norm clip, 0 = off */
    /* temporal rules (bptt, fptt, ...) */
    int               T;          /* time steps per sample */
    soma_encoding     encoding;   /* how a static sample becomes T steps */
    float             gain;       /* POISSON rate scale */
    uint64_t          enc_seed;   /* PERMUTED's permutation */
    soma_reduce       reduce;     /* per-step outputs -> scores */
    int               trunc;      /* BPTT: detach the state every trunc steps (0 = never) */
    int               sample_size;/* values per data sample when the encoder feeds the net
                                     fewer per step (S-MNIST: 784 -> 1); 0 = the net's inputs */
    /* FPTT (rule "fptt"): one update per window of fptt_k steps (1: every
     * step, state detached between steps; T must be a multiple of it) with
     * the dynamic regulariser alpha (W - Wbar) - lambda; Wbar's rate beta. */
    float             fptt_alpha; /* > 0 (default 0.1) */
    float             fptt_beta;  /* in (0, 1] (default 0.5) */
    int               fptt_k;     /* >= 1 (default 1) */
    int               fptt_aux;   /* 1: the auxiliary oracle-divergence loss (notes 2.7), 0 off */
    /* LFP (rule "lfp"): LRP rule per layer kind (a composite), the
     * stabiliser, alpha-beta, the feedback function, the optional backward
     * normalisation and unit-wise adaptive clipping (docs/lfp.md). */
    soma_lrp_rule     lfp_dense;  /* dense layers (default epsilon) */
    soma_lrp_rule     lfp_conv;   /* conv layers (default epsilon) */
    soma_lrp_rule     lfp_pool;   /* average pooling (default epsilon); max pooling:
                                     the winner takes all, batchnorm: epsilon */
    float             lfp_eps;    /* >= 0 (default 1e-6) */
    float             lfp_alpha, lfp_beta; /* alphabeta: alpha - beta = 1 (default 2, 1) */
    soma_lfp_reward_kind lfp_reward; /* default softmax */
    int               lfp_norm;   /* 1: divide the feedback entering every dense, conv
                                     and batchnorm layer by its max |.| over the batch */
    int               lfp_snn_denom; /* spiking nets: 0 q = F/|v_t| (the authors' Feb-2025 code),
                                       1 q = F/(|u_t-1| + |v_t - u_t-1|) (their 1.0.0 code) */
    float             lfp_agc;    /* unit-wise adaptive clipping lambda, 0 = off (0.06 in the
                                     authors' SNN runs); clip_norm applies too */
    /* EP (rule "ep", docs/ep.md); soma_ep_config_default fills these.  The
     * loss picks the output: mse = the last dense layer is a dynamical layer
     * nudged by beta (y - s) (the papers' cost 1/2 |y - s|^2); ce = a softmax
     * readout outside the dynamics (Laborieux et al. 2021). */
    soma_ep_variant   ep_variant;     /* default general */
    float             ep_beta;        /* nudging strength, > 0 (default 1) */
    int               ep_free_steps;  /* Euler steps of the free phase, >= 1 (default 100) */
    int               ep_nudge_steps; /* Euler steps of each nudged phase, >= 1 (default 20) */
    int               ep_eval_steps;  /* free steps at inference, 0 = ep_free_steps */
    float             ep_eps;         /* Euler step size, in (0, 1) (default 0.5) */
    int               ep_symmetric;   /* 1: +beta and -beta phases, both from the free
                                         point, difference / 2 beta (Laborieux 2021) */
    int               ep_random_sign; /* 1: one-sided, the sign of beta drawn per batch */
    int               ep_particles;   /* > 0: persistent free states ("particles") for
                                         dataset indices 0..ep_particles-1 (classic EP) */
    soma_ep_fb_init   ep_fb_init;     /* general variant: feedback start (default random) */
    int               ep_n_lrs;       /* 0: every layer 1; else one factor per dense or conv layer */
    float             ep_lrs[SOMA_EP_MAX_LAYERS]; /* per-layer learning-rate factors, input
                                         side first; a feedback matrix uses its pair's */
    float             ep_tol;         /* > 0: a batch whose free phase ends with RMS |mu|
                                         above it fails (SOMA_ERR_NUMERIC); 0 = only logged */
    float             ep_stop;        /* > 0: every phase (free, nudged, inference) ends at
                                         the first step whose RMS |mu| is below it, the step
                                         counts becoming maxima; 0 = fixed step counts */
    /* PC (rule "pc", docs/pc.md); soma_pc_config_default fills these.
     * States are the dense/conv outputs (pre-activations), initialised by a
     * feedforward pass; T inference iterations of step pc_gamma / (1 + t). */
    int               pc_T;           /* inference iterations, >= 1 (default 3) */
    float             pc_gamma;       /* activity step, > 0 (default 0.05) */
    float             pc_beta;        /* soft clamp strength, >= 0 (default 100) */
    soma_pc_order     pc_order;       /* default sequential */
    soma_pc_clamp     pc_clamp;       /* default soft */
    int               pc_autoencoder; /* 1: the target is the input itself, the top energy
                                         is BCE through a sigmoid (outputs must equal inputs) */
    /* IDE (rule "ide", docs/ide.md); soma_ide_config_default fills these.
     * A feedback spiking net over the net's dense layers (the first is the
     * input map F, the last the readout, those between feed-forward maps
     * S_i), or over its conv layers and a dense readout, a feedback operator
     * "<i>.weight_fb" from the last hidden layer to the first (a matrix, a
     * conv, or a transposed conv); T (above) IF/LIF steps with reset by subtraction give the
     * average rates a, and the gradient is implicit at the equilibrium of
     * f(a) = clamp((W a + F x + b) / V_th, 0, 1). */
    float             ide_vth;        /* threshold V_th, > 0 (default 2) */
    float             ide_leak;       /* LIF leak lambda in (0, 1); 1 = IF (default 1) */
    int               ide_iter;       /* 0: Broyden; 1: damped fixed-point iteration */
    int               ide_max_iter;   /* solver iterations, >= 1 (default 30) */
    float             ide_tol;        /* stop at relative residual |G|/|dL/da| <= tol, > 0
                                         (default 1e-6) */
    float             ide_damp;       /* fixed-point damping d in (0, 1]: b <- (1-d) b +
                                         d (J^T b + g) (default 0.5) */
    int               ide_strict;     /* 1: a solve ending above ide_tol fails the batch
                                         (SOMA_ERR_NUMERIC, residual in the message) */
    int               ide_sn;         /* 1: spectral-norm reparameterisation of W (default 1) */
    float             ide_sn_c;       /* |alpha| clip c of W = alpha w / |w|_2, > 0 (default 1) */
    int               ide_sn_kernel;  /* conv feedback: |w|_2 of the kernel reshaped to (O, C K K), the
                                         authors' form, not the operator norm (default 0) */
    int               ide_fb_k;       /* conv forms: feedback kernel K (odd; single layer: a conv,
                                         stride 1, pad K/2; multi-layer: a transposed conv, stride
                                         h_1/h_H, pad (K-1)/2); 0 = F's kernel size (default 0) */
    float             ide_dropout;    /* variational dropout rate p in [0, 1) on the outputs of F,
                                         every S_k and W: one mask per training batch, used at
                                         every step, in f and in J; none at prediction (default 0) */
} soma_rule_config;
void soma_rule_config_default(soma_rule_config *c);
/* "epsilon", "zero", "alphabeta", "zplusminus" for every layer kind, or a
 * composite "dense=R,conv=R,pool=R" (kinds not named keep their rule). */
soma_status soma_lfp_composite_from_name(soma_rule_config *c, const char *spec);

typedef struct soma_rule soma_rule;

/* Number of rules compiled in, and their names/one-line descriptions. */
int soma_rule_count(void);
const char *soma_rule_name_at(int i);
const char *soma_rule_about_at(int i);

/* Creates rule `name` ("bp", ...) over net (not owned; must outlive the
 * rule), planning every buffer for batches of up to max_batch. */
soma_status soma_rule_new(soma_rule **out, const char *name, soma_net *net,
                          const soma_rule_config *cfg, int max_batch);
void soma_rule_free(soma_rule *r);
const char *soma_rule_name(const soma_rule *r);

typedef struct soma_step_stats {
    double loss;      /* sum over the batch's samples of the per-sample loss */
    int    correct;   /* argmax hits */
    int    n;         /* samples */
} soma_step_stats;

/* One training step on batch b at learning rate lr.  Adds to *st.
 * SOMA_ERR_NUMERIC (parameters untouched) if the loss or a gradient is NaN/Inf. */
soma_status soma_rule_train_batch(soma_rule *r, const soma_batch *b, float lr,
                                  soma_rng *rng, soma_step_stats *st);
/* Inference: class scores (B, classes) owned by the rule; adds loss/hits to *st
 * when st is non-NULL. */
soma_status soma_rule_predict(soma_rule *r, const soma_batch *b, const float **scores,
                              soma_step_stats *st);
soma_optim *soma_rule_optim(soma_rule *r);
/* Memory the rule needs, by kind. */
void soma_rule_plan(const soma_rule *r, soma_mem_plan *plan);
/* LFP without the update (r must be rule "lfp"): the forward pass on b in
 * training mode, the feedback function, and the relevance pass; writes
 * -fb (the direction soma_rule_train_batch hands the optimizer, before any
 * clipping) into the net's grad store, and the input relevance (b->n,
 * inputs) into R_in when it is non-NULL.  Adds loss/hits to *st (may be NULL). */
soma_status soma_lfp_feedback(soma_rule *r, const soma_batch *b, soma_rng *rng, float *R_in,
                              soma_step_stats *st);
/* Tells the rule an epoch of training is over; call it after the last
 * soma_rule_train_batch of every epoch, before evaluating and saving.
 * FPTT sets W <- Wbar here (so evaluation and the next epoch use the
 * running average); rules with nothing to do ignore it.  NULL is a no-op. */
void soma_rule_epoch_end(soma_rule *r);
/* EP: fills the ep_* fields of c with the defaults above (soma_rule_config_default
 * calls it). */
void soma_ep_config_default(soma_rule_config *c);

/* The rules' own options by name ("ep-beta", "pc-order", "fptt-k", ...): the
 * CLI's --KEY VALUE options and config-file keys, and what checkpoints record
 * so `soma eval` rebuilds a rule exactly. */
int         soma_rule_option_count(void);
const char *soma_rule_option_key(int i);
const char *soma_rule_option_help(int i);
/* SOMA_ERR_ARG naming the option if the key is unknown or the value bad. */
soma_status soma_rule_option_set(soma_rule_config *c, const char *key, const char *value);
/* Every option as "key=value key=value"; soma_rule_options_parse reads it back. */
void        soma_rule_options_format(const soma_rule_config *c, char *buf, size_t size);
soma_status soma_rule_options_parse(soma_rule_config *c, const char *s);
/* PC: fills the pc_* fields of c with the defaults above (the paper's MLP
 * settings: T 3, gamma 0.05, beta 100, sequential, soft clamp). */
void soma_pc_config_default(soma_rule_config *c);
/* IDE: fills the ide_* fields of c with the defaults above (the authors'
 * settings: V_th 2, IF, Broyden with 30 iterations, spectral norm c = 1). */
void soma_ide_config_default(soma_rule_config *c);
/* IDE diagnostics (r must be rule "ide"): the implicit solve of the last
 * training batch (relative residual |(I - J^T) b - g| / |g| of the iterate
 * returned, iterations), the RMS gap |f(a_T) - a_T| between the simulated
 * rates and one application of the rate map (how far the simulation is
 * from the equilibrium), batch counts since the last reset, and the worst
 * residual.  reset != 0 clears the counters after reading. */
typedef struct soma_ide_diag {
    double  residual, residual_max, rate_gap;
    int     iters;
    int64_t batches, unconverged;     /* batches seen; solves ending above ide_tol */
} soma_ide_diag;
soma_status soma_ide_diagnostics(soma_rule *r, soma_ide_diag *d, int reset);
/* IDE (rule "ide"): the supplement's Fig. 2 on batch b.  The fixed point a*
 * of the rate map (iterated from the rates of the longest simulation until
 * no rate moves by 1e-6, at most 2,000 maps; *fp_change, may be NULL,
 * receives the last largest move), then for each T of Ts the RMS gap
 * |a[T] - a*| of the T-step simulation's rates into gaps[q].  Spike-frame
 * input: b holds the rule's T frames, Ts must be exactly { T } and a* is the
 * fixed point of the map of those frames' average (soma_evaluate_ide_gap
 * bins the data again for each T).  No dropout; batchnorms at their running
 * statistics; changes no parameter. */
soma_status soma_ide_rate_gap(soma_rule *r, const soma_batch *b, const int *Ts, int nT,
                              double *gaps, double *fp_change);
/* EP diagnostics (r must be rule "ep"): alignment tr(W_fwd W_bwd) per layer
 * pair with a feedback matrix (the 2018 paper's Fig. 3; classic: |W|^2) and
 * its cosine, and
 * the relaxation residual, RMS over units and samples of the projected
 * |mu| = |s_next - s| / eps at the last step of each phase, averaged over the
 * batches since the last reset (and the worst free phase).  reset != 0
 * clears the residual counters after reading. */
typedef struct soma_ep_diag {
    int     pairs;                        /* entries of align (dense or conv layers 2..) */
    double  align[SOMA_EP_MAX_LAYERS];
    double  align_cos[SOMA_EP_MAX_LAYERS];   /* tr(W F) / (|W| |F|): the cosine, in [-1, 1] */
    double  res_free, res_nudge, res_free_max;
    int64_t batches, unconverged;         /* batches seen; free phases above ep_tol */
    double  steps_free, steps_nudge;      /* mean Euler steps per free / nudged phase */
} soma_ep_diag;
soma_status soma_ep_diagnostics(soma_rule *r, soma_ep_diag *d, int reset);
/* EP: the angle in degrees between the rule's update on batch b (relaxed
 * from zeros, as predict) and the true descent direction -dJ/dW of the cost
 * at the free fixed point, computed by recurrent backpropagation (the
 * adjoint system iterated to its fixed point; units clipped at 0 or 1 held
 * fixed).  Changes no parameter.  *rbp_res receives the adjoint's final
 * residual (may be NULL). */
soma_status soma_ep_grad_angle(soma_rule *r, const soma_batch *b, double *degrees, double *rbp_res);


/* ======================================================================== */
/* Checkpoints                                                              */
/* ======================================================================== */

/* Saves every parameter and buffer of net under its name, the optimizer
 * state as "optim.<state>" (flat), and metadata: the net spec, input shape,
 * activation, plus the caller's key/value pairs (meta[2i], meta[2i+1]).
 * Atomic: written to a temporary file, fsync'd and renamed. */
soma_status soma_checkpoint_save(const char *path, soma_net *net, soma_optim *opt,
                                 const char *const *meta, int n_meta);
/* Builds the network stored in a checkpoint and loads its tensors.  *st
 * receives the open file (metadata, optimizer state) for the caller to
 * query and free. */
soma_status soma_checkpoint_load(soma_net **net, soma_st **st, const char *path);
/* Copies the tensors of st into net; SOMA_ERR_SHAPE naming the tensor if a
 * name is missing or a shape differs. */
soma_status soma_checkpoint_restore_net(soma_net *net, const soma_st *st, const char *path);
/* Restores optimizer state and step; SOMA_ERR_FORMAT if the checkpoint was
 * written with another optimizer. */
soma_status soma_checkpoint_restore_optim(soma_optim *o, const soma_st *st, const char *path);

/* ======================================================================== */
/* Training and evaluation drivers (what the CLI calls)                     */
/* ======================================================================== */

#define SOMA_MAX_CLASSES 100

typedef struct soma_train_config {
    const char *data;         /* "mnist", "fashion", "cifar10", "cifar10-4k", "nmnist", or
                                 "adding" (generated: T steps, --train-limit/--test-limit
                                 sequences, default 10000/1000) */
    const char *data_dir;     /* NULL: data/<data> */
    const char *net;          /* spec; NULL with resume: the checkpoint's */
    const char *rule;         /* "bp", ... */
    soma_act    act;
    soma_init   init;
    soma_rule_config rule_cfg;
    soma_schedule    sched;   /* base_lr is the learning rate */
    int      epochs;          /* total epochs (a resumed run continues to this) */
    int      batch;
    uint64_t seed;
    int      threads;
    int      train_limit;     /* use the first N training samples (0 = all) */
    int      test_limit;      /* evaluate on the first N test samples (0 = all) */
    int      val;             /* hold out the last N training samples as validation */
    int      augment;         /* crop + flip (CIFAR) */
    int      shift;           /* random translation by up to N pixels: a crop of the
                                 image padded by N, no flip (digits); 0 = off */
    int      verify;          /* verify dataset checksums before loading */
    const char *save;         /* checkpoint path written after every epoch, NULL = none */
    const char *resume;       /* checkpoint to continue from, NULL = fresh */
    const char *init_from;    /* warm start: weights of this checkpoint, everything else
                                 fresh (any rule; shapes must match the net) */
    const char *metrics;      /* JSONL log path (required) */
    int      warmup_steps;    /* > 0: the rate is scaled by (i + 1) / N over the run's
                                 first N training steps i (the IDE CIFAR scripts' warm-up);
                                 with --warmup, the product */
    int      diag_every;      /* also log the rule's diagnostics every N training steps
                                 (rules ep, ide; 0 = with each epoch only) */
    int      eval_every;      /* also evaluate on the test split (--test-limit) every N
                                 training batches, mid-epoch (0 = at each epoch's end only) */
    const char *git;          /* commit recorded in the log, may be NULL */
    /* spiking nets (rule bptt, ...): used when spiking != 0 */
    int              spiking;
    soma_cell_params cell;
    soma_readout     readout;
    soma_cell_params readout_cell;
    int              binary_frames;   /* nmnist: 0/1 frames instead of event counts */
    soma_cell_params ltc;             /* cells of ltcN / rltcN layers and the ltc readout */
    float            bn_gamma;        /* initial gamma of bn layers (soma_net_options.bn_gamma) */
    int              raw_pixels;      /* pixels in [0,1], no mean/std normalisation */
    int              autoencoder;     /* the target is the input (raw pixels), loss bce or
                                         mse, outputs = inputs; rule pc: pc_autoencoder */
    const char *argv_line;    /* command line recorded in the log, may be NULL */
} soma_train_config;

void soma_train_config_default(soma_train_config *c);
/* Checks every field; SOMA_ERR_ARG names the option ("--batch must be > 0"). */
soma_status soma_train_config_check(const soma_train_config *c);

typedef struct soma_progress {
    int     epoch, epochs;          /* 1-based epoch in progress */
    int64_t step, steps;            /* batches done in this epoch / per epoch */
    double  loss, acc;              /* running means over this epoch */
    double  samples_per_s, eta_s;   /* eta: this epoch */
    int     epoch_done;             /* 1 once per epoch, with the fields below */
    double  test_loss, test_acc, val_acc, lr, seconds;
    int     regression;             /* targets, not classes: losses are loss_kind's, no accuracy */
    soma_loss_kind loss_kind;       /* the loss of a regression (MSE or BCE) */
} soma_progress;
typedef void (*soma_progress_fn)(void *user, const soma_progress *p);

typedef struct soma_train_result {
    double test_acc, test_loss, val_acc;
    int    regression;    /* targets, not classes (adding task, autoencoder): test_loss
                             is the loss_kind's (MSE or BCE), no accuracy */
    soma_loss_kind loss_kind;
    int    epochs_done;
    double seconds;
    soma_mem_plan plan;
} soma_train_result;

/* Loads the data, builds or resumes the network, trains, evaluates on the
 * test set after every epoch, logs, checkpoints.  progress may be NULL. */
soma_status soma_train(const soma_train_config *c, soma_progress_fn progress, void *user,
                       soma_train_result *res);
/* Builds what soma_train would and fills *plan without training (--dry-run). */
soma_status soma_train_plan(const soma_train_config *c, soma_mem_plan *plan, char *describe,
                            size_t describe_size);

typedef struct soma_eval_result {
    double  acc, loss;
    int     n, classes;
    int     regression;   /* targets, not classes (autoencoder): loss only, no confusion */
    soma_loss_kind loss_kind;
    double  gini;         /* Gini index of |w| of the evaluated weights */
    size_t  pruned;       /* weights zeroed before evaluating */
    int64_t confusion[SOMA_MAX_CLASSES * SOMA_MAX_CLASSES]; /* [true * classes + predicted] */
} soma_eval_result;

/* Evaluates a checkpoint on a dataset's test split; with prune > 0 the
 * fraction prune of its weights is removed first (soma_net_prune; no
 * fine-tuning).  res->gini is the weights' Gini index as evaluated. */
soma_status soma_evaluate(const char *checkpoint, const char *data, const char *data_dir,
                          int batch, int limit, int verify, double prune, int prune_per_layer,
                          soma_eval_result *res);
/* soma_ide_rate_gap of an IDE checkpoint on the first test batch of data;
 * spike-frame data (N-MNIST) are loaded again binned into each T of Ts. */
soma_status soma_evaluate_ide_gap(const char *checkpoint, const char *data, const char *data_dir,
                                  int batch, int verify, const int *Ts, int nT, double *gaps,
                                  double *fp_change);


#ifdef __cplusplus
}
#endif
#endif /* SOMA_H */
