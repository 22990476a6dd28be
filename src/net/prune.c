/*
 * prune.c - magnitude pruning and weight sparsity, for the pruning curves of
 * the LFP paper (notes/lfp.md sec. 9): zero the fraction p of dense/conv
 * weights with the smallest |w| (globally, or per layer), no fine-tuning;
 * biases and batchnorm parameters are left alone.  The Gini index of |w|
 * measures how concentrated the weights are (0 = all equal, -> 1 = sparse).
 */
#include "net.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static int is_weight(const soma_net *n, const soma_layer *l)
{
    (void)n;
    return (l->kind == SOMA_LAYER_DENSE || l->kind == SOMA_LAYER_CONV) && l->w >= 0;
}

/* Zeroes every |w| <= the k-th smallest of |w| over the given tensors. */
static soma_status prune_set(soma_net *n, const int *layers, int count, double fraction, size_t *pruned)
{
    size_t total = 0;
    for (int i = 0; i < count; i++) total += n->params.p[n->layers[layers[i]].w].n;
    size_t k = (size_t)floor(fraction * (double)total + 1e-9);
    if (k == 0 || total == 0) return SOMA_OK;
    float *mag = soma__malloc(total * sizeof(float));
    if (!mag) return SOMA_ERR_NOMEM;
    size_t o = 0;
    for (int i = 0; i < count; i++) {
        const soma_param *p = &n->params.p[n->layers[layers[i]].w];
        const float *w = n->params.value + p->offset;
        for (size_t j = 0; j < p->n; j++) mag[o++] = fabsf(w[j]);
    }
    qsort(mag, total, sizeof *mag, cmp_float);
    float thr = mag[k - 1];
    /* exactly k weights go: ties at the threshold are taken in order */
    size_t below = 0;
    for (size_t j = 0; j < total; j++) below += mag[j] < thr;
    size_t at_thr = k - below;
    soma__free(mag);
    for (int i = 0; i < count; i++) {
        const soma_param *p = &n->params.p[n->layers[layers[i]].w];
        float *w = n->params.value + p->offset;
        for (size_t j = 0; j < p->n; j++) {
            float a = fabsf(w[j]);
            if (a < thr || (a == thr && at_thr > 0)) {
                if (a == thr) at_thr--;
                w[j] = 0.0f;
                (*pruned)++;
            }
        }
    }
    return SOMA_OK;
}

soma_status soma_net_prune(soma_net *n, double fraction, int per_layer, size_t *pruned)
{
    size_t dummy = 0;
    if (!pruned) pruned = &dummy;
    *pruned = 0;
    if (!(fraction >= 0 && fraction <= 1))
        return soma__fail(SOMA_ERR_ARG, "prune fraction must be in [0, 1], got %g", fraction);
    int *layers = soma__malloc((size_t)(n->n_layers ? n->n_layers : 1) * sizeof *layers);
    if (!layers) return SOMA_ERR_NOMEM;
    int count = 0;
    for (int i = 0; i < n->n_layers; i++)
        if (is_weight(n, &n->layers[i])) layers[count++] = i;
    soma_status st = SOMA_OK;
    if (per_layer)
        for (int i = 0; i < count && !st; i++) st = prune_set(n, &layers[i], 1, fraction, pruned);
    else
        st = prune_set(n, layers, count, fraction, pruned);
    soma__free(layers);
    return st;
}

double soma_net_weight_gini(const soma_net *n)
{
    size_t total = 0;
    for (int i = 0; i < n->n_layers; i++)
        if (is_weight(n, &n->layers[i])) total += n->params.p[n->layers[i].w].n;
    if (!total) return 0;
    float *mag = malloc(total * sizeof(float)); /* reporting only: plain malloc is fine */
    if (!mag) return NAN;
    size_t o = 0;
    for (int i = 0; i < n->n_layers; i++) {
        if (!is_weight(n, &n->layers[i])) continue;
        const soma_param *p = &n->params.p[n->layers[i].w];
        for (size_t j = 0; j < p->n; j++) mag[o++] = fabsf(n->params.value[p->offset + j]);
    }
    qsort(mag, total, sizeof *mag, cmp_float);
    /* Gini = sum_i (2i - N - 1) x_(i) / (N sum x), x sorted ascending, i from 1 */
    double num = 0, sum = 0;
    for (size_t i = 0; i < total; i++) {
        num += (2.0 * (double)(i + 1) - (double)total - 1.0) * mag[i];
        sum += mag[i];
    }
    free(mag);
    return sum > 0 ? num / ((double)total * sum) : 0;
}
