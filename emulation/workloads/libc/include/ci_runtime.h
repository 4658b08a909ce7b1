/* codeisland guest runtime for ported programs: the workload ABI (../../workload.h) plus the
 * spinlock the libc uses, for programs whose threads share state on purpose. */
#ifndef CI_LIBC_RUNTIME_H
#define CI_LIBC_RUNTIME_H
#include "../../workload.h"

typedef struct {
  volatile int held;
} ci_lock_t;
void ci_lock(ci_lock_t *lock);
void ci_unlock(ci_lock_t *lock);

#endif
