/* The vector and w collectives and reduce-scatter through mpi.h, on any number of ranks,
 * and the error classes of their wrong arguments. */
#include "common.h"

int main(int argc, char **argv)
{
    OK(MPI_Init(&argc, &argv));
    OK(MPI_Comm_rank(MPI_COMM_WORLD, &me));
    OK(MPI_Comm_size(MPI_COMM_WORLD, &np));
    int counts[64], displs[64], total = 0;
    CHECK(np <= 64, "too many ranks");
    /* Rank r owns r + 1 ints; blocks are one int apart (a gap that must stay untouched). */
    for (int r = 0; r < np; r++) {
        counts[r] = r + 1;
        displs[r] = total;
        total += r + 2;
    }
    int *all = malloc(total * sizeof(int));
    int mine[64];
    for (int i = 0; i <= me; i++) mine[i] = 100 * me + i;

    /* Allgatherv, then in place. */
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < total; i++) all[i] = -1;
        if (pass == 0) {
            OK(MPI_Allgatherv(mine, me + 1, MPI_INT, all, counts, displs, MPI_INT, MPI_COMM_WORLD));
        } else {
            memcpy(all + displs[me], mine, (me + 1) * sizeof(int));
            OK(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, all, counts, displs, MPI_INT,
                              MPI_COMM_WORLD));
        }
        for (int r = 0; r < np; r++) {
            for (int i = 0; i <= r; i++)
                CHECK(all[displs[r] + i] == 100 * r + i, "allgatherv pass %d [%d][%d] = %d", pass,
                      r, i, all[displs[r] + i]);
            CHECK(all[displs[r] + r + 1] == -1, "allgatherv gap %d overwritten", r);
        }
    }

    /* Gatherv to the last rank. */
    int root = np - 1;
    for (int i = 0; i < total; i++) all[i] = -1;
    OK(MPI_Gatherv(mine, me + 1, MPI_INT, all, counts, displs, MPI_INT, root, MPI_COMM_WORLD));
    if (me == root)
        for (int r = 0; r < np; r++)
            CHECK(all[displs[r] + r] == 100 * r + r, "gatherv block %d", r);

    /* Scatterv from rank 0: rank r gets its r + 1 ints. */
    if (me == 0)
        for (int r = 0; r < np; r++)
            for (int i = 0; i <= r; i++) all[displs[r] + i] = 7 * r + i;
    int got[64];
    for (int i = 0; i < 64; i++) got[i] = -1;
    OK(MPI_Scatterv(all, counts, displs, MPI_INT, got, me + 1, MPI_INT, 0, MPI_COMM_WORLD));
    for (int i = 0; i <= me; i++) CHECK(got[i] == 7 * me + i, "scatterv [%d] = %d", i, got[i]);
    CHECK(got[me + 1] == -1, "scatterv wrote past its count");

    /* Alltoallv: d + 1 ints to rank d, valued 1000 * sender + 10 * d + i. */
    int scounts[64], sdispls[64], rcounts[64], rdispls[64], sn = 0, rn = 0;
    for (int r = 0; r < np; r++) {
        scounts[r] = r + 1;
        sdispls[r] = sn;
        sn += r + 1;
        rcounts[r] = me + 1;
        rdispls[r] = rn;
        rn += me + 1;
    }
    int *sb = malloc(sn * sizeof(int)), *rb = malloc(rn * sizeof(int));
    for (int d = 0; d < np; d++)
        for (int i = 0; i <= d; i++) sb[sdispls[d] + i] = 1000 * me + 10 * d + i;
    OK(MPI_Alltoallv(sb, scounts, sdispls, MPI_INT, rb, rcounts, rdispls, MPI_INT, MPI_COMM_WORLD));
    for (int s = 0; s < np; s++)
        for (int i = 0; i <= me; i++)
            CHECK(rb[rdispls[s] + i] == 1000 * s + 10 * me + i, "alltoallv from %d [%d]", s, i);

    /* Alltoallw: to an even rank 2 ints, to an odd rank 1 double; byte displacements. */
    struct { int i[2]; double d; } out[64], in[64];
    int wsc[64], wsd[64], wrc[64], wrd[64];
    MPI_Datatype wst[64], wrt[64];
    for (int r = 0; r < np; r++) {
        out[r].i[0] = me * 10 + r;
        out[r].i[1] = -(me * 10 + r);
        out[r].d = me + r / 8.0;
        in[r].i[0] = in[r].i[1] = -1;
        in[r].d = -1;
        wsc[r] = r % 2 ? 1 : 2;
        wst[r] = r % 2 ? MPI_DOUBLE : MPI_INT;
        wsd[r] = (int)((char *)(r % 2 ? (void *)&out[r].d : (void *)out[r].i) - (char *)out);
        wrc[r] = me % 2 ? 1 : 2;
        wrt[r] = me % 2 ? MPI_DOUBLE : MPI_INT;
        wrd[r] = (int)((char *)(me % 2 ? (void *)&in[r].d : (void *)in[r].i) - (char *)in);
    }
    OK(MPI_Alltoallw(out, wsc, wsd, wst, in, wrc, wrd, wrt, MPI_COMM_WORLD));
    for (int s = 0; s < np; s++) {
        if (me % 2)
            CHECK(in[s].d == s + me / 8.0 && in[s].i[0] == -1, "alltoallw double from %d", s);
        else
            CHECK(in[s].i[0] == s * 10 + me && in[s].i[1] == -(s * 10 + me) && in[s].d == -1,
                  "alltoallw ints from %d", s);
    }

    /* Reduce_scatter: element k of every rank's vector is rank + k; rank r gets block r. */
    long *vec = malloc((sn + 2 * np) * sizeof(long)), res[64];
    for (int k = 0; k < sn; k++) vec[k] = me + k;
    OK(MPI_Reduce_scatter(vec, res, scounts, MPI_LONG, MPI_SUM, MPI_COMM_WORLD));
    for (int i = 0; i <= me; i++) {
        long k = sdispls[me] + i;
        CHECK(res[i] == np * k + (long)np * (np - 1) / 2, "reduce_scatter [%d] = %ld", i, res[i]);
    }
    /* Reduce_scatter_block in place, with MPI_MAX. */
    for (int k = 0; k < 2 * np; k++) vec[k] = (k + me) % np;
    OK(MPI_Reduce_scatter_block(MPI_IN_PLACE, vec, 2, MPI_LONG, MPI_MAX, MPI_COMM_WORLD));
    CHECK(vec[0] == np - 1 && vec[1] == np - 1, "reduce_scatter_block %ld %ld", vec[0], vec[1]);

    /* Errors, returned. Every rank passes the same wrong argument, so none waits. */
    OK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    int e = MPI_Gatherv(mine, 1, MPI_INT, all, counts, displs, MPI_INT, np, MPI_COMM_WORLD);
    CHECK(e == MPI_ERR_ROOT, "gatherv bad root: %d", e);
    counts[0] = -1;
    e = MPI_Allgatherv(mine, me + 1, MPI_INT, all, counts, displs, MPI_INT, MPI_COMM_WORLD);
    CHECK(e == MPI_ERR_COUNT, "allgatherv negative count: %d", e);
    counts[0] = 1;
    e = MPI_Allgatherv(mine, me + 1, MPI_INT, all, NULL, displs, MPI_INT, MPI_COMM_WORLD);
    CHECK(e == MPI_ERR_ARG, "allgatherv null counts: %d", e);
    double dv[64], dr[64];
    for (int i = 0; i < np; i++) dv[i] = i;
    e = MPI_Reduce_scatter_block(dv, dr, 1, MPI_DOUBLE, MPI_BXOR, MPI_COMM_WORLD);
    CHECK(e == MPI_ERR_OP, "reduce_scatter bxor on doubles: %d", e);
    e = MPI_Alltoallv(sb, scounts, sdispls, 12345, rb, rcounts, rdispls, MPI_INT, MPI_COMM_WORLD);
    CHECK(e == MPI_ERR_TYPE, "alltoallv bad type: %d", e);
    e = MPI_Alltoallv(sb, scounts, sdispls, MPI_INT, rb, rcounts, rdispls, MPI_INT, 777);
    CHECK(e == MPI_ERR_COMM, "alltoallv bad communicator: %d", e);
    /* Two ints to every rank, room for one from each: truncated at every receiver. */
    int two[128], one[64];
    for (int r = 0; r < np; r++) {
        scounts[r] = 2;
        sdispls[r] = 2 * r;
        rcounts[r] = 1;
        rdispls[r] = r;
        two[2 * r] = two[2 * r + 1] = r;
    }
    e = MPI_Alltoallv(two, scounts, sdispls, MPI_INT, one, rcounts, rdispls, MPI_INT,
                      MPI_COMM_WORLD);
    CHECK(e == MPI_ERR_TRUNCATE, "alltoallv truncated: %d", e);
    /* And the communicator still works afterwards. */
    int sum = 0;
    OK(MPI_Allreduce(&me, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD));
    CHECK(sum == np * (np - 1) / 2, "allreduce after errors");
    for (int r = 0; r < np; r++) {
        counts[r] = 1;
        displs[r] = r;
    }
    OK(MPI_Allgatherv(&me, 1, MPI_INT, all, counts, displs, MPI_INT, MPI_COMM_WORLD));
    for (int r = 0; r < np; r++) CHECK(all[r] == r, "allgatherv after errors");

    free(all);
    free(sb);
    free(rb);
    free(vec);
    printf("rank %d: c coll v ok\n", me);
    OK(MPI_Finalize());
    return 0;
}
