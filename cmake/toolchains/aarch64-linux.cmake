# 64-bit Arm Linux (Raspberry Pi 4/5 OS 64-bit, Jetson, Arm servers, Android-class SoCs).
#   cmake -S . -B build/aarch64 -DCMAKE_TOOLCHAIN_FILE=cmake/toolchains/aarch64-linux.cmake
# Debian: apt-get install g++-aarch64-linux-gnu qemu-user (qemu runs ctest on x86-64).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(COCD_CROSS_TRIPLE aarch64-linux-gnu)
set(CMAKE_C_COMPILER ${COCD_CROSS_TRIPLE}-gcc)
set(CMAKE_CXX_COMPILER ${COCD_CROSS_TRIPLE}-g++)
# AArch64 GCC contracts a*b+c into one fused multiply-add by default, which rounds
# differently from x86-64 and the Python reference; -ffp-contract=off keeps every
# operation separately rounded, so results match bit for bit.
set(CMAKE_C_FLAGS_INIT "-ffp-contract=off")
set(CMAKE_CXX_FLAGS_INIT "-ffp-contract=off")
set(CMAKE_FIND_ROOT_PATH /usr/${COCD_CROSS_TRIPLE})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
# ctest runs the test binaries through qemu-user when it is installed.
find_program(COCD_QEMU qemu-aarch64)
if(COCD_QEMU)
  set(CMAKE_CROSSCOMPILING_EMULATOR ${COCD_QEMU} -L /usr/${COCD_CROSS_TRIPLE})
endif()
