# COCD_CUDA_ON_CPU: run the CUDA kernels on the CPU through HIP-CPU (AMD's header-only
# HIP CPU runtime) and compare every launcher with the CPU kernels, bit for bit (ctest
# cuda_on_cpu). csrc/kernels/cuda_kernels.cu itself is compiled, as C++, with
# __CUDA_ARCH__ defined so that the device branches of dtype.h and slot_ops.h are the
# ones tested. HIP-CPU is fetched at a pinned commit; to use a local copy instead:
#   -DFETCHCONTENT_SOURCE_DIR_HIPCPU=/path/to/HIP-CPU
option(COCD_CUDA_ON_CPU "Test the CUDA kernels on the CPU through HIP-CPU (fetched)" OFF)

if(COCD_CUDA_ON_CPU AND COCD_BUILD_TESTS)
  include(FetchContent)
  # SOURCE_SUBDIR names no CMakeLists.txt: only the headers are used, so HIP-CPU's own
  # project (its TBB check, install and packaging rules) stays out of this build.
  FetchContent_Declare(
    hipcpu
    GIT_REPOSITORY https://github.com/ROCm/HIP-CPU.git
    GIT_TAG e112c935057434897bb12d9ab3910380a8bd5f58
    SOURCE_SUBDIR headers-only)
  FetchContent_MakeAvailable(hipcpu)
  find_package(Threads REQUIRED)
  # tests/cpp/cuda_on_cpu/mutate.sh points this at mutated copies.
  set(COCD_CUDA_KERNELS_SOURCE ${CMAKE_CURRENT_SOURCE_DIR}/csrc/kernels/cuda_kernels.cu
      CACHE FILEPATH "The CUDA kernel source that COCD_CUDA_ON_CPU builds")

  set(dir ${CMAKE_CURRENT_SOURCE_DIR}/tests/cpp/cuda_on_cpu)
  # A shared library of its own, exporting only cocd::cuda::* (version script): the
  # inline functions of dtype.h/slot_ops.h compiled with __CUDA_ARCH__ differ from the
  # CPU kernels' ones, and must not be merged with them by the linker.
  add_library(cocd_cuda_on_cpu SHARED ${dir}/cuda_kernels_on_cpu.cpp)
  target_include_directories(cocd_cuda_on_cpu PRIVATE ${dir}/shim csrc/kernels)
  target_include_directories(cocd_cuda_on_cpu SYSTEM PRIVATE ${hipcpu_SOURCE_DIR}/include)
  target_compile_definitions(
    cocd_cuda_on_cpu
    PRIVATE __CUDA_ARCH__=900
            # Blocks one after another (libstdc++ without TBB): reproducible, ASan-friendly.
            _GLIBCXX_USE_TBB_PAR_BACKEND=0
            COCD_CUDA_KERNELS_SOURCE="${COCD_CUDA_KERNELS_SOURCE}")
  target_compile_options(cocd_cuda_on_cpu PRIVATE ${COCD_WARNINGS})
  target_link_options(cocd_cuda_on_cpu PRIVATE -Wl,--version-script=${dir}/exports.map)
  set_target_properties(cocd_cuda_on_cpu PROPERTIES LINK_DEPENDS ${dir}/exports.map)
  target_link_libraries(cocd_cuda_on_cpu PRIVATE Threads::Threads ${CMAKE_DL_LIBS})

  add_executable(test_cuda_on_cpu ${dir}/test_cuda_on_cpu.cpp)
  target_include_directories(test_cuda_on_cpu PRIVATE ${dir}/shim csrc/kernels)
  target_include_directories(test_cuda_on_cpu SYSTEM PRIVATE ${hipcpu_SOURCE_DIR}/include)
  target_compile_definitions(test_cuda_on_cpu PRIVATE _GLIBCXX_USE_TBB_PAR_BACKEND=0)
  target_compile_options(test_cuda_on_cpu PRIVATE ${COCD_WARNINGS})
  target_link_libraries(test_cuda_on_cpu PRIVATE cocd cocd_cuda_on_cpu Threads::Threads)
  add_test(NAME cuda_on_cpu COMMAND test_cuda_on_cpu)
  if(COCD_SANITIZE)
    # HIP-CPU keeps a little memory per device synchronisation until exit.
    set_tests_properties(cuda_on_cpu PROPERTIES ENVIRONMENT ASAN_OPTIONS=detect_leaks=0)
  endif()
endif()
