// CUDA kernels of graphseg_ext: one thread per output element, gathering over the window, so
// that no two threads write the same element (no atomics, deterministic results). Half and
// bfloat16 inputs accumulate in float, double in double.
#include "window_kernels.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>

namespace graphseg_ext {
namespace cuda {
namespace {

constexpr int kThreads = 256;
// Grid-stride loops cover any size with at most this many blocks.
constexpr int64_t kMaxBlocks = int64_t{1} << 16;

template <typename T>
struct Accumulator {
  using type = float;
};
template <>
struct Accumulator<double> {
  using type = double;
};

__device__ __forceinline__ float widen(__half v) { return __half2float(v); }
__device__ __forceinline__ float widen(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float widen(float v) { return v; }
__device__ __forceinline__ double widen(double v) { return v; }

template <typename T>
__device__ __forceinline__ T narrow(typename Accumulator<T>::type v);
template <>
__device__ __forceinline__ __half narrow<__half>(float v) {
  return __float2half(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 narrow<__nv_bfloat16>(float v) {
  return __float2bfloat16(v);
}
template <>
__device__ __forceinline__ float narrow<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ double narrow<double>(double v) {
  return v;
}

template <Pair kPair, typename A>
__device__ __forceinline__ A pair_term(A a, A b) {
  if constexpr (kPair == Pair::L1) {
    const A d = a - b;
    return d < A(0) ? -d : d;
  } else if constexpr (kPair == Pair::L2) {
    const A d = a - b;
    return d * d;
  } else {
    return a * b;
  }
}

template <Gather kGather, typename A>
__device__ __forceinline__ A gather_term(A centre, A neighbour) {
  if constexpr (kGather == Gather::L1Grad) {
    return A(centre > neighbour) - A(centre < neighbour);
  } else if constexpr (kGather == Gather::L2Grad) {
    return A(2) * (centre - neighbour);
  } else {
    return neighbour;
  }
}

__device__ __forceinline__ bool inside(int64_t y, int64_t x, const Shape& s) {
  return y >= 0 && y < s.height && x >= 0 && x < s.width;
}

template <typename T, Pair kPair>
__global__ void pair_kernel(Shape s, const T* __restrict__ left, const T* __restrict__ right,
                            const int64_t* __restrict__ offsets, T* __restrict__ out) {
  using A = typename Accumulator<T>::type;
  const int64_t plane = s.height * s.width;
  const int64_t n = s.batch * s.count * plane;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{blockDim.x} * gridDim.x) {
    const int64_t x = i % s.width, y = (i / s.width) % s.height;
    const int64_t k = (i / plane) % s.count, b = i / (plane * s.count);
    const int64_t ys = y + __ldg(offsets + 2 * k), xs = x + __ldg(offsets + 2 * k + 1);
    A acc = 0;
    if (inside(ys, xs, s)) {
      const T* l = left + b * s.channels * plane + y * s.width + x;
      const T* r = right + b * s.channels * plane + ys * s.width + xs;
      for (int64_t c = 0; c < s.channels; ++c) {
        acc += pair_term<kPair>(widen(l[c * plane]), widen(r[c * plane]));
      }
    }
    out[i] = narrow<T>(acc);
  }
}

template <typename T, Gather kGather>
__global__ void gather_kernel(Shape s, const T* __restrict__ coef, const T* __restrict__ values,
                              const int64_t* __restrict__ offsets, T* __restrict__ out) {
  using A = typename Accumulator<T>::type;
  constexpr bool kForward = kGather != Gather::Transpose;
  constexpr bool kBackward = kGather != Gather::Aggregate;
  const int64_t plane = s.height * s.width;
  const int64_t n = s.batch * s.channels * plane;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{blockDim.x} * gridDim.x) {
    const int64_t x = i % s.width, y = (i / s.width) % s.height, b = i / (plane * s.channels);
    const T* v = values + (i / plane) * plane;
    const T* cf = coef + b * s.count * plane;
    const A centre = widen(v[y * s.width + x]);
    A acc = 0;
    for (int64_t k = 0; k < s.count; ++k) {
      const int64_t dy = __ldg(offsets + 2 * k), dx = __ldg(offsets + 2 * k + 1);
      if (kForward && inside(y + dy, x + dx, s)) {
        const A neighbour = widen(v[(y + dy) * s.width + x + dx]);
        acc += widen(cf[k * plane + y * s.width + x]) * gather_term<kGather>(centre, neighbour);
      }
      if (kBackward && inside(y - dy, x - dx, s)) {
        const int64_t q = (y - dy) * s.width + x - dx;
        acc += widen(cf[k * plane + q]) * gather_term<kGather>(centre, widen(v[q]));
      }
    }
    out[i] = narrow<T>(acc);
  }
}

int blocks_for(int64_t n) {
  return static_cast<int>(std::min<int64_t>((n + kThreads - 1) / kThreads, kMaxBlocks));
}

template <typename T>
cudaError_t pair_typed(Pair pair, const Shape& s, const void* left, const void* right,
                       const int64_t* offsets, void* out, cudaStream_t stream) {
  const int64_t n = s.batch * s.count * s.height * s.width;
  if (n == 0) return cudaSuccess;
  const T* l = static_cast<const T*>(left);
  const T* r = static_cast<const T*>(right);
  T* o = static_cast<T*>(out);
  switch (pair) {
    case Pair::L1:
      pair_kernel<T, Pair::L1><<<blocks_for(n), kThreads, 0, stream>>>(s, l, r, offsets, o);
      break;
    case Pair::L2:
      pair_kernel<T, Pair::L2><<<blocks_for(n), kThreads, 0, stream>>>(s, l, r, offsets, o);
      break;
    case Pair::Dot:
      pair_kernel<T, Pair::Dot><<<blocks_for(n), kThreads, 0, stream>>>(s, l, r, offsets, o);
      break;
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t gather_typed(Gather gather, const Shape& s, const void* coef, const void* values,
                         const int64_t* offsets, void* out, cudaStream_t stream) {
  const int64_t n = s.batch * s.channels * s.height * s.width;
  if (n == 0) return cudaSuccess;
  const T* c = static_cast<const T*>(coef);
  const T* v = static_cast<const T*>(values);
  T* o = static_cast<T*>(out);
  const int blocks = blocks_for(n);
  switch (gather) {
    case Gather::Aggregate:
      gather_kernel<T, Gather::Aggregate><<<blocks, kThreads, 0, stream>>>(s, c, v, offsets, o);
      break;
    case Gather::Transpose:
      gather_kernel<T, Gather::Transpose><<<blocks, kThreads, 0, stream>>>(s, c, v, offsets, o);
      break;
    case Gather::L1Grad:
      gather_kernel<T, Gather::L1Grad><<<blocks, kThreads, 0, stream>>>(s, c, v, offsets, o);
      break;
    case Gather::L2Grad:
      gather_kernel<T, Gather::L2Grad><<<blocks, kThreads, 0, stream>>>(s, c, v, offsets, o);
      break;
    case Gather::DotGrad:
      gather_kernel<T, Gather::DotGrad><<<blocks, kThreads, 0, stream>>>(s, c, v, offsets, o);
      break;
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_pair(DType dtype, Pair pair, const Shape& shape, const void* left,
                        const void* right, const int64_t* offsets, void* out,
                        cudaStream_t stream) {
  switch (dtype) {
    case DType::Float16:
      return pair_typed<__half>(pair, shape, left, right, offsets, out, stream);
    case DType::BFloat16:
      return pair_typed<__nv_bfloat16>(pair, shape, left, right, offsets, out, stream);
    case DType::Float32:
      return pair_typed<float>(pair, shape, left, right, offsets, out, stream);
    case DType::Float64:
      return pair_typed<double>(pair, shape, left, right, offsets, out, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t launch_gather(DType dtype, Gather gather, const Shape& shape, const void* coef,
                          const void* values, const int64_t* offsets, void* out,
                          cudaStream_t stream) {
  switch (dtype) {
    case DType::Float16:
      return gather_typed<__half>(gather, shape, coef, values, offsets, out, stream);
    case DType::BFloat16:
      return gather_typed<__nv_bfloat16>(gather, shape, coef, values, offsets, out, stream);
    case DType::Float32:
      return gather_typed<float>(gather, shape, coef, values, offsets, out, stream);
    case DType::Float64:
      return gather_typed<double>(gather, shape, coef, values, offsets, out, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace cuda
}  // namespace graphseg_ext
