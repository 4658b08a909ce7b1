/* codeisland guest libc (freestanding subset): stdio.h.  Output only: every stream writes the
 * calling thread's output (I/O port 0xE9); there is no file system and no input. */
#ifndef CI_LIBC_STDIO_H
#define CI_LIBC_STDIO_H
#include <stdarg.h>
#include <stddef.h>

typedef struct ci_file FILE;
extern FILE *const stdout;
extern FILE *const stderr;
#define EOF (-1)

int putchar(int c);
int puts(const char *s);
int fputc(int c, FILE *f);
int putc(int c, FILE *f);
int fputs(const char *s, FILE *f);
size_t fwrite(const void *data, size_t size, size_t count, FILE *f);
int fflush(FILE *f);
int printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int fprintf(FILE *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int vprintf(const char *fmt, va_list ap);
int vfprintf(FILE *f, const char *fmt, va_list ap);
int sprintf(char *buf, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int snprintf(char *buf, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap);

#endif
