/* stencil: a 2-D Jacobi heat stencil on a grid in global memory, rows blocked over the nodes
 * (each node is home of the rows it computes), checked against the same computation done
 * serially in local memory.
 *
 *   cc stencil.c $(pkg-config --cflags --libs dsm) -o stencil && dsmrun -n 4 ./stencil [n] [steps]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dsm.h>

static double initial(int n, int i, int j) {
    /* A hot left edge and a warm spot: boundaries stay fixed. */
    if (j == 0) return 100.0;
    if (i == n / 3 && j == n / 2) return 50.0;
    return 0.0;
}

static void step(int n, const double *from, double *to, int lo, int hi) {
    for (int i = lo; i < hi; i++)
        for (int j = 0; j < n; j++) {
            if (i == 0 || j == 0 || i == n - 1 || j == n - 1) {
                to[i * n + j] = from[i * n + j];
            } else {
                to[i * n + j] = 0.25 * (from[(i - 1) * n + j] + from[(i + 1) * n + j] +
                                        from[i * n + j - 1] + from[i * n + j + 1]);
            }
        }
}

int main(int argc, char **argv) {
    if (dsm_init(&argc, &argv) != DSM_OK) {
        fprintf(stderr, "dsm_init: %s\n", dsm_last_error_message());
        return 1;
    }
    int me = dsm_rank(), nodes = dsm_nodes();
    int n = argc > 1 ? atoi(argv[1]) : 256;
    int steps = argc > 2 ? atoi(argv[2]) : 20;
    size_t bytes = sizeof(double) * (size_t)n * (size_t)n;

    double *grid[2];
    for (int g = 0; g < 2; g++) {
        grid[g] = dsm_alloc_collective_placed(bytes, DSM_PLACEMENT_BLOCKED, 0);
        if (grid[g] == NULL) {
            fprintf(stderr, "allocate the grid: %s\n", dsm_last_error_message());
            return 1;
        }
    }
    int lo = (int)((long)n * me / nodes), hi = (int)((long)n * (me + 1) / nodes);
    for (int i = lo; i < hi; i++)
        for (int j = 0; j < n; j++) grid[0][i * n + j] = initial(n, i, j);
    dsm_barrier();

    double t0 = dsm_wtime();
    for (int s = 0; s < steps; s++) {
        step(n, grid[s % 2], grid[(s + 1) % 2], lo, hi);
        dsm_barrier();
    }
    double t = dsm_wtime() - t0;

    /* Every node checks its rows against a serial run in local memory. */
    double *a = malloc(bytes), *b = malloc(bytes);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) a[i * n + j] = initial(n, i, j);
    for (int s = 0; s < steps; s++) {
        step(n, a, b, 0, n);
        double *tmp = a;
        a = b;
        b = tmp;
    }
    const double *result = grid[steps % 2];
    double worst = 0.0;
    for (int i = lo; i < hi; i++)
        for (int j = 0; j < n; j++) worst = fmax(worst, fabs(result[i * n + j] - a[i * n + j]));
    int ok = worst == 0.0;
    printf("rank %d: %dx%d grid, %d steps in %.3f s, max difference from serial %g: %s\n", me, n,
           n, steps, t, worst, ok ? "ok" : "WRONG");
    free(a);
    free(b);
    dsm_barrier();
    for (int g = 0; g < 2; g++) dsm_free_collective(grid[g]);
    dsm_finalize();
    return ok ? 0 : 1;
}
