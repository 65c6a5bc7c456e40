/* Comma-separated endpoint lists (IHC_PUB_URL, IHC_REPORT_URL, IHC_CONTROL_URL of agents and
 * clients that talk to several coordinators): the one splitter, so that the settings check,
 * the agent library and libihc cut a list the same way. */
#ifndef IHC_URLLIST_H
#define IHC_URLLIST_H

#include <stddef.h>

#define IHC_URL_LIST_MAX 16 /* coordinators one list may name */

/* A split list: v[0..n) point into buf, which the list owns. */
typedef struct {
    size_t n;
    char *v[IHC_URL_LIST_MAX];
    char *buf;
} ihc_url_list;

/* Splits s at commas into l (zeroed first). Each item must be non-empty; at most
 * IHC_URL_LIST_MAX. Errors: IHC_EINVAL (empty list, empty item, too many; why says which),
 * IHC_ENOMEM. On error l is empty. Release with ihc_url_list_fini in every case. */
int ihc_url_list_parse(ihc_url_list *l, const char *s, char *why, size_t wlen);

/* Releases l; accepts an empty or released list. */
void ihc_url_list_fini(ihc_url_list *l);

/* How many items s holds (commas + 1); 0 for NULL or "". Does not validate. */
size_t ihc_url_list_count(const char *s);

#endif
