/* Non-blocking collectives through mpi.h: results, several in flight at once, point-to-point
 * work between the start and the wait (also where one rank's wait needs a message the other
 * sends only after its own wait), completion by MPI_Test, and error classes. */
#include "common.h"

int main(int argc, char **argv)
{
    OK(MPI_Init(&argc, &argv));
    OK(MPI_Comm_rank(MPI_COMM_WORLD, &me));
    OK(MPI_Comm_size(MPI_COMM_WORLD, &np));
    CHECK(np <= 16, "too many ranks");
    int right = (me + 1) % np, left = (me + np - 1) % np;

    /* Three collectives in flight, a ring of blocking point-to-point before the waits. */
    MPI_Request r[16];
    int bc = me == 0 ? 42 : -1, sum = -1;
    long v = me + 1, total = 0;
    OK(MPI_Ibarrier(MPI_COMM_WORLD, &r[0]));
    OK(MPI_Ibcast(&bc, 1, MPI_INT, 0, MPI_COMM_WORLD, &r[1]));
    OK(MPI_Iallreduce(&v, &total, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD, &r[2]));
    int token = me, in = -1;
    if (me % 2 == 0) {
        OK(MPI_Send(&token, 1, MPI_INT, right, 5, MPI_COMM_WORLD));
        OK(MPI_Recv(&in, 1, MPI_INT, left, 5, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
    } else {
        OK(MPI_Recv(&in, 1, MPI_INT, left, 5, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
        OK(MPI_Send(&token, 1, MPI_INT, right, 5, MPI_COMM_WORLD));
    }
    CHECK(in == left, "ring %d", in);
    OK(MPI_Allreduce(&me, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD));
    OK(MPI_Waitall(3, r, MPI_STATUSES_IGNORE));
    CHECK(r[0] == MPI_REQUEST_NULL && r[1] == MPI_REQUEST_NULL, "requests freed");
    CHECK(bc == 42, "ibcast %d", bc);
    CHECK(total == (long)np * (np + 1) / 2, "iallreduce %ld", total);
    CHECK(sum == np * (np - 1) / 2, "allreduce between %d", sum);

    /* Rank 0 waits for its barrier before it sends; the others receive that message before
     * they wait: the barrier must complete on rank 0 while they sit in MPI_Recv. */
    OK(MPI_Ibarrier(MPI_COMM_WORLD, &r[0]));
    if (me == 0) {
        OK(MPI_Wait(&r[0], MPI_STATUS_IGNORE));
        for (int d = 1; d < np; d++) OK(MPI_Send(&d, 1, MPI_INT, d, 6, MPI_COMM_WORLD));
    } else {
        int x = -1;
        OK(MPI_Recv(&x, 1, MPI_INT, 0, 6, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
        CHECK(x == me, "after barrier %d", x);
        OK(MPI_Wait(&r[0], MPI_STATUS_IGNORE));
    }

    /* Completion by MPI_Test. */
    int mine[2] = { me, -me }, all[32];
    OK(MPI_Iallgather(mine, 2, MPI_INT, all, 2, MPI_INT, MPI_COMM_WORLD, &r[0]));
    int flag = 0;
    while (!flag) OK(MPI_Test(&r[0], &flag, MPI_STATUS_IGNORE));
    for (int i = 0; i < np; i++) CHECK(all[2 * i] == i && all[2 * i + 1] == -i, "iallgather %d", i);

    /* The rest, all in flight together, waited for in one MPI_Waitall. */
    int root = np - 1;
    int gat[16], gatv[32], sca = -1, scav[2] = { -1, -1 }, a2a[16], a2av[16], red = -1;
    int agv[32], rs = -1, rsb = -1;
    int src[16], counts[16], displs[16], two[32], cnt2[16], dsp2[16];
    for (int i = 0; i < np; i++) {
        src[i] = 100 * me + i;
        counts[i] = 1;
        displs[i] = i;
        two[2 * i] = 10 * i;
        two[2 * i + 1] = 10 * i + 1;
        cnt2[i] = 2;
        dsp2[i] = 2 * i;
    }
    MPI_Datatype ints[16];
    int bytes[16];
    for (int i = 0; i < np; i++) {
        ints[i] = MPI_INT;
        bytes[i] = i * (int)sizeof(int);
    }
    int a2aw[16];
    int n = 0;
    OK(MPI_Igather(&me, 1, MPI_INT, gat, 1, MPI_INT, root, MPI_COMM_WORLD, &r[n++]));
    OK(MPI_Igatherv(mine, 2, MPI_INT, gatv, cnt2, dsp2, MPI_INT, root, MPI_COMM_WORLD, &r[n++]));
    OK(MPI_Iscatter(src, 1, MPI_INT, &sca, 1, MPI_INT, 0, MPI_COMM_WORLD, &r[n++]));
    OK(MPI_Iscatterv(two, cnt2, dsp2, MPI_INT, scav, 2, MPI_INT, 0, MPI_COMM_WORLD, &r[n++]));
    OK(MPI_Iallgatherv(&me, 1, MPI_INT, agv, counts, displs, MPI_INT, MPI_COMM_WORLD, &r[n++]));
    OK(MPI_Ialltoall(src, 1, MPI_INT, a2a, 1, MPI_INT, MPI_COMM_WORLD, &r[n++]));
    OK(MPI_Ialltoallv(src, counts, displs, MPI_INT, a2av, counts, displs, MPI_INT,
                      MPI_COMM_WORLD, &r[n++]));
    OK(MPI_Ialltoallw(src, counts, bytes, ints, a2aw, counts, bytes, ints, MPI_COMM_WORLD,
                      &r[n++]));
    OK(MPI_Ireduce(&me, &red, 1, MPI_INT, MPI_MAX, root, MPI_COMM_WORLD, &r[n++]));
    OK(MPI_Ireduce_scatter(src, &rs, counts, MPI_INT, MPI_SUM, MPI_COMM_WORLD, &r[n++]));
    OK(MPI_Ireduce_scatter_block(src, &rsb, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD, &r[n++]));
    OK(MPI_Waitall(n, r, MPI_STATUSES_IGNORE));
    if (me == root)
        for (int i = 0; i < np; i++) {
            CHECK(gat[i] == i, "igather %d", i);
            CHECK(gatv[2 * i] == i && gatv[2 * i + 1] == -i, "igatherv %d", i);
        }
    CHECK(sca == me, "iscatter %d", sca);
    CHECK(scav[0] == 10 * me && scav[1] == 10 * me + 1, "iscatterv");
    for (int i = 0; i < np; i++) {
        CHECK(agv[i] == i, "iallgatherv %d", i);
        CHECK(a2a[i] == 100 * i + me && a2av[i] == a2a[i] && a2aw[i] == a2a[i], "ialltoall %d", i);
    }
    if (me == root) CHECK(red == np - 1, "ireduce %d", red);
    CHECK(rs == 100 * np * (np - 1) / 2 + np * me, "ireduce_scatter %d", rs);
    CHECK(rsb == me, "ireduce_scatter_block %d", rsb);

    /* MPI_Waitany over a collective and a receive. */
    int got = -1, idx = -1, done = 0;
    OK(MPI_Irecv(&got, 1, MPI_INT, left, 8, MPI_COMM_WORLD, &r[0]));
    OK(MPI_Ibarrier(MPI_COMM_WORLD, &r[1]));
    OK(MPI_Send(&me, 1, MPI_INT, right, 8, MPI_COMM_WORLD));
    while (done < 2) {
        OK(MPI_Waitany(2, r, &idx, MPI_STATUS_IGNORE));
        CHECK(idx == 0 || idx == 1, "waitany index %d", idx);
        done++;
    }
    CHECK(got == left && r[0] == MPI_REQUEST_NULL && r[1] == MPI_REQUEST_NULL, "waitany");

    /* Errors, returned before anything is sent (every rank passes the same). */
    OK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    int e = MPI_Iallreduce(&me, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD, NULL);
    CHECK(e == MPI_ERR_ARG, "null request: %d", e);
    e = MPI_Ibcast(&bc, 1, MPI_INT, np, MPI_COMM_WORLD, &r[0]);
    CHECK(e == MPI_ERR_ROOT, "ibcast bad root: %d", e);
    e = MPI_Iallreduce(&me, &sum, 1, MPI_INT, MPI_REPLACE, MPI_COMM_WORLD, &r[0]);
    CHECK(e == MPI_ERR_OP, "iallreduce MPI_REPLACE: %d", e);
    e = MPI_Iallreduce(&me, &sum, 1, MPI_INT, 99, MPI_COMM_WORLD, &r[0]);
    CHECK(e == MPI_ERR_OP, "iallreduce bad op: %d", e);
    e = MPI_Igather(&me, -1, MPI_INT, gat, 1, MPI_INT, 0, MPI_COMM_WORLD, &r[0]);
    CHECK(e == MPI_ERR_COUNT, "igather negative count: %d", e);
    e = MPI_Ibarrier(4242, &r[0]);
    CHECK(e == MPI_ERR_COMM, "ibarrier bad communicator: %d", e);
    r[0] = 4242;
    e = MPI_Wait(&r[0], MPI_STATUS_IGNORE);
    CHECK(e == MPI_ERR_REQUEST, "wait on a bad request: %d", e);

    /* The collectives still agree after the errors. */
    OK(MPI_Iallreduce(&me, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD, &r[0]));
    OK(MPI_Wait(&r[0], MPI_STATUS_IGNORE));
    CHECK(sum == np * (np - 1) / 2, "iallreduce after errors");

    printf("rank %d: c nbc ok\n", me);
    OK(MPI_Finalize());
    return 0;
}
