/*
 * test_safetensors.c - the safetensors reader/writer and the JSON parser
 * under it.
 *
 * Covers: JSON edge cases (escapes, surrogates, numbers, limits); writer ->
 * reader round trips of every dtype, a scalar, a zero-size tensor and an
 * odd-sized U8 tensor that misaligns its neighbours in the file; deterministic
 * bytes; a file written by Python (refs/st_fixture.py); one malformed input per
 * rule the reader enforces, each checked for SOMA_ERR_FORMAT and a telling
 * message; atomic save; and fault injection over every allocation of the
 * writer and the reader (run under ASan for the leak check).
 *
 * Files are written under a fresh directory in $TMPDIR (default /tmp);
 * fixtures are read from $SOMA_FIXTURES (default tests/fixtures, so run
 * from the repository root).  When /usr/bin/python3 exists, a checkpoint
 * written here is also validated by tests/st_check.py.
 */
#include "check.h"
#include "soma_internal.h"
#include "io/json.h"

#include <dirent.h>
#include <stdarg.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

/* CHECK with a printf-style explanation printed on failure; returns ok. */
static int check_msg(int ok, const char *what, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int check_msg(int ok, const char *what, const char *file, int line, const char *fmt, ...)
{
    if (check_true(ok, what, file, line)) return 1;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "  ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    return 0;
}
#define CHECK_MSG(cond, ...) check_msg(!!(cond), #cond, __FILE__, __LINE__, __VA_ARGS__)

static char tmpdir[512];

static void path_in_tmp(char *buf, size_t cap, const char *leaf)
{
    snprintf(buf, cap, "%s/%s", tmpdir, leaf);
}

static int file_exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}

static uint8_t *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(len > 0 ? (size_t)len : 1);
    *n = fread(b, 1, (size_t)len, f);
    fclose(f);
    return b;
}

static int write_bytes(const char *path, const void *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    int ok = fwrite(b, 1, n, f) == n;
    return fclose(f) == 0 && ok;
}

/* Number of entries in tmpdir whose name ends with ".tmp". */
static int count_tmp_files(void)
{
    DIR *d = opendir(tmpdir);
    struct dirent *e;
    int n = 0;
    if (!d) return -1;
    while ((e = readdir(d))) {
        size_t k = strlen(e->d_name);
        if (k >= 4 && !strcmp(e->d_name + k - 4, ".tmp")) n++;
    }
    closedir(d);
    return n;
}

/* ======================================================================== */
/* JSON                                                                      */
/* ======================================================================== */

static void json_ok(const char *text, soma__json **out)
{
    soma_status s = soma__json_parse(out, text, strlen(text), "t");
    CHECK_MSG(s == SOMA_OK, "parse of %s failed: %s", text, soma_last_error());
}

static void json_bad(const char *text, size_t n, const char *want)
{
    soma__json *j = (soma__json *)1;
    soma_status s = soma__json_parse(&j, text, n, "cfg.json");
    CHECK_MSG(s == SOMA_ERR_FORMAT && j == NULL, "%.40s: status %d, want FORMAT", text, s);
    CHECK_MSG(strstr(soma_last_error(), want) && strstr(soma_last_error(), "cfg.json") &&
              strstr(soma_last_error(), "at byte"),
              "%.40s: message \"%s\" lacks \"%s\"", text, soma_last_error(), want);
}

static void test_json(void)
{
    soma__json *j = NULL;
    json_ok(" {\"a\": [1, -2, 3.5e2, true, false, null, \"x\"], \"b\": {}, \"c\": []} ", &j);
    if (j) {
        const soma__json *a = soma__json_get(j, "a");
        CHECK(j->type == SOMA__JSON_OBJECT && j->length == 3);
        CHECK(a && a->type == SOMA__JSON_ARRAY && a->length == 7);
        if (a && a->length == 7) {
            CHECK(a->items[0].is_integer && a->items[0].integer == 1);
            CHECK(a->items[1].is_integer && a->items[1].integer == -2);
            CHECK(!a->items[2].is_integer && a->items[2].number == 350.0);
            CHECK(a->items[3].type == SOMA__JSON_BOOL && a->items[3].boolean == 1);
            CHECK(a->items[4].type == SOMA__JSON_BOOL && a->items[4].boolean == 0);
            CHECK(a->items[5].type == SOMA__JSON_NULL);
            CHECK(a->items[6].type == SOMA__JSON_STRING && !strcmp(a->items[6].string, "x"));
        }
        CHECK(soma__json_get(j, "b") && soma__json_get(j, "b")->type == SOMA__JSON_OBJECT);
        CHECK(soma__json_get(j, "zz") == NULL);
        CHECK(soma__json_get(soma__json_get(j, "a"), "a") == NULL); /* not an object */
    }
    soma__json_free(j);

    /* Escapes, \u to UTF-8 (1, 2, 3 bytes and a surrogate pair), raw UTF-8. */
    json_ok("\"q\\\"b\\\\s\\/\\b\\f\\n\\r\\t\\u0041\\u00e9\\u20AC\\ud83d\\ude00\xc3\xbc\"", &j);
    if (j) {
        const char want[] = "q\"b\\s/\b\f\n\r\tA\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xc3\xbc";
        CHECK(j->length == sizeof want - 1 && !memcmp(j->string, want, sizeof want));
    }
    soma__json_free(j);
    json_ok("\"a\\u0000b\"", &j); /* embedded NUL is kept, with its length */
    if (j) CHECK(j->length == 3 && j->string[1] == 0 && j->string[2] == 'b');
    soma__json_free(j);

    /* Integers at the int64 edges stay exact; beyond them only the double. */
    json_ok("[9223372036854775807, -9223372036854775808, 9223372036854775808, 0, -0]", &j);
    if (j && j->length == 5) {
        CHECK(j->items[0].is_integer && j->items[0].integer == INT64_MAX);
        CHECK(j->items[1].is_integer && j->items[1].integer == INT64_MIN);
        CHECK(!j->items[2].is_integer && j->items[2].number == 9223372036854775808.0);
        CHECK(j->items[3].is_integer && j->items[3].integer == 0);
        CHECK(j->items[4].is_integer && j->items[4].integer == 0);
    }
    soma__json_free(j);
    json_ok("[1e-400, 0.5, -1.25E+1]", &j); /* underflow rounds to 0, allowed */
    if (j && j->length == 3) CHECK(j->items[1].number == 0.5 && j->items[2].number == -12.5);
    soma__json_free(j);

    /* Many members take the sorted duplicate check. */
    char big[4096];
    size_t k = (size_t)snprintf(big, sizeof big, "{");
    for (int i = 0; i < 100; i++)
        k += (size_t)snprintf(big + k, sizeof big - k, "%s\"k%d\":%d", i ? "," : "", i, i);
    snprintf(big + k, sizeof big - k, "}");
    json_ok(big, &j);
    if (j) CHECK(j->length == 100 && soma__json_get(j, "k99")->integer == 99);
    soma__json_free(j);
    memcpy(strstr(big, "\"k57\""), "\"k12\"", 5);
    json_bad(big, strlen(big), "duplicate key \"k12\"");

    json_bad("", 0, "expected a value");
    json_bad("{\"a\":1,}", 8, "trailing comma");
    json_bad("[1,]", 4, "trailing comma");
    json_bad("[1 2]", 5, "expected ',' or ']'");
    json_bad("{\"a\" 1}", 7, "expected ':'");
    json_bad("{1:2}", 5, "expected a string key");
    json_bad("{\"a\":1,\"a\":2}", 13, "duplicate key \"a\"");
    json_bad("01", 2, "leading zero");
    json_bad("1.", 2, "digit after '.'");
    json_bad("1e", 2, "exponent");
    json_bad("-", 1, "expected a digit");
    json_bad("1e400", 5, "out of range");
    json_bad("NaN", 3, "expected a value");
    json_bad("tru", 3, "invalid literal");
    json_bad("\"abc", 4, "unterminated string");
    json_bad("\"a\\", 3, "unterminated string");
    json_bad("\"\\x\"", 4, "invalid escape");
    json_bad("\"\\u12G4\"", 8, "four hex digits");
    json_bad("\"\\u12\"", 6, "four hex digits");
    json_bad("\"\\ud800\"", 8, "not followed by a low surrogate");
    json_bad("\"\\ud800\\u0041\"", 14, "not followed by a low surrogate");
    json_bad("\"\\udc00\"", 8, "lone low surrogate");
    json_bad("\"a\nb\"", 5, "control character");
    json_bad("\"\xc0\xaf\"", 4, "UTF-8");         /* overlong '/' */
    json_bad("\"\xed\xa0\x80\"", 5, "UTF-8");     /* encoded surrogate */
    json_bad("\"\xf4\x90\x80\x80\"", 6, "UTF-8"); /* above U+10FFFF */
    json_bad("\"\xe2\x82\"", 4, "UTF-8");         /* cut short */
    json_bad("{} x", 4, "after the JSON value");
    json_bad("[1]\0", 4, "after the JSON value"); /* the length, not NUL, ends input */

    char deep[200];
    memset(deep, '[', 65);
    memset(deep + 65, ']', 65);
    json_bad(deep, 130, "nested deeper than 64");
    json_ok("[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[" /* 64 */
            "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]", &j);
    soma__json_free(j);

    /* Escaper: snprintf-like sizing, truncation, control characters. */
    char buf[64];
    const char raw[] = "a\"b\\c\n\x01\xc3\xa9";
    size_t need = soma__json_escape(NULL, 0, raw, sizeof raw - 1);
    CHECK(need == strlen("\"a\\\"b\\\\c\\n\\u0001\xc3\xa9\""));
    CHECK(soma__json_escape(buf, sizeof buf, raw, sizeof raw - 1) == need);
    CHECK(!strcmp(buf, "\"a\\\"b\\\\c\\n\\u0001\xc3\xa9\""));
    CHECK(soma__json_escape(buf, 4, raw, sizeof raw - 1) == need && !strcmp(buf, "\"a\\"));
    soma__json_escape(buf, sizeof buf, raw, sizeof raw - 1);
    if (soma__json_parse(&j, buf, strlen(buf), "t") == SOMA_OK) {
        CHECK(j->length == sizeof raw - 1 && !memcmp(j->string, raw, sizeof raw));
        soma__json_free(j);
    } else CHECK(0);
    FILE *f = tmpfile();
    if (CHECK(f != NULL)) {
        CHECK(soma__json_write_string(f, raw, sizeof raw - 1) == 0);
        rewind(f);
        char back[64] = { 0 };
        CHECK(fread(back, 1, sizeof back - 1, f) == need);
        soma__json_escape(buf, sizeof buf, raw, sizeof raw - 1);
        CHECK(!strcmp(back, buf));
        fclose(f);
    }
    CHECK(soma__utf8_valid("caf\xc3\xa9", 5) && !soma__utf8_valid("\xff", 1));
}

/* ======================================================================== */
/* Round trip                                                                */
/* ======================================================================== */

static float f32v[6] = { 1.5f, -2.25f, 3.0f, 0.0f, -0.0f, 1e-30f };
static int32_t i32v[4] = { 0, -1, INT32_MAX, INT32_MIN };
static int64_t i64v[4] = { INT64_MIN, -5, 7, INT64_MAX };
static uint8_t u8v[5] = { 0, 1, 127, 128, 255 };
static double f64v[2] = { 3.141592653589793, -1e300 };
static float scalar = 42.5f;

/* Adds the round-trip tensors to w, in an order given by rev. */
static soma_status add_all(soma_st_writer *w, int rev)
{
    const int64_t s_w[2] = { 2, 3 }, s_i[1] = { 4 }, s_l[2] = { 2, 2 }, s_u[1] = { 5 },
                  s_d[4] = { 1, 1, 1, 2 }, s_e[2] = { 0, 3 };
    soma_status s = SOMA_OK;
    for (int k = 0; k < 7 && !s; k++) {
        switch (rev ? 6 - k : k) {
        case 0: s = soma_st_writer_add(w, "layer0.weight", SOMA_F32, 2, s_w, f32v); break;
        case 1: s = soma_st_writer_add(w, "idx", SOMA_I32, 1, s_i, i32v); break;
        case 2: s = soma_st_writer_add(w, "step", SOMA_I64, 2, s_l, i64v); break;
        case 3: s = soma_st_writer_add(w, "bytes", SOMA_U8, 1, s_u, u8v); break;
        case 4: s = soma_st_writer_add(w, "conv", SOMA_F64, 4, s_d, f64v); break;
        case 5: s = soma_st_writer_add(w, "lr", SOMA_F32, 0, NULL, &scalar); break;
        case 6: s = soma_st_writer_add(w, "empty", SOMA_F32, 2, s_e, NULL); break;
        }
    }
    if (!s) s = soma_st_writer_meta(w, "format", "soma-checkpoint");
    if (!s) s = soma_st_writer_meta(w, "note", "quote \" backslash \\ newline\n caf\xc3\xa9");
    if (!s) s = soma_st_writer_meta(w, "format", "soma-checkpoint v1"); /* replaces */
    return s;
}

static void check_tensor(const soma_st *st, const char *name, soma_dtype dt, int ndim,
                         const int64_t *shape, const void *data, size_t nbytes)
{
    const soma_st_tensor *t = soma_st_find(st, name);
    if (!CHECK_MSG(t != NULL, "tensor %s missing", name)) return;
    CHECK_MSG(!strcmp(t->name, name) && t->dtype == dt && t->ndim == ndim &&
              t->nbytes == nbytes, "tensor %s header differs", name);
    for (int i = 0; i < ndim; i++) CHECK_MSG(t->shape[i] == shape[i], "%s shape[%d]", name, i);
    for (int i = ndim; i < SOMA_MAX_DIMS; i++) CHECK(t->shape[i] == 1);
    CHECK_MSG(((uintptr_t)t->data % 64) == 0, "%s data not 64-byte aligned", name);
    CHECK_MSG(nbytes == 0 || !memcmp(t->data, data, nbytes), "%s data differs", name);
}

static void check_round_trip(const soma_st *st)
{
    const int64_t s_w[2] = { 2, 3 }, s_i[1] = { 4 }, s_l[2] = { 2, 2 }, s_u[1] = { 5 },
                  s_d[4] = { 1, 1, 1, 2 }, s_e[2] = { 0, 3 };
    CHECK(soma_st_count(st) == 7);
    check_tensor(st, "layer0.weight", SOMA_F32, 2, s_w, f32v, sizeof f32v);
    check_tensor(st, "idx", SOMA_I32, 1, s_i, i32v, sizeof i32v);
    check_tensor(st, "step", SOMA_I64, 2, s_l, i64v, sizeof i64v);
    check_tensor(st, "bytes", SOMA_U8, 1, s_u, u8v, sizeof u8v);
    check_tensor(st, "conv", SOMA_F64, 4, s_d, f64v, sizeof f64v);
    check_tensor(st, "lr", SOMA_F32, 0, NULL, &scalar, sizeof scalar);
    check_tensor(st, "empty", SOMA_F32, 2, s_e, NULL, 0);
    /* soma_st_at walks tensors in name order. */
    const char *order[] = { "bytes", "conv", "empty", "idx", "layer0.weight", "lr", "step" };
    for (int i = 0; i < 7; i++)
        CHECK_MSG(soma_st_at(st, i) && !strcmp(soma_st_at(st, i)->name, order[i]),
                  "soma_st_at(%d) is not %s", i, order[i]);
    CHECK(soma_st_at(st, -1) == NULL && soma_st_at(st, 7) == NULL);
    CHECK(soma_st_find(st, "nope") == NULL && soma_st_find(st, "") == NULL);
    CHECK(soma_st_meta_count(st) == 2);
    CHECK(soma_st_meta_key(st, 0) && !strcmp(soma_st_meta_key(st, 0), "format"));
    CHECK(soma_st_meta_key(st, 1) && !strcmp(soma_st_meta_key(st, 1), "note"));
    CHECK(soma_st_meta_key(st, 2) == NULL);
    CHECK(soma_st_meta(st, "format") && !strcmp(soma_st_meta(st, "format"), "soma-checkpoint v1"));
    CHECK(soma_st_meta(st, "note") &&
          !strcmp(soma_st_meta(st, "note"), "quote \" backslash \\ newline\n caf\xc3\xa9"));
    CHECK(soma_st_meta(st, "absent") == NULL);
}

static void test_round_trip(void)
{
    char path[600], path2[600];
    soma_st_writer *w = NULL;
    soma_st *st = NULL;
    path_in_tmp(path, sizeof path, "rt.safetensors");
    path_in_tmp(path2, sizeof path2, "rt2.safetensors");

    CHECK(soma_st_writer_new(&w) == SOMA_OK);
    CHECK(add_all(w, 0) == SOMA_OK);
    CHECK_MSG(soma_st_writer_save(w, path) == SOMA_OK, "save: %s", soma_last_error());
    soma_st_writer_free(w);
    CHECK(count_tmp_files() == 0);

    soma_status s = soma_st_read(&st, path);
    CHECK_MSG(s == SOMA_OK, "read: %s", soma_last_error());
    if (st) check_round_trip(st);
    soma_st_free(st);

    /* The same content added in another order gives the same bytes, and the
     * header is padded so the data starts 8-aligned in the file. */
    CHECK(soma_st_writer_new(&w) == SOMA_OK);
    CHECK(add_all(w, 1) == SOMA_OK);
    CHECK(soma_st_writer_save(w, path2) == SOMA_OK);
    soma_st_writer_free(w);
    size_t n1 = 0, n2 = 0;
    uint8_t *b1 = slurp(path, &n1), *b2 = slurp(path2, &n2);
    CHECK(b1 && b2 && n1 == n2 && !memcmp(b1, b2, n1));
    if (b1 && n1 >= 8) {
        uint64_t hl = 0;
        for (int i = 7; i >= 0; i--) hl = hl << 8 | b1[i];
        CHECK(hl % 8 == 0 && 8 + hl <= n1);
        CHECK(n1 == 8 + hl + sizeof f32v + sizeof i32v + sizeof i64v + sizeof u8v +
                   sizeof f64v + sizeof scalar);
        /* The same bytes through soma_st_parse. */
        st = NULL;
        CHECK(soma_st_parse(&st, b1, n1, "rt (memory)") == SOMA_OK);
        if (st) check_round_trip(st);
        soma_st_free(st);
    }
    free(b1);
    free(b2);

    /* An empty writer gives a valid file with no tensors. */
    char pe[600];
    path_in_tmp(pe, sizeof pe, "empty.safetensors");
    CHECK(soma_st_writer_new(&w) == SOMA_OK);
    CHECK(soma_st_writer_save(w, pe) == SOMA_OK);
    soma_st_writer_free(w);
    st = NULL;
    CHECK(soma_st_read(&st, pe) == SOMA_OK && soma_st_count(st) == 0 &&
          soma_st_meta_count(st) == 0 && soma_st_at(st, 0) == NULL);
    soma_st_free(st);

    /* An independent reader agrees (skipped where python3 is missing). */
    if (access("/usr/bin/python3", X_OK) == 0 && access("tests/st_check.py", R_OK) == 0) {
        char cmd[1600];
        snprintf(cmd, sizeof cmd, "/usr/bin/python3 tests/st_check.py --quiet --finite '%s' "
                 "--expect layer0.weight:2x3 --expect lr: --expect conv:1x1x1x2 "
                 "--expect empty:0x3 --expect bytes:5", path);
        CHECK_MSG(system(cmd) == 0, "st_check.py rejected %s", path);
        snprintf(cmd, sizeof cmd, "/usr/bin/python3 tests/st_check.py --quiet '%s' "
                 "--expect layer0.weight:3x2 >/dev/null 2>&1", path);
        CHECK_MSG(system(cmd) != 0, "st_check.py accepted a wrong --expect");
    } else {
        printf("test_safetensors: SKIP st_check.py cross-check (no /usr/bin/python3 or not "
               "run from the repository root)\n");
    }
    CHECK(soma_st_count(NULL) == 0 && soma_st_at(NULL, 0) == NULL &&
          soma_st_find(NULL, "x") == NULL && soma_st_meta(NULL, "x") == NULL &&
          soma_st_meta_count(NULL) == 0 && soma_st_meta_key(NULL, 0) == NULL);
    soma_st_free(NULL);
    soma_st_writer_free(NULL);
}

/* ======================================================================== */
/* A file written by Python                                                  */
/* ======================================================================== */

static void test_python_fixture(void)
{
    char path[600];
    const char *dir = getenv("SOMA_FIXTURES");
    snprintf(path, sizeof path, "%s/st_python.safetensors", dir ? dir : "tests/fixtures");
    soma_st *st = NULL;
    soma_status s = soma_st_read(&st, path);
    if (!CHECK_MSG(s == SOMA_OK, "%s (regenerate with /usr/bin/python3 refs/st_fixture.py)",
                   soma_last_error()))
        return;
    CHECK(soma_st_count(st) == 7);

    const soma_st_tensor *t = soma_st_find(st, "weight");
    if (CHECK(t && t->dtype == SOMA_F32 && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3)) {
        const float *v = t->data;
        for (int i = 0; i < 6; i++) CHECK_MSG(v[i] == i * 0.5f - 1.0f, "weight[%d] = %g", i, v[i]);
    }
    t = soma_st_find(st, "labels"); /* int64 in Python, stored as I32 by fixture.py */
    if (CHECK(t && t->dtype == SOMA_I32 && t->ndim == 1 && t->shape[0] == 4)) {
        const int32_t *v = t->data;
        CHECK(v[0] == 3 && v[1] == -1 && v[2] == 7 && v[3] == INT32_MAX);
    }
    t = soma_st_find(st, "scalar");
    CHECK(t && t->ndim == 0 && t->nbytes == 4 && *(const float *)t->data == 3.25f);
    t = soma_st_find(st, "empty");
    CHECK(t && t->ndim == 2 && t->shape[0] == 0 && t->shape[1] == 4 && t->nbytes == 0);
    t = soma_st_find(st, "caf\xc3\xa9"); /* written as "caf\u00e9" */
    CHECK(t && t->nbytes == 4 && *(const float *)t->data == 1.5f);
    t = soma_st_find(st, "smile\xf0\x9f\x98\x80"); /* written as a surrogate pair */
    CHECK(t && t->dtype == SOMA_I32 && t->ndim == 2 && *(const int32_t *)t->data == 2);
    t = soma_st_find(st, "conv.w");
    if (CHECK(t && t->ndim == 4 && t->shape[0] == 2 && t->shape[1] == 1 && t->shape[3] == 2)) {
        const float *v = t->data; /* the U8-free file still starts conv.w at offset 4 */
        for (int i = 0; i < 8; i++) CHECK(v[i] == (i - 4) / 4.0f);
        CHECK(((uintptr_t)v % 64) == 0);
    }
    CHECK(soma_st_meta(st, "format") && !strcmp(soma_st_meta(st, "format"), "soma-fixture"));
    CHECK(soma_st_meta(st, "seed") && !strcmp(soma_st_meta(st, "seed"), "7"));
    CHECK(soma_st_meta(st, "note") &&
          !strcmp(soma_st_meta(st, "note"), "tab\there \"quoted\" \xc3\xbc" "ber"));
    soma_st_free(st);
}

/* ======================================================================== */
/* Malformed input                                                           */
/* ======================================================================== */

/* A file image: prefix declaring hlen (or strlen(json)), json, data_len
 * zero bytes. */
static uint8_t *image(const char *json, uint64_t hlen, size_t data_len, size_t *n)
{
    size_t j = strlen(json);
    *n = 8 + j + data_len;
    uint8_t *b = calloc(1, *n);
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(hlen >> (8 * i));
    memcpy(b + 8, json, j);
    return b;
}

static void rejects(const char *json, size_t data_len, const char *want)
{
    size_t n;
    uint8_t *b = image(json, strlen(json), data_len, &n);
    soma_st *st = (soma_st *)1;
    soma_status s = soma_st_parse(&st, b, n, "bad.st");
    CHECK_MSG(s == SOMA_ERR_FORMAT && st == NULL, "%s: status %d, want FORMAT", json, s);
    CHECK_MSG(strstr(soma_last_error(), want) && !strncmp(soma_last_error(), "bad.st", 6),
              "%s: message \"%s\" lacks \"%s\"", json, soma_last_error(), want);
    free(b);
}

static void accepts(const char *json, size_t data_len, int count)
{
    size_t n;
    uint8_t *b = image(json, strlen(json), data_len, &n);
    soma_st *st = NULL;
    soma_status s = soma_st_parse(&st, b, n, "good.st");
    CHECK_MSG(s == SOMA_OK && soma_st_count(st) == count, "%s: %s", json, soma_last_error());
    soma_st_free(st);
    free(b);
}

#define T(name, dt, shape, b, e) \
    "\"" name "\":{\"dtype\":\"" dt "\",\"shape\":" shape ",\"data_offsets\":[" #b "," #e "]}"

static void test_malformed(void)
{
    size_t n;
    uint8_t *b;
    soma_st *st = NULL;

    /* The 8-byte prefix. */
    b = image("", 0, 0, &n);
    CHECK(soma_st_parse(&st, b, 5, "bad.st") == SOMA_ERR_FORMAT &&
          strstr(soma_last_error(), "truncated"));
    CHECK(soma_st_parse(&st, NULL, 0, "bad.st") == SOMA_ERR_FORMAT);
    free(b);
    b = image("{}", 1000, 0, &n);
    CHECK(soma_st_parse(&st, b, n, "bad.st") == SOMA_ERR_FORMAT &&
          strstr(soma_last_error(), "header length 1000 is larger"));
    free(b);
    b = image("{}", UINT64_MAX, 0, &n);
    CHECK(soma_st_parse(&st, b, n, "bad.st") == SOMA_ERR_FORMAT &&
          strstr(soma_last_error(), "header length"));
    free(b);
    {   /* A header that fits in the file but passes the 100 MiB limit. */
        size_t big = ((size_t)100 << 20) + 8;
        b = image("{}", big, big - 2, &n);
        CHECK(b && soma_st_parse(&st, b, n, "bad.st") == SOMA_ERR_FORMAT &&
              strstr(soma_last_error(), "100 MiB"));
        free(b);
    }
    CHECK(soma_st_parse(NULL, NULL, 0, "x") == SOMA_ERR_ARG);

    /* The JSON. */
    rejects("{\"a\":", 0, "JSON header");
    rejects("[1, 2]", 0, "expected an object");
    rejects("", 0, "JSON header");
    rejects("{" T("a", "F32", "[1]", 0, 4) "," T("a", "F32", "[1]", 4, 8) "}", 8,
            "duplicate key \"a\"");
    rejects("{\"__metadata__\":{\"k\":1}}", 0, "value for key \"k\" is a JSON number, not a string");
    rejects("{\"__metadata__\":{\"k\":[\"v\"]}}", 0, "not a string");
    rejects("{\"__metadata__\":\"v\"}", 0, "__metadata__ is a JSON string");
    rejects("{\"__metadata__\":{\"k\":\"a\\u0000b\"}}", 0, "NUL");
    rejects("{\"a\\u0000b\":{\"dtype\":\"U8\",\"shape\":[],\"data_offsets\":[0,1]}}", 1, "NUL");
    rejects("{\"\xff\":1}", 0, "UTF-8");

    /* Tensor entries. */
    rejects("{\"a\":[]}", 0, "entry is a JSON array");
    rejects("{" T("a", "BF16", "[1]", 0, 2) "}", 2, "unknown dtype \"BF16\"");
    rejects("{\"a\":{\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "dtype is a JSON number");
    rejects("{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "missing \"dtype\"");
    rejects("{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "missing \"shape\"");
    rejects("{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "missing \"data_offsets\"");
    rejects("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1}}", 4,
            "unknown field \"x\"");
    rejects("{" T("a", "F32", "[1,1,1,1,1]", 0, 4) "}", 4, "5 dimensions, soma supports at most 4");
    rejects("{" T("a", "F32", "[2,-3]", 0, 4) "}", 4, "negative dimension -3");
    rejects("{" T("a", "F32", "[2.0]", 0, 8) "}", 8, "shape[0] is not a non-negative integer");
    rejects("{" T("a", "F32", "[true]", 0, 4) "}", 4, "shape[0] is not");
    rejects("{" T("a", "F32", "{}", 0, 4) "}", 4, "shape is a JSON object");
    rejects("{" T("a", "U8", "[4294967296,4294967296]", 0, 4) "}", 4, "overflows");
    rejects("{" T("a", "F64", "[1152921504606846976]", 0, 8) "}", 8, "overflows"); /* 2^60 * 8 */
    rejects("{" T("a", "F32", "[1]", 0, 400) "}", 4, "out of range: the data region has 4 bytes");
    rejects("{" T("a", "F32", "[0]", 8, 8) "}", 0, "out of range");
    rejects("{" T("a", "F32", "[1]", 4, 0) "}", 4, "end before they begin");
    rejects("{" T("a", "F32", "[1]", -4, 0) "}", 4, "two non-negative integers");
    rejects("{" T("a", "F32", "[1]", 0, 99999999999999999999) "}", 4, "two non-negative integers");
    rejects("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4,
            "two non-negative integers");
    rejects("{" T("a", "F32", "[2,3]", 0, 20) "}", 20,
            "data_offsets [0, 20] hold 20 bytes, but shape [2, 3] of F32 needs 24");

    /* Coverage of the data region. */
    rejects("{" T("a", "F32", "[1]", 0, 4) "," T("b", "F32", "[1]", 0, 4) "}", 4, "overlap");
    rejects("{" T("a", "F32", "[2]", 0, 8) "," T("b", "F32", "[1]", 4, 8) "}", 8, "overlap");
    rejects("{" T("a", "F32", "[2]", 0, 8) "," T("z", "U8", "[0]", 4, 4) "}", 8, "overlap");
    rejects("{" T("a", "F32", "[1]", 0, 4) "," T("b", "F32", "[1]", 8, 12) "}", 12,
            "gap in the data region: bytes [4, 8)");
    rejects("{" T("a", "F32", "[1]", 4, 8) "}", 8, "gap in the data region: bytes [0, 4)");
    rejects("{" T("a", "F32", "[1]", 0, 4) "}", 6, "trailing bytes [4, 6)");
    rejects("{}", 1, "trailing bytes [0, 1)");

    /* Legal corner cases. */
    accepts("{}", 0, 0);
    accepts("{}      ", 0, 0);                      /* header padded with spaces */
    accepts("{\"__metadata__\":{}}", 0, 0);
    accepts("{" T("z", "U8", "[0]", 0, 0) "," T("a", "F32", "[1]", 0, 4) ","
            T("y", "I64", "[0,5]", 4, 4) "}", 4, 3);   /* zero-size tensors share offsets */
    accepts("{" T("b", "U8", "[3]", 0, 3) "," T("a", "F32", "[1]", 3, 7) "}", 7, 2);
    accepts("{" T("", "U8", "[]", 0, 1) "}", 1, 1);  /* empty name is legal JSON */

    /* Data pointers are aligned even when the file packs a float after 3 bytes. */
    b = image("{" T("b", "U8", "[3]", 0, 3) "," T("a", "F32", "[1]", 3, 7) "}",
              strlen("{" T("b", "U8", "[3]", 0, 3) "," T("a", "F32", "[1]", 3, 7) "}"), 7, &n);
    const float one = 1.0f;
    memcpy(b + n - 4, &one, 4);
    b[n - 7] = 9;
    st = NULL;
    if (CHECK(soma_st_parse(&st, b, n, "packed") == SOMA_OK)) {
        const soma_st_tensor *a = soma_st_find(st, "a"), *u = soma_st_find(st, "b");
        CHECK(a && ((uintptr_t)a->data % 64) == 0 && *(const float *)a->data == 1.0f);
        CHECK(u && ((const uint8_t *)u->data)[0] == 9);
    }
    soma_st_free(st);
    free(b);

    /* Files on disk: missing, a directory, truncated data. */
    char p[600];
    st = (soma_st *)1;
    path_in_tmp(p, sizeof p, "missing.safetensors");
    CHECK(soma_st_read(&st, p) == SOMA_ERR_IO && st == NULL &&
          strstr(soma_last_error(), p) && strstr(soma_last_error(), "cannot open"));
    CHECK(soma_st_read(&st, tmpdir) == SOMA_ERR_IO && strstr(soma_last_error(), "regular file"));
    path_in_tmp(p, sizeof p, "rt.safetensors");
    size_t full;
    uint8_t *good = slurp(p, &full);
    if (CHECK(good && full > 20)) {
        path_in_tmp(p, sizeof p, "cut.safetensors");
        CHECK(write_bytes(p, good, full - 3));
        CHECK(soma_st_read(&st, p) == SOMA_ERR_FORMAT && strstr(soma_last_error(), p));
        CHECK(write_bytes(p, good, 12));
        CHECK(soma_st_read(&st, p) == SOMA_ERR_FORMAT &&
              strstr(soma_last_error(), "header length"));
        CHECK(write_bytes(p, good, 7));
        CHECK(soma_st_read(&st, p) == SOMA_ERR_FORMAT && strstr(soma_last_error(), "truncated"));
        remove(p);
    }
    free(good);
}

/* ======================================================================== */
/* Writer arguments and atomic save                                         */
/* ======================================================================== */

static void test_writer_args(void)
{
    soma_st_writer *w = NULL;
    const int64_t sh[2] = { 2, 2 }, neg[2] = { 2, -1 }, huge[2] = { INT64_MAX, 2 };
    float v[4] = { 0 };
    CHECK(soma_st_writer_new(&w) == SOMA_OK);
    CHECK(soma_st_writer_add(w, "a", SOMA_F32, 2, sh, v) == SOMA_OK);
    CHECK(soma_st_writer_add(w, "a", SOMA_F32, 2, sh, v) == SOMA_ERR_ARG &&
          strstr(soma_last_error(), "added twice"));
    CHECK(soma_st_writer_add(w, "__metadata__", SOMA_F32, 2, sh, v) == SOMA_ERR_ARG &&
          strstr(soma_last_error(), "reserved"));
    CHECK(soma_st_writer_add(w, "", SOMA_F32, 2, sh, v) == SOMA_ERR_ARG);
    CHECK(soma_st_writer_add(w, NULL, SOMA_F32, 2, sh, v) == SOMA_ERR_ARG);
    CHECK(soma_st_writer_add(w, "bad\xff", SOMA_F32, 2, sh, v) == SOMA_ERR_ARG &&
          strstr(soma_last_error(), "UTF-8"));
    CHECK(soma_st_writer_add(w, "b", (soma_dtype)9, 2, sh, v) == SOMA_ERR_ARG &&
          strstr(soma_last_error(), "dtype"));
    CHECK(soma_st_writer_add(w, "b", SOMA_F32, 5, sh, v) == SOMA_ERR_ARG &&
          strstr(soma_last_error(), "ndim 5"));
    CHECK(soma_st_writer_add(w, "b", SOMA_F32, -1, sh, v) == SOMA_ERR_ARG);
    CHECK(soma_st_writer_add(w, "b", SOMA_F32, 2, NULL, v) == SOMA_ERR_ARG);
    CHECK(soma_st_writer_add(w, "b", SOMA_F32, 2, neg, v) == SOMA_ERR_ARG &&
          strstr(soma_last_error(), "negative"));
    CHECK(soma_st_writer_add(w, "b", SOMA_F32, 2, huge, v) == SOMA_ERR_ARG &&
          strstr(soma_last_error(), "overflows"));
    CHECK(soma_st_writer_add(w, "b", SOMA_F32, 2, sh, NULL) == SOMA_ERR_ARG &&
          strstr(soma_last_error(), "data is NULL"));
    CHECK(soma_st_writer_add(NULL, "b", SOMA_F32, 2, sh, v) == SOMA_ERR_ARG);
    CHECK(soma_st_writer_meta(w, "k", NULL) == SOMA_ERR_ARG);
    CHECK(soma_st_writer_meta(w, "k", "\xc3") == SOMA_ERR_ARG);
    CHECK(soma_st_writer_save(w, "") == SOMA_ERR_ARG);
    CHECK(soma_st_writer_save(NULL, "x") == SOMA_ERR_ARG);
    CHECK(soma_st_writer_new(NULL) == SOMA_ERR_ARG);
    soma_st_writer_free(w);
}

/* Saves one F32 tensor named name holding value to path. */
static soma_status save_one(const char *path, const char *name, float value)
{
    soma_st_writer *w = NULL;
    const int64_t one = 1;
    soma_status s = soma_st_writer_new(&w);
    if (!s) s = soma_st_writer_add(w, name, SOMA_F32, 1, &one, &value);
    if (!s) s = soma_st_writer_save(w, path);
    soma_st_writer_free(w);
    return s;
}

static void test_atomic_save(void)
{
    char p[600], sub[620], dirp[600];
    soma_st *st = NULL;

    /* A missing directory: the error names the path and the reason, no tmp. */
    path_in_tmp(p, sizeof p, "no/such/dir/x.safetensors");
    CHECK(save_one(p, "a", 1.0f) == SOMA_ERR_IO);
    CHECK_MSG(strstr(soma_last_error(), p) && strstr(soma_last_error(), "No such file"),
              "message: %s", soma_last_error());
    CHECK(count_tmp_files() == 0);

    /* Saving over an existing file replaces it. */
    path_in_tmp(p, sizeof p, "over.safetensors");
    CHECK(save_one(p, "old", 1.0f) == SOMA_OK);
    CHECK(save_one(p, "new", 2.0f) == SOMA_OK);
    if (CHECK(soma_st_read(&st, p) == SOMA_OK)) {
        CHECK(soma_st_count(st) == 1 && soma_st_find(st, "old") == NULL);
        const soma_st_tensor *t = soma_st_find(st, "new");
        CHECK(t && *(const float *)t->data == 2.0f);
    }
    soma_st_free(st);
    CHECK(count_tmp_files() == 0);

    /* A stale tmp from a crashed run is overwritten, not an obstacle. */
    snprintf(sub, sizeof sub, "%s.tmp", p);
    CHECK(write_bytes(sub, "junk", 4));
    CHECK(save_one(p, "newer", 3.0f) == SOMA_OK && !file_exists(sub));

    /* rename fails when the target is a directory: tmp removed, target kept. */
    path_in_tmp(dirp, sizeof dirp, "adir");
    CHECK(mkdir(dirp, 0700) == 0);
    CHECK(save_one(dirp, "a", 1.0f) == SOMA_ERR_IO && strstr(soma_last_error(), "rename") &&
          strstr(soma_last_error(), dirp));
    CHECK(count_tmp_files() == 0);
    struct stat sb;
    CHECK(stat(dirp, &sb) == 0 && S_ISDIR(sb.st_mode));
    rmdir(dirp);

    /* A relative path (no '/') syncs "." */
    char cwd[600];
    if (CHECK(getcwd(cwd, sizeof cwd) != NULL) && CHECK(chdir(tmpdir) == 0)) {
        CHECK(save_one("rel.safetensors", "a", 1.0f) == SOMA_OK);
        CHECK(file_exists("rel.safetensors"));
        remove("rel.safetensors");
        CHECK(chdir(cwd) == 0);
    }
}

/* ======================================================================== */
/* Fault injection                                                           */
/* ======================================================================== */

static void test_faults(void)
{
    char p[600];
    path_in_tmp(p, sizeof p, "fault.safetensors");
    CHECK(save_one(p, "old", 7.0f) == SOMA_OK);

    /* Writer: fail the n-th allocation for every n until a run needs fewer. */
    long n;
    int failures = 0;
    for (n = 1; n < 10000; n++) {
        soma_st_writer *w = NULL;
        soma_clear_error();
        soma__fault_after(n);
        soma_status s = soma_st_writer_new(&w);
        if (!s) s = add_all(w, (int)(n & 1));
        if (!s) s = soma_st_writer_save(w, p);
        soma__fault_after(0);
        soma_st_writer_free(w);
        if (s == SOMA_OK) break;
        failures++;
        CHECK_MSG(s == SOMA_ERR_NOMEM && strstr(soma_last_error(), "out of memory"),
                  "fault %ld: status %d, %s", n, s, soma_last_error());
        /* The old file is untouched and no tmp is left behind. */
        soma_st *old = NULL;
        CHECK_MSG(soma_st_read(&old, p) == SOMA_OK && soma_st_find(old, "old"),
                  "fault %ld: old file damaged", n);
        soma_st_free(old);
        CHECK(count_tmp_files() == 0);
    }
    CHECK_MSG(failures >= 10 && n < 10000, "writer fault loop: %d failures", failures);
    printf("test_safetensors: writer survived %d injected allocation failures\n", failures);

    /* Reader, from a file and from memory. */
    size_t len;
    uint8_t *img = slurp(p, &len);
    for (int mode = 0; mode < 2 && img; mode++) {
        failures = 0;
        for (n = 1; n < 10000; n++) {
            soma_st *st = NULL;
            soma__fault_after(n);
            soma_status s = mode ? soma_st_parse(&st, img, len, "img") : soma_st_read(&st, p);
            soma__fault_after(0);
            if (s == SOMA_OK) {
                check_round_trip(st);
                soma_st_free(st);
                break;
            }
            failures++;
            CHECK_MSG(s == SOMA_ERR_NOMEM && st == NULL, "reader fault %ld: %d %s", n, s,
                      soma_last_error());
        }
        CHECK_MSG(failures >= 5 && n < 10000, "reader fault loop %d: %d failures", mode, failures);
        printf("test_safetensors: %s survived %d injected allocation failures\n",
               mode ? "soma_st_parse" : "soma_st_read", failures);
    }
    free(img);

    /* JSON alone: a document with every kind of value. */
    const char *doc = "{\"a\":[1,2.5,\"s\\u00e9\",{\"b\":null}],\"c\":true,\"k0\":0,\"k1\":1,"
                      "\"k2\":2,\"k3\":3,\"k4\":4,\"k5\":5,\"k6\":6,\"k7\":7,\"k8\":8,\"k9\":9,"
                      "\"k10\":10,\"k11\":11,\"k12\":12,\"k13\":13,\"k14\":14,\"k15\":15}";
    for (n = 1; n < 10000; n++) {
        soma__json *j = NULL;
        soma__fault_after(n);
        soma_status s = soma__json_parse(&j, doc, strlen(doc), "doc");
        soma__fault_after(0);
        soma__json_free(j);
        if (s == SOMA_OK) break;
        CHECK(s == SOMA_ERR_NOMEM && j == NULL);
    }
    CHECK(n > 10 && n < 10000);
}

int main(void)
{
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/soma_st_XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(tmpdir)) {
        perror("test_safetensors: mkdtemp");
        return 1;
    }
    test_json();
    test_round_trip();
    test_python_fixture();
    test_malformed();
    test_writer_args();
    test_atomic_save();
    test_faults();

    /* Leave nothing behind. */
    const char *leaves[] = { "rt.safetensors", "rt2.safetensors", "empty.safetensors",
                             "over.safetensors", "fault.safetensors" };
    char p[600];
    for (size_t i = 0; i < sizeof leaves / sizeof *leaves; i++) {
        path_in_tmp(p, sizeof p, leaves[i]);
        remove(p);
    }
    CHECK_MSG(rmdir(tmpdir) == 0, "%s not empty at the end", tmpdir);
    return check_report("test_safetensors");
}
