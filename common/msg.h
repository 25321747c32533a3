/*
 * msg.h - the typed, versioned messages between telgate stages (protocol.md
 * section 2).  Encode and decode only through these helpers: never raw
 * structs on the wire.  Used by every stage and telctl.
 */
#ifndef TG_MSG_H
#define TG_MSG_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define MSG_VERSION 1
#define MSG_MAX_BYTES (4u << 20)
/* Longest webhook data.id, in bytes: the spine keys webhooks by an 8-byte
 * time and the id, and LMDB keys are at most 511 bytes.  The ingress
 * refuses longer ids (400), so none is accepted and then never processed. */
#define MSG_WEBHOOK_ID_MAX 503

enum msg_type {
    MSG_WEBHOOK = 1,   /* ingress -> verifier */
    MSG_RESULT = 2,    /* verifier -> spine */
    MSG_COMMAND = 3,   /* spine -> actuator */
    MSG_OUTCOME = 4,   /* actuator -> spine */
    MSG_PROGRESS = 5,  /* spine -> ingress */
    MSG_APPEND = 6,    /* telctl -> spine: operator events (ns.*) */
    MSG_SETTLED = 7,   /* ingress -> spine: journal low mark */
};

/* An event as produced by a verifier (spine adds seq, time, hashes).
 * All strings owned by the struct; data is a msgpack-encoded map. */
struct tg_event {
    char *type, *actor, *id;
    char *webhook_id, *call_control_id, *call_session_id, *from, *to; /* may be NULL */
    uint8_t *data;
    size_t data_len;
};

/* A Telnyx command.  All strings owned; body is JSON text. */
struct tg_command {
    char *command_id, *call_control_id, *action, *body;
    char *webhook_id, *call_session_id, *from, *to;  /* may be NULL */
    uint64_t outbox_key;    /* the spine's outbox key ("okey"); 0 before it is queued */
};

struct msg_webhook {
    uint64_t jseq, recv_us;
    uint32_t attempt;
    uint8_t *body;          /* owned copy */
    size_t body_len;
};

struct msg_result {
    uint64_t jseq;
    char *webhook_id;
    uint64_t occurred_us;   /* Telnyx data.occurred_at, µs since epoch; 0 unknown */
    struct tg_event *events;
    size_t n_events;
    struct tg_command *commands;
    size_t n_commands;
};

struct msg_outcome {
    char *command_id, *action;
    uint64_t outbox_key;    /* echoed from the COMMAND */
    char *call_control_id, *call_session_id, *webhook_id, *from, *to; /* may be NULL */
    uint32_t status;        /* HTTP status, 0 = no answer */
    bool ok;
    uint32_t attempts;
    char *detail;
};

/* Append operator events (e.g. ns.cert_issued) produced outside a webhook. */
struct msg_append {
    struct tg_event *events;
    size_t n_events;
};

/* Progress report from the spine to the ingress: every jseq <= low is
 * processed; done[] lists processed jseqs above low (bounded). */
struct msg_progress {
    uint64_t low;
    uint64_t *done;
    size_t n_done;
};

/* The ingress's low mark, sent to the spine: every jseq <= low is
 * acknowledged or was never handed out (jseqs the ingress skipped after a
 * restart or a failed sync), so the spine need not wait for them. */
struct msg_settled {
    uint64_t low;
};

/* Encoders append one whole message to sb (caller owns sb). */
void msg_webhook_encode(msgpack_sbuffer *sb, const struct msg_webhook *m);
void msg_result_encode(msgpack_sbuffer *sb, const struct msg_result *m);
void msg_command_encode(msgpack_sbuffer *sb, const struct tg_command *c);
void msg_outcome_encode(msgpack_sbuffer *sb, const struct msg_outcome *m);
void msg_append_encode(msgpack_sbuffer *sb, const struct msg_append *m);
void msg_progress_encode(msgpack_sbuffer *sb, const struct msg_progress *m);
void msg_settled_encode(msgpack_sbuffer *sb, const struct msg_settled *m);

/* Peek at the type of a message: 0 and *type, or -1 with err (bad version,
 * not a map, oversized).  Only the envelope is checked: the message may still
 * be malformed, which its decoder reports. */
int msg_type_of(const void *buf, size_t len, int *type, char *err) TG_MUST_CHECK;

/* Decoders: fill *out (all owned copies) from a whole frame; 0 ok, -1 with
 * err on any malformation (out is then left empty).  Free with *_free. */
int msg_webhook_decode(const void *buf, size_t len, struct msg_webhook *out, char *err) TG_MUST_CHECK;
int msg_result_decode(const void *buf, size_t len, struct msg_result *out, char *err) TG_MUST_CHECK;
int msg_command_decode(const void *buf, size_t len, struct tg_command *out, char *err) TG_MUST_CHECK;
int msg_outcome_decode(const void *buf, size_t len, struct msg_outcome *out, char *err) TG_MUST_CHECK;
int msg_append_decode(const void *buf, size_t len, struct msg_append *out, char *err) TG_MUST_CHECK;
int msg_progress_decode(const void *buf, size_t len, struct msg_progress *out, char *err) TG_MUST_CHECK;
int msg_settled_decode(const void *buf, size_t len, struct msg_settled *out, char *err) TG_MUST_CHECK;

/* Command map without envelope, as stored in the spine's outbox. */
void msg_command_pack(msgpack_packer *pk, const struct tg_command *c);
/* The same map with room for `extra` more key/value pairs, which the caller
 * packs right after. */
void msg_command_pack_extra(msgpack_packer *pk, const struct tg_command *c, size_t extra);
int msg_command_unpack(const msgpack_object *map, struct tg_command *out, char *err) TG_MUST_CHECK;

void tg_event_free(struct tg_event *e);
void tg_command_free(struct tg_command *c);
void msg_webhook_free(struct msg_webhook *m);
void msg_result_free(struct msg_result *m);
void msg_outcome_free(struct msg_outcome *m);
void msg_append_free(struct msg_append *m);
void msg_progress_free(struct msg_progress *m);

#endif
