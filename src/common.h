/* common.h — internal helpers shared by every part of the library: error reporting and checked allocation.
   Errors are reported once, at the point where the cause is known, into a per-thread buffer that the public
   elansr_last_error() returns; callers only propagate the status. */
#ifndef ELANSR_COMMON_H
#define ELANSR_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include "elansr.h"

#if defined(__GNUC__)
#define ELANSR_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define ELANSR_PRINTF(a, b)
#endif

/* Formats a one-line message into this thread's error buffer and returns st, so that
   `return elansr_fail(ELANSR_ERR_IO, "%s: cannot open", path);` reads naturally. */
elansr_status elansr_fail(elansr_status st, const char *fmt, ...) ELANSR_PRINTF(2, 3);
void elansr_clear_error(void);

/* malloc/calloc that refuse sizes whose product overflows size_t; return NULL on failure
   (callers report ELANSR_ERR_NOMEM with their own context). */
void *elansr_malloc_array(size_t count, size_t elem_size);
void *elansr_calloc_array(size_t count, size_t elem_size);
/* Checked multiplication: returns 0 on overflow. */
int elansr_mul_size(size_t a, size_t b, size_t *out);

#endif
