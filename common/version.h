/* The one place the ihc version lives. */
#ifndef IHC_VERSION_H
#define IHC_VERSION_H

#define IHC_VERSION_MAJOR 0
#define IHC_VERSION_MINOR 1
#define IHC_VERSION_PATCH 0
#define IHC_VERSION       "0.1.0"

/* Wire protocol version carried as "v" in every message. */
#define IHC_WIRE_VERSION 1

#endif
