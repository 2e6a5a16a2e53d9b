// XLA FFI handlers running a 2-D convolution, its input gradient and its
// weight gradient with oneDNN on CPU (float32, NHWC activations, HWIO kernels).
//
// Each distinct shape gets a plan, built on its first call and kept: the
// oneDNN primitive, with a reorder for each operand whose preferred layout
// differs from the array XLA holds (in practice only the kernel's). Calls are serialised: oneDNN runs each primitive on all cores itself.
// Built and loaded by cnnjax/kernels/onednn.py.

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "oneapi/dnnl/dnnl.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

enum Kind : int64_t { kForward = 0, kInputGradient = 1, kWeightGradient = 2 };

struct Operand {
  dnnl_memory_t outer = nullptr;      // the XLA buffer, its handle set per call
  dnnl_memory_t inner = nullptr;      // the primitive's layout; null when it is the same
  dnnl_primitive_t reorder = nullptr;  // outer -> inner for inputs, inner -> outer for the result
  int arg = 0;
};

struct Plan {
  dnnl_primitive_t primitive = nullptr;
  Operand in0, in1, out;
};

struct Shape {
  int64_t n, h, w, ci, co, kh, kw, oh, ow;
};

dnnl_engine_t engine = nullptr;
dnnl_stream_t stream = nullptr;
std::mutex mutex;
std::map<std::array<int64_t, 16>, std::unique_ptr<Plan>> plans;

#define CHECK_DNNL(call, what)                                               \
  do {                                                                       \
    dnnl_status_t status_ = (call);                                          \
    if (status_ != dnnl_success)                                             \
      return std::string(what) + " failed (oneDNN status " +                 \
             std::to_string(static_cast<int>(status_)) + ")";                \
  } while (0)

std::string MakeDesc(dnnl_memory_desc_t* desc, std::array<int64_t, 4> dims, dnnl_format_tag_t tag) {
  dnnl_dims_t d = {dims[0], dims[1], dims[2], dims[3]};
  CHECK_DNNL(dnnl_memory_desc_create_with_tag(desc, 4, d, dnnl_f32, tag), "memory descriptor");
  return "";
}

// Binds operand `op` (XLA layout `outer_desc`) to the primitive's layout `inner_desc`.
std::string BindOperand(Operand* op, const_dnnl_memory_desc_t outer_desc,
                        const_dnnl_memory_desc_t inner_desc, bool is_result, int arg) {
  op->arg = arg;
  CHECK_DNNL(dnnl_memory_create(&op->outer, outer_desc, engine, DNNL_MEMORY_NONE), "memory");
  if (dnnl_memory_desc_equal(outer_desc, inner_desc)) return "";
  CHECK_DNNL(dnnl_memory_create(&op->inner, inner_desc, engine, DNNL_MEMORY_ALLOCATE), "memory");
  dnnl_primitive_desc_t reorder_pd;
  const_dnnl_memory_desc_t from = is_result ? inner_desc : outer_desc;
  const_dnnl_memory_desc_t to = is_result ? outer_desc : inner_desc;
  CHECK_DNNL(dnnl_reorder_primitive_desc_create(&reorder_pd, from, engine, to, engine, nullptr), "reorder");
  CHECK_DNNL(dnnl_primitive_create(&op->reorder, reorder_pd), "reorder primitive");
  dnnl_primitive_desc_destroy(reorder_pd);
  return "";
}

std::string BuildPlan(Plan* plan, Kind kind, const Shape& s, const std::array<int64_t, 6>& geometry) {
  if (engine == nullptr) {
    CHECK_DNNL(dnnl_engine_create(&engine, dnnl_cpu, 0), "engine");
    CHECK_DNNL(dnnl_stream_create(&stream, engine, dnnl_stream_default_flags), "stream");
  }
  // oneDNN's logical dimensions: activations (N, C, H, W), weights (O, I, H, W).
  // Activations stay NHWC: oneDNN has direct NHWC kernels for all three
  // primitives, and reordering activations to blocked channels and back cost
  // more than the blocked kernels saved (ResNet-20, batch 128: 63 ms of a
  // 281 ms step). Weights take whatever layout the primitive prefers (tiny reorders).
  dnnl_memory_desc_t x, w, y, w_any;
  std::string error;
  if (!(error = MakeDesc(&x, {s.n, s.ci, s.h, s.w}, dnnl_nhwc)).empty()) return error;
  if (!(error = MakeDesc(&w, {s.co, s.ci, s.kh, s.kw}, dnnl_hwio)).empty()) return error;
  if (!(error = MakeDesc(&y, {s.n, s.co, s.oh, s.ow}, dnnl_nhwc)).empty()) return error;
  if (!(error = MakeDesc(&w_any, {s.co, s.ci, s.kh, s.kw}, dnnl_format_tag_any)).empty()) return error;
  const_dnnl_memory_desc_t x_any = x, y_any = y;
  dnnl_dims_t strides = {geometry[0], geometry[1]};
  dnnl_dims_t dilates = {0, 0};
  dnnl_dims_t pad_l = {geometry[2], geometry[4]};
  dnnl_dims_t pad_r = {geometry[3], geometry[5]};

  dnnl_primitive_desc_t forward_pd, pd;
  CHECK_DNNL(dnnl_convolution_forward_primitive_desc_create(
                 &forward_pd, engine, dnnl_forward_training, dnnl_convolution_direct, x_any, w_any,
                 nullptr, y_any, strides, dilates, pad_l, pad_r, nullptr),
             "convolution forward descriptor");
  if (kind == kForward) {
    pd = forward_pd;
  } else if (kind == kInputGradient) {
    CHECK_DNNL(dnnl_convolution_backward_data_primitive_desc_create(
                   &pd, engine, dnnl_convolution_direct, x_any, w_any, y_any, strides, dilates,
                   pad_l, pad_r, forward_pd, nullptr),
               "convolution input-gradient descriptor");
  } else {
    CHECK_DNNL(dnnl_convolution_backward_weights_primitive_desc_create(
                   &pd, engine, dnnl_convolution_direct, x_any, w_any, nullptr, y_any, strides,
                   dilates, pad_l, pad_r, forward_pd, nullptr),
               "convolution weight-gradient descriptor");
  }
  CHECK_DNNL(dnnl_primitive_create(&plan->primitive, pd), "convolution primitive");

  auto chosen = [&](dnnl_query_t what) { return dnnl_primitive_desc_query_md(pd, what, 0); };
  if (kind == kForward) {
    if (!(error = BindOperand(&plan->in0, x, chosen(dnnl_query_src_md), false, DNNL_ARG_SRC)).empty()) return error;
    if (!(error = BindOperand(&plan->in1, w, chosen(dnnl_query_weights_md), false, DNNL_ARG_WEIGHTS)).empty()) return error;
    if (!(error = BindOperand(&plan->out, y, chosen(dnnl_query_dst_md), true, DNNL_ARG_DST)).empty()) return error;
  } else if (kind == kInputGradient) {
    if (!(error = BindOperand(&plan->in0, y, chosen(dnnl_query_diff_dst_md), false, DNNL_ARG_DIFF_DST)).empty()) return error;
    if (!(error = BindOperand(&plan->in1, w, chosen(dnnl_query_weights_md), false, DNNL_ARG_WEIGHTS)).empty()) return error;
    if (!(error = BindOperand(&plan->out, x, chosen(dnnl_query_diff_src_md), true, DNNL_ARG_DIFF_SRC)).empty()) return error;
  } else {
    if (!(error = BindOperand(&plan->in0, x, chosen(dnnl_query_src_md), false, DNNL_ARG_SRC)).empty()) return error;
    if (!(error = BindOperand(&plan->in1, y, chosen(dnnl_query_diff_dst_md), false, DNNL_ARG_DIFF_DST)).empty()) return error;
    if (!(error = BindOperand(&plan->out, w, chosen(dnnl_query_diff_weights_md), true, DNNL_ARG_DIFF_WEIGHTS)).empty()) return error;
  }
  if (pd != forward_pd) dnnl_primitive_desc_destroy(pd);
  dnnl_primitive_desc_destroy(forward_pd);
  for (auto desc : {x, w, y, w_any}) dnnl_memory_desc_destroy(desc);
  return "";
}

std::string Reorder(const Operand& op, bool is_result) {
  dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, is_result ? op.inner : op.outer},
                             {DNNL_ARG_TO, is_result ? op.outer : op.inner}};
  CHECK_DNNL(dnnl_primitive_execute(op.reorder, stream, 2, args), "reorder");
  return "";
}

std::string Execute(Kind kind, const Shape& s, const std::array<int64_t, 6>& geometry,
                    void* in0, void* in1, void* out) {
  std::array<int64_t, 16> key = {kind, s.n, s.h, s.w, s.ci, s.co, s.kh, s.kw, s.oh, s.ow,
                                 geometry[0], geometry[1], geometry[2], geometry[3], geometry[4], geometry[5]};
  std::lock_guard<std::mutex> lock(mutex);
  auto found = plans.find(key);
  if (found == plans.end()) {
    auto plan = std::make_unique<Plan>();
    std::string error = BuildPlan(plan.get(), kind, s, geometry);
    if (!error.empty()) return error;
    found = plans.emplace(key, std::move(plan)).first;
  }
  Plan& plan = *found->second;
  std::string error;
  CHECK_DNNL(dnnl_memory_set_data_handle(plan.in0.outer, in0), "input handle");
  CHECK_DNNL(dnnl_memory_set_data_handle(plan.in1.outer, in1), "input handle");
  CHECK_DNNL(dnnl_memory_set_data_handle(plan.out.outer, out), "result handle");
  for (const Operand* op : {&plan.in0, &plan.in1})
    if (op->reorder != nullptr && !(error = Reorder(*op, false)).empty()) return error;
  dnnl_exec_arg_t args[3];
  int i = 0;
  for (const Operand* op : {&plan.in0, &plan.in1, &plan.out})
    args[i++] = {op->arg, op->inner != nullptr ? op->inner : op->outer};
  CHECK_DNNL(dnnl_primitive_execute(plan.primitive, stream, 3, args), "convolution");
  if (plan.out.reorder != nullptr && !(error = Reorder(plan.out, true)).empty()) return error;
  CHECK_DNNL(dnnl_stream_wait(stream), "stream wait");
  return "";
}

ffi::Error Run(Kind kind, ffi::Buffer<ffi::F32, 4> in0, ffi::Buffer<ffi::F32, 4> in1,
               ffi::ResultBuffer<ffi::F32, 4> out, int64_t stride_h, int64_t stride_w,
               int64_t pad_top, int64_t pad_bottom, int64_t pad_left, int64_t pad_right) {
  // Operands: forward (x, w) -> y; input gradient (dy, w) -> dx; weight gradient (x, dy) -> dw.
  auto x = kind == kInputGradient ? out->dimensions() : in0.dimensions();
  auto w = kind == kWeightGradient ? out->dimensions() : in1.dimensions();
  auto y = kind == kForward ? out->dimensions() : kind == kInputGradient ? in0.dimensions() : in1.dimensions();
  Shape s = {x[0], x[1], x[2], x[3], w[3], w[0], w[1], y[1], y[2]};
  std::string error = Execute(kind, s, {stride_h, stride_w, pad_top, pad_bottom, pad_left, pad_right},
                              in0.untyped_data(), in1.untyped_data(), out->untyped_data());
  if (!error.empty()) return ffi::Error(ffi::ErrorCode::kInternal, "oneDNN convolution: " + error);
  return ffi::Error::Success();
}

template <Kind kind>
ffi::Error RunKind(ffi::Buffer<ffi::F32, 4> in0, ffi::Buffer<ffi::F32, 4> in1,
                   ffi::ResultBuffer<ffi::F32, 4> out, int64_t stride_h, int64_t stride_w,
                   int64_t pad_top, int64_t pad_bottom, int64_t pad_left, int64_t pad_right) {
  return Run(kind, in0, in1, out, stride_h, stride_w, pad_top, pad_bottom, pad_left, pad_right);
}

}  // namespace

#define CNNJAX_BIND                             \
  ffi::Ffi::Bind()                              \
      .Arg<ffi::Buffer<ffi::F32, 4>>()          \
      .Arg<ffi::Buffer<ffi::F32, 4>>()          \
      .Ret<ffi::Buffer<ffi::F32, 4>>()          \
      .Attr<int64_t>("stride_h")                \
      .Attr<int64_t>("stride_w")                \
      .Attr<int64_t>("pad_top")                 \
      .Attr<int64_t>("pad_bottom")              \
      .Attr<int64_t>("pad_left")                \
      .Attr<int64_t>("pad_right")

XLA_FFI_DEFINE_HANDLER_SYMBOL(CnnjaxConvForward, RunKind<kForward>, CNNJAX_BIND);
XLA_FFI_DEFINE_HANDLER_SYMBOL(CnnjaxConvInputGradient, RunKind<kInputGradient>, CNNJAX_BIND);
XLA_FFI_DEFINE_HANDLER_SYMBOL(CnnjaxConvWeightGradient, RunKind<kWeightGradient>, CNNJAX_BIND);
