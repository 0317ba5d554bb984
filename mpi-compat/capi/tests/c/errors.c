/* Bad input through mpi.h: each call returns the matching error class (errors return). */
#include "common.h"

#define EXPECT(call, class) CHECK((call) == (class), "%s did not give %s", #call, #class)

int main(int argc, char **argv)
{
    OK(MPI_Init(&argc, &argv));
    OK(MPI_Comm_rank(MPI_COMM_WORLD, &me));
    OK(MPI_Comm_size(MPI_COMM_WORLD, &np));
    OK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    /* MPI_Comm_split with a null newcomm fails after its collective part and keeps nothing.
       Handles are numbered in order, so the one before the next new handle must name no
       communicator. */
    EXPECT(MPI_Comm_split(MPI_COMM_WORLD, 0, 0, NULL), MPI_ERR_ARG);
    MPI_Comm dup, before;
    OK(MPI_Comm_dup(MPI_COMM_WORLD, &dup));
    before = dup - 1;
    EXPECT(MPI_Comm_free(&before), MPI_ERR_COMM);
    OK(MPI_Comm_free(&dup));
    int x = 1;
    EXPECT(MPI_Send(&x, 1, MPI_INT, np, 0, MPI_COMM_WORLD), MPI_ERR_RANK);
    EXPECT(MPI_Send(&x, 1, MPI_INT, 0, -3, MPI_COMM_WORLD), MPI_ERR_TAG);
    EXPECT(MPI_Send(&x, 1, 9999, 0, 0, MPI_COMM_WORLD), MPI_ERR_TYPE);
    EXPECT(MPI_Send(&x, -1, MPI_INT, 0, 0, MPI_COMM_WORLD), MPI_ERR_COUNT);
    EXPECT(MPI_Send(&x, 1, MPI_INT, 0, 0, 77), MPI_ERR_COMM);
    EXPECT(MPI_Allreduce(&x, &x, 1, MPI_INT, 99, MPI_COMM_WORLD), MPI_ERR_OP);
    double f = 1;
    EXPECT(MPI_Allreduce(&f, &f, 1, MPI_DOUBLE, MPI_BXOR, MPI_COMM_WORLD), MPI_ERR_OP);
    EXPECT(MPI_Bcast(&x, 1, MPI_INT, np + 1, MPI_COMM_WORLD), MPI_ERR_RANK);
    MPI_Datatype t = MPI_INT;
    EXPECT(MPI_Type_free(&t), MPI_ERR_TYPE);
    MPI_Datatype v;
    OK(MPI_Type_vector(2, 1, 2, MPI_INT, &v));
    EXPECT(MPI_Send(&x, 1, v, 0, 0, MPI_COMM_WORLD), MPI_ERR_TYPE); /* not committed */
    /* A thread reuses what its last call took for the same handles: committing, freeing and
       making handles must show at once (the same calls again, with other outcomes). */
    OK(MPI_Type_commit(&v));
    int four[4] = { 1, 2, 3, 4 }, two[2] = { 0, 0 };
    OK(MPI_Send(four, 1, v, me, 5, MPI_COMM_WORLD));
    OK(MPI_Recv(two, 2, MPI_INT, me, 5, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
    CHECK(two[0] == 1 && two[1] == 3, "a vector type sent %d %d", two[0], two[1]);
    MPI_Datatype freed = v;
    OK(MPI_Type_free(&v));
    EXPECT(MPI_Send(four, 1, freed, me, 5, MPI_COMM_WORLD), MPI_ERR_TYPE);
    MPI_Comm mine;
    OK(MPI_Comm_dup(MPI_COMM_WORLD, &mine));
    OK(MPI_Send(&x, 1, MPI_INT, me, 6, mine));
    OK(MPI_Recv(&x, 1, MPI_INT, me, 6, mine, MPI_STATUS_IGNORE));
    MPI_Comm gone = mine;
    OK(MPI_Comm_free(&mine));
    EXPECT(MPI_Send(&x, 1, MPI_INT, me, 6, gone), MPI_ERR_COMM);
    EXPECT(MPI_Recv(&x, 1, MPI_INT, me, 6, gone, MPI_STATUS_IGNORE), MPI_ERR_COMM);
    MPI_Request r = 12345;
    EXPECT(MPI_Wait(&r, MPI_STATUS_IGNORE), MPI_ERR_REQUEST);
    EXPECT(MPI_Send(&x, 1, MPI_INT, -5, 0, MPI_COMM_WORLD), MPI_ERR_RANK);
    int dims[2] = { np + 1, 1 }, periods[2] = { 0, 0 };
    MPI_Comm cart;
    EXPECT(MPI_Cart_create(MPI_COMM_WORLD, 2, dims, periods, 0, &cart), MPI_ERR_DIMS);

    /* Truncation: the message is consumed. */
    if (np > 1) {
        if (me == 0) {
            int three[3] = { 1, 2, 3 };
            OK(MPI_Send(three, 3, MPI_INT, 1, 9, MPI_COMM_WORLD));
        } else if (me == 1) {
            int two[2];
            EXPECT(MPI_Recv(two, 2, MPI_INT, 0, 9, MPI_COMM_WORLD, MPI_STATUS_IGNORE), MPI_ERR_TRUNCATE);
        }
    }

    /* A request that fails in MPI_Waitany is named by *index (and freed). */
    if (np > 1) {
        int go = 0;
        if (me == 0) {
            int one = 0, two[2];
            MPI_Request rq2[2];
            OK(MPI_Irecv(&one, 1, MPI_INT, 1, 40, MPI_COMM_WORLD, &rq2[0]));
            OK(MPI_Irecv(two, 2, MPI_INT, 1, 41, MPI_COMM_WORLD, &rq2[1]));
            int at = -1;
            EXPECT(MPI_Waitany(2, rq2, &at, MPI_STATUS_IGNORE), MPI_ERR_TRUNCATE);
            CHECK(at == 1 && rq2[1] == MPI_REQUEST_NULL, "waitany error index %d", at);
            OK(MPI_Send(&go, 1, MPI_INT, 1, 42, MPI_COMM_WORLD));
            OK(MPI_Waitany(2, rq2, &at, MPI_STATUS_IGNORE));
            CHECK(at == 0 && one == 40, "waitany after the error: index %d value %d", at, one);
        } else if (me == 1) {
            int three[3] = { 1, 2, 3 }, v = 40;
            OK(MPI_Send(three, 3, MPI_INT, 0, 41, MPI_COMM_WORLD));
            OK(MPI_Recv(&go, 1, MPI_INT, 0, 42, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
            OK(MPI_Send(&v, 1, MPI_INT, 0, 40, MPI_COMM_WORLD));
        }
    }

    /* One rank's operation is not defined on its datatype: that rank fails, and the others
       are not left waiting for it; the next reduction is not spoiled. */
    double d = me + 1, sum = 0;
    int rc = MPI_Allreduce(&d, &sum, 1, MPI_DOUBLE, me == np - 1 ? MPI_BAND : MPI_SUM, MPI_COMM_WORLD);
    CHECK(rc == (me == np - 1 ? MPI_ERR_OP : MPI_SUCCESS), "allreduce with MPI_BAND on rank %d gave %d", np - 1, rc);
    rc = MPI_Reduce(&d, &sum, 1, MPI_DOUBLE, me == np - 1 ? MPI_BAND : MPI_SUM, 0, MPI_COMM_WORLD);
    CHECK(rc == (me == np - 1 ? MPI_ERR_OP : MPI_SUCCESS), "reduce with MPI_BAND on rank %d gave %d", np - 1, rc);
    OK(MPI_Allreduce(&d, &sum, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD));
    CHECK(sum == np * (np + 1) / 2.0, "allreduce after the failed ones: %g", sum);

    /* Windows. */
    long *base;
    MPI_Win win;
    OK(MPI_Win_allocate(64, 8, MPI_INFO_NULL, MPI_COMM_WORLD, &base, &win));
    long l = 5;
    EXPECT(MPI_Put(&l, 1, MPI_LONG, 0, 0, 1, MPI_LONG, win), MPI_ERR_RMA_SYNC);
    EXPECT(MPI_Win_unlock(0, win), MPI_ERR_RMA_SYNC);
    EXPECT(MPI_Put(&l, 1, MPI_LONG, 0, 0, 1, MPI_LONG, 4242), MPI_ERR_WIN);
    OK(MPI_Win_fence(0, win));
    EXPECT(MPI_Put(&l, 1, MPI_LONG, 0, 8, 1, MPI_LONG, win), MPI_ERR_RMA_RANGE);
    EXPECT(MPI_Put(&l, 1, MPI_LONG, 0, -1, 1, MPI_LONG, win), MPI_ERR_DISP);
    EXPECT(MPI_Put(&l, 1, MPI_LONG, np, 0, 1, MPI_LONG, win), MPI_ERR_RANK);
    EXPECT(MPI_Put(&l, 1, MPI_LONG, 0, 0, 3, MPI_INT, win), MPI_ERR_COUNT);
    double dd = 1, cmp = 0, res;
    EXPECT(MPI_Compare_and_swap(&dd, &cmp, &res, MPI_DOUBLE, 0, 0, win), MPI_ERR_TYPE);
    EXPECT(MPI_Win_lock(99, 0, 0, win), MPI_ERR_ARG);
    MPI_Request rq;
    EXPECT(MPI_Rput(&l, 1, MPI_LONG, 0, 0, 1, MPI_LONG, win, &rq), MPI_ERR_RMA_SYNC);
    /* A valid but huge count (2^30 elements of 1 MiB: more than the address space) fails
       with MPI_ERR_NO_MEM instead of aborting the program on a failed allocation. */
    MPI_Datatype mib;
    OK(MPI_Type_contiguous(1 << 20, MPI_BYTE, &mib));
    OK(MPI_Type_commit(&mib));
    EXPECT(MPI_Rget(&l, 1 << 30, mib, 0, 0, 1 << 30, mib, win, &rq), MPI_ERR_NO_MEM);
    OK(MPI_Type_free(&mib));
    int flag;
    EXPECT(MPI_Win_test(win, &flag), MPI_ERR_RMA_SYNC);
    OK(MPI_Win_fence(MPI_MODE_NOSUCCEED, win));
    OK(MPI_Win_free(&win));
    printf("rank %d: c errors ok\n", me);
    OK(MPI_Finalize());
    EXPECT(MPI_Finalize(), MPI_ERR_OTHER);
    return 0;
}
