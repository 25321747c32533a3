/*
 * config.h - telgate configuration: one declarative table of keys (name,
 * type, default, bounds, description) from which parsing, validation and the
 * help text are derived.  Shared by every binary.
 *
 * Sources, highest precedence first: environment TEL_<KEY>, the config file,
 * the built-in default.  The file is `-c PATH`, else $TEL_CONFIG, else
 * ./tel.conf if present, else none.  In the file a '#' at the start of a line
 * or after whitespace starts a comment; TEL_<KEY> values are taken whole.
 */
#ifndef TG_CONFIG_H
#define TG_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "util.h"

enum reject_mode { REJECT_ANNOUNCE, REJECT_BUSY };
/* Attestation levels, ordered so that a larger value is stronger. */
enum attestation { ATTEST_NONE = 0, ATTEST_C = 1, ATTEST_B = 2, ATTEST_A = 3 };

struct tg_config {
    char *config_path;          /* file that was read, or NULL */

    char *http_listen;
    char *data_dir;
    char *namespace_;
    char *telnyx_public_key;
    bool allow_unsigned_webhooks;
    int64_t signature_tolerance_s;
    char *telnyx_api_url;
    char *telnyx_api_key;
    int64_t max_body_bytes;
    int reject_mode;            /* enum reject_mode */
    char *announce_text;
    char *announce_voice;
    char *announce_language;
    int min_attestation;        /* enum attestation */
    char *numbers_file;
    char *trusted_issuers;

    char *verifier_endpoint;
    char *spine_endpoint;
    char *actuator_endpoint;
    char *events_endpoint;
    char *progress_endpoint;
    char *replay_endpoint;

    int64_t http_threads;
    int64_t http_request_timeout_ms;
    int64_t journal_max_bytes;
    int64_t journal_retention_s;
    int64_t redeliver_after_ms;
    int64_t max_attempts;
    int64_t command_timeout_ms;
    int64_t command_backoff_initial_ms;
    int64_t command_backoff_max_ms;
    int64_t command_give_up_s;
    int64_t command_resend_ms;
    int64_t spine_batch_max;
    char *log_level;
};

/*
 * Load the configuration.  cli_path is the -c argument or NULL.
 * Returns 0, or -1 with err naming the offending key (the caller exits 2).
 * Endpoints left empty are derived from data_dir (ipc://DATA_DIR/run/...).
 * Also applies log_level.  Free with config_free().
 */
int config_load(struct tg_config *cfg, const char *cli_path, char *err) TG_MUST_CHECK;
void config_free(struct tg_config *cfg);

/* Print the key table (name, default, description) for --help. */
void config_print_help(FILE *out);
/* Print the effective configuration as key = value lines (secrets masked). */
void config_print(const struct tg_config *cfg, FILE *out);

/* Parse "A", "B", "C", "none" (also used for webhook attestation fields). */
int config_attestation_parse(const char *s, int *out) TG_MUST_CHECK;
const char *config_attestation_name(int level);

/* Is voice one of Telnyx's basic voices (male, female)?  They need
 * service_level basic in the speak command and speak only en-US. */
bool config_voice_is_basic(const char *voice);

#endif
