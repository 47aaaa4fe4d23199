// _core: thin pybind11 bindings of the CPU kernels (compute lives in csrc/cpu).
//
// Every array argument is checked with the shared rules of array_checks.h (TypeError for a wrong
// type or dtype, ValueError for shapes, layout, offsets, values) before the kernel is entered.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "../cpu/ops.h"
#include "array_checks.h"

namespace py = pybind11;
using lwe::index_t;

namespace {

using lwe::bind::check_finite;
using lwe::bind::checked;
using lwe::bind::checked_gamma;
using lwe::bind::checked_offsets;
using lwe::bind::expect_dim;
using lwe::bind::fail;
using lwe::bind::fail_type;
using lwe::bind::points_are_f32;

// ------------------------------------------------------------------ inner products
template <class T>
void cross_inner_t(const py::object& q_z_o, const py::object& q_beta_o, const py::object& q_off_o,
                   const py::object& z_o, const py::object& beta_o, const py::object& off_o, double gamma,
                   const py::object& out_o, const py::object& specs_o) {
  py::array q_z = checked<T>(q_z_o, "q_z", 2), z = checked<T>(z_o, "z", 2);
  const index_t Mq = q_z.shape(0), M = z.shape(0), d = z.shape(1);
  if (q_z.shape(1) != d)
    fail("q_z has dimension " + std::to_string(q_z.shape(1)) + " but z has dimension " + std::to_string(d));
  py::array q_beta = checked<double>(q_beta_o, "q_beta", 1), beta = checked<double>(beta_o, "beta", 1);
  expect_dim(q_beta, "q_beta", 0, Mq, "length");
  expect_dim(beta, "beta", 0, M, "length");
  const index_t* qo = checked_offsets(q_off_o, "q_offsets", Mq);
  const index_t* o = checked_offsets(off_o, "offsets", M);
  const index_t Q = py::reinterpret_borrow<py::array>(q_off_o).shape(0) - 1;
  const index_t Nstore = py::reinterpret_borrow<py::array>(off_o).shape(0) - 1;
  const index_t* sel = nullptr;
  index_t N = Nstore;
  py::array specs;
  if (!specs_o.is_none()) {  // a subset of the store's specs, by index, scanned in place
    specs = checked<std::int64_t>(specs_o, "specs", 1);
    sel = static_cast<const index_t*>(specs.data());
    N = specs.shape(0);
    for (index_t i = 0; i < N; ++i)
      if (sel[i] < 0 || sel[i] >= Nstore)
        fail("specs must hold store spec indices in [0, " + std::to_string(Nstore) + "), got " +
             std::to_string(sel[i]) + " at position " + std::to_string(i));
  }
  py::array out = checked<double>(out_o, "out", 2, true);
  expect_dim(out, "out", 0, Q, "rows");
  expect_dim(out, "out", 1, N, "columns");
  checked_gamma(gamma);
  const T* qz = static_cast<const T*>(q_z.data());
  const T* zp = static_cast<const T*>(z.data());
  const double* qb = static_cast<const double*>(q_beta.data());
  const double* b = static_cast<const double*>(beta.data());
  double* outp = static_cast<double*>(out.mutable_data());
  py::gil_scoped_release nogil;
  lwe::cross_inner(qz, qb, qo, Q, zp, b, o, sel, N, d, gamma, outp);
}

void cross_inner(const py::object& q_z, const py::object& q_beta, const py::object& q_off, const py::object& z,
                 const py::object& beta, const py::object& off, double gamma, const py::object& out,
                 const py::object& specs) {
  const bool f32 = points_are_f32(z, "z");
  if (points_are_f32(q_z, "q_z") != f32) lwe::bind::fail_type("q_z and z must have the same dtype (float32 or float64)");
  if (f32)
    cross_inner_t<float>(q_z, q_beta, q_off, z, beta, off, gamma, out, specs);
  else
    cross_inner_t<double>(q_z, q_beta, q_off, z, beta, off, gamma, out, specs);
}

// ------------------------------------------------------------------ search pruning
template <class T>
void spec_balls_t(const py::object& z_o, const py::object& off_o, const py::object& c_o, const py::object& r_o) {
  py::array z = checked<T>(z_o, "z", 2);
  const index_t M = z.shape(0), d = z.shape(1);
  const index_t* o = checked_offsets(off_o, "offsets", M);
  const index_t N = py::reinterpret_borrow<py::array>(off_o).shape(0) - 1;
  py::array c = checked<double>(c_o, "centers", 2, true), r = checked<double>(r_o, "radii", 1, true);
  expect_dim(c, "centers", 0, N, "rows");
  expect_dim(c, "centers", 1, d, "columns");
  expect_dim(r, "radii", 0, N, "length");
  const T* zp = static_cast<const T*>(z.data());
  double* cp = static_cast<double*>(c.mutable_data());
  double* rp = static_cast<double*>(r.mutable_data());
  py::gil_scoped_release nogil;
  lwe::spec_balls<T>(zp, o, N, d, cp, rp);
}

void spec_balls(const py::object& z, const py::object& off, const py::object& c, const py::object& r) {
  if (points_are_f32(z, "z"))
    spec_balls_t<float>(z, off, c, r);
  else
    spec_balls_t<double>(z, off, c, r);
}

void ball_bound(const py::object& q_z_o, const py::object& q_w_o, const py::object& q_off_o, const py::object& c_o,
                const py::object& r_o, double gamma, const py::object& out_o) {
  py::array q_z = checked<double>(q_z_o, "q_z", 2), c = checked<double>(c_o, "centers", 2);
  const index_t Mq = q_z.shape(0), N = c.shape(0), d = c.shape(1);
  if (q_z.shape(1) != d)
    fail("q_z has dimension " + std::to_string(q_z.shape(1)) + " but centers have dimension " + std::to_string(d));
  py::array q_w = checked<double>(q_w_o, "q_w", 1), r = checked<double>(r_o, "radii", 1);
  expect_dim(q_w, "q_w", 0, Mq, "length");
  expect_dim(r, "radii", 0, N, "length");
  const double* w = static_cast<const double*>(q_w.data());
  const double* rp = static_cast<const double*>(r.data());
  for (index_t a = 0; a < Mq; ++a)
    if (!(w[a] >= 0) || !std::isfinite(w[a])) fail("q_w must be finite and >= 0");
  for (index_t i = 0; i < N; ++i)
    if (!(rp[i] >= 0) || !std::isfinite(rp[i])) fail("radii must be finite and >= 0");
  check_finite(static_cast<const double*>(q_z.data()), Mq * d, "q_z");
  check_finite(static_cast<const double*>(c.data()), N * d, "centers");
  const index_t* qo = checked_offsets(q_off_o, "q_offsets", Mq);
  const index_t Q = py::reinterpret_borrow<py::array>(q_off_o).shape(0) - 1;
  py::array out = checked<double>(out_o, "out", 2, true);
  expect_dim(out, "out", 0, Q, "rows");
  expect_dim(out, "out", 1, N, "columns");
  checked_gamma(gamma);
  const double* qz = static_cast<const double*>(q_z.data());
  const double* cp = static_cast<const double*>(c.data());
  double* outp = static_cast<double*>(out.mutable_data());
  py::gil_scoped_release nogil;
  lwe::ball_bound(qz, w, qo, Q, cp, rp, N, d, gamma, outp);
}

template <class T>
void projection_bound_t(const py::object& q_z_o, const py::object& q_w_o, const py::object& q_group_o,
                        const py::object& gc_o, const py::object& z_o, const py::object& off_o,
                        const py::object& specs_o, const py::object& c_o, const py::object& r_o, double gamma,
                        const py::object& out_o) {
  py::array q_z = checked<double>(q_z_o, "q_z", 2), gc = checked<double>(gc_o, "group_centers", 2);
  py::array z = checked<T>(z_o, "z", 2), c = checked<double>(c_o, "centers", 2);
  const index_t Ka = q_z.shape(0), d = z.shape(1), ng = gc.shape(0), N = c.shape(0);
  for (const auto& [a, name] : {std::pair{&q_z, "q_z"}, std::pair{&gc, "group_centers"}, std::pair{&c, "centers"}})
    if (a->shape(1) != d)
      fail(std::string(name) + " has dimension " + std::to_string(a->shape(1)) + " but z has dimension " +
           std::to_string(d));
  if (ng < 1 || ng > lwe::kMaxBoundGroups)
    fail("group_centers must have 1 to " + std::to_string(lwe::kMaxBoundGroups) + " rows, got " + std::to_string(ng));
  py::array q_w = checked<double>(q_w_o, "q_w", 1), q_group = checked<std::int64_t>(q_group_o, "q_group", 1);
  expect_dim(q_w, "q_w", 0, Ka, "length");
  expect_dim(q_group, "q_group", 0, Ka, "length");
  const double* w = static_cast<const double*>(q_w.data());
  const auto* grp = static_cast<const index_t*>(q_group.data());
  for (index_t a = 0; a < Ka; ++a) {
    if (!(w[a] >= 0) || !std::isfinite(w[a])) fail("q_w must be finite and >= 0");
    if (grp[a] < 0 || grp[a] >= ng) fail("q_group must hold group indices in [0, " + std::to_string(ng) + ")");
  }
  check_finite(static_cast<const double*>(q_z.data()), Ka * d, "q_z");
  check_finite(static_cast<const double*>(gc.data()), ng * d, "group_centers");
  const index_t* o = checked_offsets(off_o, "offsets", z.shape(0));
  if (py::reinterpret_borrow<py::array>(off_o).shape(0) - 1 != N)
    fail("offsets must have one entry more than centers has rows (" + std::to_string(N) + ")");
  py::array r = checked<double>(r_o, "radii", 1), specs = checked<std::int64_t>(specs_o, "specs", 1);
  expect_dim(r, "radii", 0, N, "length");
  const index_t M = specs.shape(0);
  const auto* sel = static_cast<const index_t*>(specs.data());
  const double* cp = static_cast<const double*>(c.data());
  const double* rp = static_cast<const double*>(r.data());
  for (index_t j = 0; j < M; ++j) {
    if (sel[j] < 0 || sel[j] >= N)
      fail("specs must hold spec indices in [0, " + std::to_string(N) + "), got " + std::to_string(sel[j]) +
           " at position " + std::to_string(j));
    if (!(rp[sel[j]] >= 0) || !std::isfinite(rp[sel[j]])) fail("radii must be finite and >= 0");
    check_finite(cp + sel[j] * d, d, "centers");
  }
  py::array out = checked<double>(out_o, "out", 1, true);
  expect_dim(out, "out", 0, M, "length");
  checked_gamma(gamma);
  const double* qz = static_cast<const double*>(q_z.data());
  const double* gcp = static_cast<const double*>(gc.data());
  const T* zp = static_cast<const T*>(z.data());
  double* outp = static_cast<double*>(out.mutable_data());
  py::gil_scoped_release nogil;
  lwe::projection_bound<T>(qz, w, grp, Ka, gcp, ng, zp, o, sel, M, cp, rp, d, gamma, outp);
}

void projection_bound(const py::object& q_z, const py::object& q_w, const py::object& q_group, const py::object& gc,
                      const py::object& z, const py::object& off, const py::object& specs, const py::object& c,
                      const py::object& r, double gamma, const py::object& out) {
  if (points_are_f32(z, "z"))
    projection_bound_t<float>(q_z, q_w, q_group, gc, z, off, specs, c, r, gamma, out);
  else
    projection_bound_t<double>(q_z, q_w, q_group, gc, z, off, specs, c, r, gamma, out);
}

template <class T, bool Gram>
void store_op_t(const py::object& z_o, const py::object& beta_o, const py::object& off_o, double gamma,
                const py::object& out_o) {
  py::array z = checked<T>(z_o, "z", 2);
  const index_t M = z.shape(0), d = z.shape(1);
  py::array beta = checked<double>(beta_o, "beta", 1);
  expect_dim(beta, "beta", 0, M, "length");
  const index_t* o = checked_offsets(off_o, "offsets", M);
  const index_t N = py::reinterpret_borrow<py::array>(off_o).shape(0) - 1;
  py::array out = checked<double>(out_o, "out", Gram ? 2 : 1, true);
  expect_dim(out, "out", 0, N, Gram ? "rows" : "length");
  if (Gram) expect_dim(out, "out", 1, N, "columns");
  checked_gamma(gamma);
  const T* zp = static_cast<const T*>(z.data());
  const double* b = static_cast<const double*>(beta.data());
  double* outp = static_cast<double*>(out.mutable_data());
  py::gil_scoped_release nogil;
  if (Gram)
    lwe::gram(zp, b, o, N, d, gamma, outp);
  else
    lwe::self_inner(zp, b, o, N, d, gamma, outp);
}

template <bool Gram>
void store_op(const py::object& z, const py::object& beta, const py::object& off, double gamma, const py::object& out) {
  if (points_are_f32(z, "z"))
    store_op_t<float, Gram>(z, beta, off, gamma, out);
  else
    store_op_t<double, Gram>(z, beta, off, gamma, out);
}

// ------------------------------------------------------------------ moments and Z step
template <class Tx>
void zx_moments_t(const py::array& z, const py::object& x_o, double gamma, const py::object& C_o,
                  const py::object& T_o) {
  const index_t K = z.shape(0), d = z.shape(1);
  py::array x = checked<Tx>(x_o, "x", 2);
  const index_t n = x.shape(0);
  if (n < 1) fail("x must have at least one row, got 0");
  expect_dim(x, "x", 1, d, "dimension (columns of z)");
  py::array C = checked<double>(C_o, "C", 1, true);
  expect_dim(C, "C", 0, K, "length");
  double* Tp = nullptr;
  if (!T_o.is_none()) {
    py::array T = checked<double>(T_o, "T", 2, true);
    expect_dim(T, "T", 0, K, "rows");
    expect_dim(T, "T", 1, d, "columns");
    Tp = static_cast<double*>(T.mutable_data());
  }
  checked_gamma(gamma);
  const double* zp = static_cast<const double*>(z.data());
  const Tx* xp = static_cast<const Tx*>(x.data());
  double* Cp = static_cast<double*>(C.mutable_data());
  py::gil_scoped_release nogil;
  if (K > 0) lwe::zx_moments(zp, K, xp, n, d, gamma, Cp, Tp);
}

void zx_moments(const py::object& z_o, const py::object& x, double gamma, const py::object& C, const py::object& T) {
  py::array z = checked<double>(z_o, "z", 2);
  if (points_are_f32(x, "x"))
    zx_moments_t<float>(z, x, gamma, C, T);
  else
    zx_moments_t<double>(z, x, gamma, C, T);
}

// Checked arguments of a reduced-set step: z (K, d), beta (K,), C (K,), T (K, d), out (K, d).
struct StepArgs {
  py::array z, beta, C, T, out;
  index_t K, d;
};

StepArgs checked_step(const py::object& z_o, const py::object& beta_o, const py::object& C_o,
                      const py::object& T_o, double gamma, double step, double t1_factor,
                      const py::object& out_o) {
  StepArgs a;
  a.z = checked<double>(z_o, "z", 2);
  a.K = a.z.shape(0);
  a.d = a.z.shape(1);
  a.beta = checked<double>(beta_o, "beta", 1);
  a.C = checked<double>(C_o, "C", 1);
  expect_dim(a.beta, "beta", 0, a.K, "length");
  expect_dim(a.C, "C", 0, a.K, "length");
  a.T = checked<double>(T_o, "T", 2);
  expect_dim(a.T, "T", 0, a.K, "rows");
  expect_dim(a.T, "T", 1, a.d, "columns");
  a.out = checked<double>(out_o, "out", 2, true);
  expect_dim(a.out, "out", 0, a.K, "rows");
  expect_dim(a.out, "out", 1, a.d, "columns");
  checked_gamma(gamma);
  if (!std::isfinite(step)) fail("step_size must be finite");
  if (!std::isfinite(t1_factor)) fail("t1_factor must be finite");
  return a;
}

const double* cdata(const py::array& a) { return static_cast<const double*>(a.data()); }

void rs_step_from_moments(const py::object& z_o, const py::object& beta_o, const py::object& C_o,
                          const py::object& T_o, double gamma, double step, double t1_factor,
                          const py::object& out_o) {
  StepArgs a = checked_step(z_o, beta_o, C_o, T_o, gamma, step, t1_factor, out_o);
  const double *zp = cdata(a.z), *bp = cdata(a.beta), *Cp = cdata(a.C), *Tp = cdata(a.T);
  double* op = static_cast<double*>(a.out.mutable_data());
  py::gil_scoped_release nogil;
  lwe::rs_step_from_moments(zp, bp, Cp, Tp, a.K, a.d, gamma, step, t1_factor, op);
}

void point_gram(const py::object& z_o, double gamma, const py::object& out_o) {
  py::array z = checked<double>(z_o, "z", 2);
  const index_t K = z.shape(0), d = z.shape(1);
  py::array out = checked<double>(out_o, "out", 2, true);
  expect_dim(out, "out", 0, K, "rows (len(z))");
  expect_dim(out, "out", 1, K, "columns (len(z))");
  checked_gamma(gamma);
  const double* zp = static_cast<const double*>(z.data());
  double* op = static_cast<double*>(out.mutable_data());
  py::gil_scoped_release nogil;
  if (K > 0) lwe::point_gram(zp, K, d, gamma, op);
}

void rs_step_from_gram(const py::object& z_o, const py::object& beta_o, const py::object& C_o,
                       const py::object& T_o, const py::object& G_o, double gamma, double step,
                       double t1_factor, const py::object& out_o) {
  StepArgs a = checked_step(z_o, beta_o, C_o, T_o, gamma, step, t1_factor, out_o);
  py::array G = checked<double>(G_o, "G", 2);
  expect_dim(G, "G", 0, a.K, "rows");
  expect_dim(G, "G", 1, a.K, "columns");
  const double *zp = cdata(a.z), *bp = cdata(a.beta), *Cp = cdata(a.C), *Tp = cdata(a.T), *Gp = cdata(G);
  double* op = static_cast<double*>(a.out.mutable_data());
  py::gil_scoped_release nogil;
  lwe::rs_step_from_gram(zp, bp, Cp, Tp, Gp, a.K, a.d, gamma, step, t1_factor, op);
}

// ------------------------------------------------------------------ QP
template <class Tx>
py::tuple fit_reference_t(const py::object& x_o, py::array& z, double gamma, int steps, double step_size,
                          const py::object& beta_o, const py::object& obj_o, const py::object& c_o, int max_iter,
                          double tol) {
  const index_t K = z.shape(0), d = z.shape(1);
  py::array x = checked<Tx>(x_o, "x", 2);
  const index_t n = x.shape(0);
  if (n < 1) fail("x must have at least one row, got 0");
  if (K < 1) fail("z must have at least one row, got 0");
  expect_dim(x, "x", 1, d, "dimension (columns of z)");
  if (steps < 0) fail("steps must be >= 0, got " + std::to_string(steps));
  if (!(std::isfinite(step_size) && step_size >= 0)) fail("step_size must be a finite number >= 0");
  py::array beta = checked<double>(beta_o, "beta_out", 1, true);
  expect_dim(beta, "beta_out", 0, K, "length (rows of z)");
  py::array obj = checked<double>(obj_o, "objectives_out", 1, true);
  expect_dim(obj, "objectives_out", 0, steps + 1, "length (steps + 1)");
  checked_gamma(gamma);
  float* cp = nullptr;
  if (!c_o.is_none()) {
    if (!std::is_same<Tx, float>::value) fail_type("kmeans_c needs x of dtype float32");
    py::array c = checked<float>(c_o, "kmeans_c", 2, true);
    expect_dim(c, "kmeans_c", 0, K, "rows (rows of z)");
    expect_dim(c, "kmeans_c", 1, d, "columns (columns of z)");
    if (max_iter < 1) fail("max_iter must be >= 1, got " + std::to_string(max_iter));
    if (std::isnan(tol)) fail("tol must not be NaN");
    cp = static_cast<float*>(c.mutable_data());
  }
  double* zp = static_cast<double*>(z.mutable_data());
  if (!cp) check_finite(zp, K * d, "z");
  const Tx* xp = static_cast<const Tx*>(x.data());
  double *bp = static_cast<double*>(beta.mutable_data()), *op = static_cast<double*>(obj.mutable_data());
  int status = 0, iters = 0;
  {
    py::gil_scoped_release nogil;
    status = lwe::fit_reference(xp, n, d, zp, K, gamma, steps, step_size, bp, op, cp, max_iter, tol, &iters);
  }
  return py::make_tuple(status, iters);
}
py::tuple fit_reference(const py::object& x, const py::object& z_o, double gamma, int steps, double step_size,
                        const py::object& beta, const py::object& obj, const py::object& c, int max_iter,
                        double tol) {
  py::array z = checked<double>(z_o, "z", 2, true);
  return points_are_f32(x, "x") ? fit_reference_t<float>(x, z, gamma, steps, step_size, beta, obj, c, max_iter, tol)
                                : fit_reference_t<double>(x, z, gamma, steps, step_size, beta, obj, c, max_iter, tol);
}
double fit_objective(const py::object& G_o, const py::object& C_o, const py::object& beta_o) {
  py::array C = checked<double>(C_o, "C", 1);
  const index_t K = C.shape(0);
  py::array G = checked<double>(G_o, "G", 2);
  expect_dim(G, "G", 0, K, "rows (len(C))");
  expect_dim(G, "G", 1, K, "columns (len(C))");
  py::array beta = checked<double>(beta_o, "beta", 1);
  expect_dim(beta, "beta", 0, K, "length (len(C))");
  return lwe::fit_objective(static_cast<const double*>(G.data()), static_cast<const double*>(C.data()),
                            static_cast<const double*>(beta.data()), K);
}
double simplex_qp(const py::object& G_o, const py::object& c_o, const py::object& x_o, const py::object& x0_o) {
  py::array c = checked<double>(c_o, "c", 1);
  const index_t n = c.shape(0);
  if (n < 1) fail("c must have at least one entry");
  py::array G = checked<double>(G_o, "G", 2);
  expect_dim(G, "G", 0, n, "rows (len(c))");
  expect_dim(G, "G", 1, n, "columns (len(c))");
  py::array x = checked<double>(x_o, "x_out", 1, true);
  expect_dim(x, "x_out", 0, n, "length");
  const double* Gp = static_cast<const double*>(G.data());
  const double* cp = static_cast<const double*>(c.data());
  check_finite(Gp, n * n, "G");
  check_finite(cp, n, "c");
  const double* x0p = nullptr;
  if (!x0_o.is_none()) {
    py::array x0 = checked<double>(x0_o, "x0", 1);
    expect_dim(x0, "x0", 0, n, "length");
    x0p = static_cast<const double*>(x0.data());
    check_finite(x0p, n, "x0");
    double s = 0.0;
    for (index_t i = 0; i < n; ++i) {
      if (x0p[i] < 0) fail("x0 must be nonnegative");
      s += x0p[i];
    }
    if (!(s > 0) || !std::isfinite(s)) fail("x0 must have a positive finite sum");
  }
  double* xp = static_cast<double*>(x.mutable_data());
  py::gil_scoped_release nogil;
  return lwe::simplex_qp(Gp, cp, n, xp, x0p);
}

void simplex_qp_batch(const py::object& Gs_o, const py::object& cs_o, const py::object& xs_o, const py::object& objs_o) {
  py::array cs = checked<double>(cs_o, "cs", 2);
  const index_t B = cs.shape(0), n = cs.shape(1);
  if (n < 1) fail("cs must have at least one column");
  py::array Gs = checked<double>(Gs_o, "Gs", 3);
  expect_dim(Gs, "Gs", 0, B, "batch size (len(cs))");
  expect_dim(Gs, "Gs", 1, n, "rows (cs.shape[1])");
  expect_dim(Gs, "Gs", 2, n, "columns (cs.shape[1])");
  py::array xs = checked<double>(xs_o, "xs_out", 2, true);
  expect_dim(xs, "xs_out", 0, B, "rows");
  expect_dim(xs, "xs_out", 1, n, "columns");
  py::array objs = checked<double>(objs_o, "objs_out", 1, true);
  expect_dim(objs, "objs_out", 0, B, "length");
  const double* Gp = static_cast<const double*>(Gs.data());
  const double* cp = static_cast<const double*>(cs.data());
  check_finite(Gp, B * n * n, "Gs");
  check_finite(cp, B * n, "cs");
  double* xp = static_cast<double*>(xs.mutable_data());
  double* op = static_cast<double*>(objs.mutable_data());
  py::gil_scoped_release nogil;
  lwe::simplex_qp_batch(Gp, cp, B, n, xp, op);
}

// ------------------------------------------------------------------ k-means
int kmeans(const py::object& x_o, const py::object& c_o, int max_iter, double tol) {
  py::array x = checked<float>(x_o, "x", 2);
  const index_t n = x.shape(0), d = x.shape(1);
  if (n < 1) fail("x must have at least one row, got 0");
  py::array c = checked<float>(c_o, "c", 2, true);
  const index_t k = c.shape(0);
  if (k < 1) fail("c must have at least one row (k >= 1), got 0");
  expect_dim(c, "c", 1, d, "dimension (columns of x)");
  if (max_iter < 1) fail("max_iter must be >= 1, got " + std::to_string(max_iter));
  if (std::isnan(tol)) fail("tol must not be NaN");
  const float* xp = static_cast<const float*>(x.data());
  float* cp = static_cast<float*>(c.mutable_data());
  py::gil_scoped_release nogil;
  return lwe::kmeans(xp, n, d, cp, k, max_iter, tol);
}

// ------------------------------------------------------------------ decoded JSON -> arrays
// A list of numbers (1-D) or a list of equal-length lists of numbers (2-D) as a float64 array, or
// None whenever numpy.array might have given anything else: only exact float and int objects (no bool,
// no subclass), at least one value per row; the caller checks magnitudes (ints beyond float range).
py::object float_array(const py::handle& obj) {
  PyObject* o = obj.ptr();
  if (!PyList_CheckExact(o) || PyList_GET_SIZE(o) < 1) return py::none();
  const Py_ssize_t K = PyList_GET_SIZE(o);
  auto as_double = [](PyObject* v, double* out) {
    if (PyFloat_CheckExact(v)) {
      *out = PyFloat_AS_DOUBLE(v);
      return true;
    }
    if (PyLong_CheckExact(v)) {
      *out = PyLong_AsDouble(v);
      if (*out == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        return false;
      }
      return true;
    }
    return false;
  };
  PyObject* first = PyList_GET_ITEM(o, 0);
  if (!PyList_CheckExact(first)) {  // 1-D
    py::array_t<double> out(K);
    double* p = out.mutable_data();
    for (Py_ssize_t i = 0; i < K; ++i)
      if (!as_double(PyList_GET_ITEM(o, i), p + i)) return py::none();
    return std::move(out);
  }
  const Py_ssize_t d = PyList_GET_SIZE(first);
  if (d < 1) return py::none();
  py::array_t<double> out({K, d});
  double* p = out.mutable_data();
  for (Py_ssize_t i = 0; i < K; ++i) {
    PyObject* row = PyList_GET_ITEM(o, i);
    if (!PyList_CheckExact(row) || PyList_GET_SIZE(row) != d) return py::none();
    for (Py_ssize_t j = 0; j < d; ++j)
      if (!as_double(PyList_GET_ITEM(row, j), p + i * d + j)) return py::none();
  }
  return std::move(out);
}

py::dict cpu_info() {
  py::dict info;
  bool avx2 = false, fma = false;
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
  avx2 = __builtin_cpu_supports("avx2");
  fma = __builtin_cpu_supports("fma");
#endif
  info["avx2"] = avx2;
  info["fma"] = fma;
  info["avx2_build"] = bool(LWE_HAVE_AVX2_BUILD);
  info["avx512"] = lwe::cpu_has_avx512();  // F, DQ, VL and BW, and the build has the path
  info["avx512_build"] = bool(LWE_HAVE_AVX512_BUILD);
  info["simd"] = std::string(lwe::simd_path());
#ifdef LWE_HAVE_OPENMP
  info["openmp"] = true;
#else
  info["openmp"] = false;
#endif
  info["max_threads"] = lwe::get_num_threads();
  return info;
}

}  // namespace

void register_nngp(py::module_& m);  // csrc/bind/nngp.cpp (image specs)
PYBIND11_MODULE(_core, m) {
  register_nngp(m);
  m.doc() = "lwengine CPU kernels";
#ifdef LWE_VERSION_INFO
  m.attr("__version__") = LWE_VERSION_INFO;
#endif
#ifdef LWE_HAVE_OPENMP
  m.attr("has_openmp") = true;
#else
  m.attr("has_openmp") = false;
#endif
  m.def("cross_inner", &cross_inner, py::arg("q_z"), py::arg("q_beta"), py::arg("q_offsets"), py::arg("z"),
        py::arg("beta"), py::arg("offsets"), py::arg("gamma"), py::arg("out"), py::arg("specs") = py::none(),
        "out[q, i] = sum_ab q_beta_a beta_b exp(-gamma |q_z_a - z_b|^2) over query spec q and store spec i "
        "(specs: int64 store spec indices, column i is spec specs[i]; None: every spec).");
  m.def("spec_balls", &spec_balls, py::arg("z"), py::arg("offsets"), py::arg("centers"), py::arg("radii"),
        "Per spec of a packed store: centers (N, d) = row mean, radii (N) >= the largest row distance from it.");
  m.def("ball_bound", &ball_bound, py::arg("q_z"), py::arg("q_w"), py::arg("q_offsets"), py::arg("centers"),
        py::arg("radii"), py::arg("gamma"), py::arg("out"),
        "out[q, i] = sum_a q_w_a exp(-gamma max(0, |a - c_i| - r_i)^2) (a rigorous upper bound, q_w >= 0).");
  m.def("projection_bound", &projection_bound, py::arg("q_z"), py::arg("q_w"), py::arg("q_group"),
        py::arg("group_centers"), py::arg("z"), py::arg("offsets"), py::arg("specs"), py::arg("centers"),
        py::arg("radii"), py::arg("gamma"), py::arg("out"),
        "out[j] = sum_a q_w_a exp(-gamma g_a^2) >= sum_a q_w_a max_b k(a, z_b) over spec specs[j]'s rows, g_a the "
        "larger of the ball gap and the gap along the direction from c_i to a's group centre (rigorous).");
  m.def("self_inner", &store_op<false>, py::arg("z"), py::arg("beta"), py::arg("offsets"), py::arg("gamma"),
        py::arg("out"), "out[i] = <mu_i, mu_i> for every spec of a packed store.");
  m.def("gram", &store_op<true>, py::arg("z"), py::arg("beta"), py::arg("offsets"), py::arg("gamma"),
        py::arg("out"), "out[i, j] = <mu_i, mu_j> (symmetric).");
  m.def("fit_reference", &fit_reference, py::arg("x"), py::arg("z"), py::arg("gamma"), py::arg("steps"),
        py::arg("step_size"), py::arg("beta_out"), py::arg("objectives_out"), py::arg("kmeans_c") = py::none(),
        py::arg("max_iter") = 100, py::arg("tol") = 1e-4,
        "The reference fit in place on z (K, d) float64: with kmeans_c (K, d) float32 (x float32) first "
        "k-means from those centroids (written back) and z = them widened; then one beta update and steps x "
        "(Z step, beta update); beta_out (K,) and objectives_out (steps + 1,) are written.  Returns "
        "(status, k-means iterations): status 0, or 1 / 2 where G or C turned non-finite at the first / a "
        "later beta update.");
  m.def("fit_objective", &fit_objective, py::arg("G"), py::arg("C"), py::arg("beta"),
        "beta'G beta - 2 beta'C (the fit's objective: MMD^2 to the data minus its data term).");
  m.def("zx_moments", &zx_moments, py::arg("z"), py::arg("x"), py::arg("gamma"), py::arg("C"),
        py::arg("T").none(true), "C_i = mean_j k(z_i, x_j), T_i = mean_j k(z_i, x_j) x_j (T may be None).");
  m.def("rs_step_from_moments", &rs_step_from_moments, py::arg("z"), py::arg("beta"), py::arg("C"), py::arg("T"),
        py::arg("gamma"), py::arg("step_size"), py::arg("t1_factor"), py::arg("out"),
        "One Jacobi reduced-set Z step from the data moments.");
  m.def("point_gram", &point_gram, py::arg("z"), py::arg("gamma"), py::arg("out"),
        "out[i, j] = exp(-gamma |z_i - z_j|^2) over the rows of z (symmetric, float64).");
  m.def("rs_step_from_gram", &rs_step_from_gram, py::arg("z"), py::arg("beta"), py::arg("C"), py::arg("T"),
        py::arg("G"), py::arg("gamma"), py::arg("step_size"), py::arg("t1_factor"), py::arg("out"),
        "rs_step_from_moments given G = point_gram(z).");
  m.def("simplex_qp", &simplex_qp, py::arg("G"), py::arg("c"), py::arg("x_out"), py::arg("x0") = py::none(),
        "Exact argmin 1/2 x'Gx - c'x, x >= 0, sum x = 1; writes x_out, returns the objective. "
        "x0 (optional): a start point (>= 0, positive sum; normalised) for the active set.");
  m.def("simplex_qp_batch", &simplex_qp_batch, py::arg("Gs"), py::arg("cs"), py::arg("xs_out"),
        py::arg("objs_out"), "simplex_qp over a batch (OpenMP over problems).");
  m.def("kmeans", &kmeans, py::arg("x"), py::arg("c"), py::arg("max_iter"), py::arg("tol"),
        "Lloyd k-means in float32 (reference rules); c holds the initial centroids and is updated in place.");
  m.def("float_array", &float_array, py::arg("obj"),
        "A decoded JSON list of numbers (1-D) or of equal-length lists of numbers (2-D) as float64, else None.");
  m.def("cpu_info", &cpu_info, "CPU features, SIMD path in use and OpenMP threads.");
  m.def("set_simd", &lwe::set_simd, py::arg("enabled"),
        "Enable the widest SIMD path the CPU has, or use the portable one (LWE_DISABLE_AVX2=1 / "
        "LWE_DISABLE_AVX512=1 in the environment cap it too).");
  m.def("set_simd_path", [](const std::string& name) {
    if (!lwe::set_simd_path(name.c_str()))
      fail("path must be 'avx512', 'avx2' or 'portable', got '" + name + "'");
  }, py::arg("path"), "Cap the SIMD path at 'avx512', 'avx2' or 'portable' (the CPU may allow less).");
  m.def("call_team_begin", [] { return lwe::call_team_begin(); },
        "Wake the call team for this thread's coming kernel calls (False: not available now).");
  m.def("call_team_end", [] { lwe::call_team_end(); }, "Send this thread's call team back to sleep.");
  m.def("call_team_active", [] { return lwe::call_team_active(); }, "Whether this thread holds the call team.");
  m.def("set_num_threads", [](int n) {
    if (n < 1) fail("n must be >= 1, got " + std::to_string(n));
    lwe::set_num_threads(n);
  }, py::arg("n"));
  m.def("get_num_threads", &lwe::get_num_threads);
  m.def("threads_add_throughput", [] {
    py::gil_scoped_release nogil;
    return lwe::threads_add_throughput();
  }, "Whether two threads measured >= 1.5x one thread's FMA rate here (once per process); with the "
     "wake-up cost (thread_probe) it sets the serial thresholds of small k-means and data moments, "
     "never a result.");
  m.def("thread_probe", [] {
    bool cores;
    double lane, wake;
    int remeasured;
    {
      py::gil_scoped_release nogil;
      lwe::thread_probe_values(&cores, &lane, &wake, &remeasured);
    }
    py::dict r;
    r["cores"] = cores;
    r["lane_fma_per_s"] = lane;
    r["wake_s"] = wake;
    r["remeasured"] = remeasured;
    return r;
  }, "The thread probe: separate cores (threads_add_throughput; the latest answer), one thread's float32 "
     "FMA lanes per second, the median time of a two-thread parallel region entered after serial work, "
     "and how often a 'no' was measured again (at most 8 times, 1 s apart).");
  m.def("peak_probe", [](double seconds) {
    if (!(seconds > 0 && seconds < 60)) fail("seconds must be in (0, 60)");
    double fma, ex;
    {
      py::gil_scoped_release nogil;
      fma = lwe::peak_fma_f32(seconds);
      ex = lwe::peak_exp_f32(seconds);
    }
    py::dict r;
    r["fma_f32_flops"] = fma;
    r["exp_f32_per_s"] = ex;
    r["simd"] = std::string(lwe::simd_path());
    r["threads"] = lwe::get_num_threads();
    return r;
  }, py::arg("seconds") = 0.2, "Measured fp32 FMA flop/s and float32 exp/s of the active SIMD path, all threads.");
}
