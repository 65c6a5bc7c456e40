/* The dashboard's static files (coordinator/dashboard/), compiled into the coordinator at
 * build time (cmake/embed-files.cmake): nothing is read from disk or fetched at run time. */
#ifndef IHC_COORD_DASHBOARD_H
#define IHC_COORD_DASHBOARD_H

#include <stddef.h>

typedef struct {
    const char *path; /* "/", "/dashboard/app.js", … */
    const char *content_type;
    const unsigned char *data; /* static */
    size_t len;
} ihc_dash_asset;

/* The file served at path, or NULL. */
const ihc_dash_asset *ihc_dash_asset_find(const char *path);

/* The generated table (dashboard_assets.c). */
extern const ihc_dash_asset ihc__dash_assets[];
extern const size_t ihc__dash_n_assets;

#endif
