# 32-bit Arm Linux, ARMv7-A hard float (Raspberry Pi OS 32-bit, BeagleBone, i.MX6/7).
#   cmake -S . -B build/armhf -DCMAKE_TOOLCHAIN_FILE=cmake/toolchains/armhf-linux.cmake
# Debian: apt-get install g++-arm-linux-gnueabihf qemu-user (qemu runs ctest on x86-64).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR armv7l)
set(COCD_CROSS_TRIPLE arm-linux-gnueabihf)
set(CMAKE_C_COMPILER ${COCD_CROSS_TRIPLE}-gcc)
set(CMAKE_CXX_COMPILER ${COCD_CROSS_TRIPLE}-g++)
# VFPv3/NEON arithmetic is IEEE single/double; no fused multiply-add contraction, so
# results match x86-64 and the Python reference bit for bit.
set(CMAKE_C_FLAGS_INIT "-ffp-contract=off")
set(CMAKE_CXX_FLAGS_INIT "-ffp-contract=off")
set(CMAKE_FIND_ROOT_PATH /usr/${COCD_CROSS_TRIPLE})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
find_program(COCD_QEMU qemu-arm)
if(COCD_QEMU)
  set(CMAKE_CROSSCOMPILING_EMULATOR ${COCD_QEMU} -L /usr/${COCD_CROSS_TRIPLE})
endif()
