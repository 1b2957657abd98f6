#include "functions/global_losses.h"

#include "functions/loss_arguments.h"
#include "loss/global_select.h"
#include "napi/convert.h"
#include "napi/errors.h"
#include "objects/process_group.h"
#include "objects/tensor_handle.h"

#include <memory>
#include <string>

namespace bce {
namespace {

// stats = [k, nValid, fused (always 0), bytes exchanged, all-reduce rounds]; k and nValid over every rank.
Napi::Value WithStats(Napi::Env env, BootstrappedResult result, const CommunicationStats& communication,
                      Napi::Float64Array stats) {
  stats[0] = static_cast<double>(result.k);
  stats[1] = static_cast<double>(result.n_valid);
  stats[2] = 0.0;
  stats[3] = static_cast<double>(communication.bytes);
  stats[4] = static_cast<double>(communication.rounds);
  return TensorHandle::Wrap(env, std::move(result.loss));
}

// globalBootstrappedCrossEntropy(group, input, target, weight, p, ignoreIndex, labelSmoothing, reduction, stats)
Napi::Value GlobalBootstrappedCrossEntropy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::shared_ptr<Collectives> group = CollectivesFrom(env, info[0], "group");
  const at::Tensor input = TensorHandle::From(env, info[1], "input");
  const at::Tensor target = TensorHandle::From(env, info[2], "target");
  BootstrappedCrossEntropyOptions options;
  options.weight = OptionalTensor(env, info[3], "weight");
  options.p = ParseNumber(env, info[4], "p");
  options.ignore_index = ParseInteger(env, info[5], "ignoreIndex");
  options.label_smoothing = ParseNumber(env, info[6], "labelSmoothing");
  options.reduction = ParseReduction(env, info[7]);
  options.impl = Impl::kReference;
  const Napi::Float64Array stats = StatsArray(env, info[8], 5);
  CommunicationStats communication;
  BootstrappedResult result =
      Guard(env, [&] { return global_bootstrapped_cross_entropy(input, target, options, *group, &communication); });
  return WithStats(env, std::move(result), communication, stats);
}

// globalBootstrappedBinaryCrossEntropy(group, input, target, weight, posWeight, p, reduction, withLogits, stats)
Napi::Value GlobalBootstrappedBinaryCrossEntropy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::shared_ptr<Collectives> group = CollectivesFrom(env, info[0], "group");
  const at::Tensor input = TensorHandle::From(env, info[1], "input");
  const at::Tensor target = TensorHandle::From(env, info[2], "target");
  const at::Tensor weight = OptionalTensor(env, info[3], "weight");
  const at::Tensor pos_weight = OptionalTensor(env, info[4], "posWeight");
  BootstrappedOptionsBase shared;
  shared.p = ParseNumber(env, info[5], "p");
  shared.reduction = ParseReduction(env, info[6]);
  const bool with_logits = ParseBool(env, info[7], "withLogits");
  const Napi::Float64Array stats = StatsArray(env, info[8], 5);
  CommunicationStats communication;
  if (!with_logits && pos_weight.defined()) {
    ThrowType(env, "posWeight applies to bootstrappedBinaryCrossEntropyWithLogits only");
  }
  BootstrappedResult result = Guard(env, [&] {
    if (with_logits) {
      const BootstrappedBinaryCrossEntropyWithLogitsOptions options{shared, weight, pos_weight};
      return global_bootstrapped_binary_cross_entropy_with_logits(input, target, options, *group, &communication);
    }
    const BootstrappedBinaryCrossEntropyOptions options{shared, weight};
    return global_bootstrapped_binary_cross_entropy(input, target, options, *group, &communication);
  });
  return WithStats(env, std::move(result), communication, stats);
}

}  // namespace

void RegisterGlobalLoss(Napi::Env env, Napi::Object exports) {
  exports.Set("globalBootstrappedCrossEntropy",
              Napi::Function::New<Guarded<GlobalBootstrappedCrossEntropy>>(env, "globalBootstrappedCrossEntropy"));
  exports.Set(
      "globalBootstrappedBinaryCrossEntropy",
      Napi::Function::New<Guarded<GlobalBootstrappedBinaryCrossEntropy>>(env, "globalBootstrappedBinaryCrossEntropy"));
}

}  // namespace bce
