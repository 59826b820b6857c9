// CPU kernels of graphseg_ext (GCC or Clang: the hot loops use GNU vector extensions).
//
// Two families cover every op:
//  - pair kernels write one value per window entry (B, K, H, W): local_affinity and window_dot;
//  - gather kernels write one vector per pixel (B, C, H, W) as a weighted sum over the window:
//    window_aggregate, its transpose, and the gradient of local_affinity. Gathering (each output
//    pixel reads its neighbours) instead of scattering keeps threads free of write conflicts.
//
// Both vectorise along image rows in the planar (B, C, H, W) layout, keeping the accumulators of
// a vector of pixels in registers over the whole window. With many channels the pair kernel
// switches to the channels-last layout, where each pixel's C values are one contiguous vector
// and the window costs K aligned dot-product-like reductions; the input is transposed there
// first when it is not channels-last already. Outputs are always contiguous (planar).
#include "window_ops.h"
#include "parallel.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <torch/library.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <mutex>
#include <new>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#endif
#if defined(__linux__)
#include <sys/mman.h>
#endif

// The binary must run on any x86-64, so the hot loops are compiled for AVX-512, AVX2+FMA and the
// baseline, and the loader picks one per CPU (GCC function multiversioning). -march=native would
// tie the build to the build machine. GRAPHSEG_CPU_LEVEL (4 by default; setup.py sets it from the
// environment) caps the clones at x86-64-v3 (3) or the baseline (1), so that the AVX2 kernels can
// be measured on an AVX-512 machine.
#ifndef GRAPHSEG_CPU_LEVEL
#define GRAPHSEG_CPU_LEVEL 4
#endif
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define GRAPHSEG_MULTIVERSION 1
#else
#define GRAPHSEG_MULTIVERSION 0
#endif
#if GRAPHSEG_MULTIVERSION && GRAPHSEG_CPU_LEVEL >= 4
#define GRAPHSEG_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#elif GRAPHSEG_MULTIVERSION && GRAPHSEG_CPU_LEVEL >= 3
#define GRAPHSEG_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define GRAPHSEG_CLONES
#endif
// Helpers must be inlined into each clone to be compiled for that clone's instruction set.
#define GRAPHSEG_INLINE inline __attribute__((always_inline))
// The vector helpers below are always inlined, so the ABI change that GCC warns about for passing
// wide vectors by value never reaches a call boundary.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

namespace graphseg_ext {
namespace {

// Layout of the pair kernels. Measured on a 2-core AVX-512 machine (K = 80, 128x128 and 64x64):
// planar is faster up to 48 channels, channels-last from 64 (from 128 for window_dot, which has
// no symmetry to halve its arithmetic). The planar gather was faster at every channel count tried
// (1 to 448), so gathers are always planar.
constexpr int64_t kChannelsLastMinChannels = 56;
// Channels whose accumulators the planar gather keeps in registers at once.
constexpr int kGroup = 8;
// Outputs larger than this cannot stay in cache for the next op, so rows are written with
// non-temporal stores that skip reading each destination line first (half the memory traffic).
constexpr int64_t kStreamBytes = int64_t{8} << 20;
// Below this many multiply-adds a chunk is not worth a thread.
constexpr int64_t kGrainWork = int64_t{1} << 16;
constexpr int64_t kCacheLine = 64;
// Vector widths: 32 bytes (a ymm register in the AVX-512 and AVX2 clones, two xmm in the
// baseline) for the gathers, whose unaligned 64-byte loads of shifted neighbour rows would
// always split across two cache lines (measured slower); 64 bytes for the planar pair kernel
// where the CPU has AVX-512 (it is bound by arithmetic rather than loads), 32 bytes elsewhere:
// GCC keeps a vector wider than the target's registers in memory, and the AVX2 clone of the
// 64-byte kernel spent its time storing and reloading every vector through the stack (measured
// 6x slower than the AVX-512 clone on 512x512, C = 3, K = 80).
constexpr int64_t kVectorBytes = 32;
constexpr int64_t kWideVectorBytes = 64;

template <typename T, int64_t kBytes = kVectorBytes>
struct Simd {
  typedef T Vec __attribute__((vector_size(kBytes)));
  static constexpr int64_t kLanes = kBytes / static_cast<int64_t>(sizeof(T));
};
template <typename T, int64_t kBytes = kVectorBytes>
using Vec = typename Simd<T, kBytes>::Vec;

// The instruction sets of the clones. clone_isa has one version per clone, each returning its
// own, so the loader's rule for GRAPHSEG_CLONES picks the one for this CPU (cpu_isa); kernels
// with a separate function per instruction set (walk_band) are picked by it.
enum class Isa { kBaseline, kAvx2, kAvx512 };

#if GRAPHSEG_MULTIVERSION && GRAPHSEG_CPU_LEVEL >= 4
__attribute__((target("arch=x86-64-v4"))) Isa clone_isa() { return Isa::kAvx512; }
#endif
#if GRAPHSEG_MULTIVERSION && GRAPHSEG_CPU_LEVEL >= 3
__attribute__((target("arch=x86-64-v3"))) Isa clone_isa() { return Isa::kAvx2; }
__attribute__((target("default")))
#endif
Isa clone_isa() {
  return Isa::kBaseline;
}

const Isa cpu_isa = clone_isa();

template <typename V, typename T>
GRAPHSEG_INLINE V load(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}

template <typename V, typename T>
GRAPHSEG_INLINE void store(T* p, const V& v) {
  std::memcpy(p, &v, sizeof(V));
}

// Sizes, offsets and the strides of the planar (B, C, H, W) input maps; window outputs and
// coefficients are always dense.
struct Window {
  int64_t batch, channels, height, width, count;
  const int64_t* offsets;  // (count, 2) rows of (dy, dx)
  // Largest reach of the window to the left (max -dx) and to the right (max dx), at least 0.
  int64_t reach_left, reach_right;
  // Element strides between rows and between channel planes of a planar input.
  int64_t row, plane;
};

// Valid columns [x0, x1) of a row whose neighbours lie at (y + sy, x + sx); [0, 0) when there
// are none (neighbour row outside the image, or a shift wider than the image).
struct Span {
  int64_t y, x0, x1;
};

GRAPHSEG_INLINE Span shifted_span(const Window& w, int64_t y, int64_t sy, int64_t sx) {
  const int64_t ys = y + sy;
  const int64_t x0 = std::max<int64_t>(0, -sx), x1 = std::min<int64_t>(w.width, w.width - sx);
  if (ys < 0 || ys >= w.height || x1 <= x0) return {ys, 0, 0};
  return {ys, x0, x1};
}

// |v| of a scalar, or of a vector by clearing the sign bits (one and instead of the compare and
// blend that GCC emits for `v < 0 ? -v : v`).
template <typename V>
GRAPHSEG_INLINE V absolute(V v) {
  if constexpr (std::is_floating_point_v<V>) {
    return std::abs(v);
  } else {
    using Bits = decltype(v < v);
    using Element = std::remove_reference_t<decltype(std::declval<Bits>()[0])>;
    Bits bits;
    std::memcpy(&bits, &v, sizeof(V));
    bits &= std::numeric_limits<Element>::max();
    std::memcpy(&v, &bits, sizeof(V));
    return v;
  }
}

// Scalar or vector: both instantiations share one formula.
template <PairKind kKind, typename V>
GRAPHSEG_INLINE V pair_term(V a, V b) {
  if constexpr (kKind == PairKind::L1) {
    return absolute(a - b);
  } else if constexpr (kKind == PairKind::L2) {
    const V d = a - b;
    return d * d;
  } else {
    return a * b;
  }
}

// Non-temporal copies for the widest stores the CPU has, chosen once at load time (manual
// multiversioning: the intrinsics of each width are only allowed under their target attribute).
#if defined(__GNUC__) && defined(__x86_64__)
// Bytes to copy normally before `dst` reaches a kBytes boundary.
GRAPHSEG_INLINE std::size_t head_bytes(const char* dst, std::size_t n, std::size_t kBytes) {
  return std::min(n, (kBytes - reinterpret_cast<std::uintptr_t>(dst) % kBytes) % kBytes);
}

__attribute__((target("avx512f"))) void stream_avx512(char* dst, const char* src,
                                                       std::size_t n) {
  std::size_t i = head_bytes(dst, n, 64);
  std::memcpy(dst, src, i);
  for (; i + 64 <= n; i += 64) {
    _mm512_stream_si512(reinterpret_cast<__m512i*>(dst + i), _mm512_loadu_si512(src + i));
  }
  std::memcpy(dst + i, src + i, n - i);
}

__attribute__((target("avx"))) void stream_avx(char* dst, const char* src, std::size_t n) {
  std::size_t i = head_bytes(dst, n, 32);
  std::memcpy(dst, src, i);
  for (; i + 32 <= n; i += 32) {
    _mm256_stream_si256(reinterpret_cast<__m256i*>(dst + i),
                        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i)));
  }
  std::memcpy(dst + i, src + i, n - i);
}

void stream_sse2(char* dst, const char* src, std::size_t n) {
  std::size_t i = head_bytes(dst, n, 16);
  std::memcpy(dst, src, i);
  for (; i + 16 <= n; i += 16) {
    _mm_stream_si128(reinterpret_cast<__m128i*>(dst + i),
                     _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i)));
  }
  std::memcpy(dst + i, src + i, n - i);
}

using StreamCopy = void (*)(char*, const char*, std::size_t);

StreamCopy pick_stream_copy() {
  // Runs while the library loads, possibly before the CPU model is known to the builtins.
  __builtin_cpu_init();
  if (GRAPHSEG_CPU_LEVEL >= 4 && __builtin_cpu_supports("avx512f")) return stream_avx512;
  if (GRAPHSEG_CPU_LEVEL >= 3 && __builtin_cpu_supports("avx")) return stream_avx;
  return stream_sse2;
}

const StreamCopy stream_copy = pick_stream_copy();
#endif

// Copies a finished row to the output, bypassing the cache when `stream` is set.
template <typename T>
void write_row(T* dst, const T* src, int64_t n, bool stream) {
#if defined(__GNUC__) && defined(__x86_64__)
  if (stream) {
    stream_copy(reinterpret_cast<char*>(dst), reinterpret_cast<const char*>(src), n * sizeof(T));
    return;
  }
#endif
  std::memcpy(dst, src, n * sizeof(T));
}

// Orders this thread's non-temporal stores before the op returns.
void finish_stream(bool stream) {
#if defined(__GNUC__) && defined(__x86_64__)
  if (stream) _mm_sfence();
#endif
}

template <PairKind kKind, int64_t kBytes, typename T>
GRAPHSEG_INLINE Vec<T, kBytes> pair_vector(const T* l, const T* r, int64_t C, int64_t plane) {
  using V = Vec<T, kBytes>;
  V acc = pair_term<kKind>(load<V>(l), load<V>(r));
  for (int64_t c = 1; c < C; ++c) {
    acc += pair_term<kKind>(load<V>(l + c * plane), load<V>(r + c * plane));
  }
  return acc;
}

// out[b, k, y, x] = sum_c pair(left[b, c, y, x], right[b, c, y + dy, x + dx]), planar inputs,
// in vectors of kBytes. Each output row is summed over channels in registers, then written once.
template <typename T, PairKind kKind, int64_t kBytes>
GRAPHSEG_INLINE void pair_planar_rows(const Window& w, const T* left, const T* right, T* out,
                                      bool stream, int64_t row_begin, int64_t row_end) {
  const int64_t H = w.height, W = w.width, C = w.channels, K = w.count;
  const int64_t row = w.row, plane = w.plane;
  constexpr int64_t L = Simd<T, kBytes>::kLanes;
  std::vector<T> buf(W);
  for (int64_t r = row_begin; r < row_end; ++r) {
    const int64_t b = r / H, y = r % H;
    for (int64_t k = 0; k < K; ++k) {
      const int64_t dx = w.offsets[2 * k + 1];
      const Span s = shifted_span(w, y, w.offsets[2 * k], dx);
      const int64_t x0 = s.x0, n = s.x1 - s.x0;
      std::fill(buf.begin(), buf.begin() + x0, T(0));
      std::fill(buf.begin() + x0 + n, buf.end(), T(0));
      const T* lp = left + b * C * plane + y * row + x0;
      const T* rp = right + b * C * plane + s.y * row + x0 + dx;
      T* o = buf.data() + x0;
      if (n >= L) {
        // The last vector ends at n, overlapping the one before rather than leaving a tail.
        for (int64_t i = 0; i < n; i += L) {
          const int64_t at = std::min(i, n - L);
          store(o + at, pair_vector<kKind, kBytes>(lp + at, rp + at, C, plane));
        }
      } else {
        for (int64_t i = 0; i < n; ++i) {
          T acc = 0;
          for (int64_t c = 0; c < C; ++c) {
            acc += pair_term<kKind>(lp[c * plane + i], rp[c * plane + i]);
          }
          o[i] = acc;
        }
      }
      write_row(out + ((b * K + k) * H + y) * W, buf.data(), W, stream);
    }
  }
  finish_stream(stream);
}

template <typename T, PairKind kKind>
GRAPHSEG_CLONES void pair_planar(const Window& w, const T* left, const T* right, T* out,
                                 bool stream, int64_t row_begin, int64_t row_end) {
  pair_planar_rows<T, kKind, kVectorBytes>(w, left, right, out, stream, row_begin, row_end);
}

// The 64-byte form, compiled for AVX-512 only and chosen where the CPU has it (cpu_isa).
#if GRAPHSEG_MULTIVERSION && GRAPHSEG_CPU_LEVEL >= 4
template <typename T, PairKind kKind>
__attribute__((target("arch=x86-64-v4"))) void pair_planar_wide(
    const Window& w, const T* left, const T* right, T* out, bool stream, int64_t row_begin,
    int64_t row_end) {
  pair_planar_rows<T, kKind, kWideVectorBytes>(w, left, right, out, stream, row_begin, row_end);
}

#endif

// Four reductions over C sharing the left vector; independent accumulators hide the latency of
// the vector adds.
template <PairKind kKind, typename T>
GRAPHSEG_INLINE void reduce4(const T* __restrict p, const T* __restrict q0,
                             const T* __restrict q1, const T* __restrict q2,
                             const T* __restrict q3, int64_t C, T* result) {
  T s0 = 0, s1 = 0, s2 = 0, s3 = 0;
#pragma omp simd reduction(+ : s0, s1, s2, s3) simdlen(kVectorBytes / sizeof(T))
  for (int64_t c = 0; c < C; ++c) {
    const T a = p[c];
    s0 += pair_term<kKind>(a, q0[c]);
    s1 += pair_term<kKind>(a, q1[c]);
    s2 += pair_term<kKind>(a, q2[c]);
    s3 += pair_term<kKind>(a, q3[c]);
  }
  result[0] = s0;
  result[1] = s1;
  result[2] = s2;
  result[3] = s3;
}

// Same as pair_planar with channels-last (B, H, W, C) inputs, for the window entries `ks` only;
// the output stays planar.
template <typename T, PairKind kKind>
GRAPHSEG_CLONES void pair_channels_last(const Window& w, const std::vector<int64_t>& ks,
                                        const T* left, const T* right, T* out, bool stream,
                                        int64_t row_begin, int64_t row_end) {
  const int64_t H = w.height, W = w.width, C = w.channels, K = w.count;
  const int64_t n = static_cast<int64_t>(ks.size());
  std::vector<T> buf(n * W);
  for (int64_t r = row_begin; r < row_end; ++r) {
    const int64_t b = r / H, y = r % H;
    for (int64_t x = 0; x < W; ++x) {
      const T* p = left + ((b * H + y) * W + x) * C;
      for (int64_t i0 = 0; i0 < n; i0 += 4) {
        // Missing neighbours (border, or past the list) point at p and their result is dropped.
        const T* q[4];
        bool valid[4];
        for (int64_t j = 0; j < 4; ++j) {
          valid[j] = false;
          q[j] = p;
          if (i0 + j < n) {
            const int64_t k = ks[i0 + j];
            const int64_t ys = y + w.offsets[2 * k], xs = x + w.offsets[2 * k + 1];
            if (ys >= 0 && ys < H && xs >= 0 && xs < W) {
              valid[j] = true;
              q[j] = right + ((b * H + ys) * W + xs) * C;
            }
          }
        }
        T sums[4];
        reduce4<kKind>(p, q[0], q[1], q[2], q[3], C, sums);
        for (int64_t j = 0; j < 4 && i0 + j < n; ++j) {
          buf[(i0 + j) * W + x] = valid[j] ? sums[j] : T(0);
        }
      }
    }
    for (int64_t i = 0; i < n; ++i) {
      write_row(out + ((b * K + ks[i]) * H + y) * W, buf.data() + i * W, W, stream);
    }
  }
  finish_stream(stream);
}

// Window entry k and the entry s with o_k = -o_s whose plane it copies.
struct Mirror {
  int64_t k, s;
};

// For a symmetric pair (left is right), out[b, k, q] = pair(f(q), f(q - o_s)) = out[b, s, q - o_s]:
// fills each mirrored plane with a shifted copy of its source, 0 where q - o_s leaves the image.
template <typename T>
void mirror_rows(const Window& w, const std::vector<Mirror>& mirrors, T* out, bool stream,
                 int64_t row_begin, int64_t row_end) {
  const int64_t H = w.height, W = w.width, K = w.count;
  std::vector<T> buf(W);
  for (int64_t r = row_begin; r < row_end; ++r) {
    const int64_t b = r / H, y = r % H;
    for (const Mirror& m : mirrors) {
      const int64_t dy = w.offsets[2 * m.s], dx = w.offsets[2 * m.s + 1];
      const Span sp = shifted_span(w, y, -dy, -dx);
      const int64_t x0 = sp.x0, n = sp.x1 - sp.x0;
      std::fill(buf.begin(), buf.begin() + x0, T(0));
      std::fill(buf.begin() + x0 + n, buf.end(), T(0));
      if (n > 0) {
        const T* src = out + ((b * K + m.s) * H + sp.y) * W + x0 - dx;
        std::copy(src, src + n, buf.begin() + x0);
      }
      write_row(out + ((b * K + m.k) * H + y) * W, buf.data(), W, stream);
    }
  }
  finish_stream(stream);
}

// What a gather kernel sums, per window entry, times the coefficient: the neighbour value
// (window_aggregate and its transpose, and the gradient of "dot"), sign(centre - neighbour)
// (gradient of "l1", 0 at ties as torch.sign) or 2 (centre - neighbour) (gradient of "l2").
enum class Term { Value, Sign, Diff2 };

template <Term kTerm, typename V>
GRAPHSEG_INLINE V gather_term(V centre, V neighbour) {
  if constexpr (kTerm == Term::Value) {
    return neighbour;
  } else if constexpr (kTerm == Term::Sign) {
    const V zero{}, one = zero + 1;
    return (centre > neighbour ? one : zero) - (centre < neighbour ? one : zero);
  } else {
    return 2 * (centre - neighbour);
  }
}

// One term of a row's gather: the neighbour at element offset `shift` from the centre (in the
// staged values' strides), weighted by the coefficient of column x at `coef + x` (in the dense
// coefficient map of the batch item), for the columns [x_begin, x_end) whose neighbour lies
// inside the image.
struct Entry {
  int64_t shift, coef, x_begin, x_end;
};

// The window entries (both passes) with a neighbour inside the image for some column of row y.
template <bool kForward, bool kBackward>
void row_entries(const Window& w, int64_t y, std::vector<Entry>& entries) {
  const int64_t H = w.height, W = w.width;
  entries.clear();
  for (int64_t k = 0; k < w.count; ++k) {
    const int64_t dy = w.offsets[2 * k], dx = w.offsets[2 * k + 1];
    if (kForward) {
      const Span s = shifted_span(w, y, dy, dx);
      if (s.x1 > s.x0) entries.push_back({dy * w.row + dx, (k * H + y) * W, s.x0, s.x1});
    }
    if (kBackward) {
      const Span s = shifted_span(w, y, -dy, -dx);
      if (s.x1 > s.x0) entries.push_back({-dy * w.row - dx, (k * H + s.y) * W - dx, s.x0, s.x1});
    }
  }
}

// Row stride (elements) of the coefficients of one row staged by stage_row: the width rounded
// up to whole cache lines (every vector read stays inside the row), then grown by a line until
// it is no multiple of 1 KiB, so that the staged entries at one column spread over the L1
// cache's sets.
template <typename T>
int64_t staged_stride(int64_t width) {
  constexpr int64_t S = kCacheLine / sizeof(T);
  int64_t stride = (width + S - 1) / S * S;
  while ((stride * static_cast<int64_t>(sizeof(T))) % 1024 == 0) stride += S;
  return stride;
}

// Copies the coefficients of row y of every entry, columns [0, stride), to
// coefs[e * stride + x], with 0 for the columns whose neighbour is outside the image (the zero
// then masks that term, whatever the zero-padded neighbour read gives). Each plane's row is read
// as one run: read in place at one column, the K planes (a power of two apart for
// power-of-two images) share the same cache sets and evict each other's prefetched lines, which
// made a 512x512 aggregate run at half of the bandwidth of the same reads from a 500x500 one.
template <typename T>
GRAPHSEG_INLINE void stage_row(const std::vector<Entry>& entries, const T* coef_b,
                               int64_t stride, T* coefs) {
  const int64_t n = static_cast<int64_t>(entries.size());
  constexpr int64_t kAhead = 4, kLine = kCacheLine / sizeof(T);
  const auto prefetch = [&](int64_t e) {
    const Entry& entry = entries[e];
    const T* src = coef_b + entry.coef;
    for (int64_t x = entry.x_begin; x < entry.x_end; x += kLine) __builtin_prefetch(src + x);
  };
  for (int64_t e = 0; e < std::min(kAhead, n); ++e) prefetch(e);
  for (int64_t e = 0; e < n; ++e) {
    if (e + kAhead < n) prefetch(e + kAhead);
    const Entry& entry = entries[e];
    T* dst = coefs + e * stride;
    std::fill(dst, dst + entry.x_begin, T(0));
    std::memcpy(dst + entry.x_begin, coef_b + entry.coef + entry.x_begin,
                (entry.x_end - entry.x_begin) * sizeof(T));
    std::fill(dst + entry.x_end, dst + stride, T(0));
  }
}

// Writes the first `lanes` columns of kChannels accumulator vectors to their channel planes.
template <typename T, int kChannels, int64_t kBytes = kVectorBytes>
GRAPHSEG_INLINE void store_channels(const Vec<T, kBytes>* acc, T* out_c, int64_t out_plane,
                                    int64_t lanes) {
  if (lanes == Simd<T, kBytes>::kLanes) {
#pragma GCC unroll 8
    for (int j = 0; j < kChannels; ++j) store(out_c + j * out_plane, acc[j]);
  } else {
    for (int j = 0; j < kChannels; ++j) {
      std::memcpy(out_c + j * out_plane, &acc[j], lanes * sizeof(T));
    }
  }
}

// The gather of one vector of columns for kChannels channels: the accumulators stay in
// registers over the whole window. Writes the first `lanes` columns.
template <typename T, Term kTerm, int kChannels>
GRAPHSEG_INLINE void gather_vectors(const std::vector<Entry>& entries, const T* coefs,
                                    int64_t coef_stride, const T* centre_c, int64_t in_plane,
                                    T* out_c, int64_t out_plane, int64_t lanes) {
  using V = Vec<T>;
  V acc[kChannels];
  [[maybe_unused]] V centre[kChannels];
#pragma GCC unroll 8
  for (int j = 0; j < kChannels; ++j) {
    acc[j] = V{};
    if constexpr (kTerm != Term::Value) centre[j] = load<V>(centre_c + j * in_plane);
  }
  const int64_t n = static_cast<int64_t>(entries.size());
  for (int64_t e = 0; e < n; ++e) {
    const V cf = load<V>(coefs + e * coef_stride);
    const T* neighbour = centre_c + entries[e].shift;
#pragma GCC unroll 8
    for (int j = 0; j < kChannels; ++j) {
      acc[j] += cf * gather_term<kTerm>(centre[j], load<V>(neighbour + j * in_plane));
    }
  }
  store_channels<T, kChannels>(acc, out_c, out_plane, lanes);
}

// gather_vectors over all C channels, in the fewest groups of at most kGroup channels, of
// near-equal sizes (21 channels: 7 + 7 + 7 rather than 8 + 8 + 5).
template <typename T, Term kTerm>
GRAPHSEG_INLINE void gather_channels(const std::vector<Entry>& entries, const T* coefs,
                                     int64_t coef_stride, const T* centre, int64_t in_plane,
                                     T* out, int64_t out_plane, int64_t C, int64_t lanes) {
  const int64_t groups = (C + kGroup - 1) / kGroup;
  for (int64_t g = 0, c = 0; g < groups; ++g) {
    const int64_t size = (C - c) / (groups - g);
    const T* centre_c = centre + c * in_plane;
    T* out_c = out + c * out_plane;
    c += size;
    switch (size) {
      case 8:
        gather_vectors<T, kTerm, 8>(entries, coefs, coef_stride, centre_c, in_plane, out_c,
                                     out_plane, lanes);
        break;
      case 7:
        gather_vectors<T, kTerm, 7>(entries, coefs, coef_stride, centre_c, in_plane, out_c,
                                     out_plane, lanes);
        break;
      case 6:
        gather_vectors<T, kTerm, 6>(entries, coefs, coef_stride, centre_c, in_plane, out_c,
                                     out_plane, lanes);
        break;
      case 5:
        gather_vectors<T, kTerm, 5>(entries, coefs, coef_stride, centre_c, in_plane, out_c,
                                     out_plane, lanes);
        break;
      case 4:
        gather_vectors<T, kTerm, 4>(entries, coefs, coef_stride, centre_c, in_plane, out_c,
                                     out_plane, lanes);
        break;
      case 3:
        gather_vectors<T, kTerm, 3>(entries, coefs, coef_stride, centre_c, in_plane, out_c,
                                     out_plane, lanes);
        break;
      case 2:
        gather_vectors<T, kTerm, 2>(entries, coefs, coef_stride, centre_c, in_plane, out_c,
                                     out_plane, lanes);
        break;
      case 1:
        gather_vectors<T, kTerm, 1>(entries, coefs, coef_stride, centre_c, in_plane, out_c,
                                     out_plane, lanes);
        break;
      default:
        break;
    }
  }
}

// One row of a gather: `centre` and `out` point at column 0 of channel 0 of the row, `coef_b` at
// the batch item's coefficients, `coefs` at room for the staged coefficients of the row
// (entries x `stride`, stage_row).
template <typename T, Term kTerm>
GRAPHSEG_INLINE void gather_row(const Window& w, const std::vector<Entry>& entries,
                                const T* coef_b, const T* centre, int64_t in_plane, T* out,
                                int64_t out_plane, T* coefs, int64_t stride) {
  constexpr int64_t L = Simd<T>::kLanes;
  const int64_t W = w.width;
  stage_row(entries, coef_b, stride, coefs);
  for (int64_t x = 0; x < W; x += L) {
    gather_channels<T, kTerm>(entries, coefs + x, stride, centre + x, in_plane, out + x,
                              out_plane, w.channels, std::min(L, W - x));
  }
}

// out[b, c, p] = sum_k coef[b, k, p] h(v[c, p], v[c, p + o_k])            (forward pass)
//              + sum_k coef[b, k, p - o_k] h(v[c, p], v[c, p - o_k])      (backward pass)
// over neighbours inside the image, in vectors of columns. `values` is a planar copy padded
// with zero columns (planar_input): vectors near the left and right edges read the padding,
// and the staged coefficients are 0 there.
template <typename T, Term kTerm, bool kForward, bool kBackward>
GRAPHSEG_CLONES void gather_planar(const Window& w, const T* coef, const T* values, T* out,
                                   int64_t row_begin, int64_t row_end) {
  const int64_t H = w.height, W = w.width, C = w.channels, K = w.count, plane = H * W;
  std::vector<Entry> entries;
  entries.reserve(2 * K);
  const int64_t stride = staged_stride<T>(W);
  std::vector<T> coefs(2 * K * stride);
  for (int64_t r = row_begin; r < row_end; ++r) {
    const int64_t b = r / H, y = r % H;
    row_entries<kForward, kBackward>(w, y, entries);
    gather_row<T, kTerm>(w, entries, coef + b * K * plane, values + b * C * w.plane + y * w.row,
                         w.plane, out + b * C * plane + y * W, plane, coefs.data(), stride);
  }
}

#if GRAPHSEG_MULTIVERSION && GRAPHSEG_CPU_LEVEL >= 4
// window_aggregate in float32 on AVX-512, for windows with -16 <= dx <= 15. The planar gather
// makes one unaligned load per multiply-add, nearly half of which cross a cache line; it ran at
// about 40% of the FMA rate of one core even with its data in cache (26 of 62 G multiply-adds/s
// in 8-float vectors, 21 channels, 32x128). Here the entries of one window row (same dy) share
// three 16-float loads per channel, at x - 16, x and x + 16, and each neighbour vector at x + dx
// is cut from two of them with one two-register permute: 36 G/s on the same case, and 1.5x
// faster than the planar gather on 512x512, C = 21, K = 80 (single thread, shared 2-core AMD
// EPYC, medians 20 ms against 31 ms).
constexpr int64_t kWideLeft = 16, kWideRight = 15;
// Channels per group: two loaded vectors and an accumulator each, in the 32 zmm registers.
constexpr int kWideGroup = 8;

// Entries [begin, split) have dx < 0 (cut from the vectors at x - 16 and x), [split, end)
// dx >= 0 (from x and x + 16); all read the neighbour row `shift` elements from the centre row.
struct WideRun {
  int64_t shift, begin, split, end;
};

// Window entries of row y in the order of the offsets (the sums keep the order of the planar
// gather, so both give the same float32 results), cut into runs of WideRun; `dx` gets each
// entry's column shift.
void wide_entries(const Window& w, int64_t y, std::vector<Entry>& entries,
                  std::vector<int64_t>& dx, std::vector<WideRun>& runs) {
  const int64_t H = w.height, W = w.width;
  entries.clear();
  dx.clear();
  runs.clear();
  for (int64_t k = 0; k < w.count; ++k) {
    const int64_t sy = w.offsets[2 * k], sx = w.offsets[2 * k + 1];
    const Span s = shifted_span(w, y, sy, sx);
    if (s.x1 <= s.x0) continue;
    const int64_t e = static_cast<int64_t>(entries.size());
    entries.push_back({sy * w.row, (k * H + y) * W, s.x0, s.x1});
    dx.push_back(sx);
    if (runs.empty() || runs.back().shift != sy * w.row || (sx < 0 && runs.back().split < e)) {
      runs.push_back({sy * w.row, e, e, e});
    }
    WideRun& run = runs.back();
    run.end = e + 1;
    if (sx < 0) run.split = e + 1;
  }
}

template <int kChannels>
__attribute__((target("arch=x86-64-v4"))) GRAPHSEG_INLINE void aggregate_wide_vectors(
    const std::vector<WideRun>& runs, const int64_t* dx, const float* coefs,
    int64_t coef_stride, const float* centre_c, int64_t plane, float* out_c, int64_t out_plane,
    int64_t lanes) {
  const __m512i iota = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
  __m512 acc[kChannels];
#pragma GCC unroll 8
  for (int j = 0; j < kChannels; ++j) acc[j] = _mm512_setzero_ps();
  for (const WideRun& run : runs) {
    const float* row = centre_c + run.shift;
    __m512 side[kChannels], mid[kChannels];
#pragma GCC unroll 8
    for (int j = 0; j < kChannels; ++j) {
      side[j] = _mm512_loadu_ps(row + j * plane - 16);
      mid[j] = _mm512_loadu_ps(row + j * plane);
    }
    for (int64_t e = run.begin; e < run.split; ++e) {
      const __m512 cf = _mm512_loadu_ps(coefs + e * coef_stride);
      const __m512i index = _mm512_add_epi32(iota, _mm512_set1_epi32(static_cast<int>(dx[e] + 16)));
#pragma GCC unroll 8
      for (int j = 0; j < kChannels; ++j) {
        acc[j] = _mm512_fmadd_ps(cf, _mm512_permutex2var_ps(side[j], index, mid[j]), acc[j]);
      }
    }
#pragma GCC unroll 8
    for (int j = 0; j < kChannels; ++j) side[j] = _mm512_loadu_ps(row + j * plane + 16);
    for (int64_t e = run.split; e < run.end; ++e) {
      const __m512 cf = _mm512_loadu_ps(coefs + e * coef_stride);
      const __m512i index = _mm512_add_epi32(iota, _mm512_set1_epi32(static_cast<int>(dx[e])));
#pragma GCC unroll 8
      for (int j = 0; j < kChannels; ++j) {
        acc[j] = _mm512_fmadd_ps(cf, _mm512_permutex2var_ps(mid[j], index, side[j]), acc[j]);
      }
    }
  }
  const __mmask16 mask = static_cast<__mmask16>((1u << lanes) - 1);
#pragma GCC unroll 8
  for (int j = 0; j < kChannels; ++j) _mm512_mask_storeu_ps(out_c + j * out_plane, mask, acc[j]);
}

// out[b, c, p] = sum_k coef[b, k, p] v[c, p + o_k] (the Aggregate mode of gather_planar) for
// rows [row_begin, row_end); `values` is padded with at least kWideLeft zero columns on the left
// and 2 * kWideLeft on the right.
__attribute__((target("arch=x86-64-v4"))) void aggregate_wide(const Window& w, const float* coef,
                                                              const float* values, float* out,
                                                              int64_t row_begin, int64_t row_end) {
  constexpr int64_t S = 16;
  const int64_t H = w.height, W = w.width, C = w.channels, K = w.count, plane = H * W;
  std::vector<Entry> entries;
  std::vector<int64_t> dx;
  std::vector<WideRun> runs;
  entries.reserve(K);
  dx.reserve(K);
  runs.reserve(K);
  const int64_t stride = staged_stride<float>(W);
  std::vector<float> coefs(K * stride);
  const int64_t groups = (C + kWideGroup - 1) / kWideGroup;
  for (int64_t r = row_begin; r < row_end; ++r) {
    const int64_t b = r / H, y = r % H;
    wide_entries(w, y, entries, dx, runs);
    stage_row(entries, coef + b * K * plane, stride, coefs.data());
    const float* centre = values + b * C * w.plane + y * w.row;
    float* out_row = out + b * C * plane + y * W;
    for (int64_t x = 0; x < W; x += S) {
      const int64_t lanes = std::min(S, W - x);
      for (int64_t g = 0, c = 0; g < groups; ++g) {
        const int64_t size = (C - c) / (groups - g);
        const float* centre_c = centre + c * w.plane + x;
        float* out_c = out_row + c * plane + x;
        c += size;
        switch (size) {
#define GRAPHSEG_WIDE_GROUP(n)                                                               \
  case n:                                                                                    \
    aggregate_wide_vectors<n>(runs, dx.data(), coefs.data() + x, stride, centre_c, w.plane,   \
                              out_c, plane, lanes);                                          \
    break;
          GRAPHSEG_WIDE_GROUP(8)
          GRAPHSEG_WIDE_GROUP(7)
          GRAPHSEG_WIDE_GROUP(6)
          GRAPHSEG_WIDE_GROUP(5)
          GRAPHSEG_WIDE_GROUP(4)
          GRAPHSEG_WIDE_GROUP(3)
          GRAPHSEG_WIDE_GROUP(2)
          GRAPHSEG_WIDE_GROUP(1)
#undef GRAPHSEG_WIDE_GROUP
          default:
            break;
        }
      }
    }
  }
}
#endif

// A planar map of the multi-step walk: a whole map (ring 0) or a ring of `ring` row slots that
// holds the latest rows of one intermediate step (row y in slot y % ring). Column padding as in
// planar_input, zero.
template <typename T>
struct Rows {
  T* data;
  int64_t row, plane, ring;
  GRAPHSEG_INLINE int64_t slot(int64_t y) const { return ring > 0 ? y % ring : y; }
  GRAPHSEG_INLINE T* at(int64_t y) const { return data + slot(y) * row; }
};

// The window entries of row y of a walk step reading `src` (those whose neighbour row lies
// inside the image): the shift of each from the centre, between the slots of a ring, and its
// window entry k.
template <typename T>
void walk_entries(const Window& w, int64_t y, const Rows<T>& src, std::vector<int64_t>& shifts,
                  std::vector<int64_t>& ks) {
  shifts.clear();
  ks.clear();
  for (int64_t k = 0; k < w.count; ++k) {
    const int64_t dx = w.offsets[2 * k + 1];
    const Span s = shifted_span(w, y, w.offsets[2 * k], dx);
    if (s.x1 > s.x0) {
      shifts.push_back((src.slot(s.y) - src.slot(y)) * src.row + dx);
      ks.push_back(k);
    }
  }
}

// The walk's coefficients in tiles, one per row and vector of L columns: tile (y, v) holds for
// each window entry k the coefficients of columns v L .. v L + L - 1 at k L, 0 for columns
// outside the image or whose neighbour column is. A vector of columns thus reads its K
// coefficient vectors as one contiguous run (2.5 KiB for K = 80 floats) that the prefetcher
// streams in; read in place, the K planes (a power of two apart for power-of-two images)
// share cache sets and evict each other's lines. Writes the tiles of row y.
template <typename T>
void tile_row(const Window& w, int64_t L, const T* coef_b, T* tiles_b, int64_t y) {
  const int64_t H = w.height, W = w.width, K = w.count, vectors = (W + L - 1) / L;
  T* row = tiles_b + y * vectors * K * L;
  for (int64_t k = 0; k < K; ++k) {
    const int64_t dx = w.offsets[2 * k + 1];
    const int64_t x0 = std::max<int64_t>(0, -dx), x1 = std::min(W, W - dx);
    const T* src = coef_b + (k * H + y) * W;
    for (int64_t v = 0; v < vectors; ++v) {
      T* dst = row + (v * K + k) * L;
      for (int64_t l = 0, x = v * L; l < L; ++l, ++x) dst[l] = x >= x0 && x < x1 ? src[x] : T(0);
    }
  }
}

// Vector width of the walk's kernels: 64 bytes with AVX-512, whose 64-byte multiply-adds do
// twice the arithmetic of 32-byte ones per cycle (measured on an Intel Xeon: 68 against 36 G
// float multiply-adds per second on one core); 32 bytes elsewhere. Unlike the gathers', the
// walk's loads serve two multiply-adds each, so its 64-byte loads that straddle two cache lines
// cost less than the arithmetic gains: 512x512, 21 channels, 64 steps on 2 threads took 0.75 s
// against 0.99 s with 32-byte vectors (a 64-byte form that cut the neighbours out of aligned
// loads with permutes instead was no faster).
constexpr int64_t walk_bytes(Isa isa) { return isa == Isa::kAvx512 ? 64 : 32; }

// A neighbour load that serves rows y and y + 1 of a walk step, or one of them: its shift from
// the centre of row y and where each row that uses it finds its coefficient vector in a tile
// (tile_row; -1: the row does not use it).
struct SharedLoad {
  int64_t shift, first, second;
};

// Buffers of one thread of the walk.
template <typename T>
struct WalkScratch {
  std::vector<int64_t> first, second, first_k, second_k;  // walk_entries of rows y and y + 1
  std::vector<int64_t> position, unpaired;
  std::vector<char> used;
  std::vector<SharedLoad> loads;
  int64_t both = 0, first_only = 0;  // loads[0, both) serve both rows, then `first_only` row y
  int64_t lanes, tile_size;           // L, and K L the elements of one tile (tile_row)

  WalkScratch(int64_t K, int64_t L) : position(K), lanes(L), tile_size(K * L) {
    for (std::vector<int64_t>* v : {&first, &second, &first_k, &second_k, &unpaired}) {
      v->reserve(K);
    }
    loads.reserve(2 * K);
  }
};

// The loads of rows y and y + 1: entry k of row y and entry partner[k] of row y + 1, whose offset
// is o_k - (1, 0), read the same neighbour, so one load serves both (with the disk of radius 5,
// 92 loads instead of 162 per vector of columns and channel).
template <typename T>
void shared_loads(const Window& w, int64_t y, const Rows<T>& src,
                  const std::vector<int64_t>& partner, WalkScratch<T>& s) {
  const int64_t L = s.lanes;
  walk_entries(w, y, src, s.first, s.first_k);
  walk_entries(w, y + 1, src, s.second, s.second_k);
  std::fill(s.position.begin(), s.position.end(), -1);
  for (std::size_t j = 0; j < s.second.size(); ++j) s.position[s.second_k[j]] = j;
  s.used.assign(s.second.size(), 0);
  s.loads.clear();
  s.unpaired.clear();
  for (std::size_t i = 0; i < s.first.size(); ++i) {
    const int64_t k = partner[s.first_k[i]];
    const int64_t j = k >= 0 ? s.position[k] : -1;
    if (j >= 0) {
      s.loads.push_back({s.first[i], s.first_k[i] * L, s.second_k[j] * L});
      s.used[j] = 1;
    } else {
      s.unpaired.push_back(i);
    }
  }
  s.both = static_cast<int64_t>(s.loads.size());
  for (const int64_t i : s.unpaired) s.loads.push_back({s.first[i], s.first_k[i] * L, -1});
  s.first_only = static_cast<int64_t>(s.unpaired.size());
  const int64_t step = src.at(y + 1) - src.at(y);
  for (std::size_t j = 0; j < s.second.size(); ++j) {
    if (!s.used[j]) s.loads.push_back({step + s.second[j], -1, s.second_k[j] * L});
  }
}

// The loads of row y alone (a band's edge row).
template <typename T>
void row_loads(const Window& w, int64_t y, const Rows<T>& src, WalkScratch<T>& s) {
  const int64_t L = s.lanes;
  walk_entries(w, y, src, s.first, s.first_k);
  s.loads.clear();
  for (std::size_t i = 0; i < s.first.size(); ++i) {
    s.loads.push_back({s.first[i], s.first_k[i] * L, -1});
  }
  s.both = 0;
  s.first_only = static_cast<int64_t>(s.loads.size());
}

// Holds v in a register. Otherwise GCC folds the load of a neighbour vector into both
// multiply-adds that use it (walk_vectors), loading it twice: measured 30% slower on an Intel
// Xeon with AVX-512. The baseline has no register for a whole vector, so it is left alone.
template <Isa kIsa, typename V>
GRAPHSEG_INLINE V in_register(V v) {
  if constexpr (kIsa != Isa::kBaseline) __asm__("" : "+v"(v));
  return v;
}

// Vectors of columns ahead whose tiles walk_vectors prefetches.
constexpr int64_t kWalkTilesAhead = 2;

// Rows y and (kTwoRows) y + 1 of one vector of columns for kChannels channels: the
// accumulators of both rows stay in registers. `tile` and `tile_second` point at the tiles of
// the two rows (tile_row). The loads read a tile in the order of `s.loads`, not of addresses,
// which the hardware prefetchers do not follow, so the first `ahead` cache lines of the tiles
// kWalkTilesAhead vectors of columns ahead are fetched here, one line of each row per load
// (fetched all at once, the prefetches waited for free fill buffers). About 10% faster on an
// Intel Xeon, 512x512, 21 channels.
template <typename T, Isa kIsa, int kChannels, bool kTwoRows>
GRAPHSEG_INLINE void walk_vectors(const WalkScratch<T>& s, const T* tile, const T* tile_second,
                                  int64_t ahead, const T* centre_c, int64_t in_plane, T* out_c,
                                  T* out_second_c, int64_t out_plane, int64_t lanes) {
  constexpr int64_t kBytes = walk_bytes(kIsa);
  using V = Vec<T, kBytes>;
  constexpr int64_t kLine = kCacheLine / static_cast<int64_t>(sizeof(T));
  const int64_t next = kWalkTilesAhead * s.tile_size;
  V acc[kChannels], acc_second[kChannels];
#pragma GCC unroll 16
  for (int j = 0; j < kChannels; ++j) acc[j] = acc_second[j] = V{};
  const SharedLoad* loads = s.loads.data();
  const int64_t n = static_cast<int64_t>(s.loads.size()), both = s.both;
  const int64_t first_end = both + s.first_only;
  for (int64_t e = 0; e < both; ++e) {
    if (e < ahead) {
      __builtin_prefetch(tile + next + e * kLine);
      __builtin_prefetch(tile_second + next + e * kLine);
    }
    const V cf = load<V>(tile + loads[e].first);
    const V cs = load<V>(tile_second + loads[e].second);
    const T* neighbour = centre_c + loads[e].shift;
#pragma GCC unroll 16
    for (int j = 0; j < kChannels; ++j) {
      const V v = in_register<kIsa>(load<V>(neighbour + j * in_plane));
      acc[j] += cf * v;
      acc_second[j] += cs * v;
    }
  }
  for (int64_t e = both; e < first_end; ++e) {
    if (e < ahead) __builtin_prefetch(tile + next + e * kLine);
    const V cf = load<V>(tile + loads[e].first);
    const T* neighbour = centre_c + loads[e].shift;
#pragma GCC unroll 16
    for (int j = 0; j < kChannels; ++j) acc[j] += cf * load<V>(neighbour + j * in_plane);
  }
  for (int64_t e = first_end; e < n; ++e) {
    const V cs = load<V>(tile_second + loads[e].second);
    const T* neighbour = centre_c + loads[e].shift;
#pragma GCC unroll 16
    for (int j = 0; j < kChannels; ++j) acc_second[j] += cs * load<V>(neighbour + j * in_plane);
  }
  store_channels<T, kChannels, kBytes>(acc, out_c, out_plane, lanes);
  if constexpr (kTwoRows) {
    store_channels<T, kChannels, kBytes>(acc_second, out_second_c, out_plane, lanes);
  }
}

// Channels per group of the walk: the accumulators of both rows, the value and the two
// coefficient vectors stay in registers, 2 x 12 + 3 of AVX-512's 32 (measured on an Intel Xeon
// with 32-byte vectors: 5.5 G multiply-adds per second in a synthetic kernel against 4.6 with
// 6), 2 x 6 + 3 of AVX2's 16.
template <Isa kIsa>
constexpr int kWalkGroup = kIsa == Isa::kAvx512 ? 12 : 6;

// walk_vectors for a group of `size` <= kChannels channels.
template <typename T, Isa kIsa, bool kTwoRows, int kChannels = kWalkGroup<kIsa>, typename... A>
GRAPHSEG_INLINE void walk_group(int64_t size, const A&... args) {
  if constexpr (kChannels > 0) {
    if (size == kChannels) return walk_vectors<T, kIsa, kChannels, kTwoRows>(args...);
    walk_group<T, kIsa, kTwoRows, kChannels - 1>(size, args...);
  }
}

// Row y, and y + 1 if kTwoRows, of one walk step with the loads in `s` (shared_loads,
// row_loads): dst(y) = sum_k coef[k, y] src(y + o_k) over the neighbours inside the image.
template <typename T, Isa kIsa, bool kTwoRows>
GRAPHSEG_INLINE void walk_rows(const Window& w, int64_t y, const T* tiles, const Rows<T>& src,
                               const Rows<T>& dst, const WalkScratch<T>& s) {
  constexpr int64_t L = Simd<T, walk_bytes(kIsa)>::kLanes;
  constexpr int64_t G = kWalkGroup<kIsa>;
  const int64_t C = w.channels, W = w.width;
  const int64_t row_tiles = (W + L - 1) / L * s.tile_size;
  const T* tile = tiles + y * row_tiles;
  const T* tile_second = kTwoRows ? tile + row_tiles : tile;
  const T* centre = src.at(y);
  T* out = dst.at(y);
  T* out_second = kTwoRows ? dst.at(y + 1) : out;
  const int64_t groups = (C + G - 1) / G;
  const int64_t ahead =
      (s.tile_size * static_cast<int64_t>(sizeof(T)) + kCacheLine - 1) / kCacheLine;
  for (int64_t x = 0, t = 0; x < W; x += L, t += s.tile_size) {
    const int64_t lanes = std::min(L, W - x);
    for (int64_t g = 0, c = 0; g < groups; ++g) {
      const int64_t size = (C - c) / (groups - g);
      const int64_t at_in = c * src.plane + x, at_out = c * dst.plane + x;
      c += size;
      walk_group<T, kIsa, kTwoRows>(size, s, tile + t, tile_second + t, g == 0 ? ahead : 0,
                                    centre + at_in, src.plane, out + at_out,
                                    out_second + at_out, dst.plane, lanes);
    }
  }
}

// One band of rows of one pass of the walk (walk_band).
template <typename T>
struct WalkBand {
  const Window& w;
  const T* tiles;  // of the batch item (tile_row)
  const Rows<T>& src;
  const Rows<T>& dst;
  const std::vector<Rows<T>>& rings;
  const std::vector<int64_t>& partner;
  int64_t steps, lag, y0, y1;
  WalkScratch<T>& scratch;
};

// dst = A^steps src on the rows [y0, y1) of one batch item, A the window operator of coef.
// Steps 1 .. steps - 1 keep a ring of lag + ry + 2 rows each (ry the window's vertical reach,
// lag = ry rounded up to even) and run as a wavefront: at time t, step l computes rows
// t - (l - 1) lag and the next, rows whose neighbourhood step l - 1 has completed. The rows of
// each step are thus read back from cache and the weights of a row are read from memory once
// for all the steps. To stay independent of the other bands, step l also computes the
// (steps - l) lag rows beyond each end of the band that the later steps read. With t, y0, y1
// and the lag even, every row is computed with the same partner row (y, y + 1 for y even) in
// every band, so the result does not depend on the bands.
template <typename T, Isa kIsa>
GRAPHSEG_INLINE void walk_band(const WalkBand<T>& band) {
  const Window& w = band.w;
  const int64_t H = w.height, steps = band.steps, lag = band.lag;
  const int64_t t_begin = std::max<int64_t>(0, band.y0 - (steps - 1) * lag);
  const int64_t t_end = band.y1 + (steps - 1) * lag;
  WalkScratch<T>& s = band.scratch;
  for (int64_t t = t_begin; t < t_end; t += 2) {
    for (int64_t l = 1; l <= steps; ++l) {
      const int64_t y = t - (l - 1) * lag;
      const int64_t lo = std::max<int64_t>(0, band.y0 - (steps - l) * lag);
      const int64_t hi = std::min(H, band.y1 + (steps - l) * lag);
      const Rows<T>& from = l == 1 ? band.src : band.rings[l - 2];
      const Rows<T>& to = l == steps ? band.dst : band.rings[l - 1];
      const bool first = y >= lo && y < hi, second = y + 1 >= lo && y + 1 < hi;
      if (first && second) {
        shared_loads(w, y, from, band.partner, s);
        walk_rows<T, kIsa, true>(w, y, band.tiles, from, to, s);
      } else if (first || second) {
        const int64_t row = first ? y : y + 1;
        row_loads(w, row, from, s);
        walk_rows<T, kIsa, false>(w, row, band.tiles, from, to, s);
      }
    }
  }
}

// walk_band compiled for each instruction set, and the one for this CPU (clone_isa).
#if GRAPHSEG_MULTIVERSION && GRAPHSEG_CPU_LEVEL >= 4
template <typename T>
__attribute__((target("arch=x86-64-v4"))) void walk_band_avx512(const WalkBand<T>& band) {
  walk_band<T, Isa::kAvx512>(band);
}
#endif
#if GRAPHSEG_MULTIVERSION && GRAPHSEG_CPU_LEVEL >= 3
template <typename T>
__attribute__((target("arch=x86-64-v3"))) void walk_band_avx2(const WalkBand<T>& band) {
  walk_band<T, Isa::kAvx2>(band);
}
#endif
template <typename T>
void walk_band_for_cpu(const WalkBand<T>& band) {
  switch (cpu_isa) {
#if GRAPHSEG_MULTIVERSION && GRAPHSEG_CPU_LEVEL >= 4
    case Isa::kAvx512:
      return walk_band_avx512<T>(band);
#endif
#if GRAPHSEG_MULTIVERSION && GRAPHSEG_CPU_LEVEL >= 3
    case Isa::kAvx2:
      return walk_band_avx2<T>(band);
#endif
    default:
      return walk_band<T, Isa::kBaseline>(band);
  }
}

// Scratch memory for the staged copies of the inputs, from a one-slot cache: a fresh
// multi-megabyte buffer costs more in page faults (measured ~1.5 us per 4 KiB page here) than
// the copy into it. At most one idle buffer, of at most kMaxCachedBytes, is kept.
constexpr std::size_t kMaxCachedBytes = std::size_t{64} << 20;

struct IdleBuffer {
  std::mutex mutex;
  void* data = nullptr;
  std::size_t bytes = 0;
};

IdleBuffer& idle_buffer() {
  // Never destroyed: the cache must outlive every static destructor that could still run ops.
  static IdleBuffer* idle = new IdleBuffer;
  return *idle;
}

class Scratch {
 public:
  Scratch() = default;
  explicit Scratch(std::size_t bytes) {
    IdleBuffer& idle = idle_buffer();
    {
      std::lock_guard<std::mutex> lock(idle.mutex);
      if (idle.data != nullptr && idle.bytes >= bytes) {
        std::swap(data_, idle.data);
        std::swap(bytes_, idle.bytes);
        return;
      }
    }
    bytes_ = (bytes + kCacheLine - 1) / kCacheLine * kCacheLine;
    data_ = std::aligned_alloc(kCacheLine, bytes_);
    if (data_ == nullptr) throw std::bad_alloc();
  }
  Scratch(Scratch&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}
  Scratch& operator=(Scratch&& other) noexcept {
    std::swap(data_, other.data_);
    std::swap(bytes_, other.bytes_);
    return *this;
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  ~Scratch() {
    if (data_ == nullptr) return;
    IdleBuffer& idle = idle_buffer();
    std::lock_guard<std::mutex> lock(idle.mutex);
    if (bytes_ <= kMaxCachedBytes && bytes_ > idle.bytes) {
      std::swap(data_, idle.data);
      std::swap(bytes_, idle.bytes);
    }
    std::free(data_);
  }
  void* data() const { return data_; }

 private:
  void* data_ = nullptr;
  std::size_t bytes_ = 0;
};

// An input map as the kernels read it: its data, the strides of its planar form, and the
// scratch copy or contiguous tensor that holds the data when it is not the caller's.
struct Input {
  const void* data = nullptr;
  int64_t row = 0, plane = 0;
  Scratch scratch;
  at::Tensor source;
};

// Two-input lane shuffle with constant indices (GCC and Clang spell it differently).
#if defined(__clang__)
#define GRAPHSEG_SHUFFLE(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define GRAPHSEG_SHUFFLE(a, b, ...) __builtin_shuffle(a, b, decltype((a) < (b)){__VA_ARGS__})
#endif

// Transposes a block of L channel rows of L pixels (rows[i] = channel i) into L pixel vectors
// of L channels, in registers: the unpack / shuffle / lane-swap sequence of an AVX transpose.
template <typename T>
GRAPHSEG_INLINE void transpose_block(Vec<T, 32>* rows) {
  using V = Vec<T, 32>;
  if constexpr (Simd<T, 32>::kLanes == 8) {
    V t[8], u[8];
    for (int i = 0; i < 8; i += 2) {
      t[i] = GRAPHSEG_SHUFFLE(rows[i], rows[i + 1], 0, 8, 1, 9, 4, 12, 5, 13);
      t[i + 1] = GRAPHSEG_SHUFFLE(rows[i], rows[i + 1], 2, 10, 3, 11, 6, 14, 7, 15);
    }
    for (int i = 0; i < 8; i += 4) {
      u[i] = GRAPHSEG_SHUFFLE(t[i], t[i + 2], 0, 1, 8, 9, 4, 5, 12, 13);
      u[i + 1] = GRAPHSEG_SHUFFLE(t[i], t[i + 2], 2, 3, 10, 11, 6, 7, 14, 15);
      u[i + 2] = GRAPHSEG_SHUFFLE(t[i + 1], t[i + 3], 0, 1, 8, 9, 4, 5, 12, 13);
      u[i + 3] = GRAPHSEG_SHUFFLE(t[i + 1], t[i + 3], 2, 3, 10, 11, 6, 7, 14, 15);
    }
    for (int i = 0; i < 4; ++i) {
      rows[i] = GRAPHSEG_SHUFFLE(u[i], u[i + 4], 0, 1, 2, 3, 8, 9, 10, 11);
      rows[i + 4] = GRAPHSEG_SHUFFLE(u[i], u[i + 4], 4, 5, 6, 7, 12, 13, 14, 15);
    }
  } else {
    static_assert(Simd<T, 32>::kLanes == 4, "transpose_block handles 8 floats or 4 doubles");
    const V t0 = GRAPHSEG_SHUFFLE(rows[0], rows[1], 0, 4, 2, 6);
    const V t1 = GRAPHSEG_SHUFFLE(rows[0], rows[1], 1, 5, 3, 7);
    const V t2 = GRAPHSEG_SHUFFLE(rows[2], rows[3], 0, 4, 2, 6);
    const V t3 = GRAPHSEG_SHUFFLE(rows[2], rows[3], 1, 5, 3, 7);
    rows[0] = GRAPHSEG_SHUFFLE(t0, t2, 0, 1, 4, 5);
    rows[1] = GRAPHSEG_SHUFFLE(t1, t3, 0, 1, 4, 5);
    rows[2] = GRAPHSEG_SHUFFLE(t0, t2, 2, 3, 6, 7);
    rows[3] = GRAPHSEG_SHUFFLE(t1, t3, 2, 3, 6, 7);
  }
}

// dst (H, W, C) = src (C, H, W) of one batch item for rows [row_begin, row_end), in blocks of
// L channels × L pixels transposed in registers; leftover channels and pixels one by one.
template <typename T>
GRAPHSEG_CLONES void transpose_rows(const T* src, T* dst, int64_t C, int64_t H, int64_t W,
                                    int64_t row_begin, int64_t row_end) {
  using V = Vec<T, 32>;
  constexpr int64_t L = Simd<T, 32>::kLanes;
  const int64_t plane = H * W;
  for (int64_t y = row_begin; y < row_end; ++y) {
    int64_t c0 = 0;
    for (; c0 + L <= C; c0 += L) {
      int64_t x0 = 0;
      for (; x0 + L <= W; x0 += L) {
        V rows[L];
        for (int64_t i = 0; i < L; ++i) rows[i] = load<V>(src + (c0 + i) * plane + y * W + x0);
        transpose_block<T>(rows);
        for (int64_t j = 0; j < L; ++j) store(dst + (y * W + x0 + j) * C + c0, rows[j]);
      }
      for (; x0 < W; ++x0) {
        for (int64_t i = 0; i < L; ++i) {
          dst[(y * W + x0) * C + c0 + i] = src[(c0 + i) * plane + y * W + x0];
        }
      }
    }
    for (int64_t x = 0; x < W && c0 < C; ++x) {
      for (int64_t c = c0; c < C; ++c) dst[(y * W + x) * C + c] = src[c * plane + y * W + x];
    }
  }
}

// A dense channels-last (B, H, W, C) copy of a (B, C, H, W) map. torch's generic strided copy
// (contiguous(ChannelsLast)) took as long as the affinity kernel itself here.
Input channels_last_input(const at::Tensor& image) {
  const int64_t B = image.size(0), C = image.size(1), H = image.size(2), W = image.size(3);
  Input input;
  input.row = W * C;
  input.plane = 1;
  if (image.is_contiguous(at::MemoryFormat::ChannelsLast)) {
    input.data = image.const_data_ptr();
    return input;
  }
  const at::Tensor source = image.contiguous();
  input.scratch = Scratch(static_cast<std::size_t>(image.numel()) * image.element_size());
  input.data = input.scratch.data();
  AT_DISPATCH_FLOATING_TYPES(image.scalar_type(), "graphseg_ext_to_channels_last", [&] {
    const scalar_t* s = source.const_data_ptr<scalar_t>();
    scalar_t* d = static_cast<scalar_t*>(input.scratch.data());
    parallel_for(0, B * H, std::max<int64_t>(1, kGrainWork / std::max<int64_t>(1, W * C)),
                     [&](int64_t begin, int64_t end) {
                       for (int64_t r = begin; r < end;) {
                         const int64_t b = r / H, y0 = r % H, y1 = std::min(H, y0 + (end - r));
                         transpose_rows(s + b * C * H * W, d + b * H * W * C, C, H, W, y0, y1);
                         r += y1 - y0;
                       }
                     });
  });
  return input;
}

// A planar copy of `image` with `pad_left` and `pad_right` zero columns around each row, or the
// image itself when no padding is asked and its strides are safe. Rows (or channel planes) that
// lie a multiple of 256 bytes (4 KiB) apart get one more cache line: otherwise the rows a window
// reads share a few cache sets and evict each other.
Input planar_input(const at::Tensor& image, int64_t pad_left, int64_t pad_right) {
  const int64_t B = image.size(0), C = image.size(1), H = image.size(2), W = image.size(3);
  const int64_t line = kCacheLine / static_cast<int64_t>(image.element_size());
  Input input;
  input.row = pad_left + W + pad_right;
  if (input.row % (4 * line) == 0) input.row += line;
  input.plane = H * input.row;
  if (input.plane % (kCacheLine * line) == 0) input.plane += line;
  if (input.row == W && input.plane == H * W) {
    input.source = image.contiguous();
    input.data = input.source.const_data_ptr();
    return input;
  }
  input.scratch = Scratch(static_cast<std::size_t>(B * C * input.plane) * image.element_size());
  char* base = static_cast<char*>(input.scratch.data());
  const std::vector<int64_t> strides{C * input.plane, input.plane, input.row, 1};
  const auto view = [&](int64_t column, int64_t width) {
    return at::from_blob(base + column * image.element_size(), {B, C, H, width}, strides,
                         image.options());
  };
  view(pad_left, W).copy_(image);
  if (pad_left > 0) view(0, pad_left).zero_();
  view(pad_left + W, input.row - pad_left - W).zero_();
  input.data = base + pad_left * image.element_size();
  return input;
}

bool use_channels_last(const at::Tensor& image) {
  return image.size(1) >= kChannelsLastMinChannels;
}

// The window of `offsets` over `image`; the input strides are set once the input is prepared.
Window make_window(const at::Tensor& image, const at::Tensor& offsets) {
  Window w{image.size(0), image.size(1), image.size(2), image.size(3), offsets.size(0),
           offsets.const_data_ptr<int64_t>(), 0, 0, 0, 0};
  // Offsets as wide as the image never have a neighbour inside it.
  for (int64_t k = 0; k < w.count; ++k) {
    w.reach_left = std::max(w.reach_left, std::min(-w.offsets[2 * k + 1], w.width));
    w.reach_right = std::max(w.reach_right, std::min(w.offsets[2 * k + 1], w.width));
  }
  return w;
}

void set_strides(Window& w, const Input& input) {
  w.row = input.row;
  w.plane = input.plane;
}

int64_t grain_rows(const Window& w, int64_t work_per_pixel) {
  return std::max<int64_t>(1, kGrainWork / std::max<int64_t>(1, w.width * work_per_pixel));
}

// The channels-last pair kernel computes `computed`; with a symmetric pair the `mirrored` entries
// are shifted copies of computed ones (half the arithmetic, which bounds the channels-last case).
struct PairPlan {
  std::vector<int64_t> computed;
  std::vector<Mirror> mirrored;
};

PairPlan plan_pair(const Window& w, bool symmetric) {
  PairPlan plan;
  std::map<std::pair<int64_t, int64_t>, int64_t> index;
  for (int64_t k = 0; k < w.count; ++k) {
    index.emplace(std::make_pair(w.offsets[2 * k], w.offsets[2 * k + 1]), k);
  }
  for (int64_t k = 0; k < w.count; ++k) {
    const auto opposite = index.find({-w.offsets[2 * k], -w.offsets[2 * k + 1]});
    if (symmetric && opposite != index.end() && opposite->second < k) {
      plan.mirrored.push_back({k, opposite->second});
    } else {
      plan.computed.push_back(k);
    }
  }
  return plan;
}

template <typename T, PairKind kKind>
void pair_rows(bool channels_last, const Window& w, const PairPlan& plan, const T* left,
               const T* right, T* out, bool stream, int64_t begin, int64_t end) {
  if (channels_last) {
    pair_channels_last<T, kKind>(w, plan.computed, left, right, out, stream, begin, end);
  } else {
#if GRAPHSEG_MULTIVERSION && GRAPHSEG_CPU_LEVEL >= 4
    if (cpu_isa == Isa::kAvx512) {
      return pair_planar_wide<T, kKind>(w, left, right, out, stream, begin, end);
    }
#endif
    pair_planar<T, kKind>(w, left, right, out, stream, begin, end);
  }
}

// out (B, K, H, W) = pair(left, right) over the window; out is contiguous and checked.
void run_pair(const at::Tensor& left, const at::Tensor& right, const at::Tensor& offsets,
              PairKind kind, const at::Tensor& out) {
  if (out.numel() == 0) return;
  if (left.size(1) == 0) {
    out.zero_();
    return;
  }
  const bool channels_last = use_channels_last(left);
  const bool same = right.is_same(left);
  const auto prepare = [&](const at::Tensor& image) {
    return channels_last ? channels_last_input(image) : planar_input(image, 0, 0);
  };
  const Input l = prepare(left);
  const Input r_copy = same ? Input() : prepare(right);
  const Input& r = same ? l : r_copy;
  const at::Tensor off = offsets.contiguous();
  Window w = make_window(left, off);
  set_strides(w, l);
  // Mirroring reads back planes already written, which only pays where arithmetic dominates.
  const PairPlan plan = plan_pair(w, channels_last && same);
  const bool stream = out.nbytes() > kStreamBytes;
  AT_DISPATCH_FLOATING_TYPES(left.scalar_type(), "graphseg_ext_pair", [&] {
    const scalar_t* lp = static_cast<const scalar_t*>(l.data);
    const scalar_t* rp = static_cast<const scalar_t*>(r.data);
    scalar_t* op = out.mutable_data_ptr<scalar_t>();
    parallel_for(0, w.batch * w.height, grain_rows(w, w.count * w.channels),
                     [&](int64_t begin, int64_t end) {
                       switch (kind) {
                         case PairKind::L1:
                           return pair_rows<scalar_t, PairKind::L1>(channels_last, w, plan, lp,
                                                                    rp, op, stream, begin, end);
                         case PairKind::L2:
                           return pair_rows<scalar_t, PairKind::L2>(channels_last, w, plan, lp,
                                                                    rp, op, stream, begin, end);
                         case PairKind::Dot:
                           return pair_rows<scalar_t, PairKind::Dot>(channels_last, w, plan, lp,
                                                                     rp, op, stream, begin, end);
                       }
                     });
    if (!plan.mirrored.empty()) {
      parallel_for(0, w.batch * w.height, grain_rows(w, w.count),
                       [&](int64_t begin, int64_t end) {
                         mirror_rows<scalar_t>(w, plan.mirrored, op, stream, begin, end);
                       });
    }
  });
}

// out (B, C, H, W) = the gather `mode` of coef (B, K, H, W) and values (B, C, H, W).
void run_gather(const at::Tensor& coef, const at::Tensor& values, const at::Tensor& offsets,
                Gather mode, const at::Tensor& out) {
  if (out.numel() == 0) return;
  const at::Tensor cf = coef.contiguous();
  const at::Tensor off = offsets.contiguous();
  Window w = make_window(values, off);
  // The forward pass reads x + dx, the backward pass x - dx; the planar kernel reads whole
  // vectors of columns, up to one staged line past the last column.
  const bool forward = mode != Gather::Transpose, backward = mode != Gather::Aggregate;
  int64_t pad_left = std::max(forward ? w.reach_left : 0, backward ? w.reach_right : 0);
  int64_t pad_right = std::max(forward ? w.reach_right : 0, backward ? w.reach_left : 0) +
                      kCacheLine / static_cast<int64_t>(values.element_size());
  [[maybe_unused]] bool wide = false;
#if GRAPHSEG_MULTIVERSION && GRAPHSEG_CPU_LEVEL >= 4
  // The AVX-512 aggregate reads 16 columns on either side of each vector of 16 columns.
  wide = cpu_isa == Isa::kAvx512 && mode == Gather::Aggregate &&
         values.scalar_type() == at::kFloat && w.reach_left <= kWideLeft &&
         w.reach_right <= kWideRight;
  if (wide) {
    pad_left = kWideLeft;
    pad_right = 2 * kWideLeft;
  }
#endif
  const Input v = planar_input(values, pad_left, pad_right);
  set_strides(w, v);
#if GRAPHSEG_MULTIVERSION && GRAPHSEG_CPU_LEVEL >= 4
  if (wide) {
    const float* cp = cf.const_data_ptr<float>();
    const float* vp = static_cast<const float*>(v.data);
    float* op = out.mutable_data_ptr<float>();
    parallel_for(0, w.batch * w.height, grain_rows(w, w.count * w.channels),
                     [&](int64_t begin, int64_t end) {
                       aggregate_wide(w, cp, vp, op, begin, end);
                     });
    return;
  }
#endif
  const int64_t passes = forward && backward ? 2 : 1;
  AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "graphseg_ext_gather", [&] {
    const scalar_t* cp = cf.const_data_ptr<scalar_t>();
    const scalar_t* vp = static_cast<const scalar_t*>(v.data);
    scalar_t* op = out.mutable_data_ptr<scalar_t>();
    parallel_for(
        0, w.batch * w.height, grain_rows(w, passes * w.count * w.channels),
        [&](int64_t begin, int64_t end) {
          switch (mode) {
            case Gather::Aggregate:
              return gather_planar<scalar_t, Term::Value, true, false>(w, cp, vp, op,
                                                                     begin, end);
            case Gather::Transpose:
              return gather_planar<scalar_t, Term::Value, false, true>(w, cp, vp, op,
                                                                     begin, end);
            case Gather::L1Grad:
              return gather_planar<scalar_t, Term::Sign, true, true>(w, cp, vp, op,
                                                                   begin, end);
            case Gather::L2Grad:
              return gather_planar<scalar_t, Term::Diff2, true, true>(w, cp, vp, op,
                                                                    begin, end);
            case Gather::DotGrad:
              return gather_planar<scalar_t, Term::Value, true, true>(w, cp, vp, op,
                                                                    begin, end);
          }
        });
  });
}

// A fresh output, advised to be backed by 2 MiB pages: faulting a large output in 4 KiB at a
// time costs more than computing it (measured here for 80 MiB: ~40 ms of page faults against
// ~6 ms of kernel, ~10 ms in all with huge pages). A hint only, as torch's own
// THP_MEM_ALLOC_ENABLE: nothing changes where transparent huge pages are off.
at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& options) {
  at::Tensor out = at::empty(sizes, options);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr std::uintptr_t kHugePage = std::uintptr_t{2} << 20;
  const auto begin = reinterpret_cast<std::uintptr_t>(out.data_ptr());
  const std::uintptr_t first = (begin + kHugePage - 1) & ~(kHugePage - 1);
  const std::uintptr_t last = (begin + out.nbytes()) & ~(kHugePage - 1);
  if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
#endif
  return out;
}

// Steps per pass of window_aggregate_power: a pass reads the weights and the values from memory
// once, whatever its number of steps, so more steps save memory traffic until the wavefront
// (rings and weight rows) outgrows the cache or the band halos add too much arithmetic. The walk
// is bound by arithmetic from 2 steps per pass on: measured on a shared 2-core AMD EPYC (512²,
// 21 classes, disk r = 5), CPU time per step was within noise for 1 to 4 steps per pass and
// 15-25% higher for 6 and 8, whose wavefront no longer stays in the L3 share of the machine.
constexpr int64_t kWalkMaxStepsPerPass = 4;
// Bytes the wavefront of one thread may hold: its share of a 32 MiB L3 with room to spare.
constexpr int64_t kWalkCacheBytes = int64_t{8} << 20;
// Rows below which a band is not worth a thread of its own (its halos would dominate).
constexpr int64_t kWalkMinBandRows = 32;

// The most steps per pass whose wavefront fits kWalkCacheBytes: (steps - 1) rings of `ring` rows
// of all channels, and the weights of the (steps - 1) lag + 1 rows that the steps read at once.
int64_t walk_steps_per_pass(const Window& w, int64_t lag, int64_t ring, int64_t element) {
  for (int64_t steps = kWalkMaxStepsPerPass; steps > 1; --steps) {
    const int64_t rings = (steps - 1) * ring * w.channels * w.row * element;
    const int64_t weights = ((steps - 1) * lag + 1) * w.count * w.width * element;
    if (rings + weights <= kWalkCacheBytes) return steps;
  }
  return 1;
}

// Moves the band boundaries halfway towards rows in proportion to the speed of each band in the
// last pass (rows per second; seconds[band], one task per thread). On a shared machine one core
// can run much slower than the other (measured on a 2-core Intel Xeon: 24 against 18 G
// multiply-adds per second for the same work), and with fixed bands the faster thread waited
// at the end of every pass. Boundaries stay even and bands at least kWalkMinBandRows high.
void rebalance_bands(std::vector<int64_t>& cuts, const std::vector<double>& seconds) {
  const int64_t bands = static_cast<int64_t>(cuts.size()) - 1, H = cuts[bands];
  if (bands < 2) return;
  std::vector<double> rate(bands);
  double total = 0;
  for (int64_t band = 0; band < bands; ++band) {
    rate[band] = (cuts[band + 1] - cuts[band]) / std::max(seconds[band], 1e-9);
    total += rate[band];
  }
  std::vector<int64_t> next(cuts);
  double at = 0;
  for (int64_t band = 1; band < bands; ++band) {
    at += 0.5 * ((cuts[band] - cuts[band - 1]) + H * rate[band - 1] / total);
    const int64_t low = next[band - 1] + kWalkMinBandRows;
    const int64_t high = (H - (bands - band) * kWalkMinBandRows) / 2 * 2;
    next[band] = std::clamp<int64_t>(std::llround(at / 2) * 2, low, high);
  }
  cuts = next;
}

// out = A^num_steps values, A the window operator of coef (window_aggregate applied num_steps
// times), in passes of several steps over bands of rows (walk_band).
void run_walk(const at::Tensor& coef, const at::Tensor& values, const at::Tensor& offsets,
              int64_t num_steps, int64_t steps_per_pass, const at::Tensor& out) {
  if (out.numel() == 0) return;
  if (num_steps == 0) {
    out.copy_(values);
    return;
  }
  const at::Tensor cf = coef.contiguous();
  const at::Tensor off = offsets.contiguous();
  Window w = make_window(values, off);
  const int64_t element = values.element_size();
  // Two padded maps that the passes read and write in turn; the padding stays zero.
  const Input first = planar_input(values, w.reach_left,
                                   w.reach_right + kCacheLine / element);
  set_strides(w, first);
  const int64_t B = w.batch, C = w.channels, H = w.height, W = w.width, K = w.count;
  const std::size_t map_bytes = static_cast<std::size_t>(B * C * w.plane * element);
  Scratch second_map(map_bytes);
  std::memset(second_map.data(), 0, map_bytes);
  int64_t ry = 0;
  for (int64_t k = 0; k < K; ++k) ry = std::max(ry, std::min(std::abs(w.offsets[2 * k]), H));
  const int64_t lag = ry + ry % 2;
  const int64_t ring = lag + ry + 2;
  // partner[k]: the entry whose offset is o_k - (1, 0), or -1 (shared_loads).
  std::vector<int64_t> partner(K, -1);
  for (int64_t k = 0; k < K; ++k) {
    for (int64_t j = 0; j < K; ++j) {
      if (w.offsets[2 * j] == w.offsets[2 * k] - 1 && w.offsets[2 * j + 1] == w.offsets[2 * k + 1]) {
        partner[k] = j;
        break;
      }
    }
  }
  const int64_t per_pass = std::min(
      num_steps, steps_per_pass > 0 ? steps_per_pass : walk_steps_per_pass(w, lag, ring, element));
  const int64_t passes = (num_steps + per_pass - 1) / per_pass;
  const int64_t threads = at::get_num_threads();
  const int64_t bands =
      std::max<int64_t>(1, std::min((threads + B - 1) / B, H / kWalkMinBandRows));
  const int64_t ring_size = ring * C * w.row;
  // Band boundaries, even (walk_band), rebalanced after every pass.
  std::vector<int64_t> cuts(bands + 1, H);
  for (int64_t band = 0; band < bands; ++band) cuts[band] = band * H / bands / 2 * 2;
  std::vector<double> seconds(B * bands, 0.0);
  AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "graphseg_ext_walk", [&] {
    using T = scalar_t;
    T* maps[2] = {const_cast<T*>(static_cast<const T*>(first.data)),
                  static_cast<T*>(second_map.data()) + w.reach_left};
    // Rings of every band, zero-filled once: their padding columns are never written.
    std::vector<T> ring_store(static_cast<std::size_t>(B * bands * (per_pass - 1) * ring_size));
    const T* cp = cf.const_data_ptr<T>();
    const int64_t L = walk_bytes(cpu_isa) / static_cast<int64_t>(sizeof(T));
    const int64_t item_tiles = H * ((W + L - 1) / L) * K * L;
    const at::Tensor tiles = empty_output({B * item_tiles}, values.options());
    T* tp = tiles.mutable_data_ptr<T>();
    parallel_for(0, B * H, std::max<int64_t>(1, kGrainWork / (K * W)),
                 [&](int64_t begin, int64_t end) {
                   for (int64_t r = begin; r < end; ++r) {
                     tile_row<T>(w, L, cp + r / H * K * H * W, tp + r / H * item_tiles, r % H);
                   }
                 });
    T* op = out.mutable_data_ptr<T>();
    for (int64_t pass = 0; pass < passes; ++pass) {
      const int64_t steps = num_steps / passes + (pass < num_steps % passes ? 1 : 0);
      const bool last = pass + 1 == passes;
      const T* src = maps[pass % 2];
      T* dst = maps[(pass + 1) % 2];
      parallel_for(0, B * bands, 1, [&](int64_t begin, int64_t end) {
        const auto start = std::chrono::steady_clock::now();
        WalkScratch<T> scratch(K, L);
        std::vector<Rows<T>> rings;
        for (int64_t task = begin; task < end; ++task) {
          const int64_t b = task / bands, band = task % bands;
          T* store = ring_store.data() + task * (per_pass - 1) * ring_size + w.reach_left;
          rings.clear();
          for (int64_t l = 0; l + 1 < steps; ++l) {
            rings.push_back({store + l * ring_size, w.row, ring * w.row, ring});
          }
          const Rows<T> from{const_cast<T*>(src) + b * C * w.plane, w.row, w.plane, 0};
          const Rows<T> to = last ? Rows<T>{op + b * C * H * W, W, H * W, 0}
                                  : Rows<T>{dst + b * C * w.plane, w.row, w.plane, 0};
          walk_band_for_cpu<T>({w, tp + b * item_tiles, from, to, rings, partner, steps, lag,
                                cuts[band], cuts[band + 1], scratch});
        }
        seconds[begin] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
                             .count();
      });
      if (B == 1) rebalance_bands(cuts, seconds);
    }
  });
}

// The CPU backend of WindowOps.
struct Cpu {
  static at::Tensor empty(at::IntArrayRef sizes, const at::TensorOptions& options) {
    return empty_output(sizes, options);
  }
  static void pair(const at::Tensor& left, const at::Tensor& right, const at::Tensor& offsets,
                   PairKind kind, const at::Tensor& out) {
    run_pair(left, right, offsets, kind, out);
  }
  static void gather(const at::Tensor& coef, const at::Tensor& values, const at::Tensor& offsets,
                     Gather gather, const at::Tensor& out) {
    run_gather(coef, values, offsets, gather, out);
  }
  static void power(const at::Tensor& coef, const at::Tensor& values, const at::Tensor& offsets,
                    int64_t num_steps, int64_t steps_per_pass, const at::Tensor& out) {
    run_walk(coef, values, offsets, num_steps, steps_per_pass, out);
  }
};

// The clone that the loader picks on this CPU.
const char* clone_name() {
  switch (cpu_isa) {
    case Isa::kAvx512:
      return "x86-64-v4 (AVX-512)";
    case Isa::kAvx2:
      return "x86-64-v3 (AVX2, FMA)";
    default:
      return GRAPHSEG_MULTIVERSION ? "default (baseline x86-64)" : "single build (no clones)";
  }
}

}  // namespace

std::string cpu_clone() { return clone_name(); }

TORCH_LIBRARY_IMPL(graphseg_ext, CPU, m) {
  WindowOps<Cpu>::register_kernels(m);
  m.impl("window_aggregate_power", &WindowOps<Cpu>::window_aggregate_power);
}

}  // namespace graphseg_ext
