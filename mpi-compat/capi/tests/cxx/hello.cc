// A C++ program built with dsmmpicxx: mpi.h declares its functions with C linkage.
#include <mpi.h>
#include <cstdio>
#include <vector>

int main(int argc, char **argv)
{
    if (MPI_Init(&argc, &argv) != MPI_SUCCESS) return 1;
    int me = -1, np = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &me);
    MPI_Comm_size(MPI_COMM_WORLD, &np);
    std::vector<int> all(np);
    MPI_Allgather(&me, 1, MPI_INT, all.data(), 1, MPI_INT, MPI_COMM_WORLD);
    for (int i = 0; i < np; i++)
        if (all[i] != i) return 2;
    std::printf("rank %d: c++ ok\n", me);
    return MPI_Finalize();
}
