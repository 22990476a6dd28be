/*
 * nmnist.c - the N-MNIST dataset (Orchard et al. 2015): listings of
 * (sample, label), one event file per sample (read by events.c), binned at
 * load time into T frames of bytes.
 *
 * Directory layout (shared/data/nmnist-subset, which `make data` links as
 * data/nmnist):
 *   train1K.txt, test100.txt  a '#' header line, then "<id>\t<label>" lines
 *                             (CRLF in the subset; LF and spaces work too)
 *   <id>.bs2                  one sample in the N-MNIST 40-bit event format
 *   SHA256SUMS                sha256sum's output for every file (verify)
 * A <sample> token holding '.' or '/' is taken as a path relative to dir
 * instead of an id, so a listing can also name files laid out as the
 * official Train/<label>/<n>.bin.
 *
 * Storage: sample i is (T, 2, 34, 34) bytes, frame t contiguous, exactly as
 * soma_events_to_frames lays it out: the events counted in T equal bins of
 * the sample's own span [first, last event], clipped at 255 (N-MNIST has
 * ~4000 events per sample, so clipping is for safety, not in practice), or
 * 0/1 presence.  The dataset is raw: the loader yields the counts as they
 * are.  mean 0 and std 1/255 are recorded as well, the values for which
 * the image formula (v/255 - mean)/std would give the same numbers.
 * 1000 samples at T = 10 take 23 MB.
 *
 * Verification hashes the bytes that are then parsed (each file is read
 * once), against the folder's own SHA256SUMS rather than a table in
 * checksums.c: 1100 entries belong with the data, and the same code checks
 * any listing-plus-files folder that ships a SHA256SUMS.
 */
#include "../soma_internal.h"
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum {
    NM_SIZE = 34,                        /* 28x28 digits plus the saccades' shift */
    NM_SAMPLE = 2 * NM_SIZE * NM_SIZE,   /* bytes per frame: polarity x y x x */
    /* c*h*w = 2T*34*34 is an int in soma_dataset (and its subset views). */
    NM_T_MAX = INT_MAX / NM_SAMPLE,
    PATH_CAP = 4096,
};
#define TEXT_MAX_BYTES ((size_t)64 << 20)     /* listings, SHA256SUMS */
#define EVENTS_MAX_BYTES ((size_t)256 << 20)  /* as events.c */

/* ---- SHA256SUMS ----------------------------------------------------------- */

typedef struct sum_entry { const char *name; unsigned char digest[32]; } sum_entry;

typedef struct sums {
    char       path[PATH_CAP];
    uint8_t   *text;     /* the file; names point into it */
    sum_entry *e;        /* sorted by name */
    size_t     n;
} sums;

static int hex_value(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static void to_hex(char hex[65], const unsigned char d[32])
{
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        hex[2 * i] = digits[d[i] >> 4];
        hex[2 * i + 1] = digits[d[i] & 15];
    }
    hex[64] = 0;
}

static int cmp_entry(const void *a, const void *b)
{
    return strcmp(((const sum_entry *)a)->name, ((const sum_entry *)b)->name);
}

/* "./a.bs2" and "a.bs2" name the same file. */
static const char *plain_name(const char *name)
{
    while (name[0] == '.' && name[1] == '/') name += 2;
    return name;
}

/* Splits text (NUL-terminated) into lines in place: *next is the line after
 * the returned one (NULL at the end); a trailing '\r' is removed. */
static char *next_line(char **next)
{
    char *line = *next;
    if (!line) return NULL;
    char *nl = strchr(line, '\n');
    if (nl) { *nl = 0; *next = nl + 1; }
    else *next = NULL;
    size_t len = strlen(line);
    if (len && line[len - 1] == '\r') line[len - 1] = 0;
    return line;
}

static size_t count_lines(const char *text)
{
    size_t n = 1;
    for (const char *p = text; (p = strchr(p, '\n')); p++) n++;
    return n;
}

static void sums_free(sums *s)
{
    soma__free(s->text);
    soma__free(s->e);
    s->text = NULL;
    s->e = NULL;
    s->n = 0;
}

/* Reads dir/SHA256SUMS: "<64 hex> <space or *><name>" lines, as sha256sum
 * writes them in text or binary mode; '#' lines and blank lines skipped. */
static soma_status sums_load(sums *s, const char *dir)
{
    int len = snprintf(s->path, sizeof s->path, "%s/SHA256SUMS", dir);
    if (len < 0 || (size_t)len >= sizeof s->path)
        return soma__fail(SOMA_ERR_ARG, "%s/SHA256SUMS: path too long", dir);
    size_t n = 0;
    soma_status st = soma__read_file(s->path, TEXT_MAX_BYTES, &s->text, &n);
    if (st) return st;
    s->text[n] = 0;   /* soma__read_file leaves a spare byte */
    if (strlen((const char *)s->text) != n)
        return soma__fail(SOMA_ERR_FORMAT, "%s: contains a NUL byte (not a checksum list)", s->path);
    s->e = soma__malloc(count_lines((const char *)s->text) * sizeof *s->e);
    if (!s->e) return SOMA_ERR_NOMEM;
    char *next = (char *)s->text, *line;
    for (int lineno = 1; (line = next_line(&next)); lineno++) {
        if (!line[0] || line[0] == '#') continue;
        sum_entry *e = &s->e[s->n];
        int ok = strlen(line) > 66 && line[64] == ' ' && (line[65] == ' ' || line[65] == '*');
        for (int i = 0; ok && i < 32; i++) {
            int hi = hex_value((unsigned char)line[2 * i]), lo = hex_value((unsigned char)line[2 * i + 1]);
            ok = hi >= 0 && lo >= 0;
            e->digest[i] = (unsigned char)(hi * 16 + lo);
        }
        if (!ok)
            return soma__fail(SOMA_ERR_FORMAT, "%s:%d: expected '<64 hex digits>  <file name>', "
                              "got '%.80s'", s->path, lineno, line);
        e->name = plain_name(line + 66);
        s->n++;
    }
    qsort(s->e, s->n, sizeof *s->e, cmp_entry);
    return SOMA_OK;
}

/* Checks the bytes of dir/rel (read from path) against the list. */
static soma_status sums_check(const sums *s, const char *rel, const char *path,
                              const uint8_t *buf, size_t len)
{
    sum_entry key = {.name = plain_name(rel)};
    const sum_entry *e = s->n ? bsearch(&key, s->e, s->n, sizeof *s->e, cmp_entry) : NULL;
    if (!e) return soma__fail(SOMA_ERR_CHECKSUM, "%s: not listed in %s", path, s->path);
    unsigned char d[32];
    soma_sha256(buf, len, d);
    if (!memcmp(d, e->digest, 32)) return SOMA_OK;
    char got[65], want[65];
    to_hex(got, d);
    to_hex(want, e->digest);
    return soma__fail(SOMA_ERR_CHECKSUM, "%s: SHA-256 %s, expected %s (%s)", path, got, want,
                      s->path);
}

/* ---- listings ------------------------------------------------------------- */

typedef struct listed { const char *sample; int32_t label; int line; } listed;

typedef struct listing {
    uint8_t *text;     /* the file; samples point into it */
    listed  *item;
    int      n;
} listing;

static void listing_free(listing *L)
{
    soma__free(L->text);
    soma__free(L->item);
    L->text = NULL;
    L->item = NULL;
    L->n = 0;
}

static int is_blank(char c) { return c == ' ' || c == '\t'; }

/* Reads "<sample> <label>" lines (tabs or spaces; '#' lines and blank lines
 * skipped).  With vs, the listing itself is checked first (as rel). */
static soma_status listing_load(listing *L, const char *path, const char *rel, const sums *vs)
{
    size_t n = 0;
    soma_status st = soma__read_file(path, TEXT_MAX_BYTES, &L->text, &n);
    if (st) return st;
    if (vs && (st = sums_check(vs, rel, path, L->text, n))) return st;
    L->text[n] = 0;
    if (strlen((const char *)L->text) != n)
        return soma__fail(SOMA_ERR_FORMAT, "%s: contains a NUL byte (not a listing)", path);
    size_t cap = count_lines((const char *)L->text);
    if (cap > INT_MAX)
        return soma__fail(SOMA_ERR_FORMAT, "%s: more than %d lines", path, INT_MAX);
    L->item = soma__malloc(cap * sizeof *L->item);
    if (!L->item) return SOMA_ERR_NOMEM;
    char *next = (char *)L->text, *line;
    for (int lineno = 1; (line = next_line(&next)); lineno++) {
        char *p = line;
        while (is_blank(*p)) p++;
        if (!*p || *p == '#') continue;
        char *sample = p;
        while (*p && !is_blank(*p)) p++;
        char *sample_end = p;
        while (is_blank(*p)) p++;
        char *label = p;
        while (*p && !is_blank(*p)) p++;
        char *label_end = p;
        while (is_blank(*p)) p++;
        if (label == label_end || *p)
            return soma__fail(SOMA_ERR_FORMAT, "%s:%d: expected '<sample> <label>', got '%.80s'",
                              path, lineno, line);
        *sample_end = 0;
        *label_end = 0;
        if (label_end - label != 1 || label[0] < '0' || label[0] > '9')
            return soma__fail(SOMA_ERR_FORMAT, "%s:%d: label '%.40s' of sample %.80s is not a "
                              "class 0..9", path, lineno, label, sample);
        L->item[L->n++] = (listed){.sample = sample, .label = label[0] - '0', .line = lineno};
    }
    if (L->n == 0) return soma__fail(SOMA_ERR_FORMAT, "%s: no samples listed", path);
    return SOMA_OK;
}

/* The file of a listed sample, relative to dir: an id names <id>.bs2. */
static soma_status sample_name(char *rel, size_t cap, const char *sample)
{
    int len = strpbrk(sample, "./") ? snprintf(rel, cap, "%s", sample)
                                    : snprintf(rel, cap, "%s.bs2", sample);
    if (len < 0 || (size_t)len >= cap)
        return soma__fail(SOMA_ERR_ARG, "sample '%.80s': name too long", sample);
    return SOMA_OK;
}

/* Appends where a failing sample was listed to the last error message. */
static soma_status listed_at(soma_status st, const char *listing_path, int line)
{
    if (st == SOMA_ERR_NOMEM) return st;
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", soma_last_error());
    return soma__fail(st, "%s (listed at %s:%d)", msg, listing_path, line);
}

/* ---- one split -------------------------------------------------------------- */

static soma_status load_split(soma_dataset **out, const char *dir, const char *listing_name,
                              int T, int binary, const sums *vs)
{
    char lpath[PATH_CAP], rel[PATH_CAP], path[PATH_CAP];
    int len = snprintf(lpath, sizeof lpath, "%s/%s", dir, listing_name);
    if (len < 0 || (size_t)len >= sizeof lpath)
        return soma__fail(SOMA_ERR_ARG, "%s/%s: path too long", dir, listing_name);
    listing L = {0};
    soma_dataset *ds = NULL;
    float *frames = NULL;
    const size_t per = (size_t)T * NM_SAMPLE;   /* <= INT_MAX: T <= NM_T_MAX */
    soma_status st = listing_load(&L, lpath, listing_name, vs);
    if (st) goto done;
    if ((size_t)L.n > SIZE_MAX / per) {
        st = soma__fail(SOMA_ERR_ARG, "%s: %d samples of %zu bytes do not fit in memory", lpath,
                        L.n, per);
        goto done;
    }
    ds = soma__calloc(1, sizeof *ds);
    if (ds) {
        ds->owns = 1;
        ds->pixels = soma__malloc((size_t)L.n * per);
        ds->labels = ds->pixels ? soma__malloc((size_t)L.n * sizeof *ds->labels) : NULL;
        frames = ds->labels ? soma__malloc(per * sizeof *frames) : NULL;
    }
    if (!frames) { st = SOMA_ERR_NOMEM; goto done; }

    for (int i = 0; i < L.n; i++) {
        if ((st = sample_name(rel, sizeof rel, L.item[i].sample))) goto done;
        len = snprintf(path, sizeof path, "%s/%s", dir, rel);
        if (len < 0 || (size_t)len >= sizeof path) {
            st = soma__fail(SOMA_ERR_ARG, "%s/%s: path too long", dir, rel);
            goto done;
        }
        uint8_t *buf = NULL;
        size_t nbytes = 0, nev = 0;
        soma_event *ev = NULL;
        st = soma__read_file(path, EVENTS_MAX_BYTES, &buf, &nbytes);
        if (!st && vs) st = sums_check(vs, rel, path, buf, nbytes);
        if (!st) st = soma_nmnist_parse(&ev, &nev, buf, nbytes, path, NM_SIZE, NM_SIZE);
        soma__free(buf);
        /* t1 <= t0: the sample's own span, so every event lands in a frame. */
        if (!st) st = soma_events_to_frames(frames, ev, nev, T, NM_SIZE, NM_SIZE, 0, 0, binary);
        soma_events_free(ev);
        if (st) { st = listed_at(st, lpath, L.item[i].line); goto done; }
        uint8_t *px = ds->pixels + (size_t)i * per;
        for (size_t k = 0; k < per; k++) px[k] = frames[k] >= 255.0f ? 255 : (uint8_t)frames[k];
        ds->labels[i] = L.item[i].label;
    }
    snprintf(ds->name, sizeof ds->name, "nmnist");
    ds->n = L.n;
    ds->c = 2 * T;
    ds->h = NM_SIZE;
    ds->w = NM_SIZE;
    ds->classes = 10;
    for (int ch = 0; ch < 3; ch++) {
        ds->mean[ch] = 0.0f;
        ds->std[ch] = 1.0f / 255.0f;
    }
    ds->raw = 1;
done:
    soma__free(frames);
    listing_free(&L);
    if (st) { soma_dataset_free(ds); return st; }
    *out = ds;
    return SOMA_OK;
}

soma_status soma_dataset_open_nmnist(soma_dataset **train, soma_dataset **test, const char *dir,
                                     int T, int binary, int verify)
{
    if (train) *train = NULL;
    if (test) *test = NULL;
    if (!dir) return soma__fail(SOMA_ERR_ARG, "soma_dataset_open_nmnist: dir must not be NULL");
    if (!train && !test)
        return soma__fail(SOMA_ERR_ARG, "soma_dataset_open_nmnist: train and test are both NULL");
    if (T <= 0) return soma__fail(SOMA_ERR_ARG, "nmnist: T must be > 0, got %d", T);
    if (T > NM_T_MAX)
        return soma__fail(SOMA_ERR_ARG, "nmnist: T must be at most %d (2T x 34 x 34 bytes per "
                          "sample), got %d", (int)NM_T_MAX, T);
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return soma__fail(SOMA_ERR_IO, "%s: no such directory (dataset 'nmnist'; `make data` "
                          "links data/nmnist to ../shared/data/nmnist-subset when present)", dir);
    sums s = {.text = NULL};
    soma_dataset *tr = NULL, *te = NULL;
    soma_status st = verify ? sums_load(&s, dir) : SOMA_OK;
    if (!st && train) st = load_split(&tr, dir, "train1K.txt", T, binary, verify ? &s : NULL);
    if (!st && test) st = load_split(&te, dir, "test100.txt", T, binary, verify ? &s : NULL);
    sums_free(&s);
    if (st) {
        soma_dataset_free(tr);
        soma_dataset_free(te);
        return st;
    }
    if (train) *train = tr;
    if (test) *test = te;
    return SOMA_OK;
}
