/*
 * crc32c.h - CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the
 * checksum of journal records (protocol.md section 3).  No telgate knowledge;
 * used by the ingress and telctl replay through common/journal.
 */
#ifndef TG_CRC32C_H
#define TG_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/*
 * Extend crc with n bytes of buf and return the new value.  Start with 0;
 * chaining works: crc32c(crc32c(0, a, na), b, nb) == crc32c(0, a||b, na+nb).
 * "123456789" gives 0xE3069283.  Thread-safe (the tables are built once).
 */
uint32_t crc32c(uint32_t crc, const void *buf, size_t n);

#endif
