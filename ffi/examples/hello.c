/* hello: every node says who it is, then all agree on one global pointer.
 *
 *   cc hello.c $(pkg-config --cflags --libs dsm) -o hello && dsmrun -n 4 ./hello
 */
#include <stdio.h>
#include <stdlib.h>

#include <dsm.h>

int main(int argc, char **argv) {
    int status = dsm_init(&argc, &argv);
    if (status != DSM_OK) {
        fprintf(stderr, "dsm_init: %s: %s\n", dsm_strerror(status), dsm_last_error_message());
        return 1;
    }
    int me = dsm_rank(), n = dsm_nodes();

    /* One slot per node in global memory; each node fills its own. */
    int *names = dsm_alloc_collective(sizeof(int) * (size_t)n);
    if (names == NULL) {
        fprintf(stderr, "dsm_alloc_collective: %s\n", dsm_last_error_message());
        return 1;
    }
    names[me] = me * me;
    dsm_barrier(); /* release, wait for everyone, acquire */

    int sum = 0;
    for (int r = 0; r < n; r++) sum += names[r];
    printf("rank %d: hello, one of %d nodes: the squares of the ranks add up to %d\n", me, n, sum);
    int want = (n - 1) * n * (2 * n - 1) / 6;
    dsm_barrier();
    dsm_free_collective(names);
    dsm_finalize();
    return sum == want ? 0 : 1;
}
