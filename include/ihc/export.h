/* IHC_API marks the public functions of libihc-agent and libihc. The libraries are built
 * with hidden visibility, so only what a public header declares with IHC_API leaves the
 * .so (nng's NNG_DECL, libuv's UV_EXTERN). */
#ifndef IHC_EXPORT_H
#define IHC_EXPORT_H

#if defined(IHC_BUILDING) && defined(__GNUC__)
#define IHC_API __attribute__((visibility("default")))
#else
#define IHC_API
#endif

#endif
