dnl PARMACS macros for the DSM runtime (libdsm): SPLASH-2 and SPLASH-3 programs build
dnl unmodified and run as one process per node under dsmrun or mpiexec.
dnl
dnl   m4 -Ulen -Uindex $(pkg-config --variable=parmacs dsm) prog.c.in > prog.c
dnl   cc prog.c $(pkg-config --cflags --libs dsm) -lm
dnl   dsmrun -n 4 ./prog -p4
dnl
dnl What each macro does, and the model (serial phase on rank 0, program data copied at CREATE
dnl and merged back at WAIT_FOR_END, threads spread over the nodes), is in docs/C_API.md,
dnl "PARMACS programs". Part of the DSM runtime; written for it, not copied from any macro set.
divert(-1)

define(`DSM_PARMACS_INCLUDES', `
#include <dsm.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <sys/time.h>
#include <unistd.h>
#include <assert.h>
#if defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
#include <stdatomic.h>
#endif
#ifndef PAGE_SIZE
#define PAGE_SIZE 4096
#endif
#define __MAX_THREADS__ 1024
')

dnl Environment: MAIN_ENV in the file with main, EXTERN_ENV in the others. The constructor runs
dnl before main on every rank and gives every rank the same address-space layout.
define(MAIN_ENV, `DSM_PARMACS_INCLUDES
__attribute__((constructor)) static void dsm_parmacs_ctor_(void) { dsm_parmacs_boot(); }
')
define(EXTERN_ENV, `DSM_PARMACS_INCLUDES')
define(ENV, ` ')
define(INCLUDES, `DSM_PARMACS_INCLUDES')
define(MAIN_INITENV, `{ dsm_parmacs_init(); }')
define(MAIN_END, `{ dsm_parmacs_end(0); }')
define(NEWPROC, ` ')

dnl Processes: CREATE(f, P) starts P-1 threads and runs f as thread 0 (SPLASH-3); CREATE(f)
dnl starts one (SPLASH-2, called P-1 times before main calls f itself).
define(CREATE, `ifelse(`$2', `',
`{ dsm_parmacs_create((void (*)(void))($1), 0); }',
`{ dsm_parmacs_create((void (*)(void))($1), (long)($2)); $1(); }')')
define(WAIT_FOR_END, `{ dsm_parmacs_wait_for_end((long)($1)); }')
define(GET_PID, `{ ($1) = 0; }')

dnl Global memory. G_MALLOC ends with a semicolon, as in SPLASH-3's macros (its programs rely on it).
define(G_MALLOC, `dsm_parmacs_malloc($1);')
define(G_MALLOC_F, `dsm_parmacs_malloc($1)')
define(NU_MALLOC, `dsm_parmacs_malloc($1);')
define(NU_MALLOC_F, `dsm_parmacs_malloc($1)')
define(G_FREE, `dsm_parmacs_free($1)')
define(NU_FREE, `dsm_parmacs_free($1)')
define(GET_HOME, `{ ($1) = 0; }')
define(SET_HOME, `{;}')

dnl Locks (in global memory: a field of a G_MALLOC struct).
define(LOCKDEC, `dsm_lock_t $1;')
define(LOCKINIT, `{ dsm_parmacs_check(dsm_lock_init(&($1)), "lockinit"); }')
define(LOCK, `{ dsm_parmacs_check(dsm_lock(&($1)), "lock"); }')
define(UNLOCK, `{ dsm_parmacs_check(dsm_unlock(&($1)), "unlock"); }')
define(ALOCKDEC, `dsm_lock_t $1[$2];')
define(ALOCKINIT, `{ long dsm_i_; for (dsm_i_ = 0; dsm_i_ < (long)($2); dsm_i_++) dsm_parmacs_check(dsm_lock_init(&(($1)[dsm_i_])), "alockinit"); }')
define(ALOCK, `{ dsm_parmacs_check(dsm_lock(&(($1)[$2])), "alock"); }')
define(AULOCK, `{ dsm_parmacs_check(dsm_unlock(&(($1)[$2])), "aulock"); }')
define(AGETL, `(($1)[$2])')
define(NLOCKDEC, `long $1;')
define(NLOCKINIT, `{;}')
define(NLOCK, `{;}')
define(NUNLOCK, `{;}')

dnl Barriers.
define(BARDEC, `dsm_parmacs_barrier_t $1;')
define(BARINIT, `{ dsm_parmacs_check(dsm_parmacs_barrier_init(&($1), (long)($2)), "barinit"); }')
define(BARRIER, `{ dsm_parmacs_barrier(&($1), (long)($2)); }')
define(BAREXCLUDE, `{;}')
define(BARINCLUDE, `{;}')

dnl Pauses (events): a semaphore, as SPLASH-3's threaded macros make them.
define(PAUSEDEC, `dsm_sem_t $1;')
define(PAUSEINIT, `{ dsm_parmacs_check(dsm_sem_init(&($1), 0), "pauseinit"); }')
define(CLEARPAUSE, `{;}')
define(SETPAUSE, `{ dsm_parmacs_check(dsm_sem_post(&($1)), "setpause"); }')
define(WAITPAUSE, `{ dsm_parmacs_check(dsm_sem_wait(&($1)), "waitpause"); }')
define(PAUSE, `{;}')
define(EVENT, `{;}')

dnl Condition variables (with a LOCKDEC lock).
define(CONDVARDEC, `dsm_cond_t $1;')
define(CONDVARINIT, `{ dsm_parmacs_check(dsm_cond_init(&($1)), "condvarinit"); }')
define(CONDVARWAIT, `{ dsm_parmacs_check(dsm_cond_wait(&($1), &($2)), "condvarwait"); }')
define(CONDVARSIGNAL, `{ dsm_parmacs_check(dsm_cond_signal(&($1)), "condvarsignal"); }')
define(CONDVARBCAST, `{ dsm_parmacs_check(dsm_cond_broadcast(&($1)), "condvarbcast"); }')

dnl Fences.
define(RELEASE_FENCE, `{ dsm_parmacs_check(dsm_release(), "release fence"); }')
define(ACQUIRE_FENCE, `{ dsm_parmacs_check(dsm_acquire(), "acquire fence"); }')
define(FULL_FENCE, `{ dsm_parmacs_check(dsm_release(), "full fence"); dsm_parmacs_check(dsm_acquire(), "full fence"); }')

dnl Global sub-counters (in global memory).
define(GSDEC, `long $1;')
define(GSINIT, `{ ($1) = 0; }')
define(GETSUB, `{ ($2) = dsm_parmacs_getsub(&($1), (long)($3)); }')
define(NU_GSDEC, `long $1;')
define(NU_GSINIT, `{ ($1) = 0; }')
define(NU_GETSUB, `GETSUB($1,$2,$3,$4)')
define(ADEC, `long $1;')
define(AINIT, `{;}')
define(PROBEND, `{;}')

dnl Time in microseconds.
define(CLOCK, `{ struct timeval dsm_tv_; gettimeofday(&dsm_tv_, NULL); ($1) = (unsigned long)(dsm_tv_.tv_usec + dsm_tv_.tv_sec * 1000000); }')

dnl Tracing and simulator hooks of the original macro sets: nothing to do.
define(SPLASH3_ROI_BEGIN, ` ')
define(SPLASH3_ROI_END, ` ')
define(AUG_ON, ` ')
define(AUG_OFF, ` ')
define(TRACE_ON, ` ')
define(TRACE_OFF, ` ')
define(REF_TRACE_ON, ` ')
define(REF_TRACE_OFF, ` ')
define(DYN_TRACE_ON, `;')
define(DYN_TRACE_OFF, `;')
define(DYN_REF_TRACE_ON, `;')
define(DYN_REF_TRACE_OFF, `;')
define(DYN_SIM_ON, `;')
define(DYN_SIM_OFF, `;')
define(DYN_SCHED_ON, `;')
define(DYN_SCHED_OFF, `;')
define(AUG_SET_LOLIMIT, `;')
define(AUG_SET_HILIMIT, `;')
define(AUG_DELAY, `{;}')
define(ST_LOG, `{;}')
define(MENTER, `{;}')
define(DELAY, `{;}')
define(CONTINUE, `{;}')
define(MEXIT, `{;}')
define(MONINIT, `{;}')
divert(0)
