// _core bindings of the ConvNet-NNGP kernel (csrc/cpu/nngp_ops.h); registered by module.cpp.
// Arrays are checked here (dtype, C-contiguity, shapes, writeable outputs); bad ones raise ValueError.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "../cpu/nngp_ops.h"
#include "../cpu/nngp_rng.h"
#include "lwengine/kernels/nngp.h"

namespace py = pybind11;
using lwe::index_t;

namespace {

[[noreturn]] void fail(const std::string& msg) { throw py::value_error(msg); }

template <class T>
py::array_t<T> arr(const py::object& o, const char* name, int ndim, bool out) {
  if (!py::isinstance<py::array_t<T>>(o)) fail(std::string(name) + " must be a numpy array of the kernel's dtype");
  auto a = py::reinterpret_borrow<py::array_t<T>>(o);
  if (a.ndim() != ndim) fail(std::string(name) + " must be " + std::to_string(ndim) + "-dimensional");
  if (!(a.flags() & py::array::c_style)) fail(std::string(name) + " must be C-contiguous");
  if (out && !a.writeable()) fail(std::string(name) + " must be writeable");
  return a;
}

int checked_depth(int depth) {
  if (depth < 1 || depth > lwe::nngp::kMaxDepth) fail("depth must be in 1..5, got " + std::to_string(depth));
  return depth;
}

void check_images(const py::array& x, const char* name) {
  if (x.shape(1) < 1 || x.shape(2) != lwe::nngp::kWidth || x.shape(3) != lwe::nngp::kWidth)
    fail(std::string(name) + " must have shape (N, C, 32, 32) with C >= 1");
}

template <class T>
void prep_t(const py::object& x_o, int depth, const py::object& prep_o, const py::object& self_o) {
  depth = checked_depth(depth);
  auto x = arr<T>(x_o, "x", 4, false);
  check_images(x, "x");
  auto prep = arr<T>(prep_o, "prep", 2, true);
  auto self = arr<T>(self_o, "self", 1, true);
  const index_t N = x.shape(0), C = x.shape(1);
  if (prep.shape(0) != N || prep.shape(1) != lwe::nngp::prep_len(depth))
    fail("prep must have shape (N, prep_len(depth)) = (" + std::to_string(N) + ", " +
         std::to_string(lwe::nngp::prep_len(depth)) + ")");
  if (self.shape(0) != N) fail("self must have length N");
  const T* xp = x.data();
  T* pp = prep.mutable_data();
  T* sp = self.mutable_data();
  py::gil_scoped_release release;
  lwe::nngp_prep(xp, N, C, depth, pp, sp);
}

template <class T>
void cross_t(const py::object& x_o, const py::object& px_o, const py::object& y_o, const py::object& py_o, int depth,
             const py::object& self_o, const py::object& out_o) {
  depth = checked_depth(depth);
  auto x = arr<T>(x_o, "x", 4, false);
  auto y = arr<T>(y_o, "y", 4, false);
  check_images(x, "x");
  check_images(y, "y");
  if (x.shape(1) != y.shape(1)) fail("x and y must have the same channel count");
  auto px = arr<T>(px_o, "prep_x", 2, false);
  auto pyy = arr<T>(py_o, "prep_y", 2, false);
  auto out = arr<T>(out_o, "out", 2, true);
  const index_t N1 = x.shape(0), N2 = y.shape(0), C = x.shape(1);
  const index_t plen = lwe::nngp::prep_len(depth);
  if (px.shape(0) != N1 || px.shape(1) != plen) fail("prep_x must have shape (N1, prep_len(depth))");
  if (pyy.shape(0) != N2 || pyy.shape(1) != plen) fail("prep_y must have shape (N2, prep_len(depth))");
  if (out.shape(0) != N1 || out.shape(1) != N2) fail("out must have shape (N1, N2)");
  const T* sp = nullptr;
  py::array_t<T> self;
  if (!self_o.is_none()) {
    self = arr<T>(self_o, "self", 1, false);
    if (N1 != N2 || self.shape(0) != N1) fail("self needs x == y (N1 == N2) and length N1");
    sp = self.data();
  }
  const T *xp = x.data(), *yp = y.data(), *pxp = px.data(), *pyp = pyy.data();
  T* op = out.mutable_data();
  py::gil_scoped_release release;
  lwe::nngp_cross(xp, pxp, N1, yp, pyp, N2, C, depth, sp, op);
}

// key: the (624,) uint32 state of a numpy MT19937, updated in place; returns the new pos.
template <void (*Skip)(uint32_t*, int*, uint64_t)>
int mt_skip_t(const py::object& key_o, int pos, long long n) {
  auto key = arr<uint32_t>(key_o, "key", 1, true);
  if (key.shape(0) != 624) fail("key must have length 624");
  if (pos < 0 || pos > 624) fail("pos must be in 0..624, got " + std::to_string(pos));
  if (n < 0) fail("n must be >= 0");
  uint32_t* kp = key.mutable_data();
  py::gil_scoped_release release;
  Skip(kp, &pos, static_cast<uint64_t>(n));
  return pos;
}

}  // namespace

void register_nngp(py::module_& m) {
  m.def("nngp_prep_f32", &prep_t<float>, py::arg("x"), py::arg("depth"), py::arg("prep"), py::arg("self"));
  m.def("nngp_prep_f64", &prep_t<double>, py::arg("x"), py::arg("depth"), py::arg("prep"), py::arg("self"));
  m.def("nngp_cross_f32", &cross_t<float>, py::arg("x"), py::arg("prep_x"), py::arg("y"), py::arg("prep_y"),
        py::arg("depth"), py::arg("self"), py::arg("out"));
  m.def("nngp_cross_f64", &cross_t<double>, py::arg("x"), py::arg("prep_x"), py::arg("y"), py::arg("prep_y"),
        py::arg("depth"), py::arg("self"), py::arg("out"));
  m.def("mt19937_skip_words", &mt_skip_t<lwe::mt19937_skip_words>, py::arg("key"), py::arg("pos"), py::arg("n"));
  m.def("mt19937_skip_gauss_pairs", &mt_skip_t<lwe::mt19937_skip_gauss_pairs>, py::arg("key"), py::arg("pos"),
        py::arg("n"));
  m.attr("nngp_prep_len") = py::cpp_function([](int depth) { return lwe::nngp::prep_len(checked_depth(depth)); });
}
