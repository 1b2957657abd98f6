#include "objects/tensor_handle.h"

#include "napi/addon_data.h"
#include "napi/convert.h"
#include "napi/errors.h"
#include "napi/tagged_method.h"

#include <ATen/ATen.h>

#include <cmath>
#include <cstring>
#include <sstream>
#include <string>

namespace bce {
namespace {

// Tags every handle so that a handle is recognised across realms and module copies, never by instanceof.
const napi_type_tag kTensorTag = {0x6b5e3f1a2c4d4e8bULL, 0x9a7c1d2e3f405162ULL};

int64_t LogicalBytes(const at::Tensor& tensor) {
  return tensor.defined() ? static_cast<int64_t>(tensor.numel()) * static_cast<int64_t>(tensor.element_size()) : 0;
}

template <typename T>
Napi::Value CopyOut(Napi::Env env, const at::Tensor& cpu, napi_typedarray_type type) {
  const size_t count = static_cast<size_t>(cpu.numel());
  Napi::ArrayBuffer buffer = Napi::ArrayBuffer::New(env, count * sizeof(T));
  if (count > 0) std::memcpy(buffer.Data(), cpu.data_ptr(), count * sizeof(T));
  return Napi::TypedArrayOf<T>::New(env, count, buffer, 0, type);
}

// PyTorch's name of a dtype this package does not support (torch.int8 rather than LibTorch's "Char").
std::string TorchDtypeName(c10::ScalarType type) {
  switch (type) {
    case c10::ScalarType::Char: return "torch.int8";
    case c10::ScalarType::Short: return "torch.int16";
    case c10::ScalarType::ComplexHalf: return "torch.complex32";
    case c10::ScalarType::ComplexFloat: return "torch.complex64";
    case c10::ScalarType::ComplexDouble: return "torch.complex128";
    case c10::ScalarType::QInt8: return "torch.qint8";
    case c10::ScalarType::QUInt8: return "torch.quint8";
    case c10::ScalarType::QInt32: return "torch.qint32";
    default: return c10::toString(type);
  }
}

// Why `tensor` cannot be wrapped (and how to convert it where it is made), or "" when it can.
std::string UnsupportedReason(const at::Tensor& tensor) {
  if (tensor.is_nested())
    return "a nested tensor, which this package does not support: pad it first (to_padded_tensor)";
  if (tensor.layout() != at::kStrided) {
    std::ostringstream layout;
    layout << tensor.layout();
    return "a tensor of layout " + layout.str() +
           ", which this package does not support (only dense, strided tensors): convert it first (to_dense())";
  }
  const c10::ScalarType type = tensor.scalar_type();
  if (!IsDtypeName(DtypeName(type))) {
    std::string hint = "convert it first (.to() one of them)";
    if (c10::isComplexType(type)) hint = "take its parts first (torch.view_as_real, .real, .imag, .abs())";
    if (c10::isQIntType(type)) hint = "dequantize it first (.dequantize())";
    return "a tensor of dtype " + TorchDtypeName(type) +
           ", which this package does not support (float32, float64, float16, bfloat16, int32, int64, uint8, bool): " +
           hint;
  }
  const c10::DeviceType device = tensor.device().type();
  if (device != c10::DeviceType::CPU && device != c10::DeviceType::CUDA) {
    return "a tensor on device " + tensor.device().str() +
           ", which this package does not support (only cpu and cuda): move it first (.to('cpu'))";
  }
  return "";
}

}  // namespace

Napi::Function TensorHandle::Define(Napi::Env env) {
  Napi::Function constructor = DefineClass(env, "TensorHandle", {});
  AddTaggedMethod<TensorHandle, &kTensorTag, &TensorHandle::Shape>(env, constructor, "shape");
  AddTaggedMethod<TensorHandle, &kTensorTag, &TensorHandle::Dtype>(env, constructor, "dtype");
  AddTaggedMethod<TensorHandle, &kTensorTag, &TensorHandle::Device>(env, constructor, "device");
  AddTaggedMethod<TensorHandle, &kTensorTag, &TensorHandle::Numel>(env, constructor, "numel");
  AddTaggedMethod<TensorHandle, &kTensorTag, &TensorHandle::RequiresGrad>(env, constructor, "requiresGrad");
  AddTaggedMethod<TensorHandle, &kTensorTag, &TensorHandle::SetRequiresGrad>(env, constructor, "setRequiresGrad");
  AddTaggedMethod<TensorHandle, &kTensorTag, &TensorHandle::Grad>(env, constructor, "grad");
  AddTaggedMethod<TensorHandle, &kTensorTag, &TensorHandle::ToArray>(env, constructor, "toArray");
  AddTaggedMethod<TensorHandle, &kTensorTag, &TensorHandle::Item>(env, constructor, "item");
  AddTaggedMethod<TensorHandle, &kTensorTag, &TensorHandle::To>(env, constructor, "to");
  AddTaggedMethod<TensorHandle, &kTensorTag, &TensorHandle::Detach>(env, constructor, "detach");
  AddTaggedMethod<TensorHandle, &kTensorTag, &TensorHandle::Reshape>(env, constructor, "reshape");
  AddTaggedMethod<TensorHandle, &kTensorTag, &TensorHandle::Sum>(env, constructor, "sum");
  AddTaggedMethod<TensorHandle, &kTensorTag, &TensorHandle::Mean>(env, constructor, "mean");
  AddTaggedMethod<TensorHandle, &kTensorTag, &TensorHandle::Add>(env, constructor, "add");
  AddTaggedMethod<TensorHandle, &kTensorTag, &TensorHandle::Sub>(env, constructor, "sub");
  AddTaggedMethod<TensorHandle, &kTensorTag, &TensorHandle::Mul>(env, constructor, "mul");
  AddTaggedMethod<TensorHandle, &kTensorTag, &TensorHandle::Div>(env, constructor, "div");
  AddTaggedMethod<TensorHandle, &kTensorTag, &TensorHandle::Backward>(env, constructor, "backward");
  AddTaggedMethod<TensorHandle, &kTensorTag, &TensorHandle::Identity>(env, constructor, "identity");
  AddTaggedMethod<TensorHandle, &kTensorTag, &TensorHandle::Dispose>(env, constructor, "dispose");
  AddTaggedMethod<TensorHandle, &kTensorTag, &TensorHandle::IsDisposed>(env, constructor, "isDisposed");
  return constructor;
}

TensorHandle::TensorHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<TensorHandle>(info) {
  info.This().As<Napi::Object>().TypeTag(&kTensorTag);
}

Napi::Object TensorHandle::Wrap(Napi::Env env, at::Tensor tensor, const char* source) {
  if (tensor.defined()) {
    const std::string reason = UnsupportedReason(tensor);
    if (!reason.empty()) ThrowType(env, std::string(source) + " is " + reason);
  }
  Napi::Object object = GetAddonData(env).tensor_constructor.New({});
  TensorHandle* handle = Napi::ObjectWrap<TensorHandle>::Unwrap(object);
  handle->Reset(env, std::move(tensor));
  return object;
}

bool TensorHandle::IsHandle(const Napi::Value& value) {
  return value.IsObject() && value.As<Napi::Object>().CheckTypeTag(&kTensorTag);
}

at::Tensor TensorHandle::Peek(const Napi::Value& value) {
  if (!IsHandle(value)) return at::Tensor();
  return Napi::ObjectWrap<TensorHandle>::Unwrap(value.As<Napi::Object>())->tensor_;
}

at::Tensor TensorHandle::From(Napi::Env env, const Napi::Value& value, const char* what) {
  if (!IsHandle(value)) ThrowType(env, std::string(what) + " must be a Tensor");
  TensorHandle* handle = Napi::ObjectWrap<TensorHandle>::Unwrap(value.As<Napi::Object>());
  if (!handle->tensor_.defined())
    throw Napi::Error::New(env, std::string(what) + " was disposed and can no longer be used");
  return handle->tensor_;
}

const at::Tensor& TensorHandle::Live(Napi::Env env) const {
  if (!tensor_.defined()) throw Napi::Error::New(env, "the tensor was disposed and can no longer be used");
  return tensor_;
}

void TensorHandle::Reset(Napi::Env env, at::Tensor tensor) {
  Release(env);
  tensor_ = std::move(tensor);
  if (!tensor_.defined()) return;
  AddonData& data = GetAddonData(env);
  bytes_ = LogicalBytes(tensor_);
  counted_ = true;
  data.live_tensors += 1;
  data.live_bytes += bytes_;
  // The GC signal: host memory only (CUDA memory is managed by LibTorch's caching allocator), and a storage
  // once: a handle on a tensor that shares its storage (detach(), a view, a fresh leaf on existing logits)
  // reports nothing. Counting such aliases again told V8 of hundreds of MB per training step that did not exist,
  // and the GC work it then started on its background threads took a core from the kernels (the fused loss at
  // 8x19x512x1024 ran 20-30 % slower under a large JavaScript heap).
  const bool sole_owner = tensor_.has_storage() && tensor_.storage().use_count() == 1;
  external_bytes_ = tensor_.device().is_cpu() && sole_owner ? bytes_ : 0;
  if (external_bytes_ > 0) {
    data.reported_bytes += external_bytes_;
    Napi::MemoryManagement::AdjustExternalMemory(env, external_bytes_);
  }
}

void TensorHandle::Release(Napi::Env env) {
  if (counted_) {
    AddonData& data = GetAddonData(env);
    data.live_tensors -= 1;
    data.live_bytes -= bytes_;
    data.reported_bytes -= external_bytes_;
    if (external_bytes_ > 0 && !data.tearing_down) Napi::MemoryManagement::AdjustExternalMemory(env, -external_bytes_);
    counted_ = false;
    external_bytes_ = 0;
    bytes_ = 0;
  }
  tensor_ = at::Tensor();
}

void TensorHandle::Finalize(Napi::Env env) {
  try {
    Release(env);
  } catch (...) {
    // A finalizer must never throw; the tensor itself is freed with this object either way.
  }
}

Napi::Value TensorHandle::Shape(const Napi::CallbackInfo& info) {
  return ShapeToArray(info.Env(), Live(info.Env()).sizes());
}

Napi::Value TensorHandle::Dtype(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), DtypeName(Live(info.Env()).scalar_type()));
}

Napi::Value TensorHandle::Device(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), DeviceName(Live(info.Env()).device()));
}

Napi::Value TensorHandle::Numel(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(Live(info.Env()).numel()));
}

Napi::Value TensorHandle::RequiresGrad(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), Live(info.Env()).requires_grad());
}

Napi::Value TensorHandle::SetRequiresGrad(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const bool flag = ParseBool(env, info[0], "requiresGrad");
  const at::Tensor& t = Live(env);
  // LibTorch's C++ API would leave a computed tensor's flag as it is without a word (PyTorch refuses this too):
  // its requires_grad follows from its inputs.
  if (!flag && !t.is_leaf()) {
    ThrowType(env,
              "requiresGrad = false needs a leaf tensor; this one is a non-leaf, computed from tensors that require "
              "gradients: use detach() for a copy cut from the graph");
  }
  Guard(env, [&] { t.set_requires_grad(flag); });
  return env.Undefined();
}

Napi::Value TensorHandle::Grad(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  at::Tensor grad = Guard(env, [&] { return Live(env).grad(); });
  if (!grad.defined()) return env.Null();
  return Wrap(env, grad, "grad");
}

Napi::Value TensorHandle::ToArray(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  at::Tensor cpu = Guard(env, [&] {
    at::Tensor t = Live(env).detach();
    const auto type = t.scalar_type();
    if (type == at::kHalf || type == at::kBFloat16) t = t.to(at::kFloat);
    return t.to(at::kCPU).contiguous();
  });
  switch (cpu.scalar_type()) {
    case at::kFloat: return CopyOut<float>(env, cpu, napi_float32_array);
    case at::kDouble: return CopyOut<double>(env, cpu, napi_float64_array);
    case at::kInt: return CopyOut<int32_t>(env, cpu, napi_int32_array);
    case at::kLong: return CopyOut<int64_t>(env, cpu, napi_bigint64_array);
    case at::kByte: return CopyOut<uint8_t>(env, cpu, napi_uint8_array);
    case at::kBool: return CopyOut<uint8_t>(env, cpu, napi_uint8_array);
    default: ThrowType(env, "toArray: unsupported dtype " + DtypeName(cpu.scalar_type()));
  }
}

Napi::Value TensorHandle::Item(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const at::Tensor& t = Live(env);
  if (t.numel() != 1)
    ThrowRange(env, "item() needs a tensor with exactly one element, got " + std::to_string(t.numel()));
  c10::Scalar value = Guard(env, [&] { return t.item(); });
  if (value.isBoolean()) return Napi::Boolean::New(env, value.toBool());
  return Napi::Number::New(env, value.toDouble());
}

Napi::Value TensorHandle::To(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const at::Tensor& t = Live(env);
  if (!info[0].IsString())
    ThrowType(env, "to: the argument must be a device ('cpu', 'cuda', 'cuda:N') or a dtype name");
  const std::string target = info[0].As<Napi::String>().Utf8Value();
  if (IsDtypeName(target)) {
    const c10::ScalarType type = ParseDtype(env, info[0], "dtype");
    return Wrap(env, Guard(env, [&] { return t.to(type); }));
  }
  const c10::Device device = ParseDevice(env, info[0], "device");
  return Wrap(env, Guard(env, [&] { return t.to(device); }));
}

Napi::Value TensorHandle::Detach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Wrap(env, Guard(env, [&] { return Live(env).detach(); }));
}

Napi::Value TensorHandle::Reshape(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const at::Tensor& t = Live(env);
  const std::vector<int64_t> shape = ParseIntegerArray(env, info[0], "shape");
  return Wrap(env, Guard(env, [&] { return t.reshape(shape); }));
}

namespace {

// Optional (dims: number[], keepdim: boolean) of a reduction; no dims means a full reduction.
template <typename Full, typename Dims>
at::Tensor Reduce(Napi::Env env, const Napi::CallbackInfo& info, const at::Tensor& t, Full full, Dims dims_op) {
  if (info.Length() == 0 || info[0].IsUndefined()) return Guard(env, [&] { return full(t); });
  const std::vector<int64_t> dims = ParseIntegerArray(env, info[0], "dim");
  const bool keepdim = info.Length() > 1 && !info[1].IsUndefined() && ParseBool(env, info[1], "keepdim");
  return Guard(env, [&] { return dims_op(t, dims, keepdim); });
}

}  // namespace

Napi::Value TensorHandle::Sum(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Wrap(env, Reduce(
                       env, info, Live(env), [](const at::Tensor& t) { return t.sum(); },
                       [](const at::Tensor& t, at::IntArrayRef d, bool k) { return t.sum(d, k); }));
}

Napi::Value TensorHandle::Mean(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Wrap(env, Reduce(
                       env, info, Live(env), [](const at::Tensor& t) { return t.mean(); },
                       [](const at::Tensor& t, at::IntArrayRef d, bool k) { return t.mean(d, k); }));
}

template <typename TensorOp, typename ScalarOp>
Napi::Value TensorHandle::Binary(const Napi::CallbackInfo& info, TensorOp tensor_op, ScalarOp scalar_op) {
  Napi::Env env = info.Env();
  const at::Tensor& t = Live(env);
  if (info[0].IsNumber()) {
    // An integer acts as a Python int, any other number as a Python float: PyTorch's type promotion then keeps
    // an integer tensor times 2 an integer tensor (a float Scalar would make it float32).
    const double value = info[0].As<Napi::Number>().DoubleValue();
    const bool integral = std::isfinite(value) && std::floor(value) == value && std::fabs(value) <= 9007199254740991.0;
    const at::Scalar scalar = integral ? at::Scalar(static_cast<int64_t>(value)) : at::Scalar(value);
    return Wrap(env, Guard(env, [&] { return scalar_op(t, scalar); }));
  }
  const at::Tensor& other = From(env, info[0], "other");
  return Wrap(env, Guard(env, [&] { return tensor_op(t, other); }));
}

Napi::Value TensorHandle::Add(const Napi::CallbackInfo& info) {
  return Binary(
      info, [](const at::Tensor& a, const at::Tensor& b) { return a.add(b); },
      [](const at::Tensor& a, const at::Scalar& b) { return a.add(b); });
}

Napi::Value TensorHandle::Sub(const Napi::CallbackInfo& info) {
  return Binary(
      info, [](const at::Tensor& a, const at::Tensor& b) { return a.sub(b); },
      [](const at::Tensor& a, const at::Scalar& b) { return a.sub(b); });
}

Napi::Value TensorHandle::Mul(const Napi::CallbackInfo& info) {
  return Binary(
      info, [](const at::Tensor& a, const at::Tensor& b) { return a.mul(b); },
      [](const at::Tensor& a, const at::Scalar& b) { return a.mul(b); });
}

Napi::Value TensorHandle::Div(const Napi::CallbackInfo& info) {
  return Binary(
      info, [](const at::Tensor& a, const at::Tensor& b) { return a.div(b); },
      [](const at::Tensor& a, const at::Scalar& b) { return a.div(b); });
}

Napi::Value TensorHandle::Backward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const at::Tensor& t = Live(env);
  at::Tensor gradient;
  if (info.Length() > 0 && !info[0].IsUndefined() && !info[0].IsNull()) gradient = From(env, info[0], "gradient");
  // retainGraph: keep the graph's saved tensors for another backward() through it (PyTorch's retain_graph).
  const bool retain_graph = info.Length() > 1 && !info[1].IsUndefined() && ParseBool(env, info[1], "retainGraph");
  Guard(env, [&] { t.backward(gradient, retain_graph); });
  return env.Undefined();
}

// A key that is equal for two handles on the same tensor (the same TensorImpl, as PyTorch's `is`) while it lives:
// how the optimizers find a parameter given twice through two handles.
Napi::Value TensorHandle::Identity(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Napi::BigInt::New(env, static_cast<uint64_t>(reinterpret_cast<uintptr_t>(Live(env).unsafeGetTensorImpl())));
}

Napi::Value TensorHandle::Dispose(const Napi::CallbackInfo& info) {
  Release(info.Env());
  return info.Env().Undefined();
}

Napi::Value TensorHandle::IsDisposed(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), !tensor_.defined());
}

}  // namespace bce
