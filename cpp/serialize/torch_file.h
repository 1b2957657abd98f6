// PyTorch's own file format (what `torch.save` writes since 1.6, and `torch.load` reads), without Python and
// without running anything from the file: plain LibTorch, no N-API.
//
// The file is a zip archive (entries stored, not compressed) holding `<archive>/data.pkl`, a pickle (protocol 2)
// of the saved object, and one record `<archive>/data/<key>` of raw little-endian bytes per tensor storage.
// Writing goes through LibTorch's PyTorchStreamWriter (the writer torch.save itself uses), so the alignment,
// version record and zip64 fields are LibTorch's. Reading does not go through PyTorchStreamReader: its
// getRecord allocates whatever size an entry declares before reading it, and skips CRC checks. The reader here
// checks every offset and size against the file, refuses compressed entries (torch.save never compresses),
// verifies each entry's CRC-32, and unpickles with an allow-list as `torch.load(weights_only=True)` does: only
// tensors, numbers, strings, booleans, None, lists, tuples and dicts; any other global is refused, never called.
// LibTorch's torch::pickle_load is not used either: it is no allow-list, and it fails on some small torch.save
// dicts; nor torch::pickle_save, whose pickler writes TorchScript's own globals for typed containers.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace bce {
namespace serialize {

// A value of the saved object. kGlobal and kStorage exist only while unpickling.
struct Value {
  enum class Kind { kNone, kBool, kInt, kFloat, kString, kList, kTuple, kDict, kTensor, kGlobal, kStorage };
  Kind kind = Kind::kNone;
  bool boolean = false;
  int64_t integer = 0;
  double number = 0;
  std::string text;                                                                // kString; kGlobal: "module.name"
  std::vector<std::shared_ptr<Value>> items;                                       // kList, kTuple
  std::vector<std::pair<std::shared_ptr<Value>, std::shared_ptr<Value>>> entries;  // kDict, in order
  at::Tensor tensor;  // kTensor; kStorage: the storage as a flat tensor of its dtype
};
using ValuePtr = std::shared_ptr<Value>;

// A file that is not one this reader accepts: corrupted, truncated, of another format, or refused.
class FormatError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Writes `value` to `path` as torch.save does. The file is written beside `path` and renamed into place, so an
// existing file is replaced only by a complete one.
void Save(const Value& value, const std::string& path);

struct LoadOptions {
  // Where every tensor goes; unset: where it was saved ("cpu", "cuda:N").
  std::optional<c10::Device> device;
};

// A loaded object. It also keeps every container the pickle made, and on destruction empties them: a hostile
// pickle can make a list that holds itself, a cycle that shared_ptr alone would never free.
class Loaded {
 public:
  Loaded() = default;
  Loaded(Loaded&&) = default;
  Loaded& operator=(Loaded&&) = default;
  Loaded(const Loaded&) = delete;
  Loaded& operator=(const Loaded&) = delete;
  ~Loaded();

  ValuePtr root;
  std::vector<ValuePtr> containers;
};

// Reads a file written by torch.save (or Save). Throws FormatError for anything it does not accept.
Loaded Load(const std::string& path, const LoadOptions& options);

}  // namespace serialize
}  // namespace bce
