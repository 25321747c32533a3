/*
 * keyfile.h - Ed25519 key files: a secret key file holds the base64 32-byte
 * seed on one line, mode 0600; a public key is base64 of 32 bytes.  Used by
 * telctl (keygen, issuer, cert, token) and the verifier (issuer.pub).
 */
#ifndef TG_KEYFILE_H
#define TG_KEYFILE_H

#include <stdint.h>
#include <sodium.h>

#include "util.h"

/* Generate a key pair and write the secret seed to path with mode 0600.
 * Refuses to overwrite an existing file.  pk receives the public key. */
int keyfile_generate(const char *path, uint8_t pk[crypto_sign_PUBLICKEYBYTES], char *err) TG_MUST_CHECK;

/* Read a secret key file.  Refused (with err) when the file can be read or
 * written by group or others, or is malformed.  sk is the 64-byte libsodium
 * secret key; wipe it with sodium_memzero after use. */
int keyfile_read_secret(const char *path, uint8_t sk[crypto_sign_SECRETKEYBYTES],
                        uint8_t pk[crypto_sign_PUBLICKEYBYTES], char *err) TG_MUST_CHECK;

/* Parse base64 text (surrounding white space allowed) of a 32-byte public key. */
int keyfile_parse_public(const char *text, uint8_t pk[crypto_sign_PUBLICKEYBYTES], char *err) TG_MUST_CHECK;

/* Read a file holding one base64 public key. */
int keyfile_read_public(const char *path, uint8_t pk[crypto_sign_PUBLICKEYBYTES], char *err) TG_MUST_CHECK;

/* Write a public key file (mode 0644, atomically via rename). */
int keyfile_write_public(const char *path, const uint8_t pk[crypto_sign_PUBLICKEYBYTES], char *err) TG_MUST_CHECK;

#endif
