/*
 * The MPI counterparts of the osu_* programs of benches/src/osu.rs: the same loops, sizes,
 * iteration counts and output, written against the standard mpi.h. scripts/mpi-compare.sh
 * builds this one source twice, against libdsmmpi and against MPICH, and runs both side by
 * side (with the Rust programs) in the same run.
 *
 *   mpicc -O2 -o osu_mpi osu_mpi.c            mpiexec -n 2 ./osu_mpi osu_latency
 *   dsmmpicc -O2 -o osu_mpi osu_mpi.c         dsmrun -n 2 ./osu_mpi osu_latency
 *   options: [-m MAX] [-i ITERS] [-x SKIP] [--quick]
 *
 * Each loop follows the OSU micro-benchmarks (v7) defaults: window 64 for bandwidth,
 * MPI_Win_allocate with a shared lock held by rank 0 and MPI_Win_flush after every operation
 * (latency) or every 64 operations (bandwidth), a barrier between iterations of collectives.
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WINDOW 64
#define LARGE 8192

static int me, nranks;
static size_t max_size = 1 << 20;
static int iters_small = 2000, skip_small = 200;

enum kind { LAT, BW, BIBW, PUT_LAT, GET_LAT, PUT_BW, GET_BW, ACC_LAT, FOP_LAT, CAS_LAT, BARRIER, ALLREDUCE, BCAST };
static const char *names[] = { "osu_latency", "osu_bw", "osu_bibw", "osu_put_latency", "osu_get_latency",
    "osu_put_bw", "osu_get_bw", "osu_acc_latency", "osu_fop_latency", "osu_cas_latency", "osu_barrier",
    "osu_allreduce", "osu_bcast" };

static int bandwidth(enum kind k) { return k == BW || k == BIBW || k == PUT_BW || k == GET_BW; }
static int one_sided(enum kind k) { return k >= PUT_LAT && k <= CAS_LAT; }
static int collective(enum kind k) { return k >= BARRIER; }

static double two_sided(enum kind k, char *sbuf, char *rbufs, size_t size, int iters, int skip)
{
    int peer = 1 - me;
    double start = MPI_Wtime();
    MPI_Request reqs[2 * WINDOW];
    char ack[4];
    for (int i = 0; i < iters + skip; i++) {
        if (i == skip) start = MPI_Wtime();
        if (k == LAT) {
            if (me == 0) {
                MPI_Send(sbuf, (int)size, MPI_CHAR, peer, 1, MPI_COMM_WORLD);
                MPI_Recv(rbufs, (int)size, MPI_CHAR, peer, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            } else {
                MPI_Recv(rbufs, (int)size, MPI_CHAR, peer, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
                MPI_Send(sbuf, (int)size, MPI_CHAR, peer, 1, MPI_COMM_WORLD);
            }
            continue;
        }
        int n = 0;
        int sending = me == 0 || k == BIBW, receiving = me == 1 || k == BIBW;
        if (receiving)
            for (int w = 0; w < WINDOW; w++)
                MPI_Irecv(rbufs + (size_t)w * size, (int)size, MPI_CHAR, peer, 100, MPI_COMM_WORLD, &reqs[n++]);
        if (sending)
            for (int w = 0; w < WINDOW; w++)
                MPI_Isend(sbuf, (int)size, MPI_CHAR, peer, 100, MPI_COMM_WORLD, &reqs[n++]);
        MPI_Waitall(n, reqs, MPI_STATUSES_IGNORE);
        if (k == BW) {
            if (me == 0) MPI_Recv(ack, 4, MPI_CHAR, peer, 101, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            else MPI_Send(ack, 4, MPI_CHAR, peer, 101, MPI_COMM_WORLD);
        }
    }
    double t = MPI_Wtime() - start;
    if (k == LAT) return t * 1e6 / (2.0 * iters);
    return (k == BIBW ? 2.0 : 1.0) * (double)size * WINDOW * iters / 1e6 / t;
}

static double rma(enum kind k, MPI_Win win, char *sbuf, char *rbuf, size_t size, int iters, int skip)
{
    double value = 0;
    if (me == 0) {
        long long one = 1, old, cmp = 0;
        MPI_Win_lock(MPI_LOCK_SHARED, 1, 0, win);
        double start = MPI_Wtime();
        for (int i = 0; i < iters + skip; i++) {
            if (i == skip) start = MPI_Wtime();
            long long mine = i;
            switch (k) {
            case PUT_LAT: MPI_Put(sbuf, (int)size, MPI_CHAR, 1, 0, (int)size, MPI_CHAR, win); break;
            case GET_LAT: MPI_Get(rbuf, (int)size, MPI_CHAR, 1, 0, (int)size, MPI_CHAR, win); break;
            case ACC_LAT: MPI_Accumulate(sbuf, (int)size, MPI_CHAR, 1, 0, (int)size, MPI_CHAR, MPI_SUM, win); break;
            case FOP_LAT: MPI_Fetch_and_op(&one, &old, MPI_LONG_LONG, 1, 0, MPI_SUM, win); break;
            case CAS_LAT: MPI_Compare_and_swap(&mine, &cmp, &old, MPI_LONG_LONG, 1, 0, win); break;
            case PUT_BW:
                for (int w = 0; w < WINDOW; w++)
                    MPI_Put(sbuf, (int)size, MPI_CHAR, 1, (MPI_Aint)(w * size), (int)size, MPI_CHAR, win);
                break;
            case GET_BW:
                for (int w = 0; w < WINDOW; w++)
                    MPI_Get(rbuf, (int)size, MPI_CHAR, 1, (MPI_Aint)(w * size), (int)size, MPI_CHAR, win);
                break;
            default: break;
            }
            MPI_Win_flush(1, win);
        }
        double t = MPI_Wtime() - start;
        MPI_Win_unlock(1, win);
        value = bandwidth(k) ? (double)size * WINDOW * iters / 1e6 / t : t * 1e6 / iters;
    }
    MPI_Barrier(MPI_COMM_WORLD);
    return value;
}

static double coll(enum kind k, size_t size, int iters, int skip)
{
    int floats = size / 4 ? (int)(size / 4) : 1;
    float *s = malloc(sizeof(float) * floats), *r = malloc(sizeof(float) * floats);
    char *buf = malloc(size ? size : 1);
    for (int i = 0; i < floats; i++) s[i] = 1.0f;
    double total = 0;
    for (int i = 0; i < iters + skip; i++) {
        double start = MPI_Wtime();
        if (k == BARRIER) MPI_Barrier(MPI_COMM_WORLD);
        else if (k == ALLREDUCE) MPI_Allreduce(s, r, floats, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        else MPI_Bcast(buf, (int)size, MPI_CHAR, 0, MPI_COMM_WORLD);
        if (i >= skip) total += MPI_Wtime() - start;
        if (k != BARRIER) MPI_Barrier(MPI_COMM_WORLD);
    }
    double mine = total * 1e6 / iters, sum = 0;
    MPI_Allreduce(&mine, &sum, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    free(s); free(r); free(buf);
    return sum / nranks;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &me);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks);
    int k = -1;
    for (int i = 0; argc > 1 && i < (int)(sizeof names / sizeof *names); i++)
        if (!strcmp(argv[1], names[i])) k = i;
    if (k < 0) {
        if (me == 0) fprintf(stderr, "usage: osu_mpi <osu_latency|osu_bw|...> [-m MAX] [-i N] [-x N] [--quick]\n");
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "-m") && i + 1 < argc) max_size = strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "-i") && i + 1 < argc) iters_small = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-x") && i + 1 < argc) skip_small = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--quick")) { max_size = 4096; iters_small = 20; skip_small = 2; }
    }
    if (!collective(k) && nranks != 2) {
        if (me == 0) fprintf(stderr, "%s: this test requires exactly two processes\n", names[k]);
        MPI_Finalize();
        return 1;
    }
    if (me == 0) {
        printf("# %s (MPI counterpart)\n", names[k]);
        if (k == BARRIER) printf("# Avg Latency(us)\n");
        else if (collective(k)) printf("# Size       Avg Latency(us)\n");
        else if (bandwidth(k)) printf("# Size      Bandwidth (MB/s)\n");
        else printf("# Size          Latency (us)\n");
    }
    size_t copies = bandwidth(k) ? WINDOW : 1;
    char *sbuf = malloc(max_size + 8), *rbufs = malloc((max_size + 8) * copies);
    memset(sbuf, 'a', max_size + 8);
    MPI_Win win = MPI_WIN_NULL;
    char *base;
    if (one_sided(k)) {
        MPI_Win_allocate((MPI_Aint)((max_size < 8 ? 8 : max_size) * copies), 1, MPI_INFO_NULL, MPI_COMM_WORLD, &base, &win);
        memset(base, 0, (max_size < 8 ? 8 : max_size) * copies);
    }
    size_t first = k == ALLREDUCE ? 4 : 1;
    for (size_t size = first; size <= max_size; size *= 2) {
        if (k == FOP_LAT || k == CAS_LAT) size = 8;
        if (k == BARRIER) size = 0;
        int iters = size > LARGE ? (iters_small / 10 ? iters_small / 10 : 1) : iters_small;
        int skip = size > LARGE ? (skip_small / 10 ? skip_small / 10 : 1) : skip_small;
        MPI_Barrier(MPI_COMM_WORLD);
        double v;
        if (one_sided(k)) v = rma(k, win, sbuf, rbufs, size, iters, skip);
        else if (collective(k)) v = coll(k, size, iters, skip);
        else v = two_sided(k, sbuf, rbufs, size, iters, skip);
        if (me == 0) {
            if (k == BARRIER) printf("%18.2f\n", v);
            else printf("%-10zu%18.2f\n", size, v);
            printf("RESULT {\"bench\":\"%s\",\"impl\":\"mpi\",\"ranks\":%d,\"size\":%zu,\"value\":%.3f,\"unit\":\"%s\"}\n",
                   names[k], nranks, size, v, bandwidth(k) ? "MB/s" : "us");
            fflush(stdout);
        }
        if (k == FOP_LAT || k == CAS_LAT || k == BARRIER) break;
    }
    if (win != MPI_WIN_NULL) MPI_Win_free(&win);
    free(sbuf); free(rbufs);
    MPI_Finalize();
    return 0;
}
