// numpy's mt19937 (numpy/random/src/mt19937) and legacy_gauss acceptance test, for skipping only.
// Compiled for the baseline ISA (no FMA contraction): the r2 test must round as numpy's does.
#include "nngp_rng.h"

namespace lwe {
namespace {
constexpr int kN = 624, kM = 397;
constexpr uint32_t kMatrixA = 0x9908b0dfU, kUpper = 0x80000000U, kLower = 0x7fffffffU;

inline uint32_t twist(uint32_t a, uint32_t b, uint32_t m) {
  const uint32_t y = (a & kUpper) | (b & kLower);
  return m ^ (y >> 1) ^ (-(y & 1U) & kMatrixA);
}

void regenerate(uint32_t* key) {
  int i = 0;
  for (; i < kN - kM; ++i) key[i] = twist(key[i], key[i + 1], key[i + kM]);
  for (; i < kN - 1; ++i) key[i] = twist(key[i], key[i + 1], key[i + kM - kN]);
  key[kN - 1] = twist(key[kN - 1], key[0], key[kM - 1]);
}

struct Stream {
  uint32_t* key;
  int pos;
  inline uint32_t next() {
    if (pos == kN) {
      regenerate(key);
      pos = 0;
    }
    uint32_t y = key[pos++];
    y ^= (y >> 11);
    y ^= (y << 7) & 0x9d2c5680U;
    y ^= (y << 15) & 0xefc60000U;
    y ^= (y >> 18);
    return y;
  }
  inline double legacy_double() {
    const int32_t a = static_cast<int32_t>(next() >> 5), b = static_cast<int32_t>(next() >> 6);
    return (a * 67108864.0 + b) / 9007199254740992.0;
  }
};
}  // namespace

void mt19937_skip_words(uint32_t* key, int* pos, uint64_t n) {
  int p = *pos;
  while (n > 0) {
    if (p == kN) {
      regenerate(key);
      p = 0;
    }
    const uint64_t take = static_cast<uint64_t>(kN - p) < n ? static_cast<uint64_t>(kN - p) : n;
    p += static_cast<int>(take);
    n -= take;
  }
  *pos = p;
}

void mt19937_skip_gauss_pairs(uint32_t* key, int* pos, uint64_t pairs) {
  Stream s{key, *pos};
  while (pairs > 0) {
    const double x1 = 2.0 * s.legacy_double() - 1.0;
    const double x2 = 2.0 * s.legacy_double() - 1.0;
    volatile double a = x1 * x1, b = x2 * x2;  // volatile: never contracted into an FMA
    const double r2 = a + b;
    if (!(r2 >= 1.0 || r2 == 0.0)) --pairs;
  }
  *pos = s.pos;
}
}  // namespace lwe
