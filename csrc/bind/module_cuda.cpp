// _cuda: thin pybind11 bindings of the CUDA kernels (csrc/cuda). Filled in by the CUDA work.
#include <pybind11/pybind11.h>
#include <cuda_runtime.h>

namespace py = pybind11;

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "lwengine CUDA kernels";
  m.def("device_count", []() {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) { cudaGetLastError(); return 0; }
    return n;
  });
}
