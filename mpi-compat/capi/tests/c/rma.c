/* One-sided communication through mpi.h: every window kind and every synchronisation mode. */
#include "common.h"

int main(int argc, char **argv)
{
    OK(MPI_Init(&argc, &argv));
    OK(MPI_Comm_rank(MPI_COMM_WORLD, &me));
    OK(MPI_Comm_size(MPI_COMM_WORLD, &np));
    int right = (me + 1) % np, left = (me + np - 1) % np;

    /* Allocated window, fence: put, get, accumulate. */
    long *base;
    MPI_Win win;
    OK(MPI_Win_allocate(64 * sizeof(long), sizeof(long), MPI_INFO_NULL, MPI_COMM_WORLD, &base, &win));
    for (int i = 0; i < 64; i++) base[i] = 0;
    OK(MPI_Win_fence(0, win));
    long v[4] = { me, me + 1, me + 2, me + 3 };
    OK(MPI_Put(v, 4, MPI_LONG, right, 8, 4, MPI_LONG, win));
    long one = 1;
    OK(MPI_Accumulate(&one, 1, MPI_LONG, 0, 0, 1, MPI_LONG, MPI_SUM, win));
    OK(MPI_Win_fence(0, win));
    for (int i = 0; i < 4; i++) CHECK(base[8 + i] == left + i, "put %d: %ld", i, base[8 + i]);
    if (me == 0) CHECK(base[0] == np, "accumulate %ld", base[0]);
    long back[4];
    OK(MPI_Get(back, 4, MPI_LONG, right, 8, 4, MPI_LONG, win));
    OK(MPI_Win_fence(0, win));
    for (int i = 0; i < 4; i++) CHECK(back[i] == me + i, "get %d", i);

    /* Passive target: exclusive lock, fetch-and-op, compare-and-swap, get-accumulate. */
    OK(MPI_Win_fence(MPI_MODE_NOSUCCEED, win));
    OK(MPI_Win_lock(MPI_LOCK_EXCLUSIVE, 0, 0, win));
    long old;
    OK(MPI_Fetch_and_op(&one, &old, MPI_LONG, 0, 1, MPI_SUM, win));
    CHECK(old >= 0 && old < np, "fetch_and_op %ld", old);
    long mine = 100 + me, zero = 0, prev;
    OK(MPI_Compare_and_swap(&mine, &zero, &prev, MPI_LONG, 0, 2, win));
    OK(MPI_Win_unlock(0, win));
    OK(MPI_Barrier(MPI_COMM_WORLD));
    OK(MPI_Win_lock_all(0, win));
    long both[2];
    OK(MPI_Get_accumulate(NULL, 0, MPI_LONG, both, 2, MPI_LONG, 0, 1, 2, MPI_LONG, MPI_NO_OP, win));
    OK(MPI_Win_flush(0, win));
    OK(MPI_Win_flush_local(0, win));
    OK(MPI_Win_flush_all(win));
    /* Request-based RMA (passive target), and MPI_PROC_NULL targets that do nothing. */
    MPI_Request rq[2];
    long rv = 1000 + me, rg = -1, untouched = 5;
    OK(MPI_Rput(&rv, 1, MPI_LONG, right, 20, 1, MPI_LONG, win, &rq[0]));
    OK(MPI_Wait(&rq[0], MPI_STATUS_IGNORE));
    OK(MPI_Win_flush(right, win));
    OK(MPI_Rget(&rg, 1, MPI_LONG, right, 20, 1, MPI_LONG, win, &rq[1]));
    OK(MPI_Wait(&rq[1], MPI_STATUS_IGNORE));
    CHECK(rg == 1000 + me && rq[0] == MPI_REQUEST_NULL, "rput/rget %ld", rg);
    OK(MPI_Put(&rv, 1, MPI_LONG, MPI_PROC_NULL, 0, 1, MPI_LONG, win));
    OK(MPI_Get(&untouched, 1, MPI_LONG, MPI_PROC_NULL, 0, 1, MPI_LONG, win));
    OK(MPI_Fetch_and_op(&one, &untouched, MPI_LONG, MPI_PROC_NULL, 0, MPI_SUM, win));
    OK(MPI_Compare_and_swap(&one, &zero, &untouched, MPI_LONG, MPI_PROC_NULL, 0, win));
    OK(MPI_Rget(&untouched, 1, MPI_LONG, MPI_PROC_NULL, 0, 1, MPI_LONG, win, &rq[1]));
    OK(MPI_Wait(&rq[1], MPI_STATUS_IGNORE));
    CHECK(untouched == 5, "a PROC_NULL target wrote %ld", untouched);
    /* A window of gets in flight: each lands by the flush that follows, not before it is
       asked for (the origin buffers are the caller's until then). */
    long many[4] = { -1, -1, -1, -1 };
    for (int i = 0; i < 4; i++) OK(MPI_Get(&many[3 - i], 1, MPI_LONG, right, 8 + i, 1, MPI_LONG, win));
    OK(MPI_Win_flush_local_all(win));
    for (int i = 0; i < 4; i++) CHECK(many[3 - i] == me + i, "get %d of a window: %ld", i, many[3 - i]);
    long *all = malloc(64 * sizeof(long) + 8);
    OK(MPI_Get(all + 1, 64, MPI_LONG, right, 0, 64, MPI_LONG, win));
    OK(MPI_Win_flush_local(right, win));
    for (int i = 0; i < 4; i++) CHECK(all[1 + 8 + i] == me + i, "a whole part got: %ld", all[1 + 8 + i]);
    free(all);
    OK(MPI_Win_unlock_all(win));
    CHECK(both[0] == np && both[1] >= 100 && both[1] < 100 + np, "counter %ld winner %ld", both[0], both[1]);
    int won = prev == 0, wins = 0;
    OK(MPI_Allreduce(&won, &wins, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD));
    CHECK(wins == 1, "%d ranks won the compare-and-swap", wins);
    OK(MPI_Win_free(&win));
    CHECK(win == MPI_WIN_NULL, "freed");

    /* A window over malloc'ed memory, with post/start/complete/wait on a ring. */
    int *mem = calloc(16, sizeof(int));
    OK(MPI_Win_create(mem, 16 * sizeof(int), sizeof(int), MPI_INFO_NULL, MPI_COMM_WORLD, &win));
    MPI_Group world, from_left, to_right;
    OK(MPI_Comm_group(MPI_COMM_WORLD, &world));
    OK(MPI_Group_incl(world, 1, &left, &from_left));
    OK(MPI_Group_incl(world, 1, &right, &to_right));
    for (int round = 0; round < 3; round++) {
        OK(MPI_Win_post(from_left, 0, win));
        OK(MPI_Win_start(to_right, 0, win));
        int val = me * 10 + round;
        OK(MPI_Put(&val, 1, MPI_INT, right, round, 1, MPI_INT, win));
        OK(MPI_Win_complete(win));
        if (round == 1) {
            int flag = 0;
            while (!flag) OK(MPI_Win_test(win, &flag));
        } else {
            OK(MPI_Win_wait(win));
        }
        CHECK(mem[round] == left * 10 + round, "pscw round %d: %d", round, mem[round]);
    }
    OK(MPI_Group_free(&from_left));
    OK(MPI_Group_free(&to_right));
    OK(MPI_Group_free(&world));
    OK(MPI_Win_free(&win));
    free(mem);

    /* Narrow atomics on a window whose base is not 8-byte aligned: each word-wide
       compare-and-swap must leave the neighbouring ints alone. */
    long *words = calloc(4, sizeof(long));
    int *ints = (int *)words;
    ints[0] = 77;
    ints[2] = 88;
    OK(MPI_Win_create(ints + 1, sizeof(int), sizeof(int), MPI_INFO_NULL, MPI_COMM_WORLD, &win));
    OK(MPI_Win_fence(0, win));
    int inc = 1, got_old;
    OK(MPI_Fetch_and_op(&inc, &got_old, MPI_INT, 0, 0, MPI_SUM, win));
    OK(MPI_Win_fence(0, win));
    if (me == 0)
        CHECK(ints[1] == np && ints[0] == 77 && ints[2] == 88, "unaligned narrow atomics: %d %d %d",
              ints[0], ints[1], ints[2]);
    OK(MPI_Win_free(&win));
    free(words);

    /* A dynamic window over MPI_Alloc_mem memory, addressed by MPI_Get_address. */
    OK(MPI_Win_create_dynamic(MPI_INFO_NULL, MPI_COMM_WORLD, &win));
    double *dm;
    OK(MPI_Alloc_mem(8 * sizeof(double), MPI_INFO_NULL, &dm));
    OK(MPI_Win_attach(win, dm, 8 * sizeof(double)));
    MPI_Aint addr, *addrs = malloc(sizeof(MPI_Aint) * np);
    OK(MPI_Get_address(dm, &addr));
    OK(MPI_Allgather(&addr, 1, MPI_AINT, addrs, 1, MPI_AINT, MPI_COMM_WORLD));
    OK(MPI_Win_lock_all(0, win));
    double d = me + 0.25;
    OK(MPI_Put(&d, 1, MPI_DOUBLE, right, addrs[right] + 8, 1, MPI_DOUBLE, win));
    OK(MPI_Win_flush(right, win));
    OK(MPI_Win_unlock_all(win));
    OK(MPI_Barrier(MPI_COMM_WORLD));
    OK(MPI_Win_sync(win));
    CHECK(dm[1] == left + 0.25, "dynamic window %f", dm[1]);
    OK(MPI_Win_detach(win, dm));
    OK(MPI_Win_free(&win));
    OK(MPI_Free_mem(dm));
    free(addrs);

    printf("rank %d: c rma ok\n", me);
    OK(MPI_Finalize());
    return 0;
}
