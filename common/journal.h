/*
 * journal.h - the ingress journal on disk (protocol.md section 3): record
 * encoding, a sequential reader over one dump file, listing of dump files and
 * start-up recovery.  No ingress specifics: used by the ingress (writer,
 * recovery) and by telctl replay (reader).
 */
#ifndef TG_JOURNAL_H
#define TG_JOURNAL_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define JOURNAL_MAGIC 0x54474a31u         /* "TGJ1" */
#define JOURNAL_HDR_LEN 12u               /* magic, length, CRC-32C: u32 BE each */
#define JOURNAL_MAX_PAYLOAD (4u << 20)    /* payload length must be in [1, this] */
#define JOURNAL_SUBDIR "journal"          /* under data_dir */
#define JOURNAL_NAME_LEN 22               /* "%016llu.dump" + NUL */

/* One journaled webhook.  All pointers owned by the record; ts and sig may be
 * NULL (header absent).  Free with journal_record_free(). */
struct journal_record {
    uint64_t jseq;          /* journal sequence number, >= 1 */
    uint64_t recv_us;       /* receive time, µs since the epoch */
    char *ts;               /* telnyx-timestamp header, or NULL */
    char *sig;              /* telnyx-signature-ed25519 header, or NULL */
    uint8_t *body;          /* raw body exactly as received */
    size_t body_len;
};

/* Free the fields of rec and zero it (rec itself is not freed). */
void journal_record_free(struct journal_record *rec);

/*
 * Append one whole record (12-byte header + msgpack payload) to sb.  The
 * record's fields are only read (the caller keeps ownership); body may be
 * NULL when body_len is 0.  Returns 0, or -1 with err when the payload would
 * exceed JOURNAL_MAX_PAYLOAD (sb is then left as it was).
 */
int journal_record_encode(msgpack_sbuffer *sb, const struct journal_record *rec,
                          char *err) TG_MUST_CHECK;

/*
 * Decode one record from buf (header + payload, exactly len bytes).  Fills
 * *rec with owned copies.  0 ok, -1 with err (bad magic, length, CRC, payload).
 */
int journal_record_decode(const void *buf, size_t len, struct journal_record *rec,
                          char *err) TG_MUST_CHECK;

/* What journal_reader_next() found. */
enum journal_status {
    JOURNAL_OK,        /* a record was decoded */
    JOURNAL_END,       /* clean end of file, right after a good record; the
                          rest of the file may be zeros (the ingress writes
                          them ahead of its records) */
    JOURNAL_TORN,      /* incomplete header or payload at end of file, or a
                          last record that fails its CRC with only zeros
                          after it: a write that never completed */
    JOURNAL_CORRUPT,   /* bad magic, length outside [1, 4 MiB], CRC mismatch,
                          payload that does not decode, jseq not increasing */
};

/* Name of a status ("ok", "end", "torn", "corrupt"). */
const char *journal_status_name(enum journal_status st);

struct journal_reader;

/* Open path for sequential reading.  0 and *out (caller closes with
 * journal_reader_close), or -1 with err. */
int journal_reader_open(const char *path, struct journal_reader **out, char *err) TG_MUST_CHECK;

/*
 * Read the next record into *rec (owned by the caller, free with
 * journal_record_free) when JOURNAL_OK.  For TORN and CORRUPT err says what
 * and where; once a non-OK status is returned the reader stays there.
 * An I/O error is reported as JOURNAL_CORRUPT with the errno text in err.
 */
enum journal_status journal_reader_next(struct journal_reader *r, struct journal_record *rec,
                                        char *err);

/* Byte offset just after the last good record (0 before the first). */
uint64_t journal_reader_good_offset(const struct journal_reader *r);
/* jseq of the last good record read (0 if none). */
uint64_t journal_reader_last_jseq(const struct journal_reader *r);

/* Close and NULL *r (no-op on NULL). */
void journal_reader_close(struct journal_reader **r);

/* Build the file name of a dump whose first record is jseq. */
void journal_file_name(uint64_t jseq, char out[JOURNAL_NAME_LEN]);

/*
 * List the dump files of dir (names "%016llu.dump" exactly; *.corrupt and
 * anything else are skipped), sorted by name, which is write order.
 * *names is an array of *n file names (not paths); the caller frees it with
 * journal_names_free().  A missing directory is an empty list.
 * 0 ok, -1 with err.
 */
int journal_list(const char *dir, char ***names, size_t *n, char *err) TG_MUST_CHECK;
void journal_names_free(char ***names, size_t n);

/*
 * Start-up recovery of the journal directory dir (created if missing).
 *
 *   for each dump file, oldest first:
 *     read records until not OK
 *       END                       -> file is good; zeros after its last
 *                                    record are cut off (ftruncate, fsync)
 *       TORN and newest file      -> ftruncate to the last good record, fsync
 *       TORN, not newest          -> rename to <name>.corrupt (log_error)
 *       CORRUPT in the newest     -> copy to <name>.corrupt, then ftruncate
 *                                    to the last good record (log_error)
 *       CORRUPT in an older file  -> rename to <name>.corrupt (log_error)
 *
 * Renamed files are kept for the operator.  Never fails because of a file's
 * content, only on I/O errors on the directory or a truncate that fails.
 * *next_jseq is one more than the largest good jseq seen in any file, or 1
 * for an empty journal; it is at least the jseq any dump file is named
 * after (an empty file left after older ones were pruned keeps the
 * numbering going), and it is also past every jseq a renamed file could
 * hold (its first jseq + its size / 13), so no jseq is ever handed out twice.
 * 0 ok, -1 with err.
 */
int journal_recover(const char *dir, uint64_t *next_jseq, char *err) TG_MUST_CHECK;

/* fsync a directory (after creating or renaming a file in it); 0 or -1 with err. */
int journal_dir_sync(const char *dir, char *err) TG_MUST_CHECK;

/*
 * Read and decode the one record of len bytes (header included) at byte
 * offset off of the open dump file fd, without moving its file position.
 * Fills *rec with owned copies (free with journal_record_free).  0 ok, -1
 * with err: short read (file truncated or deleted), I/O error, or a record
 * that does not decode (magic, length, CRC, payload).
 */
int journal_record_pread(int fd, uint64_t off, size_t len, struct journal_record *rec,
                         char *err) TG_MUST_CHECK;

/*
 * Deletion decision for one dump file.  File N covers the jseqs
 * [first jseq of N, first jseq of N+1); next_first is the first jseq of the
 * following file (0 when N is the newest, i.e. the one being written, which
 * is never deletable).  Deletable when every jseq of its range is <= low
 * (all acknowledged) and it is at least retention_s old (age_s = now -
 * mtime; retention 0 = as soon as processed).
 */
bool journal_file_prunable(uint64_t next_first, uint64_t low, int64_t age_s, int64_t retention_s);

/*
 * Delete the dump files of dir that journal_file_prunable() allows, given
 * the acknowledged low mark and now_s (Unix seconds); files whose first jseq
 * is >= current_first (the file being written) are always kept, and so are
 * *.corrupt files and subdirectories (journal_list never lists them).  The
 * directory is fsynced when something was deleted.  *deleted gets the number
 * of files removed and *remaining the number of dump files left.
 * 0 ok, -1 with err (listing, stat or unlink failure; files deleted before
 * the failure stay deleted and are counted).
 */
int journal_prune(const char *dir, uint64_t current_first, uint64_t low, int64_t retention_s,
                  int64_t now_s, size_t *deleted, size_t *remaining, char *err) TG_MUST_CHECK;

#endif
