/* Assertions for the C tests: a failed check prints where and why, then exits with status 1. */
#ifndef DSM_TEST_CHECK_H
#define DSM_TEST_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#include <dsm.h>

#define CHECK(cond)                                                                       \
    do {                                                                                  \
        if (!(cond)) {                                                                    \
            fprintf(stderr, "%s:%d: check failed: %s (last error %d: %s)\n", __FILE__,   \
                    __LINE__, #cond, dsm_last_error(), dsm_last_error_message());        \
            exit(1);                                                                      \
        }                                                                                 \
    } while (0)

/* `call` must return the status `want`. */
#define CHECK_STATUS(call, want)                                                          \
    do {                                                                                  \
        int got_ = (call);                                                                \
        if (got_ != (want)) {                                                             \
            fprintf(stderr, "%s:%d: %s returned %d (%s: %s), expected %s\n", __FILE__,   \
                    __LINE__, #call, got_, dsm_strerror(got_), dsm_last_error_message(),  \
                    #want);                                                               \
            exit(1);                                                                      \
        }                                                                                 \
    } while (0)

#define CHECK_OK(call) CHECK_STATUS(call, DSM_OK)

/* The last error of this thread must be `want`. */
#define CHECK_LAST(want) CHECK_STATUS(dsm_last_error(), want)

#endif
