/*
 * safetensors.c - checkpoints and fixtures in the safetensors format.
 *
 * Layout (https://github.com/huggingface/safetensors):
 *
 *   u64 little-endian N | N bytes of UTF-8 JSON header | data region
 *
 * The header maps each tensor name to {"dtype", "shape", "data_offsets":
 * [begin, end]} (offsets relative to the first byte of the data region) and
 * may hold "__metadata__": {string: string}.  The reader enforces what the
 * reference implementation enforces, because a file we accept and PyTorch
 * rejects (or the reverse) is a bug report waiting to happen:
 *   - N <= file size - 8 and N <= 100 MiB, the header is a JSON object,
 *   - names are unique, dtype is one soma knows, ndim <= SOMA_MAX_DIMS,
 *     dimensions are non-negative integers whose product does not overflow,
 *   - end - begin == prod(shape) * sizeof(dtype),
 *   - the tensors cover the data region exactly: sorted by offset they are
 *     contiguous, with no gap, no overlap and no trailing bytes,
 *   - metadata values are strings.
 *
 * Alignment: offsets inside the data region need not be multiples of the
 * element size (a 3-byte U8 tensor followed by an F32 one is legal), so the
 * reader never hands out pointers into the file image.  It copies every
 * tensor to its own 64-byte aligned slot, and callers may read the data as
 * float/int32_t/... directly.  The format is little-endian and so is every
 * host soma supports (checked at compile time below), so no byte swapping.
 *
 * The writer sorts tensors by name so the same content always gives the
 * same bytes, pads the header with spaces to a multiple of 8 (so the data
 * region starts 8-aligned in the file, as the reference writer does), and
 * replaces the target atomically: write "<path>.tmp", fsync, rename, fsync
 * the directory.
 */
#include "json.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__) && \
    __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c copies data as is: it needs a little-endian host"
#endif

/* The reference implementation's limit; it bounds what a hostile header
 * can make the JSON parser allocate. */
#define ST_MAX_HEADER ((uint64_t)100 << 20)
#define ST_ALIGN 64
#define ST_META_KEY "__metadata__"

static const struct dtype_info { const char *name; size_t size; } dtypes[] = {
    [SOMA_F32] = { "F32", 4 }, [SOMA_I32] = { "I32", 4 }, [SOMA_I64] = { "I64", 8 },
    [SOMA_U8] = { "U8", 1 },   [SOMA_F64] = { "F64", 8 },
};
#define N_DTYPES ((int)(sizeof dtypes / sizeof *dtypes))

/* A tensor as the reader keeps it: the public view plus where its bytes
 * were in the file's data region. */
typedef struct st_entry {
    soma_st_tensor t;
    uint64_t begin, end;
} st_entry;

typedef struct st_meta { const char *key, *value; } st_meta;

struct soma_st {
    st_entry *entries;     /* count, sorted by name */
    int count;
    st_meta *meta;         /* meta_count, sorted by key */
    int meta_count;
    char *strings;         /* every name, key and value, NUL terminated, one block */
    unsigned char *data;   /* every tensor at a 64-byte aligned offset */
};

/* Quoted, escaped and shortened copy of s[0..n) for messages. */
static const char *quote(char *buf, size_t cap, const char *s, size_t n)
{
    if (soma__json_escape(buf, cap, s, n) >= cap && cap > 4) memcpy(buf + cap - 4, "...", 4);
    return buf;
}

static const char *format_shape(char *buf, size_t cap, int ndim, const int64_t *shape)
{
    size_t k = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && k < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, i ? ", %" PRId64 : "%" PRId64, shape[i]);
    if (k < cap) snprintf(buf + k, cap - k, "]");
    return buf;
}

static size_t round_up(size_t x) { return (x + ST_ALIGN - 1) / ST_ALIGN * ST_ALIGN; }

/* ======================================================================== */
/* Reader                                                                    */
/* ======================================================================== */

static uint64_t le64(const uint8_t *b)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | b[i];
    return v;
}

/* An integer-valued JSON number >= 0, or -1 when v is anything else. */
static int64_t nonneg_int(const soma__json *v)
{
    if (!v || v->type != SOMA__JSON_NUMBER || !v->is_integer || v->integer < 0) return -1;
    return v->integer;
}

/* Validates one tensor entry of the header and fills e (name not yet set). */
static soma_status parse_entry(st_entry *e, const soma__json_member *m, uint64_t data_len,
                               const char *file)
{
    char q[96], sb[160];
    const soma__json *v = &m->value;
    quote(q, sizeof q, m->key, m->key_length);
    if (strlen(m->key) != m->key_length)
        return soma__fail(SOMA_ERR_FORMAT, "%s: tensor name %s contains a NUL character", file, q);
    if (v->type != SOMA__JSON_OBJECT)
        return soma__fail(SOMA_ERR_FORMAT, "%s: tensor %s: entry is a JSON %s, expected an object",
                          file, q, soma__json_type_name(v->type));
    for (size_t i = 0; i < v->length; i++) {
        const char *k = v->members[i].key;
        if (strcmp(k, "dtype") && strcmp(k, "shape") && strcmp(k, "data_offsets")) {
            char kq[64];
            return soma__fail(SOMA_ERR_FORMAT, "%s: tensor %s: unknown field %s (expected "
                              "dtype, shape, data_offsets)", file, q,
                              quote(kq, sizeof kq, k, v->members[i].key_length));
        }
    }

    const soma__json *dt = soma__json_get(v, "dtype");
    const soma__json *shape = soma__json_get(v, "shape");
    const soma__json *offs = soma__json_get(v, "data_offsets");
    if (!dt || !shape || !offs)
        return soma__fail(SOMA_ERR_FORMAT, "%s: tensor %s: missing \"%s\"", file, q,
                          !dt ? "dtype" : !shape ? "shape" : "data_offsets");

    if (dt->type != SOMA__JSON_STRING)
        return soma__fail(SOMA_ERR_FORMAT, "%s: tensor %s: dtype is a JSON %s, expected a string",
                          file, q, soma__json_type_name(dt->type));
    int d = 0;
    while (d < N_DTYPES && strcmp(dt->string, dtypes[d].name)) d++;
    if (d == N_DTYPES || strlen(dt->string) != dt->length) {
        char dq[32];
        return soma__fail(SOMA_ERR_FORMAT, "%s: tensor %s: unknown dtype %s (soma reads F32, "
                          "I32, I64, U8, F64)", file, q, quote(dq, sizeof dq, dt->string, dt->length));
    }
    e->t.dtype = (soma_dtype)d;

    if (shape->type != SOMA__JSON_ARRAY)
        return soma__fail(SOMA_ERR_FORMAT, "%s: tensor %s: shape is a JSON %s, expected an array",
                          file, q, soma__json_type_name(shape->type));
    if (shape->length > SOMA_MAX_DIMS)
        return soma__fail(SOMA_ERR_FORMAT, "%s: tensor %s: %zu dimensions, soma supports at most %d",
                          file, q, shape->length, SOMA_MAX_DIMS);
    e->t.ndim = (int)shape->length;
    /* The product is checked against INT64_MAX / size, not just for
     * wrapping, so numel * size below is exact. */
    uint64_t numel = 1, size = dtypes[d].size, cap = (uint64_t)INT64_MAX / size;
    for (int i = 0; i < SOMA_MAX_DIMS; i++) e->t.shape[i] = 1;
    for (int i = 0; i < e->t.ndim; i++) {
        const soma__json *x = &shape->items[i];
        int64_t dim = nonneg_int(x);
        if (dim < 0) {
            if (x->type == SOMA__JSON_NUMBER && x->is_integer)
                return soma__fail(SOMA_ERR_FORMAT, "%s: tensor %s: negative dimension %" PRId64
                                  " in shape[%d]", file, q, x->integer, i);
            return soma__fail(SOMA_ERR_FORMAT, "%s: tensor %s: shape[%d] is not a non-negative "
                              "integer", file, q, i);
        }
        e->t.shape[i] = dim;
        if (dim && numel > cap / (uint64_t)dim)
            return soma__fail(SOMA_ERR_FORMAT, "%s: tensor %s: shape %s overflows (too many "
                              "elements)", file, q, format_shape(sb, sizeof sb, i + 1, e->t.shape));
        numel *= (uint64_t)dim;
    }

    int64_t b, en;
    if (offs->type != SOMA__JSON_ARRAY || offs->length != 2 ||
        (b = nonneg_int(&offs->items[0])) < 0 || (en = nonneg_int(&offs->items[1])) < 0)
        return soma__fail(SOMA_ERR_FORMAT, "%s: tensor %s: data_offsets must be an array of two "
                          "non-negative integers", file, q);
    if (b > en)
        return soma__fail(SOMA_ERR_FORMAT, "%s: tensor %s: data_offsets [%" PRId64 ", %" PRId64
                          "] end before they begin", file, q, b, en);
    if ((uint64_t)en > data_len)
        return soma__fail(SOMA_ERR_FORMAT, "%s: tensor %s: data_offsets [%" PRId64 ", %" PRId64
                          "] out of range: the data region has %" PRIu64 " bytes", file, q, b, en,
                          data_len);
    uint64_t nbytes = numel * size;
    if ((uint64_t)(en - b) != nbytes)
        return soma__fail(SOMA_ERR_FORMAT, "%s: tensor %s: data_offsets [%" PRId64 ", %" PRId64
                          "] hold %" PRId64 " bytes, but shape %s of %s needs %" PRIu64, file, q,
                          b, en, en - b, format_shape(sb, sizeof sb, e->t.ndim, e->t.shape),
                          dtypes[d].name, nbytes);
    e->begin = (uint64_t)b;
    e->end = (uint64_t)en;
    e->t.nbytes = (size_t)nbytes; /* <= data_len, which fits in size_t */
    return SOMA_OK;
}

static soma_status check_metadata(const soma__json *v, const char *file)
{
    char q[96];
    if (v->type != SOMA__JSON_OBJECT)
        return soma__fail(SOMA_ERR_FORMAT, "%s: __metadata__ is a JSON %s, expected an object "
                          "of strings", file, soma__json_type_name(v->type));
    for (size_t i = 0; i < v->length; i++) {
        const soma__json_member *m = &v->members[i];
        quote(q, sizeof q, m->key, m->key_length);
        if (m->value.type != SOMA__JSON_STRING)
            return soma__fail(SOMA_ERR_FORMAT, "%s: __metadata__ value for key %s is a JSON %s, "
                              "not a string", file, q, soma__json_type_name(m->value.type));
        if (strlen(m->key) != m->key_length || strlen(m->value.string) != m->value.length)
            return soma__fail(SOMA_ERR_FORMAT, "%s: __metadata__ key or value of %s contains a "
                              "NUL character", file, q);
    }
    return SOMA_OK;
}

static int by_offset(const void *a, const void *b)
{
    const st_entry *x = *(const st_entry *const *)a, *y = *(const st_entry *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const st_entry *)a)->t.name, ((const st_entry *)b)->t.name);
}

static int meta_by_key(const void *a, const void *b)
{
    return strcmp(((const st_meta *)a)->key, ((const st_meta *)b)->key);
}

/* order[] holds the entries sorted by (begin, end).  Zero-byte tensors may
 * share an offset with a neighbour; anything else touching twice is an
 * overlap, and any byte not claimed is a gap. */
static soma_status check_coverage(st_entry *const *order, int count, uint64_t data_len,
                                  const char *file)
{
    char q1[96], q2[96];
    uint64_t covered = 0;
    const st_entry *prev = NULL;
    for (int i = 0; i < count; i++) {
        const st_entry *e = order[i];
        if (e->begin < covered)
            return soma__fail(SOMA_ERR_FORMAT, "%s: tensors %s [%" PRIu64 ", %" PRIu64 "] and %s "
                              "[%" PRIu64 ", %" PRIu64 "] overlap in the data region", file,
                              quote(q1, sizeof q1, prev->t.name, strlen(prev->t.name)),
                              prev->begin, prev->end,
                              quote(q2, sizeof q2, e->t.name, strlen(e->t.name)), e->begin, e->end);
        if (e->begin > covered)
            return soma__fail(SOMA_ERR_FORMAT, "%s: gap in the data region: bytes [%" PRIu64 ", %"
                              PRIu64 ") belong to no tensor", file, covered, e->begin);
        covered = e->end;
        prev = e;
    }
    if (covered != data_len)
        return soma__fail(SOMA_ERR_FORMAT, "%s: gap in the data region: trailing bytes [%" PRIu64
                          ", %" PRIu64 ") belong to no tensor", file, covered, data_len);
    return SOMA_OK;
}

/* Builds st from a validated-length header; the data region (data_len
 * bytes) comes from mem when it is non-NULL, else is read from f, which is
 * positioned at its first byte. */
static soma_status st_load(soma_st *st, const char *hdr, size_t hlen, uint64_t data_len,
                           const uint8_t *mem, FILE *f, const char *file)
{
    char where[320];
    soma__json *root = NULL;
    st_entry **order = NULL;
    soma_status s;
    snprintf(where, sizeof where, "%s: JSON header", file);
    s = soma__json_parse(&root, hdr, hlen, where);
    if (s) return s;
    if (root->type != SOMA__JSON_OBJECT) {
        s = soma__fail(SOMA_ERR_FORMAT, "%s: the header is a JSON %s, expected an object", file,
                       soma__json_type_name(root->type));
        goto done;
    }

    /* Pass 1: validate every member and size the string block. */
    const soma__json *meta = soma__json_get(root, ST_META_KEY);
    size_t ntensors = root->length - (meta ? 1 : 0), strbytes = 0;
    if (ntensors > (size_t)INT32_MAX / 2) {
        s = soma__fail(SOMA_ERR_FORMAT, "%s: %zu tensors, too many", file, ntensors);
        goto done;
    }
    if (meta) {
        if ((s = check_metadata(meta, file))) goto done;
        for (size_t i = 0; i < meta->length; i++)
            strbytes += meta->members[i].key_length + meta->members[i].value.length + 2;
        st->meta = soma__calloc(meta->length, sizeof *st->meta);
        if (!st->meta) { s = SOMA_ERR_NOMEM; goto done; }
    }
    st->entries = soma__calloc(ntensors, sizeof *st->entries);
    if (!st->entries) { s = SOMA_ERR_NOMEM; goto done; }
    for (size_t i = 0, k = 0; i < root->length; i++) {
        const soma__json_member *m = &root->members[i];
        if (&m->value == meta) continue;
        if ((s = parse_entry(&st->entries[k++], m, data_len, file))) goto done;
        strbytes += m->key_length + 1;
    }

    /* Pass 2: copy names, keys and values into one block. */
    st->strings = soma__malloc(strbytes);
    if (!st->strings) { s = SOMA_ERR_NOMEM; goto done; }
    char *p = st->strings;
    for (size_t i = 0, k = 0; i < root->length; i++) {
        const soma__json_member *m = &root->members[i];
        if (&m->value == meta) continue;
        memcpy(p, m->key, m->key_length + 1);
        st->entries[k++].t.name = p;
        p += m->key_length + 1;
    }
    st->count = (int)ntensors;
    if (meta) {
        for (size_t i = 0; i < meta->length; i++) {
            const soma__json_member *m = &meta->members[i];
            memcpy(p, m->key, m->key_length + 1);
            st->meta[i].key = p;
            p += m->key_length + 1;
            memcpy(p, m->value.string, m->value.length + 1);
            st->meta[i].value = p;
            p += m->value.length + 1;
        }
        st->meta_count = (int)meta->length;
        qsort(st->meta, meta->length, sizeof *st->meta, meta_by_key);
    }

    /* The data region must be tiled exactly; check before allocating it. */
    qsort(st->entries, ntensors, sizeof *st->entries, by_name);
    order = soma__malloc((ntensors ? ntensors : 1) * sizeof *order);
    if (!order) { s = SOMA_ERR_NOMEM; goto done; }
    for (size_t i = 0; i < ntensors; i++) order[i] = &st->entries[i];
    qsort(order, ntensors, sizeof *order, by_offset);
    if ((s = check_coverage(order, st->count, data_len, file))) goto done;

    /* Each tensor gets its own aligned slot, laid out in file order so a
     * file is read front to back. */
    size_t total = 0;
    for (size_t i = 0; i < ntensors; i++) {
        size_t r = round_up(order[i]->t.nbytes);
        if (r < order[i]->t.nbytes || total > SIZE_MAX - r) {
            s = soma__fail(SOMA_ERR_NOMEM, "%s: data region too large for this machine", file);
            goto done;
        }
        total += r;
    }
    st->data = soma__malloc_aligned(total);
    if (!st->data) { s = SOMA_ERR_NOMEM; goto done; }
    size_t at = 0;
    for (size_t i = 0; i < ntensors; i++) {
        st_entry *e = order[i];
        unsigned char *dst = st->data + at;
        e->t.data = dst;
        at += round_up(e->t.nbytes);
        if (mem) {
            if (e->t.nbytes) memcpy(dst, mem + e->begin, e->t.nbytes);
        } else if (fread(dst, 1, e->t.nbytes, f) != e->t.nbytes) {
            s = ferror(f) ? soma__fail(SOMA_ERR_IO, "%s: read failed: %s", file, strerror(errno))
                          : soma__fail(SOMA_ERR_FORMAT, "%s: truncated: the file ended inside "
                                       "the data of tensor \"%s\"", file, e->t.name);
            goto done;
        }
    }
    s = SOMA_OK;
done:
    soma__free(order);
    soma__json_free(root);
    return s;
}

/* Checks the 8-byte prefix against the total size n of the file. */
static soma_status check_prefix(uint64_t *hlen, const uint8_t prefix[8], uint64_t n,
                                const char *file)
{
    *hlen = le64(prefix);
    if (*hlen > n - 8)
        return soma__fail(SOMA_ERR_FORMAT, "%s: header length %" PRIu64 " is larger than the %"
                          PRIu64 " bytes that follow it (truncated or not a safetensors file)",
                          file, *hlen, n - 8);
    if (*hlen > ST_MAX_HEADER)
        return soma__fail(SOMA_ERR_FORMAT, "%s: header length %" PRIu64 " is over the 100 MiB "
                          "limit", file, *hlen);
    return SOMA_OK;
}

static soma_status truncated(const char *file, uint64_t n)
{
    return soma__fail(SOMA_ERR_FORMAT, "%s: truncated: %" PRIu64 " bytes, but a safetensors file "
                      "starts with an 8-byte header length", file, n);
}

soma_status soma_st_parse(soma_st **out, const uint8_t *buf, size_t n, const char *name)
{
    const char *file = name ? name : "<buffer>";
    uint64_t hlen;
    soma_status s;
    if (!out) return soma__fail(SOMA_ERR_ARG, "soma_st_parse: out is NULL");
    *out = NULL;
    if (!buf && n) return soma__fail(SOMA_ERR_ARG, "soma_st_parse: %s: buffer is NULL", file);
    if (n < 8) return truncated(file, n);
    if ((s = check_prefix(&hlen, buf, n, file))) return s;
    soma_st *st = soma__calloc(1, sizeof *st);
    if (!st) return SOMA_ERR_NOMEM;
    s = st_load(st, (const char *)buf + 8, (size_t)hlen, n - 8 - hlen, buf + 8 + hlen, NULL, file);
    if (s) { soma_st_free(st); return s; }
    *out = st;
    return SOMA_OK;
}

soma_status soma_st_read(soma_st **out, const char *path)
{
    struct stat sb;
    uint8_t prefix[8];
    uint64_t hlen, size;
    char *hdr = NULL;
    soma_st *st = NULL;
    soma_status s;
    if (!out) return soma__fail(SOMA_ERR_ARG, "soma_st_read: out is NULL");
    *out = NULL;
    if (!path) return soma__fail(SOMA_ERR_ARG, "soma_st_read: path is NULL");
    FILE *f = fopen(path, "rb");
    if (!f) return soma__fail(SOMA_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    if (fstat(fileno(f), &sb)) {
        s = soma__fail(SOMA_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
        goto done;
    }
    if (!S_ISREG(sb.st_mode)) {
        s = soma__fail(SOMA_ERR_IO, "%s: not a regular file", path);
        goto done;
    }
    size = (uint64_t)sb.st_size;
    if (size < 8) { s = truncated(path, size); goto done; }
    if (fread(prefix, 1, 8, f) != 8) {
        s = soma__fail(SOMA_ERR_IO, "%s: read failed: %s", path, strerror(errno));
        goto done;
    }
    if ((s = check_prefix(&hlen, prefix, size, path))) goto done;
    if (size - 8 - hlen > SIZE_MAX) {
        s = soma__fail(SOMA_ERR_NOMEM, "%s: %" PRIu64 " bytes is too large for this machine",
                       path, size);
        goto done;
    }
    hdr = soma__malloc((size_t)hlen);
    if (!hdr) { s = SOMA_ERR_NOMEM; goto done; }
    if (fread(hdr, 1, (size_t)hlen, f) != hlen) {
        s = ferror(f) ? soma__fail(SOMA_ERR_IO, "%s: read failed: %s", path, strerror(errno))
                      : soma__fail(SOMA_ERR_FORMAT, "%s: truncated inside the header", path);
        goto done;
    }
    st = soma__calloc(1, sizeof *st);
    if (!st) { s = SOMA_ERR_NOMEM; goto done; }
    s = st_load(st, hdr, (size_t)hlen, size - 8 - hlen, NULL, f, path);
done:
    soma__free(hdr);
    fclose(f);
    if (s) { soma_st_free(st); return s; }
    *out = st;
    return SOMA_OK;
}

void soma_st_free(soma_st *st)
{
    if (!st) return;
    soma__free(st->entries);
    soma__free(st->meta);
    soma__free(st->strings);
    soma__free_aligned(st->data);
    soma__free(st);
}

int soma_st_count(const soma_st *st) { return st ? st->count : 0; }

const soma_st_tensor *soma_st_at(const soma_st *st, int i)
{
    if (!st || i < 0 || i >= st->count) return NULL;
    return &st->entries[i].t;
}

const soma_st_tensor *soma_st_find(const soma_st *st, const char *name)
{
    if (!st || !name) return NULL;
    int lo = 0, hi = st->count - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(name, st->entries[mid].t.name);
        if (!c) return &st->entries[mid].t;
        if (c < 0) hi = mid - 1;
        else lo = mid + 1;
    }
    return NULL;
}

const char *soma_st_meta(const soma_st *st, const char *key)
{
    if (!st || !key) return NULL;
    int lo = 0, hi = st->meta_count - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(key, st->meta[mid].key);
        if (!c) return st->meta[mid].value;
        if (c < 0) hi = mid - 1;
        else lo = mid + 1;
    }
    return NULL;
}

int soma_st_meta_count(const soma_st *st) { return st ? st->meta_count : 0; }

const char *soma_st_meta_key(const soma_st *st, int i)
{
    if (!st || i < 0 || i >= st->meta_count) return NULL;
    return st->meta[i].key;
}

/* ======================================================================== */
/* Writer                                                                    */
/* ======================================================================== */

typedef struct wr_tensor {
    char *name;
    soma_dtype dtype;
    int ndim;
    int64_t shape[SOMA_MAX_DIMS];
    void *data;
    size_t nbytes;
} wr_tensor;

typedef struct wr_meta { char *key, *value; } wr_meta;

struct soma_st_writer {
    wr_tensor *tensors;
    size_t count, cap;
    wr_meta *meta;
    size_t meta_count, meta_cap;
};

soma_status soma_st_writer_new(soma_st_writer **out)
{
    if (!out) return soma__fail(SOMA_ERR_ARG, "soma_st_writer_new: out is NULL");
    *out = soma__calloc(1, sizeof **out);
    return *out ? SOMA_OK : SOMA_ERR_NOMEM;
}

void soma_st_writer_free(soma_st_writer *w)
{
    if (!w) return;
    for (size_t i = 0; i < w->count; i++) {
        soma__free(w->tensors[i].name);
        soma__free(w->tensors[i].data);
    }
    for (size_t i = 0; i < w->meta_count; i++) {
        soma__free(w->meta[i].key);
        soma__free(w->meta[i].value);
    }
    soma__free(w->tensors);
    soma__free(w->meta);
    soma__free(w);
}

/* Makes room for one more element of size bytes in *items. */
static soma_status reserve(void **items, size_t *cap, size_t count, size_t size)
{
    if (count < *cap) return SOMA_OK;
    size_t nc = *cap ? *cap * 2 : 8;
    void *p = soma__realloc(*items, nc * size);
    if (!p) return SOMA_ERR_NOMEM;
    *items = p;
    *cap = nc;
    return SOMA_OK;
}

soma_status soma_st_writer_add(soma_st_writer *w, const char *name, soma_dtype dt,
                               int ndim, const int64_t *shape, const void *data)
{
    char q[96], sb[160];
    if (!w) return soma__fail(SOMA_ERR_ARG, "soma_st_writer_add: writer is NULL");
    if (!name || !*name) return soma__fail(SOMA_ERR_ARG, "soma_st_writer_add: empty tensor name");
    quote(q, sizeof q, name, strlen(name));
    if (!soma__utf8_valid(name, strlen(name)))
        return soma__fail(SOMA_ERR_ARG, "soma_st_writer_add: tensor name %s is not valid UTF-8", q);
    if (!strcmp(name, ST_META_KEY))
        return soma__fail(SOMA_ERR_ARG, "soma_st_writer_add: the name \"" ST_META_KEY
                          "\" is reserved for metadata");
    if ((unsigned)dt >= (unsigned)N_DTYPES)
        return soma__fail(SOMA_ERR_ARG, "soma_st_writer_add: tensor %s: unknown dtype %d", q, (int)dt);
    if (ndim < 0 || ndim > SOMA_MAX_DIMS)
        return soma__fail(SOMA_ERR_ARG, "soma_st_writer_add: tensor %s: ndim %d not in [0, %d]",
                          q, ndim, SOMA_MAX_DIMS);
    if (ndim && !shape)
        return soma__fail(SOMA_ERR_ARG, "soma_st_writer_add: tensor %s: shape is NULL", q);
    uint64_t numel = 1, size = dtypes[dt].size, cap = (uint64_t)INT64_MAX / size;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return soma__fail(SOMA_ERR_ARG, "soma_st_writer_add: tensor %s: negative dimension "
                              "in shape %s", q, format_shape(sb, sizeof sb, ndim, shape));
        if (shape[i] && numel > cap / (uint64_t)shape[i])
            return soma__fail(SOMA_ERR_ARG, "soma_st_writer_add: tensor %s: shape %s overflows",
                              q, format_shape(sb, sizeof sb, ndim, shape));
        numel *= (uint64_t)shape[i];
    }
    if (numel * size > SIZE_MAX)
        return soma__fail(SOMA_ERR_ARG, "soma_st_writer_add: tensor %s: too large", q);
    size_t nbytes = (size_t)(numel * size);
    if (nbytes && !data)
        return soma__fail(SOMA_ERR_ARG, "soma_st_writer_add: tensor %s: data is NULL", q);
    for (size_t i = 0; i < w->count; i++)
        if (!strcmp(w->tensors[i].name, name))
            return soma__fail(SOMA_ERR_ARG, "soma_st_writer_add: tensor %s added twice", q);

    void *items = w->tensors;
    soma_status s = reserve(&items, &w->cap, w->count, sizeof *w->tensors);
    w->tensors = items;
    if (s) return s;
    wr_tensor t = { 0 };
    t.name = soma__strdup(name);
    t.data = soma__malloc(nbytes);
    if (!t.name || !t.data) {
        soma__free(t.name);
        soma__free(t.data);
        return SOMA_ERR_NOMEM;
    }
    if (nbytes) memcpy(t.data, data, nbytes);
    t.dtype = dt;
    t.ndim = ndim;
    for (int i = 0; i < SOMA_MAX_DIMS; i++) t.shape[i] = i < ndim ? shape[i] : 1;
    t.nbytes = nbytes;
    w->tensors[w->count++] = t;
    return SOMA_OK;
}

soma_status soma_st_writer_meta(soma_st_writer *w, const char *key, const char *value)
{
    char q[96];
    if (!w) return soma__fail(SOMA_ERR_ARG, "soma_st_writer_meta: writer is NULL");
    if (!key || !value)
        return soma__fail(SOMA_ERR_ARG, "soma_st_writer_meta: %s is NULL", key ? "value" : "key");
    quote(q, sizeof q, key, strlen(key));
    if (!soma__utf8_valid(key, strlen(key)) || !soma__utf8_valid(value, strlen(value)))
        return soma__fail(SOMA_ERR_ARG, "soma_st_writer_meta: key or value of %s is not valid "
                          "UTF-8", q);
    char *v = soma__strdup(value);
    if (!v) return SOMA_ERR_NOMEM;
    for (size_t i = 0; i < w->meta_count; i++)
        if (!strcmp(w->meta[i].key, key)) { /* a later value replaces an earlier one */
            soma__free(w->meta[i].value);
            w->meta[i].value = v;
            return SOMA_OK;
        }
    void *items = w->meta;
    soma_status s = reserve(&items, &w->meta_cap, w->meta_count, sizeof *w->meta);
    w->meta = items;
    char *k = s ? NULL : soma__strdup(key);
    if (!k) { soma__free(v); return s ? s : SOMA_ERR_NOMEM; }
    w->meta[w->meta_count].key = k;
    w->meta[w->meta_count].value = v;
    w->meta_count++;
    return SOMA_OK;
}

static int wr_by_name(const void *a, const void *b)
{
    return strcmp(((const wr_tensor *)a)->name, ((const wr_tensor *)b)->name);
}

static int wr_meta_by_key(const void *a, const void *b)
{
    return strcmp(((const wr_meta *)a)->key, ((const wr_meta *)b)->key);
}

/* Header text builder: with p == NULL it only counts, so one function both
 * sizes and fills the buffer. */
typedef struct text { char *p; size_t len, cap; } text;

static void put(text *t, const char *s, size_t n)
{
    if (t->p) memcpy(t->p + t->len, s, n);
    t->len += n;
}
static void put_str(text *t, const char *s) { put(t, s, strlen(s)); }
static void put_json_string(text *t, const char *s)
{
    if (t->p) t->len += soma__json_escape(t->p + t->len, t->cap - t->len, s, strlen(s));
    else t->len += soma__json_escape(NULL, 0, s, strlen(s));
}
static void put_i64(text *t, int64_t v)
{
    char b[32];
    put(t, b, (size_t)snprintf(b, sizeof b, "%" PRId64, v));
}

/* The header JSON, then spaces up to a multiple of 8. */
static void header_text(text *t, const soma_st_writer *w)
{
    int first = 1;
    put_str(t, "{");
    if (w->meta_count) {
        put_str(t, "\"" ST_META_KEY "\":{");
        for (size_t i = 0; i < w->meta_count; i++) {
            if (i) put_str(t, ",");
            put_json_string(t, w->meta[i].key);
            put_str(t, ":");
            put_json_string(t, w->meta[i].value);
        }
        put_str(t, "}");
        first = 0;
    }
    uint64_t off = 0;
    for (size_t i = 0; i < w->count; i++) {
        const wr_tensor *x = &w->tensors[i];
        if (!first) put_str(t, ",");
        first = 0;
        put_json_string(t, x->name);
        put_str(t, ":{\"dtype\":\"");
        put_str(t, dtypes[x->dtype].name);
        put_str(t, "\",\"shape\":[");
        for (int d = 0; d < x->ndim; d++) {
            if (d) put_str(t, ",");
            put_i64(t, x->shape[d]);
        }
        put_str(t, "],\"data_offsets\":[");
        put_i64(t, (int64_t)off);
        put_str(t, ",");
        off += x->nbytes;
        put_i64(t, (int64_t)off);
        put_str(t, "]}");
    }
    put_str(t, "}");
    while (t->len % 8) put_str(t, " ");
}

/* The directory holding path, for the fsync that makes the rename durable. */
static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash) return soma__strdup(".");
    size_t n = slash == path ? 1 : (size_t)(slash - path);
    char *d = soma__malloc(n + 1);
    if (d) { memcpy(d, path, n); d[n] = 0; }
    return d;
}

soma_status soma_st_writer_save(soma_st_writer *w, const char *path)
{
    if (!w) return soma__fail(SOMA_ERR_ARG, "soma_st_writer_save: writer is NULL");
    if (!path || !*path) return soma__fail(SOMA_ERR_ARG, "soma_st_writer_save: empty path");

    if (w->count) qsort(w->tensors, w->count, sizeof *w->tensors, wr_by_name);
    if (w->meta_count) qsort(w->meta, w->meta_count, sizeof *w->meta, wr_meta_by_key);
    text t = { NULL, 0, 0 };
    header_text(&t, w);
    if (t.len > ST_MAX_HEADER)
        return soma__fail(SOMA_ERR_ARG, "%s: the header would be %zu bytes, over the 100 MiB "
                          "limit readers accept", path, t.len);
    t.cap = t.len + 1; /* the escaper writes a NUL after each string */
    t.p = soma__malloc(t.cap);
    char *tmp = soma__malloc(strlen(path) + 5);
    char *dir = dir_of(path);
    soma_status s = SOMA_OK;
    FILE *f = NULL;
    int created = 0, err = 0;
    if (!t.p || !tmp || !dir) { s = SOMA_ERR_NOMEM; goto done; }
    t.len = 0;
    header_text(&t, w);
    memcpy(tmp, path, strlen(path));
    memcpy(tmp + strlen(path), ".tmp", 5);

    f = fopen(tmp, "wb");
    if (!f) {
        s = soma__fail(SOMA_ERR_IO, "%s: cannot create %s: %s", path, tmp, strerror(errno));
        goto done;
    }
    created = 1;
    uint8_t prefix[8];
    for (int i = 0; i < 8; i++) prefix[i] = (uint8_t)((uint64_t)t.len >> (8 * i));
    int ok = fwrite(prefix, 1, 8, f) == 8 && fwrite(t.p, 1, t.len, f) == t.len;
    for (size_t i = 0; ok && i < w->count; i++)
        ok = fwrite(w->tensors[i].data, 1, w->tensors[i].nbytes, f) == w->tensors[i].nbytes;
    /* Data must be on disk before the rename publishes it, or a crash
     * could leave the new name pointing at a torn file. */
    if (!ok || fflush(f) || fsync(fileno(f))) {
        err = errno;
        s = soma__fail(SOMA_ERR_IO, "%s: cannot write %s: %s", path, tmp, strerror(err));
        goto done;
    }
    int rc = fclose(f);
    f = NULL;
    if (rc) {
        s = soma__fail(SOMA_ERR_IO, "%s: cannot close %s: %s", path, tmp, strerror(errno));
        goto done;
    }
    if (rename(tmp, path)) {
        s = soma__fail(SOMA_ERR_IO, "%s: cannot rename %s over it: %s", path, tmp, strerror(errno));
        goto done;
    }
    created = 0;
    /* Make the rename itself durable.  Some filesystems cannot fsync a
     * directory (EINVAL); the file is in place either way. */
    int dfd = open(dir, O_RDONLY);
    if (dfd < 0 || (fsync(dfd) && errno != EINVAL)) {
        err = errno;
        s = soma__fail(SOMA_ERR_IO, "%s: written, but cannot sync directory %s: %s", path, dir,
                       strerror(err));
    }
    if (dfd >= 0) close(dfd);
done:
    if (f) fclose(f);
    if (created) remove(tmp);
    soma__free(t.p);
    soma__free(tmp);
    soma__free(dir);
    return s;
}
