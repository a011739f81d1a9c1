// csrc/kernels/cuda_kernels.cu compiled as C++ against HIP-CPU, which runs its kernels
// on the CPU (cmake/hipcpu.cmake). COCD_CUDA_KERNELS_SOURCE is that file's path, or a
// mutated copy of it (mutate.sh).
#include COCD_CUDA_KERNELS_SOURCE

namespace cocd {
namespace cuda {

// Launches are asynchronous here as on a GPU; the test waits with this one, which
// belongs to the same HIP-CPU runtime as the launches.
cudaError_t synchronize() { return cudaDeviceSynchronize(); }

}  // namespace cuda
}  // namespace cocd
