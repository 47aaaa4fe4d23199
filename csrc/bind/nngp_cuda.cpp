// _cuda bindings of the NNGP kernel: a numpy host entry point (copy in, run, copy out) over the
// launchers of csrc/cuda/nngp.cu.  Registered by module_cuda.cpp.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "../cuda/check.h"
#include "../cuda/nngp_launch.h"
#include "lwengine/kernels/nngp.h"

namespace py = pybind11;
using lwe::cuda::DType;

namespace {

class Buf {
 public:
  explicit Buf(std::size_t bytes) : bytes_(bytes) {
    if (bytes_) LWE_CUDA_CHECK(cudaMalloc(&p_, bytes_), "cudaMalloc (nngp)");
  }
  ~Buf() {
    if (p_) cudaFree(p_);
  }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
  void* get() const { return p_; }
  void up(const void* src) {
    if (bytes_) LWE_CUDA_CHECK(cudaMemcpy(p_, src, bytes_, cudaMemcpyHostToDevice), "cudaMemcpy H2D (nngp)");
  }
  void down(void* dst) const {
    if (bytes_) LWE_CUDA_CHECK(cudaMemcpy(dst, p_, bytes_, cudaMemcpyDeviceToHost), "cudaMemcpy D2H (nngp)");
  }

 private:
  void* p_ = nullptr;
  std::size_t bytes_;
};

template <class T>
void host_t(const py::array_t<T, py::array::c_style>& x, const py::array_t<T, py::array::c_style>& y, int depth,
            bool same, py::array_t<T, py::array::c_style>& out, int device) {
  if (x.ndim() != 4 || y.ndim() != 4 || x.shape(2) != 32 || x.shape(3) != 32 || y.shape(2) != 32 || y.shape(3) != 32 ||
      x.shape(1) != y.shape(1) || x.shape(1) < 1)
    throw py::value_error("x and y must have shape (N, C, 32, 32) with the same C >= 1");
  if (depth < 1 || depth > lwe::nngp::kMaxDepth) throw py::value_error("depth must be in 1..5");
  const std::int64_t N1 = x.shape(0), N2 = y.shape(0), C = x.shape(1);
  if (out.ndim() != 2 || out.shape(0) != N1 || out.shape(1) != N2 || !out.writeable())
    throw py::value_error("out must be a writeable (N1, N2) array");
  if (same && N1 != N2) throw py::value_error("same=True needs x == y");
  const DType dt = sizeof(T) == 4 ? DType::f32 : DType::f64;
  const std::int64_t plen = lwe::nngp::prep_len(depth);
  Buf dx(sizeof(T) * N1 * C * 1024), dy(same ? 0 : sizeof(T) * N2 * C * 1024);
  Buf pxb(sizeof(T) * N1 * plen), pyb(same ? 0 : sizeof(T) * N2 * plen);
  Buf sx(sizeof(T) * N1), sy(same ? 0 : sizeof(T) * N2), dout(sizeof(T) * N1 * N2);
  {
    py::gil_scoped_release release;
    dx.up(x.data());
    lwe::cuda::nngp_prep(dt, dx.get(), N1, C, depth, pxb.get(), sx.get(), device, 0);
    const void* ydev = dx.get();
    const void* pydev = pxb.get();
    if (!same) {
      dy.up(y.data());
      lwe::cuda::nngp_prep(dt, dy.get(), N2, C, depth, pyb.get(), sy.get(), device, 0);
      ydev = dy.get();
      pydev = pyb.get();
    }
    lwe::cuda::nngp_cross(dt, dx.get(), pxb.get(), N1, ydev, pydev, N2, C, depth, same ? sx.get() : nullptr,
                          dout.get(), device, 0);
    LWE_CUDA_CHECK(cudaDeviceSynchronize(), "nngp kernels");
    dout.down(out.mutable_data());
  }
}

}  // namespace

void register_nngp_cuda(py::module_& m) {
  m.def("nngp_kernel_host", &host_t<float>, py::arg("x"), py::arg("y"), py::arg("depth"), py::arg("same"),
        py::arg("out"), py::arg("device") = 0);
  m.def("nngp_kernel_host", &host_t<double>, py::arg("x"), py::arg("y"), py::arg("depth"), py::arg("same"),
        py::arg("out"), py::arg("device") = 0);
}
