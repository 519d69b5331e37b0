// deploy_runner: run a deploy artifact (model.so + manifest.json) without Python.
//
// The same source is built for this machine (g++) and for ARM boards (the Debian cross
// compilers); it needs only TVM's runtime (libtvm_runtime.so) and libtvm_ffi.so, and only the
// headers apache-tvm-ffi ships.
//
//   runner [--artifact DIR] [--input NAME=file.npy]... [--output-dir DIR]
//          [--repeat N] [--warmup N] [--threads N] [--seed N] [--dim NAME=N]...
//
// DIR defaults to the directory that holds the runner. Inputs not given are random (seeded).
// An artifact with dynamic dims (manifest "dims") takes any size in each dim's range: the sizes
// come from the .npy inputs (or --dim for random ones), are checked against the ranges, and pick
// the function compiled for them (manifest "functions"), else the symbolic "main".
// Outputs are written as NAME.npy; the median latency over N runs is printed. A bad input
// name, shape or dtype is one "error: ..." line and exit code 2.

#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/map.h>
#include <tvm/ffi/container/shape.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/dtype.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/extra/json.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>
#include <tvm/ffi/string.h>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace ffi = tvm::ffi;

namespace {

struct UserError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Spec {
  std::string name, dtype;
  std::vector<int64_t> shape;    // -1 where the dim is symbolic
  std::vector<std::string> sym;  // the dim's name there, "" elsewhere
};

struct DimRange {
  int64_t min, max, first;  // first: the size random inputs get (the first optimized size, else min)
};

struct CPUAlloc {
  void AllocData(DLTensor* t) {
    size_t n = std::max<size_t>(ffi::GetDataSize(*t), 1);
    t->data = std::aligned_alloc(64, (n + 63) / 64 * 64);
  }
  void FreeData(DLTensor* t) { std::free(t->data); }
};

std::string ShapeStr(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

std::string SpecShapeStr(const Spec& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.shape.size(); ++i)
    out += (i ? ", " : "") + (s.shape[i] < 0 ? s.sym[i] : std::to_string(s.shape[i]));
  return out + "]";
}

std::string ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw UserError("cannot read " + path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// ---- .npy: numpy's format 1.0-3.0, little-endian, C order ----------------------------------

const std::map<std::string, std::string> kNpyToDtype = {
    {"f2", "float16"}, {"f4", "float32"}, {"f8", "float64"}, {"i1", "int8"},  {"i2", "int16"},
    {"i4", "int32"},   {"i8", "int64"},   {"u1", "uint8"},   {"u2", "uint16"}, {"u4", "uint32"},
    {"u8", "uint64"},  {"b1", "bool"}};

std::string DtypeToNpy(const std::string& dtype) {
  for (auto& kv : kNpyToDtype)
    if (kv.second == dtype) return (kv.first[0] == 'b' || kv.first == "i1" || kv.first == "u1" ? "|" : "<") + kv.first;
  throw UserError("dtype " + dtype + " cannot be written as .npy");
}

struct Npy {
  std::string dtype;
  std::vector<int64_t> shape;
  std::string data;
};

Npy ReadNpy(const std::string& path) {
  std::string raw = ReadFile(path);
  if (raw.size() < 10 || raw.compare(0, 6, "\x93NUMPY") != 0) throw UserError(path + " is not a .npy file");
  int major = static_cast<unsigned char>(raw[6]);
  size_t hlen, start;
  if (major == 1) {
    hlen = static_cast<unsigned char>(raw[8]) | (static_cast<unsigned char>(raw[9]) << 8);
    start = 10;
  } else {
    if (raw.size() < 12) throw UserError(path + " is truncated");
    hlen = 0;
    for (int i = 0; i < 4; ++i) hlen |= static_cast<size_t>(static_cast<unsigned char>(raw[8 + i])) << (8 * i);
    start = 12;
  }
  if (raw.size() < start + hlen) throw UserError(path + " is truncated");
  std::string h = raw.substr(start, hlen);
  auto field = [&](const std::string& key) -> std::string {
    size_t k = h.find("'" + key + "'");
    if (k == std::string::npos) throw UserError(path + ": .npy header has no " + key);
    size_t colon = h.find(':', k);
    size_t b = h.find_first_not_of(' ', colon + 1);
    if (h[b] == '\'') return h.substr(b + 1, h.find('\'', b + 1) - b - 1);
    if (h[b] == '(') return h.substr(b + 1, h.find(')', b) - b - 1);
    return h.substr(b, h.find_first_of(",}", b) - b);
  };
  std::string descr = field("descr");
  if (field("fortran_order").find("True") != std::string::npos)
    throw UserError(path + " is in Fortran order: save a C-contiguous array (numpy.ascontiguousarray)");
  if (descr.size() < 3 || descr[0] == '>') throw UserError(path + ": dtype " + descr + " is not little-endian");
  auto it = kNpyToDtype.find(descr.substr(1));
  if (it == kNpyToDtype.end()) throw UserError(path + ": unsupported dtype " + descr);
  Npy npy;
  npy.dtype = it->second;
  std::stringstream ss(field("shape"));
  std::string dim;
  while (std::getline(ss, dim, ',')) {
    if (dim.find_first_not_of(' ') == std::string::npos) continue;
    npy.shape.push_back(std::stoll(dim));
  }
  npy.data = raw.substr(start + hlen);
  return npy;
}

void WriteNpy(const std::string& path, const std::string& dtype, const std::vector<int64_t>& shape, const void* data,
              size_t bytes) {
  std::string shp = "(";
  for (size_t i = 0; i < shape.size(); ++i) shp += std::to_string(shape[i]) + (shape.size() == 1 ? "," : (i + 1 < shape.size() ? ", " : ""));
  shp += ")";
  std::string h = "{'descr': '" + DtypeToNpy(dtype) + "', 'fortran_order': False, 'shape': " + shp + ", }";
  size_t total = 10 + h.size() + 1;
  h += std::string((64 - total % 64) % 64, ' ') + "\n";
  std::ofstream f(path, std::ios::binary);
  if (!f) throw UserError("cannot write " + path);
  f.write("\x93NUMPY\x01\x00", 8);
  uint16_t len = static_cast<uint16_t>(h.size());
  char le[2] = {static_cast<char>(len & 0xff), static_cast<char>(len >> 8)};
  f.write(le, 2);
  f.write(h.data(), h.size());
  f.write(static_cast<const char*>(data), bytes);
  if (!f) throw UserError("cannot write " + path);
}

// ---- manifest ----------------------------------------------------------------------------

std::vector<Spec> ReadSpecs(const ffi::json::Object& model, const char* key) {
  std::vector<Spec> out;
  for (const ffi::Any& v : model.at(ffi::String(key)).cast<ffi::json::Array>()) {
    auto o = v.cast<ffi::json::Object>();
    Spec s;
    s.name = std::string(o.at(ffi::String("name")).cast<ffi::String>());
    s.dtype = std::string(o.at(ffi::String("dtype")).cast<ffi::String>());
    // a narrow type (float8, int4, ...) is carried as its bits: the library takes the storage type
    if (o.count(ffi::String("storage"))) s.dtype = std::string(o.at(ffi::String("storage")).cast<ffi::String>());
    for (const ffi::Any& d : o.at(ffi::String("shape")).cast<ffi::json::Array>()) {
      auto dim = d.try_cast<int64_t>();
      auto name = d.try_cast<ffi::String>();
      s.shape.push_back(dim ? *dim : -1);
      s.sym.push_back(name ? std::string(*name) : std::string(dim ? "" : "?"));
    }
    out.push_back(s);
  }
  return out;
}

std::string SafeName(const std::string& name) {
  std::string s;
  for (char c : name) s += (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.') ? c : '_';
  return s;
}

ffi::Tensor NewTensor(const std::string& dtype, const std::vector<int64_t>& shape) {
  return ffi::Tensor::FromNDAlloc(CPUAlloc(), ffi::ShapeView(shape.data(), shape.size()),
                                  ffi::StringToDLDataType(ffi::String(dtype)), DLDevice{kDLCPU, 0});
}

void FillRandom(ffi::Tensor& t, const std::string& dtype, std::mt19937_64& rng) {
  size_t n = static_cast<size_t>(t.numel());
  std::normal_distribution<double> normal;
  std::uniform_int_distribution<int> small(0, 9);
  char* p = static_cast<char*>(t.data_ptr());
  for (size_t i = 0; i < n; ++i) {
    if (dtype == "float32") reinterpret_cast<float*>(p)[i] = static_cast<float>(normal(rng));
    else if (dtype == "float64") reinterpret_cast<double*>(p)[i] = normal(rng);
    else if (dtype == "int64") reinterpret_cast<int64_t*>(p)[i] = small(rng);
    else if (dtype == "int32") reinterpret_cast<int32_t*>(p)[i] = small(rng);
    else if (dtype == "int8" || dtype == "uint8") p[i] = static_cast<char>(small(rng));
    else if (dtype == "bool") p[i] = static_cast<char>(small(rng) & 1);
    else throw UserError("no random inputs for dtype " + dtype + ": pass --input NAME=file.npy");
  }
}

void Flatten(const ffi::Any& v, std::vector<ffi::Tensor>* out) {
  if (auto t = v.as<ffi::Tensor>()) {
    out->push_back(*t);
  } else if (auto a = v.as<ffi::Array<ffi::Any>>()) {
    for (const ffi::Any& x : *a) Flatten(x, out);
  } else {
    throw std::runtime_error("main returned a value that is neither a tensor nor a tuple: " + v.GetTypeKey());
  }
}

std::string SelfDir() {
  char buf[4096];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return ".";
  std::string p(buf, n);
  size_t slash = p.rfind('/');
  return slash == std::string::npos ? "." : p.substr(0, slash);
}

const char* kUsage =
    "usage: runner [--artifact DIR] [--input NAME=file.npy]... [--output-dir DIR]\n"
    "              [--repeat N] [--warmup N] [--threads N] [--seed N] [--dim NAME=N]...\n"
    "Runs DIR/model.so (default: the runner's directory) on the inputs (random for those not given),\n"
    "writes the outputs as NAME.npy into --output-dir, prints the median latency over N runs.\n";

int Run(int argc, char** argv) {
  std::string artifact = SelfDir(), out_dir;
  std::vector<std::pair<std::string, std::string>> given;
  std::map<std::string, int64_t> asked;  // --dim NAME=N: sizes for random inputs
  int repeat = 10, warmup = 1;
  uint64_t seed = 0;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw UserError(a + " needs a value");
      return argv[++i];
    };
    auto number = [&]() -> long {
      std::string v = value();
      char* end = nullptr;
      long n = std::strtol(v.c_str(), &end, 10);
      if (v.empty() || *end || n < 0) throw UserError(a + " needs a non-negative integer, got '" + v + "'");
      return n;
    };
    if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (a == "--artifact") {
      artifact = value();
    } else if (a == "--input" || a == "-i") {
      std::string v = value();
      size_t eq = v.find('=');
      if (eq == std::string::npos || eq == 0) throw UserError("bad --input '" + v + "': write it as NAME=file.npy");
      given.emplace_back(v.substr(0, eq), v.substr(eq + 1));
    } else if (a == "--dim") {
      std::string v = value();
      size_t eq = v.find('=');
      char* end = nullptr;
      long n = eq == std::string::npos ? 0 : std::strtol(v.c_str() + eq + 1, &end, 10);
      if (eq == std::string::npos || eq == 0 || n < 1 || *end) throw UserError("bad --dim '" + v + "': write it as NAME=N");
      asked[v.substr(0, eq)] = n;
    } else if (a == "--output-dir" || a == "-o") {
      out_dir = value();
    } else if (a == "--repeat") {
      repeat = std::max(1L, number());
    } else if (a == "--warmup") {
      warmup = static_cast<int>(number());
    } else if (a == "--threads") {
      setenv("TVM_NUM_THREADS", std::to_string(number()).c_str(), 1);
    } else if (a == "--seed") {
      seed = static_cast<uint64_t>(number());
    } else {
      throw UserError("unknown argument '" + a + "'\n" + kUsage);
    }
  }

  ffi::String ferr;
  ffi::json::Value manifest = ffi::json::Parse(ffi::String(ReadFile(artifact + "/manifest.json")), &ferr);
  if (!ferr.empty()) throw UserError(artifact + "/manifest.json is corrupt: " + std::string(ferr));
  auto m = manifest.cast<ffi::json::Object>();
  auto model = m.at(ffi::String("model")).cast<ffi::json::Object>();
  std::vector<Spec> inputs = ReadSpecs(model, "inputs"), outputs = ReadSpecs(model, "outputs");
  std::string lib_file = std::string(
      m.at(ffi::String("library")).cast<ffi::json::Object>().at(ffi::String("file")).cast<ffi::String>());
  std::map<std::string, DimRange> dims;
  if (m.count(ffi::String("dims"))) {
    for (const auto& kv : m.at(ffi::String("dims")).cast<ffi::json::Object>()) {
      auto d = kv.second.cast<ffi::json::Object>();
      auto opt = d.at(ffi::String("opt")).cast<ffi::json::Array>();
      int64_t lo = d.at(ffi::String("min")).cast<int64_t>();
      dims[std::string(kv.first.cast<ffi::String>())] = {lo, d.at(ffi::String("max")).cast<int64_t>(),
                                                          opt.size() ? opt[0].cast<int64_t>() : lo};
    }
  }

  // Inputs, checked against the manifest: every problem listed at once.
  std::vector<std::string> problems;
  std::map<std::string, Npy> loaded;
  for (auto& g : given) {
    bool known = std::any_of(inputs.begin(), inputs.end(), [&](const Spec& s) { return s.name == g.first; });
    if (!known) {
      problems.push_back("unknown input '" + g.first + "'");
      continue;
    }
    loaded[g.first] = ReadNpy(g.second);
  }
  // The size of each dynamic dim: from the .npy inputs, then --dim, then its default.
  std::map<std::string, int64_t> bound;
  for (const Spec& s : inputs) {
    auto it = loaded.find(s.name);
    if (it == loaded.end() || it->second.shape.size() != s.shape.size()) continue;
    for (size_t i = 0; i < s.shape.size(); ++i) {
      if (s.shape[i] >= 0) continue;
      int64_t n = it->second.shape[i];
      auto b = bound.find(s.sym[i]);
      if (b != bound.end() && b->second != n) {
        problems.push_back("dim " + s.sym[i] + " is " + std::to_string(b->second) + " in one input and " + std::to_string(n) +
                           " in input '" + s.name + "' (axis " + std::to_string(i) + ")");
        continue;
      }
      bound[s.sym[i]] = n;
    }
  }
  for (auto& kv : asked) {
    if (!dims.count(kv.first)) {
      problems.push_back("--dim " + kv.first + ": the artifact has no such dynamic dim");
      continue;
    }
    auto b = bound.find(kv.first);
    if (b != bound.end() && b->second != kv.second)
      problems.push_back("--dim " + kv.first + "=" + std::to_string(kv.second) + " but the inputs give " + std::to_string(b->second));
    bound[kv.first] = kv.second;
  }
  for (auto& kv : dims)
    if (!bound.count(kv.first)) bound[kv.first] = kv.second.first;
  for (auto& kv : bound) {
    auto d = dims.find(kv.first);
    if (d == dims.end()) {
      problems.push_back("dim " + kv.first + " has no range in the manifest");
    } else if (kv.second < d->second.min || kv.second > d->second.max) {
      problems.push_back("dim " + kv.first + "=" + std::to_string(kv.second) + " is outside its range " +
                         std::to_string(d->second.min) + ".." + std::to_string(d->second.max));
    }
  }
  std::mt19937_64 rng(seed);
  std::vector<ffi::Tensor> args;
  for (const Spec& spec : inputs) {
    Spec s = spec;  // with the dims' sizes
    for (size_t i = 0; i < s.shape.size(); ++i)
      if (s.shape[i] < 0) s.shape[i] = bound.count(s.sym[i]) ? std::max<int64_t>(bound[s.sym[i]], 1) : 1;
    ffi::Tensor t = NewTensor(s.dtype, s.shape);
    auto it = loaded.find(s.name);
    if (it == loaded.end()) {
      FillRandom(t, s.dtype, rng);
    } else {
      const Npy& a = it->second;
      bool ok = true;
      if (a.shape != s.shape) {
        problems.push_back("input '" + s.name + "' has shape " + ShapeStr(a.shape) + ", the artifact expects " + SpecShapeStr(spec));
        ok = false;
      }
      if (a.dtype != s.dtype) {
        problems.push_back("input '" + s.name + "' has dtype " + a.dtype + ", the artifact expects " + s.dtype);
        ok = false;
      }
      if (ok && a.data.size() != ffi::GetDataSize(*t.GetDLTensorPtr())) {
        problems.push_back("input '" + s.name + "': the .npy file holds " + std::to_string(a.data.size()) + " bytes of data, expected " +
                           std::to_string(ffi::GetDataSize(*t.GetDLTensorPtr())));
        ok = false;
      }
      if (ok) std::memcpy(t.data_ptr(), a.data.data(), a.data.size());
    }
    args.push_back(t);
  }
  if (!problems.empty()) {
    std::string msg = "bad inputs: ";
    for (size_t i = 0; i < problems.size(); ++i) msg += (i ? "; " : "") + problems[i];
    msg += "\n  inputs: ";
    for (size_t i = 0; i < inputs.size(); ++i) msg += (i ? ", " : "") + inputs[i].name + " " + inputs[i].dtype + SpecShapeStr(inputs[i]);
    if (!dims.empty()) {
      msg += "; dims:";
      for (auto& kv : dims) msg += " " + kv.first + "=" + std::to_string(kv.second.min) + ".." + std::to_string(kv.second.max);
    }
    throw UserError(msg);
  }

  // Load the library and the Relax VM in it.
  ffi::Module lib = ffi::Module::LoadFromFile(ffi::String(artifact + "/" + lib_file));
  auto load_exec = lib->GetFunction("vm_load_executable");
  if (!load_exec) throw UserError(artifact + "/" + lib_file + " holds no Relax VM executable");
  ffi::Module vm = (*load_exec)().cast<ffi::Module>();
  constexpr int kPooled = 2;
  (*vm->GetFunction("vm_initialization"))(static_cast<int>(kDLCPU), 0, kPooled);
  // The function compiled for these sizes, else the one for any size in range.
  std::string fn_name = "main";
  if (m.count(ffi::String("functions"))) {
    for (const ffi::Any& f : m.at(ffi::String("functions")).cast<ffi::json::Array>()) {
      auto fo = f.cast<ffi::json::Object>();
      bool match = true;
      for (const auto& kv : fo.at(ffi::String("dims")).cast<ffi::json::Object>())
        match = match && bound[std::string(kv.first.cast<ffi::String>())] == kv.second.cast<int64_t>();
      if (match) {
        fn_name = std::string(fo.at(ffi::String("name")).cast<ffi::String>());
        break;
      }
    }
  }
  auto found = vm->GetFunction(ffi::String(fn_name));
  if (!found) throw std::runtime_error("the library has no function " + fn_name + " that the manifest lists");
  ffi::Function main_fn = *found;
  if (!dims.empty()) {
    std::string line = "function " + fn_name + " for";
    for (auto& kv : bound) line += " " + kv.first + "=" + std::to_string(kv.second);
    std::printf("%s\n", line.c_str());
  }

  std::vector<ffi::AnyView> views(args.begin(), args.end());
  auto call = [&]() {
    ffi::Any result;
    main_fn.CallPacked(views.data(), static_cast<int32_t>(views.size()), &result);
    return result;
  };
  ffi::Any result;
  for (int i = 0; i < warmup; ++i) result = call();
  std::vector<double> ms;
  for (int i = 0; i < repeat; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    result = call();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }

  std::vector<ffi::Tensor> outs;
  Flatten(result, &outs);
  if (outs.size() != outputs.size())
    throw std::runtime_error("main returned " + std::to_string(outs.size()) + " tensors, the manifest lists " +
                             std::to_string(outputs.size()));
  for (size_t i = 0; i < outs.size(); ++i) {
    const ffi::Tensor& t = outs[i];
    std::string dtype = std::string(ffi::DLDataTypeToString(t.dtype()));
    std::vector<int64_t> shape(t.shape().begin(), t.shape().end());
    std::string line = "output " + outputs[i].name + ": " + dtype + ShapeStr(shape);
    if (!out_dir.empty()) {
      if (!t.IsContiguous()) throw std::runtime_error("output " + outputs[i].name + " is not contiguous");
      std::string path = out_dir + "/" + SafeName(outputs[i].name) + ".npy";
      WriteNpy(path, dtype, shape, static_cast<const char*>(t.data_ptr()) + t.byte_offset(), ffi::GetDataSize(*t.GetDLTensorPtr()));
      line += " -> " + path;
    }
    std::printf("%s\n", line.c_str());
  }
  std::vector<double> sorted = ms;
  std::sort(sorted.begin(), sorted.end());
  double median = sorted.size() % 2 ? sorted[sorted.size() / 2]
                                    : 0.5 * (sorted[sorted.size() / 2 - 1] + sorted[sorted.size() / 2]);
  std::printf("latency: median %.3f ms, min %.3f ms, max %.3f ms over %d runs\n", median, sorted.front(), sorted.back(),
              repeat);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // deploy's thread-pool defaults (pipeline/__init__.py says why); the environment still wins
  setenv("TVM_THREAD_POOL_SPIN_COUNT", "2000", 0);
  setenv("TVM_BIND_THREADS", "0", 0);
  try {
    return Run(argc, argv);
  } catch (const UserError& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  } catch (const ffi::Error& e) {
    std::fprintf(stderr, "error: TVM: %s: %s\n", e.kind().c_str(), e.message().c_str());
    return 3;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 3;
  }
}
