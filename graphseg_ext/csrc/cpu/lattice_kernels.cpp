// CPU kernels of the permutohedral lattice (Adams, Baek & Davis, "Fast High-Dimensional
// Filtering Using the Permutohedral Lattice", Eurographics 2010): its construction from float64
// features, the filter splat -> blur -> slice, and the filter's diagonal.
//
// The construction repeats the tensor-op reference of graphseg/propagate/lattice.py step by step
// (the same elevation, enclosing simplex, ranks and barycentric weights, in the same float64
// operations), so both build the same lattice; only the numbering of the vertices differs: here
// a hash table numbers them, there sorted integer codes. The table is split into one shard per
// thread by the high bits of each vertex's hash, so that the threads insert without locks.
// The construction and the diagonal are instantiated for d = 2, 3 and 5 (the CRF's position and
// position + colour features) and for any d up to kMaxDim at run time; the filters for 1..4
// channels (unrolled) and any count at run time (blocks of 8 channels as vectors, compiled for
// AVX2 and for the baseline). Each filter step starts threads only where its work outweighs
// waiting for them.
#include "lattice_ops.h"
#include "parallel.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/full.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <tuple>
#include <type_traits>
#include <vector>

namespace graphseg_ext {
namespace {

// The filter loops are compiled for AVX2 + FMA and for the baseline, the loader picks one per
// CPU (GCC function multiversioning); the binary must run on any x86-64.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define LATTICE_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define LATTICE_CLONES
#endif

// Points per chunk of a thread in the construction: below this a chunk is not worth a thread.
constexpr int64_t kGrainPoints = 2048;
// Multiply-adds below which a filter step runs on one thread: starting the threads and waiting
// for them costs more than the step (much more on a busy machine, where a waiting thread may
// lose its time slice).
constexpr int64_t kParallelWork = int64_t{1} << 18;

// A vertex of the lattice: its first d coordinates (the last one is minus their sum).
template <int D>
struct Dim {
  // Compile-time d where the kernel was instantiated for one, else the run-time value.
  static int get(int runtime) { return D > 0 ? D : runtime; }
};

template <int D>
inline uint32_t hash_key(const int32_t* key, int d) {
  const int dim = Dim<D>::get(d);
  uint64_t h = 0x84222325cbf29ce4ull;
  for (int c = 0; c < dim; ++c) {
    h = (h ^ static_cast<uint32_t>(key[c])) * 0x9E3779B97F4A7C15ull;
  }
  return static_cast<uint32_t>(h >> 32);
}

template <int D>
inline bool same_key(const int32_t* a, const int32_t* b, int d) {
  const int dim = Dim<D>::get(d);
  for (int c = 0; c < dim; ++c) {
    if (a[c] != b[c]) return false;
  }
  return true;
}

// The shard that holds a vertex: the high bits of its hash (the table slots use the low ones).
inline int shard_of(uint32_t hash, int shards) {
  return static_cast<int>((static_cast<uint64_t>(hash) * static_cast<uint64_t>(shards)) >> 32);
}

// One shard of the vertex table: open addressing with linear probing, at most half full, and
// a small direct-mapped cache of the vertices met last (neighbouring points share most of their
// vertices; the cache stays in L1 where the table does not).
struct Shard {
  struct Slot {
    uint32_t hash;
    int32_t id;  // -1: empty
  };
  static constexpr uint32_t kRecent = 256;
  std::vector<Slot> slots;
  std::vector<Slot> recent;
  std::vector<int32_t> keys;  // d coordinates per vertex, in the order of their ids
  int32_t size = 0;

  explicit Shard(int64_t capacity) : slots(capacity, Slot{0, -1}), recent(kRecent, Slot{0, -1}) {}

  template <int D>
  int32_t insert_cached(const int32_t* key, uint32_t hash, int d) {
    Slot& last = recent[hash & (kRecent - 1)];
    if (last.id >= 0 && last.hash == hash &&
        same_key<D>(&keys[static_cast<int64_t>(last.id) * d], key, d)) {
      return last.id;
    }
    last = Slot{hash, insert<D>(key, hash, d)};
    return last.id;
  }

  template <int D>
  int32_t find(const int32_t* key, uint32_t hash, int d) const {
    const uint64_t mask = slots.size() - 1;
    for (uint64_t at = hash & mask;; at = (at + 1) & mask) {
      const Slot& slot = slots[at];
      if (slot.id < 0) return -1;
      if (slot.hash == hash && same_key<D>(&keys[static_cast<int64_t>(slot.id) * d], key, d)) {
        return slot.id;
      }
    }
  }

  template <int D>
  int32_t insert(const int32_t* key, uint32_t hash, int d) {
    const uint64_t mask = slots.size() - 1;
    for (uint64_t at = hash & mask;; at = (at + 1) & mask) {
      Slot& slot = slots[at];
      if (slot.id < 0) {
        slot = Slot{hash, size};
        keys.insert(keys.end(), key, key + d);
        if (2 * static_cast<int64_t>(++size) > static_cast<int64_t>(slots.size())) grow();
        return size - 1;
      }
      if (slot.hash == hash && same_key<D>(&keys[static_cast<int64_t>(slot.id) * d], key, d)) {
        return slot.id;
      }
    }
  }

  void grow() {
    std::vector<Slot> old(2 * slots.size(), Slot{0, -1});
    old.swap(slots);
    const uint64_t mask = slots.size() - 1;
    for (const Slot& slot : old) {
      if (slot.id < 0) continue;
      uint64_t at = slot.hash & mask;
      while (slots[at].id >= 0) at = (at + 1) & mask;
      slots[at] = slot;
    }
  }
};

// floor(x) without the library call that baseline x86-64 makes of std::floor (no SSE4.1).
inline double round_down(double x) {
  if (!(std::abs(x) < 0x1p52)) return std::floor(x);
  const double truncated = static_cast<double>(static_cast<int64_t>(x));
  return truncated > x ? truncated - 1 : truncated;
}

// Per point: the remainder-0 point and ranks of its simplex (first d coordinates), its
// barycentric weights and the hash of each of its d + 1 vertices. Any |coordinate| beyond
// kCoordLimit sets `overflow` (the keys are int32).
template <int D>
void embed_points(const double* features, const double* factor, int d, int64_t begin,
                  int64_t end, int32_t* rem0_out, uint8_t* rank_out, double* weight,
                  uint32_t* hashes, std::atomic<bool>& overflow) {
  const int dim = Dim<D>::get(d);
  const int n1 = dim + 1;
  const double scale = n1;
  double scaled[kMaxDim], elevated[kMaxDim + 1], rem0[kMaxDim + 1], delta[kMaxDim + 1];
  double bary[kMaxDim + 2];
  int rank[kMaxDim + 1];
  int32_t key[kMaxDim];
  bool too_far = false;
  for (int64_t i = begin; i < end; ++i) {
    const double* f = features + i * dim;
    // elevation onto the plane sum x = 0 (lattice.py, _elevate)
    for (int c = 0; c < dim; ++c) scaled[c] = f[c] * factor[c];
    double suffix = 0;
    elevated[dim] = 0;
    for (int c = dim - 1; c >= 0; --c) {
      suffix += scaled[c];
      elevated[c] = suffix;
    }
    for (int c = dim; c >= 1; --c) elevated[c] -= static_cast<double>(c) * scaled[c - 1];
    // the nearest remainder-0 point and the ranks (lattice.py, _enclosing_simplex)
    double sum = 0;
    for (int c = 0; c <= dim; ++c) {
      const double quotient = elevated[c] / scale;
      const double low = round_down(quotient);
      const double down = low * scale;
      const double up = (low == quotient ? low : low + 1) * scale;
      rem0[c] = up - elevated[c] < elevated[c] - down ? up : down;
      sum += rem0[c];
    }
    const double quotient = sum / scale;  // an integer: every rem0 is a multiple of d + 1
    const int total = static_cast<int>(quotient + (quotient < 0 ? -0.5 : 0.5));
    for (int c = 0; c <= dim; ++c) delta[c] = elevated[c] - rem0[c];
    for (int c = 0; c <= dim; ++c) {
      int r = 0;
      for (int j = 0; j <= dim; ++j) r += delta[j] > delta[c] || (j < c && delta[j] == delta[c]);
      rank[c] = r;
    }
    for (int c = 0; c <= dim; ++c) {
      const bool high = total > 0 && rank[c] >= n1 - total;
      const bool low = total < 0 && rank[c] < -total;
      rem0[c] += high ? -scale : low ? scale : 0.0;
      rank[c] += total + (high ? -n1 : low ? n1 : 0);
    }
    // barycentric coordinates (Adams et al., Alg. 1)
    for (int k = 0; k <= dim + 1; ++k) bary[k] = 0;
    for (int c = 0; c <= dim; ++c) delta[c] = (elevated[c] - rem0[c]) / scale;
    for (int c = 0; c <= dim; ++c) bary[dim - rank[c]] += delta[c];
    for (int c = 0; c <= dim; ++c) bary[dim + 1 - rank[c]] += -delta[c];
    bary[0] += 1 + bary[dim + 1];
    for (int k = 0; k <= dim; ++k) weight[i * n1 + k] = bary[k];
    for (int c = 0; c < dim; ++c) {
      too_far |= !(std::abs(rem0[c]) <= kCoordLimit);
      rem0_out[i * dim + c] = too_far ? 0 : static_cast<int32_t>(rem0[c]);
      rank_out[i * dim + c] = static_cast<uint8_t>(rank[c]);
    }
    // vertex k: rem0 plus the canonical simplex's vertex k permuted by the ranks
    for (int k = 0; k <= dim; ++k) {
      for (int c = 0; c < dim; ++c) {
        key[c] = rem0_out[i * dim + c] + (rank[c] <= dim - k ? k : k - n1);
      }
      hashes[i * n1 + k] = hash_key<D>(key, dim);
    }
  }
  if (too_far) overflow = true;
}

// The vertices of every point whose vertex hashes fall in `shard`, inserted into its table;
// `index` gets their ids within the shard.
template <int D>
void insert_shard(Shard& table, int shard, int shards, const int32_t* rem0,
                  const uint8_t* rank, const uint32_t* hashes, int d, int64_t num_points,
                  int32_t* index) {
  const int dim = Dim<D>::get(d);
  const int n1 = dim + 1;
  int32_t key[kMaxDim];
  for (int64_t i = 0; i < num_points; ++i) {
    for (int k = 0; k <= dim; ++k) {
      const uint32_t hash = hashes[i * n1 + k];
      if (shard_of(hash, shards) != shard) continue;
      for (int c = 0; c < dim; ++c) {
        key[c] = rem0[i * dim + c] + (rank[i * dim + c] <= dim - k ? k : k - n1);
      }
      index[i * n1 + k] = table.insert_cached<D>(key, hash, dim);
    }
  }
}

// The neighbours of vertices [begin, end) along each direction j, (d + 1, 2, M): below, every
// coordinate +1 and coordinate j -(d + 1) (direction d: its coordinate is the implicit last
// one); above, the opposite step, so that u is below v exactly where v is above u: each found
// pair fills both (`neighbours` starts as M, no such vertex, everywhere).
template <int D>
void find_neighbours(const std::vector<Shard>& tables, const std::vector<int32_t>& first,
                     const int32_t* keys, int d, int64_t begin, int64_t end, int64_t num_vertices,
                     int32_t* neighbours) {
  const int dim = Dim<D>::get(d);
  const int n1 = dim + 1;
  const int shards = static_cast<int>(tables.size());
  int32_t key[kMaxDim];
  for (int64_t v = begin; v < end; ++v) {
    const int32_t* own = keys + v * dim;
    for (int j = 0; j <= dim; ++j) {
      for (int c = 0; c < dim; ++c) key[c] = own[c] + (c == j ? 1 - n1 : 1);
      const uint32_t hash = hash_key<D>(key, dim);
      const int shard = shard_of(hash, shards);
      const int32_t id = tables[shard].find<D>(key, hash, dim);
      if (id >= 0) {
        const int64_t below = first[shard] + id;
        neighbours[2 * j * num_vertices + v] = static_cast<int32_t>(below);
        neighbours[(2 * j + 1) * num_vertices + below] = static_cast<int32_t>(v);
      }
    }
  }
}

template <int D>
std::tuple<at::Tensor, at::Tensor, at::Tensor> build(const at::Tensor& features) {
  const int64_t n = features.size(0);
  const int d = static_cast<int>(features.size(1));
  const int n1 = d + 1;
  const auto ints = features.options().dtype(at::kInt);
  at::Tensor index = at::empty({n, n1}, ints);
  at::Tensor weight = at::empty({n, n1}, features.options());
  std::vector<double> factor(d);
  for (int c = 0; c < d; ++c) {
    factor[c] = n1 * std::sqrt(2.0 / 3.0) / std::sqrt(static_cast<double>((c + 1) * (c + 2)));
  }
  // scratch, not value-initialised (every entry is written before it is read)
  std::unique_ptr<int32_t[]> rem0(new int32_t[n * d]);
  std::unique_ptr<uint8_t[]> rank(new uint8_t[n * d]);
  std::unique_ptr<uint32_t[]> hashes(new uint32_t[n * n1]);
  std::atomic<bool> overflow{false};
  const double* f = features.data_ptr<double>();
  parallel_for(0, n, kGrainPoints, [&](int64_t begin, int64_t end) {
    embed_points<D>(f, factor.data(), d, begin, end, rem0.get(), rank.get(),
                    weight.data_ptr<double>(), hashes.get(), overflow);
  });
  TORCH_CHECK_VALUE(!overflow, "lattice_build: features too large for int32 lattice "
                    "coordinates (|elevated feature| beyond 2^30)");

  const int shards = static_cast<int>(
      std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), n / kGrainPoints)));
  std::vector<Shard> tables(shards, Shard(1024));
  int32_t* idx = index.data_ptr<int32_t>();
  parallel_for(0, shards, 1, [&](int64_t begin, int64_t end) {
    for (int64_t s = begin; s < end; ++s) {
      insert_shard<D>(tables[s], static_cast<int>(s), shards, rem0.get(), rank.get(),
                      hashes.get(), d, n, idx);
    }
  });
  std::vector<int32_t> first(shards + 1, 0);
  for (int s = 0; s < shards; ++s) {
    TORCH_CHECK_VALUE(static_cast<int64_t>(first[s]) + tables[s].size < INT32_MAX,
                      "lattice_build: more than 2^31 lattice vertices");
    first[s + 1] = first[s] + tables[s].size;
  }
  const int64_t m = first[shards];
  std::vector<int32_t> keys(m * d);
  for (int s = 0; s < shards; ++s) {
    std::copy(tables[s].keys.begin(), tables[s].keys.end(), keys.begin() + first[s] * d);
  }
  parallel_for(0, n, kGrainPoints, [&](int64_t begin, int64_t end) {
    for (int64_t e = begin * n1; e < end * n1; ++e) idx[e] += first[shard_of(hashes[e], shards)];
  });
  at::Tensor neighbours = at::full({n1, 2, m}, m, ints);
  parallel_for(0, m, kGrainPoints, [&](int64_t begin, int64_t end) {
    find_neighbours<D>(tables, first, keys.data(), d, begin, end, m,
                       neighbours.data_ptr<int32_t>());
  });
  return {index, weight, neighbours};
}

// Filter kernels over a range of points or vertices, for CK channels (0: `channels` at run
// time). Values and outputs are (N, C) with any strides (the CRF keeps its classes planar);
// lattice rows are contiguous (row_length below), row M being the empty neighbour (always 0).
struct Strided {
  int64_t point, channel;
};

// Channels per block of the filter loops, and the length of a lattice row: CK exactly for the
// unrolled channel counts, else rounded up to whole blocks of 8 (one AVX vector of floats;
// the padding is 0), so that every inner loop has a constant length the compiler vectorises.
template <int CK>
constexpr int64_t kBlock = CK > 0 ? CK : 8;

template <int CK>
inline int64_t row_length(int64_t channels) {
  return CK > 0 ? CK : (channels + kBlock<CK> - 1) / kBlock<CK> * kBlock<CK>;
}

// Blocks of B values as one GNU vector where B is 8 (the run-time channel counts), so that
// GCC keeps them in vector registers; element by element for the unrolled counts.
template <typename T, int64_t B>
struct BlockOps {
  static constexpr bool kVector = B == 8;
  // a typedef: GCC drops vector_size from a dependent alias declaration
  typedef T V __attribute__((vector_size(8 * sizeof(T))));
  static_assert(!kVector || sizeof(V) == B * sizeof(T), "a block is one vector");

  // target += w * source
  static inline __attribute__((always_inline)) void add_scaled(T* target, T w, const T* source) {
    if constexpr (kVector) {
      V t, v;
      std::memcpy(&t, target, sizeof(V));
      std::memcpy(&v, source, sizeof(V));
      t += w * v;
      std::memcpy(target, &t, sizeof(V));
    } else {
      for (int64_t c = 0; c < B; ++c) target[c] += w * source[c];
    }
  }

  // out = own + (below + above) / 2
  static inline __attribute__((always_inline)) void blur(T* out, const T* own, const T* below,
                                                         const T* above) {
    if constexpr (kVector) {
      V o, b, a;
      std::memcpy(&o, own, sizeof(V));
      std::memcpy(&b, below, sizeof(V));
      std::memcpy(&a, above, sizeof(V));
      o += T(0.5) * (b + a);
      std::memcpy(out, &o, sizeof(V));
    } else {
      for (int64_t c = 0; c < B; ++c) out[c] = own[c] + T(0.5) * (below[c] + above[c]);
    }
  }
};

template <typename T, int CK>
LATTICE_CLONES void splat(const T* __restrict values, Strided stride,
                          const int32_t* __restrict index, const T* __restrict weight, int n1,
                          int64_t channels, int64_t begin, int64_t end, T* __restrict lattice) {
  // a block of the point's channels is gathered once (planar values are one plane per
  // channel), then added to each vertex's row
  constexpr int64_t B = kBlock<CK>;
  const int64_t row = row_length<CK>(channels);
  T local[B];
  for (int64_t i = begin; i < end; ++i) {
    for (int64_t c0 = 0; c0 < row; c0 += B) {
      const T* v = values + i * stride.point + c0 * stride.channel;
      for (int64_t c = 0; c < B; ++c) {
        local[c] = c0 + c < channels ? v[c * stride.channel] : T(0);
      }
      for (int k = 0; k < n1; ++k) {
        const T w = weight[i * n1 + k];
        BlockOps<T, B>::add_scaled(lattice + static_cast<int64_t>(index[i * n1 + k]) * row + c0,
                                   w, local);
      }
    }
  }
}

template <typename T, int CK>
LATTICE_CLONES void blur(const T* __restrict in, const int32_t* __restrict below,
                         const int32_t* __restrict above, int64_t channels, int64_t begin,
                         int64_t end, T* __restrict out) {
  constexpr int64_t B = kBlock<CK>;
  const int64_t row = row_length<CK>(channels);
  for (int64_t v = begin; v < end; ++v) {
    const T* b = in + static_cast<int64_t>(below[v]) * row;
    const T* a = in + static_cast<int64_t>(above[v]) * row;
    const T* own = in + v * row;
    T* o = out + v * row;
    for (int64_t c0 = 0; c0 < row; c0 += B) BlockOps<T, B>::blur(o + c0, own + c0, b + c0, a + c0);
  }
}

// One lattice's part of a filter: its points (index and weights per point) and vertices.
template <typename T>
struct LatticeArgs {
  const int32_t* index;
  const T* splat_weight;
  const T* slice_weight;
  const int32_t* neighbours;
  int n1;
  int64_t num_vertices;
};

// Rows of `work_per_row` multiply-adds each, as chunks for at::parallel_for: one chunk (no
// thread started, no barrier) below kParallelWork multiply-adds in all.
inline int64_t grain(int64_t rows, int64_t work_per_row) {
  return std::max<int64_t>(1, kParallelWork / std::max<int64_t>(1, work_per_row)) *
         (rows * work_per_row < kParallelWork ? rows + 1 : 1);
}

// Splat and blur of one lattice: returns the blurred lattice, (M + 1, C) rows within `scratch`.
// The splat gives each chunk of points its own lattice, summed into chunk 0's afterwards
// (threads never share a row); each chunk zeroes its own lattice. Nested in a parallel region,
// every at::parallel_for here runs on the calling thread.
template <typename T, int CK>
T* splat_blur(const T* values, Strided stride, int64_t n, int64_t channels,
              const LatticeArgs<T>& lat, bool reverse, at::Tensor& scratch,
              const at::TensorOptions& options) {
  const int n1 = lat.n1;
  const int64_t m = lat.num_vertices;
  const int64_t row = row_length<CK>(channels);
  const int64_t rows = (m + 1) * row;
  const int64_t chunks =
      at::in_parallel_region()
          ? 1
          : std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(),
                                                   n * n1 * channels / kParallelWork));
  scratch = at::empty({std::max<int64_t>(chunks, 2), rows}, options);
  T* partial = scratch.data_ptr<T>();
  parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      T* own = partial + chunk * rows;
      std::fill(own, own + rows, T(0));
      splat<T, CK>(values, stride, lat.index, lat.splat_weight, n1, channels,
                   n * chunk / chunks, n * (chunk + 1) / chunks, own);
    }
  });
  T* current = partial;
  T* next = partial + rows;
  if (chunks > 1) {
    parallel_for(0, m * row, grain(m * row, chunks),
                     [&](int64_t begin, int64_t end) {
      for (int64_t chunk = 1; chunk < chunks; ++chunk) {
        const T* other = partial + chunk * rows;
        for (int64_t e = begin; e < end; ++e) current[e] += other[e];
      }
    });
  } else {
    std::fill(next + m * row, next + rows, T(0));
  }
  // blur: along directions 0..d, or d..0 for the transpose (each direction is symmetric);
  // every row but the empty one is overwritten, and that one is 0 in every partial lattice
  for (int step = 0; step < n1; ++step) {
    const int j = reverse ? n1 - 1 - step : step;
    const int32_t* below = lat.neighbours + (2 * j) * m;
    const int32_t* above = lat.neighbours + (2 * j + 1) * m;
    parallel_for(0, m, grain(m, row), [&](int64_t begin, int64_t end) {
      blur<T, CK>(current, below, above, channels, begin, end, next);
    });
    std::swap(current, next);
  }
  return current;
}

// out = base + sum over the lattices of (1 / (1 + 2^-d)) (slice weights . blurred lattice), at
// most `upper`, for points [begin, end); without a base, out starts from 0. The sums of a block
// of channels stay in registers.
template <typename T, int CK>
LATTICE_CLONES void slice(const std::vector<LatticeArgs<T>>& lattices,
                          const std::vector<const T*>& blurred, int64_t channels, const T* base,
                          Strided base_stride, T upper, int64_t begin, int64_t end, T* out,
                          Strided out_stride) {
  constexpr int64_t B = kBlock<CK>;
  const int64_t row = row_length<CK>(channels);
  std::vector<T> scales;
  for (const auto& lat : lattices) {
    scales.push_back(static_cast<T>(1.0 / (1.0 + std::pow(2.0, -(lat.n1 - 1)))));
  }
  for (int64_t i = begin; i < end; ++i) {
    for (int64_t c0 = 0; c0 < row; c0 += B) {
      const int64_t count = std::min(B, channels - c0);
      T total[B] = {};
      if (base != nullptr) {
        for (int64_t c = 0; c < count; ++c) {
          total[c] = base[i * base_stride.point + (c0 + c) * base_stride.channel];
        }
      }
      for (std::size_t l = 0; l < lattices.size(); ++l) {
        const LatticeArgs<T>& lat = lattices[l];
        T sum[B] = {};
        for (int k = 0; k < lat.n1; ++k) {
          BlockOps<T, B>::add_scaled(
              sum, lat.slice_weight[i * lat.n1 + k],
              blurred[l] + static_cast<int64_t>(lat.index[i * lat.n1 + k]) * row + c0);
        }
        BlockOps<T, B>::add_scaled(total, scales[l], sum);
      }
      T* o = out + i * out_stride.point + c0 * out_stride.channel;
      for (int64_t c = 0; c < count; ++c) o[c * out_stride.channel] = std::min(total[c], upper);
    }
  }
}

// base + the sum of the lattices' filters of `values`, at most `upper`: the lattices are splatted
// and blurred on a thread each (one parallel region, no barrier inside) when there are threads
// for them, else one after another with their points split between the threads; then every
// point slices them all at once.
template <typename T, int CK>
void filter_sum(const at::Tensor& values, const at::Tensor* base,
                const std::vector<LatticeArgs<T>>& lattices, bool reverse, double upper,
                const at::Tensor& out) {
  const int64_t n = values.size(0), channels = values.size(1);
  const Strided stride{values.stride(0), values.stride(1)};
  const int64_t count = static_cast<int64_t>(lattices.size());
  std::vector<at::Tensor> scratch(count);
  std::vector<const T*> blurred(count);
  const auto splat_blur_range = [&](int64_t begin, int64_t end) {
    for (int64_t l = begin; l < end; ++l) {
      blurred[l] = splat_blur<T, CK>(values.data_ptr<T>(), stride, n, channels, lattices[l],
                                     reverse, scratch[l], values.options());
    }
  };
  if (count > 1 && at::get_num_threads() > 1) {
    parallel_for(0, count, 1, splat_blur_range);
  } else {
    splat_blur_range(0, count);
  }
  int64_t work = 0;
  for (const auto& lat : lattices) work += lat.n1 * channels;
  const T* base_data = base == nullptr ? nullptr : base->data_ptr<T>();
  const Strided base_stride = base == nullptr ? Strided{0, 0}
                                              : Strided{base->stride(0), base->stride(1)};
  const Strided out_stride{out.stride(0), out.stride(1)};
  const T cap = static_cast<T>(std::min<double>(upper, std::numeric_limits<T>::max()));
  parallel_for(0, n, grain(n, work), [&](int64_t begin, int64_t end) {
    slice<T, CK>(lattices, blurred, channels, base_data, base_stride, cap, begin, end,
                 out.data_ptr<T>(), out_stride);
  });
}

template <typename T>
std::vector<LatticeArgs<T>> lattice_args(const std::vector<at::Tensor>& index,
                                         const std::vector<at::Tensor>& splat_weight,
                                         const std::vector<at::Tensor>& slice_weight,
                                         const std::vector<at::Tensor>& neighbours) {
  std::vector<LatticeArgs<T>> lattices;
  for (std::size_t l = 0; l < index.size(); ++l) {
    lattices.push_back({index[l].data_ptr<int32_t>(), splat_weight[l].data_ptr<T>(),
                        slice_weight[l].data_ptr<T>(), neighbours[l].data_ptr<int32_t>(),
                        static_cast<int>(index[l].size(1)), neighbours[l].size(2)});
  }
  return lattices;
}

std::vector<at::Tensor> contiguous(at::TensorList tensors) {
  std::vector<at::Tensor> out;
  for (const at::Tensor& t : tensors) out.push_back(t.contiguous());
  return out;
}

// The filters of `values` summed onto `base` (none: from 0), with kernels for 1 to 4 channels
// (unrolled) and for any count.
void run_sum(const at::Tensor& values, const at::Tensor* base, at::TensorList index,
             at::TensorList splat_weight, at::TensorList slice_weight, at::TensorList neighbours,
             bool reverse, double upper, const at::Tensor& out) {
  const auto idx = contiguous(index), splat_w = contiguous(splat_weight),
             slice_w = contiguous(slice_weight), nb = contiguous(neighbours);
  const auto run = [&](auto channels) {
    AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "lattice_filter", [&] {
      filter_sum<scalar_t, decltype(channels)::value>(
          values, base, lattice_args<scalar_t>(idx, splat_w, slice_w, nb), reverse, upper, out);
    });
  };
  switch (values.size(1)) {
    case 1:
      return run(std::integral_constant<int, 1>{});
    case 2:
      return run(std::integral_constant<int, 2>{});
    case 3:
      return run(std::integral_constant<int, 3>{});
    case 4:
      return run(std::integral_constant<int, 4>{});
    default:
      return run(std::integral_constant<int, 0>{});
  }
}

// fn(std::integral_constant<int, D>{}) with D = d where the kernels are instantiated for d (2, 3
// and 5: the CRF's position and position + colour features), else D = 0 (d at run time).
template <typename Fn>
decltype(auto) with_dim(int d, Fn&& fn) {
  switch (d) {
    case 2:
      return fn(std::integral_constant<int, 2>{});
    case 3:
      return fn(std::integral_constant<int, 3>{});
    case 5:
      return fn(std::integral_constant<int, 5>{});
    default:
      return fn(std::integral_constant<int, 0>{});
  }
}

// The filter's diagonal (Python: PermutohedralLattice.diagonal and _simplex_paths). Point i's
// weight on itself is sum_{k, l} w_ik w_il B_kl / (1 + 2^-d) over the vertices of its simplex, B
// the blur's (d + 1) x (d + 1) block between them. Consecutive vertices k, k + 1 of a simplex
// differ by one lattice direction (the one whose step below leads from k to k + 1; the last
// direction closes the cycle), the direction at place k. From vertex l the blur reaches vertex k
// along two paths: the directions at places l..k-1 backwards (k > l) or k..l-1 forwards (k < l),
// or all the other directions the opposite way (the d + 1 directions sum to zero); a vertex
// reaches itself by every direction forwards or every one backwards, or by staying (worth 1). A
// path takes its steps in the blur's order of directions 0..d, is worth 2^-steps, and counts only
// where every vertex on the way is in the lattice.

// Points per chunk of the diagonal: the threads take chunks from a shared counter, so that a
// thread that the system delays (a busy machine) leaves its share to the others.
constexpr int64_t kDiagonalChunk = 2048;
// Bytes of the blocks each thread keeps in a direct-mapped cache keyed by the simplex's
// vertices: in raster order most pixels share their simplex with a recent one (at 512 x 512 with
// colour, 51k distinct simplices among 262k pixels); the cache is about a core's L2 cache.
constexpr int64_t kDiagonalCacheBytes = int64_t{1} << 20;

// The paths of every ordered pair of vertices, walked all at once, one direction after another,
// so that the loads of different paths overlap: after direction j, at[w] is where path w stands
// (M: it left the lattice; the table sends M to M). Bit j of mask[w] says whether path w steps
// along direction j, side[w] whether its steps go up (1) or down (0).
LATTICE_CLONES void walk_paths(const int32_t* __restrict table, int64_t stride, int n1,
                               int walks, const uint64_t* __restrict mask,
                               const int32_t* __restrict side, int32_t* __restrict at) {
  for (int j = 0; j < n1; ++j) {
    const int32_t* below = table + 2 * j * stride;
    for (int w = 0; w < walks; ++w) {
      const int32_t next = below[side[w] * stride + at[w]];
      at[w] = (mask[w] >> j & 1) ? next : at[w];
    }
  }
}

// One thread's part of the diagonal: its cache of blocks and the scratch of the walks.
template <int D, typename T>
class DiagonalWorker {
 public:
  // table: the neighbours as (d + 1, 2, M + 1), column M and every entry outside [0, M) being M.
  DiagonalWorker(const int32_t* index, const T* weight, const int32_t* table, int d, int64_t m,
                 int64_t num_points)
      : index_(index), weight_(weight), table_(table), n1_(Dim<D>::get(d) + 1), m_(m),
        walks_(2 * n1_ * n1_), mask_(walks_), side_(walks_), at_(walks_), worth_(walks_) {
    for (int steps = 0; steps <= n1_; ++steps) half_powers_[steps] = std::ldexp(T(1), -steps);
    const int64_t block = static_cast<int64_t>(n1_) * n1_;
    const int64_t entry = n1_ * static_cast<int64_t>(sizeof(int32_t)) +
                          block * static_cast<int64_t>(sizeof(T));
    slots_ = 1;
    while (2 * slots_ * entry <= kDiagonalCacheBytes && slots_ < num_points) slots_ *= 2;
    tags_.assign(slots_ * n1_, -1);  // no vertex is -1: every slot starts empty
    blocks_.resize(slots_ * block);
  }

  void run(int64_t begin, int64_t end, T* diagonal) {
    const int n1 = kCorners > 0 ? kCorners : n1_;
    const double alpha = 1.0 / (1.0 + std::ldexp(1.0, 1 - n1));
    for (int64_t i = begin; i < end; ++i) {
      const int32_t* simplex = index_ + i * n1;
      if (last_tag_ == nullptr || !same_key<kCorners>(simplex, last_tag_, n1)) {
        const int64_t slot = hash_key<kCorners>(simplex, n1) & (slots_ - 1);
        int32_t* tag = tags_.data() + slot * n1;
        T* cached = blocks_.data() + slot * n1 * n1;
        if (!same_key<kCorners>(simplex, tag, n1)) {
          compute_block(simplex, i, cached);
          std::copy(simplex, simplex + n1, tag);
        }
        last_tag_ = tag;
        block_ = cached;
      }
      const T* w = weight_ + i * n1;
      double total = 0;
      for (int k = 0; k < n1; ++k) {
        double row = 0;
        for (int l = 0; l < n1; ++l) row += static_cast<double>(block_[k * n1 + l]) * w[l];
        total += static_cast<double>(w[k]) * row;
      }
      diagonal[i] = static_cast<T>(total * alpha);
    }
  }

 private:
  static constexpr int kCorners = D > 0 ? D + 1 : 0;  // compile-time d + 1 where D is

  // block[k * n1 + l]: the blur's weight of vertex l on vertex k of the simplex of point i.
  void compute_block(const int32_t* simplex, int64_t i, T* block) {
    const int n1 = kCorners > 0 ? kCorners : n1_;
    const int64_t stride = m_ + 1;
    for (int k = 0; k < n1; ++k) {
      TORCH_CHECK_VALUE(simplex[k] >= 0 && simplex[k] < m_, "lattice_diagonal: index holds ",
                        "vertex ", simplex[k], " outside [0, M = ", m_, ")");
    }
    // prefix[p]: the directions at places 0..p-1, as bits
    uint64_t prefix[kMaxDim + 2];
    prefix[0] = 0;
    for (int k = 0; k + 1 < n1; ++k) {
      int found = -1;
      for (int j = 0; j < n1 && found < 0; ++j) {
        if (table_[2 * j * stride + simplex[k]] == simplex[k + 1]) found = j;
      }
      TORCH_CHECK_VALUE(found >= 0 && !(prefix[k] >> found & 1), "lattice_diagonal: the ",
                        "vertices of point ", i, "'s simplex are not neighbours in the table: ",
                        "index and neighbours must come from one lattice_build");
      prefix[k + 1] = prefix[k] | uint64_t{1} << found;
    }
    const uint64_t all = (uint64_t{1} << n1) - 1;
    prefix[n1] = all;
    for (int k = 0; k < n1; ++k) {
      for (int l = 0; l < n1; ++l) {
        const int lo = std::min(k, l), hi = std::max(k, l);
        const uint64_t inside = prefix[hi] ^ prefix[lo];  // hi - lo directions
        // the two paths from l to k: (directions, their count, up)
        const uint64_t masks[2] = {k == l ? all : inside, all ^ inside};
        const int steps[2] = {k == l ? n1 : hi - lo, n1 - (hi - lo)};
        const int up[2] = {k <= l, k > l};
        for (int path = 0; path < 2; ++path) {
          const int w = 2 * (k * n1 + l) + path;
          at_[w] = simplex[l];
          mask_[w] = masks[path];
          side_[w] = up[path];
          worth_[w] = half_powers_[steps[path]];
        }
      }
    }
    walk_paths(table_, stride, n1, walks_, mask_.data(), side_.data(), at_.data());
    for (int k = 0; k < n1; ++k) {
      for (int l = 0; l < n1; ++l) {
        const int w = 2 * (k * n1 + l);
        block[k * n1 + l] = (k == l ? T(1) : T(0)) + (at_[w] != m_ ? worth_[w] : T(0)) +
                            (at_[w + 1] != m_ ? worth_[w + 1] : T(0));
      }
    }
  }

  const int32_t* index_;
  const T* weight_;
  const int32_t* table_;
  int n1_;
  int64_t m_;
  int walks_;
  std::vector<uint64_t> mask_;
  std::vector<int32_t> side_, at_;
  std::vector<T> worth_;
  T half_powers_[kMaxDim + 2];  // 2^-steps
  int64_t slots_ = 1;
  std::vector<int32_t> tags_;
  std::vector<T> blocks_;
  const int32_t* last_tag_ = nullptr;
  const T* block_ = nullptr;
};

at::Tensor lattice_diagonal_cpu(const at::Tensor& index, const at::Tensor& weight,
                                const at::Tensor& neighbours) {
  check_lattice_diagonal_args(index, weight, neighbours);
  const at::Tensor idx = index.contiguous(), w = weight.contiguous(),
                   nb = neighbours.contiguous();
  const int64_t n = idx.size(0);
  const int n1 = static_cast<int>(idx.size(1));
  const int64_t m = nb.size(2);
  // the neighbours with a column M for "no vertex", which leads nowhere else, and any entry
  // outside [0, M) read as M: a path that leaves the lattice stays out
  std::vector<int32_t> table(static_cast<int64_t>(2 * n1) * (m + 1));
  const int32_t* source = nb.data_ptr<int32_t>();
  for (int64_t row = 0; row < 2 * n1; ++row) {
    for (int64_t v = 0; v < m; ++v) {
      const int32_t to = source[row * m + v];
      table[row * (m + 1) + v] = to >= 0 && to < m ? to : static_cast<int32_t>(m);
    }
    table[row * (m + 1) + m] = static_cast<int32_t>(m);
  }
  at::Tensor out = at::empty({n}, w.options());
  const int64_t chunks = (n + kDiagonalChunk - 1) / kDiagonalChunk;
  const int64_t workers = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), chunks));
  AT_DISPATCH_FLOATING_TYPES(w.scalar_type(), "lattice_diagonal", [&] {
    with_dim(n1 - 1, [&](auto dim) {
      std::atomic<int64_t> next{0};
      parallel_for(0, workers, 1, [&](int64_t begin, int64_t end) {
        for (int64_t worker = begin; worker < end; ++worker) {
          DiagonalWorker<decltype(dim)::value, scalar_t> diagonal(
              idx.data_ptr<int32_t>(), w.data_ptr<scalar_t>(), table.data(), n1 - 1, m, n);
          for (int64_t chunk = next++; chunk < chunks; chunk = next++) {
            diagonal.run(chunk * kDiagonalChunk, std::min(n, (chunk + 1) * kDiagonalChunk),
                         out.data_ptr<scalar_t>());
          }
        }
      });
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> lattice_build_cpu(const at::Tensor& features) {
  check_lattice_features(features);
  const at::Tensor f = features.contiguous();
  return with_dim(static_cast<int>(f.size(1)),
                  [&](auto dim) { return build<decltype(dim)::value>(f); });
}

at::Tensor lattice_filter_cpu(const at::Tensor& values, const at::Tensor& index,
                              const at::Tensor& splat_weight, const at::Tensor& slice_weight,
                              const at::Tensor& neighbours, bool reverse) {
  check_lattice_filter_args(values, index, splat_weight, slice_weight, neighbours);
  // the layout of values (planar classes stay planar), contiguous where theirs has gaps
  at::Tensor out = at::empty_like(values);
  run_sum(values, nullptr, {index}, {splat_weight}, {slice_weight}, {neighbours}, reverse,
          std::numeric_limits<double>::infinity(), out);
  return out;
}

at::Tensor lattice_filter_sum_cpu(const at::Tensor& values, const at::Tensor& base,
                                  at::TensorList index, at::TensorList splat_weight,
                                  at::TensorList slice_weight, at::TensorList neighbours,
                                  double upper) {
  check_lattice_sum_args(values, base, index, splat_weight, slice_weight, neighbours);
  at::Tensor out = at::empty_like(base);
  run_sum(values, &base, index, splat_weight, slice_weight, neighbours, false, upper, out);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(graphseg_ext, CPU, m) {
  m.impl("lattice_build", &lattice_build_cpu);
  m.impl("lattice_filter", &lattice_filter_cpu);
  m.impl("lattice_filter_sum", &lattice_filter_sum_cpu);
  m.impl("lattice_diagonal", &lattice_diagonal_cpu);
}

}  // namespace graphseg_ext
