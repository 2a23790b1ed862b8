// Deterministic parameter initialization (docs/architecture.md §3): element i of the parameter
// named `name` is a function of (seed, name, i) only, through the counter-based
// Philox-4x32-10 generator. Any rank can therefore initialize any shard of any
// parameter on its own, and every layout starts from the same logical model.
//
//   key     = the two 32-bit halves of splitmix64(seed ^ fnv1a64(name))
//   counter = (i / 2, 0, 0, 0)
//   normal  = Box-Muller on the 4 outputs: two 64-bit uniforms in (0, 1) give two
//             standard normals; element i takes the (i % 2)-th, times std.
#ifndef HEIRETSU_RUNTIME_INIT_INIT_H_
#define HEIRETSU_RUNTIME_INIT_INIT_H_

#include <array>
#include <cstdint>
#include <string>

namespace heiretsu::init {

// Philox-4x32 with 10 rounds (Salmon et al., SC'11).
std::array<uint32_t, 4> Philox4x32(std::array<uint32_t, 4> counter, std::array<uint32_t, 2> key);

// 64-bit FNV-1a of a parameter's logical name.
uint64_t NameHash(const std::string& name);

// Writes elements [begin, end) of parameter `name`, initialized normal(0, stddev),
// into out[0 .. end - begin).
void FillNormal(uint64_t seed, const std::string& name, double stddev, int64_t begin, int64_t end,
                float* out);

}  // namespace heiretsu::init

#endif  // HEIRETSU_RUNTIME_INIT_INIT_H_
