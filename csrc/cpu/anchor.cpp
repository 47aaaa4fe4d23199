// placeholder so the static library is never empty
namespace lwe { int cpu_library_anchor = 0; }
