/* zip.h — read-only access to the zip archive that torch.save writes (a .pth file).
   The whole file is read into memory once and every header is parsed from that buffer, so each offset can
   be checked against one known size instead of trusting seeks. Only what PyTorch produces is supported:
   single-disk archives, stored or deflated entries, no encryption, no zip64 sizes (a zip64 end record that
   merely repeats the 32-bit one, as PyTorch always writes, is ignored). Anything else is refused with a
   message naming the file and the entry. */
#ifndef ELANSR_LOADER_ZIP_H
#define ELANSR_LOADER_ZIP_H

#include <stddef.h>
#include <stdint.h>
#include "elansr.h"

typedef struct elan_zip elan_zip;

/* Reads the file at path and parses its central directory. `path` is also the label of every message. */
elansr_status elan_zip_open(const char *path, elan_zip **out);
/* Same over bytes already in memory (copied); `label` names them in messages. */
elansr_status elan_zip_open_memory(const char *label, const void *data, size_t size, elan_zip **out);
void elan_zip_close(elan_zip *z); /* NULL is fine */

size_t elan_zip_count(const elan_zip *z);
const char *elan_zip_name(const elan_zip *z, size_t i);
/* Uncompressed size the central directory declares (checked again when the entry is read). */
size_t elan_zip_size(const elan_zip *z, size_t i);
/* 1 and *index when an entry has exactly this name, else 0. */
int elan_zip_find(const elan_zip *z, const char *name, size_t *index);
/* The entry's uncompressed bytes, CRC-checked. Decoded once and kept: the pointer stays valid until
   elan_zip_close, so callers may ask for the same entry many times without cost. */
elansr_status elan_zip_get(elan_zip *z, size_t i, const uint8_t **data, size_t *size);

/* Copies at most len bytes of s (stopping at a NUL) into dst (cap >= 8) for a one-line message: bytes outside
   printable ASCII become '?', and a long string is cut with "...". Names in a checkpoint are untrusted. */
const char *elan_printable(char *dst, size_t cap, const char *s, size_t len);

#endif
