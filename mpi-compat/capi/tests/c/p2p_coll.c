/* Point-to-point, collectives, datatypes, communicators, groups and topologies through mpi.h. */
#include "common.h"
#include <time.h>

/* CPU time of the calling thread, in seconds. */
static double thread_cpu(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    int flag = 1, provided = -1;
    /* "no-timing": CPU-time checks are skipped (under valgrind every instruction is slow). */
    int timing = !(argc > 1 && strcmp(argv[1], "no-timing") == 0);
    OK(MPI_Initialized(&flag));
    CHECK(flag == 0, "initialised before MPI_Init");
    OK(MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided));
    CHECK(provided == MPI_THREAD_MULTIPLE, "provided %d", provided);
    OK(MPI_Comm_rank(MPI_COMM_WORLD, &me));
    OK(MPI_Comm_size(MPI_COMM_WORLD, &np));
    double t0 = MPI_Wtime();

    /* Any source, any tag, status and count. */
    if (me == 0) {
        for (int i = 1; i < np; i++) {
            long v[3];
            MPI_Status st;
            OK(MPI_Recv(v, 3, MPI_LONG, MPI_ANY_SOURCE, MPI_ANY_TAG, MPI_COMM_WORLD, &st));
            int n;
            OK(MPI_Get_count(&st, MPI_LONG, &n));
            CHECK(n == 2 && st.MPI_TAG == 10 + st.MPI_SOURCE && v[0] == st.MPI_SOURCE * 7, "status");
            OK(MPI_Get_count(&st, MPI_INT, &n));
            CHECK(n == 4, "count in ints %d", n);
        }
    } else {
        long v[2] = { me * 7, -1 };
        OK(MPI_Send(v, 2, MPI_LONG, 0, 10 + me, MPI_COMM_WORLD));
    }

    /* Everyone's message is in before the ring's messages can arrive at rank 0. */
    OK(MPI_Barrier(MPI_COMM_WORLD));

    /* Non-blocking ring with wait-all and test. */
    double out = me + 0.5, in = -1;
    MPI_Request r[2];
    OK(MPI_Irecv(&in, 1, MPI_DOUBLE, (me + np - 1) % np, 3, MPI_COMM_WORLD, &r[0]));
    OK(MPI_Isend(&out, 1, MPI_DOUBLE, (me + 1) % np, 3, MPI_COMM_WORLD, &r[1]));
    OK(MPI_Waitall(2, r, MPI_STATUSES_IGNORE));
    CHECK(in == (me + np - 1) % np + 0.5 && r[0] == MPI_REQUEST_NULL, "ring %f", in);
    OK(MPI_Irecv(&in, 1, MPI_DOUBLE, (me + 1) % np, 4, MPI_COMM_WORLD, &r[0]));
    OK(MPI_Send(&out, 1, MPI_DOUBLE, (me + np - 1) % np, 4, MPI_COMM_WORLD));
    int done = 0;
    MPI_Status st;
    while (!done) OK(MPI_Test(&r[0], &done, &st));
    CHECK(in == (me + 1) % np + 0.5 && st.MPI_SOURCE == (me + 1) % np, "test ring");

    /* A derived type: every other int of a row (vector), sent and received. */
    MPI_Datatype every_other;
    OK(MPI_Type_vector(4, 1, 2, MPI_INT, &every_other));
    OK(MPI_Type_commit(&every_other));
    int sz;
    OK(MPI_Type_size(every_other, &sz));
    CHECK(sz == 16, "vector size %d", sz);
    int row[8], got[8];
    for (int i = 0; i < 8; i++) { row[i] = me * 100 + i; got[i] = -1; }
    OK(MPI_Send(row, 1, every_other, (me + 1) % np, 5, MPI_COMM_WORLD));
    OK(MPI_Recv(got, 1, every_other, (me + np - 1) % np, 5, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
    int left = (me + np - 1) % np;
    for (int i = 0; i < 8; i++)
        CHECK(got[i] == (i % 2 ? -1 : left * 100 + i), "vector element %d: %d", i, got[i]);
    OK(MPI_Type_free(&every_other));
    char name[MPI_MAX_OBJECT_NAME];
    int len;
    OK(MPI_Type_get_name(MPI_DOUBLE, name, &len));
    CHECK(!strcmp(name, "MPI_DOUBLE") && len == 10, "name %s", name);
    MPI_Datatype pair, idx;
    OK(MPI_Type_contiguous(2, MPI_INT, &pair));
    OK(MPI_Type_commit(&pair));
    int bl[2] = { 1, 2 }, dp[2] = { 3, 0 };
    OK(MPI_Type_indexed(2, bl, dp, MPI_INT, &idx));
    OK(MPI_Type_commit(&idx));
    OK(MPI_Type_size(idx, &sz));
    CHECK(sz == 12, "indexed size %d", sz);

    /* Collectives. */
    OK(MPI_Barrier(MPI_COMM_WORLD));
    int b[2] = { 0, 0 };
    if (me == np - 1) { b[0] = 42; b[1] = 43; }
    OK(MPI_Bcast(b, 1, pair, np - 1, MPI_COMM_WORLD));
    CHECK(b[0] == 42 && b[1] == 43, "bcast");
    int x = me + 1, sum = 0, prod = 0, mx = 0;
    OK(MPI_Allreduce(&x, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD));
    CHECK(sum == np * (np + 1) / 2, "sum %d", sum);
    OK(MPI_Reduce(&x, &prod, 1, MPI_INT, MPI_PROD, 0, MPI_COMM_WORLD));
    if (me == 0) {
        int f = 1;
        for (int i = 1; i <= np; i++) f *= i;
        CHECK(prod == f, "prod %d", prod);
    }
    double dmax = me * 1.5;
    OK(MPI_Allreduce(MPI_IN_PLACE, &dmax, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD));
    CHECK(dmax == (np - 1) * 1.5, "in-place max %f", dmax);
    unsigned long bits = 1ul << me, all = 0;
    OK(MPI_Allreduce(&bits, &all, 1, MPI_UNSIGNED_LONG, MPI_BOR, MPI_COMM_WORLD));
    CHECK(all == (1ul << np) - 1, "bor %lx", all);
    OK(MPI_Allreduce(&x, &mx, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD));
    CHECK(mx == np, "max");
    int *g = malloc(sizeof(int) * 2 * np);
    int mine[2] = { me, -me };
    OK(MPI_Gather(mine, 2, MPI_INT, g, 2, MPI_INT, 0, MPI_COMM_WORLD));
    if (me == 0)
        for (int i = 0; i < np; i++) CHECK(g[2 * i] == i && g[2 * i + 1] == -i, "gather %d", i);
    memset(g, 0, sizeof(int) * 2 * np);
    OK(MPI_Allgather(mine, 1, pair, g, 2, MPI_INT, MPI_COMM_WORLD));
    for (int i = 0; i < np; i++) CHECK(g[2 * i] == i && g[2 * i + 1] == -i, "allgather %d", i);
    int part[2];
    OK(MPI_Scatter(g, 2, MPI_INT, part, 2, MPI_INT, 0, MPI_COMM_WORLD));
    CHECK(part[0] == me && part[1] == -me, "scatter");
    int *a2a = malloc(sizeof(int) * np), *a2b = malloc(sizeof(int) * np);
    for (int i = 0; i < np; i++) a2a[i] = me * 10 + i;
    OK(MPI_Alltoall(a2a, 1, MPI_INT, a2b, 1, MPI_INT, MPI_COMM_WORLD));
    for (int i = 0; i < np; i++) CHECK(a2b[i] == i * 10 + me, "alltoall %d", i);
    /* MPI_IN_PLACE: each rank's own block is already in the receive buffer. */
    memset(g, 0, sizeof(int) * 2 * np);
    g[2 * me] = me;
    g[2 * me + 1] = -me;
    OK(MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, g, 2, MPI_INT, MPI_COMM_WORLD));
    for (int i = 0; i < np; i++) CHECK(g[2 * i] == i && g[2 * i + 1] == -i, "in-place allgather %d", i);
    if (me == 0) {
        memset(g, 0, sizeof(int) * 2 * np);
        OK(MPI_Gather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, g, 2, MPI_INT, 0, MPI_COMM_WORLD));
        CHECK(g[0] == 0 && g[1] == 0, "in-place gather root block");
        for (int i = 1; i < np; i++) CHECK(g[2 * i] == i && g[2 * i + 1] == -i, "in-place gather %d", i);
        for (int i = 0; i < np; i++) g[2 * i] = 100 + i, g[2 * i + 1] = -100 - i;
        OK(MPI_Scatter(g, 2, MPI_INT, MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, 0, MPI_COMM_WORLD));
        CHECK(g[0] == 100 && g[1] == -100, "in-place scatter root block");
    } else {
        OK(MPI_Gather(mine, 2, MPI_INT, NULL, 0, MPI_INT, 0, MPI_COMM_WORLD));
        OK(MPI_Scatter(NULL, 0, MPI_INT, part, 2, MPI_INT, 0, MPI_COMM_WORLD));
        CHECK(part[0] == 100 + me && part[1] == -100 - me, "in-place scatter %d", me);
    }
    for (int i = 0; i < np; i++) a2b[i] = me * 10 + i;
    OK(MPI_Alltoall(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, a2b, 1, MPI_INT, MPI_COMM_WORLD));
    for (int i = 0; i < np; i++) CHECK(a2b[i] == i * 10 + me, "in-place alltoall %d", i);

    /* Communicators, groups, topologies. */
    MPI_Comm dup;
    OK(MPI_Comm_dup(MPI_COMM_WORLD, &dup));
    int dr;
    OK(MPI_Comm_rank(dup, &dr));
    CHECK(dr == me, "dup rank");
    OK(MPI_Comm_free(&dup));
    CHECK(dup == MPI_COMM_NULL, "freed");
    MPI_Group world, odd;
    OK(MPI_Comm_group(MPI_COMM_WORLD, &world));
    int pick[1] = { np - 1 };
    OK(MPI_Group_incl(world, 1, pick, &odd));
    OK(MPI_Group_free(&odd));
    OK(MPI_Group_free(&world));
    int dims[2] = { 0, 0 };
    OK(MPI_Dims_create(np, 2, dims));
    CHECK(dims[0] * dims[1] == np && dims[0] >= dims[1], "dims %d %d", dims[0], dims[1]);
    int periods[2] = { 1, 0 }, coords[2], back;
    MPI_Comm cart;
    OK(MPI_Cart_create(MPI_COMM_WORLD, 2, dims, periods, 0, &cart));
    OK(MPI_Cart_coords(cart, me, 2, coords));
    OK(MPI_Cart_rank(cart, coords, &back));
    CHECK(back == me, "cart round trip %d", back);
    coords[0] += dims[0];
    OK(MPI_Cart_rank(cart, coords, &back));
    CHECK(back == me, "periodic wrap %d", back);
    OK(MPI_Comm_free(&cart));

    /* MPI_PROC_NULL: a shift without wrap-around; the ends talk to nobody. */
    int up = me + 1 < np ? me + 1 : MPI_PROC_NULL, down = me > 0 ? me - 1 : MPI_PROC_NULL;
    int sv = me * 5, rv = -7;
    MPI_Request sr[2];
    OK(MPI_Irecv(&rv, 1, MPI_INT, down, 20, MPI_COMM_WORLD, &sr[0]));
    OK(MPI_Isend(&sv, 1, MPI_INT, up, 20, MPI_COMM_WORLD, &sr[1]));
    OK(MPI_Wait(&sr[0], &st));
    OK(MPI_Wait(&sr[1], MPI_STATUS_IGNORE));
    int cnt = -1;
    OK(MPI_Get_count(&st, MPI_INT, &cnt));
    if (me == 0)
        CHECK(rv == -7 && st.MPI_SOURCE == MPI_PROC_NULL && st.MPI_TAG == MPI_ANY_TAG && cnt == 0,
              "receive from PROC_NULL: %d %d %d %d", rv, st.MPI_SOURCE, st.MPI_TAG, cnt);
    else
        CHECK(rv == (me - 1) * 5 && st.MPI_SOURCE == me - 1 && cnt == 1, "shift %d", rv);
    OK(MPI_Send(&sv, 1, MPI_INT, MPI_PROC_NULL, 0, MPI_COMM_WORLD));
    OK(MPI_Recv(&rv, 1, MPI_INT, MPI_PROC_NULL, MPI_ANY_TAG, MPI_COMM_WORLD, &st));
    CHECK(st.MPI_SOURCE == MPI_PROC_NULL, "recv from PROC_NULL");

    /* MPI_Waitany / MPI_Testany: rank 0 hears from every other rank in any order. */
    int at = 0, fl = 0;
    MPI_Request none[2] = { MPI_REQUEST_NULL, MPI_REQUEST_NULL };
    OK(MPI_Waitany(2, none, &at, &st));
    CHECK(at == MPI_UNDEFINED, "waitany of null requests %d", at);
    OK(MPI_Testany(2, none, &at, &fl, MPI_STATUS_IGNORE));
    CHECK(at == MPI_UNDEFINED && fl == 1, "testany of null requests %d %d", at, fl);
    if (me == 0) {
        int *vals = malloc(sizeof(int) * np);
        MPI_Request *rs = malloc(sizeof(MPI_Request) * np);
        for (int i = 1; i < np; i++)
            OK(MPI_Irecv(&vals[i], 1, MPI_INT, i, 21, MPI_COMM_WORLD, &rs[i - 1]));
        int seen = 0;
        for (int k = 1; k < np; k++) {
            OK(MPI_Waitany(np - 1, rs, &at, &st));
            CHECK(at >= 0 && at < np - 1 && rs[at] == MPI_REQUEST_NULL && st.MPI_SOURCE == at + 1,
                  "waitany index %d source %d", at, st.MPI_SOURCE);
            CHECK(vals[at + 1] == (at + 1) * 11, "waitany value %d", vals[at + 1]);
            seen |= 1 << at;
        }
        CHECK(seen == (1 << (np - 1)) - 1, "waitany saw %x", seen);
        OK(MPI_Waitany(np - 1, rs, &at, MPI_STATUS_IGNORE));
        CHECK(at == MPI_UNDEFINED, "waitany after all %d", at);
        /* Testany: nothing before rank 1 sends, which it does only when told. */
        OK(MPI_Irecv(&vals[0], 1, MPI_INT, 1, 22, MPI_COMM_WORLD, &rs[0]));
        OK(MPI_Testany(1, rs, &at, &fl, &st));
        CHECK(fl == 0 && at == MPI_UNDEFINED, "testany before the send %d %d", fl, at);
        OK(MPI_Send(&sv, 1, MPI_INT, 1, 23, MPI_COMM_WORLD));
        for (fl = 0; !fl;) OK(MPI_Testany(1, rs, &at, &fl, &st));
        CHECK(at == 0 && vals[0] == 99 && st.MPI_TAG == 22, "testany %d %d", at, vals[0]);
        free(vals);
        free(rs);
    } else {
        int v = me * 11;
        OK(MPI_Send(&v, 1, MPI_INT, 0, 21, MPI_COMM_WORLD));
        if (me == 1) {
            v = 99;
            OK(MPI_Recv(&rv, 1, MPI_INT, 0, 23, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
            OK(MPI_Send(&v, 1, MPI_INT, 0, 22, MPI_COMM_WORLD));
        }
    }

    /* MPI_Waitany blocks instead of spinning: rank 0 waits on two requests; the last rank
       sends the first message only some time after rank 0 started waiting (a delay nothing
       depends on), the second when told. Rank 0's thread must have been mostly off the CPU. */
    if (np > 1) {
        if (me == 0) {
            int a = 0, b = 0;
            MPI_Request two[2];
            OK(MPI_Irecv(&a, 1, MPI_INT, np - 1, 25, MPI_COMM_WORLD, &two[0]));
            OK(MPI_Irecv(&b, 1, MPI_INT, np - 1, 24, MPI_COMM_WORLD, &two[1]));
            OK(MPI_Send(&sv, 1, MPI_INT, np - 1, 23, MPI_COMM_WORLD));
            double cpu = thread_cpu(), wall = MPI_Wtime();
            OK(MPI_Waitany(2, two, &at, &st));
            cpu = thread_cpu() - cpu;
            wall = MPI_Wtime() - wall;
            CHECK(at == 1 && b == 24 && st.MPI_TAG == 24, "waitany index %d tag %d", at, st.MPI_TAG);
            CHECK(!timing || cpu < wall / 4, "MPI_Waitany used %.3f s of CPU while it waited %.3f s", cpu, wall);
            OK(MPI_Send(&sv, 1, MPI_INT, np - 1, 23, MPI_COMM_WORLD));
            OK(MPI_Waitany(2, two, &at, &st));
            CHECK(at == 0 && a == 25 && two[0] == MPI_REQUEST_NULL, "waitany index %d value %d", at, a);
        } else if (me == np - 1) {
            int v = 24;
            OK(MPI_Recv(&rv, 1, MPI_INT, 0, 23, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
            struct timespec delay = { 0, 300 * 1000 * 1000 };
            nanosleep(&delay, NULL);
            OK(MPI_Send(&v, 1, MPI_INT, 0, 24, MPI_COMM_WORLD));
            OK(MPI_Recv(&rv, 1, MPI_INT, 0, 23, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
            v = 25;
            OK(MPI_Send(&v, 1, MPI_INT, 0, 25, MPI_COMM_WORLD));
        }
    }

    /* MPI_Comm_split: even and odd ranks, highest world rank first; MPI_UNDEFINED. */
    MPI_Comm half, rest;
    OK(MPI_Comm_split(MPI_COMM_WORLD, me % 2, -me, &half));
    int hr, hs, hsum = 0, want_sum = 0, want_rank = 0, want_size = 0;
    for (int r = 0; r < np; r++)
        if (r % 2 == me % 2) { want_size++; want_sum += r; want_rank += r > me; }
    OK(MPI_Comm_rank(half, &hr));
    OK(MPI_Comm_size(half, &hs));
    CHECK(hs == want_size && hr == want_rank, "split rank %d of %d", hr, hs);
    OK(MPI_Allreduce(&me, &hsum, 1, MPI_INT, MPI_SUM, half));
    CHECK(hsum == want_sum, "split allreduce %d", hsum);
    int from = -1;
    MPI_Request hq;
    OK(MPI_Irecv(&from, 1, MPI_INT, (hr + hs - 1) % hs, 30, half, &hq));
    OK(MPI_Send(&me, 1, MPI_INT, (hr + 1) % hs, 30, half));
    OK(MPI_Wait(&hq, &st));
    CHECK(st.MPI_SOURCE == (hr + hs - 1) % hs && from % 2 == me % 2, "split ring %d", from);
    OK(MPI_Comm_free(&half));
    OK(MPI_Comm_split(MPI_COMM_WORLD, me == 0 ? MPI_UNDEFINED : 1, 0, &rest));
    if (me == 0) {
        CHECK(rest == MPI_COMM_NULL, "MPI_UNDEFINED gave %d", rest);
    } else {
        OK(MPI_Comm_size(rest, &hs));
        CHECK(hs == np - 1, "split without rank 0: %d", hs);
        OK(MPI_Barrier(rest));
        OK(MPI_Comm_free(&rest));
    }

    CHECK(MPI_Wtime() >= t0, "time runs");
    free(g); free(a2a); free(a2b);
    OK(MPI_Type_free(&pair));
    OK(MPI_Type_free(&idx));
    /* All-gather and all-to-all: contiguous buffers (run in place), MPI_IN_PLACE, a
     * contiguous derived type, and a non-contiguous receive type (packed). */
    {
        enum { K = 3 };
        int mine[K], all[4 * K], out[4 * K], in[4 * K];
        for (int i = 0; i < K; i++)
            mine[i] = me * 100 + i;
        OK(MPI_Allgather(mine, K, MPI_INT, all, K, MPI_INT, MPI_COMM_WORLD));
        for (int r = 0; r < np; r++)
            for (int i = 0; i < K; i++)
                CHECK(all[r * K + i] == r * 100 + i, "allgather [%d][%d] = %d", r, i, all[r * K + i]);
        memset(all, 0, sizeof all);
        memcpy(all + me * K, mine, sizeof mine);
        OK(MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, all, K, MPI_INT, MPI_COMM_WORLD));
        for (int r = 0; r < np; r++)
            CHECK(all[r * K + 2] == r * 100 + 2, "allgather in place [%d] = %d", r, all[r * K + 2]);
        for (int r = 0; r < np; r++)
            for (int i = 0; i < K; i++)
                out[r * K + i] = me * 1000 + r * 10 + i;
        OK(MPI_Alltoall(out, K, MPI_INT, in, K, MPI_INT, MPI_COMM_WORLD));
        for (int r = 0; r < np; r++)
            for (int i = 0; i < K; i++)
                CHECK(in[r * K + i] == r * 1000 + me * 10 + i, "alltoall [%d][%d] = %d", r, i, in[r * K + i]);
        memcpy(in, out, sizeof out);
        OK(MPI_Alltoall(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, in, K, MPI_INT, MPI_COMM_WORLD));
        for (int r = 0; r < np; r++)
            CHECK(in[r * K + 1] == r * 1000 + me * 10 + 1, "alltoall in place [%d] = %d", r, in[r * K + 1]);
        MPI_Datatype three;
        OK(MPI_Type_contiguous(K, MPI_INT, &three));
        OK(MPI_Type_commit(&three));
        OK(MPI_Alltoall(out, 1, three, in, K, MPI_INT, MPI_COMM_WORLD));
        for (int r = 0; r < np; r++)
            CHECK(in[r * K] == r * 1000 + me * 10, "alltoall of a derived type [%d] = %d", r, in[r * K]);
        OK(MPI_Type_free(&three));
        MPI_Datatype spaced;
        int wide[8 * K];
        memset(wide, -1, sizeof wide);
        OK(MPI_Type_vector(K, 1, 2, MPI_INT, &spaced));
        OK(MPI_Type_commit(&spaced));
        OK(MPI_Allgather(mine, K, MPI_INT, wide, 1, spaced, MPI_COMM_WORLD));
        for (int r = 0; r < np; r++)
            /* The vector's extent is 2K - 1 ints: rank r's block starts there. */
            CHECK(wide[r * (2 * K - 1) + 2] == r * 100 + 1 && wide[r * (2 * K - 1) + 1] == -1,
                  "allgather into a strided type [%d] = %d", r, wide[r * (2 * K - 1) + 2]);
        OK(MPI_Type_free(&spaced));
    }

    printf("rank %d: c p2p and collectives ok\n", me);
    OK(MPI_Finalize());
    OK(MPI_Finalized(&flag));
    CHECK(flag == 1, "finalized");
    return 0;
}
