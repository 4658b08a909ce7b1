/*
 * A program whose threads sit in the system calls a signal handler makes return EINTR whatever
 * SA_RESTART says (signal(7): "never restarted"), each with a timeout, while the native host's
 * SMIs and samples arrive.  Each prints what its call returned and whether it waited its time:
 * the output under the agent must equal the output without it.  One thread also checks that the
 * program's own signal still interrupts its wait (the agent must not swallow it).
 *
 *   waits MS      every wait is MS milliseconds
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <time.h>
#include <unistd.h>

static long ms;

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static struct timespec span(void) { return (struct timespec){ms / 1000, (ms % 1000) * 1000000}; }

static int do_nanosleep(void) {
  struct timespec t = span(), rem;
  return nanosleep(&t, &rem);
}
static int do_clock_nanosleep(void) {
  struct timespec t = span();
  return clock_nanosleep(CLOCK_MONOTONIC, 0, &t, 0);
}
static int do_usleep(void) { return usleep((useconds_t)ms * 1000); }
static int do_poll(void) { return poll(0, 0, (int)ms); }
static int do_ppoll(void) {
  struct timespec t = span();
  sigset_t none;
  sigemptyset(&none);
  return ppoll(0, 0, &t, &none); /* a mask that unblocks everything during the wait */
}
static int do_select(void) {
  struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
  return select(0, 0, 0, 0, &tv);
}
static int do_epoll_wait(void) {
  int ep = epoll_create1(0);
  struct epoll_event ev;
  int rc = epoll_wait(ep, &ev, 1, (int)ms);
  close(ep);
  return rc;
}
static int do_sigtimedwait(void) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGUSR2); /* blocked in every thread: only this wait takes it */
  struct timespec t = span();
  return sigtimedwait(&set, 0, &t);
}

static const struct {
  const char *name;
  int (*wait)(void);
} waits[] = {
    {"nanosleep", do_nanosleep}, {"clock_nanosleep", do_clock_nanosleep},
    {"usleep", do_usleep},       {"poll", do_poll},
    {"ppoll", do_ppoll},         {"select", do_select},
    {"epoll_wait", do_epoll_wait}, {"sigtimedwait", do_sigtimedwait},
};
#define WAITS (sizeof waits / sizeof waits[0])

static char lines[WAITS + 1][128];

static void *waiter(void *arg) {
  size_t k = (size_t)arg;
  for (int round = 0; round < 3; round++) {
    double t0 = now_ms();
    errno = 0;
    int rc = waits[k].wait();
    int err = rc < 0 ? errno : 0;
    double took = now_ms() - t0;
    int timeout = waits[k].wait == do_sigtimedwait ? EAGAIN : 0; /* how it says "time is up" */
    /* returned early (EINTR) or late by far more than a loaded machine's scheduling delay */
    if (rc == EINTR || err != timeout || took < ms - 1 || took > ms + 5000) {
      snprintf(lines[k], sizeof lines[k], "%s: rc %d errno %s after %.0f ms of %ld", waits[k].name,
               rc, err ? strerror(err) : "0", took, ms);
      return 0;
    }
  }
  snprintf(lines[k], sizeof lines[k], "%s: waited its time, 3 times", waits[k].name);
  return 0;
}

static void on_usr1(int sig) { (void)sig; }
static int interrupted_done;

/* The program's own signal must still end its wait with EINTR. */
static void *interrupted(void *arg) {
  (void)arg;
  int rc = select(0, 0, 0, 0, 0); /* forever, until SIGUSR1 */
  snprintf(lines[WAITS], sizeof lines[WAITS], "select until SIGUSR1: rc %d %s", rc,
           rc < 0 ? strerror(errno) : "");
  __atomic_store_n(&interrupted_done, 1, __ATOMIC_RELEASE);
  return 0;
}

int main(int argc, char **argv) {
  if (argc != 2 || (ms = atol(argv[1])) <= 0) {
    fprintf(stderr, "usage: %s MS\n", argv[0]);
    return 2;
  }
  sigset_t usr2;
  sigemptyset(&usr2);
  sigaddset(&usr2, SIGUSR2);
  pthread_sigmask(SIG_BLOCK, &usr2, 0);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_usr1; /* no SA_RESTART: select would return EINTR anyway */
  sigaction(SIGUSR1, &sa, 0);
  pthread_t tid[WAITS], sig_tid;
  for (size_t k = 0; k < WAITS; k++)
    if (pthread_create(&tid[k], 0, waiter, (void *)k) != 0) return 1;
  if (pthread_create(&sig_tid, 0, interrupted, 0) != 0) return 1;
  struct timespec t = {(ms * 3) / 1000, ((ms * 3) % 1000) * 1000000};
  nanosleep(&t, 0);
  while (!__atomic_load_n(&interrupted_done, __ATOMIC_ACQUIRE)) { /* until it was in select */
    pthread_kill(sig_tid, SIGUSR1);
    usleep(20000);
  }
  for (size_t k = 0; k < WAITS; k++) pthread_join(tid[k], 0);
  pthread_join(sig_tid, 0);
  for (size_t k = 0; k <= WAITS; k++) puts(lines[k]);
  return 0;
}
