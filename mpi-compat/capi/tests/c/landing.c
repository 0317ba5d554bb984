/* Receives posted before their messages arrive (their buffers are the transport's landing
   places over tcp): each gets the first message that matches it, in posting and arrival
   order, whole or truncated; messages that arrived before their receive was posted keep
   their order. */
#include "common.h"

#define BIG (1 << 20)

static unsigned char pattern(long i, int seed) { return (unsigned char)(i * 31 + seed + (i >> 9)); }

int main(int argc, char **argv)
{
    OK(MPI_Init(&argc, &argv));
    OK(MPI_Comm_rank(MPI_COMM_WORLD, &me));
    OK(MPI_Comm_size(MPI_COMM_WORLD, &np));
    OK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    unsigned char *big = malloc(BIG + 64);
    int small[4] = { 0 }, one = 0, trunc[2] = { 0 };
    int last = np - 1;
    if (me == 0) {
        /* Posted first: one big receive by tag, one any-tag receive, one too short. */
        MPI_Request r[3];
        MPI_Status st[3];
        memset(big, 0, BIG + 64);
        OK(MPI_Irecv(big, BIG + 64, MPI_BYTE, last, 32, MPI_COMM_WORLD, &r[0]));
        OK(MPI_Irecv(small, 4, MPI_INT, last, MPI_ANY_TAG, MPI_COMM_WORLD, &r[1]));
        OK(MPI_Barrier(MPI_COMM_WORLD));
        OK(MPI_Waitall(2, r, st));
        CHECK(st[0].MPI_TAG == 32 && st[0].MPI_SOURCE == last, "big: tag %d", st[0].MPI_TAG);
        int n;
        OK(MPI_Get_count(&st[0], MPI_BYTE, &n));
        CHECK(n == BIG, "big: %d bytes", n);
        for (long i = 0; i < BIG; i++)
            CHECK(big[i] == pattern(i, 5), "big: byte %ld is %d", i, big[i]);
        for (long i = BIG; i < BIG + 64; i++) CHECK(big[i] == 0, "big: wrote byte %ld", i);
        CHECK(st[1].MPI_TAG == 31 && small[0] == 1 && small[3] == 4, "any tag: tag %d first %d",
              st[1].MPI_TAG, small[0]);
        /* The message after the one the any-tag receive took was queued: received here. */
        OK(MPI_Recv(&one, 1, MPI_INT, last, 31, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
        CHECK(one == 7, "the later tag-31 message: %d", one);

        /* Truncation: the landing place is filled, the error is MPI_ERR_TRUNCATE. */
        OK(MPI_Irecv(trunc, 2, MPI_INT, last, 33, MPI_COMM_WORLD, &r[2]));
        OK(MPI_Barrier(MPI_COMM_WORLD));
        int err = MPI_Wait(&r[2], &st[2]), cls = -1;
        MPI_Error_class(err, &cls);
        CHECK(cls == MPI_ERR_TRUNCATE && trunc[0] == 100 && trunc[1] == 101,
              "truncation: class %d values %d %d", cls, trunc[0], trunc[1]);

        /* Messages that arrived before their receives were posted, in order. */
        OK(MPI_Barrier(MPI_COMM_WORLD));
        int a = 0, b = 0;
        OK(MPI_Irecv(&a, 1, MPI_INT, last, 34, MPI_COMM_WORLD, &r[0]));
        OK(MPI_Irecv(&b, 1, MPI_INT, last, 34, MPI_COMM_WORLD, &r[1]));
        OK(MPI_Waitall(2, r, MPI_STATUSES_IGNORE));
        CHECK(a == 1 && b == 2, "queued messages out of order: %d %d", a, b);

    } else if (me == last) {
        for (long i = 0; i < BIG; i++) big[i] = pattern(i, 5);
        int four[4] = { 1, 2, 3, 4 }, seven = 7, hundred[4] = { 100, 101, 102, 103 };
        OK(MPI_Barrier(MPI_COMM_WORLD));
        OK(MPI_Send(four, 4, MPI_INT, 0, 31, MPI_COMM_WORLD));
        OK(MPI_Send(big, BIG, MPI_BYTE, 0, 32, MPI_COMM_WORLD));
        OK(MPI_Send(&seven, 1, MPI_INT, 0, 31, MPI_COMM_WORLD));
        OK(MPI_Barrier(MPI_COMM_WORLD));
        OK(MPI_Send(hundred, 4, MPI_INT, 0, 33, MPI_COMM_WORLD));
        int v1 = 1, v2 = 2;
        OK(MPI_Send(&v1, 1, MPI_INT, 0, 34, MPI_COMM_WORLD));
        OK(MPI_Send(&v2, 1, MPI_INT, 0, 34, MPI_COMM_WORLD));
        OK(MPI_Barrier(MPI_COMM_WORLD));
    } else {
        for (int i = 0; i < 3; i++) OK(MPI_Barrier(MPI_COMM_WORLD));
    }
    free(big);
    printf("rank %d: c landing ok\n", me);
    OK(MPI_Finalize());
    return 0;
}
