#include "serialize/torch_file.h"

#include <ATen/ATen.h>
#include <caffe2/serialize/crc_alt.h>
#include <caffe2/serialize/inline_container.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <unordered_map>

namespace bce {
namespace serialize {
namespace {

// ---------------------------------------------------------------------------------------------------------------
// Storage classes: the dtype of each `torch.<Name>Storage` global, the names torch.save writes in 1.x and 2.x.

struct StorageClass {
  const char* name;
  c10::ScalarType dtype;
};

constexpr std::array<StorageClass, 8> kStorageClasses = {{
    {"FloatStorage", c10::ScalarType::Float},
    {"DoubleStorage", c10::ScalarType::Double},
    {"HalfStorage", c10::ScalarType::Half},
    {"BFloat16Storage", c10::ScalarType::BFloat16},
    {"IntStorage", c10::ScalarType::Int},
    {"LongStorage", c10::ScalarType::Long},
    {"ByteStorage", c10::ScalarType::Byte},
    {"BoolStorage", c10::ScalarType::Bool},
}};

// Storage classes torch.save may name whose dtypes this package has no Tensor for: refused with that reason.
constexpr std::array<const char*, 5> kUnsupportedStorageClasses = {
    {"ShortStorage", "CharStorage", "ComplexFloatStorage", "ComplexDoubleStorage", "UntypedStorage"}};

const char* StorageClassOf(c10::ScalarType dtype) {
  for (const auto& entry : kStorageClasses)
    if (entry.dtype == dtype) return entry.name;
  throw std::invalid_argument(std::string("tensors of dtype ") + c10::toString(dtype) + " cannot be saved");
}

bool LittleEndianHost() {
  const uint16_t probe = 1;
  uint8_t first = 0;
  std::memcpy(&first, &probe, 1);
  return first == 1;
}

// ---------------------------------------------------------------------------------------------------------------
// Pickler: protocol 2, the opcodes torch.save itself emits.

class Pickler {
 public:
  std::string out;
  // The tensors to write as data/<index>: contiguous, detached, on their own device.
  std::vector<at::Tensor> tensors;

  void Dump(const Value& root) {
    out += "\x80\x02";
    Push(root, 0);
    out += '.';
  }

 private:
  static constexpr int kMaxDepth = 100;

  void Byte(uint8_t b) { out.push_back(static_cast<char>(b)); }
  void U32(uint32_t v) {
    for (int i = 0; i < 4; ++i) Byte(static_cast<uint8_t>(v >> (8 * i)));
  }
  void Str(const std::string& s) {
    if (s.size() > std::numeric_limits<uint32_t>::max()) throw std::out_of_range("a string is too long to save");
    Byte('X');
    U32(static_cast<uint32_t>(s.size()));
    out += s;
  }
  void Int(int64_t v) {
    if (v >= 0 && v < 256) {
      Byte('K');
      Byte(static_cast<uint8_t>(v));
    } else if (v >= 0 && v < 65536) {
      Byte('M');
      Byte(static_cast<uint8_t>(v));
      Byte(static_cast<uint8_t>(v >> 8));
    } else if (v >= std::numeric_limits<int32_t>::min() && v <= std::numeric_limits<int32_t>::max()) {
      Byte('J');
      U32(static_cast<uint32_t>(static_cast<int32_t>(v)));
    } else {
      // LONG1: little-endian two's complement, 8 bytes (always enough for an int64).
      Byte(0x8a);
      Byte(8);
      const uint64_t u = static_cast<uint64_t>(v);
      for (int i = 0; i < 8; ++i) Byte(static_cast<uint8_t>(u >> (8 * i)));
    }
  }
  void Float(double v) {
    uint64_t bits = 0;
    std::memcpy(&bits, &v, 8);
    Byte('G');
    for (int i = 7; i >= 0; --i) Byte(static_cast<uint8_t>(bits >> (8 * i)));
  }
  void Global(const char* module, const char* name) {
    Byte('c');
    out += module;
    out += '\n';
    out += name;
    out += '\n';
  }
  void IntTuple(c10::IntArrayRef values) {
    Byte('(');
    for (int64_t v : values) Int(v);
    Byte('t');
  }

  // torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, OrderedDict()), the storage
  // as the persistent id ('storage', torch.<Dtype>Storage, key, location, numel): what Tensor.__reduce_ex__ makes.
  void Tensor(const at::Tensor& tensor) {
    const at::Tensor data = tensor.detach().contiguous();
    const std::string key = std::to_string(tensors.size());
    tensors.push_back(data);
    Global("torch._utils", "_rebuild_tensor_v2");
    Byte('(');
    Byte('(');
    Str("storage");
    Global("torch", StorageClassOf(data.scalar_type()));
    Str(key);
    Str(data.device().is_cpu() ? "cpu" : data.device().str() + (data.device().has_index() ? "" : ":0"));
    Int(data.numel());
    Byte('t');
    Byte('Q');
    Int(0);
    IntTuple(data.sizes());
    IntTuple(data.strides());
    Byte(tensor.requires_grad() ? 0x88 : 0x89);
    Global("collections", "OrderedDict");
    Byte(')');
    Byte('R');
    Byte('t');
    Byte('R');
  }

  void Push(const Value& v, int depth) {
    if (depth > kMaxDepth) throw std::out_of_range("the value is nested more than 100 levels deep (or cyclic)");
    switch (v.kind) {
      case Value::Kind::kNone: Byte('N'); break;
      case Value::Kind::kBool: Byte(v.boolean ? 0x88 : 0x89); break;
      case Value::Kind::kInt: Int(v.integer); break;
      case Value::Kind::kFloat: Float(v.number); break;
      case Value::Kind::kString: Str(v.text); break;
      case Value::Kind::kTensor: Tensor(v.tensor); break;
      case Value::Kind::kList:
        Byte(']');
        if (!v.items.empty()) {
          Byte('(');
          for (const auto& item : v.items) Push(*item, depth + 1);
          Byte('e');
        }
        break;
      case Value::Kind::kTuple:
        Byte('(');
        for (const auto& item : v.items) Push(*item, depth + 1);
        Byte('t');
        break;
      case Value::Kind::kDict:
        Byte('}');
        if (!v.entries.empty()) {
          Byte('(');
          for (const auto& entry : v.entries) {
            Push(*entry.first, depth + 1);
            Push(*entry.second, depth + 1);
          }
          Byte('u');
        }
        break;
      default: throw std::invalid_argument("internal: a value of this kind cannot be saved");
    }
  }
};

// ---------------------------------------------------------------------------------------------------------------
// Zip reader: only what torch.save writes (stored entries), every offset and size checked against the file.

struct Entry {
  uint64_t size = 0;          // compressed == uncompressed (stored)
  uint64_t local_offset = 0;  // of the local header
  uint32_t crc = 0;
  uint16_t method = 0;
  uint16_t flags = 0;
};

uint16_t Le16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t Le32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) | (static_cast<uint32_t>(p[2]) << 16) |
         (static_cast<uint32_t>(p[3]) << 24);
}
uint64_t Le64(const uint8_t* p) { return static_cast<uint64_t>(Le32(p)) | (static_cast<uint64_t>(Le32(p + 4)) << 32); }

class ZipFile {
 public:
  explicit ZipFile(const std::string& path) : path_(path), file_(path, std::ios::binary) {
    if (!file_) throw FormatError("cannot open '" + path + "' for reading");
    file_.seekg(0, std::ios::end);
    const std::streamoff end = file_.tellg();
    if (end < 0) throw FormatError("cannot read '" + path + "'");
    size_ = static_cast<uint64_t>(end);
    Index();
  }

  // The entry `name` under the archive's folder, or nullptr.
  const Entry* Find(const std::string& name) const {
    auto it = entries_.find(prefix_ + name);
    return it == entries_.end() ? nullptr : &it->second;
  }

  // Reads a whole entry into `dst` (entry.size bytes) and checks its CRC-32.
  void Read(const std::string& name, const Entry& entry, void* dst) {
    uint8_t local[30];
    ReadAt(entry.local_offset, local, sizeof(local));
    if (Le32(local) != 0x04034b50) Corrupt("the local header of " + name + " is damaged");
    const uint64_t data = entry.local_offset + 30 + Le16(local + 26) + Le16(local + 28);
    if (data > size_ || entry.size > size_ - data) Corrupt(name + " extends past the end of the file");
    ReadAt(data, dst, entry.size);
    // A CRC of 0 on a non-empty entry means the writer did not compute one (torch.save can be told not to).
    if (entry.crc != 0 || entry.size == 0) {
      const uint32_t crc = entry.size == 0 ? 0 : crc32_fast(dst, entry.size);
      if (crc != entry.crc) Corrupt(name + " does not match its CRC-32: the file is corrupted");
    }
  }

  [[noreturn]] void Corrupt(const std::string& why) const {
    throw FormatError("'" + path_ + "' is not a valid PyTorch file: " + why);
  }

 private:
  void ReadAt(uint64_t offset, void* dst, uint64_t n) {
    if (offset > size_ || n > size_ - offset) Corrupt("it is truncated");
    file_.clear();
    file_.seekg(static_cast<std::streamoff>(offset));
    file_.read(static_cast<char*>(dst), static_cast<std::streamsize>(n));
    if (static_cast<uint64_t>(file_.gcount()) != n) Corrupt("it could not be read (truncated?)");
  }

  void Index() {
    // The end-of-central-directory record: the last 22 bytes, or earlier by the length of a trailing comment.
    if (size_ < 22) NotZip();
    const uint64_t tail_size = std::min<uint64_t>(size_, 22 + 65535);
    std::vector<uint8_t> tail(tail_size);
    ReadAt(size_ - tail_size, tail.data(), tail_size);
    int64_t eocd = -1;
    for (int64_t i = static_cast<int64_t>(tail_size) - 22; i >= 0; --i) {
      if (Le32(&tail[i]) == 0x06054b50) {
        eocd = i;
        break;
      }
    }
    if (eocd < 0) NotZip();
    const uint8_t* e = &tail[eocd];
    uint64_t count = Le16(e + 10);
    uint64_t cd_size = Le32(e + 12);
    uint64_t cd_offset = Le32(e + 16);
    const uint64_t eocd_offset = size_ - tail_size + static_cast<uint64_t>(eocd);
    if (count == 0xFFFF || cd_size == 0xFFFFFFFF || cd_offset == 0xFFFFFFFF) {
      // zip64: a locator just before the record points at the zip64 end-of-central-directory record.
      if (eocd_offset < 20) Corrupt("its zip64 locator is missing");
      uint8_t locator[20];
      ReadAt(eocd_offset - 20, locator, 20);
      if (Le32(locator) != 0x07064b50) Corrupt("its zip64 locator is missing");
      uint8_t record[56];
      ReadAt(Le64(locator + 8), record, 56);
      if (Le32(record) != 0x06064b50) Corrupt("its zip64 directory record is damaged");
      count = Le64(record + 32);
      cd_size = Le64(record + 40);
      cd_offset = Le64(record + 48);
    }
    if (cd_offset > eocd_offset || cd_size > eocd_offset - cd_offset) Corrupt("its central directory is out of bounds");
    if (count > cd_size / 46) Corrupt("its central directory lists more entries than it holds");
    std::vector<uint8_t> cd(cd_size);
    ReadAt(cd_offset, cd.data(), cd_size);
    uint64_t pos = 0;
    for (uint64_t n = 0; n < count; ++n) {
      if (cd_size - pos < 46 || Le32(&cd[pos]) != 0x02014b50) Corrupt("its central directory is damaged");
      const uint8_t* h = &cd[pos];
      Entry entry;
      entry.flags = Le16(h + 8);
      entry.method = Le16(h + 10);
      entry.crc = Le32(h + 16);
      uint64_t compressed = Le32(h + 20);
      uint64_t uncompressed = Le32(h + 24);
      const uint64_t name_len = Le16(h + 28), extra_len = Le16(h + 30), comment_len = Le16(h + 32);
      entry.local_offset = Le32(h + 42);
      if (cd_size - pos - 46 < name_len + extra_len + comment_len) Corrupt("its central directory is damaged");
      std::string name(reinterpret_cast<const char*>(h + 46), name_len);
      // zip64 extra field (id 1): the 64-bit values of the fields that hold 0xFFFFFFFF, in this order.
      const uint8_t* extra = h + 46 + name_len;
      for (uint64_t x = 0; x + 4 <= extra_len;) {
        const uint16_t id = Le16(extra + x), len = Le16(extra + x + 2);
        if (x + 4 + len > extra_len) Corrupt("an extra field of " + name + " is damaged");
        if (id == 1) {
          uint64_t at = x + 4;
          auto take = [&](uint64_t& field) {
            if (field != 0xFFFFFFFF) return;
            if (at + 8 > x + 4 + len) Corrupt("the zip64 field of " + name + " is damaged");
            field = Le64(extra + at);
            at += 8;
          };
          take(uncompressed);
          take(compressed);
          take(entry.local_offset);
        }
        x += 4 + len;
      }
      if (entry.flags & 1) Corrupt(name + " is encrypted");
      if (entry.method != 0 || compressed != uncompressed) {
        Corrupt(name + " is compressed; torch.save stores entries uncompressed, and compressed ones are refused");
      }
      entry.size = uncompressed;
      if (entry.local_offset > cd_offset || entry.size > cd_offset - entry.local_offset)
        Corrupt(name + " lies outside the file's data");
      if (prefix_.empty()) {
        const size_t slash = name.find('/');
        if (slash == std::string::npos) Corrupt("its entries are not in an archive folder");
        prefix_ = name.substr(0, slash + 1);
      }
      entries_[name] = entry;
      pos += 46 + name_len + extra_len + comment_len;
    }
  }

  [[noreturn]] void NotZip() const {
    throw FormatError("'" + path_ +
                      "' is not a PyTorch file of the zip format (torch.save's since PyTorch 1.6): it is truncated, "
                      "or another format (the legacy _use_new_zipfile_serialization=False format is not read)");
  }

  std::string path_;
  std::ifstream file_;
  uint64_t size_ = 0;
  std::string prefix_;
  std::map<std::string, Entry> entries_;
};

// ---------------------------------------------------------------------------------------------------------------
// Unpickler: an allow-list, as torch.load(weights_only=True). Globals outside it are refused when named, before
// anything could call them.

constexpr const char* kRebuildTensorV2 = "torch._utils._rebuild_tensor_v2";
constexpr const char* kRebuildTensor = "torch._utils._rebuild_tensor";
constexpr const char* kRebuildParameter = "torch._utils._rebuild_parameter";
constexpr const char* kOrderedDict = "collections.OrderedDict";

class Unpickler {
 public:
  Unpickler(ZipFile& zip, const std::string& path, const LoadOptions& options, std::vector<ValuePtr>& containers)
      : zip_(zip), path_(path), options_(options), containers_(containers) {}

  ValuePtr Run(const std::string& data) {
    data_ = reinterpret_cast<const uint8_t*>(data.data());
    size_ = data.size();
    pos_ = 0;
    for (;;) {
      const uint8_t op = U8();
      switch (op) {
        case 0x80: U8(); break;                            // PROTO
        case 0x95: Take(8); break;                         // FRAME (protocol 4): a length hint
        case '.': return PopOne();                         // STOP
        case '(': marks_.push_back(stack_.size()); break;  // MARK
        case '0': PopOne(); break;                         // POP
        case '1': PopMark(); break;                        // POP_MARK
        case '2': Push(Top()); break;                      // DUP
        case 'N': Push(Make(Value::Kind::kNone)); break;
        case 0x88: Push(Bool(true)); break;
        case 0x89: Push(Bool(false)); break;
        case 'K': Push(Int(U8())); break;  // BININT1
        case 'M': {                        // BININT2
          const uint8_t* p = Take(2);
          Push(Int(Le16(p)));
          break;
        }
        case 'J': Push(Int(static_cast<int32_t>(Le32(Take(4))))); break;  // BININT
        case 0x8a: Push(Long(U8())); break;                               // LONG1
        case 0x8b: Push(Long(Le32(Take(4)))); break;                      // LONG4
        case 'G': {                                                       // BINFLOAT, big-endian
          const uint8_t* p = Take(8);
          uint64_t bits = 0;
          for (int i = 0; i < 8; ++i) bits = (bits << 8) | p[i];
          auto v = Make(Value::Kind::kFloat);
          std::memcpy(&v->number, &bits, 8);
          Push(v);
          break;
        }
        case 'X': Push(String(Le32(Take(4)))); break;   // BINUNICODE
        case 0x8c: Push(String(U8())); break;           // SHORT_BINUNICODE
        case 0x8d: Push(String(Le64(Take(8)))); break;  // BINUNICODE8
        case 'T': Push(String(Le32(Take(4)))); break;   // BINSTRING (Python 2 str)
        case 'U': Push(String(U8())); break;            // SHORT_BINSTRING
        case ']': Push(Container(Value::Kind::kList)); break;
        case '}': Push(Container(Value::Kind::kDict)); break;
        case ')': Push(Container(Value::Kind::kTuple)); break;
        case 'l': {  // LIST
          auto list = Container(Value::Kind::kList);
          list->items = PopMark();
          Push(list);
          break;
        }
        case 't': {  // TUPLE
          auto tuple = Container(Value::Kind::kTuple);
          tuple->items = PopMark();
          Push(tuple);
          break;
        }
        case 0x85:
        case 0x86:
        case 0x87: {  // TUPLE1..3
          const size_t n = op - 0x84;
          if (stack_.size() < n + Floor()) Bad("a tuple opcode finds too few values");
          auto tuple = Container(Value::Kind::kTuple);
          tuple->items.assign(stack_.end() - n, stack_.end());
          stack_.resize(stack_.size() - n);
          Push(tuple);
          break;
        }
        case 'd': {  // DICT
          auto dict = Container(Value::Kind::kDict);
          SetItems(dict, PopMark());
          Push(dict);
          break;
        }
        case 'a': {  // APPEND
          ValuePtr item = PopOne();
          Append(Top(), {item});
          break;
        }
        case 'e': {  // APPENDS
          std::vector<ValuePtr> items = PopMark();
          Append(Top(), items);
          break;
        }
        case 's': {  // SETITEM
          ValuePtr value = PopOne();
          ValuePtr key = PopOne();
          SetItems(Top(), {key, value});
          break;
        }
        case 'u': {  // SETITEMS
          std::vector<ValuePtr> items = PopMark();
          SetItems(Top(), items);
          break;
        }
        case 'q': Memo(U8()); break;                   // BINPUT
        case 'r': Memo(Le32(Take(4))); break;          // LONG_BINPUT
        case 0x94: Memo(memo_.size()); break;          // MEMOIZE
        case 'h': Push(Recall(U8())); break;           // BINGET
        case 'j': Push(Recall(Le32(Take(4)))); break;  // LONG_BINGET
        case 'c': {                                    // GLOBAL "module\nname\n"
          const std::string module = Line();
          const std::string name = Line();
          Push(Global(module, name));
          break;
        }
        case 0x93: {  // STACK_GLOBAL
          ValuePtr name = PopOne();
          ValuePtr module = PopOne();
          if (name->kind != Value::Kind::kString || module->kind != Value::Kind::kString)
            Bad("STACK_GLOBAL needs two strings");
          Push(Global(module->text, name->text));
          break;
        }
        case 'Q': Push(PersistentLoad(PopOne())); break;  // BINPERSID
        case 'R': {                                       // REDUCE
          ValuePtr args = PopOne();
          ValuePtr callable = PopOne();
          Push(Reduce(callable, args));
          break;
        }
        case 'b': {  // BUILD: sets attributes; only an OrderedDict's (state_dict's _metadata) is accepted, and dropped
          PopOne();
          if (Top()->kind != Value::Kind::kDict) Bad("BUILD on something other than a dict");
          break;
        }
        default: {
          char hex[8];
          std::snprintf(hex, sizeof(hex), "0x%02x", op);
          Bad(std::string("pickle opcode ") + hex + " is not one torch.save writes, or the pickle is damaged");
        }
      }
    }
  }

 private:
  [[noreturn]] void Bad(const std::string& why) const {
    throw FormatError("'" + path_ + "' is not a valid PyTorch file: its data.pkl is damaged or unsupported (" + why +
                      ")");
  }

  const uint8_t* Take(uint64_t n) {
    if (n > size_ - pos_) Bad("it ends early");
    const uint8_t* p = data_ + pos_;
    pos_ += n;
    return p;
  }
  uint8_t U8() { return *Take(1); }
  std::string Line() {
    std::string line;
    for (;;) {
      const char c = static_cast<char>(U8());
      if (c == '\n') return line;
      if (line.size() > 256) Bad("a global's name is too long");
      line.push_back(c);
    }
  }

  ValuePtr Make(Value::Kind kind) {
    auto v = std::make_shared<Value>();
    v->kind = kind;
    return v;
  }
  ValuePtr Container(Value::Kind kind) {
    auto v = Make(kind);
    containers_.push_back(v);
    return v;
  }
  ValuePtr Bool(bool b) {
    auto v = Make(Value::Kind::kBool);
    v->boolean = b;
    return v;
  }
  ValuePtr Int(int64_t i) {
    auto v = Make(Value::Kind::kInt);
    v->integer = i;
    return v;
  }
  ValuePtr Long(uint64_t n) {
    const uint8_t* p = Take(n);
    if (n > 8) Bad("an integer does not fit in 64 bits");
    if (n == 0) return Int(0);
    uint64_t u = 0;
    for (uint64_t i = 0; i < n; ++i) u |= static_cast<uint64_t>(p[i]) << (8 * i);
    if (n < 8 && (p[n - 1] & 0x80)) u |= ~uint64_t{0} << (8 * n);  // sign-extend
    return Int(static_cast<int64_t>(u));
  }
  ValuePtr String(uint64_t n) {
    const uint8_t* p = Take(n);
    auto v = Make(Value::Kind::kString);
    v->text.assign(reinterpret_cast<const char*>(p), n);
    return v;
  }

  void Push(ValuePtr v) { stack_.push_back(std::move(v)); }
  size_t Floor() const { return marks_.empty() ? 0 : marks_.back(); }
  ValuePtr PopOne() {
    if (stack_.size() <= Floor()) Bad("the stack is empty");
    ValuePtr v = std::move(stack_.back());
    stack_.pop_back();
    return v;
  }
  const ValuePtr& Top() const {
    if (stack_.size() <= Floor()) Bad("the stack is empty");
    return stack_.back();
  }
  std::vector<ValuePtr> PopMark() {
    if (marks_.empty()) Bad("no MARK");
    const size_t mark = marks_.back();
    marks_.pop_back();
    std::vector<ValuePtr> items(stack_.begin() + static_cast<std::ptrdiff_t>(mark), stack_.end());
    stack_.resize(mark);
    return items;
  }
  void Memo(uint64_t index) {
    if (index > size_) Bad("a memo index is out of range");
    memo_[index] = Top();
  }
  ValuePtr Recall(uint64_t index) {
    auto it = memo_.find(index);
    if (it == memo_.end()) Bad("a memo entry is missing");
    return it->second;
  }
  void Append(const ValuePtr& list, const std::vector<ValuePtr>& items) {
    if (list->kind != Value::Kind::kList) Bad("APPEND to something other than a list");
    list->items.insert(list->items.end(), items.begin(), items.end());
  }
  void SetItems(const ValuePtr& dict, const std::vector<ValuePtr>& items) {
    if (dict->kind != Value::Kind::kDict) Bad("SETITEM on something other than a dict");
    if (items.size() % 2 != 0) Bad("SETITEMS with an odd number of values");
    for (size_t i = 0; i < items.size(); i += 2) {
      const ValuePtr& key = items[i];
      if (key->kind != Value::Kind::kString && key->kind != Value::Kind::kInt)
        Bad("a dict key is neither a string nor an integer");
      // A repeated key is kept as it comes; the JavaScript object made from it keeps the last value, as a dict does.
      dict->entries.emplace_back(key, items[i + 1]);
    }
  }

  ValuePtr Global(const std::string& module, const std::string& name) {
    const std::string full = module + "." + name;
    bool allowed =
        full == kRebuildTensorV2 || full == kRebuildTensor || full == kRebuildParameter || full == kOrderedDict;
    if (module == "torch") {
      for (const auto& entry : kStorageClasses) allowed = allowed || name == entry.name;
      for (const char* unsupported : kUnsupportedStorageClasses) {
        if (name == unsupported)
          throw FormatError("'" + path_ + "' holds a tensor of torch." + name +
                            ", a dtype this package has no Tensor for (float32, float64, float16, bfloat16, int32, "
                            "int64, uint8 and bool are read)");
      }
    }
    if (!allowed) {
      throw FormatError("'" + path_ + "' was refused: its pickle names '" + full +
                        "', which loading would have to call. Only tensors, numbers, strings, booleans, None, lists, "
                        "tuples and dicts are loaded (as torch.load(weights_only=True)); nothing from the file is run");
    }
    auto v = Make(Value::Kind::kGlobal);
    v->text = full;
    return v;
  }

  // ('storage', torch.<Dtype>Storage, key, location, numel) -> the storage, read once per key.
  ValuePtr PersistentLoad(const ValuePtr& pid) {
    if (pid->kind != Value::Kind::kTuple || pid->items.size() != 5) Bad("a persistent id is not a 5-tuple");
    const auto& f = pid->items;
    if (f[0]->kind != Value::Kind::kString || f[0]->text != "storage") Bad("a persistent id is not a storage");
    if (f[1]->kind != Value::Kind::kGlobal || f[1]->text.rfind("torch.", 0) != 0) Bad("a storage has no type");
    if (f[2]->kind != Value::Kind::kString || f[3]->kind != Value::Kind::kString || f[4]->kind != Value::Kind::kInt)
      Bad("a storage's key, location or size is of the wrong type");
    const std::string& key = f[2]->text;
    auto cached = storages_.find(key);
    if (cached != storages_.end()) return cached->second;
    c10::ScalarType dtype = c10::ScalarType::Undefined;
    for (const auto& entry : kStorageClasses)
      if (f[1]->text == std::string("torch.") + entry.name) dtype = entry.dtype;
    if (dtype == c10::ScalarType::Undefined) Bad("a storage's type is not a storage class");
    const int64_t numel = f[4]->integer;
    const std::string record = "data/" + key;
    const Entry* entry = zip_.Find(record);
    if (entry == nullptr) zip_.Corrupt("it has no record " + record + " for a tensor it holds");
    const uint64_t item = c10::elementSize(dtype);
    if (numel < 0 || static_cast<uint64_t>(numel) > entry->size / item || entry->size != numel * item)
      zip_.Corrupt("record " + record + " holds " + std::to_string(entry->size) + " bytes, not the " +
                   std::to_string(numel) + " elements of " + std::to_string(item) + " bytes its tensor declares");
    const c10::Device device = TargetDevice(f[3]->text);
    at::Tensor flat = at::empty({numel}, at::TensorOptions().dtype(dtype));
    zip_.Read(record, *entry, flat.data_ptr());
    if (!device.is_cpu()) flat = flat.to(device);
    auto v = Make(Value::Kind::kStorage);
    v->tensor = flat;
    storages_[key] = v;
    return v;
  }

  c10::Device TargetDevice(const std::string& location) {
    if (options_.device) return *options_.device;
    if (location == "cpu") return c10::Device(c10::kCPU);
    if (location.rfind("cuda", 0) == 0) {
      c10::Device device(c10::kCPU);
      try {
        device = c10::Device(location);
      } catch (const c10::Error&) {
        Bad("a storage has the location '" + location + "'");
      }
      if (!at::hasCUDA())
        throw FormatError("'" + path_ + "' holds tensors saved on '" + location +
                          "', and CUDA is not available here: load with { device: 'cpu' }");
      return device;
    }
    throw FormatError("'" + path_ + "' holds tensors saved on '" + location +
                      "', a device this package does not have: load with { device: 'cpu' }");
  }

  std::vector<int64_t> Ints(const ValuePtr& tuple, const char* what) {
    if (tuple->kind != Value::Kind::kTuple && tuple->kind != Value::Kind::kList)
      Bad(std::string(what) + " is not a tuple");
    if (tuple->items.size() > 64) Bad(std::string(what) + " has more than 64 dimensions");
    std::vector<int64_t> out;
    for (const auto& item : tuple->items) {
      if (item->kind != Value::Kind::kInt || item->integer < 0) Bad(std::string(what) + " holds a non-integer");
      out.push_back(item->integer);
    }
    return out;
  }

  ValuePtr RebuildTensor(const std::vector<ValuePtr>& args, bool requires_grad) {
    const ValuePtr& storage = args[0];
    if (storage->kind != Value::Kind::kStorage) Bad("a tensor has no storage");
    if (args[1]->kind != Value::Kind::kInt || args[1]->integer < 0) Bad("a tensor's storage offset is invalid");
    const int64_t offset = args[1]->integer;
    const std::vector<int64_t> sizes = Ints(args[2], "a tensor's size");
    const std::vector<int64_t> strides = Ints(args[3], "a tensor's stride");
    if (sizes.size() != strides.size()) Bad("a tensor's size and stride differ in length");
    // The last element it reaches must lie inside its storage (else set_ would silently grow the storage).
    constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
    const int64_t available = storage->tensor.numel();
    bool empty = false;
    for (int64_t s : sizes) empty = empty || s == 0;
    if (empty) {
      if (offset > available) Bad("a tensor's storage offset is past the end of its storage");
    } else {
      int64_t last = offset;
      for (size_t d = 0; d < sizes.size(); ++d) {
        const int64_t steps = sizes[d] - 1;
        if (strides[d] != 0 && steps > (kMax - last) / strides[d]) Bad("a tensor's extent overflows");
        last += steps * strides[d];
      }
      if (last >= available) Bad("a tensor reaches past the end of its storage");
    }
    at::Tensor tensor = at::empty({0}, storage->tensor.options());
    tensor.set_(storage->tensor.storage(), offset, sizes, strides);
    if (requires_grad) tensor.set_requires_grad(true);
    auto v = Make(Value::Kind::kTensor);
    v->tensor = tensor;
    return v;
  }

  ValuePtr Reduce(const ValuePtr& callable, const ValuePtr& args) {
    if (callable->kind != Value::Kind::kGlobal) Bad("REDUCE calls something that is not a global");
    if (args->kind != Value::Kind::kTuple) Bad("REDUCE without an argument tuple");
    const auto& a = args->items;
    const std::string& name = callable->text;
    if (name == kOrderedDict) {
      if (!a.empty()) Bad("OrderedDict with arguments");
      return Container(Value::Kind::kDict);
    }
    if (name == kRebuildTensorV2) {
      if (a.size() != 6 && a.size() != 7) Bad("_rebuild_tensor_v2 with " + std::to_string(a.size()) + " arguments");
      if (a[4]->kind != Value::Kind::kBool) Bad("a tensor's requires_grad is not a boolean");
      return RebuildTensor(a, a[4]->boolean);
    }
    if (name == kRebuildTensor) {
      if (a.size() != 4) Bad("_rebuild_tensor with " + std::to_string(a.size()) + " arguments");
      return RebuildTensor(a, false);
    }
    if (name == kRebuildParameter) {
      if (a.size() != 3 || a[0]->kind != Value::Kind::kTensor || a[1]->kind != Value::Kind::kBool)
        Bad("_rebuild_parameter with unexpected arguments");
      auto v = Make(Value::Kind::kTensor);
      v->tensor = a[0]->tensor.detach();
      v->tensor.set_requires_grad(a[1]->boolean);
      return v;
    }
    Bad("REDUCE on '" + name + "'");
  }

  ZipFile& zip_;
  const std::string& path_;
  const LoadOptions& options_;
  std::vector<ValuePtr>& containers_;
  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
  uint64_t pos_ = 0;
  std::vector<ValuePtr> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, ValuePtr> memo_;
  std::unordered_map<std::string, ValuePtr> storages_;
};

}  // namespace

Loaded::~Loaded() {
  for (const auto& container : containers) {
    container->items.clear();
    container->entries.clear();
  }
}

void Save(const Value& value, const std::string& path) {
  Pickler pickler;
  pickler.Dump(value);
  const std::string temporary = path + ".partial";
  try {
    std::ofstream file(temporary, std::ios::binary | std::ios::trunc);
    if (!file) throw std::runtime_error("cannot open '" + temporary + "' for writing");
    {
      caffe2::serialize::PyTorchStreamWriter writer([&file](const void* data, size_t size) -> size_t {
        file.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
        return file ? size : 0;
      });
      writer.writeRecord("data.pkl", pickler.out.data(), pickler.out.size());
      const std::string order = LittleEndianHost() ? "little" : "big";
      writer.writeRecord("byteorder", order.data(), order.size());
      for (size_t i = 0; i < pickler.tensors.size(); ++i) {
        const at::Tensor cpu = pickler.tensors[i].cpu();
        writer.writeRecord("data/" + std::to_string(i), cpu.data_ptr(), cpu.nbytes());
      }
      writer.writeEndOfFile();
    }
    file.close();
    if (!file) throw std::runtime_error("writing '" + temporary + "' failed (disk full?)");
    if (std::rename(temporary.c_str(), path.c_str()) != 0)
      throw std::runtime_error("cannot move the written file to '" + path + "'");
  } catch (...) {
    std::remove(temporary.c_str());
    throw;
  }
}

Loaded Load(const std::string& path, const LoadOptions& options) {
  ZipFile zip(path);
  const Entry* pickle = zip.Find("data.pkl");
  if (pickle == nullptr)
    zip.Corrupt("it has no data.pkl (a TorchScript archive or another zip file is not a torch.save file)");
  std::string data(pickle->size, '\0');
  zip.Read("data.pkl", *pickle, data.data());
  Loaded loaded;
  Unpickler unpickler(zip, path, options, loaded.containers);
  loaded.root = unpickler.Run(data);
  return loaded;
}

}  // namespace serialize
}  // namespace bce
