/*
 * spec.c - parses a network spec string into a layer list with shapes.
 *
 * Grammar in soma.h (soma_net_new).  The parser only decides the layer
 * sequence and per-sample shapes; parameters are created by net.c.
 * Every error quotes the token and its 1-based position, because a spec is
 * typed by hand on a command line.
 */
#include "net.h"
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TOKEN 32

typedef struct spec_builder {
    soma_layer *layers;
    int n, cap;
    int c, h, w;          /* current per-sample shape */
    int flat;             /* current shape is a feature vector */
    int last_linear;      /* index of the last dense/conv layer, -1 */
    const soma_net_options *o;
} spec_builder;

static soma_layer *push(spec_builder *b, soma_layer_kind kind)
{
    if (b->n == b->cap) {
        int cap = b->cap ? 2 * b->cap : 16;
        soma_layer *l = soma__realloc(b->layers, (size_t)cap * sizeof *l);
        if (!l) return NULL;
        b->layers = l;
        b->cap = cap;
    }
    soma_layer *l = &b->layers[b->n++];
    memset(l, 0, sizeof *l);
    l->kind = kind;
    l->w = l->b = l->run_mean = l->run_var = l->rec = l->rec_src = -1;
    l->w2 = l->b2 = l->run_mean2 = l->run_var2 = -1;
    l->tm_w = l->tm_b = l->tm_k = l->ta_w = l->ta_b = l->ta_k = -1;
    for (int m = 0; m < 2; m++) l->mbn_w[m] = l->mbn_b[m] = l->mbn_rm[m] = l->mbn_rv[m] = -1;
    l->in_c = b->c; l->in_h = b->h; l->in_w = b->w;
    l->in_size = (size_t)b->c * b->h * b->w;
    return l;
}

static void set_out(spec_builder *b, soma_layer *l, int c, int h, int w)
{
    l->out_c = c; l->out_h = h; l->out_w = w;
    l->out_size = (size_t)c * h * w;
    b->c = c; b->h = h; b->w = w;
}

/* Parses a positive decimal integer filling the whole of s. */
static int parse_int(const char *s, int *out)
{
    if (!*s || !isdigit((unsigned char)*s)) return 0;
    errno = 0;
    char *end;
    long v = strtol(s, &end, 10);
    if (*end || errno || v <= 0 || v > 1 << 24) return 0;
    *out = (int)v;
    return 1;
}

static soma_status bad(const char *tok, int pos, const char *why)
{
    return soma__fail(SOMA_ERR_ARG, "net spec: token %d '%s': %s", pos, tok, why);
}

static soma_status add_flatten_if_needed(spec_builder *b)
{
    if (b->flat) return SOMA_OK;
    soma_layer *l = push(b, SOMA_LAYER_FLATTEN);
    if (!l) return SOMA_ERR_NOMEM;
    set_out(b, l, b->c * b->h * b->w, 1, 1);
    b->flat = 1;
    return SOMA_OK;
}

static soma_status add_dense(spec_builder *b, int units, int recurrent)
{
    soma_status st = add_flatten_if_needed(b);
    if (st) return st;
    soma_layer *l = push(b, SOMA_LAYER_DENSE);
    if (!l) return SOMA_ERR_NOMEM;
    l->rec = recurrent; /* a flag here; net.c makes it a parameter index */
    set_out(b, l, units, 1, 1);
    b->last_linear = b->n - 1;
    return SOMA_OK;
}

static soma_status parse_conv(spec_builder *b, const char *tok, int pos)
{
    /* convKxC[sS][pP] */
    char buf[MAX_TOKEN];
    int k = 0, ch = 0, stride = 1, pad = 0;
    snprintf(buf, sizeof buf, "%s", tok + 4);
    char *x = strchr(buf, 'x');
    if (!x) return bad(tok, pos, "expected convKxC, e.g. conv5x32");
    *x = 0;
    if (!parse_int(buf, &k)) return bad(tok, pos, "kernel size must be a positive integer");
    char *rest = x + 1;
    char *sp = strpbrk(rest, "sp");
    char opts[MAX_TOKEN] = "";
    if (sp) { snprintf(opts, sizeof opts, "%s", sp); *sp = 0; }
    if (!parse_int(rest, &ch)) return bad(tok, pos, "channel count must be a positive integer");
    for (char *o = opts; *o;) {
        char which = *o++;
        char num[MAX_TOKEN];
        int i = 0;
        while (isdigit((unsigned char)*o) && i < MAX_TOKEN - 1) num[i++] = *o++;
        num[i] = 0;
        int v;
        if (which == 's') {
            if (!parse_int(num, &v)) return bad(tok, pos, "stride must be a positive integer");
            stride = v;
        } else if (which == 'p') {
            if (!strcmp(num, "0")) v = 0;
            else if (!parse_int(num, &v)) return bad(tok, pos, "padding must be a non-negative integer");
            pad = v;
        } else {
            return bad(tok, pos, "unknown conv option (use s<stride> and p<pad>)");
        }
    }
    if (b->flat && b->n > 0) return bad(tok, pos, "convolution after a dense layer");
    soma_conv_shape cs;
    soma_status st = soma_conv_shape_init(&cs, 1, b->c, b->h, b->w, ch, k, k, stride, pad);
    if (st) return bad(tok, pos, soma_last_error());
    soma_layer *l = push(b, SOMA_LAYER_CONV);
    if (!l) return SOMA_ERR_NOMEM;
    l->k = k; l->stride = stride; l->pad = pad;
    set_out(b, l, ch, cs.OH, cs.OW);
    b->last_linear = b->n - 1;
    return SOMA_OK;
}

static soma_status parse_pool(spec_builder *b, const char *tok, int pos, int avg, int k)
{
    if (!k && !parse_int(tok + (avg ? 7 : 4), &k)) return bad(tok, pos, "pool size must be a positive integer");
    if (b->flat) return bad(tok, pos, "pooling needs an image-shaped input (after conv)");
    soma_pool_shape ps;
    if (soma_pool_shape_init(&ps, 1, b->c, b->h, b->w, k, k)) return bad(tok, pos, soma_last_error());
    soma_layer *l = push(b, avg ? SOMA_LAYER_AVGPOOL : SOMA_LAYER_MAXPOOL);
    if (!l) return SOMA_ERR_NOMEM;
    l->k = k; l->stride = k;
    set_out(b, l, b->c, ps.OH, ps.OW);
    return SOMA_OK;
}

/* The cell just pushed is fed back by a recurrent dense layer before it
 * (directly, or through its batchnorm). */
static void link_rec(spec_builder *b)
{
    int j = b->n - 2;
    if (j >= 0 && b->layers[j].kind == SOMA_LAYER_BATCHNORM) j--;
    if (j >= 0 && b->layers[j].kind == SOMA_LAYER_DENSE && b->layers[j].rec) b->layers[j].rec_src = b->n - 1;
}

/* bn / bnN (steps: N, or 0).  After a conv or dense layer; in a temporal
 * net also after an ltcN / rltcN / cltcKxC token, where it normalises the
 * token's linear output (inserted right after its dense/conv, before the
 * pool and the cell, as notes/fptt.md 2.2 / 2.4). */
static soma_status add_bn(spec_builder *b, const char *tok, int pos, int steps, int sep)
{
    int at = b->n;   /* insert position */
    if (b->o->spiking && b->n >= 2 && b->layers[b->n - 1].kind == SOMA_LAYER_CELL && b->layers[b->n - 1].ltc &&
        b->last_linear >= 0 && b->last_linear < b->n - 1) {
        for (int i = b->last_linear + 1; i < b->n; i++)
            if (b->layers[i].kind != SOMA_LAYER_MAXPOOL && b->layers[i].kind != SOMA_LAYER_CELL)
                return bad(tok, pos, "bn must directly follow a conv or dense layer");
        at = b->last_linear + 1;
    } else if (b->last_linear < 0 || b->last_linear != b->n - 1) {
        return bad(tok, pos, "bn must directly follow a conv or dense layer");
    }
    if (steps && !b->o->spiking) return bad(tok, pos, "per-time-step statistics (bnN) need a temporal net");
    if (sep && !(b->layers[at - 1].kind == SOMA_LAYER_DENSE && b->layers[at - 1].rec))
        return bad(tok, pos, "sbn normalises a recurrent layer's input and recurrent currents apart: "
                   "it must follow rltcN or rN");
    if (sep) b->layers[at - 1].rec_sep = 1;
    soma_layer *l = push(b, SOMA_LAYER_BATCHNORM);
    if (!l) return SOMA_ERR_NOMEM;
    soma_layer nl = *l;
    const soma_layer *ll = &b->layers[at - 1];
    nl.eps = 1e-5f; nl.momentum = 0.1f;
    nl.bn_steps = steps;
    nl.bn_sep = sep;
    nl.in_c = nl.out_c = ll->out_c; nl.in_h = nl.out_h = ll->out_h; nl.in_w = nl.out_w = ll->out_w;
    nl.in_size = nl.out_size = ll->out_size;
    if (at == b->n - 1) {
        *l = nl;
        set_out(b, l, b->c, b->h, b->w);
        return SOMA_OK;
    }
    /* move the pool / cell layers up by one; fix the recurrent link */
    memmove(&b->layers[at + 1], &b->layers[at], (size_t)(b->n - 1 - at) * sizeof *b->layers);
    b->layers[at] = nl;
    for (int i = 0; i < b->n; i++)
        if (b->layers[i].kind == SOMA_LAYER_DENSE && b->layers[i].rec && b->layers[i].rec_src >= at)
            b->layers[i].rec_src++;
    return SOMA_OK;
}

/* Adds the hidden nonlinearity after the layer just finished: the
 * activation, or in a spiking net a neuron cell (which a recurrent dense
 * layer just before it feeds back from). */
static soma_status add_act(spec_builder *b, soma_act act)
{
    soma_layer *l = push(b, b->o->spiking ? SOMA_LAYER_CELL : SOMA_LAYER_ACT);
    if (!l) return SOMA_ERR_NOMEM;
    l->act = act;
    if (b->o->spiking) l->cell = b->o->cell;
    set_out(b, l, b->c, b->h, b->w);
    link_rec(b);
    return SOMA_OK;
}

/* The LTC cell after an ltcN / rltcN dense layer (a recurrent one feeds
 * back from it). */
static soma_status add_ltc_cell(spec_builder *b)
{
    soma_layer *l = push(b, SOMA_LAYER_CELL);
    if (!l) return SOMA_ERR_NOMEM;
    l->cell = b->o->ltc;
    l->cell.map_bn = 0;   /* the dense maps have no batchnorm (notes/fptt.md 2.1) */
    l->ltc = 1;
    set_out(b, l, b->c, b->h, b->w);
    link_rec(b);
    return SOMA_OK;
}

/* cltcKxC[sS][pP][mM]: convKxC[sS][pP], an M x M max pool when m is given,
 * then a convolutional LTC cell whose tau maps are KxK same-padding convs
 * of C_t + u_{t-1} and C_t + eta_{t-1} (notes/fptt.md 2.4; K odd), with a
 * batchnorm after each map's conv when o->ltc.map_bn > 0. */
static soma_status parse_cltc(spec_builder *b, const char *tok, int pos)
{
    char conv[MAX_TOKEN + 1] = "conv";
    snprintf(conv + 4, sizeof conv - 4, "%s", tok + 4);
    int pool = 0;
    char *m = strchr(conv, 'm');
    if (m) {
        if (!parse_int(m + 1, &pool)) return bad(tok, pos, "max pool size must be a positive integer (m<size> last)");
        *m = 0;
    }
    soma_status st = parse_conv(b, conv, pos);
    if (st) return st;
    int k = b->layers[b->n - 1].k;
    if (k % 2 == 0) return bad(tok, pos, "the tau maps are same-padding KxK convs: K must be odd");
    if (pool && (st = parse_pool(b, tok, pos, 0, pool))) return st;
    soma_layer *l = push(b, SOMA_LAYER_CELL);
    if (!l) return SOMA_ERR_NOMEM;
    l->cell = b->o->ltc;   /* cell.map_bn: BN inside the maps (net.c) */
    l->ltc = 2;
    l->k = k; l->stride = 1; l->pad = (k - 1) / 2;
    l->eps = 1e-5f; l->momentum = 0.1f;   /* the map BN's, as BatchNorm2d's defaults */
    set_out(b, l, b->c, b->h, b->w);
    return SOMA_OK;
}

static int is_cltc(const char *t) { return !strncmp(t, "cltc", 4); }

/* 1 if t is ltcN (recurrent: rltcN), *units set. */
static int parse_ltc(const char *t, int *units, int *recurrent)
{
    *recurrent = t[0] == 'r';
    return !strncmp(t + *recurrent, "ltc", 3) && parse_int(t + *recurrent + 3, units);
}

int soma__spec_has_ltc(const char *spec)
{
    char tok[MAX_TOKEN];
    for (const char *p = spec; p && *p;) {
        const char *e = strchr(p, '-');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        int u, r;
        if (len < MAX_TOKEN) {
            memcpy(tok, p, len);
            tok[len] = 0;
            if (parse_ltc(tok, &u, &r) || is_cltc(tok)) return 1;
        }
        p = e ? e + 1 : NULL;
    }
    return 0;
}

/* Builds the layer list.  *layers is allocated with soma__malloc. */
soma_status soma__spec_parse(soma_layer **layers, int *n_layers, const char *spec,
                             const soma_net_options *o)
{
    int in_c = o->in_c, in_h = o->in_h, in_w = o->in_w;
    soma_act act = o->act;
    *layers = NULL;
    *n_layers = 0;
    if (!spec || !*spec) return soma__fail(SOMA_ERR_ARG, "net spec is empty");
    if (strlen(spec) > 4096) return soma__fail(SOMA_ERR_ARG, "net spec is longer than 4096 characters");
    spec_builder b = { .c = in_c, .h = in_h, .w = in_w, .flat = in_h == 1 && in_w == 1,
                       .last_linear = -1, .o = o };
    /* Split into tokens first: whether a linear layer is the last one decides
     * if it gets an activation. */
    char toks[256][MAX_TOKEN];
    int nt = 0;
    const char *p = spec;
    while (1) {
        const char *e = strchr(p, '-');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == 0) return soma__fail(SOMA_ERR_ARG, "net spec '%s': empty token at position %d", spec, nt + 1);
        if (len >= MAX_TOKEN) return soma__fail(SOMA_ERR_ARG, "net spec '%s': token %d is too long", spec, nt + 1);
        if (nt == 256) return soma__fail(SOMA_ERR_ARG, "net spec '%s': more than 256 tokens", spec);
        memcpy(toks[nt], p, len);
        toks[nt][len] = 0;
        nt++;
        if (!e) break;
        p = e + 1;
    }
    int last_lin_tok = -1;
    for (int i = 0; i < nt; i++) {
        int dummy;
        if ((parse_int(toks[i], &dummy) && i > 0) || !strncmp(toks[i], "fc", 2) ||
            !strncmp(toks[i], "conv", 4) || (toks[i][0] == 'r' && parse_int(toks[i] + 1, &dummy)) ||
            parse_ltc(toks[i], &dummy, &dummy) || is_cltc(toks[i]))
            last_lin_tok = i;
    }
    soma_status st = SOMA_OK;
    int pending_act = 0; /* activation owed to the last linear layer */
    for (int i = 0; i < nt && !st; i++) {
        const char *t = toks[i];
        int v;
        if (i == 0 && parse_int(t, &v)) {
            if ((size_t)v != (size_t)in_c * in_h * in_w) {
                st = soma__fail(SOMA_ERR_ARG, "net spec: token 1 '%s': input size %d does not match "
                                "the data (%d x %d x %d = %d values)", t, v, in_c, in_h, in_w,
                                in_c * in_h * in_w);
                break;
            }
            continue;
        }
        int bn_sep = t[0] == 's', bn_steps = 0;
        const char *bt = t + bn_sep;
        int is_bn = !strcmp(bt, "bn") || (!strncmp(bt, "bn", 2) && parse_int(bt + 2, &bn_steps));
        if (pending_act && !is_bn) {
            if ((st = add_act(&b, act))) break;
            pending_act = 0;
        }
        int is_rec = t[0] == 'r' && parse_int(t + 1, &v), ltc_rec;
        if (parse_ltc(t, &v, &ltc_rec)) {
            if (!o->spiking) { st = bad(t, i + 1, "LTC layers need a spiking net"); break; }
            if (i == last_lin_tok) { st = bad(t, i + 1, "an LTC layer cannot be the output layer (add a dense layer after it)"); break; }
            if ((st = add_dense(&b, v, ltc_rec))) break;
            st = add_ltc_cell(&b);
            continue;
        } else if (is_cltc(t)) {
            if (!o->spiking) { st = bad(t, i + 1, "LTC layers need a spiking net"); break; }
            if (i == last_lin_tok) { st = bad(t, i + 1, "an LTC layer cannot be the output layer (add a dense layer after it)"); break; }
            st = parse_cltc(&b, t, i + 1);
            continue;
        } else if (is_rec) {
            if (!o->spiking) { st = bad(t, i + 1, "recurrent layers (rN) need a spiking net (--neuron)"); break; }
            if (i == last_lin_tok) { st = bad(t, i + 1, "the output layer cannot be recurrent"); break; }
            st = add_dense(&b, v, 1);
        } else if (parse_int(t, &v)) st = add_dense(&b, v, 0);
        else if (!strncmp(t, "fc", 2)) {
            if (!parse_int(t + 2, &v)) { st = bad(t, i + 1, "expected fcN with N a positive integer"); break; }
            st = add_dense(&b, v, 0);
        } else if (!strncmp(t, "conv", 4)) {
            /* convKxC[sS][pP]mM: the max pool comes before the nonlinearity
             * (a spiking net pools the currents, I_t = pool(conv(S_t))) */
            char conv[MAX_TOKEN];
            snprintf(conv, sizeof conv, "%s", t);
            char *m = strchr(conv, 'm');
            int pool = 0;
            if (m) {
                if (!parse_int(m + 1, &pool)) { st = bad(t, i + 1, "max pool size must be a positive integer (m<size> last)"); break; }
                if (i == last_lin_tok) { st = bad(t, i + 1, "the output layer cannot be pooled (mM)"); break; }
                *m = 0;
            }
            st = parse_conv(&b, conv, i + 1);
            if (!st && pool) st = parse_pool(&b, t, i + 1, 0, pool);
        } else if (!strncmp(t, "avgpool", 7)) st = parse_pool(&b, t, i + 1, 1, 0);
        else if (!strncmp(t, "pool", 4)) st = parse_pool(&b, t, i + 1, 0, 0);
        else if (is_bn) {
            st = add_bn(&b, t, i + 1, bn_steps, bn_sep);
            continue;
        } else if (!strncmp(t, "drop", 4)) {
            char *end;
            errno = 0;
            double pr = strtod(t + 4, &end);
            if (end == t + 4 || *end || errno || !(pr >= 0 && pr < 1)) {
                st = bad(t, i + 1, "dropout probability must be in [0, 1), e.g. drop0.5");
                break;
            }
            soma_layer *l = push(&b, SOMA_LAYER_DROPOUT);
            if (!l) { st = SOMA_ERR_NOMEM; break; }
            l->p = (float)pr;
            set_out(&b, l, b.c, b.h, b.w);
            continue;
        } else {
            st = bad(t, i + 1, "unknown layer (expected N, fcN, rN, ltcN, rltcN, convKxC, cltcKxC, poolK, avgpoolK, bn, bnN, sbn, sbnN, dropP)");
            break;
        }
        if (!st && (is_rec || parse_int(t, &v) || !strncmp(t, "fc", 2) || !strncmp(t, "conv", 4)) &&
            i != last_lin_tok)
            pending_act = 1;
    }
    if (!st && pending_act) st = add_act(&b, act);
    if (!st && o->spiking && o->readout != SOMA_READOUT_NONE) {
        soma_layer *l = push(&b, SOMA_LAYER_CELL);
        if (!l) st = SOMA_ERR_NOMEM;
        else {
            l->cell = o->readout == SOMA_READOUT_LI ? o->readout_cell : o->cell;
            if (o->readout == SOMA_READOUT_LTC) {
                /* o_t = (1 - tau_o) o_{t-1} + tau_o z_t: LI, input_scale, liquid alpha */
                soma_cell_params_default(&l->cell, SOMA_NEURON_LI);
                l->cell.input_scale = 1;
                l->ltc = 1;
            }
            set_out(&b, l, b.c, b.h, b.w);
        }
    }
    if (!st && b.last_linear < 0)
        st = soma__fail(SOMA_ERR_ARG, "net spec '%s' has no dense or conv layer", spec);
    if (!st && b.last_linear >= 0 && b.layers[b.last_linear].kind == SOMA_LAYER_CONV)
        st = soma__fail(SOMA_ERR_ARG, "net spec '%s' must end with a dense layer (fcN) giving the class scores", spec);
    if (st) { soma__free(b.layers); return st; }
    *layers = b.layers;
    *n_layers = b.n;
    return SOMA_OK;
}
