/* counter: a lock in global memory (a field of a struct from dsm_malloc) protects a counter
 * that every node increments; an atomic counter runs beside it.
 *
 *   cc counter.c $(pkg-config --cflags --libs dsm) -o counter && dsmrun -n 4 ./counter [rounds]
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <dsm.h>

struct counter {
    dsm_lock_t lock;
    long value;       /* protected by the lock */
    uint64_t atomic;  /* updated with dsm_atomic_fetch_add_u64 */
};

int main(int argc, char **argv) {
    if (dsm_init(&argc, &argv) != DSM_OK) {
        fprintf(stderr, "dsm_init: %s\n", dsm_last_error_message());
        return 1;
    }
    int me = dsm_rank(), n = dsm_nodes();
    long rounds = argc > 1 ? atol(argv[1]) : 1000;

    /* Rank 0 allocates the counter from its heap and hands the pointer to everyone. */
    struct counter *c = NULL;
    if (me == 0) {
        c = dsm_calloc(1, sizeof *c);
        if (c == NULL || dsm_lock_init(&c->lock) != DSM_OK) {
            fprintf(stderr, "setup: %s\n", dsm_last_error_message());
            return 1;
        }
    }
    dsm_broadcast(&c, sizeof c, 0);
    dsm_barrier();

    double t0 = dsm_wtime();
    for (long i = 0; i < rounds; i++) {
        dsm_lock(&c->lock);
        c->value++;
        dsm_unlock(&c->lock);
        dsm_atomic_fetch_add_u64(&c->atomic, 1);
    }
    double t = dsm_wtime() - t0;
    dsm_barrier();

    int ok = c->value == (long)n * rounds && dsm_atomic_load_u64(&c->atomic) == (uint64_t)(n * rounds);
    printf("rank %d: counter %ld, atomic %lu, expected %ld: %s (%.2f us per lock round trip)\n", me,
           c->value, (unsigned long)dsm_atomic_load_u64(&c->atomic), (long)n * rounds,
           ok ? "ok" : "WRONG", 1e6 * t / (double)rounds);
    dsm_barrier();
    if (me == 0) dsm_free(c);
    dsm_finalize();
    return ok ? 0 : 1;
}
