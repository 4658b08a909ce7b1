/* Debug log on I/O port 0x402 (QEMU debugcon; the emulator captures it).
 * Entry and errors only: per-SMI logging would cost every SMI. */
#ifndef CI_LOG_H
#define CI_LOG_H

#include <stdint.h>

void ci_log(const char *text);
void ci_log_hex(const char *label, uint64_t value); /* "label0x...\n" pieces */

#endif
