/* deploy's own version of TVM's src/support/bytes_io.h (not in the apache-tvm wheel):
 * streams over a byte buffer, for building TVM's runtime from the wheel's sources. */
#ifndef TVM_SUPPORT_BYTES_IO_H_
#define TVM_SUPPORT_BYTES_IO_H_

#include <tvm/ffi/error.h>
#include <tvm/support/io.h>

#include <algorithm>
#include <cstring>
#include <string>

namespace tvm {
namespace support {

/*! \brief Reads from a buffer the caller keeps alive (std::string, ffi::Bytes, ffi::String). */
class BytesInStream : public Stream {
 public:
  using Stream::Read;
  using Stream::Write;
  template <typename Buffer>
  explicit BytesInStream(const Buffer& buf) : data_(buf.data()), size_(buf.size()) {}
  size_t Read(void* ptr, size_t size) final {
    size_t n = std::min(size, size_ - pos_);
    if (n != 0) std::memcpy(ptr, data_ + pos_, n);
    pos_ += n;
    return n;
  }
  size_t Write(const void*, size_t) final {
    TVM_FFI_THROW(RuntimeError) << "BytesInStream is read-only";
    return 0;
  }

 private:
  const char* data_;
  size_t size_;
  size_t pos_ = 0;
};

/*! \brief Appends to a std::string. */
class BytesOutStream : public Stream {
 public:
  using Stream::Read;
  using Stream::Write;
  explicit BytesOutStream(std::string* out) : out_(out) {}
  size_t Read(void*, size_t) final {
    TVM_FFI_THROW(RuntimeError) << "BytesOutStream is write-only";
    return 0;
  }
  size_t Write(const void* ptr, size_t size) final {
    out_->append(static_cast<const char*>(ptr), size);
    return size;
  }

 private:
  std::string* out_;
};

}  // namespace support
}  // namespace tvm

#endif  // TVM_SUPPORT_BYTES_IO_H_
