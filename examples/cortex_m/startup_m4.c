/* Bare-metal Cortex-M4F start-up for the example: vector table, .data/.bss set-up,
 * FPU on, then example_main(). Output and exit go through Arm semihosting, which
 * qemu-system-arm provides with -semihosting-config enable=on,target=native (a debug
 * probe provides it on a real board). The command line "measure" selects the
 * instruction-count probes. The stack is painted so the run can report its depth. */
#include <stdint.h>
#include <string.h>

#include "example.h"

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _sstack, _estack;

enum { kSysWrite0 = 0x04, kSysGetCmdline = 0x15, kSysExit = 0x18 };
enum { kExitOk = 0x20026 /* ADP_Stopped_ApplicationExit */, kExitError = 0x20023 };
#define STACK_PAINT 0x5a5a5a5au

static int semihost(int op, void* arg) {
  register int r0 __asm__("r0") = op;
  register void* r1 __asm__("r1") = arg;
  __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
  return r0;
}

void example_write(const char* text) { semihost(kSysWrite0, (void*)text); }

static void finish(int status) {
  semihost(kSysExit, (void*)(uintptr_t)(status == 0 ? kExitOk : kExitError));
  for (;;) {
  }
}

/* No heap: any malloc would fail (none is linked in; benchmarks/footprint.py checks). */
void* _sbrk(int increment) {
  (void)increment;
  return (void*)-1;
}

static void fault_handler(void) {
  example_write("fault\n");
  finish(1);
}

static void print_stack_depth(void) {
  const uint32_t* p = &_sstack;
  while (p < &_estack && *p == STACK_PAINT) ++p;
  uint32_t used = (uint32_t)((uintptr_t)&_estack - (uintptr_t)p);
  char line[64] = "stack high-water mark, bytes: ";
  char digits[12];
  int k = 0;
  do digits[k++] = (char)('0' + used % 10), used /= 10;
  while (used > 0);
  char* q = line + strlen(line);
  while (k > 0) *q++ = digits[--k];
  *q++ = '\n';
  *q = '\0';
  example_write(line);
}

void reset_handler(void) {
  memcpy(&_sdata, &_sidata, (size_t)((char*)&_edata - (char*)&_sdata));
  memset(&_sbss, 0, (size_t)((char*)&_ebss - (char*)&_sbss));
  /* Paint the stack below this frame (with a margin) to measure its depth later. */
  uint32_t* top = (uint32_t*)__builtin_frame_address(0) - 64;
  for (uint32_t* p = &_sstack; p < top; ++p) *p = STACK_PAINT;
  /* CP10/CP11 full access: the FPU (float arithmetic; double runs in software). */
  *(volatile uint32_t*)0xE000ED88u |= 0xFu << 20;
  __asm__ volatile("dsb\n\tisb" ::: "memory");

  char cmdline[32] = "";
  struct {
    char* buffer;
    int size;
  } arg = {cmdline, (int)sizeof cmdline};
  const int measure = semihost(kSysGetCmdline, &arg) == 0 && strstr(cmdline, "measure") != 0;
  const int status = example_main(measure);
  if (!measure) print_stack_depth();
  finish(status);
}

/* The first 16 entries of the vector table (no peripheral interrupts are used). */
__attribute__((section(".vectors"), used)) static void (*const vectors[16])(void) = {
    (void (*)(void))(&_estack),
    reset_handler,
    fault_handler,
    fault_handler,
    fault_handler,
    fault_handler,
    fault_handler,
    0,
    0,
    0,
    0,
    fault_handler,
    fault_handler,
    0,
    fault_handler,
    fault_handler};
