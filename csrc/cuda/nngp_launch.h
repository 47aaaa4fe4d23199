// Host API of the CUDA NNGP kernel (csrc/cuda/nngp.cu): device pointers, element counts, the same
// contract as the CPU entry points in csrc/cpu/nngp_ops.h.  Asynchronous on `stream`.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "launch.h"

namespace lwe::cuda {

void nngp_prep(DType dt, const void* x, std::int64_t N, std::int64_t C, int depth, void* prep, void* self, int device,
               cudaStream_t stream);
void nngp_cross(DType dt, const void* x, const void* px, std::int64_t N1, const void* y, const void* py,
                std::int64_t N2, std::int64_t C, int depth, const void* self, void* out, int device,
                cudaStream_t stream);

}  // namespace lwe::cuda
