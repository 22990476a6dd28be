/*
 * loader.c - batches from a dataset: per-epoch shuffling, conversion to
 * float, normalisation, random crop and horizontal flip.
 *
 * Reproducibility: epoch e draws everything (the permutation, then each
 * sample's crop offsets and flip, in batch order) from one generator
 * seeded with mix(seed, e).  So the batches of an epoch depend only on
 * (seed, e): a run resumed at epoch e sees the batches an uninterrupted
 * run would have seen.
 *
 * Exactness against torchvision's CIFAR recipe
 *     RandomCrop(32, padding=4) -> RandomHorizontalFlip() -> ToTensor()
 *     -> Normalize(mean, std)
 * RandomCrop pads the uint8 image with 0, so a padded pixel becomes
 * (0/255 - mean)/std after normalisation, not 0; the crop offsets are
 * uniform in [0, 2*pad] and the flip follows the crop, as here.  Each value
 * is computed in float32 as torch does: v/255, then (x - mean)/std, and
 * tabulated once per channel (256 entries), so a batch is table lookups.
 *
 * A raw dataset (ds->raw, e.g. N-MNIST event counts in c = 2T channels)
 * skips both steps: a byte v becomes the float v, in every channel, with
 * or without normalize; one table serves all its channels.
 *
 * All memory (permutation, batch x, y) is allocated in soma_loader_new;
 * soma_loader_next never allocates.  The loader points into the dataset
 * (for a subset view, into its parent), which must outlive it.  A batch's
 * x, y and index stay valid until the next soma_loader_next or
 * soma_loader_start_epoch.
 */
#include "../soma_internal.h"
#include <string.h>

struct soma_loader {
    const soma_dataset *ds;
    soma_loader_config cfg;
    uint32_t *perm;      /* (n) order of the current epoch */
    float    *x;         /* (batch, c, h, w) */
    int32_t  *y;         /* (batch) */
    float     lut[3][256]; /* per channel: value of pixel byte v (raw: lut[0] only) */
    soma_rng  rng;       /* the current epoch's generator */
    int64_t   pos;       /* next position in perm */
    /* generated sequences (ds == NULL): the adding task */
    int       gen_T, gen_n, gen_fixed;
    float    *target;    /* (batch) */
};

/* Per-epoch seed.  The golden-ratio multiplier spreads consecutive seeds;
 * +1 keeps (seed 0, epoch 0) away from splitmix's all-zero input. */
static uint64_t epoch_seed(uint64_t seed, int epoch)
{
    return seed * 0x9E3779B97F4A7C15ULL + (uint64_t)(int64_t)epoch + 1;
}

soma_status soma_loader_new(soma_loader **out, const soma_dataset *ds, const soma_loader_config *cfg)
{
    if (!out) return soma__fail(SOMA_ERR_ARG, "soma_loader_new: out must not be NULL");
    *out = NULL;
    if (!ds || !cfg) return soma__fail(SOMA_ERR_ARG, "soma_loader_new: dataset and config must not be NULL");
    if (ds->n <= 0 || !ds->pixels || !ds->labels)
        return soma__fail(SOMA_ERR_ARG, "loader: dataset '%s' is empty", ds->name);
    if (ds->c < 1 || (!ds->raw && ds->c > 3) || ds->h < 1 || ds->w < 1)
        return soma__fail(SOMA_ERR_ARG, "loader: dataset '%s' has shape %dx%dx%d, expected %s",
                          ds->name, ds->c, ds->h, ds->w,
                          ds->raw ? "positive sizes" : "1..3 channels");
    if (cfg->batch <= 0)
        return soma__fail(SOMA_ERR_ARG, "batch must be > 0, got %d", cfg->batch);
    if (cfg->drop_last && cfg->batch > ds->n)
        return soma__fail(SOMA_ERR_ARG, "batch %d with drop_last leaves no batch of %s's %d samples",
                          cfg->batch, ds->name, ds->n);
    /* A pad as large as the image would crop windows of pure padding. */
    if (cfg->crop_pad < 0 || cfg->crop_pad >= ds->h || cfg->crop_pad >= ds->w)
        return soma__fail(SOMA_ERR_ARG, "crop_pad must be in [0, %d), got %d",
                          ds->h < ds->w ? ds->h : ds->w, cfg->crop_pad);
    if (cfg->normalize && !ds->raw)
        for (int ch = 0; ch < ds->c; ch++)
            if (!(ds->std[ch] > 0))
                return soma__fail(SOMA_ERR_ARG, "loader: dataset '%s' channel %d has std %g, "
                                  "expected > 0", ds->name, ch, (double)ds->std[ch]);

    size_t per = (size_t)ds->c * (size_t)ds->h * (size_t)ds->w;
    soma_loader *l = soma__calloc(1, sizeof *l);
    if (!l) return SOMA_ERR_NOMEM;
    l->ds = ds;
    l->cfg = *cfg;
    l->perm = soma__malloc((size_t)ds->n * sizeof *l->perm);
    l->x = l->perm ? soma__malloc_aligned((size_t)cfg->batch * per * sizeof *l->x) : NULL;
    l->y = l->x ? soma__malloc((size_t)cfg->batch * sizeof *l->y) : NULL;
    if (!l->y) { soma_loader_free(l); return SOMA_ERR_NOMEM; }
    if (ds->raw)
        for (int v = 0; v < 256; v++) l->lut[0][v] = (float)v;
    else
        for (int ch = 0; ch < ds->c; ch++)
            for (int v = 0; v < 256; v++) {
                float x = (float)v / 255.0f;   /* ToTensor: float32 division */
                if (cfg->normalize) x = (x - ds->mean[ch]) / ds->std[ch];
                l->lut[ch][v] = x;
            }
    soma_loader_start_epoch(l, 0);
    *out = l;
    return SOMA_OK;
}

void soma_loader_free(soma_loader *l)
{
    if (!l) return;
    soma__free(l->perm);
    soma__free_aligned(l->x);
    soma__free(l->y);
    soma__free(l->target);
    soma__free(l);
}

soma_status soma_loader_new_adding(soma_loader **out, int T, int n, int batch, uint64_t seed,
                                   int fixed)
{
    *out = NULL;
    if (T < 2) return soma__fail(SOMA_ERR_ARG, "adding task: T must be >= 2, got %d", T);
    if (n <= 0) return soma__fail(SOMA_ERR_ARG, "adding task: sequences per epoch must be > 0, got %d", n);
    if (batch <= 0) return soma__fail(SOMA_ERR_ARG, "batch must be > 0, got %d", batch);
    soma_loader *l = soma__calloc(1, sizeof *l);
    if (!l) return SOMA_ERR_NOMEM;
    l->cfg.batch = batch;
    l->cfg.seed = seed;
    l->gen_T = T;
    l->gen_n = n;
    l->gen_fixed = fixed;
    l->x = soma__malloc_aligned((size_t)batch * T * 2 * sizeof(float));
    l->y = soma__calloc((size_t)batch, sizeof *l->y);
    l->target = soma__malloc((size_t)batch * sizeof(float));
    if (!l->x || !l->y || !l->target) { soma_loader_free(l); return SOMA_ERR_NOMEM; }
    soma_loader_start_epoch(l, 0);
    *out = l;
    return SOMA_OK;
}

void soma_loader_start_epoch(soma_loader *l, int epoch)
{
    if (!l) return;
    if (!l->ds) { /* generated: a stream from (seed, epoch) */
        soma_rng_seed(&l->rng, epoch_seed(l->cfg.seed, l->gen_fixed ? 0 : epoch));
        l->pos = 0;
        return;
    }
    uint32_t n = (uint32_t)l->ds->n;
    for (uint32_t i = 0; i < n; i++) l->perm[i] = i;
    soma_rng_seed(&l->rng, epoch_seed(l->cfg.seed, epoch));
    if (l->cfg.shuffle) soma_rng_shuffle_u32(&l->rng, l->perm, n);
    l->pos = 0;
}

int64_t soma_loader_batches(const soma_loader *l)
{
    if (!l) return 0;
    int64_t n = l->ds ? l->ds->n : l->gen_n, b = l->cfg.batch;
    return l->cfg.drop_last ? n / b : (n + b - 1) / b;
}

/* Writes sample src (c,h,w bytes) into dst (c,h,w floats): the crop window
 * starts at (oy, ox) of the image zero-padded by pad on each side, then
 * columns are mirrored if flip. */
static void fill_sample(float *dst, const uint8_t *src, const soma_loader *l, int oy, int ox,
                        int flip)
{
    const int c = l->ds->c, h = l->ds->h, w = l->ds->w, pad = l->cfg.crop_pad;
    for (int ch = 0; ch < c; ch++) {
        const float *lut = l->lut[l->ds->raw ? 0 : ch];
        const float padv = lut[0];  /* the 0 byte RandomCrop pads with */
        const uint8_t *plane = src + (size_t)ch * h * w;
        float *o = dst + (size_t)ch * h * w;
        if (!pad && !flip) {
            for (int k = 0; k < h * w; k++) o[k] = lut[plane[k]];
            continue;
        }
        for (int i = 0; i < h; i++) {
            int si = i + oy - pad;
            float *orow = o + (size_t)i * w;
            if (si < 0 || si >= h) {
                for (int j = 0; j < w; j++) orow[j] = padv;
                continue;
            }
            const uint8_t *row = plane + (size_t)si * w;
            for (int j = 0; j < w; j++) {
                int sj = (flip ? w - 1 - j : j) + ox - pad;
                orow[j] = (sj < 0 || sj >= w) ? padv : lut[row[sj]];
            }
        }
    }
}

int soma_loader_next(soma_loader *l, soma_batch *b)
{
    if (!l || !b) return 0;
    if (!l->ds) {
        int64_t left = l->gen_n - l->pos;
        if (left <= 0) return 0;
        int cnt = left < l->cfg.batch ? (int)left : l->cfg.batch;
        if (soma_adding_batch(l->x, l->target, cnt, l->gen_T, &l->rng)) return 0;
        memset(b, 0, sizeof *b);
        b->n = cnt;
        b->c = 2 * l->gen_T; b->h = 1; b->w = 1;
        b->x = l->x;
        b->y = l->y;             /* zeros: unused by a regression loss */
        b->target = l->target;
        l->pos += cnt;
        return 1;
    }
    const soma_dataset *ds = l->ds;
    int64_t left = ds->n - l->pos;
    if (left <= 0 || (l->cfg.drop_last && left < l->cfg.batch)) return 0;
    int cnt = left < l->cfg.batch ? (int)left : l->cfg.batch;
    size_t per = (size_t)ds->c * ds->h * ds->w;
    const int pad = l->cfg.crop_pad;
    for (int k = 0; k < cnt; k++) {
        uint32_t idx = l->perm[l->pos + k];
        /* Draw order per sample: crop (row, column), then flip, matching
         * RandomCrop before RandomHorizontalFlip. */
        int oy = pad, ox = pad, flip = 0;
        if (pad) {
            oy = (int)soma_rng_below(&l->rng, (uint32_t)(2 * pad + 1));
            ox = (int)soma_rng_below(&l->rng, (uint32_t)(2 * pad + 1));
        }
        if (l->cfg.hflip) flip = soma_rng_uniform(&l->rng) < 0.5f;
        fill_sample(l->x + (size_t)k * per, ds->pixels + (size_t)idx * per, l, oy, ox, flip);
        l->y[k] = ds->labels[idx];
    }
    b->n = cnt;
    b->c = ds->c; b->h = ds->h; b->w = ds->w;
    b->x = l->x;
    b->y = l->y;
    b->target = l->cfg.target_is_input ? l->x : NULL;
    b->index = l->perm + l->pos;
    l->pos += cnt;
    return 1;
}
