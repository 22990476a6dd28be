/*
 * pc.h - predictive coding internals the tests reach (src/rule/pc.c).
 *
 * A training step of rule "pc" is begin (feedforward initialisation of the
 * states) -> T x iterate -> grads (into the net's grad store) -> optimizer;
 * the tests drive the pieces one at a time to compare the states after each
 * iteration with the reference and to count the matrix multiplies.
 */
#ifndef SOMA_RULE_PC_H
#define SOMA_RULE_PC_H

#include "rule.h"

/* Feedforward initialisation on batch b (r must be rule "pc"); resets the
 * matmul counter first. */
soma_status soma__pc_begin(soma_rule *r, const soma_batch *b);
/* Inference iteration t (0-based; step gamma / (1 + t)) in the configured
 * order.  INCREMENTAL also steps the optimizer at learning rate lr. */
soma_status soma__pc_iterate(soma_rule *r, int t, float lr);
/* -dF/dtheta of the batch-mean energy at the current states into the net's
 * grad store (zeroed first): dW = -e_{l+1}^T f(h_l) / B, db = -mean e_{l+1}. */
soma_status soma__pc_grads(soma_rule *r);
/* Number of weight layers L (states h_1..h_L). */
int soma__pc_units(const soma_rule *r);
/* State h_l / error e_l (l = 1..L) of the current batch, (B, *n) row-major;
 * the errors are those of the current states (valid after begin/iterate). */
const float *soma__pc_state(const soma_rule *r, int l, size_t *n);
const float *soma__pc_error(const soma_rule *r, int l, size_t *n);
/* Batch-mean energy F = sum_{l<L} 1/2 |e_l|^2 + top term (CE of h_L
 * against softmax(p_L), or BCE against sigmoid(p_L) for autoencoders). */
double soma__pc_energy(const soma_rule *r);
/* Dense/conv forward, input-VJP and weight-VJP calls since the last begin
 * (one matrix multiply each; bias sums not counted). */
int64_t soma__pc_matmuls(const soma_rule *r);

/* One optimizer group per dense/conv layer (weight and bias pooled when
 * they are adjacent in the store, as the net lays them out) and one per
 * other parameter tensor: what MQ needs.  Any rule may call it after its
 * optimizer exists. */
soma_status soma__rule_layer_groups(soma_net *n, soma_optim *o);

#endif
