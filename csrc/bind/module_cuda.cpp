// _cuda: thin pybind11 bindings of the CUDA kernels: registration and forwarding only.
//
// Raw entry points take device pointers as integers (torch CUDA tensors via tensor.data_ptr(), a
// stream handle as an integer, 0 = default stream) and call csrc/cuda/launch.h; the numpy entry
// points (*_host) check their arrays with the shared rules of array_checks.h and call
// csrc/cuda/host.h (copy in, poison, run, copy out).  Benchmark-only helpers live in the submodule
// _cuda.bench.  CUDA failures raise RuntimeError naming the operation; bad arguments ValueError or
// TypeError as in lwengine/validate.py.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <string>

#include "../cuda/check.h"
#include "../cuda/host.h"
#include "../cuda/launch.h"
#include "../cuda/memory.h"
#include "array_checks.h"

namespace py = pybind11;
using lwe::cuda::DType;
using std::int64_t;

namespace {

using lwe::bind::checked;
using lwe::bind::checked_gamma;
using lwe::bind::checked_offsets;
using lwe::bind::expect_dim;
using lwe::bind::fail;
using lwe::bind::points_are_f32;

template <class P>
P* as_ptr(std::uintptr_t p) { return reinterpret_cast<P*>(p); }
cudaStream_t as_stream(std::uintptr_t s) { return reinterpret_cast<cudaStream_t>(s); }

// ------------------------------------------------------------------ host (numpy) entry points
// Validated with the shared rules of array_checks.h, then forwarded to csrc/cuda/host.h.
lwe::cuda::host::Store checked_store(const py::object& z, const py::object& beta, const py::object& offsets,
                                     const std::string& p) {
  lwe::cuda::host::Store s{};
  const bool f32 = points_are_f32(z, p + "z");
  s.dt = f32 ? DType::f32 : DType::f64;
  py::array za = f32 ? checked<float>(z, p + "z", 2) : checked<double>(z, p + "z", 2);
  s.rows = za.shape(0);
  s.d = za.shape(1);
  if (s.d < 1) fail(p + "z must have at least one column, got shape " + lwe::bind::shape_str(za));
  py::array ba = checked<double>(beta, p + "beta", 1);
  expect_dim(ba, p + "beta", 0, s.rows, "length");
  s.offsets = checked_offsets(offsets, p + "offsets", s.rows, &s.max_rows);
  s.n_specs = py::reinterpret_borrow<py::array>(offsets).shape(0) - 1;
  s.z = za.data();
  s.beta = static_cast<const double*>(ba.data());
  return s;
}

py::array_t<double> cross_inner_host(const py::object& q_z, const py::object& q_beta, const py::object& q_offsets,
                                     const py::object& z, const py::object& beta, const py::object& offsets,
                                     double gamma, int device) {
  const auto q = checked_store(q_z, q_beta, q_offsets, "q_");
  const auto s = checked_store(z, beta, offsets, "");
  if (q.dt != s.dt) lwe::bind::fail_type("q_z and z must have the same dtype (float32 or float64)");
  if (q.d != s.d)
    fail("q_z has dimension " + std::to_string(q.d) + " but z has dimension " + std::to_string(s.d));
  checked_gamma(gamma);
  py::array_t<double> out({q.n_specs, s.n_specs});
  double* o = out.mutable_data();
  py::gil_scoped_release release;
  lwe::cuda::host::cross_inner(q, s, gamma, o, device);
  return out;
}

template <bool GRAM>
py::array_t<double> store_op_host(const py::object& z, const py::object& beta, const py::object& offsets,
                                  double gamma, int device) {
  const auto s = checked_store(z, beta, offsets, "");
  checked_gamma(gamma);
  py::array_t<double> out = GRAM ? py::array_t<double>({s.n_specs, s.n_specs}) : py::array_t<double>(s.n_specs);
  double* o = out.mutable_data();
  py::gil_scoped_release release;
  if (GRAM)
    lwe::cuda::host::gram(s, gamma, o, device);
  else
    lwe::cuda::host::self_inner(s, gamma, o, device);
  return out;
}

py::tuple zx_moments_host(const py::object& z_o, const py::object& x_o, double gamma, bool with_t, int device) {
  py::array z = checked<double>(z_o, "z", 2);
  const bool f32 = points_are_f32(x_o, "x");
  py::array x = f32 ? checked<float>(x_o, "x", 2) : checked<double>(x_o, "x", 2);
  const int64_t K = z.shape(0), d = z.shape(1), n = x.shape(0);
  if (K < 1) fail("z must have at least one row, got shape " + lwe::bind::shape_str(z));
  if (n < 1) fail("x must have at least one row, got 0");
  expect_dim(x, "x", 1, d, "dimension (columns of z)");
  checked_gamma(gamma);
  py::array_t<double> C(K);
  py::array_t<double> T = with_t ? py::array_t<double>({K, d}) : py::array_t<double>(0);
  const double* zp = static_cast<const double*>(z.data());
  const void* xp = x.data();
  double *Cp = C.mutable_data(), *Tp = with_t ? T.mutable_data() : nullptr;
  {
    py::gil_scoped_release release;
    lwe::cuda::host::zx_moments(f32 ? DType::f32 : DType::f64, zp, K, xp, n, d, gamma, Cp, Tp, device);
  }
  return py::make_tuple(C, with_t ? py::object(T) : py::object(py::none()));
}

py::array_t<double> rs_step_host(const py::object& z_o, const py::object& beta_o, const py::object& C_o,
                                 const py::object& T_o, double gamma, double step, double t1_factor, int device) {
  py::array z = checked<double>(z_o, "z", 2);
  const int64_t K = z.shape(0), d = z.shape(1);
  if (K < 1 || d < 1) fail("z must have shape (K, d) with K, d >= 1, got " + lwe::bind::shape_str(z));
  py::array beta = checked<double>(beta_o, "beta", 1), C = checked<double>(C_o, "C", 1), T = checked<double>(T_o, "T", 2);
  expect_dim(beta, "beta", 0, K, "length");
  expect_dim(C, "C", 0, K, "length");
  expect_dim(T, "T", 0, K, "rows");
  expect_dim(T, "T", 1, d, "columns");
  checked_gamma(gamma);
  if (!std::isfinite(step)) fail("step_size must be finite");
  if (!std::isfinite(t1_factor)) fail("t1_factor must be finite");
  py::array_t<double> out({K, d});
  const double *zp = static_cast<const double*>(z.data()), *bp = static_cast<const double*>(beta.data()),
               *Cp = static_cast<const double*>(C.data()), *Tp = static_cast<const double*>(T.data());
  double* op = out.mutable_data();
  py::gil_scoped_release release;
  lwe::cuda::host::rs_step_from_moments(zp, bp, Cp, Tp, K, d, gamma, step, t1_factor, op, device);
  return out;
}

// ------------------------------------------------------------------ benchmark-only helpers
void check_buffer(const py::buffer_info& info, std::size_t nbytes, const char* name) {
  if (static_cast<std::size_t>(info.size * info.itemsize) < nbytes)
    fail(std::string(name) + ": host array holds fewer than nbytes bytes");
}

void register_bench(py::module_& b) {
  using namespace lwe::cuda;
  b.doc() = "Benchmark-only helpers of _cuda (benchmarks/gpu_check.py): raw device memory, events, fills, "
            "ceiling microkernels.";
  b.def("malloc", &raw_malloc, py::arg("nbytes"), py::arg("device") = 0);
  b.def("free", &raw_free, py::arg("ptr"), py::arg("device") = 0);
  b.def("copy_to_device", [](std::uintptr_t dst, py::buffer src, std::size_t nbytes, int device) {
    const py::buffer_info info = src.request();
    check_buffer(info, nbytes, "copy_to_device");
    py::gil_scoped_release release;
    raw_copy_to_device(dst, info.ptr, nbytes, device);
  }, py::arg("dst"), py::arg("src"), py::arg("nbytes"), py::arg("device") = 0);
  b.def("copy_to_host", [](py::buffer dst, std::uintptr_t src, std::size_t nbytes, int device) {
    const py::buffer_info info = dst.request(true);
    check_buffer(info, nbytes, "copy_to_host");
    py::gil_scoped_release release;
    raw_copy_to_host(info.ptr, src, nbytes, device);
  }, py::arg("dst"), py::arg("src"), py::arg("nbytes"), py::arg("device") = 0);
  b.def("memset", &raw_memset, py::arg("ptr"), py::arg("value"), py::arg("nbytes"), py::arg("device") = 0);
  b.def("synchronize", [](int device) { py::gil_scoped_release r; synchronize(device); }, py::arg("device") = 0);
  b.def("fill_uniform", [](const std::string& dtype, std::uintptr_t p, int64_t count, std::uint64_t seed, double lo,
                           double hi, int device, std::uintptr_t stream) {
    fill_uniform(parse_dtype(dtype), as_ptr<void>(p), count, seed, lo, hi, device, as_stream(stream));
  }, py::arg("dtype"), py::arg("ptr"), py::arg("count"), py::arg("seed"), py::arg("lo") = -1.0, py::arg("hi") = 1.0,
        py::arg("device") = 0, py::arg("stream") = 0);
  py::class_<Event>(b, "Event", "A CUDA event on one device (timing without torch).")
      .def(py::init<int>(), py::arg("device") = 0)
      .def("record", &Event::record, py::arg("stream") = 0)
      .def("synchronize", [](Event& e) { py::gil_scoped_release r; e.synchronize(); })
      .def("elapsed_ms", &Event::elapsed_ms, py::arg("end"));
  b.def("bench_exp_rate", [](int device) { py::gil_scoped_release r; return bench_exp_rate(device); },
        py::arg("device") = 0, "float32 __expf evaluations per second (microkernel).");
  b.def("bench_ffma_rate", [](int device) { py::gil_scoped_release r; return bench_ffma_rate(device); },
        py::arg("device") = 0, "float32 FLOP/s of independent FFMA chains (microkernel).");
  b.def("bench_copy_rate", [](int64_t nbytes, int repeats, int device) {
    py::gil_scoped_release r;
    return bench_copy_rate(nbytes, repeats, device);
  }, py::arg("nbytes") = int64_t(1) << 30, py::arg("repeats") = 5, py::arg("device") = 0,
        "device-to-device copy rate, bytes read + written per second.");
}

}  // namespace

void register_nngp_cuda(py::module_& m);  // csrc/bind/nngp_cuda.cpp (image specs)
PYBIND11_MODULE(_cuda, m) {
  register_nngp_cuda(m);
  m.doc() = "lwengine CUDA kernels (raw device-pointer entry points and numpy host entry points; bench: benchmark helpers)";

  m.def("device_count", &lwe::cuda::device_count, "Number of visible CUDA devices (0 without a driver or device).");
  m.def("device_name", [](int device) { return lwe::cuda::device_info(device).name; }, py::arg("device") = 0);
  m.def("device_properties", [](int device) {
    const auto p = lwe::cuda::device_info(device);
    py::dict d;
    d["name"] = p.name;
    d["compute_capability"] = py::make_tuple(p.major, p.minor);
    d["multiprocessors"] = p.multiprocessors;
    d["total_memory_bytes"] = p.total_memory_bytes;
    d["l2_cache_bytes"] = p.l2_cache_bytes;
    d["shared_memory_per_block_optin"] = p.smem_per_block_optin;
    d["shared_memory_per_multiprocessor"] = p.smem_per_multiprocessor;
    d["memory_bus_width_bits"] = p.memory_bus_width_bits;
    if (p.clock_khz) d["clock_khz"] = p.clock_khz;
    if (p.memory_clock_khz) d["memory_clock_khz"] = p.memory_clock_khz;
    return d;
  }, py::arg("device") = 0);
  m.def("build_info", []() {
    const auto b = lwe::cuda::build_info();
    py::dict d;
    d["cuda_runtime_version"] = b.cuda_runtime_version;
    d["nvcc_version"] = std::to_string(b.nvcc_major) + "." + std::to_string(b.nvcc_minor);
    d["archs"] = b.archs;
    d["driver_version"] = b.driver_version;
    return d;
  });

  // ---- raw device-pointer entry points (pointers and streams as integers)
  m.def("cross_inner",
        [](const std::string& dtype, std::uintptr_t q_z, std::uintptr_t q_beta, std::uintptr_t q_offsets, int64_t q_rows,
           int64_t n_q, int64_t q_max_rows, std::uintptr_t z, std::uintptr_t beta, std::uintptr_t offsets, int64_t rows,
           int64_t n_specs, int64_t d, double gamma, std::uintptr_t out, int device, std::uintptr_t stream) {
          py::gil_scoped_release release;
          lwe::cuda::cross_inner(lwe::cuda::parse_dtype(dtype), as_ptr<const void>(q_z), as_ptr<const double>(q_beta),
                                 as_ptr<const int64_t>(q_offsets), q_rows, n_q, q_max_rows, as_ptr<const void>(z),
                                 as_ptr<const double>(beta), as_ptr<const int64_t>(offsets), rows, n_specs, d, gamma,
                                 as_ptr<double>(out), device, as_stream(stream));
        },
        py::arg("dtype"), py::arg("q_z"), py::arg("q_beta"), py::arg("q_offsets"), py::arg("q_rows"), py::arg("n_q"),
        py::arg("q_max_rows"), py::arg("z"), py::arg("beta"), py::arg("offsets"), py::arg("rows"), py::arg("n_specs"),
        py::arg("d"), py::arg("gamma"), py::arg("out"), py::arg("device") = 0, py::arg("stream") = 0,
        "out (n_q, n_specs) float64 <- cross inner products; all pointers are device addresses.");
  m.def("self_inner",
        [](const std::string& dtype, std::uintptr_t z, std::uintptr_t beta, std::uintptr_t offsets, int64_t rows,
           int64_t n_specs, int64_t max_rows, int64_t d, double gamma, std::uintptr_t out, int device,
           std::uintptr_t stream) {
          py::gil_scoped_release release;
          lwe::cuda::self_inner(lwe::cuda::parse_dtype(dtype), as_ptr<const void>(z), as_ptr<const double>(beta),
                                as_ptr<const int64_t>(offsets), rows, n_specs, max_rows, d, gamma, as_ptr<double>(out),
                                device, as_stream(stream));
        },
        py::arg("dtype"), py::arg("z"), py::arg("beta"), py::arg("offsets"), py::arg("rows"), py::arg("n_specs"),
        py::arg("max_rows"), py::arg("d"), py::arg("gamma"), py::arg("out"), py::arg("device") = 0,
        py::arg("stream") = 0);
  m.def("gram",
        [](const std::string& dtype, std::uintptr_t z, std::uintptr_t beta, std::uintptr_t offsets, int64_t rows,
           int64_t n_specs, int64_t max_rows, int64_t d, double gamma, std::uintptr_t out, int device,
           std::uintptr_t stream) {
          py::gil_scoped_release release;
          lwe::cuda::gram(lwe::cuda::parse_dtype(dtype), as_ptr<const void>(z), as_ptr<const double>(beta),
                          as_ptr<const int64_t>(offsets), rows, n_specs, max_rows, d, gamma, as_ptr<double>(out), device,
                          as_stream(stream));
        },
        py::arg("dtype"), py::arg("z"), py::arg("beta"), py::arg("offsets"), py::arg("rows"), py::arg("n_specs"),
        py::arg("max_rows"), py::arg("d"), py::arg("gamma"), py::arg("out"), py::arg("device") = 0,
        py::arg("stream") = 0);
  m.def("zx_moments",
        [](const std::string& x_dtype, std::uintptr_t z, int64_t K, std::uintptr_t x, int64_t n, int64_t d, double gamma,
           std::uintptr_t C, std::uintptr_t T, int device, std::uintptr_t stream) {
          py::gil_scoped_release release;
          lwe::cuda::zx_moments(lwe::cuda::parse_dtype(x_dtype), as_ptr<const double>(z), K, as_ptr<const void>(x), n,
                                d, gamma, as_ptr<double>(C), as_ptr<double>(T), device, as_stream(stream));
        },
        py::arg("x_dtype"), py::arg("z"), py::arg("K"), py::arg("x"), py::arg("n"), py::arg("d"), py::arg("gamma"),
        py::arg("C"), py::arg("T"), py::arg("device") = 0, py::arg("stream") = 0,
        "C (K,), T (K, d) float64 <- moments of float64 z against x; T = 0 skips T.");
  m.def("rs_step_from_moments",
        [](std::uintptr_t z, std::uintptr_t beta, std::uintptr_t C, std::uintptr_t T, int64_t K, int64_t d, double gamma,
           double step, double t1_factor, std::uintptr_t out, int device, std::uintptr_t stream) {
          py::gil_scoped_release release;
          lwe::cuda::rs_step_from_moments(as_ptr<const double>(z), as_ptr<const double>(beta), as_ptr<const double>(C),
                                          as_ptr<const double>(T), K, d, gamma, step, t1_factor, as_ptr<double>(out),
                                          device, as_stream(stream));
        },
        py::arg("z"), py::arg("beta"), py::arg("C"), py::arg("T"), py::arg("K"), py::arg("d"), py::arg("gamma"),
        py::arg("step"), py::arg("t1_factor"), py::arg("out"), py::arg("device") = 0, py::arg("stream") = 0);

  // ---- host (numpy) entry points
  m.def("cross_inner_host", &cross_inner_host, py::arg("q_z"), py::arg("q_beta"), py::arg("q_offsets"), py::arg("z"),
        py::arg("beta"), py::arg("offsets"), py::arg("gamma"), py::arg("device") = 0);
  m.def("self_inner_host", &store_op_host<false>, py::arg("z"), py::arg("beta"), py::arg("offsets"), py::arg("gamma"),
        py::arg("device") = 0);
  m.def("gram_host", &store_op_host<true>, py::arg("z"), py::arg("beta"), py::arg("offsets"), py::arg("gamma"),
        py::arg("device") = 0);
  m.def("zx_moments_host", &zx_moments_host, py::arg("z"), py::arg("x"), py::arg("gamma"), py::arg("with_t") = true,
        py::arg("device") = 0);
  m.def("rs_step_from_moments_host", &rs_step_host, py::arg("z"), py::arg("beta"), py::arg("C"), py::arg("T"),
        py::arg("gamma"), py::arg("step"), py::arg("t1_factor"), py::arg("device") = 0);

  // ---- benchmark-only helpers (benchmarks/gpu_check.py), out of the main module's face
  py::module_ bench = m.def_submodule("bench");
  register_bench(bench);
}
