/* Every function of the C API in normal use, with checked results, on 2 to 4 nodes. */
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "check.h"

#define ROUNDS 50

struct shared {
    dsm_lock_t lock;
    uint64_t counter; /* protected by the lock */
    uint64_t atomic;  /* only touched with atomics */
    uint64_t slots[64];
};

int main(int argc, char **argv) {
    CHECK(dsm_initialized() == 0);
    CHECK_OK(dsm_init(&argc, &argv));
    CHECK(dsm_initialized() == 1);
    int me = dsm_rank(), n = dsm_nodes();
    CHECK(n >= 1 && me >= 0 && me < n);
    CHECK(dsm_page_size() == 4096);

    double t0 = dsm_wtime();
    CHECK(dsm_wtime() >= t0);

    /* Collective allocation: the same pointer everywhere, and zeroed. */
    struct shared *s = dsm_alloc_collective(sizeof *s);
    CHECK(s != NULL);
    CHECK_LAST(DSM_OK);
    CHECK(dsm_is_global(s) == 1);
    CHECK(dsm_is_global(&me) == 0);
    uintptr_t mine = (uintptr_t)s, root = mine;
    CHECK_OK(dsm_broadcast(&root, sizeof root, 0));
    CHECK(root == mine);
    CHECK(s->counter == 0 && s->atomic == 0);

    if (me == 0) CHECK_OK(dsm_lock_init(&s->lock));
    CHECK_OK(dsm_barrier());

    /* A lock-protected counter: every increment survives. */
    for (int i = 0; i < ROUNDS; i++) {
        CHECK_OK(dsm_lock(&s->lock));
        s->counter++;
        CHECK_OK(dsm_unlock(&s->lock));
    }
    /* trylock: DSM_OK when taken, DSM_BUSY otherwise; count only the successes. */
    int tries = 0;
    while (tries < 5) {
        int st = dsm_trylock(&s->lock);
        CHECK(st == DSM_OK || st == DSM_BUSY);
        if (st == DSM_OK) {
            s->counter++;
            CHECK_OK(dsm_unlock(&s->lock));
            tries++;
        }
    }
    /* Atomics on one word. */
    for (int i = 0; i < ROUNDS; i++) dsm_atomic_fetch_add_u64(&s->atomic, 2);
    CHECK_LAST(DSM_OK);
    CHECK_OK(dsm_barrier());
    CHECK(s->counter == (uint64_t)n * (ROUNDS + 5));
    CHECK(dsm_atomic_load_u64(&s->atomic) == (uint64_t)n * ROUNDS * 2);
    CHECK_OK(dsm_barrier());

    /* compare-exchange: exactly one node wins each slot. */
    uint64_t won = 0;
    for (int i = 0; i < 64; i++) {
        uint64_t old = dsm_atomic_compare_exchange_u64(&s->slots[i], 0, (uint64_t)me + 1);
        CHECK_LAST(DSM_OK);
        if (old == 0) won++;
        else CHECK(old >= 1 && old <= (uint64_t)n);
    }
    uint64_t *total = dsm_alloc_collective(sizeof *total);
    CHECK(total != NULL);
    dsm_atomic_fetch_add_u64(total, won);
    CHECK_OK(dsm_barrier());
    CHECK(dsm_atomic_load_u64(total) == 64);
    CHECK_OK(dsm_barrier()); /* everyone has read it before it changes */
    if (me == 0) {
        dsm_atomic_store_u64(total, 7);
        CHECK_LAST(DSM_OK);
        CHECK(dsm_atomic_exchange_u64(total, 9) == 7);
    }
    CHECK_OK(dsm_barrier());
    CHECK(dsm_atomic_load_u64(total) == 9);

    /* Placed collective allocations: every node writes its part, everyone reads everything. */
    size_t page = dsm_page_size(), pages = 4 * (size_t)n;
    dsm_placement policies[3] = {DSM_PLACEMENT_BLOCKED, DSM_PLACEMENT_CYCLIC,
                                 DSM_PLACEMENT_FIRST_TOUCH};
    for (int p = 0; p < 3; p++) {
        uint8_t *a = dsm_alloc_collective_placed(pages * page, policies[p], 2 * page);
        CHECK(a != NULL);
        for (size_t i = (size_t)me; i < pages; i += (size_t)n) memset(a + i * page, (int)(i + p), page);
        CHECK_OK(dsm_barrier());
        for (size_t i = 0; i < pages; i++)
            CHECK(a[i * page] == (uint8_t)(i + p) && a[i * page + page - 1] == (uint8_t)(i + p));
        CHECK_OK(dsm_barrier());
        dsm_free_collective(a);
        CHECK_LAST(DSM_OK);
    }

    /* Non-collective heap: a block from one node, filled, read and freed by another. */
    uint64_t **cell = dsm_alloc_collective(sizeof *cell * (size_t)n);
    CHECK(cell != NULL);
    uint64_t *block = dsm_calloc(100, sizeof(uint64_t));
    CHECK(block != NULL);
    for (int i = 0; i < 100; i++) CHECK(block[i] == 0);
    for (int i = 0; i < 100; i++) block[i] = (uint64_t)me * 1000 + (uint64_t)i;
    cell[me] = block;
    CHECK_OK(dsm_release());
    CHECK_OK(dsm_barrier());
    CHECK_OK(dsm_acquire());
    int next = (me + 1) % n;
    uint64_t *theirs = cell[next];
    for (int i = 0; i < 100; i++) CHECK(theirs[i] == (uint64_t)next * 1000 + (uint64_t)i);
    CHECK_OK(dsm_barrier());
    dsm_free(theirs);
    CHECK_LAST(DSM_OK);
    void *empty = dsm_malloc(0);
    CHECK(empty != NULL);
    dsm_free(empty);
    CHECK_LAST(DSM_OK);
    CHECK_OK(dsm_barrier());
    /* After the others freed this node's block, it can be allocated again. */
    void *again = dsm_malloc(1000);
    CHECK(again != NULL);
    dsm_free(again);
    CHECK_LAST(DSM_OK);

    /* Broadcast of local memory from the last rank. */
    char msg[32] = {0};
    if (me == n - 1) snprintf(msg, sizeof msg, "hello from %d", me);
    CHECK_OK(dsm_broadcast(msg, sizeof msg, n - 1));
    char want[32];
    snprintf(want, sizeof want, "hello from %d", n - 1);
    CHECK(strcmp(msg, want) == 0);
    CHECK_OK(dsm_broadcast(NULL, 0, 0));

    /* Statistics. */
    dsm_stats_t st;
    CHECK_OK(dsm_stats_get(&st));
    CHECK(st.barriers > 0 && st.lock_acquires >= ROUNDS);
    CHECK_OK(dsm_stats_reset());
    CHECK_OK(dsm_stats_get(&st));
    CHECK(st.barriers == 0 && st.lock_acquires == 0);
    int fds[2];
    CHECK(pipe(fds) == 0);
    CHECK_OK(dsm_stats_print(fds[1]));
    char report[4096] = {0};
    CHECK(read(fds[0], report, sizeof report - 1) > 0);
    CHECK(strstr(report, "read_faults") != NULL);
    close(fds[0]);
    close(fds[1]);

    CHECK(strstr(dsm_strerror(DSM_ERR_OUT_OF_MEMORY), "DSM_ERR_OUT_OF_MEMORY") != NULL);
    CHECK(dsm_wtime() >= t0);
    CHECK_OK(dsm_barrier());
    CHECK_OK(dsm_finalize());
    CHECK(dsm_initialized() == 0);
    printf("rank %d: api ok\n", me);
    return 0;
}
