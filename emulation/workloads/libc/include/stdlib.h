/* codeisland guest libc (freestanding subset): stdlib.h */
#ifndef CI_LIBC_STDLIB_H
#define CI_LIBC_STDLIB_H
#include <stddef.h>

#define EXIT_SUCCESS 0
#define EXIT_FAILURE 1
#define RAND_MAX 0x7fffffff

/* One heap shared by every thread of the guest (a spinlock serialises it). */
void *malloc(size_t size);
void *calloc(size_t count, size_t size);
void *realloc(void *ptr, size_t size);
void free(void *ptr);

/* exit ends the calling guest thread with that code; abort with 134 (as SIGABRT's shell code). */
void exit(int code) __attribute__((noreturn));
void abort(void) __attribute__((noreturn));

void qsort(void *base, size_t count, size_t size, int (*compare)(const void *, const void *));
void *bsearch(const void *key, const void *base, size_t count, size_t size,
              int (*compare)(const void *, const void *));

int abs(int v);
long labs(long v);
long long llabs(long long v);
int atoi(const char *s);
long atol(const char *s);
long strtol(const char *s, char **end, int base);
unsigned long strtoul(const char *s, char **end, int base);
long long strtoll(const char *s, char **end, int base);
unsigned long long strtoull(const char *s, char **end, int base);

/* rand keeps one global state, as in C: threads that share it are nondeterministic
 * (the emulator's control run reports that); rand_r keeps it in the caller's variable. */
int rand(void);
void srand(unsigned seed);
int rand_r(unsigned *state);

#endif
