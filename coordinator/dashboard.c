/* The dashboard's static files (dashboard.h): lookup in the generated table. */
#include "dashboard.h"

#include <string.h>

const ihc_dash_asset *ihc_dash_asset_find(const char *path)
{
    for (size_t i = 0; path != NULL && i < ihc__dash_n_assets; i++)
        if (strcmp(ihc__dash_assets[i].path, path) == 0)
            return &ihc__dash_assets[i];
    return NULL;
}
