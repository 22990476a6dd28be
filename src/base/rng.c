/*
 * rng.c - xoshiro128** seeded through splitmix64.
 *
 * One generator type for everything (init, shuffling, dropout, Poisson
 * coding).  Integer-only state update, so a seed gives the same stream on
 * every platform; the float conversions use exactly 24 bits.
 */
#include "../soma_internal.h"
#include <math.h>

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void soma_rng_seed(soma_rng *r, uint64_t seed)
{
    uint64_t x = seed;
    uint64_t a = splitmix64(&x), b = splitmix64(&x);
    r->s[0] = (uint32_t)a; r->s[1] = (uint32_t)(a >> 32);
    r->s[2] = (uint32_t)b; r->s[3] = (uint32_t)(b >> 32);
    if (!(r->s[0] | r->s[1] | r->s[2] | r->s[3])) r->s[0] = 1;
}

static inline uint32_t rotl(uint32_t x, int k) { return (x << k) | (x >> (32 - k)); }

uint32_t soma_rng_u32(soma_rng *r)
{
    uint32_t *s = r->s;
    uint32_t result = rotl(s[1] * 5, 7) * 9;
    uint32_t t = s[1] << 9;
    s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return result;
}

float soma_rng_uniform(soma_rng *r)
{
    return (float)(soma_rng_u32(r) >> 8) * (1.0f / 16777216.0f);
}

float soma_rng_normal(soma_rng *r)
{
    /* Box-Muller; u1 in (0,1] so log is finite.  Double inside for accuracy. */
    double u1 = ((double)(soma_rng_u32(r) >> 8) + 1.0) / 16777216.0;
    double u2 = (double)(soma_rng_u32(r) >> 8) / 16777216.0;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

uint32_t soma_rng_below(soma_rng *r, uint32_t n)
{
    /* Lemire's nearly-divisionless method: unbiased. */
    uint64_t m = (uint64_t)soma_rng_u32(r) * n;
    uint32_t l = (uint32_t)m;
    if (l < n) {
        uint32_t t = (uint32_t)(-n) % n;
        while (l < t) {
            m = (uint64_t)soma_rng_u32(r) * n;
            l = (uint32_t)m;
        }
    }
    return (uint32_t)(m >> 32);
}

void soma_rng_shuffle_u32(soma_rng *r, uint32_t *a, size_t n)
{
    for (size_t i = n; i > 1; i--) {
        size_t j = soma_rng_below(r, (uint32_t)i);
        uint32_t t = a[i - 1]; a[i - 1] = a[j]; a[j] = t;
    }
}
