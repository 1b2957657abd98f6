#include "objects/module_handle.h"

#include "napi/convert.h"
#include "napi/errors.h"
#include "napi/tagged_method.h"
#include "objects/tensor_handle.h"

#include <torch/script.h>

#include <memory>
#include <string>
#include <vector>

namespace bce {
namespace {

// Tags every module handle, as TensorHandle does, so a handle is recognised without instanceof.
const napi_type_tag kModuleTag = {0x3c1f9e2b7a6d4e51ULL, 0x8b2e4f6a1c3d5e70ULL};

// Nesting limit of the values a module's forward may return (tuples of lists of ...).
constexpr int kMaxDepth = 32;

Napi::Value IValueToJs(Napi::Env env, const c10::IValue& value, int depth) {
  if (depth > kMaxDepth) ThrowRange(env, "forward returned a value nested too deeply");
  if (value.isTensor()) return TensorHandle::Wrap(env, value.toTensor(), "forward's output");
  if (value.isNone()) return env.Null();
  if (value.isBool()) return Napi::Boolean::New(env, value.toBool());
  if (value.isInt()) return Napi::Number::New(env, static_cast<double>(value.toInt()));
  if (value.isDouble()) return Napi::Number::New(env, value.toDouble());
  if (value.isString()) return Napi::String::New(env, value.toStringRef());
  if (value.isTuple()) {
    const auto& elements = value.toTupleRef().elements();
    Napi::Array array = Napi::Array::New(env, elements.size());
    for (size_t i = 0; i < elements.size(); ++i)
      array.Set(static_cast<uint32_t>(i), IValueToJs(env, elements[i], depth + 1));
    return array;
  }
  if (value.isList()) {
    const c10::List<c10::IValue> list = value.toList();
    Napi::Array array = Napi::Array::New(env, list.size());
    for (size_t i = 0; i < list.size(); ++i)
      array.Set(static_cast<uint32_t>(i), IValueToJs(env, list.get(i), depth + 1));
    return array;
  }
  if (value.isGenericDict()) {
    Napi::Object object = Napi::Object::New(env);
    for (const auto& entry : value.toGenericDict()) {
      if (!entry.key().isString())
        ThrowType(env, "forward returned a dict with non-string keys, which JavaScript cannot hold");
      // Defined, not assigned: an assignment to a key "__proto__" would replace the object's prototype instead of
      // making a property.
      object.DefineProperty(Napi::PropertyDescriptor::Value(
          entry.key().toStringRef(), IValueToJs(env, entry.value(), depth + 1), napi_default_jsproperty));
    }
    return object;
  }
  ThrowType(env, "forward returned a value of type " + value.tagKind() + ", which is not supported");
}

class ModuleHandle : public Napi::ObjectWrap<ModuleHandle> {
 public:
  static Napi::Function Define(Napi::Env env) {
    Napi::Function constructor =
        DefineClass(env, "ModuleHandle", {StaticMethod<&Guarded<&ModuleHandle::Load>>("load")});
    AddTaggedMethod<ModuleHandle, &kModuleTag, &ModuleHandle::Forward>(env, constructor, "forward");
    AddTaggedMethod<ModuleHandle, &kModuleTag, &ModuleHandle::Parameters>(env, constructor, "parameters");
    AddTaggedMethod<ModuleHandle, &kModuleTag, &ModuleHandle::NamedParameters>(env, constructor, "namedParameters");
    AddTaggedMethod<ModuleHandle, &kModuleTag, &ModuleHandle::NamedBuffers>(env, constructor, "namedBuffers");
    AddTaggedMethod<ModuleHandle, &kModuleTag, &ModuleHandle::Train>(env, constructor, "train");
    AddTaggedMethod<ModuleHandle, &kModuleTag, &ModuleHandle::Eval>(env, constructor, "eval");
    AddTaggedMethod<ModuleHandle, &kModuleTag, &ModuleHandle::IsTraining>(env, constructor, "isTraining");
    AddTaggedMethod<ModuleHandle, &kModuleTag, &ModuleHandle::To>(env, constructor, "to");
    AddTaggedMethod<ModuleHandle, &kModuleTag, &ModuleHandle::Save>(env, constructor, "save");
    AddTaggedMethod<ModuleHandle, &kModuleTag, &ModuleHandle::Dispose>(env, constructor, "dispose");
    AddTaggedMethod<ModuleHandle, &kModuleTag, &ModuleHandle::IsDisposed>(env, constructor, "isDisposed");
    return constructor;
  }

  explicit ModuleHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ModuleHandle>(info) {
    info.This().As<Napi::Object>().TypeTag(&kModuleTag);
  }

 private:
  // ModuleHandle.load(path, device?): called on the constructor, so no constructor reference is stored.
  static Napi::Value Load(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!info[0].IsString()) ThrowType(env, "path must be a string");
    const std::string path = info[0].As<Napi::String>().Utf8Value();
    const bool has_device = info.Length() > 1 && !info[1].IsUndefined() && !info[1].IsNull();
    c10::Device device(c10::kCPU);
    if (has_device) device = ParseDevice(env, info[1], "device");
    auto module = Guard(env, [&] { return std::make_unique<torch::jit::Module>(torch::jit::load(path, device)); });
    if (!info.This().IsFunction()) ThrowType(env, "load must be called on the ModuleHandle class");
    Napi::Object object = info.This().As<Napi::Function>().New({});
    // `this` could be any function (load.call(SomethingElse, ...)): only unwrap what really is a ModuleHandle.
    if (!object.CheckTypeTag(&kModuleTag)) ThrowType(env, "load must be called on the ModuleHandle class");
    ModuleHandle* handle = Napi::ObjectWrap<ModuleHandle>::Unwrap(object);
    handle->module_ = std::move(module);
    return object;
  }

  torch::jit::Module& Live(Napi::Env env) {
    if (!module_) throw Napi::Error::New(env, "the module was disposed and can no longer be used");
    return *module_;
  }

  Napi::Value Forward(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto& module = Live(env);
    std::vector<c10::IValue> inputs;
    inputs.reserve(info.Length());
    for (size_t i = 0; i < info.Length(); ++i) {
      const std::string what = "inputs[" + std::to_string(i) + "]";
      inputs.emplace_back(TensorHandle::From(env, info[i], what.c_str()));
    }
    c10::IValue output = Guard(env, [&] { return module.forward(std::move(inputs)); });
    return IValueToJs(env, output, 0);
  }

  Napi::Value Parameters(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::vector<at::Tensor> tensors = Guard(env, [&] {
      std::vector<at::Tensor> out;
      for (const at::Tensor& p : Live(env).parameters()) out.push_back(p);
      return out;
    });
    Napi::Array array = Napi::Array::New(env, tensors.size());
    for (size_t i = 0; i < tensors.size(); ++i)
      array.Set(static_cast<uint32_t>(i), TensorHandle::Wrap(env, tensors[i], "a parameter"));
    return array;
  }

  // [[name, handle], ...] in the module's order, names dotted as in PyTorch ("conv1.weight").
  template <typename List>
  static Napi::Value NamedTensors(Napi::Env env, const List& list) {
    std::vector<std::pair<std::string, at::Tensor>> named = Guard(env, [&] {
      std::vector<std::pair<std::string, at::Tensor>> out;
      for (const auto& p : list) out.emplace_back(p.name, p.value);
      return out;
    });
    Napi::Array array = Napi::Array::New(env, named.size());
    for (size_t i = 0; i < named.size(); ++i) {
      Napi::Array pair = Napi::Array::New(env, 2);
      pair.Set(0u, Napi::String::New(env, named[i].first));
      pair.Set(1u, TensorHandle::Wrap(env, named[i].second, "a parameter"));
      array.Set(static_cast<uint32_t>(i), pair);
    }
    return array;
  }

  Napi::Value NamedParameters(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return NamedTensors(env, Live(env).named_parameters());
  }

  // Buffers (batch-norm running statistics, ...), which a state_dict holds beside the parameters.
  Napi::Value NamedBuffers(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return NamedTensors(env, Live(env).named_buffers());
  }

  Napi::Value Train(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const bool on = info.Length() == 0 || info[0].IsUndefined() ? true : ParseBool(env, info[0], "on");
    auto& module = Live(env);
    Guard(env, [&] { module.train(on); });
    return env.Undefined();
  }

  Napi::Value Eval(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto& module = Live(env);
    Guard(env, [&] { module.eval(); });
    return env.Undefined();
  }

  Napi::Value IsTraining(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto& module = Live(env);
    return Napi::Boolean::New(env, Guard(env, [&] { return module.is_training(); }));
  }

  // Moves parameters and buffers in place (their tensors keep their identity, so handles and optimizers
  // built on them follow).
  Napi::Value To(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto& module = Live(env);
    const c10::Device device = ParseDevice(env, info[0], "device");
    Guard(env, [&] { module.to(device); });
    return env.Undefined();
  }

  Napi::Value Save(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto& module = Live(env);
    if (!info[0].IsString()) ThrowType(env, "path must be a string");
    const std::string path = info[0].As<Napi::String>().Utf8Value();
    Guard(env, [&] { module.save(path); });
    return env.Undefined();
  }

  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    module_.reset();
    return info.Env().Undefined();
  }

  Napi::Value IsDisposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !module_); }

  std::unique_ptr<torch::jit::Module> module_;
};

// noGrad(fn): calls fn with autograd recording off and returns its result. The guard is a C++ object, so the
// previous mode comes back however fn ends, a JavaScript exception included (it propagates unchanged).
Napi::Value NoGrad(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsFunction()) ThrowType(env, "fn must be a function");
  const Napi::Function fn = info[0].As<Napi::Function>();
  torch::NoGradGuard guard;
  return fn.Call({});
}

Napi::Value IsGradEnabled(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), c10::GradMode::is_enabled());
}

}  // namespace

void RegisterJit(Napi::Env env, Napi::Object exports) {
  exports.Set("ModuleHandle", ModuleHandle::Define(env));
  exports.Set("noGrad", Napi::Function::New<Guarded<NoGrad>>(env, "noGrad"));
  exports.Set("isGradEnabled", Napi::Function::New<Guarded<IsGradEnabled>>(env, "isGradEnabled"));
}

}  // namespace bce
