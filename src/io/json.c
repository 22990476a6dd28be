/*
 * json.c - strict JSON parser (RFC 8259) and string escaper.
 *
 * A recursive-descent parser over a length-delimited buffer.  Every read is
 * guarded by the remaining length, so a truncated or hostile input can only
 * produce an error, never a read past the end; recursion is bounded by
 * SOMA__JSON_MAX_DEPTH.  Files we parse come from other programs (Python's
 * json, the Rust safetensors crate) and from the fuzzer, so the parser is
 * strict: anything RFC 8259 does not allow is an error with a byte offset,
 * and so is a duplicate key, since "last one wins" (Python) and "first one
 * wins" (others) would make two readers disagree about the same file.
 */
#include "json.h"

#include <errno.h>
#include <locale.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct parser {
    const unsigned char *text;
    size_t n;        /* bytes in text */
    size_t pos;      /* next byte to read */
    const char *where;
    int depth;       /* arrays/objects currently open */
} parser;

/* Shows s[0..n) escaped and cut to fit buf, for messages about keys. */
static const char *show(char *buf, size_t cap, const char *s, size_t n)
{
    size_t need = soma__json_escape(buf, cap, s, n);
    if (need >= cap && cap > 4) memcpy(buf + cap - 4, "...", 4);
    return buf;
}

/* Describes the byte at pos ("'x'", "byte 0x0a", "end of input"). */
static const char *found(const parser *ps, char buf[24])
{
    if (ps->pos >= ps->n) return "end of input";
    unsigned c = ps->text[ps->pos];
    if (c >= 0x20 && c < 0x7f) snprintf(buf, 24, "'%c'", (char)c);
    else snprintf(buf, 24, "byte 0x%02x", c);
    return buf;
}

static soma_status fail_at(const parser *ps, size_t at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Every parse error goes through here: "<where>: <what> at byte <at>". */
static soma_status fail_at(const parser *ps, size_t at, const char *fmt, ...)
{
    char what[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return soma__fail(SOMA_ERR_FORMAT, "%s: %s at byte %zu", ps->where, what, at);
}

static void skip_ws(parser *ps)
{
    while (ps->pos < ps->n) {
        unsigned char c = ps->text[ps->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        ps->pos++;
    }
}

/* ------------------------------------------------------------------------ */
/* UTF-8                                                                     */
/* ------------------------------------------------------------------------ */

/* Length of the well-formed UTF-8 sequence at s (Unicode table 3-7), or 0 if
 * it is ill-formed or cut off by avail.  Rejecting overlongs and encoded
 * surrogates matters: they are how two strings that compare different as
 * bytes can decode to the same name. */
static size_t utf8_seq(const unsigned char *s, size_t avail)
{
    unsigned c = s[0];
    unsigned lo = 0x80, hi = 0xbf;
    size_t len;
    if (c < 0x80) return 1;
    if (c >= 0xc2 && c <= 0xdf) len = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0) lo = 0xa0;
        if (c == 0xed) hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0) lo = 0x90;
        if (c == 0xf4) hi = 0x8f;
    } else return 0;
    if (avail < len) return 0;
    if (s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xbf) return 0;
    return len;
}

int soma__utf8_valid(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        size_t k = utf8_seq(u + i, n - i);
        if (!k) return 0;
        i += k;
    }
    return 1;
}

static size_t utf8_put(unsigned char *o, uint32_t cp)
{
    if (cp < 0x80) { o[0] = (unsigned char)cp; return 1; }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xc0 | (cp >> 6));
        o[1] = (unsigned char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xe0 | (cp >> 12));
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
        o[2] = (unsigned char)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (unsigned char)(0xf0 | (cp >> 18));
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
    o[3] = (unsigned char)(0x80 | (cp & 0x3f));
    return 4;
}

/* ------------------------------------------------------------------------ */
/* Strings                                                                   */
/* ------------------------------------------------------------------------ */

/* Four hex digits at s (the caller has checked they are in bounds). */
static int hex4(const unsigned char *s, uint32_t *out)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned c = s[i], d;
        if (c >= '0' && c <= '9') d = c - '0';
        else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
        else return 0;
        v = v * 16 + d;
    }
    *out = v;
    return 1;
}

/* Parses the string literal at pos (which holds '"') into a fresh NUL
 * terminated buffer.  Decoding never grows the text (an escape of k bytes
 * yields at most k bytes of UTF-8), so the raw length bounds the output and
 * one allocation suffices. */
static soma_status parse_string(parser *ps, char **out, size_t *out_len)
{
    const unsigned char *t = ps->text;
    size_t start = ps->pos, end = start + 1;
    *out = NULL;
    *out_len = 0;
    /* Find the closing quote first, stepping over escapes. */
    while (end < ps->n && t[end] != '"') end += (t[end] == '\\') ? 2 : 1;
    if (end >= ps->n) return fail_at(ps, start, "unterminated string");

    unsigned char *buf = soma__malloc(end - start);
    if (!buf) return SOMA_ERR_NOMEM;
    size_t o = 0, i = start + 1;
    while (i < end) {
        unsigned c = t[i];
        if (c < 0x20) {
            soma__free(buf);
            return fail_at(ps, i, "raw control character 0x%02x in a string (must be escaped)", c);
        }
        if (c >= 0x80) {
            size_t k = utf8_seq(t + i, end - i);
            if (!k) {
                soma__free(buf);
                return fail_at(ps, i, "invalid UTF-8 in a string");
            }
            memcpy(buf + o, t + i, k);
            o += k;
            i += k;
            continue;
        }
        if (c != '\\') { buf[o++] = (unsigned char)c; i++; continue; }
        /* Escape: the scan above guarantees i + 1 < end. */
        unsigned e = t[i + 1];
        const char *simple = strchr("\"\\/bfnrt", (int)e);
        if (e && simple) {
            static const char decoded[] = "\"\\/\b\f\n\r\t";
            buf[o++] = (unsigned char)decoded[simple - "\"\\/bfnrt"];
            i += 2;
            continue;
        }
        uint32_t cp, lo;
        if (e != 'u' || end - i < 6 || !hex4(t + i + 2, &cp)) {
            soma__free(buf);
            return fail_at(ps, i, e == 'u' ? "\\u needs four hex digits"
                                           : "invalid escape in a string");
        }
        if (cp >= 0xdc00 && cp <= 0xdfff) {
            soma__free(buf);
            return fail_at(ps, i, "lone low surrogate \\u%04x in a string", (unsigned)cp);
        }
        if (cp >= 0xd800 && cp <= 0xdbff) {
            /* UTF-16 pair: the low half must follow as its own \u escape. */
            if (end - i < 12 || t[i + 6] != '\\' || t[i + 7] != 'u' ||
                !hex4(t + i + 8, &lo) || lo < 0xdc00 || lo > 0xdfff) {
                soma__free(buf);
                return fail_at(ps, i, "high surrogate \\u%04x not followed by a low surrogate",
                               (unsigned)cp);
            }
            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            i += 6;
        }
        o += utf8_put(buf + o, cp);
        i += 6;
    }
    buf[o] = 0;
    ps->pos = end + 1;
    *out = (char *)buf;
    *out_len = o;
    return SOMA_OK;
}

/* ------------------------------------------------------------------------ */
/* Numbers                                                                   */
/* ------------------------------------------------------------------------ */

static int is_digit(const parser *ps, size_t i)
{
    return i < ps->n && ps->text[i] >= '0' && ps->text[i] <= '9';
}

/* number = [ "-" ] ( "0" / [1-9] *DIGIT ) [ "." 1*DIGIT ] [ ("e"/"E") ["+"/"-"] 1*DIGIT ] */
static soma_status parse_number(parser *ps, soma__json *v)
{
    const unsigned char *t = ps->text;
    size_t start = ps->pos, i = start;
    int neg = 0, integral = 1;
    char fb[24];
    if (t[i] == '-') { neg = 1; i++; }
    if (!is_digit(ps, i)) {
        ps->pos = i;
        return fail_at(ps, i, "expected a digit, found %s", found(ps, fb));
    }
    /* Exact int64 accumulation on the side, so shapes and offsets above 2^53
     * are not rounded through a double. */
    uint64_t mag = 0, limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    int fits = 1;
    if (t[i] == '0') {
        i++;
        if (is_digit(ps, i)) return fail_at(ps, start, "number with a leading zero");
    } else {
        while (is_digit(ps, i)) {
            uint64_t d = (uint64_t)(t[i] - '0');
            if (mag > (limit - d) / 10) fits = 0;
            else mag = mag * 10 + d;
            i++;
        }
    }
    if (i < ps->n && t[i] == '.') {
        integral = 0;
        i++;
        if (!is_digit(ps, i)) return fail_at(ps, i, "expected a digit after '.'");
        while (is_digit(ps, i)) i++;
    }
    if (i < ps->n && (t[i] == 'e' || t[i] == 'E')) {
        integral = 0;
        i++;
        if (i < ps->n && (t[i] == '+' || t[i] == '-')) i++;
        if (!is_digit(ps, i)) return fail_at(ps, i, "expected a digit in the exponent");
        while (is_digit(ps, i)) i++;
    }

    /* strtod wants a NUL-terminated string and honours LC_NUMERIC, so copy
     * the token with '.' replaced by the locale's decimal point. */
    const char *dp = localeconv()->decimal_point;
    size_t dpn = (dp && *dp) ? strlen(dp) : 1, len = i - start;
    char tok[160];
    if (len > 100 || dpn > 8)
        return fail_at(ps, start, "number too long (%zu characters, at most 100)", len);
    size_t k = 0;
    for (size_t j = start; j < i; j++) {
        if (t[j] == '.' && dp && *dp) { memcpy(tok + k, dp, dpn); k += dpn; }
        else tok[k++] = (char)t[j];
    }
    tok[k] = 0;
    errno = 0;
    double d = strtod(tok, NULL);
    if (errno == ERANGE && isinf(d))
        return fail_at(ps, start, "number %.*s is out of range", (int)len, (const char *)t + start);

    v->type = SOMA__JSON_NUMBER;
    v->number = d;
    v->is_integer = integral && fits;
    if (v->is_integer)
        v->integer = neg ? (mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag)
                         : (int64_t)mag;
    ps->pos = i;
    return SOMA_OK;
}

/* ------------------------------------------------------------------------ */
/* Values, arrays, objects                                                   */
/* ------------------------------------------------------------------------ */

static void free_value(soma__json *v);
static soma_status parse_value(parser *ps, soma__json *v);

/* Grows *items (count used, *cap allocated, elements of size bytes) to hold
 * one more. */
static soma_status grow(void **items, size_t *cap, size_t count, size_t size)
{
    if (count < *cap) return SOMA_OK;
    size_t nc = *cap ? *cap * 2 : 4;
    if (nc > SIZE_MAX / size) return soma__fail(SOMA_ERR_NOMEM, "JSON array too large");
    void *p = soma__realloc(*items, nc * size);
    if (!p) return SOMA_ERR_NOMEM;
    *items = p;
    *cap = nc;
    return SOMA_OK;
}

static soma_status enter(parser *ps)
{
    if (++ps->depth > SOMA__JSON_MAX_DEPTH)
        return fail_at(ps, ps->pos, "arrays/objects nested deeper than %d levels",
                       SOMA__JSON_MAX_DEPTH);
    return SOMA_OK;
}

static soma_status parse_array(parser *ps, soma__json *v)
{
    soma_status st = enter(ps);
    char fb[24];
    size_t cap = 0;
    if (st) return st;
    v->type = SOMA__JSON_ARRAY;
    ps->pos++; /* '[' */
    skip_ws(ps);
    if (ps->pos < ps->n && ps->text[ps->pos] == ']') { ps->pos++; ps->depth--; return SOMA_OK; }
    for (;;) {
        skip_ws(ps);
        if (v->length && ps->pos < ps->n && ps->text[ps->pos] == ']')
            return fail_at(ps, ps->pos, "trailing comma in an array");
        void *items = v->items;
        st = grow(&items, &cap, v->length, sizeof *v->items);
        v->items = items;
        if (st) return st;
        memset(&v->items[v->length], 0, sizeof *v->items);
        st = parse_value(ps, &v->items[v->length]);
        v->length++; /* counted even on error, so free_value releases it */
        if (st) return st;
        skip_ws(ps);
        if (ps->pos < ps->n && ps->text[ps->pos] == ',') { ps->pos++; continue; }
        if (ps->pos < ps->n && ps->text[ps->pos] == ']') { ps->pos++; break; }
        return fail_at(ps, ps->pos, "expected ',' or ']' in an array, found %s", found(ps, fb));
    }
    ps->depth--;
    return SOMA_OK;
}

static int member_cmp(const void *a, const void *b)
{
    const soma__json_member *x = *(const soma__json_member *const *)a;
    const soma__json_member *y = *(const soma__json_member *const *)b;
    size_t n = x->key_length < y->key_length ? x->key_length : y->key_length;
    int c = memcmp(x->key, y->key, n);
    if (c) return c;
    return (x->key_length > y->key_length) - (x->key_length < y->key_length);
}

static int same_key(const soma__json_member *x, const soma__json_member *y)
{
    return x->key_length == y->key_length && !memcmp(x->key, y->key, x->key_length);
}

/* Rejects two members with the same key.  Sorting pointers keeps this
 * O(n log n): a safetensors header may hold many thousands of tensors. */
static soma_status check_duplicates(parser *ps, const soma__json *v)
{
    const soma__json_member *a = NULL, *b = NULL;
    char kb[80];
    if (v->length <= 16) {
        for (size_t i = 0; i < v->length && !a; i++)
            for (size_t j = i + 1; j < v->length; j++)
                if (same_key(&v->members[i], &v->members[j])) {
                    a = &v->members[i]; b = &v->members[j];
                    break;
                }
    } else {
        const soma__json_member **s = soma__malloc(v->length * sizeof *s);
        if (!s) return SOMA_ERR_NOMEM;
        for (size_t i = 0; i < v->length; i++) s[i] = &v->members[i];
        qsort(s, v->length, sizeof *s, member_cmp);
        for (size_t i = 1; i < v->length; i++)
            if (same_key(s[i - 1], s[i])) { a = s[i - 1]; b = s[i]; break; }
        soma__free(s);
    }
    if (!a) return SOMA_OK;
    if (a->value.offset > b->value.offset) { const soma__json_member *t = a; a = b; b = t; }
    return fail_at(ps, b->value.offset, "duplicate key %s (first at byte %zu)",
                   show(kb, sizeof kb, b->key, b->key_length), a->value.offset);
}

static soma_status parse_object(parser *ps, soma__json *v)
{
    soma_status st = enter(ps);
    char fb[24];
    size_t cap = 0;
    if (st) return st;
    v->type = SOMA__JSON_OBJECT;
    ps->pos++; /* '{' */
    skip_ws(ps);
    if (ps->pos < ps->n && ps->text[ps->pos] == '}') { ps->pos++; ps->depth--; return SOMA_OK; }
    for (;;) {
        skip_ws(ps);
        if (ps->pos >= ps->n || ps->text[ps->pos] != '"') {
            if (v->length && ps->pos < ps->n && ps->text[ps->pos] == '}')
                return fail_at(ps, ps->pos, "trailing comma in an object");
            return fail_at(ps, ps->pos, "expected a string key, found %s", found(ps, fb));
        }
        void *members = v->members;
        st = grow(&members, &cap, v->length, sizeof *v->members);
        v->members = members;
        if (st) return st;
        soma__json_member *m = &v->members[v->length];
        memset(m, 0, sizeof *m);
        v->length++; /* counted before filling, so free_value releases a partial member */
        st = parse_string(ps, &m->key, &m->key_length);
        if (st) return st;
        skip_ws(ps);
        if (ps->pos >= ps->n || ps->text[ps->pos] != ':')
            return fail_at(ps, ps->pos, "expected ':' after an object key, found %s", found(ps, fb));
        ps->pos++;
        st = parse_value(ps, &m->value);
        if (st) return st;
        skip_ws(ps);
        if (ps->pos < ps->n && ps->text[ps->pos] == ',') { ps->pos++; continue; }
        if (ps->pos < ps->n && ps->text[ps->pos] == '}') { ps->pos++; break; }
        return fail_at(ps, ps->pos, "expected ',' or '}' in an object, found %s", found(ps, fb));
    }
    ps->depth--;
    return check_duplicates(ps, v);
}

static soma_status parse_literal(parser *ps, soma__json *v, const char *word,
                                 soma__json_type type, int boolean)
{
    size_t k = strlen(word);
    if (ps->n - ps->pos < k || memcmp(ps->text + ps->pos, word, k))
        return fail_at(ps, ps->pos, "invalid literal (expected %s)", word);
    v->type = type;
    v->boolean = boolean;
    ps->pos += k;
    return SOMA_OK;
}

static soma_status parse_value(parser *ps, soma__json *v)
{
    char fb[24];
    skip_ws(ps);
    v->offset = ps->pos;
    if (ps->pos >= ps->n) return fail_at(ps, ps->pos, "expected a value, found end of input");
    unsigned char c = ps->text[ps->pos];
    switch (c) {
    case '{': return parse_object(ps, v);
    case '[': return parse_array(ps, v);
    case '"':
        v->type = SOMA__JSON_STRING;
        return parse_string(ps, &v->string, &v->length);
    case 't': return parse_literal(ps, v, "true", SOMA__JSON_BOOL, 1);
    case 'f': return parse_literal(ps, v, "false", SOMA__JSON_BOOL, 0);
    case 'n': return parse_literal(ps, v, "null", SOMA__JSON_NULL, 0);
    default:
        if (c == '-' || (c >= '0' && c <= '9')) return parse_number(ps, v);
        return fail_at(ps, ps->pos, "expected a value, found %s", found(ps, fb));
    }
}

static void free_value(soma__json *v)
{
    switch (v->type) {
    case SOMA__JSON_STRING:
        soma__free(v->string);
        break;
    case SOMA__JSON_ARRAY:
        for (size_t i = 0; i < v->length; i++) free_value(&v->items[i]);
        soma__free(v->items);
        break;
    case SOMA__JSON_OBJECT:
        for (size_t i = 0; i < v->length; i++) {
            soma__free(v->members[i].key);
            free_value(&v->members[i].value);
        }
        soma__free(v->members);
        break;
    default:
        break;
    }
}

soma_status soma__json_parse(soma__json **out, const char *text, size_t n,
                             const char *where)
{
    parser ps = { (const unsigned char *)text, n, 0, where ? where : "JSON", 0 };
    char fb[24];
    *out = NULL;
    if (!text && n) return soma__fail(SOMA_ERR_ARG, "%s: NULL JSON text", ps.where);
    if (n > SOMA__JSON_MAX_BYTES)
        return fail_at(&ps, 0, "JSON text of %zu bytes is over the %zu-byte limit", n,
                       SOMA__JSON_MAX_BYTES);
    soma__json *root = soma__calloc(1, sizeof *root);
    if (!root) return SOMA_ERR_NOMEM;
    soma_status st = parse_value(&ps, root);
    if (!st) {
        skip_ws(&ps);
        if (ps.pos < ps.n)
            st = fail_at(&ps, ps.pos, "unexpected %s after the JSON value", found(&ps, fb));
    }
    if (st) { soma__json_free(root); return st; }
    *out = root;
    return SOMA_OK;
}

void soma__json_free(soma__json *root)
{
    if (!root) return;
    free_value(root);
    soma__free(root);
}

const soma__json *soma__json_get(const soma__json *obj, const char *key)
{
    if (!obj || obj->type != SOMA__JSON_OBJECT || !key) return NULL;
    size_t k = strlen(key);
    for (size_t i = 0; i < obj->length; i++) {
        const soma__json_member *m = &obj->members[i];
        if (m->key_length == k && !memcmp(m->key, key, k)) return &m->value;
    }
    return NULL;
}

const char *soma__json_type_name(soma__json_type t)
{
    static const char *const names[] = {
        [SOMA__JSON_NULL] = "null",     [SOMA__JSON_BOOL] = "boolean",
        [SOMA__JSON_NUMBER] = "number", [SOMA__JSON_STRING] = "string",
        [SOMA__JSON_ARRAY] = "array",   [SOMA__JSON_OBJECT] = "object",
    };
    if ((unsigned)t >= sizeof names / sizeof *names) return "?";
    return names[t];
}

/* ------------------------------------------------------------------------ */
/* Escaping                                                                  */
/* ------------------------------------------------------------------------ */

/* The escaped form of one byte into out (at most 6 chars); returns its length. */
static size_t escape_byte(unsigned char c, char out[8])
{
    static const char hex[] = "0123456789abcdef";
    switch (c) {
    case '"':  memcpy(out, "\\\"", 2); return 2;
    case '\\': memcpy(out, "\\\\", 2); return 2;
    case '\b': memcpy(out, "\\b", 2); return 2;
    case '\f': memcpy(out, "\\f", 2); return 2;
    case '\n': memcpy(out, "\\n", 2); return 2;
    case '\r': memcpy(out, "\\r", 2); return 2;
    case '\t': memcpy(out, "\\t", 2); return 2;
    default:
        if (c < 0x20) {
            memcpy(out, "\\u00", 4);
            out[4] = hex[c >> 4];
            out[5] = hex[c & 15];
            return 6;
        }
        out[0] = (char)c;
        return 1;
    }
}

size_t soma__json_escape(char *dst, size_t cap, const char *s, size_t n)
{
    size_t len = 0;
    char e[8] = { 0 };
    /* Bytes go out while they fit in cap - 1, leaving room for the NUL. */
    for (size_t i = 0; i <= n + 1; i++) {
        size_t k;
        if (i == 0 || i == n + 1) { e[0] = '"'; k = 1; }
        else k = escape_byte((unsigned char)s[i - 1], e);
        for (size_t j = 0; j < k; j++, len++)
            if (len + 1 < cap) dst[len] = e[j];
    }
    if (cap) dst[len < cap ? len : cap - 1] = 0;
    return len;
}

int soma__json_write_string(FILE *f, const char *s, size_t n)
{
    char buf[512];
    size_t used = 0;
    buf[used++] = '"';
    for (size_t i = 0; i < n; i++) {
        if (used > sizeof buf - 8) {
            if (fwrite(buf, 1, used, f) != used) return -1;
            used = 0;
        }
        used += escape_byte((unsigned char)s[i], buf + used);
    }
    buf[used++] = '"';
    if (fwrite(buf, 1, used, f) != used) return -1;
    return 0;
}
