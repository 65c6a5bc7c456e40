/* The local API's JSON bodies: jansson parsing, then every field checked against the wire's
 * limits (hardware_id and id syntax, data and error sizes), unknown fields refused. */
#include "local_body.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

static int fail(char *err, size_t len, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(char *err, size_t len, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (len)
        vsnprintf(err, len, fmt, ap);
    va_end(ap);
    return rc;
}

/* The body as a JSON object; an empty body is {} when empty_ok. */
static json_t *load_object(const char *body, size_t len, bool empty_ok, char *err, size_t err_len)
{
    size_t i = 0;
    while (i < len && (body[i] == ' ' || body[i] == '\t' || body[i] == '\r' || body[i] == '\n'))
        i++;
    if (i == len) {
        if (empty_ok)
            return json_object();
        fail(err, err_len, 0, "empty body: expected a JSON object");
        return NULL;
    }
    json_error_t je;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        fail(err, err_len, 0, "bad JSON at line %d column %d: %s", je.line, je.column, je.text);
        return NULL;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        fail(err, err_len, 0, "the body must be a JSON object");
        return NULL;
    }
    return root;
}

/* A string field checked with ok (NULL: any string up to max bytes, no NUL). */
static int take_string(json_t *v, const char *name, size_t max, bool (*ok)(const char *, size_t),
                       const char *what, char **out, char *err, size_t err_len)
{
    if (!json_is_string(v))
        return fail(err, err_len, IHC_EINVAL, "field '%s' must be a string (%s)", name, what);
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    if (n > max || strlen(s) != n || (ok && !ok(s, n)))
        return fail(err, err_len, IHC_EINVAL, "field '%s': invalid value, expected %s", name, what);
    if (!(*out = strdup(s)))
        return fail(err, err_len, IHC_ENOMEM, "out of memory");
    return IHC_OK;
}

static bool hw_ok(const char *s, size_t n)
{
    return ihc_hw_valid(s, n, false);
}

static bool id_ok(const char *s, size_t n)
{
    return ihc_id_valid(s, n);
}

#define HW_WHAT "a hardware_id: 1-128 bytes of [A-Za-z0-9._:@-]"
#define ID_WHAT "1-128 bytes of [A-Za-z0-9._:@-]"

static int begin_field(ihc_local_begin *b, const char *key, json_t *v, char *err, size_t err_len)
{
    if (strcmp(key, "hardware_id") == 0)
        return take_string(v, key, IHC_HW_MAX, hw_ok, HW_WHAT, &b->hw, err, err_len);
    if (strcmp(key, "module") == 0)
        return take_string(v, key, IHC_ID_MAX, id_ok, ID_WHAT, &b->module, err, err_len);
    if (strcmp(key, "session_id") == 0)
        return take_string(v, key, IHC_ID_MAX, id_ok, ID_WHAT, &b->session_id, err, err_len);
    if (strcmp(key, "pid") == 0) {
        json_int_t p = json_is_integer(v) ? json_integer_value(v) : 0;
        if (p <= 0 || p > INT32_MAX)
            return fail(err, err_len, IHC_EINVAL,
                        "field 'pid' must be a positive integer (a process id)");
        b->pid = (int32_t)p;
        return IHC_OK;
    }
    if (strcmp(key, "data") == 0) {
        if (json_is_string(v))
            return take_string(v, key, IHC_DATA_MAX, NULL, "a string or an object", &b->data, err,
                               err_len);
        if (!json_is_object(v))
            return fail(err, err_len, IHC_EINVAL, "field 'data' must be an object or a string");
        b->data = json_dumps(v, JSON_COMPACT);
        if (!b->data)
            return fail(err, err_len, IHC_ENOMEM, "out of memory");
        if (strlen(b->data) > IHC_DATA_MAX)
            return fail(err, err_len, IHC_EINVAL, "field 'data' is longer than %u bytes",
                        IHC_DATA_MAX);
        return IHC_OK;
    }
    char shown[64];
    snprintf(shown, sizeof shown, "%s", key);
    for (char *p = shown; *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
            *p = '?';
    return fail(err, err_len, IHC_EINVAL,
                "unknown field '%s' (accepted: hardware_id, pid, module, data, session_id)", shown);
}

int ihc_local_begin_parse(ihc_local_begin *out, const char *body, size_t len, char *err,
                          size_t err_len)
{
    memset(out, 0, sizeof(*out));
    json_t *root = load_object(body, len, false, err, err_len);
    if (!root)
        return IHC_EINVAL;
    int rc = IHC_OK;
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v)
    {
        if ((rc = begin_field(out, key, v, err, err_len)) != IHC_OK)
            break;
    }
    json_decref(root);
    if (rc == IHC_OK && !out->hw)
        rc = fail(err, err_len, IHC_EMISSING, "field 'hardware_id' is required");
    if (rc != IHC_OK)
        ihc_local_begin_fini(out);
    return rc;
}

void ihc_local_begin_fini(ihc_local_begin *b)
{
    if (!b)
        return;
    free(b->hw);
    free(b->module);
    free(b->data);
    free(b->session_id);
    memset(b, 0, sizeof(*b));
}

static const struct {
    const char *name;
    ihc_mod_status st;
} statuses[] = {{"ok", IHC_MOD_OK},
                {"timeout", IHC_MOD_TIMED_OUT},
                {"error", IHC_MOD_FAILED},
                {"skipped", IHC_MOD_DISABLED}};

static int end_module(ihc_module_result *m, size_t i, json_t *o, char *err, size_t err_len)
{
    if (!json_is_object(o))
        return fail(err, err_len, IHC_EINVAL, "modules[%zu] must be an object", i);
    const char *key;
    json_t *v;
    bool has_status = false;
    json_object_foreach(o, key, v)
    {
        char name[32];
        snprintf(name, sizeof name, "modules[%zu].%.8s", i, key);
        int rc = IHC_OK;
        if (strcmp(key, "name") == 0) {
            rc = take_string(v, "modules[].name", IHC_ID_MAX, id_ok, ID_WHAT, &m->name, err,
                             err_len);
        } else if (strcmp(key, "error") == 0) {
            rc = take_string(v, "modules[].error", IHC_REASON_MAX, NULL, "at most 1024 bytes",
                             &m->error, err, err_len);
        } else if (strcmp(key, "time_ms") == 0) {
            double t = json_is_number(v) ? json_number_value(v) : -1;
            if (!(t >= 0 && t <= 1e9))
                rc = fail(err, err_len, IHC_EINVAL,
                          "field 'modules[%zu].time_ms' must be a number of milliseconds >= 0", i);
            m->time_ms = t;
        } else if (strcmp(key, "status") == 0) {
            const char *s = json_is_string(v) ? json_string_value(v) : "";
            size_t k = 0;
            while (k < sizeof statuses / sizeof *statuses && strcmp(s, statuses[k].name) != 0)
                k++;
            if (k == sizeof statuses / sizeof *statuses)
                rc = fail(err, err_len, IHC_EINVAL,
                          "field 'modules[%zu].status' must be ok, timeout, error or skipped", i);
            else
                m->status = statuses[k].st;
            has_status = true;
        } else {
            rc = fail(err, err_len, IHC_EINVAL,
                      "unknown field '%s' (accepted: name, status, time_ms, error)", name);
        }
        if (rc != IHC_OK)
            return rc;
    }
    if (!m->name)
        return fail(err, err_len, IHC_EMISSING, "field 'modules[%zu].name' is required", i);
    if (!has_status)
        return fail(err, err_len, IHC_EMISSING, "field 'modules[%zu].status' is required", i);
    return IHC_OK;
}

static int end_modules(ihc_local_end *e, json_t *v, char *err, size_t err_len)
{
    if (!json_is_array(v))
        return fail(err, err_len, IHC_EINVAL, "field 'modules' must be an array");
    size_t n = json_array_size(v);
    if (n > IHC_LOCAL_BODY_MODULES_MAX)
        return fail(err, err_len, IHC_EINVAL, "field 'modules': more than %d module results",
                    IHC_LOCAL_BODY_MODULES_MAX);
    if (n == 0)
        return IHC_OK;
    if (!(e->modules = calloc(n, sizeof(*e->modules))))
        return fail(err, err_len, IHC_ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        e->n_modules = i + 1;
        int rc = end_module(&e->modules[i], i, json_array_get(v, i), err, err_len);
        if (rc != IHC_OK)
            return rc;
    }
    return IHC_OK;
}

int ihc_local_end_parse(ihc_local_end *out, const char *body, size_t len, char *err, size_t err_len)
{
    memset(out, 0, sizeof(*out));
    out->state = "done";
    json_t *root = load_object(body, len, true, err, err_len);
    if (!root)
        return IHC_EINVAL;
    int rc = IHC_OK;
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v)
    {
        if (strcmp(key, "state") == 0) {
            static const char *const states[] = {"done", "interrupted", "failed"};
            const char *s = json_is_string(v) ? json_string_value(v) : "";
            size_t k = 0;
            while (k < 3 && strcmp(s, states[k]) != 0)
                k++;
            if (k == 3) {
                rc = fail(err, err_len, IHC_EINVAL,
                          "field 'state' must be done, interrupted or failed");
                break;
            }
            out->state = states[k];
        } else if (strcmp(key, "modules") == 0) {
            if ((rc = end_modules(out, v, err, err_len)) != IHC_OK)
                break;
        } else {
            char shown[64];
            snprintf(shown, sizeof shown, "%s", key);
            for (char *p = shown; *p; p++)
                if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
                    *p = '?';
            rc = fail(err, err_len, IHC_EINVAL, "unknown field '%s' (accepted: state, modules)",
                      shown);
            break;
        }
    }
    json_decref(root);
    if (rc != IHC_OK)
        ihc_local_end_fini(out);
    return rc;
}

void ihc_local_end_fini(ihc_local_end *e)
{
    if (!e)
        return;
    for (size_t i = 0; i < e->n_modules; i++) {
        free(e->modules[i].name);
        free(e->modules[i].error);
    }
    free(e->modules);
    e->modules = NULL;
    e->n_modules = 0;
}
