// The permutohedral lattice ops of graphseg_ext: argument checks shared by every backend.
//
//   lattice_build(features (N, d) float64)
//       -> index (N, d + 1) int32, weight (N, d + 1) float64, neighbours (d + 1, 2, M) int32
//   lattice_filter(values (N, C), index, splat_weight, slice_weight, neighbours, reverse)
//       -> (N, C)
//
// index holds the d + 1 lattice vertices of each point's simplex and weight their barycentric
// weights; neighbours[j, 0 or 1, v] the vertices next to v along lattice direction j, M where
// the lattice has none. The filter splats with splat_weight, blurs along directions 0..d (d..0
// when reverse) and slices with slice_weight times 1 / (1 + 2^-d): with both weights the
// barycentric ones it is the lattice's Gaussian filter, and swapping them with reverse flipped
// gives its exact transpose. Per-point factors folded into the weights (a before the filter, b
// after it) give b * filter(a * values) in one pass, as the CRF's normalised kernels need.
// lattice_filter_sum(values, base, [index], [splat_weight], [slice_weight], [neighbours], upper)
// gives min(base + the sum of several lattices' filters of the same values, upper), each
// lattice splatted and blurred on a thread of its own and all sliced in one pass over the
// points: the message of the CRF's mean field, with the least waiting between threads. Values
// and base may have any strides (the output of lattice_filter has the layout of values, that of
// lattice_filter_sum base's). The filters trust index and neighbours to come from
// lattice_build: their entries index the M + 1 lattice rows (checking them would cost a pass
// over each per filter).
// lattice_diagonal(index, weight (N, d + 1) float32 or float64, neighbours) -> (N,): the filter's
// weight of each point on itself, from the blur's block of the point's simplex (kept in a small
// cache per thread of the simplices met last) and its barycentric weights; it checks the vertices
// of each simplex whose block it computes (in range, and neighbours of one another in the table).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>

namespace graphseg_ext {

// Features of more dimensions are filtered by graphseg's tensor-op lattice.
constexpr int kMaxDim = 32;
// Largest |coordinate| of a lattice vertex (int32 keys with room for the neighbour steps).
constexpr double kCoordLimit = 1 << 30;

void check_lattice_features(const at::Tensor& features);
void check_lattice_filter_args(const at::Tensor& values, const at::Tensor& index,
                               const at::Tensor& splat_weight, const at::Tensor& slice_weight,
                               const at::Tensor& neighbours);
void check_lattice_diagonal_args(const at::Tensor& index, const at::Tensor& weight,
                                 const at::Tensor& neighbours);
void check_lattice_sum_args(const at::Tensor& values, const at::Tensor& base,
                            at::TensorList index, at::TensorList splat_weight,
                            at::TensorList slice_weight, at::TensorList neighbours);

}  // namespace graphseg_ext
