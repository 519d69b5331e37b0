"""CPU features: what an artifact's code needs (what this host has is ``pipeline.host``).

LLVM names instruction-set features one way ("sse4.1", "avx512vnni", "dotprod"), Linux's
/proc/cpuinfo another ("sse4_1", "avx512_vnni", "asimddp"). Only features that add
instructions matter for "will this code run here"; LLVM's tuning flags ("fast-lzcnt",
"macrofusion") are ignored. The tables map the instruction-set features to cpuinfo flags.
"""

from __future__ import annotations

from ...host import host_arch

# LLVM feature -> /proc/cpuinfo flag, x86-64
X86_FEATURES = {
    "sse": "sse", "sse2": "sse2", "sse3": "pni", "ssse3": "ssse3", "sse4.1": "sse4_1",
    "sse4.2": "sse4_2", "popcnt": "popcnt", "cx16": "cx16", "sahf": "lahf_lm",
    "avx": "avx", "avx2": "avx2", "fma": "fma", "f16c": "f16c", "bmi": "bmi1", "bmi2": "bmi2",
    "lzcnt": "abm", "movbe": "movbe", "xsave": "xsave", "aes": "aes", "pclmul": "pclmulqdq",
    "adx": "adx", "sha": "sha_ni", "gfni": "gfni", "vaes": "vaes", "vpclmulqdq": "vpclmulqdq",
    "avxvnni": "avx_vnni", "avx512f": "avx512f", "avx512cd": "avx512cd", "avx512bw": "avx512bw",
    "avx512dq": "avx512dq", "avx512vl": "avx512vl", "avx512vnni": "avx512_vnni",
    "avx512bf16": "avx512_bf16", "avx512ifma": "avx512ifma", "avx512vbmi": "avx512vbmi",
    "avx512vbmi2": "avx512_vbmi2", "avx512bitalg": "avx512_bitalg",
    "avx512vpopcntdq": "avx512_vpopcntdq", "avx512fp16": "avx512_fp16",
    "avx512vp2intersect": "avx512_vp2intersect", "amx-tile": "amx_tile", "amx-int8": "amx_int8",
    "amx-bf16": "amx_bf16",
}

# LLVM feature -> /proc/cpuinfo "Features", aarch64
AARCH64_FEATURES = {
    "neon": "asimd", "fp-armv8": "fp", "crc": "crc32", "aes": "aes", "sha2": "sha2",
    "lse": "atomics", "rdm": "asimdrdm", "rcpc": "lrcpc", "dotprod": "asimddp",
    "fullfp16": "asimdhp", "sve": "sve", "sve2": "sve2", "i8mm": "i8mm", "bf16": "bf16",
}

# LLVM feature -> /proc/cpuinfo "Features", 32-bit ARM
ARM_FEATURES = {"neon": "neon", "vfp4": "vfpv4", "vfp3": "vfpv3", "hwdiv": "idiva"}

FEATURE_TABLES = {"x86_64": X86_FEATURES, "aarch64": AARCH64_FEATURES, "armv7l": ARM_FEATURES}


def llvm_features(llvm_target) -> set[str]:
    """The LLVM features (``avx512vnni``, ``dotprod``, ...) of the target's CPU (its -mcpu)."""
    from tvm.target import codegen

    return {str(f) for f in codegen.llvm_get_cpu_features(llvm_target)}


def required_features(llvm_target) -> list[str]:
    """Instruction-set features (cpuinfo names) that code for ``llvm_target`` may use."""
    table = FEATURE_TABLES.get(target_arch(llvm_target), {})
    llvm = llvm_features(llvm_target)
    for attr in llvm_target.attrs.get("mattr", []) or []:
        attr = str(attr)
        if attr.startswith("+"):
            llvm.add(attr[1:])
        elif attr.startswith("-"):
            llvm.discard(attr[1:])
    return sorted({table[f] for f in llvm if f in table})


def arch_of_triple(triple: str) -> str:
    head = triple.split("-")[0]
    if head.startswith(("aarch64", "arm64")):
        return "aarch64"
    if head.startswith(("armv7", "arm")):
        return "armv7l"
    if head in ("x86_64", "amd64"):
        return "x86_64"
    return head


def target_arch(target) -> str:
    """The architecture an LLVM target compiles for: its triple's, else this host's."""
    return arch_of_triple(str(target.attrs.get("mtriple", "")) or host_arch())


def is_x86(target) -> bool:
    """Whether ``target`` is LLVM code for an x86-64 CPU."""
    return str(target.kind.name) == "llvm" and target_arch(target) == "x86_64"


def prepack_weights(target) -> bool:
    """Weight layout rewriting is folded at compile time by running TIR on this host: x86 only."""
    return target_arch(target) == host_arch() == "x86_64"
