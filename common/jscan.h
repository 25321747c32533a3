/*
 * jscan.h - a small, strict, validating JSON scanner: one pass builds a flat
 * array of tokens (like jsmn) over the caller's buffer, without allocating
 * per value, so a reader can pick the few fields it needs from a large
 * document.  No telgate knowledge.  Used by the ingress and the verifier on
 * every webhook.
 */
#ifndef TG_JSCAN_H
#define TG_JSCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

enum jscan_type { JSCAN_OBJECT, JSCAN_ARRAY, JSCAN_STRING, JSCAN_NUMBER, JSCAN_TRUE, JSCAN_FALSE, JSCAN_NULL };

#define JSCAN_MAX_DEPTH 64

struct jscan_tok {
    uint8_t type;           /* enum jscan_type */
    bool escaped;           /* JSCAN_STRING: contains backslash escapes */
    uint32_t start, end;    /* bytes [start, end) of the text; strings without the quotes */
    uint32_t size;          /* JSCAN_OBJECT: members; JSCAN_ARRAY: elements */
    uint32_t next;          /* index of the token after this one's subtree */
};

/* Tokens of one document; js points into the caller's buffer, which must
 * outlive the scan.  Object members are stored key token then value token. */
struct jscan {
    const char *js;
    struct jscan_tok *t;
    uint32_t n, cap;
};

/* Scan js[0..len): exactly one JSON value (RFC 8259), surrounding white
 * space allowed.  Strings must be well-formed UTF-8 (no overlong forms,
 * surrogates or code points above U+10FFFF); as jansson does, the escape
 * \u0000 and lone surrogate escapes (\ud800 not followed by \udc00..\udfff,
 * or \udc00 alone) are refused too, so every string decodes to well-formed
 * UTF-8 without NUL.  0 ok (free with jscan_free), -1 with err naming the
 * byte offset.  The token array is reused across calls. */
int jscan_parse(struct jscan *p, const char *js, size_t len, char *err) TG_MUST_CHECK;
void jscan_free(struct jscan *p);

/* Token index of member key in object obj (the last one if repeated, as
 * jansson does), or -1 when obj is not an object or has no such key.
 * Keys with escapes are compared decoded. */
int jscan_get(const struct jscan *p, int obj, const char *key);

/* jscan_get for n distinct keys in one pass over obj's members: out[i] is
 * the token of keys[i]'s value, or -1.  At most JSCAN_KEYS_MAX keys. */
#define JSCAN_KEYS_MAX 32
void jscan_get_keys(const struct jscan *p, int obj, const char *const keys[], size_t n, int out[]);

/* Decoded copy of string token tok (caller frees): well-formed UTF-8 without
 * NUL.  NULL when tok < 0 or is not a string. */
char *jscan_strdup(const struct jscan *p, int tok);

/* Whether token tok is of type t (false for tok < 0). */
bool jscan_is(const struct jscan *p, int tok, enum jscan_type t);

/* First element of array/object tok, and the next sibling of element el
 * (-1 when none). Iterate: for (e = jscan_first(p, a); e >= 0; e = jscan_next(p, a, e)). */
int jscan_first(const struct jscan *p, int tok);
int jscan_next(const struct jscan *p, int parent, int el);

#endif
