// Argument checks shared by both bindings (_core: module.cpp, _cuda: module_cuda.cpp), with the
// rules of lwengine/validate.py: a value that is not a numpy array, or has the wrong dtype, is a
// TypeError; a wrong number of dimensions, shape, layout, CSR offsets or gamma is a ValueError.
// Messages name the argument, what was expected and what was received.  The bindings never copy or
// convert, so outputs are written in place and nothing reachable from Python can crash.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>

namespace lwe::bind {

namespace py = pybind11;
using index_t = std::int64_t;

[[noreturn]] inline void fail(const std::string& msg) { throw py::value_error(msg); }
[[noreturn]] inline void fail_type(const std::string& msg) { throw py::type_error(msg); }

inline std::string shape_str(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

template <class T>
const char* dtype_name() {
  if (std::is_same<T, float>::value) return "float32";
  if (std::is_same<T, double>::value) return "float64";
  return "int64";
}

// The object as a numpy array (TypeError otherwise).
inline py::array as_array(const py::object& obj, const std::string& name) {
  if (!py::isinstance<py::array>(obj))
    fail_type(name + " must be a numpy array, got " + std::string(py::str(py::type::handle_of(obj).attr("__name__"))));
  return py::reinterpret_borrow<py::array>(obj);
}

// The object as a C-contiguous, aligned array of dtype T with `ndim` dimensions (writeable if `out`).
template <class T>
py::array checked(const py::object& obj, const std::string& name, int ndim, bool out = false) {
  py::array a = as_array(obj, name);
  if (!py::isinstance<py::array_t<T>>(a))
    fail_type(name + " must have dtype " + dtype_name<T>() + ", got " + std::string(py::str(a.dtype())));
  if (a.ndim() != ndim)
    fail(name + " must be " + std::to_string(ndim) + "-dimensional, got shape " + shape_str(a));
  if (!(a.flags() & py::array::c_style) || !(a.flags() & py::detail::npy_api::NPY_ARRAY_ALIGNED_))
    fail(name + " must be C-contiguous and aligned");
  if (out && !a.writeable()) fail(name + " must be writeable");
  return a;
}

inline void expect_dim(const py::array& a, const std::string& name, int axis, py::ssize_t want, const char* what) {
  if (a.shape(axis) != want)
    fail(name + " must have " + what + " = " + std::to_string(want) + ", got shape " + shape_str(a));
}

// CSR offsets: int64, length >= 1, offsets[0] == 0, non-decreasing, offsets[-1] == rows.
// Returns the pointer; *max_rows (if given) receives the largest segment.
inline const index_t* checked_offsets(const py::object& obj, const std::string& name, index_t rows,
                                      index_t* max_rows = nullptr) {
  py::array a = checked<std::int64_t>(obj, name, 1);
  const auto* o = static_cast<const index_t*>(a.data());
  const index_t len = a.shape(0);
  bool ok = len >= 1 && o[0] == 0 && o[len - 1] == rows;
  index_t mx = 0;
  for (index_t i = 0; ok && i + 1 < len; ++i) {
    ok = o[i] <= o[i + 1];
    if (o[i + 1] - o[i] > mx) mx = o[i + 1] - o[i];
  }
  if (!ok)
    fail(name + " must be non-decreasing int64 offsets from 0 to the number of rows (" + std::to_string(rows) + ")");
  if (max_rows) *max_rows = mx;
  return o;
}

inline double checked_gamma(double gamma) {
  if (!std::isfinite(gamma) || gamma <= 0) fail("gamma must be a finite positive number, got " + std::to_string(gamma));
  return gamma;
}

// Which of float32 / float64 the points array `obj` holds (TypeError for anything else).
// Returns true for float32.
inline bool points_are_f32(const py::object& obj, const std::string& name) {
  py::array a = as_array(obj, name);
  if (py::isinstance<py::array_t<float>>(a)) return true;
  if (py::isinstance<py::array_t<double>>(a)) return false;
  fail_type(name + " must have dtype float32 or float64, got " + std::string(py::str(a.dtype())));
}

inline void check_finite(const double* p, index_t count, const std::string& name) {
  for (index_t i = 0; i < count; ++i)
    if (!std::isfinite(p[i])) fail(name + " must be finite");
}

}  // namespace lwe::bind
