/*
 * jscan.c - strict single-pass JSON scanner (see jscan.h).
 */
#include "jscan.h"
#include "log.h"

#include <stdlib.h>
#include <string.h>

struct scanner {
    struct jscan *p;
    const char *s;
    size_t len, pos;
    char *err;
};

static void ws(struct scanner *sc)
{
    while (sc->pos < sc->len) {
        char c = sc->s[sc->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            break;
        sc->pos++;
    }
}

static int fail(struct scanner *sc, const char *what)
{
    return tg_err(sc->err, "JSON: %s at byte %zu", what, sc->pos);
}

static uint32_t tok_new(struct scanner *sc, enum jscan_type type)
{
    struct jscan *p = sc->p;
    if (p->n == p->cap) {
        p->cap = p->cap ? 2 * p->cap : 64;
        p->t = xrealloc(p->t, p->cap * sizeof *p->t);
    }
    struct jscan_tok *t = &p->t[p->n];
    memset(t, 0, sizeof *t);
    t->type = (uint8_t)type;
    t->start = (uint32_t)sc->pos;
    return p->n++;
}

/* Value of the four hex digits at s (0..0xFFFF), or -1. */
static long hex4(const char *s)
{
    long v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0'
              : c >= 'a' && c <= 'f' ? c - 'a' + 10
              : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0)
            return -1;
        v = (v << 4) | d;
    }
    return v;
}

static bool is_high_surrogate(long cp) { return cp >= 0xD800 && cp <= 0xDBFF; }
static bool is_low_surrogate(long cp) { return cp >= 0xDC00 && cp <= 0xDFFF; }

/* The escape \uXXXX with sc->pos on its 'u'; a high surrogate must be
 * followed by a \u escape of a low one.  Leaves sc->pos on the last digit. */
static int scan_u_escape(struct scanner *sc)
{
    long cp = sc->pos + 4 < sc->len ? hex4(sc->s + sc->pos + 1) : -1;
    if (cp < 0)
        return fail(sc, "bad \\u escape");
    if (cp == 0)
        return fail(sc, "NUL character in string");     /* as jansson */
    if (is_low_surrogate(cp))
        return fail(sc, "lone UTF-16 surrogate escape");
    sc->pos += 4;
    if (is_high_surrogate(cp)) {
        const char *s = sc->s + sc->pos + 1;
        long lo = sc->pos + 6 < sc->len && s[0] == '\\' && s[1] == 'u' ? hex4(s + 2) : -1;
        if (!is_low_surrogate(lo))
            return fail(sc, "lone UTF-16 surrogate escape");
        sc->pos += 6;
    }
    return 0;
}

static int scan_string(struct scanner *sc)
{
    const unsigned char *s = (const unsigned char *)sc->s;
    uint32_t i = tok_new(sc, JSCAN_STRING);
    sc->pos++;                      /* opening quote */
    sc->p->t[i].start = (uint32_t)sc->pos;
    while (sc->pos < sc->len) {
        unsigned char c = s[sc->pos];
        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {      /* the common case */
            sc->pos++;
            continue;
        }
        if (c == '"') {
            sc->p->t[i].end = (uint32_t)sc->pos++;
            sc->p->t[i].next = sc->p->n;
            return 0;
        }
        if (c < 0x20)
            return fail(sc, "control character in string");
        if (c >= 0x80) {
            size_t n = tg_utf8_len(s + sc->pos, sc->len - sc->pos);
            if (n == 0)
                return fail(sc, "invalid UTF-8 in string");
            sc->pos += n;
            continue;
        }
        sc->p->t[i].escaped = true;     /* c == '\\' */
        if (++sc->pos >= sc->len)
            break;
        c = s[sc->pos];
        if (c == 'u') {
            if (scan_u_escape(sc) != 0)
                return -1;
        } else if (c == '\0' || !strchr("\"\\/bfnrt", c)) {
            return fail(sc, "bad escape");
        }
        sc->pos++;
    }
    return fail(sc, "unterminated string");
}

static int scan_number(struct scanner *sc)
{
    uint32_t i = tok_new(sc, JSCAN_NUMBER);
    const char *s = sc->s;
    size_t p = sc->pos, n = sc->len;
    if (p < n && s[p] == '-')
        p++;
    if (p < n && s[p] == '0')
        p++;
    else if (p < n && s[p] >= '1' && s[p] <= '9')
        while (p < n && s[p] >= '0' && s[p] <= '9')
            p++;
    else
        return fail(sc, "bad number");
    if (p < n && s[p] == '.') {
        size_t q = ++p;
        while (p < n && s[p] >= '0' && s[p] <= '9')
            p++;
        if (p == q)
            return fail(sc, "bad number");
    }
    if (p < n && (s[p] == 'e' || s[p] == 'E')) {
        p++;
        if (p < n && (s[p] == '+' || s[p] == '-'))
            p++;
        size_t q = p;
        while (p < n && s[p] >= '0' && s[p] <= '9')
            p++;
        if (p == q)
            return fail(sc, "bad number");
    }
    sc->pos = p;
    sc->p->t[i].end = (uint32_t)p;
    sc->p->t[i].next = sc->p->n;
    return 0;
}

static int scan_literal(struct scanner *sc, const char *word, enum jscan_type type)
{
    size_t n = strlen(word);
    if (sc->len - sc->pos < n || memcmp(sc->s + sc->pos, word, n) != 0)
        return fail(sc, "unexpected character");
    uint32_t i = tok_new(sc, type);
    sc->pos += n;
    sc->p->t[i].end = (uint32_t)sc->pos;
    sc->p->t[i].next = sc->p->n;
    return 0;
}

static int scan_value(struct scanner *sc, int depth);

static int scan_container(struct scanner *sc, int depth, bool object)
{
    if (depth >= JSCAN_MAX_DEPTH)
        return fail(sc, "nested too deeply");
    uint32_t i = tok_new(sc, object ? JSCAN_OBJECT : JSCAN_ARRAY);
    char close = object ? '}' : ']';
    uint32_t size = 0;
    sc->pos++;
    ws(sc);
    if (sc->pos < sc->len && sc->s[sc->pos] == close) {
        sc->pos++;
    } else {
        for (;;) {
            ws(sc);
            if (object) {
                if (sc->pos >= sc->len || sc->s[sc->pos] != '"')
                    return fail(sc, "expected a member name");
                if (scan_string(sc) != 0)
                    return -1;
                ws(sc);
                if (sc->pos >= sc->len || sc->s[sc->pos] != ':')
                    return fail(sc, "expected ':'");
                sc->pos++;
            }
            if (scan_value(sc, depth + 1) != 0)
                return -1;
            size++;
            ws(sc);
            if (sc->pos < sc->len && sc->s[sc->pos] == ',') {
                sc->pos++;
                continue;
            }
            if (sc->pos < sc->len && sc->s[sc->pos] == close) {
                sc->pos++;
                break;
            }
            return fail(sc, object ? "expected ',' or '}'" : "expected ',' or ']'");
        }
    }
    struct jscan_tok *t = &sc->p->t[i];
    t->end = (uint32_t)sc->pos;
    t->size = size;
    t->next = sc->p->n;
    return 0;
}

static int scan_value(struct scanner *sc, int depth)
{
    ws(sc);
    if (sc->pos >= sc->len)
        return fail(sc, "unexpected end");
    switch (sc->s[sc->pos]) {
    case '{': return scan_container(sc, depth, true);
    case '[': return scan_container(sc, depth, false);
    case '"': return scan_string(sc);
    case 't': return scan_literal(sc, "true", JSCAN_TRUE);
    case 'f': return scan_literal(sc, "false", JSCAN_FALSE);
    case 'n': return scan_literal(sc, "null", JSCAN_NULL);
    default: return scan_number(sc);
    }
}

int jscan_parse(struct jscan *p, const char *js, size_t len, char *err)
{
    struct scanner sc = {.p = p, .s = js, .len = len, .err = err};
    p->js = js;
    p->n = 0;
    if (len >= UINT32_MAX)
        return tg_err(err, "JSON: document too large");
    if (scan_value(&sc, 0) != 0)
        return -1;
    ws(&sc);
    if (sc.pos != len)
        return fail(&sc, "trailing characters");
    return 0;
}

void jscan_free(struct jscan *p)
{
    free(p->t);
    memset(p, 0, sizeof *p);
}

bool jscan_is(const struct jscan *p, int tok, enum jscan_type t)
{
    return tok >= 0 && (uint32_t)tok < p->n && p->t[tok].type == t;
}

int jscan_first(const struct jscan *p, int tok)
{
    if (tok < 0 || (uint32_t)tok >= p->n || p->t[tok].size == 0 ||
        (p->t[tok].type != JSCAN_OBJECT && p->t[tok].type != JSCAN_ARRAY))
        return -1;
    return tok + 1;
}

int jscan_next(const struct jscan *p, int parent, int el)
{
    uint32_t n = p->t[el].next;
    if (p->t[parent].type == JSCAN_OBJECT)      /* el is a key: skip its value */
        n = p->t[n].next;
    return n < p->t[parent].next ? (int)n : -1;
}

/* Decode string token t into out (capacity >= raw length + 1); returns the
 * decoded length, or -1 on a NUL or a lone surrogate (both already refused
 * by the scan).  The scan let only well-formed UTF-8 through, and escapes
 * decode to well-formed UTF-8, so the result is well-formed UTF-8. */
static long decode(const struct jscan *p, const struct jscan_tok *t, char *out)
{
    const char *s = p->js + t->start, *e = p->js + t->end;
    size_t n = 0;
    while (s < e) {
        if (*s != '\\') {
            out[n++] = *s++;
            continue;
        }
        s++;
        char c = *s++;
        switch (c) {
        case 'b': out[n++] = '\b'; break;
        case 'f': out[n++] = '\f'; break;
        case 'n': out[n++] = '\n'; break;
        case 'r': out[n++] = '\r'; break;
        case 't': out[n++] = '\t'; break;
        case 'u': {
            long cp = e - s >= 4 ? hex4(s) : -1;
            s += 4;
            if (is_high_surrogate(cp)) {
                long lo = e - s >= 6 && s[0] == '\\' && s[1] == 'u' ? hex4(s + 2) : -1;
                if (!is_low_surrogate(lo))
                    return -1;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                s += 6;
            }
            if (cp <= 0 || is_low_surrogate(cp))
                return -1;
            if (cp < 0x80) {
                out[n++] = (char)cp;
            } else if (cp < 0x800) {
                out[n++] = (char)(0xC0 | (cp >> 6));
                out[n++] = (char)(0x80 | (cp & 0x3F));
            } else if (cp < 0x10000) {
                out[n++] = (char)(0xE0 | (cp >> 12));
                out[n++] = (char)(0x80 | ((cp >> 6) & 0x3F));
                out[n++] = (char)(0x80 | (cp & 0x3F));
            } else {
                out[n++] = (char)(0xF0 | (cp >> 18));
                out[n++] = (char)(0x80 | ((cp >> 12) & 0x3F));
                out[n++] = (char)(0x80 | ((cp >> 6) & 0x3F));
                out[n++] = (char)(0x80 | (cp & 0x3F));
            }
            break;
        }
        default: out[n++] = c; break;     /* \" \\ \/ */
        }
    }
    out[n] = '\0';
    return (long)n;
}

char *jscan_strdup(const struct jscan *p, int tok)
{
    if (!jscan_is(p, tok, JSCAN_STRING))
        return NULL;
    const struct jscan_tok *t = &p->t[tok];
    size_t raw = t->end - t->start;
    char *out = xmalloc(raw + 1);
    if (!t->escaped) {
        memcpy(out, p->js + t->start, raw);
        out[raw] = '\0';
        if (memchr(out, '\0', raw)) {
            free(out);
            return NULL;
        }
        return out;
    }
    if (decode(p, t, out) < 0) {
        free(out);
        return NULL;
    }
    return out;
}

static bool key_eq(const struct jscan *p, const struct jscan_tok *t, const char *key, size_t klen)
{
    if (!t->escaped)
        return t->end - t->start == klen && memcmp(p->js + t->start, key, klen) == 0;
    char *buf = xmalloc(t->end - t->start + 1);
    long n = decode(p, t, buf);
    bool eq = n == (long)klen && memcmp(buf, key, klen) == 0;
    free(buf);
    return eq;
}

int jscan_get(const struct jscan *p, int obj, const char *key)
{
    if (!jscan_is(p, obj, JSCAN_OBJECT))
        return -1;
    size_t klen = strlen(key);
    int found = -1;
    for (int k = jscan_first(p, obj); k >= 0; k = jscan_next(p, obj, k))
        if (key_eq(p, &p->t[k], key, klen))
            found = (int)p->t[k].next;
    return found;
}

void jscan_get_keys(const struct jscan *p, int obj, const char *const keys[], size_t n, int out[])
{
    size_t klen[JSCAN_KEYS_MAX];
    if (n > JSCAN_KEYS_MAX)
        log_panic("jscan_get_keys: %zu keys, at most %d", n, JSCAN_KEYS_MAX);
    for (size_t i = 0; i < n; i++) {
        out[i] = -1;
        klen[i] = strlen(keys[i]);
    }
    if (!jscan_is(p, obj, JSCAN_OBJECT))
        return;
    for (int k = jscan_first(p, obj); k >= 0; k = jscan_next(p, obj, k))
        for (size_t i = 0; i < n; i++)
            if (key_eq(p, &p->t[k], keys[i], klen[i])) {
                out[i] = (int)p->t[k].next;     /* a later repeat overwrites: the last wins */
                break;
            }
}
