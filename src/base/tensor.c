/*
 * tensor.c - contiguous float32 tensor descriptors (up to 4-D).
 */
#include "../soma_internal.h"

int64_t soma_tensor_numel(const soma_tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

soma_tensor soma_tensor_view(float *data, int ndim, const int64_t *shape)
{
    soma_tensor t = { .data = data, .ndim = ndim };
    for (int i = 0; i < SOMA_MAX_DIMS; i++) t.shape[i] = i < ndim ? shape[i] : 1;
    return t;
}
