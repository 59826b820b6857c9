// Operator schemas of graphseg_ext, the argument checks every backend shares, and the Python
// module entry point. Kernels live in cpu/ and cuda/; autograd and fake kernels are registered
// from Python (graphseg_ext/_registration.py).
#include "lattice_ops.h"
#include "window_ops.h"

#include <ATen/MemoryOverlap.h>
#include <Python.h>
#include <torch/library.h>

namespace graphseg_ext {

PairKind parse_kind(std::string_view kind) {
  if (kind == "l1") return PairKind::L1;
  if (kind == "l2") return PairKind::L2;
  if (kind == "dot") return PairKind::Dot;
  TORCH_CHECK_VALUE(false, "kind must be one of 'dot', 'l1', 'l2', got '", kind, "'");
}

Gather gradient_of(PairKind kind) {
  switch (kind) {
    case PairKind::L1:
      return Gather::L1Grad;
    case PairKind::L2:
      return Gather::L2Grad;
    case PairKind::Dot:
      return Gather::DotGrad;
  }
  TORCH_INTERNAL_ASSERT(false, "unhandled PairKind");
}

std::vector<int64_t> pair_shape(const at::Tensor& image, const at::Tensor& offsets) {
  return {image.size(0), offsets.size(0), image.size(2), image.size(3)};
}

namespace {

void check_offsets(const char* op, const at::Tensor& offsets, const at::Tensor& like) {
  TORCH_CHECK_VALUE(offsets.dim() == 2 && offsets.size(1) == 2, op,
                    ": offsets must have shape (K, 2), got ", offsets.sizes());
  TORCH_CHECK_TYPE(offsets.scalar_type() == at::kLong, op, ": offsets must be int64, got ",
                   offsets.scalar_type());
  TORCH_CHECK_VALUE(offsets.device() == like.device(), op, ": offsets must be on ",
                    like.device(), " like the data, got ", offsets.device());
}

void check_image(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK_VALUE(t.dim() == 4, op, ": ", name, " must have shape (B, C, H, W), got ",
                    t.sizes());
  TORCH_CHECK_TYPE(at::isFloatingType(t.scalar_type()), op, ": ", name,
                   " must be floating point, got ", t.scalar_type());
}

void check_same_kind(const char* op, const char* name_a, const at::Tensor& a, const char* name_b,
                     const at::Tensor& b) {
  TORCH_CHECK_TYPE(a.scalar_type() == b.scalar_type(), op, ": ", name_a, " and ", name_b,
                   " must share a dtype, got ", a.scalar_type(), " and ", b.scalar_type());
  TORCH_CHECK_VALUE(a.device() == b.device(), op, ": ", name_a, " and ", name_b,
                    " must be on the same device, got ", a.device(), " and ", b.device());
}

}  // namespace

void check_pair_args(const char* op, const at::Tensor& left, const at::Tensor& right,
                     const at::Tensor& offsets, const char* left_name, const char* right_name) {
  check_image(op, left_name, left);
  check_image(op, right_name, right);
  TORCH_CHECK_VALUE(left.sizes() == right.sizes(), op, ": ", left_name, " and ", right_name,
                    " must have the same shape, got ", left.sizes(), " and ", right.sizes());
  check_same_kind(op, left_name, left, right_name, right);
  check_offsets(op, offsets, left);
}

void check_aggregate_args(const char* op, const at::Tensor& weight, const at::Tensor& values,
                          const at::Tensor& offsets, const char* weight_name,
                          const char* values_name) {
  check_image(op, weight_name, weight);
  check_image(op, values_name, values);
  TORCH_CHECK_VALUE(weight.size(0) == values.size(0) && weight.size(2) == values.size(2) &&
                        weight.size(3) == values.size(3),
                    op, ": ", weight_name, " (B, K, H, W) and ", values_name,
                    " (B, C, H, W) must share B, H and W, got ", weight.sizes(), " and ",
                    values.sizes());
  check_same_kind(op, weight_name, weight, values_name, values);
  check_offsets(op, offsets, weight);
  TORCH_CHECK_VALUE(weight.size(1) == offsets.size(0), op, ": ", weight_name, " has ",
                    weight.size(1), " window entries (dim 1) but offsets has ", offsets.size(0),
                    " rows");
}

void check_out_arg(const char* op, const at::Tensor& out, at::IntArrayRef shape,
                   at::TensorList inputs) {
  TORCH_CHECK_VALUE(out.sizes() == shape, op, ": out must have shape ", shape, ", got ",
                    out.sizes());
  check_same_kind(op, "out", out, "the inputs", inputs[0]);
  TORCH_CHECK_VALUE(out.is_contiguous(), op, ": out must be contiguous");
  at::assert_no_internal_overlap(out);
  for (const at::Tensor& input : inputs) at::assert_no_overlap(out, input);
}

void check_lattice_features(const at::Tensor& features) {
  TORCH_CHECK_VALUE(features.dim() == 2 && features.size(1) >= 1 && features.size(1) <= kMaxDim,
                    "lattice_build: features must have shape (N, d) with 1 <= d <= ", kMaxDim,
                    ", got ", features.sizes());
  TORCH_CHECK_TYPE(features.scalar_type() == at::kDouble,
                   "lattice_build: features must be float64, got ", features.scalar_type());
}

namespace {

// index and neighbours int32, neighbours (d + 1, 2, M) for index (N, d + 1), both on the device
// of `like` (named `like_name`).
void check_lattice_tables(const char* op, const at::Tensor& index, const at::Tensor& neighbours,
                          const char* like_name, const at::Tensor& like) {
  TORCH_CHECK_TYPE(index.scalar_type() == at::kInt && neighbours.scalar_type() == at::kInt, op,
                   ": index and neighbours must be int32, got ", index.scalar_type(), " and ",
                   neighbours.scalar_type());
  TORCH_CHECK_VALUE(neighbours.dim() == 3 && neighbours.size(0) == index.size(1) &&
                        neighbours.size(1) == 2,
                    op, ": neighbours must have shape (d + 1, 2, M) with d + 1 = ", index.size(1),
                    ", got ", neighbours.sizes());
  for (const at::Tensor* t : {&index, &neighbours}) {
    TORCH_CHECK_VALUE(t->device() == like.device(), op, ": index and neighbours must be on the ",
                      "device of ", like_name, ", ", like.device(), ", got ", t->device());
  }
}

}  // namespace

void check_lattice_filter_args(const at::Tensor& values, const at::Tensor& index,
                               const at::Tensor& splat_weight, const at::Tensor& slice_weight,
                               const at::Tensor& neighbours) {
  const char* op = "lattice_filter";
  TORCH_CHECK_VALUE(values.dim() == 2, op, ": values must have shape (N, C), got ",
                    values.sizes());
  TORCH_CHECK_TYPE(at::isFloatingType(values.scalar_type()), op,
                   ": values must be floating point, got ", values.scalar_type());
  TORCH_CHECK_VALUE(index.dim() == 2 && index.size(0) == values.size(0) && index.size(1) >= 2 &&
                        index.size(1) <= kMaxDim + 1,
                    op, ": index must have shape (N, d + 1) with N = ", values.size(0),
                    " rows like values, got ", index.sizes());
  for (const auto& [name, weight] : {std::pair<const char*, const at::Tensor&>{"splat_weight",
                                                                             splat_weight},
                                      {"slice_weight", slice_weight}}) {
    TORCH_CHECK_VALUE(weight.sizes() == index.sizes(), op, ": ", name,
                      " must have index's shape ", index.sizes(), ", got ", weight.sizes());
    check_same_kind(op, "values", values, name, weight);
  }
  check_lattice_tables(op, index, neighbours, "values", values);
}

void check_lattice_sum_args(const at::Tensor& values, const at::Tensor& base,
                            at::TensorList index, at::TensorList splat_weight,
                            at::TensorList slice_weight, at::TensorList neighbours) {
  const char* op = "lattice_filter_sum";
  TORCH_CHECK_VALUE(!index.empty() && splat_weight.size() == index.size() &&
                        slice_weight.size() == index.size() && neighbours.size() == index.size(),
                    op, ": index, splat_weight, slice_weight and neighbours must be lists of one "
                    "tensor per lattice (at least one), got lengths ", index.size(), ", ",
                    splat_weight.size(), ", ", slice_weight.size(), " and ", neighbours.size());
  TORCH_CHECK_VALUE(base.sizes() == values.sizes(), op, ": base must have the shape of values ",
                    values.sizes(), ", got ", base.sizes());
  check_same_kind(op, "values", values, "base", base);
  for (std::size_t l = 0; l < index.size(); ++l) {
    check_lattice_filter_args(values, index[l], splat_weight[l], slice_weight[l], neighbours[l]);
  }
}

void check_lattice_diagonal_args(const at::Tensor& index, const at::Tensor& weight,
                                 const at::Tensor& neighbours) {
  const char* op = "lattice_diagonal";
  TORCH_CHECK_VALUE(index.dim() == 2 && index.size(1) >= 2 && index.size(1) <= kMaxDim + 1, op,
                    ": index must have shape (N, d + 1) with 1 <= d <= ", kMaxDim, ", got ",
                    index.sizes());
  TORCH_CHECK_VALUE(weight.sizes() == index.sizes(), op, ": weight must have index's shape ",
                    index.sizes(), ", got ", weight.sizes());
  TORCH_CHECK_TYPE(weight.scalar_type() == at::kFloat || weight.scalar_type() == at::kDouble, op,
                   ": weight must be float32 or float64, got ", weight.scalar_type());
  check_lattice_tables(op, index, neighbours, "weight", weight);
}

TORCH_LIBRARY(graphseg_ext, m) {
  m.def("local_affinity(Tensor features, Tensor offsets, str kind) -> Tensor");
  m.def("local_affinity_out(Tensor features, Tensor offsets, str kind, Tensor(a!) out) -> ()");
  m.def("local_affinity_backward(Tensor grad, Tensor features, Tensor offsets, str kind) "
        "-> Tensor");
  m.def("window_aggregate(Tensor weight, Tensor values, Tensor offsets) -> Tensor");
  m.def("window_aggregate_out(Tensor weight, Tensor values, Tensor offsets, Tensor(a!) out) -> ()");
  m.def("window_aggregate_transpose(Tensor weight, Tensor values, Tensor offsets) -> Tensor");
  m.def("window_aggregate_transpose_out(Tensor weight, Tensor values, Tensor offsets, "
        "Tensor(a!) out) -> ()");
  m.def("window_dot(Tensor left, Tensor right, Tensor offsets) -> Tensor");
  m.def("window_dot_out(Tensor left, Tensor right, Tensor offsets, Tensor(a!) out) -> ()");
  m.def("window_aggregate_power(Tensor weight, Tensor values, Tensor offsets, int num_steps, "
        "int steps_per_pass=0) -> Tensor");
  m.def("cpu_clone() -> str", &cpu_clone);
  m.def("lattice_build(Tensor features) -> (Tensor, Tensor, Tensor)");
  m.def("lattice_filter(Tensor values, Tensor index, Tensor splat_weight, Tensor slice_weight, "
        "Tensor neighbours, bool reverse=False) -> Tensor");
  m.def("lattice_filter_sum(Tensor values, Tensor base, Tensor[] index, Tensor[] splat_weight, "
        "Tensor[] slice_weight, Tensor[] neighbours, float upper) -> Tensor");
  m.def("lattice_diagonal(Tensor index, Tensor weight, Tensor neighbours) -> Tensor");
}

}  // namespace graphseg_ext

namespace {

PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_C",
    "Compiled kernels of graphseg_ext; the ops are torch.ops.graphseg_ext.*.", -1, nullptr,
};

}  // namespace

// Importing the module runs the static TORCH_LIBRARY registrations above; WITH_CUDA tells Python
// whether CUDA kernels were compiled in.
PyMODINIT_FUNC PyInit__C() {
  PyObject* module = PyModule_Create(&module_def);
#ifdef GRAPHSEG_WITH_CUDA
  const long with_cuda = 1;
#else
  const long with_cuda = 0;
#endif
  if (module != nullptr && PyModule_AddIntConstant(module, "WITH_CUDA", with_cuda) < 0) {
    Py_DECREF(module);
    return nullptr;
  }
  return module;
}
