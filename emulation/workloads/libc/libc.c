/*
 * The guest libc: the subset of C's library that ported programs need first, freestanding
 * (no system calls: output is the workload ABI's port 0xE9, the end is ci_fail).  Built with
 * the workloads' flags and linked into each (see ../README.md and ../PORTING.md).
 *
 * Nothing here keeps per-thread state, and the only shared state is what C itself shares:
 * the heap (one free list under a spinlock) and rand()'s seed.
 */
#include <assert.h>
#include <ctype.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ci_runtime.h"

/* ---- lock ------------------------------------------------------------------------------ */

void ci_lock(ci_lock_t *lock) {
  while (__atomic_exchange_n(&lock->held, 1, __ATOMIC_ACQUIRE))
    __asm__ volatile("pause");
}

void ci_unlock(ci_lock_t *lock) { __atomic_store_n(&lock->held, 0, __ATOMIC_RELEASE); }

/* ---- memory and strings ----------------------------------------------------------------- */

/* clang may call memcpy and memset by itself. */
void *memcpy(void *dst, const void *src, size_t n) {
  unsigned char *d = dst;
  const unsigned char *s = src;
  while (n--)
    *d++ = *s++;
  return dst;
}

void *memmove(void *dst, const void *src, size_t n) {
  unsigned char *d = dst;
  const unsigned char *s = src;
  if (d == s || !n)
    return dst;
  if (d < s) {
    while (n--)
      *d++ = *s++;
  } else {
    while (n--)
      d[n] = s[n];
  }
  return dst;
}

void *memset(void *dst, int c, size_t n) {
  unsigned char *d = dst;
  while (n--)
    *d++ = (unsigned char)c;
  return dst;
}

int memcmp(const void *a, const void *b, size_t n) {
  const unsigned char *x = a, *y = b;
  for (; n; n--, x++, y++)
    if (*x != *y)
      return *x - *y;
  return 0;
}

void *memchr(const void *s, int c, size_t n) {
  const unsigned char *p = s;
  for (; n; n--, p++)
    if (*p == (unsigned char)c)
      return (void *)p;
  return NULL;
}

size_t strlen(const char *s) {
  size_t n = 0;
  while (s[n])
    n++;
  return n;
}

size_t strnlen(const char *s, size_t max) {
  size_t n = 0;
  while (n < max && s[n])
    n++;
  return n;
}

int strcmp(const char *a, const char *b) {
  while (*a && *a == *b)
    a++, b++;
  return (unsigned char)*a - (unsigned char)*b;
}

int strncmp(const char *a, const char *b, size_t n) {
  for (; n; n--, a++, b++) {
    if (*a != *b)
      return (unsigned char)*a - (unsigned char)*b;
    if (!*a)
      return 0;
  }
  return 0;
}

char *strcpy(char *dst, const char *src) {
  char *d = dst;
  while ((*d++ = *src++))
    ;
  return dst;
}

char *strncpy(char *dst, const char *src, size_t n) {
  size_t i = 0;
  for (; i < n && src[i]; i++)
    dst[i] = src[i];
  for (; i < n; i++)
    dst[i] = 0;
  return dst;
}

char *strcat(char *dst, const char *src) {
  strcpy(dst + strlen(dst), src);
  return dst;
}

char *strchr(const char *s, int c) {
  for (;; s++) {
    if (*s == (char)c)
      return (char *)s;
    if (!*s)
      return NULL;
  }
}

char *strrchr(const char *s, int c) {
  const char *last = NULL;
  for (;; s++) {
    if (*s == (char)c)
      last = s;
    if (!*s)
      return (char *)last;
  }
}

char *strstr(const char *haystack, const char *needle) {
  size_t n = strlen(needle);
  for (; *haystack; haystack++)
    if (!strncmp(haystack, needle, n))
      return (char *)haystack;
  return n ? NULL : (char *)haystack;
}

/* ---- ctype ("C" locale) ------------------------------------------------------------------ */

int isdigit(int c) { return c >= '0' && c <= '9'; }
int isxdigit(int c) { return isdigit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
int isupper(int c) { return c >= 'A' && c <= 'Z'; }
int islower(int c) { return c >= 'a' && c <= 'z'; }
int isalpha(int c) { return isupper(c) || islower(c); }
int isalnum(int c) { return isalpha(c) || isdigit(c); }
int isspace(int c) { return c == ' ' || (c >= '\t' && c <= '\r'); }
int isprint(int c) { return c >= 0x20 && c < 0x7f; }
int ispunct(int c) { return isprint(c) && !isalnum(c) && c != ' '; }
int toupper(int c) { return islower(c) ? c - 'a' + 'A' : c; }
int tolower(int c) { return isupper(c) ? c - 'A' + 'a' : c; }

/* ---- numbers ----------------------------------------------------------------------------- */

int abs(int v) { return v < 0 ? -v : v; }
long labs(long v) { return v < 0 ? -v : v; }
long long llabs(long long v) { return v < 0 ? -v : v; }

static int digit_value(int c) {
  if (isdigit(c))
    return c - '0';
  if (isalpha(c))
    return tolower(c) - 'a' + 10;
  return 99;
}

/* strto*: magnitude in unsigned long long, sign applied by the callers' casts (wraps as C's
 * strtoul does for "-1"); no errno, a value past the type's range is truncated. */
static unsigned long long parse_number(const char *s, char **end, int base, int *negative) {
  const char *p = s;
  unsigned long long v = 0;
  int any = 0;
  while (isspace(*p))
    p++;
  *negative = *p == '-';
  if (*p == '-' || *p == '+')
    p++;
  if ((base == 0 || base == 16) && p[0] == '0' && (p[1] == 'x' || p[1] == 'X') &&
      isxdigit(p[2])) {
    p += 2;
    base = 16;
  } else if (base == 0) {
    base = *p == '0' ? 8 : 10;
  }
  for (; digit_value(*p) < base; p++, any = 1)
    v = v * (unsigned)base + (unsigned)digit_value(*p);
  if (end)
    *end = (char *)(any ? p : s);
  return v;
}

unsigned long long strtoull(const char *s, char **end, int base) {
  int neg;
  unsigned long long v = parse_number(s, end, base, &neg);
  return neg ? -v : v;
}

long long strtoll(const char *s, char **end, int base) { return (long long)strtoull(s, end, base); }
unsigned long strtoul(const char *s, char **end, int base) { return strtoull(s, end, base); }
long strtol(const char *s, char **end, int base) { return (long)strtoull(s, end, base); }
int atoi(const char *s) { return (int)strtol(s, NULL, 10); }
long atol(const char *s) { return strtol(s, NULL, 10); }

static unsigned long rand_state = 1;
void srand(unsigned seed) { rand_state = seed; }
int rand_r(unsigned *state) {
  *state = *state * 1103515245u + 12345u;
  return (int)((*state >> 1) & RAND_MAX);
}
int rand(void) {
  rand_state = rand_state * 6364136223846793005ull + 1442695040888963407ull;
  return (int)((rand_state >> 33) & RAND_MAX);
}

/* ---- sorting (heap sort: no recursion, no extra memory) ------------------------------------ */

static void swap_bytes(unsigned char *a, unsigned char *b, size_t size) {
  while (size--) {
    unsigned char t = *a;
    *a++ = *b;
    *b++ = t;
  }
}

static void sift(unsigned char *base, size_t root, size_t count, size_t size,
                 int (*compare)(const void *, const void *)) {
  for (;;) {
    size_t child = 2 * root + 1;
    if (child >= count)
      return;
    if (child + 1 < count && compare(base + child * size, base + (child + 1) * size) < 0)
      child++;
    if (compare(base + root * size, base + child * size) >= 0)
      return;
    swap_bytes(base + root * size, base + child * size, size);
    root = child;
  }
}

void qsort(void *base, size_t count, size_t size, int (*compare)(const void *, const void *)) {
  unsigned char *b = base;
  if (count < 2 || !size)
    return;
  for (size_t i = count / 2; i-- > 0;)
    sift(b, i, count, size, compare);
  for (size_t end = count - 1; end > 0; end--) {
    swap_bytes(b, b + end * size, size);
    sift(b, 0, end, size, compare);
  }
}

void *bsearch(const void *key, const void *base, size_t count, size_t size,
              int (*compare)(const void *, const void *)) {
  const unsigned char *b = base;
  size_t lo = 0, hi = count;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c = compare(key, b + mid * size);
    if (!c)
      return (void *)(b + mid * size);
    if (c < 0)
      hi = mid;
    else
      lo = mid + 1;
  }
  return NULL;
}

/* ---- heap: first fit over one static area, neighbours merged on free ------------------------ */

#ifndef CI_HEAP_SIZE
#define CI_HEAP_SIZE (1u << 20)
#endif

typedef struct block {
  size_t size; /* payload bytes */
  size_t free;
} block;

static _Alignas(16) unsigned char heap[CI_HEAP_SIZE];
static size_t heap_used; /* bytes of `heap` carved into blocks so far */
static ci_lock_t heap_lock;

#define HDR ((sizeof(block) + 15) & ~(size_t)15)

static block *next_block(block *b) { return (block *)((unsigned char *)b + HDR + b->size); }
static int in_heap(const block *b) { return (const unsigned char *)b < heap + heap_used; }

void *malloc(size_t size) {
  block *found = NULL;
  if (size > CI_HEAP_SIZE)
    return NULL;
  size = (size + 15) & ~(size_t)15;
  ci_lock(&heap_lock);
  for (block *b = (block *)heap; in_heap(b); b = next_block(b)) {
    if (b->free && b->size >= size) {
      if (b->size >= size + HDR + 16) { /* split: the rest stays free */
        block *rest = (block *)((unsigned char *)b + HDR + size);
        rest->size = b->size - size - HDR;
        rest->free = 1;
        b->size = size;
      }
      found = b;
      break;
    }
  }
  if (!found && heap_used + HDR + size <= CI_HEAP_SIZE) {
    found = (block *)(heap + heap_used);
    found->size = size;
    heap_used += HDR + size;
  }
  if (found)
    found->free = 0;
  ci_unlock(&heap_lock);
  return found ? (unsigned char *)found + HDR : NULL;
}

void free(void *ptr) {
  if (!ptr)
    return;
  ci_lock(&heap_lock);
  ((block *)((unsigned char *)ptr - HDR))->free = 1;
  for (block *b = (block *)heap; in_heap(b); b = next_block(b)) {
    block *n = next_block(b);
    while (b->free && in_heap(n) && n->free) {
      b->size += HDR + n->size;
      n = next_block(b);
    }
  }
  ci_unlock(&heap_lock);
}

void *calloc(size_t count, size_t size) {
  if (size && count > CI_HEAP_SIZE / size)
    return NULL;
  void *p = malloc(count * size);
  return p ? memset(p, 0, count * size) : NULL;
}

void *realloc(void *ptr, size_t size) {
  if (!ptr)
    return malloc(size);
  size_t old = ((block *)((unsigned char *)ptr - HDR))->size;
  if (old >= size)
    return ptr;
  void *p = malloc(size);
  if (p) {
    memcpy(p, ptr, old);
    free(ptr);
  }
  return p;
}

/* gcc -pg -mfentry: every function starts with a call to this, one 6-byte instruction, which
 * makes gcc-built functions entry-jump safe (PORTING.md).  It must preserve every register
 * (it runs before the caller's prologue): an empty function does. */
void __fentry__(void) {}

/* ---- ending ------------------------------------------------------------------------------ */

void exit(int code) { ci_fail((u32)code); }
void abort(void) { ci_fail(134); }

void __assert_fail(const char *expr, const char *file, unsigned line, const char *func) {
  printf("assertion failed: %s (%s:%u, %s)\n", expr, file, line, func);
  abort();
}

/* ---- output -------------------------------------------------------------------------------- */

struct ci_file {
  int unused;
};
static struct ci_file out_file, err_file;
FILE *const stdout = &out_file;
FILE *const stderr = &err_file;

int putchar(int c) {
  ci_putc((char)c);
  return (unsigned char)c;
}
int fputc(int c, FILE *f) {
  (void)f;
  return putchar(c);
}
int putc(int c, FILE *f) { return fputc(c, f); }
int fputs(const char *s, FILE *f) {
  (void)f;
  ci_puts(s);
  return 0;
}
int puts(const char *s) {
  ci_puts(s);
  ci_putc('\n');
  return 0;
}
size_t fwrite(const void *data, size_t size, size_t count, FILE *f) {
  const char *p = data;
  (void)f;
  for (size_t i = 0; i < size * count; i++)
    ci_putc(p[i]);
  return count;
}
int fflush(FILE *f) {
  (void)f;
  return 0;
}

/* One formatter for every printf: `emit` gets each character; the count of characters the
 * whole output has is returned (as C's printf/snprintf do).  Supports %d %i %u %x %X %o %c %s
 * %p %% with the flags - 0 + space #, width and precision (also as *), and the length
 * modifiers hh h l ll z j t.  No floating point: %f %e %g print as "?". */
typedef struct {
  void (*emit)(void *ctx, char c);
  void *ctx;
  int count;
} sink;

static void put(sink *s, char c) {
  s->emit(s->ctx, c);
  s->count++;
}

static void pad(sink *s, char c, int n) {
  while (n-- > 0)
    put(s, c);
}

typedef struct {
  int left, zero, plus, space, alt, width, prec;
} spec;

static void put_number(sink *s, const spec *f, unsigned long long v, int negative, unsigned base,
                       int upper) {
  char digits[24];
  int n = 0;
  const char *set = upper ? "0123456789ABCDEF" : "0123456789abcdef";
  if (v || f->prec != 0)
    do {
      digits[n++] = set[v % base];
      v /= base;
    } while (v);
  const char *prefix = negative ? "-" : f->plus ? "+" : f->space ? " " : "";
  if (f->alt && base == 16 && n)
    prefix = upper ? "0X" : "0x";
  int zeros = f->prec > n ? f->prec - n : 0;
  if (f->alt && base == 8 && !zeros && (n == 0 || digits[n - 1] != '0'))
    zeros = 1;
  int len = (int)strlen(prefix) + zeros + n;
  int fill = f->width > len ? f->width - len : 0;
  if (!f->left && !(f->zero && f->prec < 0))
    pad(s, ' ', fill);
  for (const char *p = prefix; *p; p++)
    put(s, *p);
  if (!f->left && f->zero && f->prec < 0)
    pad(s, '0', fill);
  pad(s, '0', zeros);
  while (n)
    put(s, digits[--n]);
  if (f->left)
    pad(s, ' ', fill);
}

static void put_string(sink *s, const spec *f, const char *str) {
  if (!str)
    str = "(null)";
  int n = (int)strnlen(str, f->prec >= 0 ? (size_t)f->prec : (size_t)-1);
  if (!f->left)
    pad(s, ' ', f->width - n);
  for (int i = 0; i < n; i++)
    put(s, str[i]);
  if (f->left)
    pad(s, ' ', f->width - n);
}

static int format(sink *s, const char *fmt, va_list ap) {
  for (; *fmt; fmt++) {
    if (*fmt != '%') {
      put(s, *fmt);
      continue;
    }
    spec f = {0, 0, 0, 0, 0, 0, -1};
    for (;; fmt++) {
      char c = fmt[1];
      if (c == '-')
        f.left = 1;
      else if (c == '0')
        f.zero = 1;
      else if (c == '+')
        f.plus = 1;
      else if (c == ' ')
        f.space = 1;
      else if (c == '#')
        f.alt = 1;
      else
        break;
    }
    fmt++;
    if (*fmt == '*') {
      f.width = va_arg(ap, int);
      if (f.width < 0)
        f.left = 1, f.width = -f.width;
      fmt++;
    }
    while (isdigit(*fmt))
      f.width = f.width * 10 + (*fmt++ - '0');
    if (*fmt == '.') {
      fmt++;
      f.prec = 0;
      if (*fmt == '*') {
        f.prec = va_arg(ap, int);
        fmt++;
      }
      while (isdigit(*fmt))
        f.prec = f.prec * 10 + (*fmt++ - '0');
    }
    int size = 0; /* -2 hh, -1 h, 0 int, 1 long, 2 long long (and z j t) */
    for (;; fmt++) {
      if (*fmt == 'h')
        size--;
      else if (*fmt == 'l')
        size++;
      else if (*fmt == 'z' || *fmt == 'j' || *fmt == 't')
        size = 2;
      else
        break;
    }
    char conv = *fmt;
    if (!conv)
      break;
    if (conv == 'd' || conv == 'i') {
      long long v = size >= 1 ? (size == 1 ? va_arg(ap, long) : va_arg(ap, long long))
                              : va_arg(ap, int);
      if (size == -1)
        v = (short)v;
      if (size <= -2)
        v = (signed char)v;
      unsigned long long mag = v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;
      put_number(s, &f, mag, v < 0, 10, 0);
    } else if (conv == 'u' || conv == 'x' || conv == 'X' || conv == 'o') {
      unsigned long long v = size >= 1
                                 ? (size == 1 ? va_arg(ap, unsigned long)
                                              : va_arg(ap, unsigned long long))
                                 : va_arg(ap, unsigned);
      if (size == -1)
        v = (unsigned short)v;
      if (size <= -2)
        v = (unsigned char)v;
      unsigned base = conv == 'u' ? 10 : conv == 'o' ? 8 : 16;
      put_number(s, &f, v, 0, base, conv == 'X');
    } else if (conv == 'p') {
      f.alt = 1;
      put_number(s, &f, (unsigned long long)(uintptr_t)va_arg(ap, void *), 0, 16, 0);
    } else if (conv == 'c') {
      char c = (char)va_arg(ap, int);
      if (!f.left)
        pad(s, ' ', f.width - 1);
      put(s, c);
      if (f.left)
        pad(s, ' ', f.width - 1);
    } else if (conv == 's') {
      put_string(s, &f, va_arg(ap, const char *));
    } else if (conv == 'f' || conv == 'e' || conv == 'g' || conv == 'F' || conv == 'E' ||
               conv == 'G') {
      (void)va_arg(ap, double);
      put(s, '?');
    } else if (conv == 'n') {
      *va_arg(ap, int *) = s->count;
    } else {
      put(s, '%');
      if (conv != '%')
        put(s, conv);
    }
  }
  return s->count;
}

static void emit_port(void *ctx, char c) {
  (void)ctx;
  ci_putc(c);
}

typedef struct {
  char *buf;
  size_t size, used;
} buffer;

static void emit_buffer(void *ctx, char c) {
  buffer *b = ctx;
  if (b->used + 1 < b->size)
    b->buf[b->used] = c;
  b->used++;
}

int vfprintf(FILE *f, const char *fmt, va_list ap) {
  sink s = {emit_port, NULL, 0};
  (void)f;
  return format(&s, fmt, ap);
}

int vprintf(const char *fmt, va_list ap) { return vfprintf(stdout, fmt, ap); }

int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap) {
  buffer b = {buf, size, 0};
  sink s = {emit_buffer, &b, 0};
  int n = format(&s, fmt, ap);
  if (size)
    buf[b.used < size ? b.used : size - 1] = 0;
  return n;
}

int printf(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vprintf(fmt, ap);
  va_end(ap);
  return n;
}

int fprintf(FILE *f, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vfprintf(f, fmt, ap);
  va_end(ap);
  return n;
}

int snprintf(char *buf, size_t size, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, size, fmt, ap);
  va_end(ap);
  return n;
}

int sprintf(char *buf, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, (size_t)-1 / 2, fmt, ap);
  va_end(ap);
  return n;
}
