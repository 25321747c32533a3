/*
 * keyfile.c - Ed25519 key files (see keyfile.h).
 */
#include "keyfile.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int b64_32(const char *text, uint8_t out[32], char *err, const char *what)
{
    while (isspace((unsigned char)*text))
        text++;
    size_t n = strlen(text);
    while (n > 0 && isspace((unsigned char)text[n - 1]))
        n--;
    size_t len = 0;
    if (tg_b64_decode(text, n, out, 32, &len) != 0 || len != 32)
        return tg_err(err, "%s is not base64 of 32 bytes", what);
    return 0;
}

int keyfile_generate(const char *path, uint8_t pk[crypto_sign_PUBLICKEYBYTES], char *err)
{
    uint8_t seed[crypto_sign_SEEDBYTES], sk[crypto_sign_SECRETKEYBYTES];
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return tg_err(err, "%s: %s", path, errno == EEXIST ? "already exists (refusing to overwrite a key)" : strerror(errno));
    randombytes_buf(seed, sizeof seed);
    crypto_sign_seed_keypair(pk, sk, seed);
    char *b64 = tg_b64_encode(seed, sizeof seed);
    size_t n = strlen(b64);
    int rc = 0;
    if (fchmod(fd, 0600) != 0 || tg_write_all(fd, b64, n) != 0 || tg_write_all(fd, "\n", 1) != 0 ||
        fsync(fd) != 0)
        rc = tg_err(err, "%s: %s", path, strerror(errno));
    sodium_memzero(b64, n);
    free(b64);
    sodium_memzero(seed, sizeof seed);
    sodium_memzero(sk, sizeof sk);
    close(fd);
    if (rc != 0)
        unlink(path);
    return rc;
}

int keyfile_read_secret(const char *path, uint8_t sk[crypto_sign_SECRETKEYBYTES],
                        uint8_t pk[crypto_sign_PUBLICKEYBYTES], char *err)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return tg_err(err, "%s: %s", path, strerror(errno));
    if (st.st_mode & 077)
        return tg_err(err, "%s: secret key is accessible by group or others (mode %03o); chmod 600 it",
                      path, (unsigned)(st.st_mode & 0777));
    char *text = NULL;
    if (tg_read_file(path, 4096, &text, NULL, err) != 0)
        return -1;
    uint8_t seed[crypto_sign_SEEDBYTES];
    int rc = b64_32(text, seed, err, path);
    if (rc == 0)
        crypto_sign_seed_keypair(pk, sk, seed);
    sodium_memzero(seed, sizeof seed);
    sodium_memzero(text, strlen(text));
    free(text);
    return rc;
}

int keyfile_parse_public(const char *text, uint8_t pk[crypto_sign_PUBLICKEYBYTES], char *err)
{
    return b64_32(text, pk, err, "public key");
}

int keyfile_read_public(const char *path, uint8_t pk[crypto_sign_PUBLICKEYBYTES], char *err)
{
    char *text = NULL;
    if (tg_read_file(path, 4096, &text, NULL, err) != 0)
        return -1;
    int rc = b64_32(text, pk, err, path);
    free(text);
    return rc;
}

int keyfile_write_public(const char *path, const uint8_t pk[crypto_sign_PUBLICKEYBYTES], char *err)
{
    char *tmp = xasprintf("%s.tmp", path);
    char *b64 = tg_b64_encode(pk, crypto_sign_PUBLICKEYBYTES);
    int rc = 0;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || tg_write_all(fd, b64, strlen(b64)) != 0 || tg_write_all(fd, "\n", 1) != 0 ||
        fsync(fd) != 0 || rename(tmp, path) != 0)
        rc = tg_err(err, "%s: %s", path, strerror(errno));
    if (fd >= 0)
        close(fd);
    if (rc != 0)
        unlink(tmp);
    free(b64);
    free(tmp);
    return rc;
}
