/* deploy's own version of TVM's src/support/base64.h (not in the apache-tvm wheel):
 * standard base64 (RFC 4648, '=' padding) over another stream. */
#ifndef TVM_SUPPORT_BASE64_H_
#define TVM_SUPPORT_BASE64_H_

#include <tvm/ffi/error.h>
#include <tvm/support/io.h>

#include <cctype>
#include <string>

namespace tvm {
namespace support {

namespace base64 {
inline const char* Alphabet() { return "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"; }
inline int Decode(int c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}
}  // namespace base64

class Base64InStream : public Stream {
 public:
  using Stream::Read;
  using Stream::Write;
  explicit Base64InStream(Stream* in) : in_(in) {}
  /*! \brief Skip leading whitespace. */
  void InitPosition() {
    char c;
    while (in_->Read(&c, 1) == 1) {
      if (!std::isspace(static_cast<unsigned char>(c))) {
        pending_ = c;
        has_pending_ = true;
        break;
      }
    }
  }
  size_t Read(void* ptr, size_t size) final {
    unsigned char* out = static_cast<unsigned char*>(ptr);
    size_t n = 0;
    while (n < size) {
      if (nbuf_ == 0 && !Fill()) break;
      out[n++] = buf_[start_++];
      --nbuf_;
    }
    return n;
  }
  size_t Write(const void*, size_t) final {
    TVM_FFI_THROW(RuntimeError) << "Base64InStream is read-only";
    return 0;
  }

 private:
  bool NextChar(char* c) {
    if (has_pending_) {
      *c = pending_;
      has_pending_ = false;
      return true;
    }
    while (in_->Read(c, 1) == 1) {
      if (!std::isspace(static_cast<unsigned char>(*c))) return true;
    }
    return false;
  }
  bool Fill() {
    char q[4];
    for (int i = 0; i < 4; ++i) {
      if (!NextChar(&q[i])) return false;
    }
    int v[4];
    for (int i = 0; i < 4; ++i) v[i] = q[i] == '=' ? 0 : base64::Decode(q[i]);
    for (int i = 0; i < 4; ++i) TVM_FFI_ICHECK(v[i] >= 0) << "invalid base64 character";
    uint32_t w = (v[0] << 18) | (v[1] << 12) | (v[2] << 6) | v[3];
    buf_[0] = static_cast<unsigned char>(w >> 16);
    buf_[1] = static_cast<unsigned char>(w >> 8);
    buf_[2] = static_cast<unsigned char>(w);
    nbuf_ = q[2] == '=' ? 1 : (q[3] == '=' ? 2 : 3);
    start_ = 0;
    return true;
  }
  Stream* in_;
  unsigned char buf_[3];
  size_t nbuf_ = 0, start_ = 0;
  char pending_ = 0;
  bool has_pending_ = false;
};

class Base64OutStream : public Stream {
 public:
  using Stream::Read;
  using Stream::Write;
  explicit Base64OutStream(Stream* out) : out_(out) {}
  size_t Write(const void* ptr, size_t size) final {
    const unsigned char* p = static_cast<const unsigned char*>(ptr);
    for (size_t i = 0; i < size; ++i) {
      buf_[nbuf_++] = p[i];
      if (nbuf_ == 3) Emit();
    }
    return size;
  }
  size_t Read(void*, size_t) final {
    TVM_FFI_THROW(RuntimeError) << "Base64OutStream is write-only";
    return 0;
  }
  /*! \brief Write the last, padded quantum. */
  void Finish() {
    if (nbuf_ != 0) Emit();
  }

 private:
  void Emit() {
    const char* a = base64::Alphabet();
    uint32_t w = (buf_[0] << 16) | ((nbuf_ > 1 ? buf_[1] : 0) << 8) | (nbuf_ > 2 ? buf_[2] : 0);
    char q[4] = {a[(w >> 18) & 63], a[(w >> 12) & 63], nbuf_ > 1 ? a[(w >> 6) & 63] : '=',
                 nbuf_ > 2 ? a[w & 63] : '='};
    out_->Write(q, 4);
    nbuf_ = 0;
  }
  Stream* out_;
  unsigned char buf_[3] = {0, 0, 0};
  size_t nbuf_ = 0;
};

}  // namespace support
}  // namespace tvm

#endif  // TVM_SUPPORT_BASE64_H_
