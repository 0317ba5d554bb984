/* MPI_THREAD_MULTIPLE: several threads of every rank in point-to-point calls, waits and
 * collectives at once. Each part would hang if a thread blocked in MPI held back the others. */
#include "common.h"
#include <pthread.h>
#include <stdint.h>
#include <unistd.h>

#define THREADS 3
#define ROUNDS 200
#define BIG (1 << 20)

/* A ring per thread, on its own tag: send to the next rank, receive from the previous one
 * (one message of every round small, every 50th 1 MiB), through MPI_Recv or MPI_Irecv and
 * MPI_Wait by turns. */
static void *ring(void *arg)
{
    int t = (int)(intptr_t)arg;
    int next = (me + 1) % np, prev = (me + np - 1) % np;
    char *out = malloc(BIG), *in = malloc(BIG);
    CHECK(out && in, "malloc");
    for (int r = 0; r < ROUNDS; r++) {
        int len = r % 50 == 0 ? BIG : 16;
        memset(out, (me * 31 + t * 7 + r) & 0xff, len);
        OK(MPI_Send(out, len, MPI_CHAR, next, 100 + t, MPI_COMM_WORLD));
        MPI_Status st;
        if (r % 2 == 0) {
            OK(MPI_Recv(in, BIG, MPI_CHAR, prev, 100 + t, MPI_COMM_WORLD, &st));
        } else {
            MPI_Request q;
            OK(MPI_Irecv(in, BIG, MPI_CHAR, prev, 100 + t, MPI_COMM_WORLD, &q));
            OK(MPI_Wait(&q, &st));
        }
        int n;
        OK(MPI_Get_count(&st, MPI_CHAR, &n));
        CHECK(n == len, "thread %d round %d: %d bytes", t, r, n);
        char want = (char)((prev * 31 + t * 7 + r) & 0xff);
        for (int i = 0; i < len; i++)
            CHECK(in[i] == want, "thread %d round %d: byte %d", t, r, i);
    }
    free(out);
    free(in);
    return NULL;
}

/* Two threads of rank 1 receive from the same source and tag (as osu_latency_mt's receivers
 * do): between them they get every message once. */
static long shared_sum[2];
static void *shared_receiver(void *arg)
{
    int t = (int)(intptr_t)arg;
    for (int r = 0; r < ROUNDS; r++) {
        long v;
        OK(MPI_Recv(&v, 1, MPI_LONG, 0, 7, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
        shared_sum[t] += v;
    }
    return NULL;
}

/* Rank 0's second thread sends what rank 1's first thread waits for before the barrier that
 * rank 0's first thread is already blocked in. */
static void *late_sender(void *arg)
{
    (void)arg;
    usleep(20000);
    long v = 42;
    OK(MPI_Send(&v, 1, MPI_LONG, 1, 99, MPI_COMM_WORLD));
    return NULL;
}

int main(int argc, char **argv)
{
    int provided = -1;
    OK(MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided));
    CHECK(provided == MPI_THREAD_MULTIPLE, "provided %d", provided);
    OK(MPI_Comm_rank(MPI_COMM_WORLD, &me));
    OK(MPI_Comm_size(MPI_COMM_WORLD, &np));

    pthread_t th[THREADS];
    for (int t = 0; t < THREADS; t++)
        CHECK(pthread_create(&th[t], NULL, ring, (void *)(intptr_t)t) == 0, "thread");
    for (int t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    OK(MPI_Barrier(MPI_COMM_WORLD));

    if (np >= 2) {
        if (me == 0) {
            for (long v = 1; v <= 2 * ROUNDS; v++)
                OK(MPI_Send(&v, 1, MPI_LONG, 1, 7, MPI_COMM_WORLD));
        } else if (me == 1) {
            for (int t = 0; t < 2; t++)
                CHECK(pthread_create(&th[t], NULL, shared_receiver, (void *)(intptr_t)t) == 0,
                      "thread");
            for (int t = 0; t < 2; t++)
                pthread_join(th[t], NULL);
            long n = 2 * ROUNDS;
            CHECK(shared_sum[0] + shared_sum[1] == n * (n + 1) / 2, "sum %ld + %ld",
                  shared_sum[0], shared_sum[1]);
        }

        /* A barrier blocked in one thread while another thread's send is still to come. */
        if (me == 0)
            CHECK(pthread_create(&th[0], NULL, late_sender, NULL) == 0, "thread");
        if (me == 1) {
            long v = 0;
            OK(MPI_Recv(&v, 1, MPI_LONG, 0, 99, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
            CHECK(v == 42, "got %ld", v);
        }
        OK(MPI_Barrier(MPI_COMM_WORLD));
        if (me == 0)
            pthread_join(th[0], NULL);
    }
    printf("rank %d: c threads ok\n", me);
    OK(MPI_Finalize());
    return 0;
}
