/* Checkpoint and restart through the C API, in the model of docs/C_API.md: `restart STEPS`
 * runs the steps not done yet, with a checkpoint every 5; the test runs it once to 10 steps,
 * then again with DSM_RESTART=1 to 20, which must resume from epoch 2 at step 10 with every
 * byte (a collective array, a dsm_malloc block whose pointer lives in global memory) back. */
#include <stdint.h>
#include <stdlib.h>

#include "check.h"

#define CELLS 4096

struct state {
    uint64_t step;
    uint64_t *blob; /* dsm_malloc'd by the last rank */
};

int main(int argc, char **argv) {
    CHECK_OK(dsm_init(&argc, &argv));
    int me = dsm_rank(), n = dsm_nodes();
    uint64_t steps = argc > 1 ? strtoull(argv[1], NULL, 10) : 10;
    struct state *s = dsm_alloc_collective(sizeof *s);
    uint64_t *cells = dsm_alloc_collective(CELLS * sizeof *cells);
    CHECK(s != NULL && cells != NULL);
    uint64_t epoch = 0;
    int restarted = dsm_restarted(&epoch);
    CHECK(restarted == 0 || restarted == 1);
    if (!restarted) {
        if (me == n - 1) {
            s->blob = dsm_malloc(64 * sizeof *s->blob);
            CHECK(s->blob != NULL);
            for (int i = 0; i < 64; i++) s->blob[i] = 0;
        }
        if (me == 0) s->step = 0;
    } else {
        printf("rank %d: resumed from epoch %llu at step %llu\n", me, (unsigned long long)epoch,
               (unsigned long long)s->step);
    }
    CHECK_OK(dsm_barrier());
    while (s->step < steps) {
        uint64_t step = s->step;
        for (int i = me; i < CELLS; i += n) cells[i] += (uint64_t)i * (step + 1);
        if (me == n - 1) s->blob[step % 64] += step + 1;
        CHECK_OK(dsm_barrier());
        if (me == 0) s->step = step + 1;
        CHECK_OK(dsm_barrier());
        if (s->step % 5 == 0) CHECK_OK(dsm_checkpoint());
    }
    /* Every cell is i * (1 + 2 + ... + steps); the blob holds each step's number + 1. */
    uint64_t sum = steps * (steps + 1) / 2;
    for (int i = 0; i < CELLS; i++) CHECK(cells[i] == (uint64_t)i * sum);
    for (uint64_t k = 0; k < 64; k++) {
        uint64_t want = 0;
        for (uint64_t t = k; t < steps; t += 64) want += t + 1;
        CHECK(s->blob[k] == want);
    }
    dsm_stats_t st;
    CHECK_OK(dsm_stats_get(&st));
    CHECK(st.checkpoints >= 1 && st.checkpoint_bytes > 0);
    printf("rank %d: restart ok after %llu steps\n", me, (unsigned long long)s->step);
    CHECK_OK(dsm_finalize());
    return 0;
}
