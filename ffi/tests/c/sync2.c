/* Semaphores, condition variables and placement on a chosen node through the C API, on 1 to 4
 * nodes, with checked results and every misuse's documented status. No polling loop: every
 * wait is a dsm_sem_wait or a dsm_cond_wait. */
#include <stdint.h>
#include <string.h>

#include "check.h"

#define ITEMS 100
#define SLOTS 3
#define WORDS 512 /* one page per slot */

struct shared {
    dsm_lock_t lock;
    dsm_cond_t cond;
    dsm_sem_t full, empty, ready;
    uint64_t go, payload, tickets; /* protected by the lock */
    uint64_t woken;                /* only touched with atomics */
};

static uint64_t value(int item, int word) { return ((uint64_t)item << 16) | (uint64_t)word; }

/* Rank 0 sends ITEMS one-page items to rank n - 1 through a ring of SLOTS slots guarded by two
 * semaphores (alone, it sends to itself, one item at a time). */
static void producer_consumer(struct shared *s, uint64_t (*ring)[WORDS], int me, int n) {
    int producer = me == 0, consumer = me == n - 1;
    for (int i = 0; i < ITEMS; i++) {
        if (producer) {
            CHECK_OK(dsm_sem_wait(&s->empty));
            for (int w = 0; w < WORDS; w++) ring[i % SLOTS][w] = value(i, w);
            CHECK_OK(dsm_sem_post(&s->full));
        }
        if (consumer) {
            CHECK_OK(dsm_sem_wait(&s->full));
            for (int w = 0; w < WORDS; w++) CHECK(ring[i % SLOTS][w] == value(i, w));
            CHECK_OK(dsm_sem_post(&s->empty));
        }
    }
    CHECK_OK(dsm_barrier());
    /* Every unit was taken: full is 0, empty back at SLOTS. */
    if (me == 0) {
        CHECK(dsm_sem_trywait(&s->full) == 0);
        CHECK_LAST(DSM_OK);
        for (int k = 0; k < SLOTS; k++) CHECK(dsm_sem_trywait(&s->empty) == 1);
        CHECK(dsm_sem_trywait(&s->empty) == 0);
    }
    CHECK_OK(dsm_barrier());
}

/* A broadcast wakes every waiter (each is known to be inside dsm_cond_wait: it posted `ready`
 * holding the lock, which dsm_cond_wait gives up only once it waits), then signals hand out
 * one ticket per waiter. */
static void condition_variables(struct shared *s, int me, int n) {
    if (me == 0) {
        for (int k = 1; k < n; k++) CHECK_OK(dsm_sem_wait(&s->ready));
        CHECK_OK(dsm_lock(&s->lock));
        s->payload = 0xfeed;
        s->go = 1;
        CHECK_OK(dsm_cond_broadcast(&s->cond));
        CHECK_OK(dsm_unlock(&s->lock));
    } else {
        CHECK_OK(dsm_lock(&s->lock));
        CHECK_OK(dsm_sem_post(&s->ready));
        while (s->go == 0) CHECK_OK(dsm_cond_wait(&s->cond, &s->lock));
        CHECK(s->payload == 0xfeed);
        CHECK_OK(dsm_unlock(&s->lock));
        dsm_atomic_fetch_add_u64(&s->woken, 1);
        CHECK_LAST(DSM_OK);
    }
    CHECK_OK(dsm_barrier());
    CHECK(dsm_atomic_load_u64(&s->woken) == (uint64_t)n - 1);
    if (me == 0) {
        for (int k = 1; k < n; k++) {
            CHECK_OK(dsm_lock(&s->lock));
            s->tickets++;
            CHECK_OK(dsm_cond_signal(&s->cond));
            CHECK_OK(dsm_unlock(&s->lock));
        }
    } else {
        CHECK_OK(dsm_lock(&s->lock));
        while (s->tickets == 0) CHECK_OK(dsm_cond_wait(&s->cond, &s->lock));
        s->tickets--;
        CHECK_OK(dsm_unlock(&s->lock));
    }
    CHECK_OK(dsm_barrier());
    CHECK(s->tickets == 0);
    CHECK_OK(dsm_barrier());
}

/* Every misuse gives its documented status and changes nothing. */
static void misuse(struct shared *s, int n) {
    dsm_sem_t local_sem;
    dsm_cond_t local_cond;
    dsm_lock_t local_lock;
    memset(&local_sem, 0, sizeof local_sem);
    CHECK_STATUS(dsm_sem_init(NULL, 0), DSM_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(dsm_sem_post(NULL), DSM_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(dsm_sem_wait(NULL), DSM_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(dsm_sem_trywait(NULL), DSM_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(dsm_cond_init(NULL), DSM_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(dsm_cond_wait(NULL, &s->lock), DSM_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(dsm_cond_wait(&s->cond, NULL), DSM_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(dsm_cond_signal(NULL), DSM_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(dsm_cond_broadcast(NULL), DSM_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(dsm_sem_post(&local_sem), DSM_ERR_NOT_GLOBAL);
    CHECK_STATUS(dsm_sem_trywait(&local_sem), DSM_ERR_NOT_GLOBAL);
    CHECK_STATUS(dsm_cond_signal(&local_cond), DSM_ERR_NOT_GLOBAL);
    CHECK_STATUS(dsm_cond_wait(&s->cond, &local_lock), DSM_ERR_NOT_GLOBAL);
    uint8_t *g = (uint8_t *)s;
    CHECK_STATUS(dsm_sem_post((dsm_sem_t *)(g + offsetof(struct shared, full) + 8)),
                 DSM_ERR_MISALIGNED);
    CHECK_STATUS(dsm_cond_broadcast((dsm_cond_t *)(g + offsetof(struct shared, cond) + 8)),
                 DSM_ERR_MISALIGNED);
    CHECK_STATUS(dsm_cond_wait(&s->cond, (dsm_lock_t *)(g + 8)), DSM_ERR_MISALIGNED);
    /* A wait with a lock this node does not hold: nothing changes, nothing is waited for. */
    CHECK_STATUS(dsm_cond_wait(&s->cond, &s->lock), DSM_ERR_NOT_HELD);
    CHECK_OK(dsm_lock(&s->lock));
    CHECK_OK(dsm_unlock(&s->lock));
    CHECK_OK(dsm_barrier());

    /* A placement on a node outside the job fails on every node, with nothing allocated. */
    CHECK(dsm_alloc_collective_placed(4096, DSM_PLACEMENT_NODE, (size_t)n) == NULL);
    CHECK_LAST(DSM_ERR_INVALID_ARGUMENT);
    CHECK(dsm_alloc_collective_placed(4096, DSM_PLACEMENT_NODE, SIZE_MAX) == NULL);
    CHECK_LAST(DSM_ERR_INVALID_ARGUMENT);
    CHECK(dsm_alloc_collective_placed(4096, 99, 0) == NULL);
    CHECK_LAST(DSM_ERR_INVALID_ARGUMENT);
    int me = dsm_rank();
    CHECK_STATUS(dsm_home_of(NULL), DSM_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(dsm_home_of(&me), DSM_ERR_NOT_GLOBAL);
    CHECK_OK(dsm_barrier());
}

int main(int argc, char **argv) {
    dsm_sem_t before;
    CHECK_STATUS(dsm_sem_post(&before), DSM_ERR_NOT_INITIALIZED);
    CHECK_OK(dsm_init(&argc, &argv));
    int me = dsm_rank(), n = dsm_nodes();
    CHECK(sizeof(dsm_sem_t) == 32 && sizeof(dsm_cond_t) == 16);
    CHECK(DSM_PLACEMENT_NODE == 3);

    /* Everything homed at the last node: check every page's home. */
    size_t page = dsm_page_size(), bytes = sizeof(struct shared) + SLOTS * WORDS * 8;
    uint8_t *all = dsm_alloc_collective_placed(bytes, DSM_PLACEMENT_NODE, (size_t)n - 1);
    CHECK(all != NULL);
    for (size_t off = 0; off < bytes; off += page) CHECK(dsm_home_of(all + off) == n - 1);
    struct shared *s = (struct shared *)all;
    uint64_t(*ring)[WORDS] = (uint64_t(*)[WORDS])(all + page);
    CHECK(sizeof(struct shared) <= page);

    /* A placement on each node in turn. */
    for (int k = 0; k < n; k++) {
        uint8_t *a = dsm_alloc_collective_placed(3 * page, DSM_PLACEMENT_NODE, (size_t)k);
        CHECK(a != NULL);
        for (int p = 0; p < 3; p++) CHECK(dsm_home_of(a + (size_t)p * page) == k);
        if (me == (k + 1) % n) memset(a, k + 1, 3 * page);
        CHECK_OK(dsm_barrier());
        CHECK(a[0] == k + 1 && a[3 * page - 1] == k + 1);
        CHECK_OK(dsm_barrier());
        dsm_free_collective(a);
        CHECK_LAST(DSM_OK);
    }

    if (me == 0) {
        CHECK_OK(dsm_lock_init(&s->lock));
        CHECK_OK(dsm_cond_init(&s->cond));
        CHECK_OK(dsm_sem_init(&s->full, 0));
        CHECK_OK(dsm_sem_init(&s->empty, SLOTS));
        CHECK_OK(dsm_sem_init(&s->ready, 0));
    }
    CHECK_OK(dsm_barrier());
    producer_consumer(s, ring, me, n);
    condition_variables(s, me, n);
    misuse(s, n);

    dsm_free_collective(all);
    CHECK_LAST(DSM_OK);
    CHECK_OK(dsm_finalize());
    CHECK_STATUS(dsm_sem_post(&before), DSM_ERR_FINALIZED);
    printf("rank %d: sync2 ok\n", me);
    return 0;
}
