/* deploy's own version of the part of TVM's src/support/utils.h that the runtime sources use
 * (the header is not in the apache-tvm wheel). */
#ifndef TVM_SUPPORT_UTILS_H_
#define TVM_SUPPORT_UTILS_H_

#include <algorithm>
#include <cctype>
#include <string>

namespace tvm {
namespace support {

/*! \brief Whether str is a non-empty run of decimal digits. */
inline bool IsNumber(const std::string& str) {
  return !str.empty() && std::all_of(str.begin(), str.end(), [](unsigned char c) { return std::isdigit(c); });
}

}  // namespace support
}  // namespace tvm

#endif  // TVM_SUPPORT_UTILS_H_
