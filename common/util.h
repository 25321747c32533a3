/*
 * util.h - small helpers with no telgate knowledge: allocation that cannot
 * fail, clocks, hex and base64, file helpers.  Used by every process.
 */
#ifndef TG_UTIL_H
#define TG_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <sys/types.h>

#define ERR_LEN 256

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define TG_UNUSED(x) ((void)(x))
#define TG_MUST_CHECK __attribute__((warn_unused_result))
#define TG_PRINTF(f, a) __attribute__((format(printf, f, a)))

/* Allocation failure is fatal here and only here: callers never check. */
void *xmalloc(size_t n);
void *xcalloc(size_t nmemb, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
/* Caller owns the result (free()). */
char *xasprintf(const char *fmt, ...) TG_PRINTF(1, 2);

/* Write a formatted reason into err[ERR_LEN]; returns -1 so callers can
 * `return tg_err(err, "...")`. */
int tg_err(char *err, const char *fmt, ...) TG_PRINTF(2, 3);

/* Wall clock in milliseconds / microseconds since the Unix epoch. */
uint64_t tg_now_ms(void);
uint64_t tg_now_us(void);
/* Monotonic clock in milliseconds / nanoseconds (arbitrary origin). */
uint64_t tg_mono_ms(void);
uint64_t tg_mono_ns(void);

/* RFC 3339 UTC with microseconds, e.g. 2026-11-24T20:08:25.123456Z.
 * out must hold TG_RFC3339_LEN bytes. */
#define TG_RFC3339_LEN 32
void tg_rfc3339(uint64_t unix_us, char out[TG_RFC3339_LEN]);

/* Parse RFC 3339 / ISO 8601 date-time with a 'Z' or +hh:mm / -hh:mm offset and
 * optional fraction (e.g. 2025-11-23T03:30:00.076316Z) into µs since the
 * epoch.  0 ok, -1 on anything else. */
int tg_parse_rfc3339(const char *s, uint64_t *unix_us) TG_MUST_CHECK;

/* Lower-case hex of n bytes into out (2n+1 bytes, NUL-terminated). */
void tg_hex(const uint8_t *in, size_t n, char *out);
/* Parse exactly 2n hex digits into out[n]; 0 ok, -1 bad input. */
int tg_unhex(const char *in, uint8_t *out, size_t n) TG_MUST_CHECK;

/* Standard base64 with padding.  Caller owns the result. */
char *tg_b64_encode(const uint8_t *in, size_t n);
/* Decode standard base64 (padding required, no whitespace) into out (capacity
 * cap).  Returns 0 and sets *outlen, or -1 on bad input or overflow. */
int tg_b64_decode(const char *in, size_t inlen, uint8_t *out, size_t cap,
                  size_t *outlen) TG_MUST_CHECK;

/* mkdir -p with mode 0750 for created directories; 0 ok, -1 with err. */
int tg_mkdir_p(const char *path, char *err) TG_MUST_CHECK;
/* Write all of buf, retrying on EINTR and short writes; 0 ok, -1 errno set. */
int tg_write_all(int fd, const void *buf, size_t n) TG_MUST_CHECK;
/* The same at file offset off (pwrite; the file position is left alone). */
int tg_pwrite_all(int fd, const void *buf, size_t n, uint64_t off) TG_MUST_CHECK;
/*
 * Zeros written ahead of a file's data, so that a later write over them
 * plus its fdatasync need not also commit a new file size and new blocks to
 * the file system's journal.  The data of fd ends at `used`, zeros follow
 * up to `filled` (>= used).  When fewer than TG_ZEROS_AHEAD / 2 are left
 * and `filled` is below `limit`, TG_ZEROS_AHEAD more are written at
 * `filled` (never past limit), with one pwritev from a single zero page,
 * and their write-back is started.  Returns the new end of the zeros;
 * `filled` when nothing was written (a failure, e.g. a full disk, only
 * costs speed).
 */
#define TG_ZEROS_AHEAD (256 * 1024)
uint64_t tg_zeros_ahead(int fd, uint64_t used, uint64_t filled, uint64_t limit);
/* Read a whole file (up to max bytes) into a NUL-terminated buffer the caller
 * owns; 0 ok, -1 with err. */
int tg_read_file(const char *path, size_t max, char **out, size_t *outlen,
                 char *err) TG_MUST_CHECK;

/* Parse a decimal integer in [min, max]; whole string must be consumed. */
int tg_parse_i64(const char *s, int64_t min, int64_t max, int64_t *out) TG_MUST_CHECK;

/* Constant-time equality of two byte strings of the same length. */
bool tg_ct_eq(const void *a, const void *b, size_t n);

/*
 * Length of the well-formed UTF-8 sequence at s[0..n), whose first byte is
 * not ASCII, or 0 when it is ill-formed (Unicode Standard, table 3-7): a
 * continuation or invalid lead byte (80..C1, F5..FF), a missing continuation
 * byte, an overlong form (E0 80..9F, F0 80..8F), a UTF-16 surrogate
 * (ED A0..BF) or a code point above U+10FFFF (F4 90..BF).
 */
size_t tg_utf8_len(const unsigned char *s, size_t n);
/* Is the sequence at s (of tg_utf8_len 2) a C1 control, U+0080..U+009F? */
static inline bool tg_utf8_is_c1(const unsigned char *s) { return s[0] == 0xC2 && s[1] < 0xA0; }

#endif
