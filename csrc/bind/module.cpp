// _core: thin pybind11 bindings of the CPU kernels (csrc/cpu). Filled in by the kernel work.
#include <pybind11/pybind11.h>

namespace py = pybind11;

PYBIND11_MODULE(_core, m) {
  m.doc() = "lwengine CPU kernels";
#ifdef LWE_VERSION_INFO
  m.attr("__version__") = LWE_VERSION_INFO;
#endif
#ifdef LWE_HAVE_OPENMP
  m.attr("has_openmp") = true;
#else
  m.attr("has_openmp") = false;
#endif
}
