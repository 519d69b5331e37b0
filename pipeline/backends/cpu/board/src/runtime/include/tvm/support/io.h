/*
 * deploy's own version of <tvm/support/io.h>, which the apache-tvm wheel does not ship.
 * Used only to build TVM's runtime from the wheel's sources for architectures PyPI has no wheel
 * for (armv7). The binary format is dmlc's, as TVM writes it: little-endian scalars as raw bytes,
 * strings and containers as a uint64 count followed by their elements.
 */
#ifndef TVM_SUPPORT_IO_H_
#define TVM_SUPPORT_IO_H_

#include <cstddef>
#include <cstdint>

namespace tvm {
namespace support {

template <typename T>
struct Serializer;

class Stream {
 public:
  virtual ~Stream() = default;
  /*! \brief Read up to size bytes; returns the number read. */
  virtual size_t Read(void* ptr, size_t size) = 0;
  /*! \brief Write size bytes; returns the number written. */
  virtual size_t Write(const void* ptr, size_t size) = 0;

  template <typename T>
  void Write(const T& data) {
    Serializer<T>::Write(this, data);
  }
  template <typename T>
  bool Read(T* out) {
    return Serializer<T>::Read(this, out);
  }
  template <typename T>
  void WriteArray(const T* data, size_t n) {
    for (size_t i = 0; i < n; ++i) Write<T>(data[i]);
  }
  template <typename T>
  bool ReadArray(T* data, size_t n) {
    for (size_t i = 0; i < n; ++i) {
      if (!Read<T>(data + i)) return false;
    }
    return true;
  }
};

}  // namespace support
}  // namespace tvm

#include <tvm/support/serializer.h>

#endif  // TVM_SUPPORT_IO_H_
