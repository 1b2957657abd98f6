// callOperator(schema, args): calls a LibTorch operator through its dispatcher, boxed: the JavaScript arguments
// become IValues on a stack, checked against the operator's schema (its argument types and defaults), and the
// results come back as tensor handles, numbers, booleans or arrays of them. The dispatcher routes the call to
// the kernel of the tensors' own device and through autograd, exactly as PyTorch's Python bindings do.
//
// Only the operators listed in kOperators can be called. The boxed interface would reach every operator in
// LibTorch, including internal ones (names starting with '_', "unsafe" variants) that trust their inputs and
// can read or write out of bounds; the list keeps this entry point inside the guarantee that nothing JavaScript
// passes may crash the process. Each line is the schema's name and overload, "aten::max.dim", as in PyTorch's
// native_functions.yaml; lib/operators.ts holds the JavaScript side, and test/operators.test.ts checks that the
// two lists agree.
#include "functions/operators.h"

#include "napi/convert.h"
#include "napi/errors.h"
#include "objects/tensor_handle.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/jit_type.h>
#include <ATen/core/stack.h>

#include <cmath>
#include <string>
#include <unordered_map>
#include <vector>

namespace bce {
namespace {

// clang-format off
constexpr const char* kOperators[] = {
    "aten::argmax", "aten::argmin",
    "aten::max", "aten::max.dim", "aten::max.other", "aten::min", "aten::min.dim", "aten::min.other",
    "aten::softmax.int", "aten::log_softmax.int",
    "aten::eq.Tensor", "aten::eq.Scalar", "aten::ne.Tensor", "aten::ne.Scalar",
    "aten::lt.Tensor", "aten::lt.Scalar", "aten::le.Tensor", "aten::le.Scalar",
    "aten::gt.Tensor", "aten::gt.Scalar", "aten::ge.Tensor", "aten::ge.Scalar",
    "aten::where.self", "aten::where.ScalarSelf", "aten::where.ScalarOther", "aten::where.Scalar",
    "aten::clamp", "aten::clamp.Tensor",
    "aten::exp", "aten::log", "aten::abs", "aten::sqrt", "aten::neg",
    "aten::pow.Tensor_Tensor", "aten::pow.Tensor_Scalar",
    "aten::matmul",
    "aten::permute", "aten::transpose.int", "aten::diagonal", "aten::contiguous", "aten::flatten.using_ints",
    "aten::squeeze", "aten::squeeze.dim", "aten::unsqueeze",
    "aten::cat", "aten::stack",
    "aten::narrow", "aten::select.int", "aten::index_select", "aten::masked_select",
    "aten::masked_fill.Scalar", "aten::masked_fill.Tensor",
    "aten::to.dtype",
    "aten::bincount", "aten::clone", "aten::zero_", "aten::fill_.Scalar", "aten::fill_.Tensor",
    "aten::any", "aten::any.dim", "aten::all", "aten::all.dim",
    "aten::count_nonzero", "aten::count_nonzero.dim_IntList",
    "aten::gather", "aten::one_hot",
};
// clang-format on

// The most entries an int list may have (LibTorch allows at most 64 dimensions) and a tensor list.
constexpr uint32_t kMaxIntList = 64;
constexpr uint32_t kMaxTensorList = 1 << 16;

// The handles of the listed operators this LibTorch has, found once (the dispatcher's registry is filled when
// LibTorch loads). Read-only afterwards, so worker threads share it.
const std::unordered_map<std::string, c10::OperatorHandle>& OperatorTable() {
  static const auto* table = [] {
    auto* found = new std::unordered_map<std::string, c10::OperatorHandle>();
    for (const char* full : kOperators) {
      const std::string text(full);
      const size_t dot = text.find('.');
      c10::OperatorName name{text.substr(0, dot), dot == std::string::npos ? "" : text.substr(dot + 1)};
      auto handle = c10::Dispatcher::singleton().findSchema(name);
      if (handle.has_value()) found->emplace(text, *handle);
    }
    return found;
  }();
  return *table;
}

bool IsListed(const std::string& schema) {
  for (const char* full : kOperators) {
    if (schema == full) return true;
  }
  return false;
}

bool IsNullish(const Napi::Value& value) { return value.IsUndefined() || value.IsNull(); }

int64_t ToInteger(Napi::Env env, const Napi::Value& value, const std::string& what) {
  return ParseInteger(env, value, what.c_str());
}

// A JavaScript number as a Scalar: an integer acts as a Python int (an int64 tensor times 2 stays int64), any
// other number as a Python float; a boolean as a Python bool.
c10::IValue ToScalar(Napi::Env env, const Napi::Value& value, const std::string& what) {
  if (value.IsBoolean()) return c10::IValue(value.As<Napi::Boolean>().Value());
  if (!value.IsNumber()) ThrowType(env, what + " must be a number or a boolean");
  const double number = value.As<Napi::Number>().DoubleValue();
  if (std::isfinite(number) && std::floor(number) == number && std::fabs(number) <= 9007199254740991.0) {
    return c10::IValue(static_cast<int64_t>(number));
  }
  return c10::IValue(number);
}

c10::IValue ToIValue(Napi::Env env, const c10::TypePtr& type, const Napi::Value& value, const std::string& what,
                     bool fixed_size);

c10::IValue ToList(Napi::Env env, const c10::TypePtr& element, const Napi::Value& value, const std::string& what,
                   bool fixed_size) {
  const c10::TypeKind kind = element->kind();
  const bool integers = kind == c10::TypeKind::IntType || kind == c10::TypeKind::SymIntType;
  // `int[1] dim` also takes a single integer, as in PyTorch.
  if (integers && fixed_size && value.IsNumber()) {
    return c10::IValue(std::vector<int64_t>{ToInteger(env, value, what)});
  }
  if (!value.IsArray()) ThrowType(env, what + " must be an array");
  const Napi::Array array = value.As<Napi::Array>();
  const uint32_t length = array.Length();
  if (integers) {
    if (length > kMaxIntList) ThrowRange(env, what + " may have at most 64 entries");
    std::vector<int64_t> values;
    values.reserve(length);
    for (uint32_t i = 0; i < length; ++i) {
      values.push_back(ToInteger(env, array.Get(i), what + "[" + std::to_string(i) + "]"));
    }
    return c10::IValue(values);
  }
  if (length > kMaxTensorList) ThrowRange(env, what + " may have at most 65536 tensors");
  if (kind == c10::TypeKind::TensorType) {
    c10::List<at::Tensor> tensors;
    tensors.reserve(length);
    for (uint32_t i = 0; i < length; ++i) {
      tensors.push_back(TensorHandle::From(env, array.Get(i), (what + "[" + std::to_string(i) + "]").c_str()));
    }
    return c10::IValue(tensors);
  }
  if (kind == c10::TypeKind::OptionalType && element->containedTypes().at(0)->kind() == c10::TypeKind::TensorType) {
    c10::List<c10::optional<at::Tensor>> tensors;
    tensors.reserve(length);
    for (uint32_t i = 0; i < length; ++i) {
      const Napi::Value item = array.Get(i);
      if (IsNullish(item)) {
        tensors.push_back(c10::optional<at::Tensor>());
      } else {
        tensors.push_back(TensorHandle::From(env, item, (what + "[" + std::to_string(i) + "]").c_str()));
      }
    }
    return c10::IValue(tensors);
  }
  ThrowType(env, what + ": lists of " + element->str() + " are not supported");
}

// One JavaScript argument as the IValue the schema's type (its real type: ScalarType, not int) asks for.
c10::IValue ToIValue(Napi::Env env, const c10::TypePtr& type, const Napi::Value& value, const std::string& what,
                     bool fixed_size) {
  switch (type->kind()) {
    case c10::TypeKind::OptionalType:
      if (IsNullish(value)) return c10::IValue();
      return ToIValue(env, type->containedTypes().at(0), value, what, fixed_size);
    case c10::TypeKind::TensorType: return c10::IValue(TensorHandle::From(env, value, what.c_str()));
    case c10::TypeKind::IntType:
    case c10::TypeKind::SymIntType: return c10::IValue(ToInteger(env, value, what));
    case c10::TypeKind::FloatType: return c10::IValue(ParseNumber(env, value, what.c_str()));
    case c10::TypeKind::BoolType: return c10::IValue(ParseBool(env, value, what.c_str()));
    case c10::TypeKind::NumberType: return ToScalar(env, value, what);
    case c10::TypeKind::ScalarTypeType:
      // The dispatcher's boxed form of a ScalarType is its int64 code.
      return c10::IValue(static_cast<int64_t>(ParseDtype(env, value, what.c_str())));
    case c10::TypeKind::ListType: return ToList(env, type->containedTypes().at(0), value, what, fixed_size);
    default:
      // MemoryFormat, Layout, Device, Generator, str, ...: only their defaults, never a value from JavaScript
      // (an arbitrary integer as a MemoryFormat or Layout is not checked everywhere).
      ThrowType(env, what + ": arguments of type " + type->str() + " cannot be given from JavaScript");
  }
}

Napi::Value FromIValue(Napi::Env env, const c10::IValue& value) {
  if (value.isTensor()) {
    const at::Tensor& tensor = value.toTensor();
    if (!tensor.defined()) return env.Null();
    return TensorHandle::Wrap(env, tensor);
  }
  if (value.isNone()) return env.Null();
  if (value.isBool()) return Napi::Boolean::New(env, value.toBool());
  if (value.isInt()) return Napi::Number::New(env, static_cast<double>(value.toInt()));
  if (value.isDouble()) return Napi::Number::New(env, value.toDouble());
  if (value.isTensorList()) {
    const c10::List<at::Tensor> list = value.toTensorList();
    Napi::Array array = Napi::Array::New(env, list.size());
    for (size_t i = 0; i < list.size(); ++i) {
      array.Set(static_cast<uint32_t>(i), FromIValue(env, c10::IValue(static_cast<at::Tensor>(list.get(i)))));
    }
    return array;
  }
  if (value.isTuple()) {
    const auto& elements = value.toTupleRef().elements();
    Napi::Array array = Napi::Array::New(env, elements.size());
    for (size_t i = 0; i < elements.size(); ++i) array.Set(static_cast<uint32_t>(i), FromIValue(env, elements[i]));
    return array;
  }
  ThrowType(env, "callOperator: the operator returned a " + value.tagKind() + ", which has no JavaScript form");
}

// callOperator(schema: string, args: unknown[]): the result (one value), or an array when the schema returns
// several (max.dim: [values, indices]).
Napi::Value CallOperator(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) ThrowType(env, "schema must be a string such as 'aten::argmax' or 'aten::max.dim'");
  const std::string schema_name = info[0].As<Napi::String>().Utf8Value();
  const auto& table = OperatorTable();
  const auto entry = table.find(schema_name);
  if (entry == table.end()) {
    if (IsListed(schema_name)) ThrowType(env, "operator " + schema_name + " is not in this LibTorch");
    ThrowType(env, "schema '" + schema_name.substr(0, 80) + "' is not an operator this addon exposes");
  }
  const c10::OperatorHandle& op = entry->second;
  const c10::FunctionSchema& schema = op.schema();
  if (!info[1].IsArray()) ThrowType(env, "args must be an array");
  const Napi::Array args = info[1].As<Napi::Array>();
  const std::vector<c10::Argument>& parameters = schema.arguments();
  if (args.Length() > parameters.size()) {
    ThrowRange(env, schema_name + " takes at most " + std::to_string(parameters.size()) + " arguments, got " +
                        std::to_string(args.Length()));
  }
  torch::jit::Stack stack;
  stack.reserve(parameters.size());
  for (size_t i = 0; i < parameters.size(); ++i) {
    const c10::Argument& parameter = parameters[i];
    const std::string what = schema_name + ": " + parameter.name();
    const Napi::Value value = i < args.Length() ? args.Get(static_cast<uint32_t>(i)) : env.Undefined();
    if (value.IsUndefined()) {
      if (parameter.default_value().has_value()) {
        stack.push_back(*parameter.default_value());
        continue;
      }
      if (parameter.real_type()->kind() == c10::TypeKind::OptionalType) {
        stack.emplace_back();
        continue;
      }
      ThrowType(env, what + " is required");
    }
    stack.push_back(ToIValue(env, parameter.real_type(), value, what, parameter.N().has_value()));
  }
  Guard(env, [&] { op.callBoxed(&stack); });
  const size_t returns = schema.returns().size();
  if (stack.size() != returns) ThrowType(env, schema_name + ": unexpected number of results");
  if (returns == 1) return FromIValue(env, stack[0]);
  Napi::Array results = Napi::Array::New(env, returns);
  for (size_t i = 0; i < returns; ++i) results.Set(static_cast<uint32_t>(i), FromIValue(env, stack[i]));
  return results;
}

// operatorNames(): the schemas callOperator accepts and this LibTorch has.
Napi::Value OperatorNames(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const auto& table = OperatorTable();
  Napi::Array names = Napi::Array::New(env);
  uint32_t i = 0;
  for (const char* full : kOperators) {
    if (table.count(full) > 0) names.Set(i++, Napi::String::New(env, full));
  }
  return names;
}

}  // namespace

void RegisterOperators(Napi::Env env, Napi::Object exports) {
  exports.Set("callOperator", Napi::Function::New<Guarded<CallOperator>>(env, "callOperator"));
  exports.Set("operatorNames", Napi::Function::New<Guarded<OperatorNames>>(env, "operatorNames"));
}

}  // namespace bce
