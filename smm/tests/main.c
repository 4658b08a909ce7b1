/* Native test runner: every suite, one summary line, non-zero exit on failure. */
#include "harness.h"

int main(void) {
  suite_validate();
  suite_apply();
  suite_context();
  suite_dispatch();
  suite_random();
  suite_keep_copies();
  suite_atomic();
  suite_dma();
  suite_pagewalk();
  suite_reclaim();
  printf("smm native tests: %u checks, %u failures\n", g_checks, g_failures);
  return g_failures ? 1 : 0;
}
