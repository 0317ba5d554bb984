/* The documented error of every misuse, never a crash: before dsm_init, with bad arguments,
 * and after dsm_finalize. */
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "check.h"

static void before_init(void) {
    CHECK(dsm_initialized() == 0);
    CHECK_STATUS(dsm_rank(), DSM_ERR_NOT_INITIALIZED);
    CHECK_STATUS(dsm_nodes(), DSM_ERR_NOT_INITIALIZED);
    CHECK_STATUS(dsm_barrier(), DSM_ERR_NOT_INITIALIZED);
    CHECK_STATUS(dsm_acquire(), DSM_ERR_NOT_INITIALIZED);
    CHECK_STATUS(dsm_release(), DSM_ERR_NOT_INITIALIZED);
    CHECK(dsm_malloc(8) == NULL);
    CHECK_LAST(DSM_ERR_NOT_INITIALIZED);
    CHECK(strstr(dsm_last_error_message(), "dsm_init") != NULL);
    CHECK(dsm_alloc_collective(8) == NULL);
    CHECK_LAST(DSM_ERR_NOT_INITIALIZED);
    dsm_lock_t l;
    CHECK_STATUS(dsm_lock(&l), DSM_ERR_NOT_INITIALIZED);
    CHECK(dsm_atomic_fetch_add_u64((uint64_t *)&l, 1) == 0);
    CHECK_LAST(DSM_ERR_NOT_INITIALIZED);
    dsm_stats_t st;
    CHECK_STATUS(dsm_stats_get(&st), DSM_ERR_NOT_INITIALIZED);
    CHECK_STATUS(dsm_finalize(), DSM_ERR_NOT_INITIALIZED);
    /* What works before dsm_init. */
    CHECK(dsm_wtime() >= 0.0);
    CHECK(dsm_strerror(DSM_OK) != NULL);
    CHECK(strstr(dsm_strerror(12345), "unknown") != NULL);
}

static void bad_arguments(void) {
    int me = dsm_rank();
    uint64_t local_word = 0;
    dsm_lock_t local_lock;

    /* NULL pointers. */
    CHECK_STATUS(dsm_lock_init(NULL), DSM_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(dsm_lock(NULL), DSM_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(dsm_trylock(NULL), DSM_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(dsm_unlock(NULL), DSM_ERR_INVALID_ARGUMENT);
    CHECK(dsm_atomic_load_u64(NULL) == 0);
    CHECK_LAST(DSM_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(dsm_stats_get(NULL), DSM_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(dsm_broadcast(NULL, 8, 0), DSM_ERR_INVALID_ARGUMENT);
    dsm_free(NULL); /* like free(NULL): nothing */
    CHECK_LAST(DSM_OK);

    /* Pointers outside global memory. */
    CHECK_STATUS(dsm_lock_init(&local_lock), DSM_ERR_NOT_GLOBAL);
    CHECK_STATUS(dsm_lock(&local_lock), DSM_ERR_NOT_GLOBAL);
    CHECK(dsm_atomic_fetch_add_u64(&local_word, 1) == 0);
    CHECK_LAST(DSM_ERR_NOT_GLOBAL);
    CHECK(local_word == 0);
    dsm_atomic_store_u64(&local_word, 5);
    CHECK_LAST(DSM_ERR_NOT_GLOBAL);
    CHECK(local_word == 0);
    void *heap = malloc(16);
    dsm_free(heap);
    CHECK_LAST(DSM_ERR_NOT_GLOBAL);
    free(heap);
    dsm_free_collective(&local_word);
    CHECK_LAST(DSM_ERR_NOT_GLOBAL);

    /* Misaligned words and locks inside global memory. */
    uint8_t *g = dsm_alloc_collective(4096);
    CHECK(g != NULL);
    CHECK_STATUS(dsm_lock_init((dsm_lock_t *)(g + 8)), DSM_ERR_MISALIGNED);
    CHECK(dsm_atomic_load_u64((uint64_t *)(g + 4)) == 0);
    CHECK_LAST(DSM_ERR_MISALIGNED);
    CHECK(dsm_atomic_compare_exchange_u64((uint64_t *)(g + 1), 0, 1) == 0);
    CHECK_LAST(DSM_ERR_MISALIGNED);

    /* Frees of things that are not live allocations. */
    uint8_t *block = dsm_malloc(64);
    CHECK(block != NULL);
    dsm_free(block + 16);
    CHECK_LAST(DSM_ERR_INVALID_POINTER);
    dsm_free(block);
    CHECK_LAST(DSM_OK);
    dsm_free(block);
    CHECK_LAST(DSM_ERR_INVALID_POINTER); /* double free */
    dsm_free_collective(g + 4096 * 0 + 64);
    CHECK_LAST(DSM_ERR_INVALID_POINTER);

    /* Allocation beyond the heap: NULL and nothing lost. */
    CHECK(dsm_malloc((size_t)1 << 60) == NULL);
    CHECK_LAST(DSM_ERR_OUT_OF_MEMORY);
    CHECK(dsm_calloc(SIZE_MAX / 2, 4) == NULL);
    CHECK_LAST(DSM_ERR_OUT_OF_MEMORY);
    CHECK(dsm_alloc_collective((size_t)1 << 60) == NULL);
    CHECK_LAST(DSM_ERR_OUT_OF_MEMORY);
    CHECK(dsm_alloc_collective_placed(4096, 42, 0) == NULL);
    CHECK_LAST(DSM_ERR_INVALID_ARGUMENT);
    uint64_t *still = dsm_malloc(64);
    CHECK(still != NULL);
    dsm_free(still);
    CHECK_LAST(DSM_OK);

    /* Collectives with a bad root; statistics to bad descriptors. */
    CHECK_STATUS(dsm_broadcast(&local_word, 8, -1), DSM_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(dsm_broadcast(&local_word, 8, dsm_nodes()), DSM_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(dsm_stats_print(-1), DSM_ERR_INVALID_ARGUMENT);
    int fds[2];
    CHECK(pipe(fds) == 0);
    close(fds[0]); /* nobody reads: the write fails with EPIPE (dsm_init ignored SIGPIPE) */
    CHECK_STATUS(dsm_stats_print(fds[1]), DSM_ERR_IO);
    close(fds[1]);

    /* A second dsm_init. */
    CHECK_STATUS(dsm_init(NULL, NULL), DSM_ERR_ALREADY_INITIALIZED);

    /* The runtime still works after all of that. */
    CHECK_OK(dsm_barrier());
    dsm_free_collective(g);
    CHECK_LAST(DSM_OK);
    dsm_free_collective(g);
    CHECK_LAST(DSM_ERR_INVALID_POINTER); /* double free */
    (void)me;
}

/* Lock misuse: an error that changes nothing, never a broken lock. A foreign unlock (of a lock
 * another node holds), an unlock of a free lock and a second unlock are DSM_ERR_NOT_HELD; a
 * lock taken again by its holder is DSM_ERR_DEADLOCK; afterwards mutual exclusion holds. */
static void lock_misuse(void) {
    int me = dsm_rank(), n = dsm_nodes();
    struct shared { dsm_lock_t lock; uint64_t inside, max_inside, count; } *s =
        dsm_alloc_collective(sizeof *s);
    CHECK(s != NULL);
    if (me == 0) CHECK_OK(dsm_lock_init(&s->lock));
    CHECK_OK(dsm_barrier());

    CHECK_STATUS(dsm_unlock(&s->lock), DSM_ERR_NOT_HELD); /* free: nobody holds it */
    CHECK(strstr(dsm_last_error_message(), "not held") != NULL);
    CHECK_OK(dsm_barrier());
    if (me == 0) {
        CHECK_OK(dsm_lock(&s->lock));
        CHECK_STATUS(dsm_lock(&s->lock), DSM_ERR_DEADLOCK); /* would wait for itself */
        CHECK_STATUS(dsm_trylock(&s->lock), DSM_BUSY);
        CHECK_LAST(DSM_BUSY);
        CHECK(strstr(dsm_last_error_message(), "taken") != NULL);
    }
    CHECK_OK(dsm_barrier()); /* rank 0 holds it */
    if (me != 0) {
        CHECK_STATUS(dsm_unlock(&s->lock), DSM_ERR_NOT_HELD); /* another node's lock */
        CHECK_STATUS(dsm_trylock(&s->lock), DSM_BUSY);         /* still rank 0's */
    }
    CHECK_OK(dsm_barrier());
    if (me == 0) {
        CHECK_OK(dsm_unlock(&s->lock));
        CHECK_STATUS(dsm_unlock(&s->lock), DSM_ERR_NOT_HELD); /* a second unlock */
    }
    CHECK_OK(dsm_barrier());

    /* The lock still excludes: nobody is ever inside with someone else. */
    for (int i = 0; i < 50; i++) {
        CHECK_OK(dsm_lock(&s->lock));
        uint64_t in = ++s->inside;
        if (in > s->max_inside) s->max_inside = in;
        s->count++;
        s->inside--;
        CHECK_OK(dsm_unlock(&s->lock));
        if (me != 0 && i == 25) CHECK_STATUS(dsm_unlock(&s->lock), DSM_ERR_NOT_HELD);
    }
    CHECK_OK(dsm_barrier());
    CHECK(s->count == 50 * (uint64_t)n);
    CHECK(s->max_inside == 1);
    CHECK(s->inside == 0);
    CHECK_OK(dsm_barrier());
    dsm_free_collective(s);
    CHECK_LAST(DSM_OK);
}

/* Collective calls that differ between nodes fail on every node, naming the argument, and
 * change nothing: the heaps stay the same, so later allocations agree again. */
static void mismatched_collectives(void) {
    int me = dsm_rank(), n = dsm_nodes();
    if (n < 2) return;
    uint64_t *a = dsm_alloc_collective(me == 1 ? 8192 : 4096);
    CHECK(a == NULL);
    CHECK_LAST(DSM_ERR_INVALID_ARGUMENT);
    CHECK(strstr(dsm_last_error_message(), "bytes: from 4096 to 8192") != NULL);
    CHECK(dsm_alloc_collective_placed(4096, me == 0 ? DSM_PLACEMENT_CYCLIC : DSM_PLACEMENT_BLOCKED, 4096) == NULL);
    CHECK_LAST(DSM_ERR_INVALID_ARGUMENT);
    CHECK(strstr(dsm_last_error_message(), "placement") != NULL);

    /* Every node gets the same pointer afterwards, and the memory works. */
    uint64_t *b = dsm_alloc_collective(4096);
    CHECK(b != NULL);
    uint64_t *ptrs = dsm_alloc_collective(sizeof(uint64_t) * (size_t)n);
    CHECK(ptrs != NULL);
    ptrs[me] = (uint64_t)(uintptr_t)b;
    CHECK_OK(dsm_barrier());
    for (int r = 0; r < n; r++) CHECK(ptrs[r] == (uint64_t)(uintptr_t)b);

    /* A free on one node only, while the others are in a barrier: both fail, nothing freed. */
    if (me == 0) {
        dsm_free_collective(b);
        CHECK_LAST(DSM_ERR_INVALID_ARGUMENT);
        CHECK(strstr(dsm_last_error_message(), "not in the same collective call") != NULL);
    } else {
        CHECK_STATUS(dsm_barrier(), DSM_ERR_INVALID_ARGUMENT);
    }
    b[me] = 7; /* still allocated everywhere */
    CHECK_OK(dsm_barrier());
    for (int r = 0; r < n; r++) CHECK(b[r] == 7);
    CHECK_OK(dsm_barrier());
    dsm_free_collective(ptrs);
    CHECK_LAST(DSM_OK);
    dsm_free_collective(b);
    CHECK_LAST(DSM_OK);
}

/* Atomics and locks on malloc-arena memory that no block covers are DSM_ERR_UNALLOCATED and
 * change nothing, in this node's arena and in another's, as on the collective heap. */
static void unallocated_arena_words(void) {
    int me = dsm_rank(), n = dsm_nodes();
    uint64_t *mine = dsm_malloc(64);
    CHECK(mine != NULL);
    uint64_t *nowhere = mine + (1 << 17); /* 1 MiB further: never allocated */
    CHECK(dsm_atomic_fetch_add_u64(mine + 2, 5) == 0);
    CHECK_LAST(DSM_OK);
    CHECK(dsm_atomic_fetch_add_u64(nowhere, 1) == 0);
    CHECK_LAST(DSM_ERR_UNALLOCATED);
    CHECK(dsm_atomic_fetch_add_u64(mine + 8, 1) == 0); /* just past the 64-byte block */
    CHECK_LAST(DSM_ERR_UNALLOCATED);
    CHECK_STATUS(dsm_lock_init((dsm_lock_t *)nowhere), DSM_ERR_UNALLOCATED);
    CHECK_STATUS(dsm_lock((dsm_lock_t *)nowhere), DSM_ERR_UNALLOCATED);

    uint64_t **ptrs = dsm_alloc_collective(sizeof(uint64_t *) * (size_t)n);
    CHECK(ptrs != NULL);
    ptrs[me] = mine;
    CHECK_OK(dsm_barrier());
    uint64_t *theirs = ptrs[(me + 1) % n];
    CHECK(dsm_atomic_fetch_add_u64(theirs + 3, 1) == 0); /* live block: fine */
    CHECK_LAST(DSM_OK);
    if (n > 1) {
        CHECK(dsm_atomic_fetch_add_u64(theirs + (1 << 17), 1) == 0);
        CHECK_LAST(DSM_ERR_UNALLOCATED);
        CHECK_STATUS(dsm_lock((dsm_lock_t *)(theirs + (1 << 17))), DSM_ERR_UNALLOCATED);
    }
    CHECK_OK(dsm_barrier());
    CHECK(dsm_atomic_load_u64(mine + 3) == 1);
    CHECK(dsm_atomic_load_u64(mine + 2) == 5);
    CHECK_OK(dsm_barrier());
    dsm_free_collective(ptrs);
    CHECK_LAST(DSM_OK);
    dsm_free(mine);
    CHECK_LAST(DSM_OK);
    CHECK(dsm_atomic_fetch_add_u64(mine + 2, 1) == 0); /* freed: nothing covers it any more */
    CHECK_LAST(DSM_ERR_UNALLOCATED);
}

static void after_finalize(void) {
    CHECK(dsm_initialized() == 0);
    CHECK_STATUS(dsm_rank(), DSM_ERR_FINALIZED);
    CHECK_STATUS(dsm_barrier(), DSM_ERR_FINALIZED);
    CHECK(dsm_malloc(8) == NULL);
    CHECK_LAST(DSM_ERR_FINALIZED);
    CHECK_STATUS(dsm_finalize(), DSM_ERR_FINALIZED);
    CHECK_STATUS(dsm_init(NULL, NULL), DSM_ERR_FINALIZED);
}

int main(int argc, char **argv) {
    before_init();
    CHECK_OK(dsm_init(&argc, &argv));
    bad_arguments();
    CHECK_OK(dsm_barrier());
    lock_misuse();
    mismatched_collectives();
    unallocated_arena_words();
    int me = dsm_rank();
    CHECK_OK(dsm_finalize());
    after_finalize();
    printf("rank %d: errors ok\n", me);
    return 0;
}
