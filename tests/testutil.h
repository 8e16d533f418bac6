/* testutil.h — tiny test harness: CHECK macros that count failures, a seeded RNG for random (never zero)
   inputs, the path of ../shared, and a skip convention (exit code 77, which CTest reports as skipped). */
#ifndef ELANSR_TESTUTIL_H
#define ELANSR_TESTUTIL_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int t_failures = 0;

#define CHECK(cond)                                                                   \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);  \
            t_failures++;                                                             \
        }                                                                             \
    } while (0)

#define CHECK_MSG(cond, ...)                                                          \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond);  \
            fprintf(stderr, __VA_ARGS__);                                             \
            fputc('\n', stderr);                                                      \
            t_failures++;                                                             \
        }                                                                             \
    } while (0)

#define TEST_SKIP_CODE 77

static inline int test_finish(const char *name) {
    if (t_failures) {
        fprintf(stderr, "%s: %d check(s) failed\n", name, t_failures);
        return 1;
    }
    printf("%s: ok\n", name);
    return 0;
}

/* xorshift64*: deterministic per seed, uniform in [lo, hi). */
static uint64_t t_rng_state = 0x9E3779B97F4A7C15ull;
static inline void t_seed(uint64_t s) { t_rng_state = s ? s : 1; }
static inline uint64_t t_next(void) {
    t_rng_state ^= t_rng_state >> 12;
    t_rng_state ^= t_rng_state << 25;
    t_rng_state ^= t_rng_state >> 27;
    return t_rng_state * 0x2545F4914F6CDD1Dull;
}
static inline float t_uniform(float lo, float hi) {
    return lo + (hi - lo) * (float)((t_next() >> 40) * (1.0 / 16777216.0));
}
static inline void t_fill(float *x, size_t n, float lo, float hi) {
    for (size_t i = 0; i < n; i++) x[i] = t_uniform(lo, hi);
}

/* ../shared as seen from the build: CMake passes ELANSR_SHARED_DIR; the environment can override it. */
static inline const char *t_shared_dir(void) {
    const char *e = getenv("ELANSR_SHARED");
    if (e && *e) return e;
#ifdef ELANSR_SHARED_DIR
    return ELANSR_SHARED_DIR;
#else
    return "../shared";
#endif
}
static inline const char *t_model_path(void) {
    static char buf[4096];
    snprintf(buf, sizeof buf, "%s/models/elan-light-x4.pth", t_shared_dir());
    return buf;
}
/* Scratch folder for files a test makes (CMake passes the build's tests/tmp). */
static inline const char *t_tmp_dir(void) {
#ifdef ELANSR_TEST_TMP
    return ELANSR_TEST_TMP;
#else
    return "/tmp";
#endif
}

/* Poison an output with NaN before a run, then count what the run left unwritten. */
static inline void poison(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = NAN;
}
static inline size_t count_nan(const float *x, size_t n) {
    size_t c = 0;
    for (size_t i = 0; i < n; i++) c += x[i] != x[i];
    return c;
}

static inline double t_max_abs_diff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= m)) m = d; /* NaN propagates as a failure */
    }
    return m;
}

#endif
