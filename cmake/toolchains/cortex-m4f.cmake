# Bare-metal Arm Cortex-M4F (thumb, single-precision FPU, hard-float ABI): STM32F4,
# nRF52, i.MX RT..., and qemu-system-arm's mps2-an386 board.
#   cmake -S . -B build/m4f -DCMAKE_TOOLCHAIN_FILE=cmake/toolchains/cortex-m4f.cmake
# Debian: apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm.
# Builds libcocd without exceptions, RTTI, stdio or heap (COCD_BARE_METAL) and the
# example in examples/cortex_m; the host tests are not built.
set(CMAKE_SYSTEM_NAME Generic)
set(CMAKE_SYSTEM_PROCESSOR cortex-m4)
set(CMAKE_C_COMPILER arm-none-eabi-gcc)
set(CMAKE_CXX_COMPILER arm-none-eabi-g++)
set(CMAKE_TRY_COMPILE_TARGET_TYPE STATIC_LIBRARY)  # no startup code to link a test program
set(COCD_CPU_FLAGS "-mcpu=cortex-m4 -mthumb -mfloat-abi=hard -mfpu=fpv4-sp-d16")
# float on the FPU, double in software: both IEEE, and with no fused multiply-add
# contraction the losses match the host build bit for bit.
set(CMAKE_C_FLAGS_INIT "${COCD_CPU_FLAGS} -ffp-contract=off -ffunction-sections -fdata-sections")
set(CMAKE_CXX_FLAGS_INIT "${CMAKE_C_FLAGS_INIT} -fno-exceptions -fno-rtti -fno-threadsafe-statics")
set(CMAKE_EXE_LINKER_FLAGS_INIT "-Wl,--gc-sections")
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(COCD_BARE_METAL ON CACHE BOOL "Bare-metal build: no exceptions, stdio or heap in libcocd")
# Flash is the scarce resource: optimise for size unless a build type is given.
set(CMAKE_BUILD_TYPE MinSizeRel CACHE STRING "Build type (MinSizeRel for the microcontroller)")
