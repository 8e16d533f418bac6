/* common.c — per-thread error buffer and overflow-checked allocation (see common.h). */
#include "common.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static _Thread_local char g_error[1024];

elansr_status elansr_fail(elansr_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_error, sizeof g_error, fmt, ap);
    va_end(ap);
    return st;
}

void elansr_clear_error(void) { g_error[0] = '\0'; }

const char *elansr_last_error(void) { return g_error; }

int elansr_mul_size(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > SIZE_MAX / a) return 0;
    *out = a * b;
    return 1;
}

void *elansr_malloc_array(size_t count, size_t elem_size) {
    size_t bytes;
    if (!elansr_mul_size(count, elem_size, &bytes)) return NULL;
    return malloc(bytes ? bytes : 1);
}

void *elansr_calloc_array(size_t count, size_t elem_size) {
    size_t bytes;
    if (!elansr_mul_size(count, elem_size, &bytes)) return NULL;
    return calloc(bytes ? count : 1, bytes ? elem_size : 1);
}
