/*
 * telctl.h - the operator CLI's command table interface: every subcommand
 * (events, tail, verify, and later keygen, issuer, cert, token, replay,
 * status) is a telctl_cmd_fn living in its own telctl_<topic>.c file.
 */
#ifndef TELCTL_H
#define TELCTL_H

#include "config.h"
#include "util.h"

#define TELCTL_EXIT_OK 0
#define TELCTL_EXIT_FAIL 1     /* the operation failed */
#define TELCTL_EXIT_USAGE 2    /* bad arguments or configuration */

/*
 * A subcommand.  cfg: the loaded configuration (read-only).  argv[0] is the
 * command's name, argv[1..argc) its arguments.  Returns the process exit
 * status (TELCTL_EXIT_*), having printed one clear line on stderr on failure.
 */
typedef int (*telctl_cmd_fn)(const struct tg_config *cfg, int argc, char **argv);

/* Print "telctl CMD: <message>" and the command's usage line on stderr;
 * returns TELCTL_EXIT_USAGE. */
int telctl_usage(const char *cmd, const char *fmt, ...) TG_PRINTF(2, 3);
/* Print "telctl CMD: <message>" on stderr; returns TELCTL_EXIT_FAIL. */
int telctl_fail(const char *cmd, const char *fmt, ...) TG_PRINTF(2, 3);

/*
 * Option helper for "--name VALUE" and "--name=VALUE".  If argv[*i] is that
 * option, sets *value (pointing into argv), advances *i past the value and
 * returns 1; returns 0 if argv[*i] is something else, -1 if the value is
 * missing.
 */
int telctl_opt(int argc, char **argv, int *i, const char *name, const char **value);

/* telctl_events.c */
int telctl_events(const struct tg_config *cfg, int argc, char **argv);
int telctl_tail(const struct tg_config *cfg, int argc, char **argv);
int telctl_verify(const struct tg_config *cfg, int argc, char **argv);

/* telctl_cert.c */
int telctl_keygen(const struct tg_config *cfg, int argc, char **argv);
int telctl_issuer(const struct tg_config *cfg, int argc, char **argv);
int telctl_cert(const struct tg_config *cfg, int argc, char **argv);
int telctl_token(const struct tg_config *cfg, int argc, char **argv);

/* telctl_status.c */
int telctl_status(const struct tg_config *cfg, int argc, char **argv);

#endif
