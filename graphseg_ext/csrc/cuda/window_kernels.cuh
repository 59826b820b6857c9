// Launchers of the CUDA kernels of graphseg_ext, on raw device pointers.
//
// Plain CUDA without torch headers, so that the kernels compile with `nvcc -c` alone; the torch
// glue that checks arguments and registers the ops is window_ops_cuda.cpp.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace graphseg_ext {
namespace cuda {

enum class DType { Float16, BFloat16, Float32, Float64 };

// local_affinity's pair functions (window_dot is Dot with two maps).
enum class Pair { L1, L2, Dot };

// The gathers: window_aggregate, its transpose, and the gradients of local_affinity.
enum class Gather { Aggregate, Transpose, L1Grad, L2Grad, DotGrad };

// Sizes of a call: maps are contiguous (batch, channels, height, width), window tensors
// (batch, count, height, width), offsets (count, 2) rows of (dy, dx) in device memory.
struct Shape {
  int64_t batch, channels, height, width, count;
};

// out[b, k, y, x] = sum_c pair(left[b, c, y, x], right[b, c, y + dy_k, x + dx_k]), 0 where the
// neighbour is outside the image.
cudaError_t launch_pair(DType dtype, Pair pair, const Shape& shape, const void* left,
                        const void* right, const int64_t* offsets, void* out,
                        cudaStream_t stream);

// out[b, c, p] = sum_k coef[b, k, p] h(v[c, p], v[c, p + o_k])        (Aggregate and the grads)
//              + sum_k coef[b, k, p - o_k] h(v[c, p], v[c, p - o_k])  (Transpose and the grads)
// with h the neighbour value (Aggregate, Transpose, DotGrad), sign(centre - neighbour) (L1Grad)
// or 2 (centre - neighbour) (L2Grad).
cudaError_t launch_gather(DType dtype, Gather gather, const Shape& shape, const void* coef,
                          const void* values, const int64_t* offsets, void* out,
                          cudaStream_t stream);

}  // namespace cuda
}  // namespace graphseg_ext
