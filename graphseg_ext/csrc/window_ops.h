// The ops of graphseg_ext in terms of two kernels per backend, with the argument checks that
// every backend shares.
//
// Every op works on a window of K offsets (dy, dx): pixel p = (y, x) is paired with
// p + o_k = (y + dy_k, x + dx_k) when that pixel lies inside the image (the `drop` border rule).
// A backend supplies
//   static at::Tensor empty(sizes, options)                  a fresh contiguous output
//   static void pair(left, right, offsets, PairKind, out)    out (B, K, H, W)
//   static void gather(coef, values, offsets, Gather, out)   out (B, C, H, W)
// and optionally
//   static void power(coef, values, offsets, num_steps, steps_per_pass, out)   A^t values
// where the kernels write every element of a checked, contiguous `out`; WindowOps<Backend> turns
// them into the registered ops.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <string>
#include <string_view>
#include <vector>

namespace graphseg_ext {

// How local_affinity compares two feature vectors a and b: sum |a - b|, sum (a - b)^2, sum a b.
enum class PairKind { L1, L2, Dot };

// The weighted sums over the window that produce one vector per pixel:
//   forward pass   sum_k coef[k, p] h(v(p), v(p + o_k))
//   backward pass  sum_k coef[k, p - o_k] h(v(p), v(p - o_k))   (the edges that point at p)
// Aggregate (window_aggregate) is the forward pass and Transpose (its adjoint) the backward pass,
// both with h = the neighbour value. The gradients of local_affinity use both passes, with
// h = the neighbour value (Dot), sign(centre - neighbour) (L1) or 2 (centre - neighbour) (L2).
enum class Gather { Aggregate, Transpose, L1Grad, L2Grad, DotGrad };

// The instruction-set clone of the CPU kernels that runs on this CPU, e.g. "x86-64-v3 (AVX2, FMA)".
std::string cpu_clone();

// Parses "l1" | "l2" | "dot"; throws with the accepted names otherwise.
PairKind parse_kind(std::string_view kind);

// The gather that gives the gradient of local_affinity in its features.
Gather gradient_of(PairKind kind);

// Argument checks, the one place where every backend validates its inputs. Each throws a
// c10::Error naming the op and the offending argument.
//
// Two (B, C, H, W) maps compared pixel by pixel (local_affinity, window_dot).
void check_pair_args(const char* op, const at::Tensor& left, const at::Tensor& right,
                     const at::Tensor& offsets, const char* left_name = "left",
                     const char* right_name = "right");
// A (B, K, H, W) weight or gradient per window entry and (B, C, H, W) values.
void check_aggregate_args(const char* op, const at::Tensor& weight, const at::Tensor& values,
                          const at::Tensor& offsets, const char* weight_name = "weight",
                          const char* values_name = "values");
// A caller-provided output buffer: exact shape, dtype and device, contiguous, sharing no memory
// with the inputs.
void check_out_arg(const char* op, const at::Tensor& out, at::IntArrayRef shape,
                   at::TensorList inputs);

// (B, K, H, W) for a (B, C, H, W) map and K offsets.
std::vector<int64_t> pair_shape(const at::Tensor& image, const at::Tensor& offsets);

template <typename Backend>
struct WindowOps {
  static at::Tensor local_affinity(const at::Tensor& features, const at::Tensor& offsets,
                                   std::string_view kind) {
    check_pair_args("local_affinity", features, features, offsets, "features", "features");
    const PairKind pair = parse_kind(kind);
    at::Tensor out = Backend::empty(pair_shape(features, offsets), features.options());
    Backend::pair(features, features, offsets, pair, out);
    return out;
  }

  static void local_affinity_out(const at::Tensor& features, const at::Tensor& offsets,
                                 std::string_view kind, const at::Tensor& out) {
    check_pair_args("local_affinity", features, features, offsets, "features", "features");
    const PairKind pair = parse_kind(kind);
    check_out_arg("local_affinity", out, pair_shape(features, offsets), {features});
    Backend::pair(features, features, offsets, pair, out);
  }

  static at::Tensor local_affinity_backward(const at::Tensor& grad, const at::Tensor& features,
                                            const at::Tensor& offsets, std::string_view kind) {
    check_aggregate_args("local_affinity_backward", grad, features, offsets, "grad",
                         "features");
    const Gather gather = gradient_of(parse_kind(kind));
    at::Tensor out = Backend::empty(features.sizes(), features.options());
    Backend::gather(grad, features, offsets, gather, out);
    return out;
  }

  static at::Tensor window_dot(const at::Tensor& left, const at::Tensor& right,
                               const at::Tensor& offsets) {
    check_pair_args("window_dot", left, right, offsets);
    at::Tensor out = Backend::empty(pair_shape(left, offsets), left.options());
    Backend::pair(left, right, offsets, PairKind::Dot, out);
    return out;
  }

  static void window_dot_out(const at::Tensor& left, const at::Tensor& right,
                             const at::Tensor& offsets, const at::Tensor& out) {
    check_pair_args("window_dot", left, right, offsets);
    check_out_arg("window_dot", out, pair_shape(left, offsets), {left, right});
    Backend::pair(left, right, offsets, PairKind::Dot, out);
  }

  static at::Tensor gather(const char* op, const at::Tensor& weight, const at::Tensor& values,
                           const at::Tensor& offsets, Gather gather) {
    check_aggregate_args(op, weight, values, offsets);
    at::Tensor out = Backend::empty(values.sizes(), values.options());
    Backend::gather(weight, values, offsets, gather, out);
    return out;
  }

  static void gather_out(const char* op, const at::Tensor& weight, const at::Tensor& values,
                         const at::Tensor& offsets, Gather gather, const at::Tensor& out) {
    check_aggregate_args(op, weight, values, offsets);
    check_out_arg(op, out, values.sizes(), {weight, values});
    Backend::gather(weight, values, offsets, gather, out);
  }

  static at::Tensor window_aggregate(const at::Tensor& weight, const at::Tensor& values,
                                     const at::Tensor& offsets) {
    return gather("window_aggregate", weight, values, offsets, Gather::Aggregate);
  }

  static void window_aggregate_out(const at::Tensor& weight, const at::Tensor& values,
                                   const at::Tensor& offsets, const at::Tensor& out) {
    gather_out("window_aggregate", weight, values, offsets, Gather::Aggregate, out);
  }

  static at::Tensor window_aggregate_transpose(const at::Tensor& weight,
                                               const at::Tensor& values,
                                               const at::Tensor& offsets) {
    return gather("window_aggregate_transpose", weight, values, offsets, Gather::Transpose);
  }

  static void window_aggregate_transpose_out(const at::Tensor& weight, const at::Tensor& values,
                                             const at::Tensor& offsets, const at::Tensor& out) {
    gather_out("window_aggregate_transpose", weight, values, offsets, Gather::Transpose, out);
  }

  // A^num_steps values; only backends with a `power` kernel (CPU) register it.
  static at::Tensor window_aggregate_power(const at::Tensor& weight, const at::Tensor& values,
                                           const at::Tensor& offsets, int64_t num_steps,
                                           int64_t steps_per_pass) {
    check_aggregate_args("window_aggregate_power", weight, values, offsets);
    TORCH_CHECK_VALUE(num_steps >= 0, "window_aggregate_power: num_steps must be >= 0, got ",
                      num_steps);
    TORCH_CHECK_VALUE(steps_per_pass >= 0,
                      "window_aggregate_power: steps_per_pass must be >= 0 (0: automatic), got ",
                      steps_per_pass);
    at::Tensor out = Backend::empty(values.sizes(), values.options());
    Backend::power(weight, values, offsets, num_steps, steps_per_pass, out);
    return out;
  }

  // Registers every op's kernel for the dispatch key of `m` (TORCH_LIBRARY_IMPL).
  static void register_kernels(torch::Library& m) {
    m.impl("local_affinity", &local_affinity);
    m.impl("local_affinity_out", &local_affinity_out);
    m.impl("local_affinity_backward", &local_affinity_backward);
    m.impl("window_aggregate", &window_aggregate);
    m.impl("window_aggregate_out", &window_aggregate_out);
    m.impl("window_aggregate_transpose", &window_aggregate_transpose);
    m.impl("window_aggregate_transpose_out", &window_aggregate_transpose_out);
    m.impl("window_dot", &window_dot);
    m.impl("window_dot_out", &window_dot_out);
  }
};

}  // namespace graphseg_ext
