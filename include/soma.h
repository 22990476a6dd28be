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
/* Floats of scratch the conv kernels need (im2col of one sample, per thread). */
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
 * softmax (needed by backward).  Returns the mean loss. */
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
/* Initialisers                                                             */
/* ======================================================================== */

typedef enum soma_init {
    SOMA_INIT_TORCH = 0,     /* PyTorch default for Linear/Conv: U(-1/sqrt(fan_in), +) for w and b */
    SOMA_INIT_XAVIER_UNIFORM,/* U(-a, a), a = sqrt(6/(fan_in+fan_out)) */
    SOMA_INIT_XAVIER_NORMAL, /* N(0, 2/(fan_in+fan_out)) */
    SOMA_INIT_KAIMING_UNIFORM, /* U(-a, a), a = sqrt(6/fan_in) (ReLU gain) */
    SOMA_INIT_KAIMING_NORMAL,  /* N(0, 2/fan_in) */
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
    SOMA_OPTIM_COUNT
} soma_optim_kind;

typedef struct soma_optim_config {
    soma_optim_kind kind;
    float lr;            /* > 0 */
    float momentum;      /* SGD, [0,1) */
    float dampening;     /* SGD */
    int   nesterov;      /* SGD; needs momentum > 0 and dampening == 0 */
    float weight_decay;  /* >= 0 */
    float beta1, beta2;  /* Adam/Adamax, [0,1) */
    float eps;           /* Adam/Adamax, > 0 */
} soma_optim_config;

/* Fills the PyTorch defaults for the kind (lr 1e-3, betas 0.9/0.999,
 * eps 1e-8, Adamax lr 2e-3). */
void soma_optim_config_default(soma_optim_config *c, soma_optim_kind kind);
const char *soma_optim_name(soma_optim_kind k);
soma_status soma_optim_from_name(soma_optim_kind *out, const char *name);

typedef struct soma_optim soma_optim;

/* Validates cfg (SOMA_ERR_ARG naming the field) and allocates state for n
 * parameters, zeroed. */
soma_status soma_optim_new(soma_optim **out, const soma_optim_config *cfg, size_t n);
void soma_optim_free(soma_optim *o);
/* One update of w(n) with gradient g(n) at learning rate lr (the schedule's
 * value; cfg.lr is only the default).  Increments the step counter. */
void soma_optim_step(soma_optim *o, float *w, const float *g, float lr);
/* Number of per-parameter state arrays (SGD 1, Adam 2, Adamax 2) and access to
 * them by index with a stable name ("momentum", "exp_avg", "exp_avg_sq",
 * "exp_inf"), for checkpoints. */
int    soma_optim_state_count(const soma_optim *o);
float *soma_optim_state(soma_optim *o, int i, const char **name);
int64_t soma_optim_get_step(const soma_optim *o);
void    soma_optim_set_step(soma_optim *o, int64_t t);
size_t  soma_optim_size(const soma_optim *o);

/* --- learning-rate schedules, as a function of progress t in epochs ------ */
typedef enum soma_sched_kind {
    SOMA_SCHED_CONSTANT = 0,
    SOMA_SCHED_STEP,       /* lr * gamma^floor(t / step_size)                 */
    SOMA_SCHED_MULTISTEP,  /* lr * gamma^(number of milestones <= t)           */
    SOMA_SCHED_COSINE,     /* min + (lr - min)(1 + cos(pi t / t_max)) / 2       */
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
    float warmup;                /* linear warmup over this many epochs (0 = none) */
} soma_schedule;

const char *soma_sched_name(soma_sched_kind k);
soma_status soma_sched_from_name(soma_sched_kind *out, const char *name);
soma_status soma_schedule_check(const soma_schedule *s);
/* Learning rate at progress t (epochs, fractional allowed; the schedules
 * above use floor(t) for STEP/MULTISTEP and t itself for COSINE, and warmup
 * multiplies by min(1, t / warmup) with t measured at the END of the step,
 * so the first step never has lr 0). */
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
 * in the recorded checksum table are verified first. */
soma_status soma_dataset_open(soma_dataset **train, soma_dataset **test,
                              const char *name, const char *dir, int verify);
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
    int      normalize;   /* subtract mean, divide std (else pixels/255 in [0,1]) */
} soma_loader_config;

typedef struct soma_batch {
    int      n;           /* samples in this batch (last may be smaller) */
    int      c, h, w;
    float   *x;           /* (n, c, h, w), owned by the loader */
    int32_t *y;           /* (n) */
    const uint32_t *index;/* dataset indices of the samples */
} soma_batch;

typedef struct soma_loader soma_loader;
soma_status soma_loader_new(soma_loader **out, const soma_dataset *ds,
                            const soma_loader_config *cfg);
void soma_loader_free(soma_loader *l);
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
    const void *data;     /* into the reader's buffer, little-endian */
    size_t      nbytes;
} soma_st_tensor;

typedef struct soma_st soma_st;   /* a file read into memory */
soma_status soma_st_read(soma_st **out, const char *path);
/* Parses a buffer (copied); name is used in messages. */
soma_status soma_st_parse(soma_st **out, const uint8_t *buf, size_t n, const char *name);
void  soma_st_free(soma_st *st);
int   soma_st_count(const soma_st *st);
const soma_st_tensor *soma_st_at(const soma_st *st, int i);
/* NULL if absent. */
const soma_st_tensor *soma_st_find(const soma_st *st, const char *name);
/* __metadata__ string value, NULL if absent. */
const char *soma_st_meta(const soma_st *st, const char *key);
int   soma_st_meta_count(const soma_st *st);
const char *soma_st_meta_key(const soma_st *st, int i);

typedef struct soma_st_writer soma_st_writer;
soma_status soma_st_writer_new(soma_st_writer **out);
void soma_st_writer_free(soma_st_writer *w);
/* Data is copied at add time. Names must be unique. */
soma_status soma_st_writer_add(soma_st_writer *w, const char *name, soma_dtype dt,
                               int ndim, const int64_t *shape, const void *data);
soma_status soma_st_writer_meta(soma_st_writer *w, const char *key, const char *value);
/* Writes path.tmp, fsyncs, renames over path, fsyncs the directory: a crash
 * at any point leaves either the old or the new file, never a torn one. */
soma_status soma_st_writer_save(soma_st_writer *w, const char *path);

#ifdef __cplusplus
}
#endif
#endif /* SOMA_H */
