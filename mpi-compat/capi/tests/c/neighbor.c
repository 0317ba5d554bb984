/* Distributed graph topologies and neighbourhood collectives through mpi.h: each rank r sends
 * to r + 1 and r + 2 and receives from r - 1 and r - 2 (modulo the size, so one rank has two
 * edges to itself and two ranks share edges), blocking and non-blocking, and the errors. */
#include "common.h"

#define MOD(x) ((((x) % np) + np) % np)

int main(int argc, char **argv)
{
    OK(MPI_Init(&argc, &argv));
    OK(MPI_Comm_rank(MPI_COMM_WORLD, &me));
    OK(MPI_Comm_size(MPI_COMM_WORLD, &np));
    int dst[2] = { MOD(me + 1), MOD(me + 2) }, src[2] = { MOD(me - 1), MOD(me - 2) };
    int dw[2] = { 7, 14 }, sw[2] = { 7, 14 };
    MPI_Comm g, gu;
    OK(MPI_Dist_graph_create_adjacent(MPI_COMM_WORLD, 2, src, sw, 2, dst, dw, MPI_INFO_NULL, 0,
                                      &g));
    OK(MPI_Dist_graph_create_adjacent(MPI_COMM_WORLD, 2, src, MPI_UNWEIGHTED, 2, dst,
                                      MPI_UNWEIGHTED, MPI_INFO_NULL, 1, &gu));
    int indeg = -1, outdeg = -1, weighted = -1;
    OK(MPI_Dist_graph_neighbors_count(g, &indeg, &outdeg, &weighted));
    CHECK(indeg == 2 && outdeg == 2 && weighted == 1, "count %d %d %d", indeg, outdeg, weighted);
    OK(MPI_Dist_graph_neighbors_count(gu, &indeg, &outdeg, &weighted));
    CHECK(weighted == 0, "unweighted");
    int s[2], sws[2], d[2], dws[2];
    OK(MPI_Dist_graph_neighbors(g, 2, s, sws, 2, d, dws));
    for (int i = 0; i < 2; i++)
        CHECK(s[i] == src[i] && d[i] == dst[i] && sws[i] == sw[i] && dws[i] == dw[i],
              "neighbours %d", i);
    int rank_in_g = -1;
    OK(MPI_Comm_rank(g, &rank_in_g));
    CHECK(rank_in_g == me, "ranks stay");

    for (int nb = 0; nb < 2; nb++) {
        MPI_Request r[5];
        int k = 0;
        /* allgather: my two ints to both destinations. */
        int mine[2] = { me, 10 * me }, ag[4], agv[6], a2a[4], a2av[4], a2aw[4];
        for (int i = 0; i < 6; i++) agv[i] = -1;
        int c2[2] = { 2, 2 }, dsp[2] = { 0, 3 };
        /* alltoall: block j (two ints) to destination j. */
        int blocks[4] = { 100 * me, 100 * me + 1, 100 * me + 10, 100 * me + 11 };
        int c[2] = { 2, 2 }, dd[2] = { 0, 2 };
        MPI_Aint bd[2] = { 0, 2 * sizeof(int) };
        MPI_Datatype t[2] = { MPI_INT, MPI_INT };
        if (nb) {
            OK(MPI_Ineighbor_allgather(mine, 2, MPI_INT, ag, 2, MPI_INT, g, &r[k++]));
            OK(MPI_Ineighbor_allgatherv(mine, 2, MPI_INT, agv, c2, dsp, MPI_INT, g, &r[k++]));
            OK(MPI_Ineighbor_alltoall(blocks, 2, MPI_INT, a2a, 2, MPI_INT, gu, &r[k++]));
            OK(MPI_Ineighbor_alltoallv(blocks, c, dd, MPI_INT, a2av, c, dd, MPI_INT, g, &r[k++]));
            OK(MPI_Ineighbor_alltoallw(blocks, c, bd, t, a2aw, c, bd, t, g, &r[k++]));
            OK(MPI_Waitall(k, r, MPI_STATUSES_IGNORE));
        } else {
            OK(MPI_Neighbor_allgather(mine, 2, MPI_INT, ag, 2, MPI_INT, g));
            OK(MPI_Neighbor_allgatherv(mine, 2, MPI_INT, agv, c2, dsp, MPI_INT, g));
            OK(MPI_Neighbor_alltoall(blocks, 2, MPI_INT, a2a, 2, MPI_INT, gu));
            OK(MPI_Neighbor_alltoallv(blocks, c, dd, MPI_INT, a2av, c, dd, MPI_INT, g));
            OK(MPI_Neighbor_alltoallw(blocks, c, bd, t, a2aw, c, bd, t, g));
        }
        for (int i = 0; i < 2; i++) {
            CHECK(ag[2 * i] == src[i] && ag[2 * i + 1] == 10 * src[i], "allgather %d: %d", i,
                  ag[2 * i]);
            CHECK(agv[3 * i] == src[i] && agv[3 * i + 1] == 10 * src[i], "allgatherv %d", i);
            /* Source i sent me its block i (I am its destination i). */
            int want = 100 * src[i] + 10 * i;
            CHECK(a2a[2 * i] == want && a2a[2 * i + 1] == want + 1, "alltoall %d: %d", i,
                  a2a[2 * i]);
            CHECK(a2av[2 * i] == want && a2aw[2 * i + 1] == want + 1, "alltoallv/w %d", i);
        }
        CHECK(agv[2] == -1, "allgatherv gap");
    }

    /* Errors. */
    OK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    OK(MPI_Comm_set_errhandler(g, MPI_ERRORS_RETURN));
    int x = me, y[2];
    int e = MPI_Neighbor_allgather(&x, 1, MPI_INT, y, 1, MPI_INT, MPI_COMM_WORLD);
    CHECK(e == MPI_ERR_TOPOLOGY, "neighbour collective without a graph: %d", e);
    e = MPI_Dist_graph_neighbors_count(MPI_COMM_WORLD, &indeg, &outdeg, &weighted);
    CHECK(e == MPI_ERR_TOPOLOGY, "neighbours of the world: %d", e);
    e = MPI_Neighbor_allgather(MPI_IN_PLACE, 1, MPI_INT, y, 1, MPI_INT, g);
    CHECK(e == MPI_ERR_ARG, "in place: %d", e);
    MPI_Comm bad = MPI_COMM_NULL;
    /* Every rank sends to its right and declares no source: every rank is told. */
    e = MPI_Dist_graph_create_adjacent(MPI_COMM_WORLD, 0, NULL, MPI_UNWEIGHTED, 1, dst,
                                       MPI_UNWEIGHTED, MPI_INFO_NULL, 0, &bad);
    CHECK(e == MPI_ERR_TOPOLOGY && bad == MPI_COMM_NULL, "one-ended edges: %d", e);
    /* A neighbour outside the communicator. */
    int out[1] = { np };
    e = MPI_Dist_graph_create_adjacent(MPI_COMM_WORLD, 1, out, MPI_UNWEIGHTED, 1, out,
                                       MPI_UNWEIGHTED, MPI_INFO_NULL, 0, &bad);
    CHECK(e == MPI_ERR_TOPOLOGY, "neighbour out of range: %d", e);
    /* Weights on one side only. */
    e = MPI_Dist_graph_create_adjacent(MPI_COMM_WORLD, 2, src, sw, 2, dst, MPI_UNWEIGHTED,
                                       MPI_INFO_NULL, 0, &bad);
    CHECK(e == MPI_ERR_ARG, "half weighted: %d", e);

    /* The graph communicators still work. */
    int ag[4];
    OK(MPI_Neighbor_allgather(&me, 1, MPI_INT, ag, 1, MPI_INT, g));
    CHECK(ag[0] == src[0] && ag[1] == src[1], "allgather after errors");
    OK(MPI_Comm_free(&g));
    OK(MPI_Comm_free(&gu));
    printf("rank %d: c neighbor ok\n", me);
    OK(MPI_Finalize());
    return 0;
}
