/*
 * util.c - allocation, clocks, hex/base64 and file helpers shared by every
 * telgate process.
 */
#include "util.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        log_fatal("out of memory allocating %zu bytes", n);
    return p;
}

void *xcalloc(size_t nmemb, size_t size)
{
    void *p = calloc(nmemb ? nmemb : 1, size ? size : 1);
    if (!p)
        log_fatal("out of memory allocating %zu x %zu bytes", nmemb, size);
    return p;
}

void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        log_fatal("out of memory reallocating %zu bytes", n);
    return q;
}

char *xstrdup(const char *s)
{
    return xstrndup(s, strlen(s));
}

char *xstrndup(const char *s, size_t n)
{
    char *p = xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *xasprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        log_fatal("xasprintf: bad format");
    char *p = xmalloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}

int tg_err(char *err, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, ERR_LEN, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static uint64_t clock_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t tg_now_ms(void) { return clock_ns(CLOCK_REALTIME) / 1000000u; }
uint64_t tg_now_us(void) { return clock_ns(CLOCK_REALTIME) / 1000u; }
uint64_t tg_mono_ms(void) { return clock_ns(CLOCK_MONOTONIC) / 1000000u; }
uint64_t tg_mono_ns(void) { return clock_ns(CLOCK_MONOTONIC); }

void tg_rfc3339(uint64_t unix_us, char out[TG_RFC3339_LEN])
{
    time_t secs = (time_t)(unix_us / 1000000u);
    struct tm tm;
    gmtime_r(&secs, &tm);
    size_t n = strftime(out, TG_RFC3339_LEN, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, TG_RFC3339_LEN - n, ".%06uZ",
             (unsigned)(unix_us % 1000000u));
}

static int digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++, (*p)++) {
        if (**p < '0' || **p > '9')
            return -1;
        v = v * 10 + (**p - '0');
    }
    *out = v;
    return 0;
}

int tg_parse_rfc3339(const char *s, uint64_t *unix_us)
{
    int y, mo, d, h, mi, sec, oh = 0, om = 0;
    const char *p = s;
    if (digits(&p, 4, &y) || *p++ != '-' || digits(&p, 2, &mo) || *p++ != '-' || digits(&p, 2, &d) ||
        (*p != 'T' && *p != 't' && *p != ' ') || !*p++ || digits(&p, 2, &h) || *p++ != ':' ||
        digits(&p, 2, &mi) || *p++ != ':' || digits(&p, 2, &sec))
        return -1;
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60 || y < 1970)
        return -1;
    uint64_t frac_us = 0;
    if (*p == '.') {
        p++;
        int n = 0;
        for (; *p >= '0' && *p <= '9'; p++, n++)
            if (n < 6)
                frac_us = frac_us * 10 + (uint64_t)(*p - '0');
        if (n == 0)
            return -1;
        for (; n < 6; n++)
            frac_us *= 10;
    }
    int sign = 0;
    if (*p == 'Z' || *p == 'z')
        p++;
    else if (*p == '+' || *p == '-') {
        sign = *p++ == '+' ? 1 : -1;
        if (digits(&p, 2, &oh) || *p++ != ':' || digits(&p, 2, &om) || oh > 23 || om > 59)
            return -1;
    } else
        return -1;
    if (*p != '\0')
        return -1;
    struct tm tm = {.tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d,
                    .tm_hour = h, .tm_min = mi, .tm_sec = sec};
    int64_t t = (int64_t)timegm(&tm) - sign * (oh * 3600 + om * 60);
    if (t < 0)
        return -1;
    *unix_us = (uint64_t)t * 1000000u + frac_us;
    return 0;
}

void tg_hex(const uint8_t *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int tg_unhex(const char *in, uint8_t *out, size_t n)
{
    if (strlen(in) != 2 * n)
        return -1;
    for (size_t i = 0; i < n; i++) {
        int hi = hexval(in[2 * i]), lo = hexval(in[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

char *tg_b64_encode(const uint8_t *in, size_t n)
{
    size_t cap = sodium_base64_encoded_len(n, sodium_base64_VARIANT_ORIGINAL);
    char *out = xmalloc(cap);
    sodium_bin2base64(out, cap, in, n, sodium_base64_VARIANT_ORIGINAL);
    return out;
}

int tg_b64_decode(const char *in, size_t inlen, uint8_t *out, size_t cap,
                  size_t *outlen)
{
    const char *end = NULL;
    size_t len = 0;
    if (inlen % 4 != 0)
        return -1;
    if (sodium_base642bin(out, cap, in, inlen, NULL, &len, &end,
                          sodium_base64_VARIANT_ORIGINAL) != 0)
        return -1;
    if (end != in + inlen)
        return -1;
    *outlen = len;
    return 0;
}

int tg_mkdir_p(const char *path, char *err)
{
    char buf[PATH_MAX];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof buf)
        return tg_err(err, "bad directory path '%s'", path);
    memcpy(buf, path, n + 1);
    for (char *p = buf + 1; ; p++) {
        if (*p == '/' || *p == '\0') {
            char c = *p;
            *p = '\0';
            if (mkdir(buf, 0750) != 0 && errno != EEXIST)
                return tg_err(err, "mkdir %s: %s", buf, strerror(errno));
            *p = c;
            if (c == '\0')
                break;
        }
    }
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
        return tg_err(err, "%s is not a directory", path);
    return 0;
}

int tg_write_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int tg_pwrite_all(int fd, const void *buf, size_t n, uint64_t off)
{
    const char *p = buf;
    while (n > 0) {
        ssize_t w = pwrite(fd, p, n, (off_t)off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        off += (uint64_t)w;
        n -= (size_t)w;
    }
    return 0;
}

uint64_t tg_zeros_ahead(int fd, uint64_t used, uint64_t filled, uint64_t limit)
{
    static const uint8_t zero_page[4096];
    struct iovec iov[TG_ZEROS_AHEAD / sizeof zero_page];

    if (filled - used >= TG_ZEROS_AHEAD / 2 || filled >= limit)
        return filled;
    size_t n = limit - filled < TG_ZEROS_AHEAD ? (size_t)(limit - filled) : TG_ZEROS_AHEAD;
    int cnt = 0;
    for (size_t left = n; left > 0; cnt++) {
        size_t k = left < sizeof zero_page ? left : sizeof zero_page;
        iov[cnt].iov_base = (void *)zero_page;
        iov[cnt].iov_len = k;
        left -= k;
    }
    ssize_t w;
    do
        w = pwritev(fd, iov, cnt, (off_t)filled);
    while (w < 0 && errno == EINTR);
    if (w <= 0)
        return filled;
    (void)sync_file_range(fd, (off_t)filled, w, SYNC_FILE_RANGE_WRITE);
    return filled + (uint64_t)w;
}

int tg_read_file(const char *path, size_t max, char **out, size_t *outlen,
                 char *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return tg_err(err, "open %s: %s", path, strerror(errno));
    size_t cap = 4096, len = 0;
    char *buf = xmalloc(cap + 1);
    for (;;) {
        if (len == cap) {
            if (cap >= max) {
                free(buf);
                close(fd);
                return tg_err(err, "%s: larger than %zu bytes", path, max);
            }
            cap = cap * 2 > max ? max : cap * 2;
            buf = xrealloc(buf, cap + 1);
        }
        ssize_t r = read(fd, buf + len, cap - len);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            int e = errno;
            free(buf);
            close(fd);
            return tg_err(err, "read %s: %s", path, strerror(e));
        }
        if (r == 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    buf[len] = '\0';
    *out = buf;
    if (outlen)
        *outlen = len;
    return 0;
}

int tg_parse_i64(const char *s, int64_t min, int64_t max, int64_t *out)
{
    if (!s || !*s)
        return -1;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end != '\0' || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

bool tg_ct_eq(const void *a, const void *b, size_t n)
{
    return sodium_memcmp(a, b, n) == 0;
}

size_t tg_utf8_len(const unsigned char *s, size_t n)
{
    unsigned char lo = 0x80, hi = 0xBF;     /* allowed range of the second byte */
    size_t len;
    if (s[0] >= 0xC2 && s[0] <= 0xDF) {
        len = 2;
    } else if (s[0] >= 0xE0 && s[0] <= 0xEF) {
        len = 3;
        if (s[0] == 0xE0)
            lo = 0xA0;
        else if (s[0] == 0xED)
            hi = 0x9F;
    } else if (s[0] >= 0xF0 && s[0] <= 0xF4) {
        len = 4;
        if (s[0] == 0xF0)
            lo = 0x90;
        else if (s[0] == 0xF4)
            hi = 0x8F;
    } else {
        return 0;
    }
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if ((s[i] & 0xC0) != 0x80)
            return 0;
    return len;
}
