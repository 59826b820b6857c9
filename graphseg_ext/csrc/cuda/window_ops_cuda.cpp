// The CUDA backend of WindowOps: layouts, device guard and stream around the launchers of
// window_kernels.cu. Compiled only when torch has CUDA (see setup.py).
#include "cuda/window_kernels.cuh"
#include "window_ops.h"

#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

namespace graphseg_ext {
namespace {

cuda::DType dtype_of(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kHalf:
      return cuda::DType::Float16;
    case at::kBFloat16:
      return cuda::DType::BFloat16;
    case at::kFloat:
      return cuda::DType::Float32;
    case at::kDouble:
      return cuda::DType::Float64;
    default:
      TORCH_CHECK_TYPE(false, "graphseg_ext CUDA kernels take float16, bfloat16, float32 or ",
                       "float64 tensors, got ", t.scalar_type());
  }
}

cuda::Pair pair_of(PairKind kind) {
  switch (kind) {
    case PairKind::L1:
      return cuda::Pair::L1;
    case PairKind::L2:
      return cuda::Pair::L2;
    case PairKind::Dot:
      return cuda::Pair::Dot;
  }
  TORCH_INTERNAL_ASSERT(false, "unhandled PairKind");
}

cuda::Gather gather_of(Gather gather) {
  switch (gather) {
    case Gather::Aggregate:
      return cuda::Gather::Aggregate;
    case Gather::Transpose:
      return cuda::Gather::Transpose;
    case Gather::L1Grad:
      return cuda::Gather::L1Grad;
    case Gather::L2Grad:
      return cuda::Gather::L2Grad;
    case Gather::DotGrad:
      return cuda::Gather::DotGrad;
  }
  TORCH_INTERNAL_ASSERT(false, "unhandled Gather");
}

cuda::Shape shape_of(const at::Tensor& image, const at::Tensor& offsets) {
  return {image.size(0), image.size(1), image.size(2), image.size(3), offsets.size(0)};
}

void check_launch(cudaError_t status) {
  TORCH_CHECK(status == cudaSuccess, "graphseg_ext CUDA kernel failed: ",
              cudaGetErrorString(status));
}

struct Cuda {
  static at::Tensor empty(at::IntArrayRef sizes, const at::TensorOptions& options) {
    return at::empty(sizes, options);
  }

  static void pair(const at::Tensor& left, const at::Tensor& right, const at::Tensor& offsets,
                   PairKind kind, const at::Tensor& out) {
    if (out.numel() == 0) return;
    const c10::cuda::CUDAGuard guard(left.device());
    const at::Tensor l = left.contiguous();
    const at::Tensor r = right.is_same(left) ? l : right.contiguous();
    const at::Tensor off = offsets.contiguous();
    check_launch(cuda::launch_pair(dtype_of(l), pair_of(kind), shape_of(l, off),
                                   l.const_data_ptr(), r.const_data_ptr(),
                                   off.const_data_ptr<int64_t>(), out.mutable_data_ptr(),
                                   c10::cuda::getCurrentCUDAStream()));
  }

  static void gather(const at::Tensor& coef, const at::Tensor& values, const at::Tensor& offsets,
                     Gather gather, const at::Tensor& out) {
    if (out.numel() == 0) return;
    const c10::cuda::CUDAGuard guard(values.device());
    const at::Tensor c = coef.contiguous();
    const at::Tensor v = values.contiguous();
    const at::Tensor off = offsets.contiguous();
    check_launch(cuda::launch_gather(dtype_of(v), gather_of(gather), shape_of(v, off),
                                     c.const_data_ptr(), v.const_data_ptr(),
                                     off.const_data_ptr<int64_t>(), out.mutable_data_ptr(),
                                     c10::cuda::getCurrentCUDAStream()));
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(graphseg_ext, CUDA, m) { WindowOps<Cuda>::register_kernels(m); }

}  // namespace graphseg_ext
