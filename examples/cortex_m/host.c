/* The example on the host: output on stdout; argument "measure" runs the probes. */
#include <stdio.h>
#include <string.h>

#include "example.h"

void example_write(const char* text) { fputs(text, stdout); }

int main(int argc, char** argv) {
  return example_main(argc > 1 && strcmp(argv[1], "measure") == 0);
}
