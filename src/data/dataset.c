/*
 * dataset.c - in-memory image classification sets: the MNIST-family IDX
 * pair loader, opening a named dataset in a directory, subset views, free.
 *
 * A dataset keeps raw bytes (n, c*h*w) and int32 labels; conversion to
 * float happens per batch in the loader, so 60,000 MNIST images cost 47 MB
 * rather than 188 MB.  CIFAR-10 batches are read by cifar.c.
 *
 * Normalisation constants (per channel, on pixel/255) are the values the
 * common PyTorch recipes use: MNIST 0.1307/0.3081, Fashion-MNIST
 * 0.2860/0.3530; CIFAR-10's live in cifar.c.
 *
 * Directory layouts understood by soma_dataset_open:
 *   mnist, fashion  train-images-idx3-ubyte, train-labels-idx1-ubyte,
 *                   t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte,
 *                   each raw or with .gz appended (raw wins if both exist)
 *   cifar10         data_batch_1..5.bin and test_batch.bin, each raw or
 *                   .bin.xz (raw wins)
 *   cifar10-4k      data_batch_1_first4000.bin (the exact first 4000 official
 *                   training records, shared/data/cifar10/exact-train-first4000)
 *                   and, only if test is requested, test_batch.bin(.xz) in
 *                   the same directory; scripts/data.sh builds data/cifar10-4k
 *                   that way, with the JPEG-derived test batch.
 */
#include "../soma_internal.h"
#include <string.h>
#include <sys/stat.h>

typedef struct idx_stats { const char *name; float mean, std; } idx_stats;

static const idx_stats idx_sets[] = {
    {.name = "mnist", .mean = 0.1307f, .std = 0.3081f},
    {.name = "fashion", .mean = 0.2860f, .std = 0.3530f},
};

void soma_dataset_free(soma_dataset *ds)
{
    if (!ds) return;
    if (ds->owns) {
        soma__free(ds->pixels);
        soma__free(ds->labels);
    }
    soma__free(ds);
}

soma_status soma_dataset_load_idx(soma_dataset **out, const char *name, const char *images,
                                  const char *labels)
{
    if (!out) return soma__fail(SOMA_ERR_ARG, "soma_dataset_load_idx: out must not be NULL");
    *out = NULL;
    if (!name || !images || !labels)
        return soma__fail(SOMA_ERR_ARG, "soma_dataset_load_idx: name, images and labels must not be NULL");
    const idx_stats *stats = NULL;
    for (size_t i = 0; i < sizeof idx_sets / sizeof idx_sets[0]; i++)
        if (!strcmp(idx_sets[i].name, name)) stats = &idx_sets[i];
    if (!stats)
        return soma__fail(SOMA_ERR_ARG, "unknown IDX dataset '%s' (known: mnist, fashion)", name);

    soma_idx im, lb;
    soma_status st = soma_idx_read(&im, images);
    if (st) return st;
    st = soma_idx_read(&lb, labels);
    if (st) { soma_idx_free(&im); return st; }

    if (im.ndim != 3 || im.dims[1] != 28 || im.dims[2] != 28) {
        st = soma__fail(SOMA_ERR_FORMAT, "%s: images have shape %lldx%lldx%lldx%lld (rank %d), "
                        "expected Nx28x28", images, (long long)im.dims[0], (long long)im.dims[1],
                        (long long)im.dims[2], (long long)im.dims[3], im.ndim);
    } else if (lb.ndim != 1) {
        st = soma__fail(SOMA_ERR_FORMAT, "%s: labels have rank %d, expected 1", labels, lb.ndim);
    } else if (im.dims[0] != lb.dims[0]) {
        st = soma__fail(SOMA_ERR_FORMAT, "%s has %lld images but %s has %lld labels", images,
                        (long long)im.dims[0], labels, (long long)lb.dims[0]);
    } else if (im.dims[0] == 0) {
        st = soma__fail(SOMA_ERR_FORMAT, "%s: no images", images);
    } else {
        for (int64_t i = 0; i < lb.dims[0]; i++)
            if (lb.data[i] >= 10) {
                st = soma__fail(SOMA_ERR_FORMAT, "%s: label %u at index %lld, expected 0..9",
                                labels, lb.data[i], (long long)i);
                break;
            }
    }
    soma_dataset *ds = NULL;
    if (!st) {
        ds = soma__calloc(1, sizeof *ds);
        if (!ds) st = SOMA_ERR_NOMEM;
    }
    if (!st) {
        ds->labels = soma__malloc((size_t)lb.dims[0] * sizeof *ds->labels);
        if (!ds->labels) st = SOMA_ERR_NOMEM;
    }
    if (st) {
        soma__free(ds);
        soma_idx_free(&im);
        soma_idx_free(&lb);
        return st;
    }
    snprintf(ds->name, sizeof ds->name, "%s", name);
    ds->n = (int)im.dims[0];  /* < 2^31: the parser bounds each size */
    ds->c = 1; ds->h = 28; ds->w = 28;
    ds->classes = 10;
    ds->pixels = im.data;     /* ownership moves to the dataset */
    for (int i = 0; i < ds->n; i++) ds->labels[i] = lb.data[i];
    ds->mean[0] = ds->mean[1] = ds->mean[2] = stats->mean;
    ds->std[0] = ds->std[1] = ds->std[2] = stats->std;
    ds->owns = 1;
    soma_idx_free(&lb);
    *out = ds;
    return SOMA_OK;
}

soma_status soma_dataset_subset(soma_dataset **out, const soma_dataset *ds, int start, int count)
{
    if (!out) return soma__fail(SOMA_ERR_ARG, "soma_dataset_subset: out must not be NULL");
    *out = NULL;
    if (!ds) return soma__fail(SOMA_ERR_ARG, "soma_dataset_subset: dataset must not be NULL");
    if (start < 0 || count <= 0 || count > ds->n - start)  /* no start+count overflow */
        return soma__fail(SOMA_ERR_ARG, "subset [%d, %d+%d) out of range for %s with %d samples",
                          start, start, count, ds->name, ds->n);
    soma_dataset *v = soma__malloc(sizeof *v);
    if (!v) return SOMA_ERR_NOMEM;
    *v = *ds;
    v->n = count;
    v->pixels = ds->pixels + (size_t)start * (size_t)(ds->c * ds->h * ds->w);
    v->labels = ds->labels + start;
    v->owns = 0;  /* a view: valid while ds lives */
    *out = v;
    return SOMA_OK;
}

/* ---- soma_dataset_open ------------------------------------------------------ */

static int exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* Writes dir/base (or dir/base + alt_ext when only that exists) into path.
 * SOMA_ERR_IO naming both candidates when neither exists. */
static soma_status find_file(char *path, size_t cap, const char *dir, const char *base,
                             const char *alt_ext)
{
    int n = snprintf(path, cap, "%s/%s", dir, base);
    if (n < 0 || (size_t)n + strlen(alt_ext) >= cap)
        return soma__fail(SOMA_ERR_ARG, "%s/%s: path too long", dir, base);
    if (exists(path)) return SOMA_OK;
    strcat(path, alt_ext);
    if (exists(path)) return SOMA_OK;
    return soma__fail(SOMA_ERR_IO, "%s/%s: No such file or directory (nor %s%s)", dir, base,
                      base, alt_ext);
}

static soma_status maybe_verify(int verify, const char *table_name, const char *path)
{
    return verify ? soma_verify_known(table_name, path, NULL) : SOMA_OK;
}

enum { PATH_CAP = 4096 };

static soma_status open_idx(soma_dataset **out, const char *name, const char *dir,
                            const char *prefix, int verify)
{
    char im[PATH_CAP], lb[PATH_CAP], base[64];
    snprintf(base, sizeof base, "%s-images-idx3-ubyte", prefix);
    soma_status st = find_file(im, sizeof im, dir, base, ".gz");
    if (st) return st;
    snprintf(base, sizeof base, "%s-labels-idx1-ubyte", prefix);
    if ((st = find_file(lb, sizeof lb, dir, base, ".gz"))) return st;
    if ((st = maybe_verify(verify, name, im))) return st;
    if ((st = maybe_verify(verify, name, lb))) return st;
    return soma_dataset_load_idx(out, name, im, lb);
}

/* Loads the given CIFAR batch basenames from dir, each .bin or .bin.xz. */
static soma_status open_cifar(soma_dataset **out, const char *dir, const char *const *bases,
                              int nb, int verify)
{
    char paths[6][PATH_CAP];
    const char *ptrs[6];
    for (int i = 0; i < nb; i++) {
        soma_status st = find_file(paths[i], sizeof paths[i], dir, bases[i], ".xz");
        if (st) return st;
        if ((st = maybe_verify(verify, "cifar10", paths[i]))) return st;
        ptrs[i] = paths[i];
    }
    return soma_dataset_load_cifar10(out, ptrs, nb);
}

soma_status soma_dataset_open(soma_dataset **train, soma_dataset **test, const char *name,
                              const char *dir, int verify)
{
    if (train) *train = NULL;
    if (test) *test = NULL;
    if (!name || !dir)
        return soma__fail(SOMA_ERR_ARG, "soma_dataset_open: name and dir must not be NULL");
    if (!train && !test)
        return soma__fail(SOMA_ERR_ARG, "soma_dataset_open: train and test are both NULL");
    if (!exists(dir))
        return soma__fail(SOMA_ERR_IO, "%s: No such file or directory (dataset '%s'; "
                          "`make data` fetches MNIST and Fashion-MNIST)", dir, name);
    soma_dataset *tr = NULL, *te = NULL;
    soma_status st = SOMA_OK;
    if (!strcmp(name, "mnist") || !strcmp(name, "fashion")) {
        if (train) st = open_idx(&tr, name, dir, "train", verify);
        if (!st && test) st = open_idx(&te, name, dir, "t10k", verify);
    } else if (!strcmp(name, "cifar10")) {
        static const char *const tr_files[5] = {"data_batch_1.bin", "data_batch_2.bin",
                                                 "data_batch_3.bin", "data_batch_4.bin",
                                                 "data_batch_5.bin"};
        static const char *const te_files[1] = {"test_batch.bin"};
        if (train) st = open_cifar(&tr, dir, tr_files, 5, verify);
        if (!st && test) st = open_cifar(&te, dir, te_files, 1, verify);
    } else if (!strcmp(name, "cifar10-4k")) {
        static const char *const tr_files[1] = {"data_batch_1_first4000.bin"};
        static const char *const te_files[1] = {"test_batch.bin"};
        if (train) st = open_cifar(&tr, dir, tr_files, 1, verify);
        if (!st && test) st = open_cifar(&te, dir, te_files, 1, verify);
    } else {
        return soma__fail(SOMA_ERR_ARG, "unknown dataset '%s' (known: mnist, fashion, cifar10, "
                          "cifar10-4k)", name);
    }
    if (st) {
        soma_dataset_free(tr);
        soma_dataset_free(te);
        return st;
    }
    if (train) *train = tr;
    if (test) *test = te;
    return SOMA_OK;
}
