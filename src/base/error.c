/*
 * error.c - status codes and the per-thread last-error message.
 *
 * The library never prints: it records a message naming what went wrong
 * (file, option, value) and returns a negative status.  The message lives in
 * thread-local storage so concurrent callers do not clobber each other.
 */
#include "../soma_internal.h"
#include <string.h>

static _Thread_local char last_error[1024];

static const char *const status_strings[] = {
    [0] = "ok",
    [-SOMA_ERR_NOMEM] = "out of memory",
    [-SOMA_ERR_IO] = "I/O error",
    [-SOMA_ERR_FORMAT] = "malformed file",
    [-SOMA_ERR_ARG] = "invalid argument",
    [-SOMA_ERR_SHAPE] = "shape mismatch",
    [-SOMA_ERR_CHECKSUM] = "checksum mismatch",
    [-SOMA_ERR_NUMERIC] = "NaN or Inf",
    [-SOMA_ERR_UNSUPPORTED] = "unsupported",
};

const char *soma_version(void) { return SOMA_VERSION; }

const char *soma_status_string(soma_status s)
{
    int i = -(int)s;
    if (i < 0 || i >= (int)(sizeof status_strings / sizeof *status_strings) ||
        !status_strings[i])
        return "unknown status";
    return status_strings[i];
}

const char *soma_last_error(void) { return last_error; }

void soma_clear_error(void) { last_error[0] = 0; }

soma_status soma__fail(soma_status code, const char *fmt, ...)
{
    /* Format into a scratch buffer first: callers often wrap the previous
     * message ("%s: %s", path, soma_last_error()). */
    char buf[sizeof last_error];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    memcpy(last_error, buf, sizeof buf);
    return code;
}
