/*
 * Waits the agent's signals must not cut short.
 *
 * signal(7): after a signal handler ran, some system calls return EINTR whatever SA_RESTART
 * says -- nanosleep, clock_nanosleep, poll, ppoll, select, pselect, epoll_wait, epoll_pwait,
 * sigtimedwait, sigwaitinfo, sigsuspend, pause, msgrcv, msgsnd, semop, semtimedop.  An SMI
 * (the rendezvous signal) or a SIGPROF sample arriving in one of them would change what the
 * program sees.  So the agent interposes the libc functions: around the real call it blocks its
 * own three signals and marks the thread "waiting" (ci_agent_waiting), and the rendezvous counts
 * a waiting thread as stopped without waiting for it -- it runs no program code until it comes
 * back through here, and the moment it unblocks, the pending rendezvous signal stops it in its
 * handler like every other thread (see smi.c wait_arrivals).  The kernel keeps the timeouts:
 * nothing is restarted or recomputed.  The program's own signals still interrupt these waits.
 *
 * Not covered: the same calls made through syscall(2) or inline assembly, and libc's internal
 * uses of them (e.g. inside system(3)); sockets with SO_RCVTIMEO/SO_SNDTIMEO, which also
 * return EINTR -- wrapping every read/recv would cost two system calls on each.  Those still
 * see EINTR as they would for any signal.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/select.h>
#include <sys/sem.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"

#define EXPORT __attribute__((visibility("default")))

static int waiting[CI_AGENT_MAX_THREADS]; /* tids of the threads inside a wait */

int ci_agent_waiting(int tid) {
  for (uint32_t k = 0; k < CI_AGENT_MAX_THREADS; k++)
    if (__atomic_load_n(&waiting[k], __ATOMIC_ACQUIRE) == tid)
      return 1;
  return 0;
}

/* The signal set the agent adds to the mask while a thread waits. */
static void add_ours(sigset_t *set) {
  sigaddset(set, ci_agent_state.sig_smi);
  sigaddset(set, ci_agent_state.sig_rendezvous);
  sigaddset(set, SIGPROF);
}

typedef struct {
  int slot; /* -1: no slot free (more than CI_AGENT_MAX_THREADS waiting): not marked */
  sigset_t old;
} wait_guard;

static wait_guard enter(void) {
  wait_guard g = {-1, {{0}}};
  int tid = (int)syscall(SYS_gettid);
  for (uint32_t k = 0; k < CI_AGENT_MAX_THREADS && g.slot < 0; k++) {
    int free = 0;
    if (__atomic_compare_exchange_n(&waiting[k], &free, tid, 0, __ATOMIC_ACQ_REL,
                                    __ATOMIC_RELAXED))
      g.slot = (int)k;
  }
  sigset_t ours;
  sigemptyset(&ours);
  add_ours(&ours);
  pthread_sigmask(SIG_BLOCK, &ours, &g.old);
  return g;
}

/* Unblocking delivers a pending rendezvous signal here, before the thread leaves the agent. */
static void leave(wait_guard *g) {
  int saved = errno;
  pthread_sigmask(SIG_SETMASK, &g->old, 0);
  if (g->slot >= 0)
    __atomic_store_n(&waiting[g->slot], 0, __ATOMIC_RELEASE);
  errno = saved;
}

/* A caller's mask for the wait, with the agent's signals kept blocked. */
static const sigset_t *with_ours(const sigset_t *mask, sigset_t *buf) {
  if (!mask)
    return 0;
  *buf = *mask;
  add_ours(buf);
  return buf;
}

/* libc's function, looked up once (a benign race: every thread stores the same pointer) */
#define REAL(name) ((__typeof__(&name))real_fn(#name, &real_##name))
static void *real_fn(const char *name, void **cache) {
  void *fn = __atomic_load_n(cache, __ATOMIC_ACQUIRE);
  if (!fn) {
    fn = dlsym(RTLD_NEXT, name);
    __atomic_store_n(cache, fn, __ATOMIC_RELEASE);
  }
  return fn;
}
#define CACHE(name) static void *real_##name
CACHE(nanosleep);
CACHE(clock_nanosleep);
CACHE(sleep);
CACHE(usleep);
CACHE(pause);
CACHE(poll);
CACHE(__poll_chk);
CACHE(ppoll);
CACHE(__ppoll_chk);
CACHE(select);
CACHE(pselect);
CACHE(epoll_wait);
CACHE(epoll_pwait);
CACHE(sigsuspend);
CACHE(sigtimedwait);
CACHE(sigwaitinfo);
CACHE(msgrcv);
CACHE(msgsnd);
CACHE(semop);
CACHE(semtimedop);

/* fortified programs (_FORTIFY_SOURCE) call these instead of poll/ppoll */
int __poll_chk(struct pollfd *fds, nfds_t n, int timeout, size_t fdslen);
int __ppoll_chk(struct pollfd *fds, nfds_t n, const struct timespec *t, const sigset_t *mask,
                size_t fdslen);

/* Each wrapper: the libc function, called with the agent's signals blocked. */
#define GUARDED(type, call)                                                                    \
  do {                                                                                         \
    wait_guard g = enter();                                                                    \
    type rc = call;                                                                            \
    leave(&g);                                                                                 \
    return rc;                                                                                 \
  } while (0)

EXPORT int nanosleep(const struct timespec *req, struct timespec *rem) {
  GUARDED(int, REAL(nanosleep)(req, rem));
}
EXPORT int clock_nanosleep(clockid_t clock, int flags, const struct timespec *req,
                           struct timespec *rem) {
  GUARDED(int, REAL(clock_nanosleep)(clock, flags, req, rem));
}
EXPORT unsigned int sleep(unsigned int seconds) { GUARDED(unsigned int, REAL(sleep)(seconds)); }
EXPORT int usleep(useconds_t usec) { GUARDED(int, REAL(usleep)(usec)); }
EXPORT int pause(void) { GUARDED(int, REAL(pause)()); }
EXPORT int poll(struct pollfd *fds, nfds_t n, int timeout) {
  GUARDED(int, REAL(poll)(fds, n, timeout));
}
EXPORT int __poll_chk(struct pollfd *fds, nfds_t n, int timeout, size_t fdslen) {
  GUARDED(int, REAL(__poll_chk)(fds, n, timeout, fdslen));
}
EXPORT int ppoll(struct pollfd *fds, nfds_t n, const struct timespec *t, const sigset_t *mask) {
  sigset_t buf;
  GUARDED(int, REAL(ppoll)(fds, n, t, with_ours(mask, &buf)));
}
EXPORT int __ppoll_chk(struct pollfd *fds, nfds_t n, const struct timespec *t,
                       const sigset_t *mask, size_t fdslen) {
  sigset_t buf;
  GUARDED(int, REAL(__ppoll_chk)(fds, n, t, with_ours(mask, &buf), fdslen));
}
EXPORT int select(int n, fd_set *r, fd_set *w, fd_set *e, struct timeval *t) {
  GUARDED(int, REAL(select)(n, r, w, e, t));
}
EXPORT int pselect(int n, fd_set *r, fd_set *w, fd_set *e, const struct timespec *t,
                   const sigset_t *mask) {
  sigset_t buf;
  GUARDED(int, REAL(pselect)(n, r, w, e, t, with_ours(mask, &buf)));
}
EXPORT int epoll_wait(int ep, struct epoll_event *ev, int max, int timeout) {
  GUARDED(int, REAL(epoll_wait)(ep, ev, max, timeout));
}
EXPORT int epoll_pwait(int ep, struct epoll_event *ev, int max, int timeout,
                       const sigset_t *mask) {
  sigset_t buf;
  GUARDED(int, REAL(epoll_pwait)(ep, ev, max, timeout, with_ours(mask, &buf)));
}
EXPORT int sigsuspend(const sigset_t *mask) {
  sigset_t buf;
  GUARDED(int, REAL(sigsuspend)(with_ours(mask, &buf)));
}
EXPORT int sigtimedwait(const sigset_t *set, siginfo_t *info, const struct timespec *t) {
  GUARDED(int, REAL(sigtimedwait)(set, info, t));
}
EXPORT int sigwaitinfo(const sigset_t *set, siginfo_t *info) {
  GUARDED(int, REAL(sigwaitinfo)(set, info));
}
EXPORT ssize_t msgrcv(int id, void *msg, size_t size, long type, int flags) {
  GUARDED(ssize_t, REAL(msgrcv)(id, msg, size, type, flags));
}
EXPORT int msgsnd(int id, const void *msg, size_t size, int flags) {
  GUARDED(int, REAL(msgsnd)(id, msg, size, flags));
}
EXPORT int semop(int id, struct sembuf *ops, size_t n) { GUARDED(int, REAL(semop)(id, ops, n)); }
EXPORT int semtimedop(int id, struct sembuf *ops, size_t n, const struct timespec *t) {
  GUARDED(int, REAL(semtimedop)(id, ops, n, t));
}
