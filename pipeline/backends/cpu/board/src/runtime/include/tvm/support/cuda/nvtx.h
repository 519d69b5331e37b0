/* deploy's stand-in for <tvm/support/cuda/nvtx.h> (not in the apache-tvm wheel): CPU-only
 * runtime builds have no NVTX, so a range is a no-op. */
#ifndef TVM_SUPPORT_CUDA_NVTX_H_
#define TVM_SUPPORT_CUDA_NVTX_H_

namespace tvm {
namespace support {

class NVTXScopedRange {
 public:
  template <typename T>
  explicit NVTXScopedRange(const T&) {}
  NVTXScopedRange(const NVTXScopedRange&) = delete;
  NVTXScopedRange& operator=(const NVTXScopedRange&) = delete;
};

}  // namespace support
}  // namespace tvm

#endif  // TVM_SUPPORT_CUDA_NVTX_H_
