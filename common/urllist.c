/* Comma-separated endpoint lists (urllist.h). */
#include "urllist.h"

#include "err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int ihc_url_list_parse(ihc_url_list *l, const char *s, char *why, size_t wlen)
{
    memset(l, 0, sizeof(*l));
    if (!s || !*s) {
        if (why && wlen)
            snprintf(why, wlen, "empty URL list");
        return IHC_EINVAL;
    }
    if (!(l->buf = strdup(s)))
        return IHC_ENOMEM;
    char *p = l->buf;
    for (;;) {
        char *comma = strchr(p, ',');
        if (comma)
            *comma = '\0';
        if (!*p || l->n == IHC_URL_LIST_MAX) {
            if (why && wlen && !*p)
                snprintf(why, wlen, "empty item %zu in the comma-separated URL list", l->n + 1);
            else if (why && wlen)
                snprintf(why, wlen, "more than %d URLs in the list", IHC_URL_LIST_MAX);
            ihc_url_list_fini(l);
            return IHC_EINVAL;
        }
        l->v[l->n++] = p;
        if (!comma)
            break;
        p = comma + 1;
    }
    return IHC_OK;
}

void ihc_url_list_fini(ihc_url_list *l)
{
    if (!l)
        return;
    free(l->buf);
    memset(l, 0, sizeof(*l));
}

size_t ihc_url_list_count(const char *s)
{
    if (!s || !*s)
        return 0;
    size_t n = 1;
    for (; *s; s++)
        n += *s == ',';
    return n;
}
