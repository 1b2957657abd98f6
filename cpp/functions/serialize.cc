// Checkpoints in PyTorch's own format: saveObject / loadObject convert between JavaScript values and the values
// of serialize/torch_file (which writes and reads the file), and copyTensors restores saved tensors into live
// ones (a module's parameters) in place.
#include "functions/serialize.h"

#include "napi/convert.h"
#include "napi/errors.h"
#include "objects/tensor_handle.h"
#include "serialize/torch_file.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <cmath>
#include <sstream>
#include <string>
#include <vector>

namespace bce {
namespace {

using serialize::Value;
using serialize::ValuePtr;

// Deeper values are refused both ways (a hostile file could nest a million levels).
constexpr int kMaxDepth = 100;
// Values a loaded object may expand to: a pickle can refer to one list many times, and each reference becomes
// its own JavaScript array, so a small file could otherwise expand exponentially.
constexpr int64_t kMaxLoadedValues = 10'000'000;

ValuePtr Make(Value::Kind kind) {
  auto v = std::make_shared<Value>();
  v->kind = kind;
  return v;
}

// A whole number that a double holds exactly becomes a Python int, anything else a float (-0 stays a float).
ValuePtr NumberValue(double d) {
  constexpr double kMaxSafe = 9007199254740991.0;
  if (std::isfinite(d) && std::trunc(d) == d && std::fabs(d) <= kMaxSafe && !(d == 0 && std::signbit(d))) {
    auto v = Make(Value::Kind::kInt);
    v->integer = static_cast<int64_t>(d);
    return v;
  }
  auto v = Make(Value::Kind::kFloat);
  v->number = d;
  return v;
}

std::string TypeTag(Napi::Env env, const Napi::Value& value) {
  Napi::Function to_string = env.Global()
                                 .Get("Object")
                                 .As<Napi::Object>()
                                 .Get("prototype")
                                 .As<Napi::Object>()
                                 .Get("toString")
                                 .As<Napi::Function>();
  return to_string.Call(value, {}).As<Napi::String>().Utf8Value();
}

ValuePtr FromJs(Napi::Env env, const Napi::Value& value, const std::string& where, int depth);

ValuePtr KeyFromJs(Napi::Env env, const Napi::Value& key, const std::string& where) {
  if (key.IsString()) {
    auto v = Make(Value::Kind::kString);
    v->text = key.As<Napi::String>().Utf8Value();
    return v;
  }
  if (key.IsNumber()) {
    ValuePtr v = NumberValue(key.As<Napi::Number>().DoubleValue());
    if (v->kind == Value::Kind::kInt) return v;
  }
  ThrowType(env, where + ": a Map key must be a string or a whole number");
}

ValuePtr FromJs(Napi::Env env, const Napi::Value& value, const std::string& where, int depth) {
  if (depth > kMaxDepth) ThrowRange(env, where + " is nested more than 100 levels deep");
  if (value.IsNull() || value.IsUndefined()) return Make(Value::Kind::kNone);
  if (value.IsBoolean()) {
    auto v = Make(Value::Kind::kBool);
    v->boolean = value.As<Napi::Boolean>().Value();
    return v;
  }
  if (value.IsNumber()) return NumberValue(value.As<Napi::Number>().DoubleValue());
  if (value.IsBigInt()) {
    bool lossless = false;
    const int64_t i = value.As<Napi::BigInt>().Int64Value(&lossless);
    if (!lossless) ThrowRange(env, where + " is a BigInt outside the int64 range");
    auto v = Make(Value::Kind::kInt);
    v->integer = i;
    return v;
  }
  if (value.IsString()) {
    auto v = Make(Value::Kind::kString);
    v->text = value.As<Napi::String>().Utf8Value();
    return v;
  }
  if (TensorHandle::IsHandle(value)) {
    auto v = Make(Value::Kind::kTensor);
    v->tensor = TensorHandle::From(env, value, where.c_str());
    return v;
  }
  if (value.IsArray()) {
    const Napi::Array array = value.As<Napi::Array>();
    auto v = Make(Value::Kind::kList);
    for (uint32_t i = 0; i < array.Length(); ++i)
      v->items.push_back(FromJs(env, array.Get(i), where + "[" + std::to_string(i) + "]", depth + 1));
    return v;
  }
  if (value.IsObject()) {
    auto v = Make(Value::Kind::kDict);
    if (TypeTag(env, value) == "[object Map]") {
      // Array.from(map): [[key, value], ...], in insertion order.
      const Napi::Array pairs =
          env.Global().Get("Array").As<Napi::Object>().Get("from").As<Napi::Function>().Call({value}).As<Napi::Array>();
      for (uint32_t i = 0; i < pairs.Length(); ++i) {
        const Napi::Array pair = pairs.Get(i).As<Napi::Array>();
        ValuePtr key = KeyFromJs(env, pair.Get(0u), where);
        const std::string name = key->kind == Value::Kind::kString ? key->text : std::to_string(key->integer);
        v->entries.emplace_back(key, FromJs(env, pair.Get(1u), where + ".get(" + name + ")", depth + 1));
      }
      return v;
    }
    const Napi::Object object = value.As<Napi::Object>();
    const Napi::Array keys = object.GetPropertyNames();
    for (uint32_t i = 0; i < keys.Length(); ++i) {
      const Napi::Value key = keys.Get(i);
      auto k = Make(Value::Kind::kString);
      k->text = key.As<Napi::String>().Utf8Value();
      v->entries.emplace_back(k, FromJs(env, object.Get(key), where + "." + k->text, depth + 1));
    }
    return v;
  }
  ThrowType(env, where + " cannot be saved: only Tensors, numbers, strings, booleans, null, arrays and objects can");
}

Napi::Value ToJs(Napi::Env env, const ValuePtr& value, int depth, int64_t& budget) {
  if (depth > kMaxDepth) throw serialize::FormatError("the saved object is nested more than 100 levels deep");
  if (--budget < 0) throw serialize::FormatError("the saved object expands to more than 10 million values");
  switch (value->kind) {
    case Value::Kind::kNone: return env.Null();
    case Value::Kind::kBool: return Napi::Boolean::New(env, value->boolean);
    case Value::Kind::kInt: {
      constexpr int64_t kMaxSafe = 9007199254740991LL;
      if (value->integer > kMaxSafe || value->integer < -kMaxSafe) return Napi::BigInt::New(env, value->integer);
      return Napi::Number::New(env, static_cast<double>(value->integer));
    }
    case Value::Kind::kFloat: return Napi::Number::New(env, value->number);
    case Value::Kind::kString: return Napi::String::New(env, value->text);
    case Value::Kind::kTensor: return TensorHandle::Wrap(env, value->tensor);
    case Value::Kind::kList:
    case Value::Kind::kTuple: {
      Napi::Array array = Napi::Array::New(env, value->items.size());
      for (size_t i = 0; i < value->items.size(); ++i)
        array.Set(static_cast<uint32_t>(i), ToJs(env, value->items[i], depth + 1, budget));
      return array;
    }
    case Value::Kind::kDict: {
      Napi::Object object = Napi::Object::New(env);
      for (const auto& entry : value->entries) {
        const std::string key =
            entry.first->kind == Value::Kind::kString ? entry.first->text : std::to_string(entry.first->integer);
        // Defined, not assigned: a key "__proto__" becomes an own property instead of replacing the prototype.
        object.DefineProperty(Napi::PropertyDescriptor::Value(
            key, ToJs(env, entry.second, depth + 1, budget),
            static_cast<napi_property_attributes>(napi_writable | napi_enumerable | napi_configurable)));
      }
      return object;
    }
    default: throw serialize::FormatError("the saved object holds a bare global or storage, not a value");
  }
}

std::string PathArgument(Napi::Env env, const Napi::Value& value) {
  if (!value.IsString() || value.As<Napi::String>().Utf8Value().empty())
    ThrowType(env, "path must be a non-empty string");
  return value.As<Napi::String>().Utf8Value();
}

// saveObject(path, value)
Napi::Value SaveObject(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string path = PathArgument(env, info[0]);
  const ValuePtr value = FromJs(env, info[1], "value", 0);
  Guard(env, [&] { serialize::Save(*value, path); });
  return env.Undefined();
}

// loadObject(path, device?)
Napi::Value LoadObject(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string path = PathArgument(env, info[0]);
  serialize::LoadOptions options;
  if (info.Length() > 1 && !info[1].IsUndefined() && !info[1].IsNull())
    options.device = ParseDevice(env, info[1], "device");
  serialize::Loaded loaded = Guard(env, [&] { return serialize::Load(path, options); });
  int64_t budget = kMaxLoadedValues;
  return Guard(env, [&] { return ToJs(env, loaded.root, 0, budget); });
}

// copyTensors(targets, sources): targets[i].copy_(sources[i]) without recording autograd, shapes checked.
Napi::Value CopyTensors(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsArray() || !info[1].IsArray()) ThrowType(env, "targets and sources must be arrays of Tensors");
  const Napi::Array targets = info[0].As<Napi::Array>();
  const Napi::Array sources = info[1].As<Napi::Array>();
  if (targets.Length() != sources.Length()) ThrowRange(env, "targets and sources differ in length");
  std::vector<std::pair<at::Tensor, at::Tensor>> pairs;
  for (uint32_t i = 0; i < targets.Length(); ++i) {
    const std::string index = std::to_string(i);
    at::Tensor target = TensorHandle::From(env, targets.Get(i), ("targets[" + index + "]").c_str());
    at::Tensor source = TensorHandle::From(env, sources.Get(i), ("sources[" + index + "]").c_str());
    if (!target.sizes().equals(source.sizes())) {
      std::ostringstream os;
      os << "sources[" << i << "] has shape " << source.sizes() << " but targets[" << i << "] has shape "
         << target.sizes();
      ThrowRange(env, os.str());
    }
    pairs.emplace_back(target, source);
  }
  Guard(env, [&] {
    at::NoGradGuard no_grad;
    for (auto& pair : pairs) pair.first.copy_(pair.second);
  });
  return env.Undefined();
}

}  // namespace

void RegisterSerialize(Napi::Env env, Napi::Object exports) {
  exports.Set("saveObject", Napi::Function::New<SaveObject>(env, "saveObject"));
  exports.Set("loadObject", Napi::Function::New<LoadObject>(env, "loadObject"));
  exports.Set("copyTensors", Napi::Function::New<CopyTensors>(env, "copyTensors"));
}

}  // namespace bce
