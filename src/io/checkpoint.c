/*
 * checkpoint.c - a network (+ optimizer state + run metadata) as one
 * safetensors file.
 *
 * Tensor names are the net's own ("0.weight", "3.running_var"), so the file
 * loads into torch with load_state_dict on the same nn.Sequential.  The
 * optimizer's flat state arrays are stored as "optim.<name>" (1-D).  The
 * metadata holds what is needed to rebuild the net without the command line
 * ("soma.net", "soma.input", "soma.act") and the run state the caller adds.
 */
#include "../net/net.h"
#include <stdlib.h>
#include <string.h>

/* Cell parameters as one metadata string, "%.9g" so floats round-trip. */
static void cell_to_string(char *buf, size_t n, const soma_cell_params *p)
{
    snprintf(buf, n, "kind=%s alpha=%.9g threshold=%.9g reset=%s detach=%d scale=%d rho=%.9g "
             "beta_a=%.9g surr=%s slope=%.9g width=%.9g height=%.9g k=%.9g gamma=%.9g init=%s",
             soma_neuron_name(p->kind), p->alpha, p->threshold, soma_reset_name(p->reset),
             p->detach_reset, p->input_scale, p->rho, p->beta_a,
             soma_surrogate_name(p->surr.kind), p->surr.slope, p->surr.width, p->surr.height,
             p->surr.scale, p->surr.gamma, soma_state_init_name(p->init));
    /* only when set, so checkpoints without it stay byte-identical */
    size_t used = strlen(buf);
    if (p->map_bn && used < n) snprintf(buf + used, n - used, " map_bn=%d", p->map_bn);
}

static soma_status cell_from_string(soma_cell_params *p, const char *s, const char *path)
{
    char buf[512];
    snprintf(buf, sizeof buf, "%s", s);
    soma_status st = SOMA_OK;
    for (char *tok = strtok(buf, " "); tok && !st; tok = strtok(NULL, " ")) {
        char *eq = strchr(tok, '=');
        if (!eq) return soma__fail(SOMA_ERR_FORMAT, "%s: bad cell field '%s'", path, tok);
        *eq = 0;
        const char *k = tok, *v = eq + 1;
        char *end;
        float f = strtof(v, &end);
        int num = *v && !*end;
        if (!strcmp(k, "kind")) st = soma_neuron_from_name(&p->kind, v);
        else if (!strcmp(k, "reset")) st = soma_reset_from_name(&p->reset, v);
        else if (!strcmp(k, "surr")) {
            soma_surrogate sg;
            if (!(st = soma_surrogate_from_name(&sg, v))) p->surr.kind = sg.kind;
        } else if (!strcmp(k, "init")) st = soma_state_init_from_name(&p->init, v);
        else if (!num) return soma__fail(SOMA_ERR_FORMAT, "%s: cell field %s='%s' is not a number", path, k, v);
        else if (!strcmp(k, "alpha")) p->alpha = f;
        else if (!strcmp(k, "threshold")) p->threshold = f;
        else if (!strcmp(k, "detach")) p->detach_reset = (int)f;
        else if (!strcmp(k, "scale")) p->input_scale = (int)f;
        else if (!strcmp(k, "rho")) p->rho = f;
        else if (!strcmp(k, "beta_a")) p->beta_a = f;
        else if (!strcmp(k, "slope")) p->surr.slope = f;
        else if (!strcmp(k, "width")) p->surr.width = f;
        else if (!strcmp(k, "height")) p->surr.height = f;
        else if (!strcmp(k, "k")) p->surr.scale = f;
        else if (!strcmp(k, "gamma")) p->surr.gamma = f;
        else if (!strcmp(k, "map_bn")) p->map_bn = (int)f;
        else return soma__fail(SOMA_ERR_FORMAT, "%s: unknown cell field '%s'", path, k);
    }
    if (st) return soma__fail(SOMA_ERR_FORMAT, "%s: %s", path, soma_last_error());
    return SOMA_OK;
}

static const char *const readout_names[SOMA_READOUT_COUNT] = { "none", "li", "spike", "ltc" };

soma_status soma_readout_from_name(soma_readout *out, const char *name)
{
    for (int i = 0; i < SOMA_READOUT_COUNT; i++)
        if (!strcmp(name, readout_names[i])) { *out = (soma_readout)i; return SOMA_OK; }
    return soma__fail(SOMA_ERR_ARG, "unknown readout '%s' (valid: none, li, spike, ltc)", name);
}

const char *soma_readout_name(soma_readout r)
{
    return (unsigned)r < SOMA_READOUT_COUNT ? readout_names[r] : "?";
}

soma_status soma_checkpoint_save(const char *path, soma_net *net, soma_optim *opt,
                                 const char *const *meta, int n_meta)
{
    soma_st_writer *w;
    soma_status st = soma_st_writer_new(&w);
    if (st) return st;
    char buf[64];
    snprintf(buf, sizeof buf, "%d,%d,%d", net->in_c, net->in_h, net->in_w);
    if (!st) st = soma_st_writer_meta(w, "soma.format", "soma-checkpoint");
    if (!st) st = soma_st_writer_meta(w, "soma.version", SOMA_VERSION);
    if (!st) st = soma_st_writer_meta(w, "soma.net", net->spec);
    if (!st) st = soma_st_writer_meta(w, "soma.input", buf);
    if (!st) st = soma_st_writer_meta(w, "soma.act", soma_act_name(net->act));
    if (!st) st = soma_st_writer_meta(w, "soma.init", soma_init_name(net->init));
    if (!st && net->spiking) {
        char cb[512];
        cell_to_string(cb, sizeof cb, &net->opts.cell);
        st = soma_st_writer_meta(w, "soma.cell", cb);
        if (!st) st = soma_st_writer_meta(w, "soma.readout", soma_readout_name(net->opts.readout));
        cell_to_string(cb, sizeof cb, &net->opts.readout_cell);
        if (!st) st = soma_st_writer_meta(w, "soma.readout_cell", cb);
        cell_to_string(cb, sizeof cb, &net->opts.ltc);   /* ltcN / rltcN / cltc cells (map_bn) */
        if (!st) st = soma_st_writer_meta(w, "soma.ltc_cell", cb);
    }
    for (int i = 0; i < n_meta && !st; i++)
        st = soma_st_writer_meta(w, meta[2 * i], meta[2 * i + 1]);
    int nt = soma_net_tensor_count(net);
    for (int i = 0; i < nt && !st; i++) {
        const char *name;
        int ndim;
        int64_t shape[SOMA_MAX_DIMS];
        float *v = soma_net_tensor(net, i, &name, &ndim, shape, NULL);
        st = soma_st_writer_add(w, name, SOMA_F32, ndim, shape, v);
    }
    if (opt && !st) {
        snprintf(buf, sizeof buf, "%lld", (long long)soma_optim_get_step(opt));
        st = soma_st_writer_meta(w, "soma.optim_step", buf);
        int64_t n = (int64_t)soma_net_param_floats(net);
        int64_t ng = soma_optim_group_count(opt);
        const char *gname;
        float *gv = ng > 0 ? soma_optim_group_state(opt, &gname) : NULL;
        if (gv && !st) { /* MQ: one scalar per weight matrix */
            char tname[96];
            snprintf(tname, sizeof tname, "optim.%s", gname);
            st = soma_st_writer_add(w, tname, SOMA_F32, 1, &ng, gv);
        }
        for (int i = 0; i < soma_optim_state_count(opt) && !st; i++) {
            const char *sname;
            float *v = soma_optim_state(opt, i, &sname);
            char tname[96];
            snprintf(tname, sizeof tname, "optim.%s", sname);
            st = soma_st_writer_add(w, tname, SOMA_F32, 1, &n, v);
        }
    }
    if (!st) st = soma_st_writer_save(w, path);
    soma_st_writer_free(w);
    return st;
}

soma_status soma_checkpoint_restore_net(soma_net *net, const soma_st *st, const char *path)
{
    int nt = soma_net_tensor_count(net);
    for (int i = 0; i < nt; i++) {
        const char *name;
        int ndim;
        int64_t shape[SOMA_MAX_DIMS];
        float *v = soma_net_tensor(net, i, &name, &ndim, shape, NULL);
        const soma_st_tensor *t = soma_st_find(st, name);
        if (!t)
            return soma__fail(SOMA_ERR_SHAPE, "%s: tensor '%s' of net '%s' is missing", path, name,
                              net->spec);
        int same = t->dtype == SOMA_F32 && t->ndim == ndim;
        for (int d = 0; same && d < ndim; d++) same = t->shape[d] == shape[d];
        if (!same) {
            char want[64], got[64];
            int o = 0;
            for (int d = 0; d < ndim; d++) o += snprintf(want + o, sizeof want - o, "%s%lld", d ? "x" : "", (long long)shape[d]);
            o = 0;
            got[0] = 0;
            for (int d = 0; d < t->ndim && o < (int)sizeof got; d++) o += snprintf(got + o, sizeof got - o, "%s%lld", d ? "x" : "", (long long)t->shape[d]);
            return soma__fail(SOMA_ERR_SHAPE, "%s: tensor '%s' has shape %s%s, net '%s' needs %s", path,
                              name, got, t->dtype == SOMA_F32 ? "" : " (not F32)", net->spec, want);
        }
        memcpy(v, t->data, t->nbytes);
        size_t n = t->nbytes / sizeof(float);
        for (size_t k = 0; k < n; k++) {
            if (v[k] != v[k] || v[k] - v[k] != 0)
                return soma__fail(SOMA_ERR_NUMERIC, "%s: tensor '%s' holds NaN or Inf", path, name);
        }
    }
    return SOMA_OK;
}

soma_status soma_checkpoint_restore_optim(soma_optim *o, const soma_st *st, const char *path)
{
    int count = soma_optim_state_count(o);
    size_t n = count ? soma_optim_size(o) / ((size_t)count * sizeof(float)) : 0;
    for (int i = 0; i < soma_optim_state_count(o); i++) {
        const char *sname;
        float *v = soma_optim_state(o, i, &sname);
        char tname[96];
        snprintf(tname, sizeof tname, "optim.%s", sname);
        const soma_st_tensor *t = soma_st_find(st, tname);
        if (!t)
            return soma__fail(SOMA_ERR_FORMAT, "%s: optimizer state '%s' is missing (checkpoint "
                              "written with another optimizer?)", path, tname);
        if (t->dtype != SOMA_F32 || t->ndim != 1 || (size_t)t->shape[0] != n)
            return soma__fail(SOMA_ERR_SHAPE, "%s: optimizer state '%s' should be %zu F32 values",
                              path, tname, n);
        memcpy(v, t->data, t->nbytes);
    }
    const char *gname;
    float *gv = soma_optim_group_count(o) > 0 ? soma_optim_group_state(o, &gname) : NULL;
    if (gv) {
        char tname[96];
        snprintf(tname, sizeof tname, "optim.%s", gname);
        const soma_st_tensor *t = soma_st_find(st, tname);
        if (!t || t->dtype != SOMA_F32 || t->ndim != 1 || t->shape[0] != soma_optim_group_count(o))
            return soma__fail(SOMA_ERR_FORMAT, "%s: optimizer state '%s' missing or of the wrong size", path, tname);
        memcpy(gv, t->data, t->nbytes);
    }
    const char *step = soma_st_meta(st, "soma.optim_step");
    if (!step) return soma__fail(SOMA_ERR_FORMAT, "%s: metadata 'soma.optim_step' is missing", path);
    char *end;
    long long t = strtoll(step, &end, 10);
    if (*end || t < 0) return soma__fail(SOMA_ERR_FORMAT, "%s: bad soma.optim_step '%s'", path, step);
    soma_optim_set_step(o, t);
    return SOMA_OK;
}

soma_status soma_checkpoint_load(soma_net **out, soma_st **st_out, const char *path)
{
    *out = NULL;
    *st_out = NULL;
    soma_st *st;
    soma_status e = soma_st_read(&st, path);
    if (e) return e;
    const char *spec = soma_st_meta(st, "soma.net");
    const char *shape = soma_st_meta(st, "soma.input");
    const char *act = soma_st_meta(st, "soma.act");
    const char *init = soma_st_meta(st, "soma.init");
    if (!spec || !shape || !act) {
        soma_st_free(st);
        return soma__fail(SOMA_ERR_FORMAT, "%s: not a soma checkpoint (metadata soma.net/soma.input/soma.act missing)", path);
    }
    soma_net_options o;
    soma_net_options_default(&o);
    if (sscanf(shape, "%d,%d,%d", &o.in_c, &o.in_h, &o.in_w) != 3) {
        soma_st_free(st);
        return soma__fail(SOMA_ERR_FORMAT, "%s: bad soma.input '%s'", path, shape);
    }
    if ((e = soma_act_from_name(&o.act, act)) || (init && (e = soma_init_from_name(&o.init, init)))) {
        soma_st_free(st);
        return soma__fail(e, "%s: %s", path, soma_last_error());
    }
    const char *cell = soma_st_meta(st, "soma.cell");
    if (cell) {
        const char *ro = soma_st_meta(st, "soma.readout"), *rc = soma_st_meta(st, "soma.readout_cell");
        const char *lc = soma_st_meta(st, "soma.ltc_cell");
        o.spiking = 1;
        if ((e = cell_from_string(&o.cell, cell, path)) ||
            (rc && (e = cell_from_string(&o.readout_cell, rc, path))) ||
            (lc && (e = cell_from_string(&o.ltc, lc, path))) ||
            (ro && (e = soma_readout_from_name(&o.readout, ro)))) {
            soma_st_free(st);
            return e;
        }
    }
    soma_net *net;
    if ((e = soma_net_new(&net, spec, &o))) {
        soma_st_free(st);
        return soma__fail(e, "%s: %s", path, soma_last_error());
    }
    if ((e = soma_checkpoint_restore_net(net, st, path))) {
        soma_net_free(net);
        soma_st_free(st);
        return e;
    }
    *out = net;
    *st_out = st;
    return SOMA_OK;
}
