/* Debug log lines on port 0x402; see log.h. */
#include "log.h"

#define CI_DEBUG_PORT 0x402

static void outb(uint16_t port, uint8_t value) {
  __asm__ volatile("outb %0, %1" : : "a"(value), "Nd"(port));
}

void ci_log(const char *text) {
  while (*text)
    outb(CI_DEBUG_PORT, (uint8_t)*text++);
}

void ci_log_hex(const char *label, uint64_t value) {
  char buf[19];
  ci_log(label);
  buf[0] = '0';
  buf[1] = 'x';
  for (int i = 0; i < 16; i++)
    buf[2 + i] = "0123456789abcdef"[(value >> (60 - 4 * i)) & 0xFu];
  buf[18] = 0;
  ci_log(buf);
}
