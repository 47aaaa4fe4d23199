// _cuda: thin pybind11 bindings of the CUDA kernels (csrc/cuda/launch.h).
//
// Two layers: raw entry points on device pointers passed as integers (works with torch CUDA
// tensors via tensor.data_ptr(), a stream handle as an integer, 0 = default stream) and host
// convenience entry points (*_host) taking numpy arrays, which copy in, run, and copy out.  The
// host path poisons its device outputs with NaN bytes first, so an unwritten element cannot pass.
// CUDA failures raise RuntimeError naming the operation; bad sizes raise ValueError.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <vector>

#include "../cuda/check.h"
#include "../cuda/launch.h"

namespace py = pybind11;
using lwe::cuda::DType;
using std::int64_t;

namespace {

template <class P>
P* as_ptr(std::uintptr_t p) { return reinterpret_cast<P*>(p); }
cudaStream_t as_stream(std::uintptr_t s) { return reinterpret_cast<cudaStream_t>(s); }

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();  // no driver / no device: report 0, never raise
    return 0;
  }
  return n;
}

// ------------------------------------------------------------------ device buffers (host path)
class DeviceBuffer {
 public:
  DeviceBuffer(std::size_t bytes, const char* what) : bytes_(bytes) {
    if (bytes_) LWE_CUDA_CHECK(cudaMalloc(&ptr_, bytes_), what);
  }
  ~DeviceBuffer() {
    if (ptr_) cudaFree(ptr_);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  template <class T = void>
  T* get() const { return static_cast<T*>(ptr_); }
  void upload(const void* src, const char* what) {
    if (bytes_) LWE_CUDA_CHECK(cudaMemcpy(ptr_, src, bytes_, cudaMemcpyHostToDevice), what);
  }
  void download(void* dst, const char* what) const {
    if (bytes_) LWE_CUDA_CHECK(cudaMemcpy(dst, ptr_, bytes_, cudaMemcpyDeviceToHost), what);
  }
  void poison(const char* what) {
    if (bytes_) LWE_CUDA_CHECK(cudaMemset(ptr_, 0xFF, bytes_), what);  // all-ones bytes: NaN
  }

 private:
  void* ptr_ = nullptr;
  std::size_t bytes_;
};

std::string shape_str(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

template <class T>
void require(const py::array& a, const std::string& name, int ndim) {
  if (!py::isinstance<py::array_t<T>>(a) || !(a.flags() & py::array::c_style))
    throw py::type_error(name + " must be a C-contiguous " + py::str(py::dtype::of<T>()).cast<std::string>() +
                         " array, got dtype " + py::str(a.dtype()).cast<std::string>());
  if (a.ndim() != ndim)
    throw py::value_error(name + " must have " + std::to_string(ndim) + " dimension(s), got shape " + shape_str(a));
}

DType points_dtype(const py::array& z, const std::string& name) {
  if (py::isinstance<py::array_t<float>>(z)) { require<float>(z, name, 2); return DType::f32; }
  if (py::isinstance<py::array_t<double>>(z)) { require<double>(z, name, 2); return DType::f64; }
  throw py::type_error(name + " must be float32 or float64, got " + py::str(z.dtype()).cast<std::string>());
}

struct Store {
  DType dt;
  int64_t rows, d, n_specs, max_rows;
};

// Validates a packed store (z, beta, offsets) on the host; returns its sizes.
Store check_store(const py::array& z, const py::array& beta, const py::array& offsets, const std::string& p) {
  Store s{};
  s.dt = points_dtype(z, p + "z");
  require<double>(beta, p + "beta", 1);
  require<int64_t>(offsets, p + "offsets", 1);
  s.rows = z.shape(0);
  s.d = z.shape(1);
  if (s.d < 1) throw py::value_error(p + "z must have at least one column, got shape " + shape_str(z));
  if (beta.shape(0) != s.rows)
    throw py::value_error(p + "beta must have length " + std::to_string(s.rows) + ", got " + std::to_string(beta.shape(0)));
  const int64_t n1 = offsets.shape(0);
  if (n1 < 1) throw py::value_error(p + "offsets must have at least one entry");
  const int64_t* o = static_cast<const int64_t*>(offsets.data());
  if (o[0] != 0 || o[n1 - 1] != s.rows)
    throw py::value_error(p + "offsets must run from 0 to the number of rows (" + std::to_string(s.rows) + ")");
  s.max_rows = 0;
  for (int64_t i = 0; i + 1 < n1; ++i) {
    if (o[i + 1] < o[i]) throw py::value_error(p + "offsets must be non-decreasing (at index " + std::to_string(i) + ")");
    s.max_rows = std::max<int64_t>(s.max_rows, o[i + 1] - o[i]);
  }
  s.n_specs = n1 - 1;
  return s;
}

py::array_t<double> cross_inner_host(const py::array& q_z, const py::array& q_beta, const py::array& q_offsets,
                                     const py::array& z, const py::array& beta, const py::array& offsets, double gamma,
                                     int device) {
  const Store q = check_store(q_z, q_beta, q_offsets, "q_");
  const Store s = check_store(z, beta, offsets, "");
  if (q.dt != s.dt) throw py::type_error("q_z and z must have the same dtype");
  if (q.d != s.d) throw py::value_error("q_z has dimension " + std::to_string(q.d) + " but z has dimension " + std::to_string(s.d));
  py::array_t<double> out({q.n_specs, s.n_specs});
  const std::size_t es = lwe::cuda::dtype_size(s.dt);
  {
    py::gil_scoped_release release;
    lwe::cuda::DeviceGuard guard(device);
    DeviceBuffer dqz(q.rows * q.d * es, "cross_inner (cudaMalloc)"), dqb(q.rows * 8, "cross_inner (cudaMalloc)"),
        dqo((q.n_specs + 1) * 8, "cross_inner (cudaMalloc)"), dz(s.rows * s.d * es, "cross_inner (cudaMalloc)"),
        db(s.rows * 8, "cross_inner (cudaMalloc)"), doff((s.n_specs + 1) * 8, "cross_inner (cudaMalloc)"),
        dout(q.n_specs * s.n_specs * 8, "cross_inner (cudaMalloc)");
    dqz.upload(q_z.data(), "cross_inner (copy in)");
    dqb.upload(q_beta.data(), "cross_inner (copy in)");
    dqo.upload(q_offsets.data(), "cross_inner (copy in)");
    dz.upload(z.data(), "cross_inner (copy in)");
    db.upload(beta.data(), "cross_inner (copy in)");
    doff.upload(offsets.data(), "cross_inner (copy in)");
    dout.poison("cross_inner (poison)");
    lwe::cuda::cross_inner(s.dt, dqz.get(), dqb.get<double>(), dqo.get<int64_t>(), q.rows, q.n_specs, q.max_rows,
                           dz.get(), db.get<double>(), doff.get<int64_t>(), s.rows, s.n_specs, s.d, gamma,
                           dout.get<double>(), device, nullptr);
    LWE_CUDA_CHECK(cudaDeviceSynchronize(), "cross_inner");
    dout.download(out.mutable_data(), "cross_inner (copy out)");
  }
  return out;
}

template <bool GRAM>
py::array_t<double> store_op_host(const py::array& z, const py::array& beta, const py::array& offsets, double gamma,
                                  int device) {
  const char* name = GRAM ? "gram" : "self_inner";
  const Store s = check_store(z, beta, offsets, "");
  py::array_t<double> out = GRAM ? py::array_t<double>({s.n_specs, s.n_specs}) : py::array_t<double>(s.n_specs);
  const std::size_t es = lwe::cuda::dtype_size(s.dt);
  {
    py::gil_scoped_release release;
    lwe::cuda::DeviceGuard guard(device);
    DeviceBuffer dz(s.rows * s.d * es, name), db(s.rows * 8, name), doff((s.n_specs + 1) * 8, name),
        dout((GRAM ? s.n_specs * s.n_specs : s.n_specs) * 8, name);
    dz.upload(z.data(), name);
    db.upload(beta.data(), name);
    doff.upload(offsets.data(), name);
    dout.poison(name);
    if (GRAM)
      lwe::cuda::gram(s.dt, dz.get(), db.get<double>(), doff.get<int64_t>(), s.rows, s.n_specs, s.max_rows, s.d, gamma,
                      dout.get<double>(), device, nullptr);
    else
      lwe::cuda::self_inner(s.dt, dz.get(), db.get<double>(), doff.get<int64_t>(), s.rows, s.n_specs, s.max_rows, s.d,
                            gamma, dout.get<double>(), device, nullptr);
    LWE_CUDA_CHECK(cudaDeviceSynchronize(), name);
    dout.download(out.mutable_data(), name);
  }
  return out;
}

py::tuple zx_moments_host(const py::array& z, const py::array& x, double gamma, bool with_t, int device) {
  require<double>(z, "z", 2);
  const DType xt = points_dtype(x, "x");
  const int64_t K = z.shape(0), d = z.shape(1), n = x.shape(0);
  if (K < 1) throw py::value_error("z must have at least one row, got shape " + shape_str(z));
  if (n < 1) throw py::value_error("x must have at least one row, got 0");
  if (x.shape(1) != d)
    throw py::value_error("z has dimension " + std::to_string(d) + " but x has dimension " + std::to_string(x.shape(1)));
  py::array_t<double> C(K);
  py::object T = py::none();
  py::array_t<double> Tarr;
  if (with_t) {
    Tarr = py::array_t<double>({K, d});
    T = Tarr;
  }
  {
    py::gil_scoped_release release;
    lwe::cuda::DeviceGuard guard(device);
    DeviceBuffer dz(K * d * 8, "zx_moments"), dx(n * d * lwe::cuda::dtype_size(xt), "zx_moments"),
        dC(K * 8, "zx_moments"), dT(with_t ? K * d * 8 : 0, "zx_moments");
    dz.upload(z.data(), "zx_moments (copy in)");
    dx.upload(x.data(), "zx_moments (copy in)");
    dC.poison("zx_moments (poison)");
    dT.poison("zx_moments (poison)");
    lwe::cuda::zx_moments(xt, dz.get<double>(), K, dx.get(), n, d, gamma, dC.get<double>(),
                          with_t ? dT.get<double>() : nullptr, device, nullptr);
    LWE_CUDA_CHECK(cudaDeviceSynchronize(), "zx_moments");
    dC.download(C.mutable_data(), "zx_moments (copy out)");
    if (with_t) dT.download(Tarr.mutable_data(), "zx_moments (copy out)");
  }
  return py::make_tuple(C, T);
}

py::array_t<double> rs_step_host(const py::array& z, const py::array& beta, const py::array& C, const py::array& T,
                                 double gamma, double step, double t1_factor, int device) {
  require<double>(z, "z", 2);
  require<double>(beta, "beta", 1);
  require<double>(C, "C", 1);
  require<double>(T, "T", 2);
  const int64_t K = z.shape(0), d = z.shape(1);
  if (K < 1 || d < 1) throw py::value_error("z must have shape (K, d) with K, d >= 1, got " + shape_str(z));
  if (beta.shape(0) != K) throw py::value_error("beta must have length " + std::to_string(K));
  if (C.shape(0) != K) throw py::value_error("C must have length " + std::to_string(K));
  if (T.shape(0) != K || T.shape(1) != d) throw py::value_error("T must have shape " + shape_str(z) + ", got " + shape_str(T));
  py::array_t<double> out({K, d});
  {
    py::gil_scoped_release release;
    lwe::cuda::DeviceGuard guard(device);
    const char* name = "rs_step_from_moments";
    DeviceBuffer dz(K * d * 8, name), db(K * 8, name), dC(K * 8, name), dT(K * d * 8, name), dout(K * d * 8, name);
    dz.upload(z.data(), name);
    db.upload(beta.data(), name);
    dC.upload(C.data(), name);
    dT.upload(T.data(), name);
    dout.poison(name);
    lwe::cuda::rs_step_from_moments(dz.get<double>(), db.get<double>(), dC.get<double>(), dT.get<double>(), K, d, gamma,
                                    step, t1_factor, dout.get<double>(), device, nullptr);
    LWE_CUDA_CHECK(cudaDeviceSynchronize(), name);
    dout.download(out.mutable_data(), name);
  }
  return out;
}

// ------------------------------------------------------------------ events (timing without torch)
class Event {
 public:
  explicit Event(int device) : device_(device) {
    lwe::cuda::DeviceGuard guard(device_);
    LWE_CUDA_CHECK(cudaEventCreate(&ev_), "cudaEventCreate");
  }
  ~Event() {
    if (ev_) cudaEventDestroy(ev_);
  }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  void record(std::uintptr_t stream) {
    lwe::cuda::DeviceGuard guard(device_);
    LWE_CUDA_CHECK(cudaEventRecord(ev_, as_stream(stream)), "cudaEventRecord");
  }
  void synchronize() {
    py::gil_scoped_release release;
    LWE_CUDA_CHECK(cudaEventSynchronize(ev_), "cudaEventSynchronize");
  }
  float elapsed_ms(const Event& end) const {
    float ms = 0.f;
    LWE_CUDA_CHECK(cudaEventElapsedTime(&ms, ev_, end.ev_), "cudaEventElapsedTime");
    return ms;
  }

 private:
  int device_;
  cudaEvent_t ev_ = nullptr;
};

void check_buffer(const py::buffer_info& info, std::size_t nbytes, const char* name) {
  if (static_cast<std::size_t>(info.size * info.itemsize) < nbytes)
    throw py::value_error(std::string(name) + ": host array holds fewer than nbytes bytes");
}

}  // namespace

void register_nngp_cuda(py::module_& m);  // csrc/bind/nngp_cuda.cpp (image specs)
PYBIND11_MODULE(_cuda, m) {
  register_nngp_cuda(m);
  m.doc() = "lwengine CUDA kernels (raw device-pointer entry points and numpy host entry points)";

  m.def("device_count", &device_count, "Number of visible CUDA devices (0 without a driver or device).");
  m.def("device_name", [](int device) {
    cudaDeviceProp p{};
    LWE_CUDA_CHECK(cudaGetDeviceProperties(&p, device), "cudaGetDeviceProperties");
    return std::string(p.name);
  }, py::arg("device") = 0);
  m.def("device_properties", [](int device) {
    cudaDeviceProp p{};
    LWE_CUDA_CHECK(cudaGetDeviceProperties(&p, device), "cudaGetDeviceProperties");
    py::dict d;
    d["name"] = std::string(p.name);
    d["compute_capability"] = py::make_tuple(p.major, p.minor);
    d["multiprocessors"] = p.multiProcessorCount;
    d["total_memory_bytes"] = static_cast<std::uint64_t>(p.totalGlobalMem);
    d["l2_cache_bytes"] = p.l2CacheSize;
    d["shared_memory_per_block_optin"] = static_cast<std::uint64_t>(p.sharedMemPerBlockOptin);
    d["shared_memory_per_multiprocessor"] = static_cast<std::uint64_t>(p.sharedMemPerMultiprocessor);
    d["memory_bus_width_bits"] = p.memoryBusWidth;
    int clock_khz = 0, mem_clock_khz = 0;
    if (cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, device) == cudaSuccess) d["clock_khz"] = clock_khz;
    if (cudaDeviceGetAttribute(&mem_clock_khz, cudaDevAttrMemoryClockRate, device) == cudaSuccess)
      d["memory_clock_khz"] = mem_clock_khz;
    (void)cudaGetLastError();
    return d;
  }, py::arg("device") = 0);
  m.def("build_info", []() {
    const auto b = lwe::cuda::build_info();
    py::dict d;
    d["cuda_runtime_version"] = b.cuda_runtime_version;
    d["nvcc_version"] = std::to_string(b.nvcc_major) + "." + std::to_string(b.nvcc_minor);
    d["archs"] = b.archs;
    int driver = 0;
    d["driver_version"] = cudaDriverGetVersion(&driver) == cudaSuccess ? driver : 0;
    (void)cudaGetLastError();
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

  // ---- device memory, events and microbenchmarks (used by benchmarks/gpu_check.py without torch)
  m.def("malloc", [](std::size_t nbytes, int device) {
    lwe::cuda::DeviceGuard guard(device);
    void* p = nullptr;
    LWE_CUDA_CHECK(cudaMalloc(&p, nbytes ? nbytes : 1), "cudaMalloc");
    return reinterpret_cast<std::uintptr_t>(p);
  }, py::arg("nbytes"), py::arg("device") = 0);
  m.def("free", [](std::uintptr_t p, int device) {
    lwe::cuda::DeviceGuard guard(device);
    LWE_CUDA_CHECK(cudaFree(as_ptr<void>(p)), "cudaFree");
  }, py::arg("ptr"), py::arg("device") = 0);
  m.def("copy_to_device", [](std::uintptr_t dst, py::buffer src, std::size_t nbytes, int device) {
    const py::buffer_info info = src.request();
    check_buffer(info, nbytes, "copy_to_device");
    py::gil_scoped_release release;
    lwe::cuda::DeviceGuard guard(device);
    LWE_CUDA_CHECK(cudaMemcpy(as_ptr<void>(dst), info.ptr, nbytes, cudaMemcpyHostToDevice), "copy_to_device");
  }, py::arg("dst"), py::arg("src"), py::arg("nbytes"), py::arg("device") = 0);
  m.def("copy_to_host", [](py::buffer dst, std::uintptr_t src, std::size_t nbytes, int device) {
    const py::buffer_info info = dst.request(true);
    check_buffer(info, nbytes, "copy_to_host");
    py::gil_scoped_release release;
    lwe::cuda::DeviceGuard guard(device);
    LWE_CUDA_CHECK(cudaMemcpy(info.ptr, as_ptr<void>(src), nbytes, cudaMemcpyDeviceToHost), "copy_to_host");
  }, py::arg("dst"), py::arg("src"), py::arg("nbytes"), py::arg("device") = 0);
  m.def("memset", [](std::uintptr_t p, int value, std::size_t nbytes, int device) {
    lwe::cuda::DeviceGuard guard(device);
    LWE_CUDA_CHECK(cudaMemset(as_ptr<void>(p), value, nbytes), "cudaMemset");
  }, py::arg("ptr"), py::arg("value"), py::arg("nbytes"), py::arg("device") = 0);
  m.def("synchronize", [](int device) {
    py::gil_scoped_release release;
    lwe::cuda::DeviceGuard guard(device);
    LWE_CUDA_CHECK(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  }, py::arg("device") = 0);
  m.def("fill_uniform", [](const std::string& dtype, std::uintptr_t p, int64_t count, std::uint64_t seed, double lo,
                           double hi, int device, std::uintptr_t stream) {
    lwe::cuda::fill_uniform(lwe::cuda::parse_dtype(dtype), as_ptr<void>(p), count, seed, lo, hi, device,
                            as_stream(stream));
  }, py::arg("dtype"), py::arg("ptr"), py::arg("count"), py::arg("seed"), py::arg("lo") = -1.0, py::arg("hi") = 1.0,
        py::arg("device") = 0, py::arg("stream") = 0);
  py::class_<Event>(m, "Event", "A CUDA event on one device (timing without torch).")
      .def(py::init<int>(), py::arg("device") = 0)
      .def("record", &Event::record, py::arg("stream") = 0)
      .def("synchronize", &Event::synchronize)
      .def("elapsed_ms", &Event::elapsed_ms, py::arg("end"));
  m.def("bench_exp_rate", [](int device) { py::gil_scoped_release r; return lwe::cuda::bench_exp_rate(device); },
        py::arg("device") = 0, "float32 __expf evaluations per second (microkernel).");
  m.def("bench_ffma_rate", [](int device) { py::gil_scoped_release r; return lwe::cuda::bench_ffma_rate(device); },
        py::arg("device") = 0, "float32 FLOP/s of independent FFMA chains (microkernel).");
  m.def("bench_copy_rate", [](int64_t nbytes, int repeats, int device) {
    py::gil_scoped_release r;
    return lwe::cuda::bench_copy_rate(nbytes, repeats, device);
  }, py::arg("nbytes") = int64_t(1) << 30, py::arg("repeats") = 5, py::arg("device") = 0,
        "device-to-device copy rate, bytes read + written per second.");
}
