// at::parallel_for with subnormal floats flushed to zero in every thread that runs the work.
//
// Graphs built from real images hold subnormal weights: exp(-d) of a far colour or feature
// distance falls below FLT_MIN (0.8% of the weights of the 512x512 astronaut's disk-5 graph).
// Intel CPUs take a microcode assist for every multiply-add with a subnormal operand or result,
// which made one window aggregation of that graph 5x slower than of the same weights without
// them (79 against 15 ms). The kernels here therefore run with the SSE control register's
// flush-to-zero and denormals-are-zero bits set, as GPUs do by default: a subnormal operand reads
// as 0 and a subnormal result is written as 0, a change below 1.2e-38 (float32) or 2.3e-308
// (float64) per operation. The caller's register is restored afterwards.
#pragma once

#include <ATen/Parallel.h>

#include <cstdint>

#if defined(__x86_64__) || defined(_M_X64)
#include <xmmintrin.h>
#endif

namespace graphseg_ext {

class FlushSubnormals {
 public:
#if defined(__x86_64__) || defined(_M_X64)
  // FTZ (bit 15) and DAZ (bit 6) of MXCSR
  static constexpr unsigned kBits = 0x8040;
  FlushSubnormals() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | kBits); }
  ~FlushSubnormals() { _mm_setcsr(saved_); }

 private:
  unsigned saved_;

 public:
#else
  FlushSubnormals() = default;
#endif
  FlushSubnormals(const FlushSubnormals&) = delete;
  FlushSubnormals& operator=(const FlushSubnormals&) = delete;
};

// at::parallel_for(begin, end, grain, f), each chunk run under FlushSubnormals.
template <typename F>
void parallel_for(int64_t begin, int64_t end, int64_t grain, const F& f) {
  at::parallel_for(begin, end, grain, [&](int64_t chunk_begin, int64_t chunk_end) {
    FlushSubnormals flush;
    f(chunk_begin, chunk_end);
  });
}

}  // namespace graphseg_ext
