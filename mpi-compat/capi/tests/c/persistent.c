/* Persistent point-to-point requests and MPI_Request_free through mpi.h: a ring started
 * several times, an inactive request tested and waited for, a freed receive that still
 * completes, and the error classes. */
#include "common.h"

int main(int argc, char **argv)
{
    OK(MPI_Init(&argc, &argv));
    OK(MPI_Comm_rank(MPI_COMM_WORLD, &me));
    OK(MPI_Comm_size(MPI_COMM_WORLD, &np));
    int right = (me + 1) % np, left = (me + np - 1) % np;

    /* A ring, started five times over the same two requests. */
    long out[2], in[2];
    MPI_Request r[2];
    OK(MPI_Recv_init(in, 2, MPI_LONG, left, 3, MPI_COMM_WORLD, &r[0]));
    OK(MPI_Send_init(out, 2, MPI_LONG, right, 3, MPI_COMM_WORLD, &r[1]));
    CHECK(r[0] != MPI_REQUEST_NULL && r[1] != MPI_REQUEST_NULL, "handles");
    /* Inactive: complete at once, handle kept. */
    int flag = 0;
    MPI_Status st;
    OK(MPI_Test(&r[0], &flag, &st));
    CHECK(flag == 1 && r[0] != MPI_REQUEST_NULL, "inactive test");
    OK(MPI_Wait(&r[1], MPI_STATUS_IGNORE));
    CHECK(r[1] != MPI_REQUEST_NULL, "inactive wait");
    for (int it = 0; it < 5; it++) {
        out[0] = 1000 * it + me;
        out[1] = -out[0];
        in[0] = in[1] = -1;
        OK(MPI_Startall(2, r));
        OK(MPI_Waitall(2, r, MPI_STATUSES_IGNORE));
        CHECK(r[0] != MPI_REQUEST_NULL && r[1] != MPI_REQUEST_NULL, "kept after waitall");
        CHECK(in[0] == 1000 * it + left && in[1] == -in[0], "iteration %d: %ld", it, in[0]);
    }
    /* One more, completed by MPI_Start and MPI_Test, with its status. */
    out[0] = 77;
    OK(MPI_Start(&r[0]));
    OK(MPI_Start(&r[1]));
    OK(MPI_Wait(&r[1], MPI_STATUS_IGNORE));
    flag = 0;
    while (!flag) OK(MPI_Test(&r[0], &flag, &st));
    int n = -1;
    OK(MPI_Get_count(&st, MPI_LONG, &n));
    CHECK(in[0] == 77 && st.MPI_SOURCE == left && st.MPI_TAG == 3 && n == 2, "status");

    /* Errors: a second start of an active request; a start of a request that is not
     * persistent; a non-contiguous persistent receive; an invalid destination. */
    OK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    OK(MPI_Start(&r[0]));
    int e = MPI_Start(&r[0]);
    CHECK(e == MPI_ERR_REQUEST, "start of an active request: %d", e);
    OK(MPI_Start(&r[1]));
    OK(MPI_Waitall(2, r, MPI_STATUSES_IGNORE));
    MPI_Request plain;
    OK(MPI_Isend(out, 1, MPI_LONG, me, 4, MPI_COMM_WORLD, &plain));
    e = MPI_Start(&plain);
    CHECK(e == MPI_ERR_REQUEST, "start of a plain request: %d", e);
    OK(MPI_Wait(&plain, MPI_STATUS_IGNORE));
    OK(MPI_Recv(in, 1, MPI_LONG, me, 4, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
    MPI_Datatype strided;
    OK(MPI_Type_vector(2, 1, 2, MPI_LONG, &strided));
    OK(MPI_Type_commit(&strided));
    MPI_Request bad = MPI_REQUEST_NULL;
    e = MPI_Recv_init(in, 1, strided, left, 3, MPI_COMM_WORLD, &bad);
    CHECK(e == MPI_ERR_TYPE && bad == MPI_REQUEST_NULL, "strided persistent receive: %d", e);
    e = MPI_Send_init(out, 1, MPI_LONG, np, 3, MPI_COMM_WORLD, &bad);
    CHECK(e == MPI_ERR_RANK, "send_init to rank %d: %d", np, e);
    e = MPI_Send_init(out, 1, MPI_LONG, right, -5, MPI_COMM_WORLD, &bad);
    CHECK(e == MPI_ERR_TAG, "send_init with a negative tag: %d", e);
    e = MPI_Startall(1, NULL);
    CHECK(e == MPI_ERR_ARG, "startall of null: %d", e);
    OK(MPI_Type_free(&strided));

    /* Freed requests: inactive ones go at once; an active receive still completes. */
    OK(MPI_Request_free(&r[0]));
    OK(MPI_Request_free(&r[1]));
    CHECK(r[0] == MPI_REQUEST_NULL && r[1] == MPI_REQUEST_NULL, "freed");
    e = MPI_Request_free(&r[0]);
    CHECK(e == MPI_ERR_REQUEST, "free of MPI_REQUEST_NULL: %d", e);
    long early = -1, late = -1;
    MPI_Request fr, lr;
    OK(MPI_Irecv(&early, 1, MPI_LONG, left, 9, MPI_COMM_WORLD, &fr));
    OK(MPI_Request_free(&fr));
    CHECK(fr == MPI_REQUEST_NULL, "freed active receive");
    OK(MPI_Irecv(&late, 1, MPI_LONG, left, 10, MPI_COMM_WORLD, &lr));
    long a = 500 + me, b = 600 + me;
    OK(MPI_Send(&a, 1, MPI_LONG, right, 9, MPI_COMM_WORLD));
    OK(MPI_Send(&b, 1, MPI_LONG, right, 10, MPI_COMM_WORLD));
    OK(MPI_Wait(&lr, MPI_STATUS_IGNORE));
    /* The tag-9 message came first from the same sender: the freed receive has it. */
    CHECK(late == 600 + left && early == 500 + left, "freed receive: %ld %ld", early, late);

    printf("rank %d: c persistent ok\n", me);
    OK(MPI_Finalize());
    return 0;
}
