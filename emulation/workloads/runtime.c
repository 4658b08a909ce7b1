/* Runtime shared by every workload: entry, port output, exit (see workload.h). */
#include "workload.h"

static inline void outb(unsigned short port, u8 v) {
  __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

void ci_putc(char c) { outb(CI_PORT_OUT, (u8)c); }

void ci_puts(const char *s) {
  while (*s)
    ci_putc(*s++);
}

void ci_puthex(u64 value, int digits) {
  for (int i = digits - 1; i >= 0; i--) {
    u32 nib = (u32)(value >> (i * 4)) & 0xF;
    ci_putc((char)(nib < 10 ? '0' + nib : 'a' + nib - 10));
  }
}

void ci_putdec(u64 value) {
  char buf[24];
  int n = 0;
  do {
    buf[n++] = (char)('0' + value % 10);
    value /= 10;
  } while (value);
  while (n)
    ci_putc(buf[--n]);
}

void ci_line(const char *label, u64 value) {
  ci_puts(label);
  ci_puts("=0x");
  ci_puthex(value, 16);
  ci_putc('\n');
}

void ci_fail(u32 code) {
  __asm__ volatile("outl %0, %1" : : "a"(code), "Nd"((unsigned short)CI_PORT_EXIT));
  for (;;)
    __asm__ volatile("hlt");
}

u32 ci_input(void) {
  u32 v;
  __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"((unsigned short)CI_PORT_IN));
  return v;
}

void *ci_memset(void *dst, int c, u64 n) {
  u8 *d = dst;
  while (n--)
    *d++ = (u8)c;
  return dst;
}

void *ci_memcpy(void *dst, const void *src, u64 n) {
  u8 *d = dst;
  const u8 *s = src;
  while (n--)
    *d++ = *s++;
  return dst;
}

void ci_start(unsigned thread, unsigned nthreads) __attribute__((noreturn));
void ci_start(unsigned thread, unsigned nthreads) {
  workload_thread(thread, nthreads);
  ci_fail(0);
}
