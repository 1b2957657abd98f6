// TensorHandle: the native object behind a JavaScript Tensor. It owns one torch::Tensor, frees it on
// dispose() or when garbage-collected (whichever comes first, exactly once), and reports the bytes it holds
// to V8 so that collection keeps pace with native memory in long training loops.
#pragma once

#include <napi.h>

#include <ATen/core/Tensor.h>

namespace bce {

class TensorHandle : public Napi::ObjectWrap<TensorHandle> {
 public:
  static Napi::Function Define(Napi::Env env);

  // Wraps `tensor` in a new handle (the only way handles are made). A tensor this addon cannot serve (a sparse,
  // nested or MKL-DNN layout, a dtype outside the eight of lib/dtype.ts such as complex or quantized, a device
  // other than CPU and CUDA) is refused here with a TypeError that starts with `source` ("forward's output",
  // ...), so that it never reaches a getter or a conversion that would fail on it later.
  static Napi::Object Wrap(Napi::Env env, at::Tensor tensor, const char* source = "the result");

  // The live tensor behind `value`; a TypeError naming `what` when `value` is not a tensor handle of this
  // addon (checked by type tag, not instanceof), an Error when it was disposed.
  // Returned by value: a caller that then runs JavaScript (option getters) keeps the tensor alive even if that
  // JavaScript disposes the handle.
  static at::Tensor From(Napi::Env env, const Napi::Value& value, const char* what);
  static bool IsHandle(const Napi::Value& value);
  // The tensor behind `value`, or an undefined tensor when `value` is not a live handle (never throws).
  static at::Tensor Peek(const Napi::Value& value);

  explicit TensorHandle(const Napi::CallbackInfo& info);
  void Finalize(Napi::Env env) override;

 private:
  void Reset(Napi::Env env, at::Tensor tensor);
  void Release(Napi::Env env);
  const at::Tensor& Live(Napi::Env env) const;

  Napi::Value Shape(const Napi::CallbackInfo& info);
  Napi::Value Dtype(const Napi::CallbackInfo& info);
  Napi::Value Device(const Napi::CallbackInfo& info);
  Napi::Value Numel(const Napi::CallbackInfo& info);
  Napi::Value RequiresGrad(const Napi::CallbackInfo& info);
  Napi::Value SetRequiresGrad(const Napi::CallbackInfo& info);
  Napi::Value Grad(const Napi::CallbackInfo& info);
  Napi::Value ToArray(const Napi::CallbackInfo& info);
  Napi::Value Item(const Napi::CallbackInfo& info);
  Napi::Value To(const Napi::CallbackInfo& info);
  Napi::Value Detach(const Napi::CallbackInfo& info);
  Napi::Value Reshape(const Napi::CallbackInfo& info);
  Napi::Value Sum(const Napi::CallbackInfo& info);
  Napi::Value Mean(const Napi::CallbackInfo& info);
  Napi::Value Add(const Napi::CallbackInfo& info);
  Napi::Value Sub(const Napi::CallbackInfo& info);
  Napi::Value Mul(const Napi::CallbackInfo& info);
  Napi::Value Div(const Napi::CallbackInfo& info);
  Napi::Value Backward(const Napi::CallbackInfo& info);
  Napi::Value Identity(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  Napi::Value IsDisposed(const Napi::CallbackInfo& info);

  template <typename TensorOp, typename ScalarOp>
  Napi::Value Binary(const Napi::CallbackInfo& info, TensorOp tensor_op, ScalarOp scalar_op);

  at::Tensor tensor_;
  int64_t bytes_ = 0;
  bool counted_ = false;
  int64_t external_bytes_ = 0;  // what this handle reported to V8 as external memory (see Reset)
};

}  // namespace bce
