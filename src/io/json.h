/*
 * json.h - a small strict JSON (RFC 8259) parser and string escaper, internal.
 *
 * Used by the safetensors reader and writer, and meant for any other text
 * the library reads or writes as JSON (metrics log, configs).  Strict means:
 * no comments, no trailing commas, no leading zeros, no NaN/Infinity, no raw
 * control characters in strings, valid UTF-8 only, no lone surrogates, no
 * duplicate keys in an object, and nothing but whitespace after the value.
 * Every error is SOMA_ERR_FORMAT with a message naming the input and the
 * byte offset where parsing stopped.
 *
 * The parser never reads past text + n (the input need not be NUL
 * terminated and may contain NUL bytes) and bounds what an attacker can make
 * it do: at most SOMA__JSON_MAX_DEPTH nested arrays/objects (the parser is
 * recursive) and at most SOMA__JSON_MAX_BYTES of input.
 */
#ifndef SOMA_IO_JSON_H
#define SOMA_IO_JSON_H

#include "../soma_internal.h"

#define SOMA__JSON_MAX_DEPTH 64
#define SOMA__JSON_MAX_BYTES ((size_t)256 << 20)

typedef enum soma__json_type {
    SOMA__JSON_NULL = 0,
    SOMA__JSON_BOOL,
    SOMA__JSON_NUMBER,
    SOMA__JSON_STRING,
    SOMA__JSON_ARRAY,
    SOMA__JSON_OBJECT
} soma__json_type;

typedef struct soma__json soma__json;
typedef struct soma__json_member soma__json_member;

struct soma__json {
    soma__json_type type;
    size_t offset;          /* byte offset of the value's first character */
    int boolean;            /* BOOL: 0 or 1 */
    double number;          /* NUMBER: value as a double (may be +-HUGE_VAL when out of range) */
    int is_integer;         /* NUMBER: 1 if written without fraction/exponent and fits int64 */
    int64_t integer;        /* NUMBER: the exact value when is_integer */
    char *string;           /* STRING: decoded UTF-8, NUL terminated; may hold NUL bytes (\u0000) */
    size_t length;          /* STRING: bytes in string, without the terminator;
                               ARRAY/OBJECT: number of items/members */
    soma__json *items;      /* ARRAY: length values, in order */
    soma__json_member *members; /* OBJECT: length members, in document order */
};

struct soma__json_member {
    char *key;              /* decoded, NUL terminated; may hold NUL bytes */
    size_t key_length;
    soma__json value;
};

/* Parses text[0..n) into a tree owned by *out (free with soma__json_free).
 * where names the input in error messages ("run.jsonl line 3", "x.st: header").
 * On error *out is NULL and the message reads "<where>: <what> at byte <k>". */
soma_status soma__json_parse(soma__json **out, const char *text, size_t n,
                             const char *where);
/* Frees a tree from soma__json_parse; accepts NULL. */
void soma__json_free(soma__json *root);

/* Member of an object by key (a C string; keys holding NUL never match).
 * NULL if obj is NULL, not an object, or has no such key.  Linear. */
const soma__json *soma__json_get(const soma__json *obj, const char *key);
/* "null", "boolean", "number", "string", "array", "object" for messages. */
const char *soma__json_type_name(soma__json_type t);

/* 1 if s[0..n) is well-formed UTF-8 (no overlongs, no surrogates, <= U+10FFFF). */
int soma__utf8_valid(const char *s, size_t n);

/* Writes s[0..n) as a JSON string literal, quotes included, escaping '"',
 * '\\' and control characters; other bytes (UTF-8) are copied as they are.
 * Like snprintf: writes at most cap bytes including a NUL terminator into dst
 * (dst may be NULL when cap is 0) and returns the full length without the NUL,
 * so a first call with cap 0 sizes the buffer. */
size_t soma__json_escape(char *dst, size_t cap, const char *s, size_t n);
/* Same, to a stream.  Returns 0, or -1 if a write failed (errno from stdio). */
int soma__json_write_string(FILE *f, const char *s, size_t n);

#endif /* SOMA_IO_JSON_H */
