/*
 * deploy's own version of <tvm/support/serializer.h> (not shipped in the apache-tvm wheel).
 * Trivially copyable values (ints, floats, enums, DLDataType, DLDevice) are their raw
 * little-endian bytes; std::string, ffi::String, std::vector, ffi::Array and maps are a uint64
 * count followed by the elements; pairs are first then second.
 */
#ifndef TVM_SUPPORT_SERIALIZER_H_
#define TVM_SUPPORT_SERIALIZER_H_

#include <dlpack/dlpack.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/map.h>
#include <tvm/ffi/string.h>
#include <tvm/support/io.h>

#include <map>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

namespace tvm {
namespace support {

template <typename T>
struct Serializer {
  static constexpr bool enabled = std::is_trivially_copyable_v<T>;
  static void Write(Stream* strm, const T& data) {
    static_assert(std::is_trivially_copyable_v<T>, "no Serializer for this type");
    strm->Write(&data, sizeof(T));
  }
  static bool Read(Stream* strm, T* out) {
    static_assert(std::is_trivially_copyable_v<T>, "no Serializer for this type");
    return strm->Read(out, sizeof(T)) == sizeof(T);
  }
};

namespace detail {
inline void WriteCount(Stream* strm, uint64_t n) { strm->Write(&n, sizeof(n)); }
inline bool ReadCount(Stream* strm, uint64_t* n) { return strm->Read(n, sizeof(*n)) == sizeof(*n); }
template <typename S>
bool ReadBytes(Stream* strm, S* out) {
  uint64_t n;
  if (!ReadCount(strm, &n)) return false;
  std::string s(static_cast<size_t>(n), '\0');
  if (n != 0 && strm->Read(&s[0], static_cast<size_t>(n)) != n) return false;
  *out = S(std::move(s));
  return true;
}
}  // namespace detail

template <>
struct Serializer<std::string> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const std::string& s) {
    detail::WriteCount(strm, s.size());
    if (!s.empty()) strm->Write(s.data(), s.size());
  }
  static bool Read(Stream* strm, std::string* out) { return detail::ReadBytes(strm, out); }
};

template <>
struct Serializer<ffi::String> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const ffi::String& s) {
    detail::WriteCount(strm, s.size());
    if (s.size() != 0) strm->Write(s.data(), s.size());
  }
  static bool Read(Stream* strm, ffi::String* out) { return detail::ReadBytes(strm, out); }
};

template <typename A, typename B>
struct Serializer<std::pair<A, B>> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const std::pair<A, B>& p) {
    Serializer<A>::Write(strm, p.first);
    Serializer<B>::Write(strm, p.second);
  }
  static bool Read(Stream* strm, std::pair<A, B>* p) {
    return Serializer<A>::Read(strm, &p->first) && Serializer<B>::Read(strm, &p->second);
  }
};

template <typename T>
struct Serializer<std::vector<T>> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const std::vector<T>& v) {
    detail::WriteCount(strm, v.size());
    if constexpr (std::is_trivially_copyable_v<T> && !std::is_same_v<T, bool>) {
      if (!v.empty()) strm->Write(v.data(), sizeof(T) * v.size());
    } else {
      for (const T& x : v) Serializer<T>::Write(strm, x);
    }
  }
  static bool Read(Stream* strm, std::vector<T>* out) {
    uint64_t n;
    if (!detail::ReadCount(strm, &n)) return false;
    if constexpr (std::is_trivially_copyable_v<T> && !std::is_same_v<T, bool>) {
      out->resize(static_cast<size_t>(n));
      return n == 0 || strm->Read(out->data(), sizeof(T) * n) == sizeof(T) * n;
    } else {
      out->clear();
      out->reserve(static_cast<size_t>(n));
      for (uint64_t i = 0; i < n; ++i) {
        T x;
        if (!Serializer<T>::Read(strm, &x)) return false;
        out->push_back(std::move(x));
      }
      return true;
    }
  }
};

template <typename T>
struct Serializer<ffi::Array<T>> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const ffi::Array<T>& a) {
    detail::WriteCount(strm, a.size());
    for (const T& x : a) Serializer<T>::Write(strm, x);
  }
  static bool Read(Stream* strm, ffi::Array<T>* out) {
    uint64_t n;
    if (!detail::ReadCount(strm, &n)) return false;
    ffi::Array<T> a;
    for (uint64_t i = 0; i < n; ++i) {
      T x;
      if (!Serializer<T>::Read(strm, &x)) return false;
      a.push_back(std::move(x));
    }
    *out = std::move(a);
    return true;
  }
};

template <typename M, typename K, typename V>
struct MapSerializer {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const M& m) {
    detail::WriteCount(strm, m.size());
    for (const auto& kv : m) {
      Serializer<K>::Write(strm, kv.first);
      Serializer<V>::Write(strm, kv.second);
    }
  }
  static bool Read(Stream* strm, M* out) {
    uint64_t n;
    if (!detail::ReadCount(strm, &n)) return false;
    out->clear();
    for (uint64_t i = 0; i < n; ++i) {
      K k;
      V v;
      if (!Serializer<K>::Read(strm, &k) || !Serializer<V>::Read(strm, &v)) return false;
      (*out)[std::move(k)] = std::move(v);
    }
    return true;
  }
};

template <typename K, typename V>
struct Serializer<std::map<K, V>> : MapSerializer<std::map<K, V>, K, V> {};
template <typename K, typename V>
struct Serializer<std::unordered_map<K, V>> : MapSerializer<std::unordered_map<K, V>, K, V> {};

}  // namespace support
}  // namespace tvm

#endif  // TVM_SUPPORT_SERIALIZER_H_
