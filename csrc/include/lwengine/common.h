// Shared by the C++ (CPU) and CUDA code: the LWE_HD macro and small checks.
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define LWE_HD __host__ __device__ __forceinline__
#else
#define LWE_HD inline
#endif

namespace lwe {
using index_t = std::int64_t;
}  // namespace lwe
