/* The two things the example needs from its platform (startup_m4.c or host.c). */
#ifndef COCD_EXAMPLE_H_
#define COCD_EXAMPLE_H_

void example_write(const char* text);
/* measure_only: run the instruction-count probes instead of training. Returns the
 * exit status (0: the loss fell to under a quarter of its start). */
int example_main(int measure_only);

#endif
