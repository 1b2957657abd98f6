#include "objects/optimizer_handle.h"

#include "napi/convert.h"
#include "napi/errors.h"
#include "napi/tagged_method.h"
#include "objects/tensor_handle.h"

#include <torch/optim.h>

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

enum class Kind { kSgd, kAdam, kAdamW };

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
    const std::string kind = info[0].IsString() ? info[0].As<Napi::String>().Utf8Value() : "";
    if (kind == "sgd") {
      kind_ = Kind::kSgd;
    } else if (kind == "adam") {
      kind_ = Kind::kAdam;
    } else if (kind == "adamw") {
      kind_ = Kind::kAdamW;
    } else {
      ThrowType(env, "kind must be 'sgd', 'adam' or 'adamw'");
    }
    if (!info[1].IsArray()) ThrowType(env, "params must be an array of Tensors");
    const Napi::Array array = info[1].As<Napi::Array>();
    std::vector<at::Tensor> params;
    for (uint32_t i = 0; i < array.Length(); ++i) {
      const std::string what = "params[" + std::to_string(i) + "]";
      params.push_back(TensorHandle::From(env, array.Get(i), what.c_str()));
    }
    if (!info[2].IsObject()) ThrowType(env, "options must be an object");
    const Napi::Object o = info[2].As<Napi::Object>();
    const double lr = NumberField(env, o, "lr");
    const double weight_decay = NumberField(env, o, "weightDecay");
    if (kind_ == Kind::kSgd) {
      torch::optim::SGDOptions options(lr);
      options.momentum(NumberField(env, o, "momentum"))
          .dampening(NumberField(env, o, "dampening"))
          .weight_decay(weight_decay)
          .nesterov(BoolField(env, o, "nesterov"));
      optimizer_ = Guard(env, [&] { return std::make_unique<torch::optim::SGD>(params, options); });
    } else {
      const auto beta_pair = BetasField(env, o);
      const double eps = NumberField(env, o, "eps");
      const bool amsgrad = BoolField(env, o, "amsgrad");
      if (kind_ == Kind::kAdam) {
        torch::optim::AdamOptions options(lr);
        options.betas(beta_pair).eps(eps).weight_decay(weight_decay).amsgrad(amsgrad);
        optimizer_ = Guard(env, [&] { return std::make_unique<torch::optim::Adam>(params, options); });
      } else {
        torch::optim::AdamWOptions options(lr);
        options.betas(beta_pair).eps(eps).weight_decay(weight_decay).amsgrad(amsgrad);
        optimizer_ = Guard(env, [&] { return std::make_unique<torch::optim::AdamW>(params, options); });
      }
    }
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

  Napi::Value Options(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Object out = Napi::Object::New(env);
    auto& group_options = optimizer_->param_groups().at(0).options();
    if (kind_ == Kind::kSgd) {
      auto& o = static_cast<torch::optim::SGDOptions&>(group_options);
      out.Set("lr", o.lr());
      out.Set("momentum", o.momentum());
      out.Set("dampening", o.dampening());
      out.Set("weightDecay", o.weight_decay());
      out.Set("nesterov", o.nesterov());
    } else {
      auto fill = [&](auto& o) {
        out.Set("lr", o.lr());
        Napi::Array betas = Napi::Array::New(env, 2);
        betas.Set(0u, std::get<0>(o.betas()));
        betas.Set(1u, std::get<1>(o.betas()));
        out.Set("betas", betas);
        out.Set("eps", o.eps());
        out.Set("weightDecay", o.weight_decay());
        out.Set("amsgrad", o.amsgrad());
      };
      if (kind_ == Kind::kAdam) {
        fill(static_cast<torch::optim::AdamOptions&>(group_options));
      } else {
        fill(static_cast<torch::optim::AdamWOptions&>(group_options));
      }
    }
    return out;
  }

  // setOptions(partial): sets the fields present, for every parameter group.
  Napi::Value SetOptions(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!info[0].IsObject()) ThrowType(env, "options must be an object");
    const Napi::Object o = info[0].As<Napi::Object>();
    for (auto& group : optimizer_->param_groups()) {
      auto& group_options = group.options();
      if (kind_ == Kind::kSgd) {
        auto& s = static_cast<torch::optim::SGDOptions&>(group_options);
        if (Has(o, "lr")) s.lr(NumberField(env, o, "lr"));
        if (Has(o, "momentum")) s.momentum(NumberField(env, o, "momentum"));
        if (Has(o, "dampening")) s.dampening(NumberField(env, o, "dampening"));
        if (Has(o, "weightDecay")) s.weight_decay(NumberField(env, o, "weightDecay"));
        if (Has(o, "nesterov")) s.nesterov(BoolField(env, o, "nesterov"));
      } else {
        auto apply = [&](auto& a) {
          if (Has(o, "lr")) a.lr(NumberField(env, o, "lr"));
          if (Has(o, "betas")) a.betas(BetasField(env, o));
          if (Has(o, "eps")) a.eps(NumberField(env, o, "eps"));
          if (Has(o, "weightDecay")) a.weight_decay(NumberField(env, o, "weightDecay"));
          if (Has(o, "amsgrad")) a.amsgrad(BoolField(env, o, "amsgrad"));
        };
        if (kind_ == Kind::kAdam) {
          apply(static_cast<torch::optim::AdamOptions&>(group_options));
        } else {
          apply(static_cast<torch::optim::AdamWOptions&>(group_options));
        }
      }
    }
    return env.Undefined();
  }

  // state(): one entry per parameter, in order: null (no state yet), { momentumBuffer } for SGD, or
  // { step, expAvg, expAvgSq, maxExpAvgSq? } for Adam/AdamW. Tensors are copies.
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
      if (kind_ == Kind::kSgd) {
        auto& s = static_cast<torch::optim::SGDParamState&>(*found->second);
        at::Tensor buffer = Guard(env, [&] { return Snapshot(s.momentum_buffer()); });
        if (buffer.defined()) entry.Set("momentumBuffer", TensorHandle::Wrap(env, buffer));
      } else {
        auto fill = [&](auto& s) {
          entry.Set("step", Napi::Number::New(env, static_cast<double>(s.step())));
          at::Tensor exp_avg = Guard(env, [&] { return Snapshot(s.exp_avg()); });
          at::Tensor exp_avg_sq = Guard(env, [&] { return Snapshot(s.exp_avg_sq()); });
          at::Tensor max_exp_avg_sq = Guard(env, [&] { return Snapshot(s.max_exp_avg_sq()); });
          if (exp_avg.defined()) entry.Set("expAvg", TensorHandle::Wrap(env, exp_avg));
          if (exp_avg_sq.defined()) entry.Set("expAvgSq", TensorHandle::Wrap(env, exp_avg_sq));
          if (max_exp_avg_sq.defined()) entry.Set("maxExpAvgSq", TensorHandle::Wrap(env, max_exp_avg_sq));
        };
        if (kind_ == Kind::kAdam) {
          fill(static_cast<torch::optim::AdamParamState&>(*found->second));
        } else {
          fill(static_cast<torch::optim::AdamWParamState&>(*found->second));
        }
      }
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
      const Napi::Object entry = value.As<Napi::Object>();
      const at::Tensor& p = params[i];
      if (kind_ == Kind::kSgd) {
        auto s = std::make_unique<torch::optim::SGDParamState>();
        if (Has(entry, "momentumBuffer")) s->momentum_buffer(StateTensor(env, entry, "momentumBuffer", p));
        loaded[i] = std::move(s);
      } else {
        auto fill = [&](auto s) {
          s->step(ParseInteger(env, entry.Get("step"), "step"));
          s->exp_avg(StateTensor(env, entry, "expAvg", p));
          s->exp_avg_sq(StateTensor(env, entry, "expAvgSq", p));
          if (Has(entry, "maxExpAvgSq")) s->max_exp_avg_sq(StateTensor(env, entry, "maxExpAvgSq", p));
          loaded[i] = std::move(s);
        };
        if (kind_ == Kind::kAdam) {
          fill(std::make_unique<torch::optim::AdamParamState>());
        } else {
          fill(std::make_unique<torch::optim::AdamWParamState>());
        }
      }
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

  Kind kind_ = Kind::kSgd;
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
};

}  // namespace

void RegisterOptimizer(Napi::Env env, Napi::Object exports) {
  exports.Set("OptimizerHandle", OptimizerHandle::Define(env));
}

}  // namespace bce
