#include "objects/optimizer_handle.h"

#include "napi/convert.h"
#include "napi/errors.h"
#include "napi/tagged_method.h"
#include "objects/tensor_handle.h"

#include <torch/optim.h>

#include <iterator>
#include <memory>
#include <sstream>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace bce {
namespace {

const napi_type_tag kOptimizerTag = {0x51d2a8e37b4c4f19ULL, 0xa6e1c3b5d7f90284ULL};

// The optimizer state is keyed by the parameter's TensorImpl: as a string in LibTorch 1.x
// (c10::guts::to_string of the pointer) and as the pointer itself in 2.x. Both are built here from the
// map's own key type, so this compiles and matches LibTorch's own keys in either.
using StateMap = std::decay_t<decltype(std::declval<torch::optim::Optimizer&>().state())>;
using StateKey = typename StateMap::key_type;

template <typename Key>
Key MakeKey(const at::Tensor& param) {
  if constexpr (std::is_same_v<Key, std::string>) {
    std::ostringstream os;
    os << param.unsafeGetTensorImpl();  // exactly what c10::guts::to_string does
    return os.str();
  } else {
    return static_cast<Key>(param.unsafeGetTensorImpl());
  }
}

double NumberField(Napi::Env env, const Napi::Object& object, const char* name) {
  return ParseNumber(env, object.Get(name), name);
}

bool BoolField(Napi::Env env, const Napi::Object& object, const char* name) {
  return ParseBool(env, object.Get(name), name);
}

bool Has(const Napi::Object& object, const char* name) {
  const Napi::Value value = object.Get(name);
  return !value.IsUndefined() && !value.IsNull();
}

// A copy of `source` shaped, typed and placed like `param` (state must not alias what JavaScript holds).
at::Tensor StateTensor(Napi::Env env, const Napi::Object& entry, const char* name, const at::Tensor& param) {
  const at::Tensor& source = TensorHandle::From(env, entry.Get(name), name);
  if (!source.sizes().equals(param.sizes())) {
    std::ostringstream os;
    os << name << " has shape " << source.sizes() << " but its parameter has shape " << param.sizes();
    ThrowRange(env, os.str());
  }
  return Guard(env, [&] { return source.detach().to(param.device(), param.scalar_type(), false, true); });
}

at::Tensor Snapshot(const at::Tensor& tensor) { return tensor.defined() ? tensor.detach().clone() : at::Tensor(); }

// o.betas as Adam's (beta1, beta2).
std::tuple<double, double> BetasField(Napi::Env env, const Napi::Object& o) {
  const Napi::Value value = o.Get("betas");
  if (!value.IsArray() || value.As<Napi::Array>().Length() != 2) ThrowType(env, "betas must be [beta1, beta2]");
  const Napi::Array betas = value.As<Napi::Array>();
  return std::make_tuple(ParseNumber(env, betas.Get(0u), "betas[0]"), ParseNumber(env, betas.Get(1u), "betas[1]"));
}

// entry[name] = a copy of `tensor`, when it is defined (state tensors are created lazily by step()).
void SetSnapshot(Napi::Env env, Napi::Object& entry, const char* name, const at::Tensor& tensor) {
  at::Tensor copy = Guard(env, [&] { return Snapshot(tensor); });
  if (copy.defined()) entry.Set(name, TensorHandle::Wrap(env, copy));
}

// ---------------------------------------------------------------------------------------------------------------
// The kinds. Each is a traits struct: its LibTorch types and how its options and per-parameter state cross to
// JavaScript; the handle below does everything else the same way for every kind. A traits struct has
//   kName                              the kind as new OptimizerHandle(kind, ...) names it;
//   Optimizer, Options, ParamState     LibTorch's optimizer and its options and per-parameter state types;
//   ReadOptions(env, o)                the options from the constructor's object, which has every field;
//   WriteOptions(options, out)         the options as options() returns them;
//   UpdateOptions(env, o, options)     setOptions(o): sets the fields present in o;
//   WriteState(env, state, entry)      one parameter's state as state() returns it, tensors copied;
//   ReadState(env, entry, param, state) the reverse, for loadState: tensors copied, shaped and placed like param.
// Adding a kind is one traits struct and its entry in kKinds.

// SGD: { lr, momentum, dampening, weightDecay, nesterov }; state { momentumBuffer? }.
struct Sgd {
  static constexpr const char* kName = "sgd";
  using Optimizer = torch::optim::SGD;
  using Options = torch::optim::SGDOptions;
  using ParamState = torch::optim::SGDParamState;

  static Options ReadOptions(Napi::Env env, const Napi::Object& o) {
    Options options(NumberField(env, o, "lr"));
    options.weight_decay(NumberField(env, o, "weightDecay"));
    options.momentum(NumberField(env, o, "momentum"));
    options.dampening(NumberField(env, o, "dampening"));
    options.nesterov(BoolField(env, o, "nesterov"));
    return options;
  }

  static void WriteOptions(const Options& options, Napi::Object& out) {
    out.Set("lr", options.lr());
    out.Set("momentum", options.momentum());
    out.Set("dampening", options.dampening());
    out.Set("weightDecay", options.weight_decay());
    out.Set("nesterov", options.nesterov());
  }

  static void UpdateOptions(Napi::Env env, const Napi::Object& o, Options& options) {
    if (Has(o, "lr")) options.lr(NumberField(env, o, "lr"));
    if (Has(o, "momentum")) options.momentum(NumberField(env, o, "momentum"));
    if (Has(o, "dampening")) options.dampening(NumberField(env, o, "dampening"));
    if (Has(o, "weightDecay")) options.weight_decay(NumberField(env, o, "weightDecay"));
    if (Has(o, "nesterov")) options.nesterov(BoolField(env, o, "nesterov"));
  }

  static void WriteState(Napi::Env env, const ParamState& state, Napi::Object& entry) {
    SetSnapshot(env, entry, "momentumBuffer", state.momentum_buffer());
  }

  static void ReadState(Napi::Env env, const Napi::Object& entry, const at::Tensor& param, ParamState& state) {
    if (Has(entry, "momentumBuffer")) state.momentum_buffer(StateTensor(env, entry, "momentumBuffer", param));
  }
};

// Adam and AdamW, whose options and state have the same fields: { lr, betas, eps, weightDecay, amsgrad }; state
// { step, expAvg, expAvgSq, maxExpAvgSq? }.
template <typename OptimizerType, typename OptionsType, typename ParamStateType>
struct AdamFamily {
  using Optimizer = OptimizerType;
  using Options = OptionsType;
  using ParamState = ParamStateType;

  static Options ReadOptions(Napi::Env env, const Napi::Object& o) {
    Options options(NumberField(env, o, "lr"));
    options.weight_decay(NumberField(env, o, "weightDecay"));
    options.betas(BetasField(env, o));
    options.eps(NumberField(env, o, "eps"));
    options.amsgrad(BoolField(env, o, "amsgrad"));
    return options;
  }

  static void WriteOptions(const Options& options, Napi::Object& out) {
    const Napi::Env env = out.Env();
    out.Set("lr", options.lr());
    Napi::Array betas = Napi::Array::New(env, 2);
    betas.Set(0u, std::get<0>(options.betas()));
    betas.Set(1u, std::get<1>(options.betas()));
    out.Set("betas", betas);
    out.Set("eps", options.eps());
    out.Set("weightDecay", options.weight_decay());
    out.Set("amsgrad", options.amsgrad());
  }

  static void UpdateOptions(Napi::Env env, const Napi::Object& o, Options& options) {
    if (Has(o, "lr")) options.lr(NumberField(env, o, "lr"));
    if (Has(o, "betas")) options.betas(BetasField(env, o));
    if (Has(o, "eps")) options.eps(NumberField(env, o, "eps"));
    if (Has(o, "weightDecay")) options.weight_decay(NumberField(env, o, "weightDecay"));
    if (Has(o, "amsgrad")) options.amsgrad(BoolField(env, o, "amsgrad"));
  }

  static void WriteState(Napi::Env env, const ParamState& state, Napi::Object& entry) {
    entry.Set("step", Napi::Number::New(env, static_cast<double>(state.step())));
    SetSnapshot(env, entry, "expAvg", state.exp_avg());
    SetSnapshot(env, entry, "expAvgSq", state.exp_avg_sq());
    SetSnapshot(env, entry, "maxExpAvgSq", state.max_exp_avg_sq());
  }

  static void ReadState(Napi::Env env, const Napi::Object& entry, const at::Tensor& param, ParamState& state) {
    state.step(ParseInteger(env, entry.Get("step"), "step"));
    state.exp_avg(StateTensor(env, entry, "expAvg", param));
    state.exp_avg_sq(StateTensor(env, entry, "expAvgSq", param));
    if (Has(entry, "maxExpAvgSq")) state.max_exp_avg_sq(StateTensor(env, entry, "maxExpAvgSq", param));
  }
};

struct Adam : AdamFamily<torch::optim::Adam, torch::optim::AdamOptions, torch::optim::AdamParamState> {
  static constexpr const char* kName = "adam";
};

struct AdamW : AdamFamily<torch::optim::AdamW, torch::optim::AdamWOptions, torch::optim::AdamWParamState> {
  static constexpr const char* kName = "adamw";
};

// A kind with its LibTorch types erased, as the handle uses it: functions over LibTorch's base classes, each
// casting to the kind's own types (which the optimizer it created guarantees). Built by KindOf<Traits>().
struct OptimizerKind {
  const char* name;
  std::unique_ptr<torch::optim::Optimizer> (*create)(Napi::Env env, const std::vector<at::Tensor>& params,
                                                     const Napi::Object& options);
  void (*write_options)(torch::optim::OptimizerOptions& options, Napi::Object& out);
  void (*update_options)(Napi::Env env, const Napi::Object& partial, torch::optim::OptimizerOptions& options);
  void (*write_state)(Napi::Env env, torch::optim::OptimizerParamState& state, Napi::Object& entry);
  std::unique_ptr<torch::optim::OptimizerParamState> (*read_state)(Napi::Env env, const Napi::Object& entry,
                                                                   const at::Tensor& param);
};

template <typename Traits>
struct Erased {
  using Options = typename Traits::Options;
  using ParamState = typename Traits::ParamState;

  static std::unique_ptr<torch::optim::Optimizer> Create(Napi::Env env, const std::vector<at::Tensor>& params,
                                                         const Napi::Object& o) {
    const Options options = Traits::ReadOptions(env, o);
    return Guard(env, [&] { return std::make_unique<typename Traits::Optimizer>(params, options); });
  }
  static void WriteOptions(torch::optim::OptimizerOptions& options, Napi::Object& out) {
    Traits::WriteOptions(static_cast<Options&>(options), out);
  }
  static void UpdateOptions(Napi::Env env, const Napi::Object& partial, torch::optim::OptimizerOptions& options) {
    Traits::UpdateOptions(env, partial, static_cast<Options&>(options));
  }
  static void WriteState(Napi::Env env, torch::optim::OptimizerParamState& state, Napi::Object& entry) {
    Traits::WriteState(env, static_cast<ParamState&>(state), entry);
  }
  static std::unique_ptr<torch::optim::OptimizerParamState> ReadState(Napi::Env env, const Napi::Object& entry,
                                                                      const at::Tensor& param) {
    auto state = std::make_unique<ParamState>();
    Traits::ReadState(env, entry, param, *state);
    return state;
  }
};

template <typename Traits>
constexpr OptimizerKind KindOf() {
  return {Traits::kName,
          &Erased<Traits>::Create,
          &Erased<Traits>::WriteOptions,
          &Erased<Traits>::UpdateOptions,
          &Erased<Traits>::WriteState,
          &Erased<Traits>::ReadState};
}

constexpr OptimizerKind kKinds[] = {KindOf<Sgd>(), KindOf<Adam>(), KindOf<AdamW>()};

// The kind called `name`, or null.
const OptimizerKind* FindKind(const std::string& name) {
  for (const OptimizerKind& kind : kKinds) {
    if (name == kind.name) return &kind;
  }
  return nullptr;
}

// "'sgd', 'adam' or 'adamw'": the kinds, for the error message.
std::string KindNames() {
  std::string names;
  const size_t count = std::size(kKinds);
  for (size_t i = 0; i < count; ++i) {
    if (i > 0) names += i + 1 == count ? " or " : ", ";
    names += std::string("'") + kKinds[i].name + "'";
  }
  return names;
}

// ---------------------------------------------------------------------------------------------------------------
// The handle.

class OptimizerHandle : public Napi::ObjectWrap<OptimizerHandle> {
 public:
  static Napi::Function Define(Napi::Env env) {
    Napi::Function constructor = DefineClass(env, "OptimizerHandle", {});
    AddTaggedMethod<OptimizerHandle, &kOptimizerTag, &OptimizerHandle::Step>(env, constructor, "step");
    AddTaggedMethod<OptimizerHandle, &kOptimizerTag, &OptimizerHandle::ZeroGrad>(env, constructor, "zeroGrad");
    AddTaggedMethod<OptimizerHandle, &kOptimizerTag, &OptimizerHandle::Options>(env, constructor, "options");
    AddTaggedMethod<OptimizerHandle, &kOptimizerTag, &OptimizerHandle::SetOptions>(env, constructor, "setOptions");
    AddTaggedMethod<OptimizerHandle, &kOptimizerTag, &OptimizerHandle::State>(env, constructor, "state");
    AddTaggedMethod<OptimizerHandle, &kOptimizerTag, &OptimizerHandle::LoadState>(env, constructor, "loadState");
    AddTaggedMethod<OptimizerHandle, &kOptimizerTag, &OptimizerHandle::Size>(env, constructor, "size");
    return constructor;
  }

  // new OptimizerHandle(kind: 'sgd' | 'adam' | 'adamw', params: TensorHandle[], options: object with every field)
  explicit OptimizerHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<OptimizerHandle>(info) {
    Napi::Env env = info.Env();
    info.This().As<Napi::Object>().TypeTag(&kOptimizerTag);
    kind_ = FindKind(info[0].IsString() ? info[0].As<Napi::String>().Utf8Value() : "");
    if (kind_ == nullptr) ThrowType(env, "kind must be " + KindNames());
    if (!info[1].IsArray()) ThrowType(env, "params must be an array of Tensors");
    const Napi::Array array = info[1].As<Napi::Array>();
    std::vector<at::Tensor> params;
    for (uint32_t i = 0; i < array.Length(); ++i) {
      const std::string what = "params[" + std::to_string(i) + "]";
      params.push_back(TensorHandle::From(env, array.Get(i), what.c_str()));
    }
    if (!info[2].IsObject()) ThrowType(env, "options must be an object");
    optimizer_ = kind_->create(env, params, info[2].As<Napi::Object>());
  }

 private:
  std::vector<at::Tensor>& Params() { return optimizer_->param_groups().at(0).params(); }

  Napi::Value Step(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Guard(env, [&] { optimizer_->step(); });
    return env.Undefined();
  }

  // zeroGrad(setToNone): PyTorch's zero_grad, written out because its signature differs between 1.x and 2.x.
  Napi::Value ZeroGrad(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const bool set_to_none = ParseBool(env, info[0], "setToNone");
    Guard(env, [&] {
      for (auto& group : optimizer_->param_groups()) {
        for (auto& p : group.params()) {
          if (!p.mutable_grad().defined()) continue;
          if (set_to_none) {
            p.mutable_grad().reset();
          } else {
            at::Tensor& grad = p.mutable_grad();
            if (grad.grad_fn()) {
              grad = grad.detach();
            } else {
              grad.requires_grad_(false);
            }
            grad.zero_();
          }
        }
      }
    });
    return env.Undefined();
  }

  // options(): the first parameter group's options, with every field of the kind.
  Napi::Value Options(const Napi::CallbackInfo& info) {
    Napi::Object out = Napi::Object::New(info.Env());
    kind_->write_options(optimizer_->param_groups().at(0).options(), out);
    return out;
  }

  // setOptions(partial): sets the fields present, for every parameter group.
  Napi::Value SetOptions(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!info[0].IsObject()) ThrowType(env, "options must be an object");
    const Napi::Object o = info[0].As<Napi::Object>();
    for (auto& group : optimizer_->param_groups()) kind_->update_options(env, o, group.options());
    return env.Undefined();
  }

  // state(): one entry per parameter, in order: null (no state yet) or the kind's state object (see the traits
  // structs above). Tensors are copies.
  Napi::Value State(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const std::vector<at::Tensor>& params = Params();
    Napi::Array out = Napi::Array::New(env, params.size());
    auto& state = optimizer_->state();
    for (size_t i = 0; i < params.size(); ++i) {
      const auto found = state.find(MakeKey<StateKey>(params[i]));
      if (found == state.end() || !found->second) {
        out.Set(static_cast<uint32_t>(i), env.Null());
        continue;
      }
      Napi::Object entry = Napi::Object::New(env);
      kind_->write_state(env, *found->second, entry);
      out.Set(static_cast<uint32_t>(i), entry);
    }
    return out;
  }

  // loadState(entries): replaces the state of every parameter with `entries` (as state() returns them).
  // Everything is checked and copied before anything is replaced, so a bad entry leaves the state intact.
  Napi::Value LoadState(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const std::vector<at::Tensor>& params = Params();
    if (!info[0].IsArray()) ThrowType(env, "state must be an array");
    const Napi::Array entries = info[0].As<Napi::Array>();
    if (entries.Length() != params.size()) {
      ThrowRange(env, "state has " + std::to_string(entries.Length()) + " entries but the optimizer has " +
                          std::to_string(params.size()) + " parameters");
    }
    std::vector<std::unique_ptr<torch::optim::OptimizerParamState>> loaded(params.size());
    for (uint32_t i = 0; i < entries.Length(); ++i) {
      const Napi::Value value = entries.Get(i);
      if (value.IsNull() || value.IsUndefined()) continue;
      if (!value.IsObject()) ThrowType(env, "state[" + std::to_string(i) + "] must be an object or null");
      loaded[i] = kind_->read_state(env, value.As<Napi::Object>(), params[i]);
    }
    auto& state = optimizer_->state();
    for (size_t i = 0; i < params.size(); ++i) {
      const StateKey key = MakeKey<StateKey>(params[i]);
      if (loaded[i]) {
        state[key] = std::move(loaded[i]);
      } else {
        state.erase(key);
      }
    }
    return env.Undefined();
  }

  Napi::Value Size(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(Params().size()));
  }

  const OptimizerKind* kind_ = nullptr;
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
};

}  // namespace

void RegisterOptimizer(Napi::Env env, Napi::Object exports) {
  exports.Set("OptimizerHandle", OptimizerHandle::Define(env));
}

}  // namespace bce
