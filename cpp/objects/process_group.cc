#include "objects/process_group.h"

#include "loss/collectives.h"
#include "napi/convert.h"
#include "napi/errors.h"
#include "napi/tagged_method.h"
#include "objects/tensor_handle.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/generated/variable_factories.h>

#if BCE_DISTRIBUTED
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#endif

#include <chrono>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace bce {

#if BCE_DISTRIBUTED
namespace {

const napi_type_tag kGroupTag = {0x7d4b19c2e65a4f08ULL, 0x93f1a7c5e2b8d640ULL};

using WorkPtr = c10::intrusive_ptr<c10d::Work>;

// A message for JavaScript: c10::Error without its C++ backtrace.
std::string Describe(const std::exception& error) {
  if (const auto* c10_error = dynamic_cast<const c10::Error*>(&error)) return c10_error->what_without_backtrace();
  return error.what();
}

// The c10d objects of one process group. Shared by the handle, the workers waiting on its collectives and the
// global losses, so that destroy() while a collective is in flight frees nothing under it.
class Group : public Collectives {
 public:
  Group(c10::intrusive_ptr<c10d::Store> store, c10::intrusive_ptr<c10d::ProcessGroupGloo> group, int rank, int size)
      : store_(std::move(store)), group_(std::move(group)), rank_(rank), size_(size) {}

  int rank() const override { return rank_; }
  int world_size() const override { return size_; }
  c10d::ProcessGroupGloo& gloo() { return *group_; }

  void AllReduceSum(at::Tensor& tensor) override {
    std::vector<at::Tensor> tensors{tensor};
    WorkPtr work = group_->allreduce(tensors);
    work->wait();
  }

 private:
  c10::intrusive_ptr<c10d::Store> store_;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> group_;
  int rank_;
  int size_;
};

struct InitOptions {
  int rank = 0;
  int world_size = 1;
  std::string master_addr;
  int master_port = 0;
  std::chrono::milliseconds timeout{0};
};

bool IsLoopback(const std::string& address) {
  return address == "localhost" || address.rfind("127.", 0) == 0 || address == "::1";
}

// The network device Gloo binds: GLOO_SOCKET_IFNAME's interface when set (as in PyTorch); the loopback address
// when the master is on this machine's loopback; otherwise the address this machine's hostname resolves to.
std::shared_ptr<::gloo::transport::Device> GlooDevice(const std::string& master_addr) {
  const char* interface = std::getenv("GLOO_SOCKET_IFNAME");
  if (interface != nullptr && *interface != '\0') return c10d::ProcessGroupGloo::createDeviceForInterface(interface);
  if (IsLoopback(master_addr)) return c10d::ProcessGroupGloo::createDeviceForHostname(master_addr);
  return c10d::ProcessGroupGloo::createDefaultDevice();
}

// Rank 0's store could not listen on masterPort.
struct PortError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::shared_ptr<Group> Rendezvous(const InitOptions& o) {
  c10d::TCPStoreOptions store_options;
  store_options.port = static_cast<std::uint16_t>(o.master_port);
  store_options.isServer = o.rank == 0;
  store_options.numWorkers = static_cast<std::size_t>(o.world_size);
  // Rank 0 first only listens, so that a port it cannot bind (in use) is told apart from ranks that never come.
  store_options.waitWorkers = false;
  store_options.timeout = o.timeout;
  c10::intrusive_ptr<c10d::TCPStore> store;
  if (o.rank == 0) {
    try {
      store = c10::make_intrusive<c10d::TCPStore>(o.master_addr, store_options);
    } catch (const std::exception& error) {
      throw PortError("rank 0 could not listen on masterPort " + std::to_string(o.master_port) +
                      " (is another program, or another process group, using it?): " + Describe(error));
    }
    store->waitForWorkers();
  } else {
    // A client counts itself in (and waits for the others) only when constructed with waitWorkers.
    store_options.waitWorkers = true;
    store = c10::make_intrusive<c10d::TCPStore>(o.master_addr, store_options);
  }
  auto options = c10d::ProcessGroupGloo::Options::create(o.timeout);
  options->devices.push_back(GlooDevice(o.master_addr));
  auto gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(store, o.rank, o.world_size, options);
  return std::make_shared<Group>(std::move(store), std::move(gloo), o.rank, o.world_size);
}

// What one rank is about to pass to a collective: which collective, its op or root, and the dtype and number
// of elements of each tensor it sends. Gloo's transport aborts the process (an exception on its own I/O thread)
// when the ranks' buffers differ in size, so every rank first exchanges this fixed-size summary and the
// collective is issued only when all ranks agree.
struct CollectiveSummary {
  int64_t collective = 0;  // index into kCollectiveNames
  int64_t argument = 0;    // the reduce op, or the root rank
  std::vector<at::Tensor> tensors;
};

const char* const kCollectiveNames[] = {"allReduce", "broadcast", "allGather", "averageGradients", "broadcastTensors"};

std::string DescribeTensors(int64_t dtype_or_count, int64_t numel_or_hash, bool single) {
  if (single)
    return DtypeName(static_cast<c10::ScalarType>(dtype_or_count)) + " with " + std::to_string(numel_or_hash) +
           " elements";
  return std::to_string(dtype_or_count) + " buckets";
}

// Exchanges the summaries (one all-gather of 4 integers) and throws, naming each rank's side, when they differ.
// Blocks until every rank has reached the same point (or the group's timeout).
void CheckAgreement(Group& group, const CollectiveSummary& summary) {
  const bool single = summary.tensors.size() == 1;
  int64_t a = 0;
  int64_t b = 0;
  if (single) {
    a = static_cast<int64_t>(summary.tensors[0].scalar_type());
    b = summary.tensors[0].numel();
  } else {
    // The bucket count, and a fingerprint of the (dtype, size) sequence: equal lists give equal fingerprints.
    a = static_cast<int64_t>(summary.tensors.size());
    uint64_t hash = 1469598103934665603ULL;
    for (const at::Tensor& tensor : summary.tensors) {
      for (uint64_t v : {static_cast<uint64_t>(tensor.scalar_type()), static_cast<uint64_t>(tensor.numel())})
        hash = (hash ^ v) * 1099511628211ULL;
    }
    b = static_cast<int64_t>(hash);
  }
  const int size = group.world_size();
  at::Tensor mine = at::tensor(std::vector<int64_t>{summary.collective, summary.argument, a, b}, at::kLong);
  std::vector<std::vector<at::Tensor>> outputs(1);
  for (int r = 0; r < size; ++r) outputs[0].push_back(at::empty_like(mine));
  std::vector<at::Tensor> inputs{mine};
  group.gloo().allgather(outputs, inputs)->wait();
  for (int r = 0; r < size; ++r) {
    const at::Tensor theirs = outputs[0][r];
    if (at::equal(theirs, mine)) continue;
    const int64_t* t = theirs.data_ptr<int64_t>();
    std::string message =
        "the ranks disagree: rank " + std::to_string(group.rank()) + " calls " + kCollectiveNames[summary.collective];
    if (t[0] != summary.collective || t[1] != summary.argument) {
      message += " (op or root " + std::to_string(summary.argument) + "), rank " + std::to_string(r) + " calls " +
                 (t[0] >= 0 && t[0] < 5 ? kCollectiveNames[t[0]] : "another collective") + " (op or root " +
                 std::to_string(t[1]) + ")";
    } else if (single) {
      message += " with " + DescribeTensors(a, b, true) + ", rank " + std::to_string(r) + " with " +
                 DescribeTensors(t[2], t[3], true) + " (every rank must pass the same dtype and number of elements)";
    } else {
      message += " with " + DescribeTensors(a, b, false) + ", rank " + std::to_string(r) + " with " +
                 DescribeTensors(t[2], t[3], false) +
                 " that differ in count, dtype or size (every rank must pass the same tensors)";
    }
    throw std::invalid_argument(message);
  }
}

// Waits off the JavaScript thread for a collective, runs `after` there (copies back into the caller's tensors),
// then settles a Promise with `result` (built on the JavaScript thread).
class WaitWorker : public Napi::AsyncWorker {
 public:
  using After = std::function<void()>;
  using Result = std::function<Napi::Value(Napi::Env)>;

  WaitWorker(Napi::Env env, std::string what, std::shared_ptr<Group> group, std::vector<WorkPtr> works, After after,
             Result result)
      : Napi::AsyncWorker(env, "bootstrapped-ce:collective"),
        deferred_(Napi::Promise::Deferred::New(env)),
        what_(std::move(what)),
        group_(std::move(group)),
        works_(std::move(works)),
        after_(std::move(after)),
        result_(std::move(result)) {}

  Napi::Promise Promise() const { return deferred_.Promise(); }

  void Execute() override {
    try {
      for (const WorkPtr& work : works_) work->wait();
      if (after_) after_();
    } catch (const std::exception& error) {
      SetError(what_ + " failed: " + Describe(error));
    }
  }

  void OnOK() override {
    Napi::Env env = Env();
    try {
      deferred_.Resolve(result_ ? result_(env) : env.Undefined());
    } catch (const Napi::Error& error) {
      deferred_.Reject(error.Value());
    }
  }

  void OnError(const Napi::Error& error) override { deferred_.Reject(error.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  std::string what_;
  std::shared_ptr<Group> group_;
  std::vector<WorkPtr> works_;
  After after_;
  Result result_;
};

class InitWorker : public Napi::AsyncWorker {
 public:
  InitWorker(Napi::Env env, InitOptions options, std::function<void(std::shared_ptr<Group>)> done)
      : Napi::AsyncWorker(env, "bootstrapped-ce:rendezvous"),
        deferred_(Napi::Promise::Deferred::New(env)),
        options_(std::move(options)),
        done_(std::move(done)) {}

  Napi::Promise Promise() const { return deferred_.Promise(); }

  void Execute() override {
    try {
      group_ = Rendezvous(options_);
    } catch (const PortError& error) {
      SetError("initProcessGroup: " + std::string(error.what()));
    } catch (const std::exception& error) {
      SetError("initProcessGroup: rank " + std::to_string(options_.rank) + " of " +
               std::to_string(options_.world_size) + " could not join the group at " + options_.master_addr + ":" +
               std::to_string(options_.master_port) + " within " + std::to_string(options_.timeout.count()) +
               " ms (does every rank run, with the same worldSize, masterAddr and masterPort?): " + Describe(error));
    }
  }

  void OnOK() override {
    done_(group_);
    deferred_.Resolve(Env().Undefined());
  }

  void OnError(const Napi::Error& error) override {
    done_(nullptr);
    deferred_.Reject(error.Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  InitOptions options_;
  std::function<void(std::shared_ptr<Group>)> done_;
  std::shared_ptr<Group> group_;
};

enum class Op { kSum, kProduct, kMin, kMax, kAvg };

Op ParseOp(Napi::Env env, const Napi::Value& value) {
  const std::string name = value.IsString() ? value.As<Napi::String>().Utf8Value() : "";
  if (name == "sum") return Op::kSum;
  if (name == "product") return Op::kProduct;
  if (name == "min") return Op::kMin;
  if (name == "max") return Op::kMax;
  if (name == "avg") return Op::kAvg;
  ThrowType(env, "op must be 'sum', 'product', 'min', 'max' or 'avg'");
}

c10d::ReduceOp ReduceOpOf(Op op) {
  switch (op) {
    case Op::kProduct: return c10d::ReduceOp::PRODUCT;
    case Op::kMin: return c10d::ReduceOp::MIN;
    case Op::kMax: return c10d::ReduceOp::MAX;
    default: return c10d::ReduceOp::SUM;  // avg: a sum, then a division (Gloo has no average)
  }
}

std::vector<at::Tensor> TensorList(Napi::Env env, const Napi::Value& value, const char* what) {
  if (!value.IsArray()) ThrowType(env, std::string(what) + " must be an array of Tensors");
  const Napi::Array array = value.As<Napi::Array>();
  std::vector<at::Tensor> tensors;
  tensors.reserve(array.Length());
  for (uint32_t i = 0; i < array.Length(); ++i) {
    const std::string name = std::string(what) + "[" + std::to_string(i) + "]";
    tensors.push_back(TensorHandle::From(env, array.Get(i), name.c_str()));
  }
  return tensors;
}

// Consecutive tensors of one dtype and device, up to `bucket_bytes` each (at least one tensor per bucket).
std::vector<std::vector<at::Tensor>> Buckets(const std::vector<at::Tensor>& tensors, int64_t bucket_bytes) {
  std::vector<std::vector<at::Tensor>> buckets;
  int64_t bytes = 0;
  for (const at::Tensor& tensor : tensors) {
    const int64_t size = tensor.numel() * static_cast<int64_t>(tensor.element_size());
    const bool fits = !buckets.empty() && bytes + size <= bucket_bytes &&
                      buckets.back().front().scalar_type() == tensor.scalar_type() &&
                      buckets.back().front().device() == tensor.device();
    if (!fits) {
      buckets.emplace_back();
      bytes = 0;
    }
    buckets.back().push_back(tensor);
    bytes += size;
  }
  return buckets;
}

at::Tensor Flatten(const std::vector<at::Tensor>& tensors) {
  std::vector<at::Tensor> flat;
  flat.reserve(tensors.size());
  for (const at::Tensor& tensor : tensors) flat.push_back(tensor.detach().reshape(-1));
  return at::cat(flat);
}

// Copies `flat` (made by Flatten) back into `tensors`, in place, without recording autograd.
void Unflatten(const at::Tensor& flat, const std::vector<at::Tensor>& tensors) {
  at::NoGradGuard no_grad;
  int64_t offset = 0;
  for (const at::Tensor& tensor : tensors) {
    const int64_t n = tensor.numel();
    tensor.copy_(flat.narrow(0, offset, n).view(tensor.sizes()));
    offset += n;
  }
}

class ProcessGroupHandle : public Napi::ObjectWrap<ProcessGroupHandle> {
 public:
  static Napi::Function Define(Napi::Env env) {
    Napi::Function constructor = DefineClass(env, "ProcessGroupHandle", {});
    AddTaggedMethod<ProcessGroupHandle, &kGroupTag, &ProcessGroupHandle::Init>(env, constructor, "init");
    AddTaggedMethod<ProcessGroupHandle, &kGroupTag, &ProcessGroupHandle::AllReduce>(env, constructor, "allReduce");
    AddTaggedMethod<ProcessGroupHandle, &kGroupTag, &ProcessGroupHandle::Broadcast>(env, constructor, "broadcast");
    AddTaggedMethod<ProcessGroupHandle, &kGroupTag, &ProcessGroupHandle::AllGather>(env, constructor, "allGather");
    AddTaggedMethod<ProcessGroupHandle, &kGroupTag, &ProcessGroupHandle::Barrier>(env, constructor, "barrier");
    AddTaggedMethod<ProcessGroupHandle, &kGroupTag, &ProcessGroupHandle::AverageGradients>(env, constructor,
                                                                                           "averageGradients");
    AddTaggedMethod<ProcessGroupHandle, &kGroupTag, &ProcessGroupHandle::BroadcastTensors>(env, constructor,
                                                                                           "broadcastTensors");
    AddTaggedMethod<ProcessGroupHandle, &kGroupTag, &ProcessGroupHandle::Destroy>(env, constructor, "destroy");
    return constructor;
  }

  explicit ProcessGroupHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ProcessGroupHandle>(info) {
    info.This().As<Napi::Object>().TypeTag(&kGroupTag);
  }

  static ProcessGroupHandle* Unwrapped(Napi::Env env, const Napi::Value& value, const char* what) {
    if (!value.IsObject() || !value.As<Napi::Object>().CheckTypeTag(&kGroupTag))
      ThrowType(env, std::string(what) + " must be a process group");
    return Napi::ObjectWrap<ProcessGroupHandle>::Unwrap(value.As<Napi::Object>());
  }

  std::shared_ptr<Group> Live(Napi::Env env) const {
    if (destroyed_) throw Napi::Error::New(env, "the process group was destroyed (destroyProcessGroup)");
    if (!group_) throw Napi::Error::New(env, "the process group is not initialised yet (await initProcessGroup)");
    return group_;
  }

 private:
  // init(rank, worldSize, masterAddr, masterPort, timeoutMs) -> Promise<void>
  Napi::Value Init(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (group_ || initialising_) throw Napi::Error::New(env, "the process group is already initialised");
    InitOptions options;
    options.rank = static_cast<int>(ParseInteger(env, info[0], "rank"));
    options.world_size = static_cast<int>(ParseInteger(env, info[1], "worldSize"));
    if (!info[2].IsString()) ThrowType(env, "masterAddr must be a string");
    options.master_addr = info[2].As<Napi::String>().Utf8Value();
    options.master_port = static_cast<int>(ParseInteger(env, info[3], "masterPort"));
    options.timeout = std::chrono::milliseconds(ParseInteger(env, info[4], "timeoutMs"));
    if (options.world_size < 1 || options.rank < 0 || options.rank >= options.world_size)
      ThrowRange(env, "rank must be in [0, worldSize)");
    if (options.master_port < 1 || options.master_port > 65535) ThrowRange(env, "masterPort must be in [1, 65535]");
    if (options.timeout.count() < 1) ThrowRange(env, "timeoutMs must be at least 1");
    initialising_ = true;
    // The worker keeps this handle alive until it is done.
    auto self = std::make_shared<Napi::ObjectReference>(Napi::Persistent(info.This().As<Napi::Object>()));
    auto* worker = new InitWorker(env, options, [this, self](std::shared_ptr<Group> group) {
      initialising_ = false;
      group_ = std::move(group);
      self->Reset();
    });
    const Napi::Promise promise = worker->Promise();
    worker->Queue();
    return promise;
  }

  // Settles a collective: a Promise when `wait` is false, else waits here and returns the result.
  Napi::Value Finish(Napi::Env env, const std::string& what, std::shared_ptr<Group> group, std::vector<WorkPtr> works,
                     WaitWorker::After after, WaitWorker::Result result, bool wait) {
    if (wait) {
      Guard(env, [&] {
        try {
          for (const WorkPtr& work : works) work->wait();
          if (after) after();
        } catch (const std::exception& error) {
          throw std::runtime_error(what + " failed: " + Describe(error));
        }
      });
      return result ? result(env) : env.Undefined();
    }
    auto* worker = new WaitWorker(env, what, std::move(group), std::move(works), std::move(after), std::move(result));
    const Napi::Promise promise = worker->Promise();
    worker->Queue();
    return promise;
  }

  // CheckAgreement, its failure worded like the collective's own.
  static void Checked(const std::string& what, Group& group, const CollectiveSummary& summary) {
    try {
      CheckAgreement(group, summary);
    } catch (const std::exception& error) {
      throw std::runtime_error(what + " failed: " + Describe(error));
    }
  }

  static at::Tensor CollectiveTensor(Napi::Env env, const Napi::Value& value) {
    at::Tensor tensor = TensorHandle::From(env, value, "tensor");
    if (!tensor.is_contiguous()) ThrowType(env, "tensor must be contiguous");
    return tensor;
  }

  // allReduce(tensor, op, wait) -> Promise<void> | void: in place.
  Napi::Value AllReduce(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::shared_ptr<Group> group = Live(env);
    at::Tensor tensor = CollectiveTensor(env, info[0]);
    const Op op = ParseOp(env, info[1]);
    const bool wait = ParseBool(env, info[2], "wait");
    if (op == Op::kAvg && !at::isFloatingType(tensor.scalar_type()))
      ThrowType(env, "op 'avg' needs a floating-point tensor");
    std::vector<WorkPtr> works = Guard(env, [&] {
      Checked("allReduce", *group, {0, static_cast<int64_t>(op), {tensor}});
      std::vector<at::Tensor> tensors{tensor};
      c10d::AllreduceOptions options;
      options.reduceOp = ReduceOpOf(op);
      return std::vector<WorkPtr>{group->gloo().allreduce(tensors, options)};
    });
    WaitWorker::After after;
    if (op == Op::kAvg) {
      const int size = group->world_size();
      after = [tensor, size]() mutable {
        at::NoGradGuard no_grad;
        tensor.div_(size);
      };
    }
    return Finish(env, "allReduce", group, std::move(works), std::move(after), nullptr, wait);
  }

  // broadcast(tensor, src, wait): rank `src`'s values into every rank's tensor, in place.
  Napi::Value Broadcast(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::shared_ptr<Group> group = Live(env);
    at::Tensor tensor = CollectiveTensor(env, info[0]);
    const int64_t src = ParseInteger(env, info[1], "src");
    const bool wait = ParseBool(env, info[2], "wait");
    if (src < 0 || src >= group->world_size()) ThrowRange(env, "src must be a rank in [0, worldSize)");
    std::vector<WorkPtr> works = Guard(env, [&] {
      Checked("broadcast", *group, {1, src, {tensor}});
      std::vector<at::Tensor> tensors{tensor};
      c10d::BroadcastOptions options;
      options.rootRank = src;
      return std::vector<WorkPtr>{group->gloo().broadcast(tensors, options)};
    });
    return Finish(env, "broadcast", group, std::move(works), nullptr, nullptr, wait);
  }

  // allGather(tensor, wait) -> Promise<Tensor[]> | Tensor[]: every rank's tensor, in rank order.
  Napi::Value AllGather(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::shared_ptr<Group> group = Live(env);
    at::Tensor tensor = CollectiveTensor(env, info[0]);
    const bool wait = ParseBool(env, info[1], "wait");
    auto outputs = std::make_shared<std::vector<std::vector<at::Tensor>>>(1);
    for (int r = 0; r < group->world_size(); ++r) (*outputs)[0].push_back(at::empty_like(tensor));
    std::vector<WorkPtr> works = Guard(env, [&] {
      Checked("allGather", *group, {2, 0, {tensor}});
      std::vector<at::Tensor> inputs{tensor};
      return std::vector<WorkPtr>{group->gloo().allgather(*outputs, inputs)};
    });
    auto result = [outputs](Napi::Env env) -> Napi::Value {
      Napi::Array array = Napi::Array::New(env, (*outputs)[0].size());
      for (size_t i = 0; i < (*outputs)[0].size(); ++i)
        array.Set(static_cast<uint32_t>(i), TensorHandle::Wrap(env, (*outputs)[0][i]));
      return array;
    };
    return Finish(env, "allGather", group, std::move(works), nullptr, result, wait);
  }

  // barrier(wait): returns once every rank has reached it.
  Napi::Value Barrier(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::shared_ptr<Group> group = Live(env);
    const bool wait = ParseBool(env, info[0], "wait");
    std::vector<WorkPtr> works = Guard(env, [&] { return std::vector<WorkPtr>{group->gloo().barrier()}; });
    return Finish(env, "barrier", group, std::move(works), nullptr, nullptr, wait);
  }

  // averageGradients(params, bucketBytes, wait): each parameter's .grad replaced by its mean over the ranks, in
  // buckets of at most bucketBytes (one all-reduce per bucket). A parameter without a gradient counts as zeros
  // (and gets them), so that every rank exchanges the same buckets.
  Napi::Value AverageGradients(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::shared_ptr<Group> group = Live(env);
    const std::vector<at::Tensor> params = TensorList(env, info[0], "params");
    const int64_t bucket_bytes = ParseInteger(env, info[1], "bucketBytes");
    const bool wait = ParseBool(env, info[2], "wait");
    if (bucket_bytes < 1) ThrowRange(env, "bucketBytes must be at least 1");
    auto buckets = std::make_shared<std::vector<std::vector<at::Tensor>>>();
    auto flats = std::make_shared<std::vector<at::Tensor>>();
    std::vector<WorkPtr> works = Guard(env, [&] {
      std::vector<at::Tensor> grads;
      for (const at::Tensor& param : params) {
        at::Tensor& grad = const_cast<at::Tensor&>(param).mutable_grad();
        if (!grad.defined()) grad = at::zeros_like(param);
        grads.push_back(grad);
      }
      *buckets = Buckets(grads, bucket_bytes);
      for (const auto& bucket : *buckets) flats->push_back(Flatten(bucket));
      Checked("averageGradients", *group, {3, 0, *flats});
      std::vector<WorkPtr> issued;
      for (size_t i = 0; i < buckets->size(); ++i) {
        std::vector<at::Tensor> tensors{(*flats)[i]};
        issued.push_back(group->gloo().allreduce(tensors));
      }
      return issued;
    });
    const int size = group->world_size();
    auto after = [buckets, flats, size] {
      for (size_t i = 0; i < buckets->size(); ++i) Unflatten((*flats)[i].div_(size), (*buckets)[i]);
    };
    return Finish(env, "averageGradients", group, std::move(works), after, nullptr, wait);
  }

  // broadcastTensors(tensors, src, bucketBytes, wait): rank src's values into every rank's tensors, in place.
  Napi::Value BroadcastTensors(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::shared_ptr<Group> group = Live(env);
    const std::vector<at::Tensor> tensors = TensorList(env, info[0], "tensors");
    const int64_t src = ParseInteger(env, info[1], "src");
    const int64_t bucket_bytes = ParseInteger(env, info[2], "bucketBytes");
    const bool wait = ParseBool(env, info[3], "wait");
    if (src < 0 || src >= group->world_size()) ThrowRange(env, "src must be a rank in [0, worldSize)");
    if (bucket_bytes < 1) ThrowRange(env, "bucketBytes must be at least 1");
    auto buckets = std::make_shared<std::vector<std::vector<at::Tensor>>>(Buckets(tensors, bucket_bytes));
    auto flats = std::make_shared<std::vector<at::Tensor>>();
    std::vector<WorkPtr> works = Guard(env, [&] {
      for (const auto& bucket : *buckets) flats->push_back(Flatten(bucket));
      Checked("broadcastTensors", *group, {4, src, *flats});
      std::vector<WorkPtr> issued;
      c10d::BroadcastOptions options;
      options.rootRank = src;
      for (size_t i = 0; i < buckets->size(); ++i) {
        std::vector<at::Tensor> list{(*flats)[i]};
        issued.push_back(group->gloo().broadcast(list, options));
      }
      return issued;
    });
    auto after = [buckets, flats] {
      for (size_t i = 0; i < buckets->size(); ++i) Unflatten((*flats)[i], (*buckets)[i]);
    };
    return Finish(env, "broadcastTensors", group, std::move(works), after, nullptr, wait);
  }

  // destroy(): releases the group (collectives still in flight keep it until they end). Idempotent.
  Napi::Value Destroy(const Napi::CallbackInfo& info) {
    group_.reset();
    destroyed_ = true;
    return info.Env().Undefined();
  }

  std::shared_ptr<Group> group_;
  bool initialising_ = false;
  bool destroyed_ = false;
};

Napi::Value DistributedInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object result = Napi::Object::New(env);
  result.Set("available", true);
  result.Set("reason", "");
  Napi::Array backends = Napi::Array::New(env, 1);
  backends.Set(0u, "gloo");
  result.Set("backends", backends);
  return result;
}

}  // namespace

std::shared_ptr<Collectives> CollectivesFrom(Napi::Env env, const Napi::Value& value, const char* what) {
  return ProcessGroupHandle::Unwrapped(env, value, what)->Live(env);
}

void RegisterDistributed(Napi::Env env, Napi::Object exports) {
  exports.Set("distributedInfo", Napi::Function::New<Guarded<DistributedInfo>>(env, "distributedInfo"));
  exports.Set("ProcessGroupHandle", ProcessGroupHandle::Define(env));
}

#else  // !BCE_DISTRIBUTED

namespace {

Napi::Value DistributedInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object result = Napi::Object::New(env);
  result.Set("available", false);
  result.Set("reason", BCE_DISTRIBUTED_REASON);
  result.Set("backends", Napi::Array::New(env, 0));
  return result;
}

}  // namespace

std::shared_ptr<Collectives> CollectivesFrom(Napi::Env env, const Napi::Value& value, const char* what) {
  // The same words as in a build with Gloo (docs/errors.md lists one message); this build can make no process
  // group at all, and initProcessGroup / distributed.unavailableReason() say why.
  ThrowType(env, std::string(what) + " must be a process group");
}

void RegisterDistributed(Napi::Env env, Napi::Object exports) {
  exports.Set("distributedInfo", Napi::Function::New<Guarded<DistributedInfo>>(env, "distributedInfo"));
}

#endif  // BCE_DISTRIBUTED

}  // namespace bce
